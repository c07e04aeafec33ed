"""The default generator: a local GGUF model run in-process by llama-cpp-python (CPU, or Metal/CUDA offload)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from rag.config import Config
from rag.errors import RagError

GGUF_MAGIC = b"GGUF"


class LlamaGenerator:
    """A local GGUF model run by llama.cpp: CPU by default, GPU offload with n_gpu_layers."""

    features = frozenset()

    def __init__(
        self,
        path: Path,
        n_ctx: int = 2048,
        n_threads: int = 2,
        n_batch: int = 512,
        n_gpu_layers: int = 0,
    ):
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise RagError("llama-cpp-python is not installed: run `make setup` (see README)") from e
        path = Path(path)
        try:
            with open(path, "rb") as f:
                magic = f.read(4)
        except OSError as e:  # gone, a folder, unreadable: say so rather than a traceback
            raise RagError(f"cannot read the model file {path} ({e.strerror}): run `rag models pull` or fix the "
                           "generator path") from e
        if magic != GGUF_MAGIC:
            raise RagError(f"{path} is not a GGUF model file: run `rag models pull` or fix the generator path")
        try:
            self.llm = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_batch=n_batch,
                n_gpu_layers=n_gpu_layers,
                verbose=False,
            )
        except (ValueError, RuntimeError) as e:
            raise RagError(f"llama.cpp could not load {path} ({e}); run `rag models pull` to restore it") from e
        self.id = path.name
        self.n_ctx = n_ctx
        self._lock = threading.Lock()  # one llama context: one generation at a time

    @classmethod
    def from_config(cls, config: Config, spec: str) -> LlamaGenerator:
        """The model named by spec: a registered model pulled into models_dir, or a local .gguf file."""
        from rag.models import resolve

        path = resolve(spec, config.models_dir, "generator")
        return cls(path, config.n_ctx, config.n_threads, config.n_batch, config.n_gpu_layers)

    def count_tokens(self, text: str) -> int:
        """Tokens the model uses for a text."""
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def generate(self, messages: list[dict], max_tokens: int, stop: list[str], temperature: float) -> Iterator[str]:
        """Stream the chat reply. The unchanged prompt prefix (system + example) stays in llama.cpp's KV cache."""
        with self._lock:
            for part in self.llm.create_chat_completion(
                messages=messages,
                max_tokens=max_tokens,
                temperature=temperature,
                top_k=1 if temperature == 0 else 40,
                stop=stop,
                stream=True,
            ):
                token = part["choices"][0]["delta"].get("content")
                if token:
                    yield token
