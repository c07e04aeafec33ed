"""`rag index`: read the corpus, chunk and embed only new or changed articles, publish a new version to the store."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag.article import Article
from rag.chunk import SEPARATORS, Chunk, chunk_article
from rag.embedders import Embedder
from rag.errors import RagError
from rag.ingest import load_articles
from rag.stores.base import FORMAT_VERSION, Store, check_compatible

if TYPE_CHECKING:
    from rag.stores.pgvector import PgVectorStore

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
    shared: str = ""  # of a shared build: who published it


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


def _check_folder(seeds_dir: Path) -> None:
    if not Path(seeds_dir).is_dir():
        raise RagError(f"articles folder {seeds_dir} does not exist")


def _plan(seeds_dir: Path, store: Store, embedder: Embedder, chunk_size: int, chunk_overlap: int,
          log) -> tuple[list[Article], set[str], dict | None, BuildReport]:
    """The articles of seeds_dir, the ids of those the published version holds unchanged (their vectors are
    reused), its manifest, and the report of what changed."""
    articles, warnings = load_articles(Path(seeds_dir))
    for warning in warnings:
        log(warning)
    if not articles:
        raise RagError(f"no readable articles in {seeds_dir} (.txt, .md, .html, .pdf or .docx)")
    report = BuildReport(warnings=warnings)
    old = _previous(store, embedder.id, chunk_size, chunk_overlap, log)
    old_hash = {name: meta["sha256"] for name, meta in old["articles"].items()} if old else {}
    keep = {a.id for a in articles if old_hash.get(a.id) == a.sha256}
    for article in articles:
        if article.id in keep:
            report.unchanged.append(article.id)
        else:
            (report.changed if article.id in old_hash else report.added).append(article.id)
    report.removed = sorted(set(old_hash) - {a.id for a in articles})
    return articles, keep, old, report


def _entry(article: Article, chunks: int) -> dict:
    """An article's entry in the manifest."""
    return {"sha256": article.sha256, "title": article.title, "date": article.date, "format": article.format,
            "chunks": chunks}


def _manifest(embedder: Embedder, chunk_size: int, chunk_overlap: int, entries: dict[str, dict]) -> dict:
    """A new version's manifest, given its articles' entries."""
    return {
        "format_version": FORMAT_VERSION,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "embedder": {"id": embedder.id, "dims": embedder.dims},
        "chunking": {"size": chunk_size, "overlap": chunk_overlap, "separators": SEPARATORS},
        "articles": entries,
        "versions": _versions(),
    }


def build_index(seeds_dir: Path, store: Store, embedder: Embedder | Callable[[], Embedder], chunk_size: int,
                chunk_overlap: int, log=print, progress: Progress | None = None) -> BuildReport:
    """(Re)build the index from the articles in seeds_dir, embedding only new or changed articles. The embedder may
    be given as a function that loads it: it is then loaded only once the store is known to be writable.
    progress(done, total) is told of the chunks embedded so far."""
    started = time.perf_counter()
    _check_folder(seeds_dir)
    with store.building():  # checks the store can be written before any model loading or embedding work
        embedder = embedder() if callable(embedder) else embedder
        articles, keep, old, report = _plan(seeds_dir, store, embedder, chunk_size, chunk_overlap, log)
        new = [a for a in articles if a.id not in keep]
        chunks = {a.id: chunk_article(a, chunk_size, chunk_overlap) for a in new}
        new_chunks = [c for a in new for c in chunks[a.id]]
        vectors = embed_documents(new_chunks, embedder, progress=progress)
        manifest = _manifest(embedder, chunk_size, chunk_overlap, {
            a.id: _entry(a, len(chunks[a.id]) if a.id in chunks else old["articles"][a.id]["chunks"])
            for a in articles})
        added = store.publish(manifest, keep, new, new_chunks, vectors)
    report.chunks = sum(meta["chunks"] for meta in manifest["articles"].values())
    report.embedded, report.dense = len(new_chunks), added.get("dense", {}).get("type", "")
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _share_plan(seeds_dir: Path, store: Store, embedder: Embedder, chunk_size: int, chunk_overlap: int,
                log) -> tuple[dict, set[str], list[Article]]:
    """A shared build's plan (its settings, the kept articles' manifest entries, the report of what changed), the
    ids of the kept articles and the new or changed ones to embed."""
    _check_folder(seeds_dir)
    articles, keep, old, report = _plan(seeds_dir, store, embedder, chunk_size, chunk_overlap, log)
    plan = {"embedder": {"id": embedder.id, "dims": embedder.dims},
            "chunking": {"size": chunk_size, "overlap": chunk_overlap},
            "kept": {a.id: _entry(a, old["articles"][a.id]["chunks"]) for a in articles if a.id in keep},
            "report": dataclasses.asdict(report)}
    return plan, keep, [a for a in articles if a.id not in keep]


def _check_plan(plan: dict, where: str, embedder: Embedder, chunk_size: int, chunk_overlap: int) -> None:
    """Refuse to join a shared build opened with another embedder or other chunk settings."""
    theirs = (plan["embedder"]["id"], plan["chunking"]["size"], plan["chunking"]["overlap"])
    if theirs != (embedder.id, chunk_size, chunk_overlap):
        raise RagError(f"the shared build open in {where} embeds with {theirs[0]} in chunks of size/overlap "
                       f"{theirs[1]}/{theirs[2]}, this run with {embedder.id} and {chunk_size}/{chunk_overlap}: give "
                       "every worker the same settings")


def share_index(seeds_dir: Path, store: PgVectorStore, embedder: Embedder | Callable[[], Embedder], chunk_size: int,
                chunk_overlap: int, batch: int, log=print) -> BuildReport:
    """(Re)build the index as one of any number of `rag index` runs, on any machines, sharing one build: the first
    opens it (a queue of the new and changed articles of its seeds_dir; the others need no articles), each claims
    `batch` articles at a time and embeds them, and the last one done publishes. Returns once it is published."""
    started = time.perf_counter()
    with store.building(shared=True):
        embedder = embedder() if callable(embedder) else embedder
        plan = store.open_or_join(lambda: _share_plan(seeds_dir, store, embedder, chunk_size, chunk_overlap, log))
        _check_plan(plan, store.where, embedder, chunk_size, chunk_overlap)
        report = BuildReport(**plan["report"])

        def embed(articles: list[Article]) -> tuple[list[Chunk], np.ndarray]:
            chunks = [c for a in articles for c in chunk_article(a, chunk_size, chunk_overlap)]
            vectors = embed_documents(chunks, embedder)
            report.embedded += len(chunks)
            return chunks, vectors

        store.work(batch, embed)
        published = store.finish(lambda entries: _manifest(embedder, chunk_size, chunk_overlap,
                                                           {**plan["kept"], **entries}))
    store.refresh()
    manifest = store.manifest()
    report.chunks, report.dense = manifest["chunks"], manifest["dense"]["type"]
    report.shared = "published by this run" if published else "published by another run"
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
