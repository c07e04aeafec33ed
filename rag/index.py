"""The on-disk index: a folder of plainly named files plus manifest.json, built incrementally and atomically."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from rag.chunk import SEPARATORS, Chunk, chunk_article
from rag.embed import Embedder
from rag.errors import RagError
from rag.ingest import Article, load_articles
from rag.normalize import terms

FORMAT_VERSION = 1
EXACT_SEARCH_LIMIT = 50_000  # below this many chunks FAISS searches exactly; from it on, an IVF index
IVF_TRAIN_PER_LIST = 64  # k-means training sample per inverted list (FAISS wants at least 39)
IVF_PROBE_SHARE = 32  # search 1/32 of the lists: recall@10 >= 0.95 (evals/bench.py measures it)
FILES = ("manifest.json", "articles.jsonl", "chunks.jsonl", "vectors.npy", "dense.faiss", "bm25")


@dataclass
class Index:
    """Everything retrieval needs, loaded in memory."""

    folder: Path
    manifest: dict
    articles: dict[str, Article]
    chunks: list[Chunk]
    vectors: np.ndarray
    dense: object  # faiss.Index
    bm25: object  # bm25s.BM25
    _df: np.ndarray | None = field(default=None, repr=False)

    def idf(self, term: str) -> float:
        """Inverse document frequency of a term over the chunks (BM25's formula); rare terms weigh more."""
        if self._df is None:
            self._df = np.diff(np.asarray(self.bm25.scores["indptr"]))
        i = self.bm25.vocab_dict.get(term)
        df = int(self._df[i]) if i is not None and i < len(self._df) else 0
        n = len(self.chunks)
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def check_compatible(self, embedder_id: str, chunk_size: int, chunk_overlap: int) -> None:
        """Refuse to search with an embedder or chunk settings other than the ones the index was built with."""
        built = self.manifest["embedder"]["id"]
        if built != embedder_id:
            raise RagError(f"the index in {self.folder} was built with embedder {built}, but the configured "
                           f"embedder is {embedder_id}: run `rag index` to rebuild it")
        chunking = self.manifest["chunking"]
        if (chunking["size"], chunking["overlap"]) != (chunk_size, chunk_overlap):
            raise RagError(f"the index in {self.folder} was built with chunk size/overlap "
                           f"{chunking['size']}/{chunking['overlap']}, the config says {chunk_size}/{chunk_overlap}: "
                           "run `rag index` to rebuild it")


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
    faiss_type: str = ""


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise RagError("faiss is not installed: pip install faiss-cpu") from e
    return faiss


def ivf_lists(n: int) -> int:
    """Inverted lists for n vectors: the power of two nearest 4 * sqrt(n), with at least 39 vectors per list."""
    lists = 2 ** round(math.log2(4 * math.sqrt(n)))
    while lists > 1 and n < 39 * lists:
        lists //= 2
    return lists


def make_dense_index(vectors: np.ndarray) -> tuple[object, str]:
    """Exact inner-product search for small corpora; for large ones an IVF index (k-means lists, trained on a sample,
    of which 1/32 are searched): builds several times faster than HNSW, so a rebuild after adding an article is
    quick, and needs no graph memory."""
    faiss = _faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dims = vectors.shape
    if n < EXACT_SEARCH_LIMIT:
        index, kind = faiss.IndexFlatIP(dims), "flat-ip"
    else:
        lists = ivf_lists(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dims), dims, lists, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, min(n, IVF_TRAIN_PER_LIST * lists), replace=False)
        index.train(vectors[np.sort(sample)])
        index.nprobe = max(1, lists // IVF_PROBE_SHARE)
        kind = f"ivf{lists}-flat-ip-nprobe{index.nprobe}"
    index.add(vectors)
    return index, kind


def make_bm25(chunks: list[Chunk]):
    """BM25 over normalized, stemmed terms of each chunk (the title counts as part of every chunk)."""
    import bm25s

    bm25 = bm25s.BM25()
    bm25.index([terms(f"{c.title}\n{c.text}") or [""] for c in chunks], show_progress=False)
    return bm25


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("arabic-rag", "faiss-cpu", "bm25s", "sentence-transformers", "numpy", "langchain-text-splitters"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def _write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_index(folder: Path) -> Index:
    """Load an index folder, with a clear error when it is missing, partial or corrupt."""
    folder = Path(folder)
    if not (folder / "manifest.json").exists():
        raise RagError(f"no index in {folder}: run `rag index` to build it from your articles")
    missing = [name for name in FILES if not (folder / name).exists()]
    if missing:
        raise RagError(f"the index in {folder} is incomplete (missing {', '.join(missing)}): run `rag index`")
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format version {manifest.get('format_version')}, expected {FORMAT_VERSION}")
        for key, sub in (("embedder", "id"), ("chunking", "size"), ("chunking", "overlap")):
            if sub not in manifest.get(key, {}):
                raise ValueError(f"manifest.json has no {key}.{sub}")
        articles = {row["id"]: Article(**row) for row in _read_jsonl(folder / "articles.jsonl")}
        chunks = [Chunk(**row) for row in _read_jsonl(folder / "chunks.jsonl")]
        vectors = np.load(folder / "vectors.npy", allow_pickle=False)
        dense = _faiss().read_index(str(folder / "dense.faiss"))
        import bm25s

        bm25 = bm25s.BM25.load(str(folder / "bm25"), show_progress=False)
    except RagError:
        raise
    except Exception as e:  # truncated JSON, numpy or FAISS files raise many kinds of errors
        reason = f"{type(e).__name__}: {e}"
        raise RagError(f"the index in {folder} is corrupt ({reason}): run `rag index` to rebuild it") from e
    sizes = {len(chunks), len(vectors), dense.ntotal, manifest.get("chunks")}
    if len(sizes) != 1:
        raise RagError(f"the index in {folder} is inconsistent (chunk and vector counts differ): run `rag index`")
    return Index(folder, manifest, articles, chunks, vectors, dense, bm25)


@contextlib.contextmanager
def _lock(folder: Path):
    """One `rag index` at a time per index folder."""
    lock_path = folder.parent / f".{folder.name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise RagError(f"another `rag index` is writing {folder}; wait for it to finish") from e
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _previous(folder: Path, embedder_id: str, size: int, overlap: int, log) -> Index | None:
    """The existing index, if its vectors can be reused."""
    try:
        old = load_index(folder)
        old.check_compatible(embedder_id, size, overlap)
        return old
    except RagError as e:
        if (folder / "manifest.json").exists():
            log(f"not reusing the old index: {e}")
        return None


def build_index(
    seeds_dir: Path, folder: Path, embedder: Embedder, chunk_size: int, chunk_overlap: int, log=print
) -> BuildReport:
    """(Re)build the index from the articles in seeds_dir, embedding only new or changed articles."""
    started = time.perf_counter()
    folder = Path(folder)
    if not Path(seeds_dir).is_dir():
        raise RagError(f"articles folder {seeds_dir} does not exist")
    with _lock(folder):
        articles, warnings = load_articles(Path(seeds_dir))
        for warning in warnings:
            log(warning)
        if not articles:
            raise RagError(f"no readable .txt or .md articles in {seeds_dir}")
        report = BuildReport(warnings=warnings)
        old = _previous(folder, embedder.id, chunk_size, chunk_overlap, log)
        old_hash = {a.id: a.sha256 for a in old.articles.values()} if old else {}
        chunks: list[Chunk] = []
        vectors: list[np.ndarray | None] = []
        for article in articles:
            if old_hash.get(article.id) == article.sha256:
                report.unchanged.append(article.id)
                rows = [i for i, c in enumerate(old.chunks) if c.article_id == article.id]
                chunks += [old.chunks[i] for i in rows]
                vectors += [old.vectors[i] for i in rows]
            else:
                (report.changed if article.id in old_hash else report.added).append(article.id)
                new = chunk_article(article, chunk_size, chunk_overlap)
                chunks += new
                vectors += [None] * len(new)
        report.removed = sorted(set(old_hash) - {a.id for a in articles})
        todo = [i for i, v in enumerate(vectors) if v is None]
        for i, vector in zip(todo, _embed_documents([chunks[i] for i in todo], embedder, log), strict=True):
            vectors[i] = vector
        matrix = np.vstack(vectors).astype(np.float32) if vectors else np.zeros((0, embedder.dims), np.float32)
        dense, kind = make_dense_index(matrix)
        report.chunks, report.embedded, report.faiss_type = len(chunks), len(todo), kind
        manifest = {
            "format_version": FORMAT_VERSION,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "embedder": {"id": embedder.id, "dims": embedder.dims},
            "chunking": {"size": chunk_size, "overlap": chunk_overlap, "separators": SEPARATORS},
            "dense": {"type": kind, "metric": "inner_product", "normalized": True},
            "bm25": {"tokens": "rag.normalize.terms (normalized, light10-stemmed)", "k1": 1.5, "b": 0.75},
            "chunks": len(chunks),
            "articles": {a.id: {"sha256": a.sha256, "title": a.title, "date": a.date} for a in articles},
            "versions": _versions(),
        }
        _write_atomically(folder, manifest, articles, chunks, matrix, dense, make_bm25(chunks))
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _embed_documents(chunks: list[Chunk], embedder: Embedder, log, batch: int = 16) -> list[np.ndarray]:
    """Embed chunks in batches of similar length (less padding), with a progress bar."""
    from tqdm import tqdm

    order = sorted(range(len(chunks)), key=lambda i: len(chunks[i].text))
    out: list[np.ndarray | None] = [None] * len(chunks)
    with tqdm(total=len(chunks), desc="embedding", unit="chunk", disable=not chunks) as bar:
        for at in range(0, len(order), batch):
            ids = order[at : at + batch]
            for i, vector in zip(ids, embedder.embed_batch([chunks[i].text for i in ids], "document"), strict=True):
                out[i] = vector
            bar.update(len(ids))
    return out


def _write_atomically(folder: Path, manifest, articles, chunks, matrix, dense, bm25) -> None:
    """Write into a sibling temp folder, then swap it in: a crash leaves the old index intact."""
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    old = folder.parent / f".{folder.name}.old-{os.getpid()}"
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):  # left by a killed build (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_jsonl(tmp / "articles.jsonl", (asdict(a) for a in articles))
        _write_jsonl(tmp / "chunks.jsonl", (c.to_dict() for c in chunks))
        np.save(tmp / "vectors.npy", matrix, allow_pickle=False)
        _faiss().write_index(dense, str(tmp / "dense.faiss"))
        bm25.save(str(tmp / "bm25"), show_progress=False)
        # The manifest goes last: a folder without one is never taken for an index.
        (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
    except BaseException as e:
        if old.exists() and not folder.exists():
            old.rename(folder)  # put the previous index back
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception):  # disk full, permissions, FAISS I/O: not a traceback, and say what is kept
            raise RagError(f"could not write the index in {folder} ({type(e).__name__}: {e}); "
                           "any previous index is unchanged") from e
        raise
    shutil.rmtree(old, ignore_errors=True)
