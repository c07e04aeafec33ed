"""Search stores: the contract in base.py, one file per backend, built from the config by `make_store`."""

from __future__ import annotations

from rag.config import Config
from rag.plugins import build
from rag.stores.base import Passage, Store

__all__ = ["STORES", "Passage", "Store", "make_store"]

# store setting -> "module:Class"; a new backend is a new file and one line here.
STORES = {
    "faiss": "rag.stores.faiss:FaissStore",
    "pgvector": "rag.stores.pgvector:PgVectorStore",
}


def make_store(config: Config) -> Store:
    """The search store named by config.store."""
    return build(STORES, config.store, "", "store", config)
