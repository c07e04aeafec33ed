"""The default store: a folder of plainly named files, FAISS for dense search and bm25s for lexical search.

Layout of the index folder (it is recognised by its marker file and holds nothing else of the user's):

    rag-index.json    marker: this folder belongs to the project
    current           the name of the published version, replaced atomically
    v000007/          a version: manifest.json, articles.jsonl, chunks.jsonl, vectors.npy, dense.faiss, bm25/
    v000006/          the previous version, kept for readers that are still loading it
    .lock             held by the one `rag index` that is building
    .tmp-*            a version being written (removed by the next build if a build was killed)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rag.article import Article
from rag.chunk import Chunk
from rag.config import Config
from rag.errors import RagError, require
from rag.normalize import terms as text_terms
from rag.rows import dataclass_fields, row_problem
from rag.stores.base import (
    BM25_B,
    BM25_K1,
    BM25_MANIFEST,
    DEPTH,
    FORMAT_VERSION,
    Mode,
    Passage,
    Store,
    bm25_idf,
    check_manifest,
    damaged,
    rrf,
    top_n,
)

MARKER = "rag-index.json"
POINTER = "current"
LOCK = ".lock"
READERS = ".readers"  # readers hold a shared lock on this file of a version while they load it
FILES = ("manifest.json", "articles.jsonl", "chunks.jsonl", "vectors.npy", "dense.faiss", "bm25")
_VERSION = re.compile(r"^v(\d{6,})$")
_TEMP = re.compile(r"^\.tmp-v\d+-\d+$")
EXACT_SEARCH_LIMIT = 50_000  # below this many chunks FAISS searches exactly; from it on, an IVF index
IVF_TRAIN_PER_LIST = 64  # k-means training sample per inverted list (FAISS wants at least 39)
IVF_PROBE_SHARE = 32  # search 1/32 of the lists: recall@10 >= 0.95 (evals/bench.py measures it)


def _faiss():
    return require("faiss", "the FAISS store", "pip install faiss-cpu")


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

    bm25 = bm25s.BM25(k1=BM25_K1, b=BM25_B)
    bm25.index([text_terms(f"{c.title}\n{c.text}") or [""] for c in chunks], show_progress=False)
    return bm25


@dataclass
class Snapshot:
    """One version of the index, loaded in memory."""

    folder: Path
    manifest: dict
    articles: dict[str, Article]
    chunks: list[Chunk]
    vectors: np.ndarray
    dense: object  # faiss.Index
    bm25: object  # bm25s.BM25
    _df: np.ndarray | None = field(default=None, repr=False)

    def idf(self, term: str) -> float:
        """BM25's idf of a term over the chunks."""
        if self._df is None:
            self._df = np.diff(np.asarray(self.bm25.scores["indptr"]))
        i = self.bm25.vocab_dict.get(term)
        df = int(self._df[i]) if i is not None and i < len(self._df) else 0
        return bm25_idf(len(self.chunks), df)


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_rows(path: Path, cls: type, where: Path) -> list:
    """The rows of a JSONL file of an index as cls objects (Article, Chunk), each checked first: a damaged() error
    names the file, the line and the field."""
    required, optional = dataclass_fields(cls)
    rows = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, or nested too deep for the parser
                raise damaged(str(where), f"{path.name} line {n}: not JSON text") from e
            if problem := row_problem(row, required, optional):
                raise damaged(str(where), f"{path.name} line {n}: {problem}")
            rows.append(cls(**{k: row[k] for k in (*required, *optional) if k in row}))
    return rows


def read_version(folder: Path, where: Path) -> Snapshot:
    """Load one version folder: every file checked, a one-line error naming what is missing, cut or edited."""
    missing = [name for name in FILES if not (folder / name).exists()]
    if missing:
        raise RagError(f"the index in {where} is incomplete (missing {', '.join(missing)}): run `rag index`")
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, or nested too deep for the parser
        raise damaged(str(where), "manifest.json: not JSON text") from e
    check_manifest(manifest, str(where))
    articles = {a.id: a for a in _read_rows(folder / "articles.jsonl", Article, where)}
    chunks = _read_rows(folder / "chunks.jsonl", Chunk, where)
    try:
        vectors = np.load(folder / "vectors.npy", allow_pickle=False)
        dense = _faiss().read_index(str(folder / "dense.faiss"))
        import bm25s

        bm25 = bm25s.BM25.load(str(folder / "bm25"), show_progress=False)
    except Exception as e:  # truncated numpy, FAISS or bm25s files raise many kinds of errors
        raise damaged(str(where), f"{type(e).__name__}: {e}") from e
    dims = manifest["embedder"]["dims"]
    if vectors.ndim != 2 or vectors.shape[1] != dims or dense.d != dims:
        raise damaged(str(where), f"vectors.npy or dense.faiss: vectors are not of {dims} dimensions")
    if len({len(chunks), len(vectors), dense.ntotal, manifest["chunks"]}) != 1:
        raise RagError(f"the index in {where} is inconsistent (chunk and vector counts differ): run `rag index`")
    # A build reuses an article's chunks by its id and counts them from the manifest: all three files must agree.
    per_article = Counter(c.article_id for c in chunks)
    if set(articles) != set(manifest["articles"]) or per_article != {
            name: meta["chunks"] for name, meta in manifest["articles"].items() if meta["chunks"]}:
        raise damaged(str(where), "manifest.json, articles.jsonl and chunks.jsonl list different articles or chunks")
    return Snapshot(folder, manifest, articles, chunks, vectors, dense, bm25)


def check_owned(folder: Path) -> None:
    """Refuse a folder that is not an index folder: one that holds anything but the project's own files."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise RagError(f"index_dir {folder} is a file, not a folder: choose another index_dir")
    names = {p.name for p in folder.iterdir()}
    if not names or MARKER in names:
        return
    # Files named like an index's are no proof that this project wrote them (format 1 of the index had no marker):
    # such a folder is refused like any other, never emptied.
    shown = ", ".join(sorted(names)[:3]) + ("…" if len(names) > 3 else "")
    raise RagError(f"index_dir {folder} is not an index folder (it holds {shown}); nothing was changed: "
                   "choose a new or empty folder for index_dir")


class FaissStore(Store):
    """An index folder on local disk, loaded whole into memory: the embedded default."""

    name = "faiss"

    def __init__(self, folder: Path | str, snapshot: Snapshot | None = None):
        self.folder = Path(folder)
        self.where = str(self.folder)
        self._snapshot = snapshot  # loaded on first use, unless given (benchmarks build one in memory)

    @classmethod
    def from_config(cls, config: Config, spec: str = "") -> FaissStore:
        """The index folder of the config."""
        return cls(config.index_dir)

    # Reading.

    def _current(self) -> str | None:
        """The name of the published version, None if there is none; a damaged() error if it names no version."""
        try:
            name = (self.folder / POINTER).read_bytes()[:100].decode("ascii").strip()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RagError(f"cannot read the index in {self.folder} ({e.strerror})") from e
        except UnicodeDecodeError:
            name = "?"
        if name and not _VERSION.match(name):  # never a path: `current` must not lead out of the folder
            raise damaged(self.where, f"{POINTER}: {name[:20]!r} is not a version name")
        return name or None

    def _load(self) -> Snapshot:
        # A build may publish a new version and remove an older one at any moment: read the pointer, lock that
        # version for reading, and start again if it was removed in between.
        for _ in range(20):
            name = self._current()
            if name is None:
                raise RagError(f"no index in {self.folder}: run `rag index` to build it from your articles")
            version = self.folder / name
            try:
                with open(version / READERS, "rb") as handle:
                    fcntl.flock(handle, fcntl.LOCK_SH)
                    if self._current() != name and not (version / "manifest.json").exists():
                        continue
                    return read_version(version, self.folder)
            except FileNotFoundError:
                if self._current() == name:  # builds never remove the published version: it was never there
                    raise damaged(self.where, f"{POINTER}: {name} does not exist") from None
                continue  # removed by a build between reading the pointer and opening it
        raise RagError(f"the index in {self.folder} kept changing while loading; try again")

    @property
    def snapshot(self) -> Snapshot:
        """The loaded version (loaded on first use)."""
        if self._snapshot is None:
            self._snapshot = self._load()
        return self._snapshot

    def refresh(self) -> bool:
        """Load the published version if it is newer than the one in memory."""
        if self._snapshot is not None and self._current() == self._snapshot.folder.name:
            return False
        self._snapshot = self._load()
        return True

    def manifest(self) -> dict:
        return self.snapshot.manifest

    def article(self, article_id: str) -> Article:
        if article_id not in self.snapshot.articles:
            raise RagError(f"no indexed article named {article_id!r}")
        return self.snapshot.articles[article_id]

    def count(self) -> int:
        return len(self.snapshot.chunks)

    def idf(self, terms: Iterable[str]) -> dict[str, float]:
        return {t: self.snapshot.idf(t) for t in terms}

    def search(self, vector: np.ndarray, terms: list[str], k: int, mode: Mode = "hybrid",
               depth: int = DEPTH) -> list[Passage]:
        snap = self.snapshot
        if not snap.chunks:
            return []
        depth = max(depth, k)
        query = [t for t in terms if t in snap.bm25.vocab_dict]
        lexical = (np.asarray(snap.bm25.get_scores(query), dtype=np.float32) if query
                   else np.zeros(len(snap.chunks), dtype=np.float32))
        vector = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        dense_scores, dense_ids = snap.dense.search(vector, min(depth, len(snap.chunks)))
        dense_rank = [int(i) for i in dense_ids[0] if i >= 0]  # FAISS pads a short result with -1
        cosine = dict(zip(dense_rank, (float(s) for s in dense_scores[0]), strict=False))
        if mode == "dense":
            fused = [(i, cosine[i]) for i in dense_rank]
        elif mode == "bm25":
            fused = [(i, float(lexical[i])) for i in top_n(lexical, depth)]
        else:
            fused = rrf([dense_rank, top_n(lexical, depth)])
        return [
            # IVF only scores what it visits: compute the cosine from the stored vector when missing.
            Passage(snap.chunks[i], score, cosine.get(i, float(snap.vectors[i] @ vector[0])), float(lexical[i]))
            for i, score in fused[:k]
        ]

    def chunks_of(self, article_ids: Iterable[str]) -> tuple[list[Chunk], np.ndarray]:
        wanted = set(article_ids)
        snap = self.snapshot
        rows = [i for i, c in enumerate(snap.chunks) if c.article_id in wanted]
        return [snap.chunks[i] for i in rows], snap.vectors[rows]

    # Writing.

    @contextlib.contextmanager
    def building(self) -> Iterator[None]:
        check_owned(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not (self.folder / MARKER).exists():
                (self.folder / MARKER).write_text(json.dumps({"format_version": FORMAT_VERSION, "store": self.name})
                                                  + "\n", encoding="utf-8")
            handle = open(self.folder / LOCK, "w")  # noqa: SIM115  held for the whole build
        except OSError as e:
            raise RagError(f"cannot write the index folder {self.folder} ({e.strerror}); nothing was changed") from e
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                raise RagError(f"another `rag index` is writing {self.folder}; wait for it to finish") from e
            self._remove_leftovers()
            self._snapshot = None  # what is published now, loaded again under the lock
            yield

    def publish(self, manifest: dict, keep: set[str], articles: list[Article], chunks: list[Chunk],
                vectors: np.ndarray) -> dict:
        old = self._snapshot  # loaded by the builder's call to manifest(), None if the old index was unreadable
        kept_articles = [a for a in old.articles.values() if a.id in keep] if old else []
        kept_chunks, kept_vectors = self.chunks_of(keep) if old and keep else ([], np.zeros((0, vectors.shape[1])))
        all_articles = sorted([*kept_articles, *articles], key=lambda a: a.id)
        all_chunks = [*kept_chunks, *chunks]
        matrix = np.vstack([kept_vectors, vectors]).astype(np.float32) if all_chunks else vectors.astype(np.float32)
        dense, kind = make_dense_index(matrix)
        added = {"store": self.name, "dense": {"type": kind, "metric": "inner_product", "normalized": True},
                 "bm25": BM25_MANIFEST}
        manifest = {**manifest, **added, "chunks": len(all_chunks)}
        number = 1 + max((int(m.group(1)) for p in self.folder.iterdir() if (m := _VERSION.match(p.name))), default=0)
        name = f"v{number:06d}"
        tmp = self.folder / f".tmp-{name}-{os.getpid()}"
        try:
            tmp.mkdir()
            (tmp / READERS).touch()  # first: a temp folder holding it is provably ours (see _remove_leftovers)
            _write_jsonl(tmp / "articles.jsonl", (asdict(a) for a in all_articles))
            _write_jsonl(tmp / "chunks.jsonl", (c.to_dict() for c in all_chunks))
            np.save(tmp / "vectors.npy", matrix, allow_pickle=False)
            _faiss().write_index(dense, str(tmp / "dense.faiss"))
            make_bm25(all_chunks).save(str(tmp / "bm25"), show_progress=False)
            (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
            tmp.rename(self.folder / name)
            pointer = self.folder / f".tmp-{POINTER}-{os.getpid()}"
            pointer.write_text(name + "\n", encoding="utf-8")
            os.replace(pointer, self.folder / POINTER)  # the one step that publishes the new version
        except Exception as e:  # disk full, permissions, FAISS I/O: not a traceback, and say what is kept
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.folder / f".tmp-{POINTER}-{os.getpid()}").unlink()
            if self._current() != name:
                shutil.rmtree(self.folder / name, ignore_errors=True)
            raise RagError(f"could not write the index in {self.folder} ({type(e).__name__}: {e}); "
                           "any previous index is unchanged") from e
        self._remove_old(keep_previous=old.folder.name if old else None)
        self._snapshot = None
        return added

    def _remove_leftovers(self) -> None:
        """Remove what a killed build left: temp folders and pointers (we hold the build lock)."""
        for path in self.folder.iterdir():
            if _TEMP.match(path.name) and path.is_dir() and not path.is_symlink() and (path / READERS).is_file():
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.startswith(f".tmp-{POINTER}-"):
                path.unlink(missing_ok=True)

    def _remove_old(self, keep_previous: str | None) -> None:
        """Remove versions older than the previous one, unless a reader is loading them."""
        current = self._current()
        for path in self.folder.iterdir():
            # Only our own version folders: named by us and holding the readers' lock file we wrote into them.
            if _VERSION.match(path.name) and path.name not in (current, keep_previous) and (path / READERS).is_file():
                _remove_unless_read(path)


def _remove_unless_read(version: Path) -> None:
    try:
        with open(version / READERS, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(version, ignore_errors=True)
    except (BlockingIOError, FileNotFoundError):
        pass  # a reader is loading it, or it is already gone: the next build tries again
