"""The embedder contract: texts in, unit-length float32 vectors out."""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

Kind = Literal["query", "document"]


class Embedder(Protocol):
    """Anything that turns texts into L2-normalized vectors."""

    id: str  # identifies the model and its weights; stored in the index manifest
    dims: int

    def embed_batch(self, texts: list[str], kind: Kind) -> np.ndarray:
        """Vectors of shape (len(texts), dims), float32, unit length; safe to call from several threads at once (the
        UI answers several chats and indexes uploads beside them)."""
        ...
