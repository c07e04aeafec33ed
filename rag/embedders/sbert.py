"""The default embedder: a local sentence-transformers model folder (EmbeddingGemma-300M), on CUDA when there is one."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from rag.config import Config
from rag.embedders.base import Kind
from rag.errors import RagError
from rag.models import resolve


def folder_fingerprint(folder: Path) -> str:
    """Cheap identity of a model folder: file names and sizes, plus the bytes of its small files."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith(".")):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder)}:{size}\n".encode())
        if size < 1_000_000:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def torch_device(setting: str) -> str:
    """The torch device for the device setting: 'auto' is CUDA when torch sees a GPU, else the CPU."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise RagError("device = cuda, but torch sees no CUDA GPU (this torch build may be CPU-only): set device "
                       "to auto or cpu")
    return setting


class SentenceTransformerEmbedder:
    """A local sentence-transformers model folder, with the model's own query and document prompts."""

    def __init__(self, folder: Path, device: str = "cpu", batch_size: int = 16):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise RagError("sentence-transformers is not installed: pip install -e . (see README)") from e
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub at run time
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bar on every start
        hf_logging.set_verbosity_error()
        try:
            self.model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        except Exception as e:  # a broken folder raises many kinds of errors; say which folder
            raise RagError(f"cannot load the embedding model from {folder}: {e}") from e
        self.id = f"{Path(folder).name}@{folder_fingerprint(Path(folder))}"
        get_dims = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dims = int(get_dims())
        self.batch_size = batch_size
        self.prompts = set(getattr(self.model, "prompts", {}) or {})
        self.lock = threading.Lock()  # one batch at a time: the tokenizer sets its padding on each call

    @classmethod
    def from_config(cls, config: Config, spec: str) -> SentenceTransformerEmbedder:
        """The model named by spec: a registered model pulled into models_dir, or a local folder."""
        import torch

        if config.embed_threads:
            torch.set_num_threads(config.embed_threads)  # torch has one thread pool per process
        return cls(resolve(spec, config.models_dir, "embedder"), device=torch_device(config.device))

    def embed_batch(self, texts: list[str], kind: Kind) -> np.ndarray:
        """Encode texts with the model's query or document prompt."""
        prompt = kind if kind in self.prompts else None
        with self.lock:
            vectors = self.model.encode(
                texts,
                prompt_name=prompt,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dims)
