"""Retrieval: the question embedded and split into terms, then the store's hybrid search (dense + BM25, RRF)."""

from __future__ import annotations

from rag.embedders import Embedder
from rag.normalize import fold_script, terms
from rag.stores.base import DEPTH, Mode, Passage, Store

__all__ = ["Mode", "Passage", "search"]


def search(store: Store, embedder: Embedder, question: str, k: int, mode: Mode = "hybrid",
           depth: int = DEPTH) -> list[Passage]:
    """The k best passages for a question."""
    vector = embedder.embed_batch([fold_script(question)], "query")[0]
    return store.search(vector, terms(question), k, mode, depth)
