"""Embedders: the contract in base.py, one file per backend, built from the config by `make_embedder`."""

from __future__ import annotations

from rag.config import Config
from rag.embedders.base import Embedder, Kind
from rag.plugins import build, parse

__all__ = ["EMBEDDERS", "Embedder", "Kind", "make_embedder"]

# backend -> "module:Class"; the embedder setting is "backend:spec" or a model name/folder for the default backend.
EMBEDDERS = {
    "sbert": "rag.embedders.sbert:SentenceTransformerEmbedder",
}


def make_embedder(config: Config) -> Embedder:
    """The embedder named by config.embedder (a registered model, a local folder, or backend:spec)."""
    return build(EMBEDDERS, *parse(config.embedder, EMBEDDERS, "sbert"), "embedder", config)
