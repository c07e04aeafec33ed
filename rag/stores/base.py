"""The search-store contract: where articles, chunks, vectors and terms live, how a new version of them is
published atomically, and how they are searched. One file per backend; `rag.stores.make_store` builds one."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from rag.article import Article
from rag.chunk import Chunk
from rag.errors import RagError
from rag.rows import shape_problem

FORMAT_VERSION = 2
RRF_K = 60  # the constant of Cormack, Clarke & Buettcher (2009): damps the weight of top ranks
DEPTH = 50  # candidates taken from each ranking before fusion
BM25_K1, BM25_B = 1.5, 0.75  # bm25s defaults (Lucene's formula); the pgvector store computes the same
BM25_MANIFEST = {"tokens": "rag.normalize.terms (normalized, light10-stemmed)", "k1": BM25_K1, "b": BM25_B}
Mode = Literal["hybrid", "dense", "bm25"]
# What readers of an index rely on in its manifest (a rag.rows shape: nested objects, fields and their types) ...
MANIFEST_SHAPE: dict[str, Any] = {"format_version": int, "embedder": {"id": str, "dims": int},
                                  "chunking": {"size": int, "overlap": int}, "chunks": int, "articles": dict}
# ... and in each article's entry: `rag index` reuses vectors by sha256 and counts chunks, the UI lists the rest.
ARTICLE_ENTRY_SHAPE: dict[str, Any] = {"sha256": str, "title": str, "date": str | None, "chunks": int}


@dataclass
class Passage:
    """A retrieved chunk with its scores."""

    chunk: Chunk
    score: float  # fused RRF score (or the single ranker's score)
    dense: float  # cosine similarity to the question
    bm25: float

    def to_dict(self) -> dict:
        """Plain dict for JSON output."""
        c = self.chunk
        return {
            "id": c.id, "source": c.article_id, "title": c.title, "date": c.date, "start": c.start, "end": c.end,
            "text": c.text, "score": round(self.score, 5), "dense": round(self.dense, 4), "bm25": round(self.bm25, 3),
        }


def rrf(rankings: list[list[int]], k: int = RRF_K, weights: list[float] | None = None) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: score(d) = sum over rankings of w / (k + rank of d), best first."""
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings), strict=True):
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def top_n(scores: np.ndarray, n: int) -> list[int]:
    """Indices of the n highest positive scores, best first; equal scores in row order (as the SQL stores sort)."""
    n = min(n, len(scores))
    if n <= 0:
        return []
    cut = -np.partition(-scores, n - 1)[n - 1]  # the n-th best score: every row scoring as much is a candidate
    rows = np.flatnonzero(scores >= cut)
    rows = rows[np.lexsort((rows, -scores[rows]))][:n]
    return [int(i) for i in rows if scores[i] > 0]


def bm25_idf(chunks: int, df: int) -> float:
    """BM25's inverse document frequency (Lucene's, never negative): rare terms weigh more."""
    return math.log(1 + (chunks - df + 0.5) / (df + 0.5))


def damaged(where: str, problem: str) -> RagError:
    """The one-line error for an index whose files were edited or cut: what is wrong, and the way out."""
    first_line = " ".join(problem.strip().split("\n")[0].split())  # a library's message may run over many lines
    return RagError(f"the index in {where} is damaged ({first_line}): run `rag index` to build a fresh one")


def check_manifest(manifest: object, where: str) -> dict:
    """The manifest, once every field readers rely on is there with its type; else a one-line damaged() error."""
    if isinstance(manifest, dict) and manifest.get("format_version") != FORMAT_VERSION:
        raise RagError(f"the index in {where} has format version {manifest.get('format_version')!r}, expected "
                       f"{FORMAT_VERSION}: run `rag index` to build a fresh one")
    if problem := shape_problem(manifest, MANIFEST_SHAPE):
        raise damaged(where, f"manifest.json: {problem}")
    for article_id, entry in manifest["articles"].items():
        if problem := shape_problem(entry, ARTICLE_ENTRY_SHAPE, f"articles[{article_id!r}]"):
            raise damaged(where, f"manifest.json: {problem}")
    return manifest


def check_compatible(manifest: dict, where: str, embedder_id: str, chunk_size: int, chunk_overlap: int) -> None:
    """Refuse to search with an embedder or chunk settings other than the ones the index was built with."""
    built = manifest["embedder"]["id"]
    if built != embedder_id:
        raise RagError(f"the index in {where} was built with embedder {built}, but the configured "
                       f"embedder is {embedder_id}: run `rag index` to rebuild it")
    chunking = manifest["chunking"]
    if (chunking["size"], chunking["overlap"]) != (chunk_size, chunk_overlap):
        raise RagError(f"the index in {where} was built with chunk size/overlap "
                       f"{chunking['size']}/{chunking['overlap']}, the config says {chunk_size}/{chunk_overlap}: "
                       "run `rag index` to rebuild it")


class Store(ABC):
    """Articles, their chunks, vectors and terms. Readers see one published version at a time; `publish` makes the
    next one current in one step, so a reader gets the old version or the new one, never a half-written one."""

    name: ClassVar[str]  # the `store` setting that selects this backend
    where: str  # the folder or server shown in messages

    @abstractmethod
    def manifest(self) -> dict:
        """The current version's manifest (embedder, chunking, articles and their hashes); RagError if none."""

    @abstractmethod
    def article(self, article_id: str) -> Article:
        """One indexed article, with the text that citation offsets point into."""

    @abstractmethod
    def count(self) -> int:
        """Chunks in the current version."""

    @abstractmethod
    def search(self, vector: np.ndarray, terms: list[str], k: int, mode: Mode = "hybrid",
               depth: int = DEPTH) -> list[Passage]:
        """The k best chunks for a query vector (unit length) and its normalized terms, fused by RRF in hybrid mode."""

    @abstractmethod
    def idf(self, terms: Iterable[str]) -> dict[str, float]:
        """BM25 inverse document frequency of each term over the chunks."""

    @abstractmethod
    def chunks_of(self, article_ids: Iterable[str]) -> tuple[list[Chunk], np.ndarray]:
        """The chunks of some articles and their vectors (reused by incremental builds)."""

    @abstractmethod
    def building(self) -> AbstractContextManager[None]:
        """Held while one `rag index` builds; a second builder gets a RagError at once. Checks first that the store
        can be written, so no embedding work is done for nothing."""

    @abstractmethod
    def publish(self, manifest: dict, keep: set[str], articles: list[Article], chunks: list[Chunk],
                vectors: np.ndarray) -> dict:
        """Make a new version current in one step: the kept articles' chunks carried over from the current version,
        the given articles (with their chunks and vectors) added, every other article gone. Returns what the store
        adds to the manifest (e.g. its dense index type)."""

    def refresh(self) -> bool:
        """Switch to the newest published version if there is one; True when it changed."""
        return False
