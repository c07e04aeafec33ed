"""Embedders: the contract in base.py, one file per backend, built from the config by `make_embedder`."""

from __future__ import annotations

from rag.config import Config
from rag.embedders.base import Embedder, Kind
from rag.models import EXPORTS
from rag.plugins import build, parse

__all__ = ["EMBEDDERS", "Embedder", "Kind", "make_embedder"]

# backend -> "module:Class"; the embedder setting is "backend:spec" or a model name/folder for the default backend.
EMBEDDERS = {
    "sbert": "rag.embedders.sbert:SentenceTransformerEmbedder",
    "onnx": "rag.embedders.exported:OnnxEmbedder",
    "openvino": "rag.embedders.exported:OpenVinoEmbedder",
}


def make_embedder(config: Config) -> Embedder:
    """The embedder named by config.embedder (a registered model or export, a local folder, or backend:spec)."""
    backend, spec = parse(config.embedder, EMBEDDERS, "sbert")
    if backend == "sbert" and spec in EXPORTS:  # a registered export names the backend that runs it
        backend = EXPORTS[spec].runtime
    return build(EMBEDDERS, backend, spec, "embedder", config)
