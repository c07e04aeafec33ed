"""`rag index`: read the corpus, chunk and embed only new or changed articles, publish a new version to the store."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from rag.chunk import SEPARATORS, Chunk, chunk_article
from rag.embedders import Embedder
from rag.errors import RagError
from rag.ingest import load_articles
from rag.stores.base import FORMAT_VERSION, Store, check_compatible

Progress = Callable[[int, int], None]  # told (chunks embedded, chunks to embed) as a build goes


@dataclass
class BuildReport:
    """What `rag index` did."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    chunks: int = 0
    embedded: int = 0
    seconds: float = 0.0
    dense: str = ""


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("arabic-rag", "faiss-cpu", "bm25s", "sentence-transformers", "numpy", "langchain-text-splitters"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def _previous(store: Store, embedder_id: str, size: int, overlap: int, log) -> dict | None:
    """The published manifest, if its vectors can be reused."""
    try:
        manifest = store.manifest()
        check_compatible(manifest, store.where, embedder_id, size, overlap)
        return manifest
    except RagError as e:
        if "no index in" not in str(e):
            # Its advice ("run `rag index`") is what the user is doing: say what happens instead.
            reason = str(e).split(": run `rag index`")[0]
            log(f"not reusing the old index ({reason}): every article is embedded again into a fresh one")
        return None


def build_index(seeds_dir: Path, store: Store, embedder: Embedder | Callable[[], Embedder], chunk_size: int,
                chunk_overlap: int, log=print, progress: Progress | None = None) -> BuildReport:
    """(Re)build the index from the articles in seeds_dir, embedding only new or changed articles. The embedder may
    be given as a function that loads it: it is then loaded only once the store is known to be writable.
    progress(done, total) is told of the chunks embedded so far."""
    started = time.perf_counter()
    if not Path(seeds_dir).is_dir():
        raise RagError(f"articles folder {seeds_dir} does not exist")
    with store.building():  # checks the store can be written before any model loading or embedding work
        embedder = embedder() if callable(embedder) else embedder
        articles, warnings = load_articles(Path(seeds_dir))
        for warning in warnings:
            log(warning)
        if not articles:
            raise RagError(f"no readable articles in {seeds_dir} (.txt, .md, .html, .pdf or .docx)")
        report = BuildReport(warnings=warnings)
        old = _previous(store, embedder.id, chunk_size, chunk_overlap, log)
        old_hash = {name: meta["sha256"] for name, meta in old["articles"].items()} if old else {}
        keep = {a.id for a in articles if old_hash.get(a.id) == a.sha256}
        new = [a for a in articles if a.id not in keep]
        for article in articles:
            if article.id in keep:
                report.unchanged.append(article.id)
            else:
                (report.changed if article.id in old_hash else report.added).append(article.id)
        report.removed = sorted(set(old_hash) - {a.id for a in articles})
        chunks = {a.id: chunk_article(a, chunk_size, chunk_overlap) for a in new}
        new_chunks = [c for a in new for c in chunks[a.id]]
        vectors = embed_documents(new_chunks, embedder, progress=progress)
        manifest = {
            "format_version": FORMAT_VERSION,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "embedder": {"id": embedder.id, "dims": embedder.dims},
            "chunking": {"size": chunk_size, "overlap": chunk_overlap, "separators": SEPARATORS},
            "articles": {a.id: {"sha256": a.sha256, "title": a.title, "date": a.date, "format": a.format,
                                "chunks": len(chunks[a.id]) if a.id in chunks else old["articles"][a.id]["chunks"]}
                         for a in articles},
            "versions": _versions(),
        }
        added = store.publish(manifest, keep, new, new_chunks, vectors)
    report.chunks = sum(meta["chunks"] for meta in manifest["articles"].values())
    report.embedded, report.dense = len(new_chunks), added.get("dense", {}).get("type", "")
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def embed_documents(chunks: list[Chunk], embedder: Embedder, batch: int = 16,
                    progress: Progress | None = None) -> np.ndarray:
    """Embed chunks in batches of similar length (less padding), with a progress bar (and progress(done, total)
    after each batch)."""
    from tqdm import tqdm

    order = sorted(range(len(chunks)), key=lambda i: len(chunks[i].text))
    out = np.zeros((len(chunks), embedder.dims), dtype=np.float32)
    with tqdm(total=len(chunks), desc="embedding", unit="chunk", disable=not chunks) as bar:
        for at in range(0, len(order), batch):
            ids = order[at : at + batch]
            out[ids] = embedder.embed_batch([chunks[i].text for i in ids], "document")
            bar.update(len(ids))
            if progress:
                progress(bar.n, len(chunks))
    return out
