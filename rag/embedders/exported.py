"""Embedders for the variants that `rag models pull` exports from a sentence-transformers folder
(rag/embedders/export.py): the whole model in one graph, run by onnxruntime or OpenVINO. Texts get the same prompts
and tokenization as in sentence-transformers (the source's tokenizer and config files are copied with the graph)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from types import ModuleType

import numpy as np

from rag.config import CACHE_DIR, Config
from rag.embedders.base import Kind
from rag.embedders.sbert import folder_fingerprint
from rag.errors import RagError, require
from rag.models import BUILT, cpu_flags, resolve


def require_fast(module: str, what: str) -> ModuleType:
    """Import a package of the `fast` extra, or say that the extra installs it."""
    return require(module, what, "pip install -e '.[fast]' (see README)")


def export_fingerprint(folder: Path) -> str:
    """Identity of an exported model: what it was built from and with (its export.json less the file sizes, which
    vary with the node names an exporter picks), or its files when it has no export.json."""
    try:
        built = json.loads((folder / BUILT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return folder_fingerprint(folder)
    built.pop("files", None)
    return hashlib.sha256(json.dumps(built, sort_keys=True).encode()).hexdigest()[:16]


def compile_cache(folder: Path, openvino_version: str) -> dict[str, str]:
    """OpenVINO's settings that keep a compiled model in the cache folder without its weights (a few MB; compiling
    takes 0.15 s instead of 1.3 s), for a weights-int8 export: compiling leaves its weights as they are. A
    static-int8 model's weights are folded while compiling, and its cache would hold all of them (800 MB). One
    folder per OpenVINO version and CPU (what it compiled for: a cache folder may be shared by several machines)."""
    machine = hashlib.sha256(f"{openvino_version}\n{cpu_flags()}".encode()).hexdigest()[:16]
    cache = CACHE_DIR / "openvino" / machine
    try:
        if json.loads((folder / BUILT).read_text(encoding="utf-8")).get("quantization") != "weights-int8":
            return {}
        cache.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError):  # a folder of one's own, or a cache that cannot be written: compile every time
        return {}
    return {"CACHE_DIR": str(cache), "CACHE_MODE": "OPTIMIZE_SIZE"}


class Tokens:
    """The tokenizer and prompts of an exported model: texts to the inputs of its graph, as sentence-transformers
    makes them (the prompt prepended to the text, padded to the longest, cut at the model's max_seq_length). The
    tokenizer.json is read by `tokenizers` itself: the same ids as transformers' fast tokenizer (tests/test_real.py),
    without importing transformers, which took 2 of the 4 s an embedder took to load."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if not (folder / "tokenizer.json").is_file():
            raise RagError(f"{folder} holds no tokenizer.json: export the model again (rag models pull)")
        settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        pad = settings.get("pad_token") or "<pad>"
        pad = pad["content"] if isinstance(pad, dict) else pad  # written as a string or as an AddedToken
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_padding(direction=settings.get("padding_side", "right"),
                                      pad_id=self.tokenizer.token_to_id(pad), pad_token=pad)
        limit = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"]
        self.tokenizer.enable_truncation(limit)
        self.prompts = json.loads((folder / "config_sentence_transformers.json").read_text()).get("prompts") or {}

    def __call__(self, texts: list[str], kind: Kind) -> dict[str, np.ndarray]:
        """Token ids and attention mask of texts with the model's prompt for kind."""
        encoded = self.tokenizer.encode_batch([self.prompts.get(kind, "") + text for text in texts])
        return {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}


class OnnxEmbedder:
    """An exported model run by onnxruntime: on CUDA when the device setting allows it and a GPU is there."""

    MODEL = "model.onnx"

    def __init__(self, folder: Path, device: str = "cpu", threads: int = 0, batch_size: int = 16):
        folder = Path(folder)
        if not (folder / self.MODEL).is_file():
            raise RagError(f"{folder} holds no {self.MODEL}: not a model exported for {type(self).__name__}")
        try:
            self.tokens = Tokens(folder)
            self.dims = self._open(folder / self.MODEL, device, threads)
        except RagError:
            raise
        except Exception as e:  # a damaged folder raises many kinds of errors; say which folder
            raise RagError(f"cannot load the embedding model from {folder}: {e}") from e
        self.id = f"{folder.name}@{export_fingerprint(folder)}"
        self.batch_size = batch_size
        # One batch at a time: an OpenVINO request runs one inference ("Infer Request is busy") and the tokenizer
        # sets its padding on each call.
        self.lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config, spec: str) -> OnnxEmbedder:
        """The export named by spec (a registered export pulled into models_dir, or a local folder)."""
        return cls(resolve(spec, config.models_dir, "embedder"), device=config.device, threads=config.embed_threads)

    def _open(self, path: Path, device: str, threads: int) -> int:
        """Start an onnxruntime session on the model; its output dimensions."""
        ort = require_fast("onnxruntime", "the onnx embedder")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # no warnings about nodes placed on the CPU
        if threads:
            options.intra_op_num_threads = threads
        cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        if device == "cuda" and not cuda:
            raise RagError("device = cuda, but onnxruntime has no CUDA provider (pip install onnxruntime-gpu): set "
                           "device to auto or cpu")
        providers = ["CUDAExecutionProvider"] if cuda and device != "cpu" else []
        self.session = ort.InferenceSession(str(path), options, providers=[*providers, "CPUExecutionProvider"])
        return int(self.session.get_outputs()[0].shape[-1])

    def _run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, inputs)[0]

    def embed_batch(self, texts: list[str], kind: Kind) -> np.ndarray:
        """Encode texts in batches of similar length (the graph ends with the model's normalization)."""
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with self.lock:
            for at in range(0, len(order), self.batch_size):
                ids = order[at : at + self.batch_size]
                out[ids] = self._run(self.tokens([texts[i] for i in ids], kind))
        return out


class OpenVinoEmbedder(OnnxEmbedder):
    """An exported model run by OpenVINO on the CPU (in bf16 where the CPU has it, as OpenVINO chooses)."""

    MODEL = "openvino_model.xml"

    def _open(self, path: Path, device: str, threads: int) -> int:
        """Compile the model for the CPU, for one request at a time; its output dimensions."""
        ov = require_fast("openvino", "the openvino embedder")
        if device == "cuda":
            raise RagError("the OpenVINO variants run on the CPU: set device to auto or cpu, or use "
                           "embeddinggemma-300m (torch) on CUDA")
        settings = {"PERFORMANCE_HINT": "LATENCY", **({"INFERENCE_NUM_THREADS": threads} if threads else {}),
                    **compile_cache(path.parent, ov.__version__)}
        compiled = ov.Core().compile_model(str(path), "CPU", settings)
        self.request = compiled.create_infer_request()
        return int(compiled.output(0).get_partial_shape()[-1].get_length())

    def _run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.request.infer(inputs)[0].copy()  # the request reuses its output buffer
