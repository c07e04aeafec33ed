"""Settings: defaults < rag.toml < RAG_* environment variables < explicit overrides (CLI flags)."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rag.errors import RagError
from rag.files import MB, read_input_text

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the checkout: for the tests only, the package never reads it
CACHE_DIR = Path(os.environ.get("RAG_CACHE", Path.home() / ".cache" / "arabic-rag"))
CANDIDATE_SOURCES = ("reply", "copy", "typed", "definition", "clause", "list", "yesno")  # rag.reading.candidates
MAX_CONFIG_BYTES = 1 * MB  # a rag.toml is a few hundred bytes: anything near this is not one


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS has one, else all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def setting(default: Any = None, help: str = "", factory: Any = None) -> Any:  # noqa: A002  (argparse's word)
    """A Config field with the help line shown by `rag --help`."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    """Every setting of the assistant, in one place."""

    seeds_dir: Path = setting(Path("seeds"), "folder of your articles (.txt .md .html .pdf .docx)")
    index_dir: Path = setting(Path("index"), "folder the FAISS index is written to (store = faiss)")
    models_dir: Path = setting(CACHE_DIR / "models", "folder the models are pulled into")
    store: str = setting("faiss", "search store: faiss (a local folder) or pgvector (a PostgreSQL server)")
    pg_dsn: str = setting("", "PostgreSQL connection string for store = pgvector (or RAG_PG_DSN)")
    pg_schema: str = setting("rag", "PostgreSQL schema the pgvector store keeps its tables in")
    # Twice pgvector's defaults (16, 64): at 10^6 chunks recall@10 0.965 instead of 0.752, for builds twice as long
    # (evals/results/stores.md).
    pg_hnsw_m: int = setting(32, "links per vector in pgvector's HNSW index, 2-100 (more: better recall, slower "
                                 "builds)")
    pg_hnsw_ef_construction: int = setting(128, "candidates kept while building pgvector's HNSW index, from 2 x "
                                                "pg_hnsw_m to 1000 (more: better recall, slower builds)")
    # EmbeddingGemma with int8 weights run by OpenVINO: 4x the fp32 model's speed on two cores, cosine 0.999 to its
    # vectors, the same recall (evals/results/embedders.md).
    index_batch: int = setting(0, "store = pgvector: 0 builds alone (one `rag index` at a time); N lets every "
                                  "`rag index` run at once, on any machine, share the build, each claiming N articles "
                                  "at a time")
    embedder: str = setting("embeddinggemma-300m-openvino-w8", "embedding model: a registered name "
                            "(embeddinggemma-300m-openvino-w8, -openvino-int8, -onnx-int8, or the fp32 "
                            "embeddinggemma-300m) or a local sentence-transformers folder")
    device: str = setting("auto", "where the embedding model runs: auto (CUDA when available, else the CPU), cpu or "
                                  "cuda")
    embed_threads: int = setting(0, "CPU threads of the embedding model (0: the library's default, one per core)")
    generator: str = setting("qwen2.5-coder-1.5b",
                             "answer model: a registered name, a local .gguf file, or openai:http://host:port/v1")
    generator_model: str = setting("", "model name sent to an OpenAI-compatible server")
    api_key: str = setting("", "API key of an OpenAI-compatible server (or RAG_API_KEY)")
    timeout: float = setting(120.0, "seconds to wait for an answer from an OpenAI-compatible server")
    chunk_size: int = setting(600, "characters per passage")
    chunk_overlap: int = setting(80, "characters shared by neighbouring passages")
    top_k: int = setting(4, "passages retrieved per question")
    evidence: str = setting("sentences", "what the model reads: the best 'sentences' of the passages, or whole "
                                         "'passages'")
    # More of the passages in front of the model was measured and not taken (evals/README.md, "What the model
    # reads"; evals/results/ablation-evidence-4.md): 4 sentences down to 0.4 of the best one's score gave fewer
    # right answers through retrieval (gold dev F1 0.750 -> 0.692; test 0.556 -> 0.501, p50 1.66 -> 2.36 s) for
    # little on the gold paragraphs (TyDi-ar 0.567 -> 0.586, XQuAD-ar 0.479 -> 0.475).
    evidence_sentences: int = setting(3, "sentences of the passages given to the model")
    evidence_share: float = setting(0.6, "a sentence scoring below this share of the best one is not given to the "
                                         "model (it may still propose candidates)")
    candidate_sentences: int = setting(5, "sentences beyond those given to the model that propose candidate answers "
                                          "(dates, clauses, definitions) without being read by it")
    reader: str = setting("extract", "how answers are made: 'extract' copies a span of the evidence, 'free' lets the "
                                     "model write (kept for comparison)")
    selector: str = setting("", "the trained selector (a JSON file from evals/train_reader.py) that picks the "
                                "reader's answer ('': the one shipped with the package)")
    candidates: str = setting(",".join(CANDIDATE_SOURCES), "the ways the extracting reader "
                              "proposes answers, comma-separated (copy costs a second pass of the model)")
    judged: int = setting(-1, "how many of the selector's best candidates the model judges by its log-probability "
                              "of each as its reply, a short extra pass (-1: as many as the selector was trained "
                              "for; 0: none, the selector alone); backends that cannot score replies skip it")
    min_confidence: float = setting(-1.0, "refuse when the selector (or its judge) gives the best candidate a lower "
                                          "probability of being right (-1: its own threshold, chosen on validation "
                                          "data)")
    # Below this cosine for the best passage, and with few of the question's terms in the passages, the question
    # is refused before generation. Cosines depend on the embedder: 0.45 is measured for EmbeddingGemma-300M.
    min_similarity: float = setting(0.45, "refuse below this cosine when the passages miss the question's terms")
    n_ctx: int = setting(2048, "context window of the local model, in tokens")
    # Writing leaves one core free: its threads meet after every small step, so with a thread on every core and one
    # core taken by another program, writing fell to 0.33x; with cores - 1 it stays at 0.60x of a quiet machine's
    # all-core speed. Reading the prompt is long steps that every core speeds up, busy or not: answers take 1.26x
    # (quiet) and 2.20x (busy) instead of 1.00x and 2.56x (evals/results/llama-cpu.md).
    n_threads: int = setting(factory=lambda: max(1, usable_cores() - 1), help="CPU threads of the local model while "
                             "it writes (default: the cores this process may use, less one)")
    n_threads_batch: int = setting(factory=usable_cores, help="CPU threads of the local model while it reads the "
                                   "prompt (default: the cores this process may use)")
    n_batch: int = setting(512, "prompt tokens the local model reads per batch")
    n_gpu_layers: int = setting(0, "model layers offloaded to the GPU (-1: all)")
    temperature: float = setting(0.0, "sampling temperature (0: greedy, the same answer every time)")
    max_tokens: int = setting(64, "longest answer, in tokens")
    max_question_chars: int = setting(1000, "longest question accepted, in characters")
    host: str = setting("127.0.0.1", "address the chat UI and the HTTP API listen on")
    port: int = setting(7860, "port the chat UI listens on")
    auth: str = setting("", "user:password puts the chat UI behind a login")
    concurrency: int = setting(1, "answers the chat UI and the API make at once (the model server's parallel slots; "
                                  "1 for the in-process model)")
    api_port: int = setting(8000, "port the HTTP API (`rag serve`) listens on")
    api_keys: str = setting("", "comma-separated bearer keys the HTTP API accepts (or RAG_API_KEYS)")
    api_auth: str = setting("key", "who may call the HTTP API: 'key' (a key of api_keys) or 'none' (anyone who "
                                   "reaches it; loopback hosts only)")
    api_rate: int = setting(60, "requests per minute each API key (or client address) may make (0: no limit)")

    def replace(self, **changes: Any) -> Config:
        """A copy with some settings changed (values are checked against the field's type)."""
        return dataclasses.replace(self, **{k: _coerce(self, k, v) for k, v in changes.items()})


FIELD_TYPES = {f.name: f.type for f in fields(Config)}
HELP = {f.name: f.metadata["help"] for f in fields(Config)}
_KINDS = {"Path": Path, "str": str, "int": int, "float": float}


def _coerce(config: Config, name: str, value: Any) -> Any:
    """The value as the setting's type: whole numbers for ints, finite numbers for floats, never a silent cut."""
    if name not in FIELD_TYPES:
        raise RagError(f"unknown setting {name!r}; known: {', '.join(sorted(FIELD_TYPES))}")
    kind = _KINDS[FIELD_TYPES[name]]
    problem = f"setting {name}: cannot read {value!r} as {kind.__name__}"
    if isinstance(value, (dict, list, bool)) or value is None:  # a TOML table, array or true/false
        raise RagError(problem)
    if kind is Path:
        if not isinstance(value, (str, Path)) or not str(value).strip() or "\x00" in str(value):
            raise RagError(problem)
        return Path(str(value)).expanduser()
    if kind is str:
        if not isinstance(value, str) or "\x00" in value:
            raise RagError(problem)
        return value
    return number(f"setting {name}", value, kind)


def number(what: str, value: Any, kind: type = float) -> int | float:
    """A setting's or a flag's value as a finite number, a whole one if kind is int; a RagError naming `what`."""
    try:
        parsed = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError) as e:  # OverflowError: an integer too big for a float
        raise RagError(f"{what}: cannot read {value!r} as {kind.__name__}") from e
    if not math.isfinite(parsed):
        raise RagError(f"{what} must be a finite number, not {value!r}")
    if kind is int:
        if parsed != int(parsed) or (isinstance(value, str) and not value.strip().lstrip("+-").isdigit()):
            raise RagError(f"{what} must be a whole number, not {value!r}")
        return int(parsed)
    return parsed


def count(what: str, value: Any) -> int:
    """A whole number of at least 1 (top_k, `rag search -k`, `rag eval --sample`…); a RagError naming `what`."""
    whole = number(what, value, int)
    if whole < 1:
        raise RagError(f"{what} must be at least 1, not {whole}")
    return whole


def _read_toml(path: Path) -> dict:
    """The settings of a TOML file: a regular file of at most MAX_CONFIG_BYTES (judged on the open file), UTF-8,
    valid TOML; anything else is one line naming the file."""
    text = read_input_text(path, MAX_CONFIG_BYTES, "config file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RagError(f"{path} is not valid TOML: {e}") from e
    except Exception as e:  # what else the parser raises on a user's file: RecursionError on deep nesting…
        raise RagError(f"{path} is not valid TOML ({type(e).__name__}: {e})") from e


def load_config(path: Path | str | None = None, **overrides: Any) -> Config:
    """Build the config from rag.toml (if present), RAG_* variables, then overrides."""
    config = Config()
    toml_path = Path(path) if path else Path(os.environ.get("RAG_CONFIG", "rag.toml"))
    if toml_path.exists():
        config = config.replace(**_read_toml(toml_path))
    elif path:
        raise RagError(f"config file {toml_path} not found")
    from_env = {name: os.environ[f"RAG_{name.upper()}"] for name in FIELD_TYPES if f"RAG_{name.upper()}" in os.environ}
    config = config.replace(**from_env)
    return _validate(config.replace(**{k: v for k, v in overrides.items() if v is not None}))


def is_loopback(host: str) -> bool:
    """Whether a host name or address only reaches this machine."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int, setting: str) -> None:
    """Fail at once, before loading any model, when a server's address (host and the port setting) cannot be listened
    on."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
            probe.bind((host, port))
    except OSError as e:
        raise RagError(f"cannot listen on {host}:{port} ({e.strerror}): stop the program using it or choose another "
                       f"port with --{setting.replace('_', '-')}") from e


def _validate(config: Config) -> Config:
    """Refuse values that would only fail later, deep inside indexing or generation."""
    for name in ("chunk_size", "top_k", "evidence_sentences", "n_ctx", "n_threads", "n_threads_batch", "n_batch",
                 "max_tokens", "max_question_chars", "concurrency"):
        count(f"setting {name}", getattr(config, name))
    if not 0 <= config.chunk_overlap < config.chunk_size:
        raise RagError(f"setting chunk_overlap must be between 0 and chunk_size - 1 ({config.chunk_size - 1}), "
                       f"not {config.chunk_overlap}")
    if config.reader not in ("extract", "free"):
        raise RagError(f"setting reader must be 'extract' or 'free', not {config.reader!r}")
    if not 0 <= config.evidence_share <= 1:
        raise RagError(f"setting evidence_share must be between 0 and 1, not {config.evidence_share}")
    if config.candidate_sentences < 0:
        raise RagError(f"setting candidate_sentences must be 0 or more, not {config.candidate_sentences}")
    if unknown := [c for c in config.candidates.split(",") if c not in CANDIDATE_SOURCES]:
        raise RagError(f"setting candidates names unknown ways {unknown}; known: {', '.join(CANDIDATE_SOURCES)}")
    if config.judged < -1:
        raise RagError(f"setting judged must be -1 (the selector's own), 0 (no judge) or more, not {config.judged}")
    if not (config.min_confidence == -1 or 0 <= config.min_confidence <= 1):
        raise RagError(f"setting min_confidence must be a probability between 0 and 1, or -1 (the selector's own), "
                       f"not {config.min_confidence}")
    if config.index_batch < 0:
        raise RagError(f"setting index_batch must be 0 (build alone) or more, not {config.index_batch}")
    if config.index_batch and config.store != "pgvector":
        raise RagError(f"setting index_batch shares a build among `rag index` runs, which only store = pgvector can "
                       f"do: set it to 0 for store = {config.store}")
    if config.embed_threads < 0:
        raise RagError(f"setting embed_threads must be 0 (one per core) or more, not {config.embed_threads}")
    if config.device not in ("auto", "cpu", "cuda"):
        raise RagError(f"setting device must be 'auto', 'cpu' or 'cuda', not {config.device!r}")
    if config.evidence not in ("sentences", "passages"):
        raise RagError(f"setting evidence must be 'sentences' or 'passages', not {config.evidence!r}")
    if not 0 <= config.temperature <= 2:
        raise RagError(f"setting temperature must be between 0 and 2, not {config.temperature}")
    if not -1 <= config.min_similarity <= 1:
        raise RagError(f"setting min_similarity must be between -1 and 1, not {config.min_similarity}")
    for name in ("port", "api_port"):
        if not 0 < getattr(config, name) < 65536:
            raise RagError(f"setting {name} must be between 1 and 65535, not {getattr(config, name)}")
    if config.api_auth not in ("key", "none"):
        raise RagError(f"setting api_auth must be 'key' or 'none', not {config.api_auth!r}")
    if config.api_auth == "none" and not is_loopback(config.host):
        raise RagError(f"setting api_auth = none leaves the HTTP API open to anyone: only allowed on a loopback host "
                       f"(127.0.0.1, ::1, localhost), not {config.host!r}")
    if config.api_rate < 0:
        raise RagError(f"setting api_rate must be 0 (no limit) or more, not {config.api_rate}")
    if config.n_gpu_layers < -1:
        raise RagError(f"setting n_gpu_layers must be -1 (all) or more, not {config.n_gpu_layers}")
    user, colon, password = config.auth.partition(":")
    if config.auth and not (colon and user and password):
        raise RagError("setting auth must be written user:password")
    if config.timeout <= 0:
        raise RagError(f"setting timeout must be more than 0 seconds, not {config.timeout}")
    return config
