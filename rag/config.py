"""Settings: defaults < rag.toml < RAG_* environment variables < explicit overrides (CLI flags)."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rag.errors import RagError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("RAG_CACHE", Path.home() / ".cache" / "arabic-rag"))


@dataclass
class Config:
    """Every setting of the assistant, in one place."""

    seeds_dir: Path = Path("seeds")
    index_dir: Path = Path("index")
    prompts_dir: Path = PACKAGE_ROOT / "prompts"
    models_dir: Path = CACHE_DIR / "models"
    # A registered model name (see rag.models.MODELS) or a path to a local folder / .gguf file.
    embedder: str = "embeddinggemma-300m"
    generator: str = "qwen2.5-coder-1.5b"
    chunk_size: int = 600
    chunk_overlap: int = 80
    top_k: int = 4
    evidence: str = "sentences"  # what the model reads: the best "sentences" of the passages, or whole "passages"
    evidence_sentences: int = 2  # measured best of 2, 3 and 4 (evals/results/bench-latest.md)
    # Below this cosine for the best passage, and with few of the question's terms in the passages, the question
    # is refused before generation. Cosines depend on the embedder: 0.45 is measured for EmbeddingGemma-300M.
    min_similarity: float = 0.45
    n_ctx: int = 2048
    n_threads: int = field(default_factory=lambda: os.cpu_count() or 2)
    n_batch: int = 512
    n_gpu_layers: int = 0
    temperature: float = 0.0
    max_tokens: int = 64
    max_question_chars: int = 1000
    host: str = "127.0.0.1"
    port: int = 7860
    auth: str = ""  # "user:password" turns on a login page in the UI
    concurrency: int = 1  # answers generated at once by the UI (one model, one CPU)

    def replace(self, **changes: Any) -> Config:
        """A copy with some settings changed (values are coerced to the field's type)."""
        return dataclasses.replace(self, **{k: _coerce(self, k, v) for k, v in changes.items()})


def _coerce(config: Config, name: str, value: Any) -> Any:
    types = {f.name: type(getattr(config, f.name)) for f in fields(config)}
    if name not in types:
        raise RagError(f"unknown setting {name!r}; known: {', '.join(sorted(types))}")
    kind = types[name]
    if isinstance(value, (dict, list, bool)) and kind is not bool:  # a TOML table, array or true/false
        raise RagError(f"setting {name}: cannot read {value!r} as {kind.__name__}")
    if isinstance(value, kind) and kind is not bool:
        return value
    try:
        if issubclass(kind, Path):
            return Path(str(value)).expanduser()
        if kind is bool:
            return str(value).strip().lower() in {"1", "true", "yes", "on"}
        return kind(value)
    except (TypeError, ValueError) as e:
        raise RagError(f"setting {name}: cannot read {value!r} as {kind.__name__}") from e


def load_config(path: Path | str | None = None, **overrides: Any) -> Config:
    """Build the config from rag.toml (if present), RAG_* variables, then overrides."""
    config = Config()
    toml_path = Path(path) if path else Path(os.environ.get("RAG_CONFIG", "rag.toml"))
    if toml_path.exists():
        try:
            config = config.replace(**tomllib.loads(toml_path.read_text(encoding="utf-8")))
        except tomllib.TOMLDecodeError as e:
            raise RagError(f"{toml_path} is not valid TOML: {e}") from e
    elif path:
        raise RagError(f"config file {toml_path} not found")
    from_env = {
        f.name: os.environ[f"RAG_{f.name.upper()}"]
        for f in fields(config)
        if f"RAG_{f.name.upper()}" in os.environ
    }
    config = config.replace(**from_env)
    return _validate(config.replace(**{k: v for k, v in overrides.items() if v is not None}))


def _validate(config: Config) -> Config:
    """Refuse values that would only fail later, deep inside indexing or generation."""
    for name in ("chunk_size", "top_k", "evidence_sentences", "n_ctx", "n_threads", "n_batch", "max_tokens",
                 "max_question_chars", "concurrency"):
        if getattr(config, name) < 1:
            raise RagError(f"setting {name} must be at least 1, not {getattr(config, name)}")
    if not 0 <= config.chunk_overlap < config.chunk_size:
        raise RagError(f"setting chunk_overlap must be between 0 and chunk_size - 1 ({config.chunk_size - 1}), "
                       f"not {config.chunk_overlap}")
    if config.evidence not in ("sentences", "passages"):
        raise RagError(f"setting evidence must be 'sentences' or 'passages', not {config.evidence!r}")
    if config.temperature < 0:
        raise RagError(f"setting temperature must be 0 or more, not {config.temperature}")
    return config
