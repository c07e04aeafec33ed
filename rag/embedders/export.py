"""Building the faster variants of a sentence-transformers embedder on this machine, from its verified weights: the
whole model (transformer, mean pooling, dense layers, normalization) is exported to one fp32 ONNX graph, then

- dynamic-int8: int8 weights and int8 activations quantized at run time, for onnxruntime;
- static-int8: int8 weights and activations with SmoothQuant, calibrated on the seed articles and the dev questions,
  for OpenVINO (what sentence-transformers' export_static_quantized_openvino_model does, without optimum-intel);
- weights-int8: int8 weights, computed in fp32 or bf16 as the CPU allows, for OpenVINO.

sentence-transformers' own ONNX and OpenVINO backends need optimum, whose releases pin other versions of
transformers and torch than this project's: the export uses torch.onnx, onnxruntime and nncf directly."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import warnings
from collections.abc import Callable, Iterator
from importlib import metadata, resources
from pathlib import Path

import numpy as np

from rag.embedders.base import Kind
from rag.embedders.exported import OnnxEmbedder, OpenVinoEmbedder, Tokens, require_fast
from rag.embedders.sbert import SentenceTransformerEmbedder
from rag.errors import RagError
from rag.models import BUILT, MODELS, ExportSpec, check_free_space, export_problem, pull

# What the tokenizer and the prompts need, copied from the source folder next to the graph.
COPIED = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
          "config_sentence_transformers.json", "sentence_bert_config.json")
RUNTIMES = {"onnx": OnnxEmbedder, "openvino": OpenVinoEmbedder}
VERSIONED = ("torch", "transformers", "sentence-transformers", "onnx", "onnxscript", "onnxruntime", "openvino", "nncf")
# Texts embedded by the fp32 model and by the built one: a build whose vectors stray further is refused.
CHECK = [("query", "متى زار بوتين قطر لأول مرة؟"),
         ("document", "قام الرئيس الروسي فلاديمير بوتين بزيارة إلى الدوحة في فبراير عام 2007، وهي أول زيارة له."),
         ("document", "تعود العلاقات الدبلوماسية بين قطر وروسيا إلى الأول من أغسطس عام 1988.")]
MIN_CHECK_COSINE = 0.9  # a sound int8 build gives >= 0.93 (evals/bench_embedders.py): only a broken one falls under


def pull_export(spec: ExportSpec, models_dir: Path, cache_dir: Path, log: Callable = print) -> Path:
    """Build an export from its source model (pulled first if needed), unless a sound one is already there."""
    source = MODELS[spec.source]
    target = Path(models_dir) / spec.target
    if export_problem(target, source.sha256) is None:
        log(f"{spec.name}: already built at {target}")
        return target
    folder = pull(spec.source, models_dir, cache_dir, log)
    check_free_space(source, target.parent)  # the fp32 ONNX graph, then the quantized model
    build(spec, folder, target, source.sha256, log)
    log(f"{spec.name}: built from {source.name} (sha256 {source.sha256[:12]}…) -> {target}")
    return target


def build(spec: ExportSpec, source: Path, target: Path, source_sha256: str, log: Callable = print) -> Path:
    """Export spec's variant of the model in source into target, check it and mark it built. The work happens in a
    hidden sibling folder that replaces target only once complete: a failed build leaves nothing behind."""
    work = target.parent / f".{target.name}.building"
    shutil.rmtree(work, ignore_errors=True)
    try:
        out = work / "model"
        out.mkdir(parents=True)
        for name in COPIED:
            if (source / name).exists():
                shutil.copy2(source / name, out / name)
        with quiet_libraries():
            graph, reference = export_onnx(source, work / "fp32", log)
            log(f"{spec.name}: {spec.quantization} for {spec.runtime}")
            facts = QUANTIZERS[spec.quantization](graph, out)
        check(RUNTIMES[spec.runtime](out, device="cpu"), reference)
        files = {p.relative_to(out).as_posix(): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
        marker = {"name": spec.name, "source": spec.source, "source_sha256": source_sha256,
                  "runtime": spec.runtime, "quantization": spec.quantization, **facts, "versions": versions(),
                  "files": files}
        (out / BUILT).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
    except RagError:
        raise
    except Exception as e:  # the exporters and quantizers raise many kinds of errors: one line, nothing kept
        raise RagError(f"could not build {spec.name}: {type(e).__name__}: {e}; nothing was kept") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence the exporters' and quantizers' deprecation warnings and advice while they run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def versions() -> dict[str, str]:
    """Versions of the libraries that export and run the variants (the built files depend on them)."""
    out = {}
    for dist in VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def export_onnx(source: Path, folder: Path, log: Callable) -> tuple[Path, np.ndarray]:
    """The fp32 ONNX graph of the whole sentence-transformers model in source (folder/model.onnx, weights beside
    it), and the model's own vectors of the CHECK texts."""
    require_fast("onnxscript", "exporting the model to ONNX")  # torch.onnx's exporter writes the graph with it
    import torch

    fp32 = SentenceTransformerEmbedder(source, device="cpu")
    reference = np.concatenate([fp32.embed_batch([text], kind) for kind, text in CHECK])
    model = fp32.model.eval()

    class Whole(torch.nn.Module):
        """The model as a function of token ids and attention mask, as the exported graph is called."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]

    sample = model.preprocess([text for _, text in CHECK], prompt=model.prompts["document"])
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    folder.mkdir(parents=True)
    log(f"exporting {source.name} to ONNX (a few minutes)")
    with torch.no_grad():
        torch.onnx.export(Whole().eval(), (sample["input_ids"], sample["attention_mask"]), str(folder / "model.onnx"),
                          input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"],
                          dynamic_shapes={"input_ids": {0: batch, 1: length},
                                          "attention_mask": {0: batch, 1: length}},
                          opset_version=18, dynamo=True, external_data=True, verbose=False)
    return folder / "model.onnx", reference


def dynamic_int8(graph: Path, out: Path) -> dict:
    """out/model.onnx: the matrix products with int8 weights (per tensor) and int8 activations quantized per batch."""
    quantization = require_fast("onnxruntime.quantization", "the dynamic-int8 export")
    quantization.quantize_dynamic(graph, out / OnnxEmbedder.MODEL, weight_type=quantization.QuantType.QInt8,
                                  op_types_to_quantize=["MatMul"])
    return {}


def static_int8(graph: Path, out: Path) -> dict:
    """out/openvino_model.xml: int8 weights and activations, with SmoothQuant moving the activations' outliers into
    the weights, calibrated on the seed articles' chunks and the dev questions (whose digest goes into the marker)."""
    ov = require_fast("openvino", "the openvino export")
    nncf = require_fast("nncf", "the openvino static-int8 export")
    texts = calibration_texts()
    tokens = Tokens(out)
    samples = [tokens([text], kind) for kind, text in texts]
    model = nncf.quantize(ov.Core().read_model(str(graph)), nncf.Dataset(samples),
                          model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples))
    ov.save_model(model, str(out / OpenVinoEmbedder.MODEL), compress_to_fp16=False)
    return {"calibration_sha256": hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()}


def weights_int8(graph: Path, out: Path) -> dict:
    """out/openvino_model.xml: int8 weights (asymmetric, per output channel), activations left to the CPU plugin."""
    ov = require_fast("openvino", "the openvino export")
    nncf = require_fast("nncf", "the openvino weights-int8 export")
    model = nncf.compress_weights(ov.Core().read_model(str(graph)), mode=nncf.CompressWeightsMode.INT8_ASYM)
    ov.save_model(model, str(out / OpenVinoEmbedder.MODEL), compress_to_fp16=False)
    return {}


# Each writes the quantized model into its folder and returns what else the marker should record.
QUANTIZERS: dict[str, Callable[[Path, Path], dict]] = {
    "dynamic-int8": dynamic_int8, "static-int8": static_int8, "weights-int8": weights_int8,
}


def calibration_texts() -> list[tuple[Kind, str]]:
    """(kind, text) for calibration, shipped with the package (rag/data/calibration.jsonl): the chunks of the
    repository's seed articles as documents and the questions of evals/gold-dev.jsonl as queries. The test questions
    and the benchmarks stay out of it."""
    lines = resources.files("rag").joinpath("data/calibration.jsonl").read_text(encoding="utf-8").splitlines()
    return [(row["kind"], row["text"]) for row in map(json.loads, lines)]


def check(embedder: OnnxEmbedder, reference: np.ndarray) -> None:
    """Refuse a build whose vectors are not unit length or stray from the fp32 model's."""
    vectors = np.concatenate([embedder.embed_batch([text], kind) for kind, text in CHECK])
    norms = np.linalg.norm(vectors, axis=1)
    cosines = (vectors * reference).sum(axis=1)
    if not np.allclose(norms, 1, atol=1e-3) or cosines.min() < MIN_CHECK_COSINE:
        raise RagError(f"the built model's vectors differ from the fp32 model's (cosines {np.round(cosines, 3)}, "
                       f"lengths {np.round(norms, 3)}); nothing was kept")
