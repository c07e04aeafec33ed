"""Hybrid retrieval: dense (FAISS) and BM25 rankings fused by reciprocal rank fusion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rag.chunk import Chunk
from rag.embed import Embedder
from rag.index import Index
from rag.normalize import fold_script, terms

RRF_K = 60  # the constant of Cormack, Clarke & Buettcher (2009): damps the weight of top ranks
Mode = Literal["hybrid", "dense", "bm25"]


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


def rrf(rankings: list[list[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: score(d) = sum over rankings of 1 / (k + rank of d), best first."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def top_n(scores: np.ndarray, n: int) -> list[int]:
    """Indices of the n highest positive scores, best first."""
    n = min(n, len(scores))
    if n <= 0:
        return []
    best = np.argpartition(-scores, n - 1)[:n]
    return [int(i) for i in best[np.argsort(-scores[best], kind="stable")] if scores[i] > 0]


def bm25_scores(index: Index, question: str) -> np.ndarray:
    """BM25 score of every chunk for the question's terms."""
    query = [t for t in terms(question) if t in index.bm25.vocab_dict]
    if not query:
        return np.zeros(len(index.chunks), dtype=np.float32)
    return np.asarray(index.bm25.get_scores(query), dtype=np.float32)


def search(
    index: Index, embedder: Embedder, question: str, k: int, mode: Mode = "hybrid", depth: int = 50
) -> list[Passage]:
    """The k best passages for a question."""
    if not index.chunks:
        return []
    depth = max(depth, k)
    lexical = bm25_scores(index, question)
    query = embedder.embed_batch([fold_script(question)], "query")
    dense_scores, dense_ids = index.dense.search(query, min(depth, len(index.chunks)))
    dense_rank = [int(i) for i in dense_ids[0] if i >= 0]
    cosine = dict(zip(dense_rank, (float(s) for s in dense_scores[0]), strict=False))
    if mode == "dense":
        fused = [(i, cosine[i]) for i in dense_rank]
    elif mode == "bm25":
        fused = [(i, float(lexical[i])) for i in top_n(lexical, depth)]
    else:
        fused = rrf([dense_rank, top_n(lexical, depth)])
    passages = []
    for i, score in fused[:k]:
        # HNSW only scores what it visits: compute the cosine from the stored vector when missing.
        similarity = cosine.get(i, float(index.vectors[i] @ query[0]))
        passages.append(Passage(index.chunks[i], score, similarity, float(lexical[i])))
    return passages
