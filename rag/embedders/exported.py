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

from rag.config import Config
from rag.embedders.base import Kind
from rag.embedders.sbert import folder_fingerprint
from rag.errors import RagError, require
from rag.models import BUILT, resolve


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


class Tokens:
    """The tokenizer and prompts of an exported model: texts to the inputs of its graph, as sentence-transformers
    makes them (the prompt prepended to the text, padded to the longest, cut at the model's max_seq_length)."""

    def __init__(self, folder: Path):
        from transformers import AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.prompts = json.loads((folder / "config_sentence_transformers.json").read_text()).get("prompts") or {}
        self.max_length = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]

    def __call__(self, texts: list[str], kind: Kind) -> dict[str, np.ndarray]:
        """Token ids and attention mask of texts with the model's prompt for kind."""
        encoded = self.tokenizer([self.prompts.get(kind, "") + text for text in texts], padding=True,
                                 truncation=True, max_length=self.max_length, return_tensors="np")
        return {"input_ids": encoded["input_ids"].astype(np.int64),
                "attention_mask": encoded["attention_mask"].astype(np.int64)}


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
        settings = {"PERFORMANCE_HINT": "LATENCY", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
        compiled = ov.Core().compile_model(str(path), "CPU", settings)
        self.request = compiled.create_infer_request()
        return int(compiled.output(0).get_partial_shape()[-1].get_length())

    def _run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.request.infer(inputs)[0].copy()  # the request reuses its output buffer
