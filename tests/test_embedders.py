"""Faster embedder variants: building them (on a tiny stand-in model), refusing missing or half-built exports, the
factory, the device setting; with the real model (marker `real`), their vectors against fp32's and `rag index`."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from rag import models
from rag.chunk import chunk_article
from rag.cli import main
from rag.config import PACKAGE_ROOT, Config, load_config
from rag.embedders import exported, make_embedder
from rag.embedders.exported import OnnxEmbedder, OpenVinoEmbedder, Tokens, require_fast
from rag.errors import RagError
from rag.ingest import load_articles
from rag.models import BUILT, EXPORTS, MODELS, resolve

pytest.importorskip("onnxruntime", reason="the fast extra is not installed")
pytest.importorskip("openvino", reason="the fast extra is not installed")
export = pytest.importorskip("rag.embedders.export")
from conftest import ARTICLES, build_store  # noqa: E402  (after the skips: it needs nothing optional)

SOURCE_SHA = MODELS["embeddinggemma-300m"].sha256
PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}
INT8 = "embeddinggemma-300m-onnx-int8"


def tiny_source(folder: Path) -> Path:
    """A stand-in for a sentence-transformers folder: a word-level tokenizer over the test articles' words, and the
    prompts and max_seq_length files that the exports copy."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel

    words = sorted({w for text in [*ARTICLES.values(), *PROMPTS.values()] for w in text.split()})
    tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(["[PAD]", "[UNK]", *words])}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder.mkdir(parents=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "[PAD]", "unk_token": "[UNK]"}))
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": PROMPTS}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    return folder


def tiny_graph(path: Path, vocabulary: int, dims: int = 8) -> None:
    """An ONNX graph shaped like the exported model: token embeddings, masked mean pooling, a dense layer, L2
    normalization."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("table", (vocabulary, dims)), ("dense", (dims, dims)))]
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["tokens"]),
             helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mask", "last"], ["mask3"]),
             helper.make_node("Mul", ["tokens", "mask3"], ["masked"]),
             helper.make_node("ReduceSum", ["masked", "axes"], ["summed"], keepdims=0),
             helper.make_node("ReduceSum", ["mask3", "axes"], ["count"], keepdims=0),
             helper.make_node("Div", ["summed", "count"], ["mean"]),
             helper.make_node("MatMul", ["mean", "dense"], ["projected"]),
             helper.make_node("LpNormalization", ["projected"], ["sentence_embedding"], axis=-1, p=2)]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "length"])
              for n in ("input_ids", "attention_mask")]
    output = helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", dims])
    last = numpy_helper.from_array(np.array([-1], dtype=np.int64), "last")
    graph = helper.make_graph(nodes, "tiny", inputs, [output], [*weights, axes, last])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def tiny_fp32(source: Path, folder: Path) -> Path:
    """The tiny graph in folder, with source's tokenizer and settings: an fp32 'export' of the stand-in."""
    folder.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "config_sentence_transformers.json",
                 "sentence_bert_config.json"):
        shutil.copy(source / name, folder)
    tiny_graph(folder / "model.onnx", Tokens(source).tokenizer.get_vocab_size())
    return folder / "model.onnx"


@pytest.fixture
def tiny_exporter(monkeypatch):
    """export_onnx replaced by the tiny graph, with its own vectors of the check texts as the reference."""
    def fake_export(source: Path, folder: Path, log) -> tuple[Path, np.ndarray]:
        graph = tiny_fp32(source, folder)
        fp32 = OnnxEmbedder(folder)
        return graph, np.concatenate([fp32.embed_batch([text], kind) for kind, text in export.CHECK])

    monkeypatch.setattr(export, "export_onnx", fake_export)


@pytest.fixture
def built(tmp_path, tiny_exporter) -> Path:
    """A models folder holding every registered export, built from the tiny stand-in by the real build()."""
    source, models_dir = tiny_source(tmp_path / "source"), tmp_path / "models"
    for spec in EXPORTS.values():
        export.build(spec, source, models_dir / spec.target, SOURCE_SHA, log=lambda *_: None)
    return models_dir


def _config(models_dir: Path, name: str, **changes) -> Config:
    return load_config(models_dir=models_dir, embedder=name, **{"device": "cpu", **changes})


def test_every_export_is_built_marked_and_made_by_the_factory(built):
    ids = set()
    for name, spec in EXPORTS.items():
        embedder = make_embedder(_config(built, name))
        assert type(embedder) is export.RUNTIMES[spec.runtime]
        vectors = np.concatenate([embedder.embed_batch(["زيارة بوتين إلى الدوحة", "قطر"], kind)
                                  for kind in ("document", "query")])
        assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
        assert embedder.id.startswith(f"{spec.target}@")  # never the fp32 model's embeddinggemma-300m@…
        ids.add(embedder.id)
        marker = json.loads((built / spec.target / BUILT).read_text())
        assert marker["source_sha256"] == SOURCE_SHA and marker["quantization"] == spec.quantization
        assert "onnxruntime" in marker["versions"] and BUILT not in marker["files"]
    assert len(ids) == len(EXPORTS)
    assert sorted(p.name for p in built.iterdir()) == sorted(s.target for s in EXPORTS.values())  # nothing hidden


def test_a_rebuild_from_the_same_weights_keeps_the_id(built, tmp_path):
    spec = EXPORTS["embeddinggemma-300m-openvino-int8"]
    again = export.build(spec, tmp_path / "source", tmp_path / "again" / spec.target, SOURCE_SHA, log=lambda *_: None)
    assert OpenVinoEmbedder(again).id == OpenVinoEmbedder(built / spec.target).id
    assert json.loads((again / BUILT).read_text())["calibration_sha256"]  # the seed chunks and dev questions


def test_prompts_are_applied_as_sentence_transformers_does(tmp_path):
    tokens = Tokens(tiny_source(tmp_path / "source"))
    query, document = tokens(["زيارة"], "query"), tokens(["زيارة"], "document")
    def words(ids: np.ndarray) -> list[str]:
        return [tokens.tokenizer.id_to_token(i) for i in ids.tolist()]

    assert words(query["input_ids"][0]) == [*PROMPTS["query"].split(), "زيارة"]
    assert words(document["input_ids"][0]) == [*PROMPTS["document"].split(), "زيارة"]
    batch = tokens(["قطر", "زيارة بوتين إلى الدوحة"], "document")  # padded to the longest, masked
    assert batch["attention_mask"].sum(axis=1).tolist() == [5, 8] and batch["input_ids"].dtype == np.int64


def test_a_weights_int8_export_is_compiled_once_and_cached(built, tmp_path, monkeypatch):
    texts = ["زيارة بوتين إلى الدوحة", "قطر"]
    for cache in (tmp_path / "cache", tmp_path / "a-file" / "cache"):  # the second cannot be written: no cache
        (tmp_path / "a-file").touch()
        monkeypatch.setattr(exported, "CACHE_DIR", cache)
        for name in ("embeddinggemma-300m-openvino-w8", "embeddinggemma-300m-openvino-int8"):
            first = make_embedder(_config(built, name)).embed_batch(texts, "document")
            again = make_embedder(_config(built, name)).embed_batch(texts, "document")  # compiled from the cache
            assert np.array_equal(first, again)
    blobs = list((tmp_path / "cache" / "openvino").rglob("*.blob"))
    assert len(blobs) == 1  # weights-int8 only: static-int8 folds its weights while compiling
    import openvino

    folder = built / "embeddinggemma-300m-openvino-w8"
    monkeypatch.setattr(exported, "CACHE_DIR", tmp_path / "cache")
    here = exported.compile_cache(folder, openvino.__version__)["CACHE_DIR"]
    assert here == str(blobs[0].parent)  # this machine's folder
    monkeypatch.setattr(exported, "cpu_flags", lambda: "flags : avx512f amx_tile")
    assert exported.compile_cache(folder, openvino.__version__)["CACHE_DIR"] != here  # another CPU compiles its own


def test_an_index_built_with_one_variant_refuses_another(built, seeds, tmp_path):
    from rag.assistant import Assistant

    config = _config(built, INT8, seeds_dir=seeds, index_dir=tmp_path / "index", chunk_size=200, chunk_overlap=20)
    build_store(seeds, config.index_dir, make_embedder(config))
    Assistant.load(config)  # the same variant: fine
    for other in ("embeddinggemma-300m-openvino-w8", "hash:"):
        with pytest.raises(RagError, match=r"built with embedder embeddinggemma-300m-onnx-int8@.*run `rag index`"):
            Assistant.load(config.replace(embedder=other))


def test_a_missing_export_names_the_pull_command(tmp_path):
    for name in EXPORTS:
        with pytest.raises(RagError, match=rf"missing or was not completely built: run `rag models pull {name}`"):
            make_embedder(_config(tmp_path, name))


@pytest.mark.parametrize("damage", ["no marker", "truncated", "deleted", "other weights", "garbled marker"])
def test_a_half_built_or_damaged_export_is_refused(built, damage):
    folder = built / EXPORTS[INT8].target
    marker = folder / BUILT
    if damage == "no marker":  # what an interrupted build would look like, had it been written in place
        marker.unlink()
    elif damage == "truncated":
        (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes()[:100])
    elif damage == "deleted":
        (folder / "tokenizer.json").unlink()
    elif damage == "other weights":
        marker.write_text(json.dumps({**json.loads(marker.read_text()), "source_sha256": "0" * 64}))
    else:
        marker.write_text("{not json")
    with pytest.raises(RagError, match=rf"{INT8} at .*: run `rag models pull {INT8}`"):
        resolve(INT8, built, "embedder")


def test_a_failed_build_keeps_nothing_and_leaves_an_older_build_alone(built, monkeypatch):
    spec, target = EXPORTS[INT8], built / EXPORTS[INT8].target
    before = {p.name: p.stat().st_size for p in target.iterdir()}

    def broken(graph, out):
        (out / "model.onnx").write_bytes(b"half")
        raise RuntimeError("quantizer crashed")

    monkeypatch.setitem(export.QUANTIZERS, "dynamic-int8", broken)
    with pytest.raises(RagError, match=rf"could not build {spec.name}: RuntimeError: quantizer crashed; nothing was"):
        export.build(spec, built.parent / "source", target, SOURCE_SHA, log=lambda *_: None)
    assert {p.name: p.stat().st_size for p in target.iterdir()} == before
    assert sorted(p.name for p in built.iterdir()) == sorted(s.target for s in EXPORTS.values())
    assert resolve(INT8, built, "embedder") == target


def test_a_build_whose_vectors_stray_is_refused(tmp_path, monkeypatch):
    reference = np.zeros((len(export.CHECK), 8), dtype=np.float32)
    reference[:, 0] = 1  # vectors the tiny model does not make
    monkeypatch.setattr(export, "export_onnx", lambda source, folder, log: (tiny_fp32(source, folder), reference))
    target = tmp_path / "models" / EXPORTS[INT8].target
    with pytest.raises(RagError, match="differ from the fp32 model's .*nothing was kept"):
        export.build(EXPORTS[INT8], tiny_source(tmp_path / "source"), target, SOURCE_SHA, log=lambda *_: None)
    assert list(target.parent.iterdir()) == []


def test_pulling_an_export_pulls_its_source_then_builds(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(export, "pull", lambda name, *a, **k: calls.append(("pull", name)) or tmp_path / name)
    monkeypatch.setattr(export, "build", lambda spec, source, target, sha, log: calls.append(("build", source.name)))
    monkeypatch.setattr(export, "check_free_space", lambda *_: None)
    export.pull_export(EXPORTS[INT8], tmp_path, tmp_path / "cache", log=lambda *_: None)
    assert calls == [("pull", "embeddinggemma-300m"), ("build", "embeddinggemma-300m")]


def test_the_shipped_calibration_texts_are_the_seed_chunks_and_the_dev_questions():
    """rag/data/calibration.jsonl (one {"kind", "text"} a line, in this order) lets an installed package build the
    static-int8 export; the export's marker records its digest. Rewrite it when the seeds, the dev split or the
    chunking change."""
    settings = Config()
    articles, _ = load_articles(PACKAGE_ROOT / "seeds")
    chunks = [c.text for a in articles for c in chunk_article(a, settings.chunk_size, settings.chunk_overlap)]
    dev = (PACKAGE_ROOT / "evals" / "gold-dev.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line)["question"] for line in dev if line]
    assert export.calibration_texts() == [("document", text) for text in chunks] + [("query", q) for q in questions]


def test_a_missing_package_names_the_extra(monkeypatch):
    import importlib

    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module",
                        lambda name: (_ for _ in ()).throw(ImportError(name)) if name == "onnxruntime" else real(name))
    with pytest.raises(RagError, match=r"the onnx embedder needs the package onnxruntime: pip install -e '\.\[fast\]'"):
        require_fast("onnxruntime", "the onnx embedder")


def test_the_device_setting(built, monkeypatch):
    from rag.embedders.sbert import torch_device

    with pytest.raises(RagError, match="setting device must be 'auto', 'cpu' or 'cuda', not 'gpu'"):
        load_config(device="gpu")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert torch_device("auto") == "cpu"
    with pytest.raises(RagError, match="device = cuda, but torch sees no CUDA GPU"):
        torch_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_device("auto") == "cuda"
    with pytest.raises(RagError, match="onnxruntime has no CUDA provider"):
        make_embedder(_config(built, INT8, device="cuda"))
    with pytest.raises(RagError, match="the OpenVINO variants run on the CPU"):
        make_embedder(_config(built, "embeddinggemma-300m-openvino-w8", device="cuda"))
    assert make_embedder(_config(built, INT8, device="auto")).session.get_providers() == ["CPUExecutionProvider"]


# The real model: the variants against fp32 on the seed articles (each export is built once if missing).


@pytest.fixture(scope="module")
def real_models() -> Path:
    config = load_config()
    if not (config.models_dir / "embeddinggemma-300m" / models.VERIFIED).exists():
        pytest.skip("the real embedding model is not pulled (`rag models pull embeddinggemma-300m`)")
    return config.models_dir


def seed_texts() -> dict[str, list[str]]:
    """The seed articles' chunks ("document") and the dev questions ("query")."""
    texts: dict[str, list[str]] = {"document": [], "query": []}
    for kind, text in export.calibration_texts():
        texts[kind].append(text)
    return texts


@pytest.fixture(scope="module")
def fp32_vectors(real_models) -> dict:
    """fp32 vectors of the seed chunks and dev questions, and the fp32 embedder."""
    fp32 = make_embedder(load_config(models_dir=real_models, device="cpu", embedder="embeddinggemma-300m"))
    return {"embedder": fp32, **{kind: fp32.embed_batch(texts, kind) for kind, texts in seed_texts().items()}}


# (mean, min) cosine to fp32 that a variant must reach on the 36 seed chunks and on the 49 dev questions. Measured
# (evals/bench_embedders.py, all 168 gold questions): dynamic int8 0.962 / 0.945 for chunks, 0.975 / 0.939 for
# questions; static int8 0.995 / 0.992 and 0.993 / 0.977; int8 weights 0.9993 / 0.999 and 0.9994 / 0.9987. Dynamic
# int8 quantizes each batch's activations with one scale, and EmbeddingGemma's activations have outliers: its
# vectors stray the most, yet its recall stays within 0.01 of fp32's. The bounds leave room for other CPUs.
BOUNDS = {"embeddinggemma-300m-onnx-int8": (0.95, 0.92), "embeddinggemma-300m-openvino-int8": (0.985, 0.97),
          "embeddinggemma-300m-openvino-w8": (0.998, 0.995)}


@pytest.mark.real
@pytest.mark.parametrize("name", list(EXPORTS))
def test_real_variant_vectors_are_unit_length_and_close_to_fp32(name, real_models, fp32_vectors):
    export.pull_export(EXPORTS[name], real_models, real_models.parent / "downloads", log=lambda *_: None)
    embedder = make_embedder(load_config(models_dir=real_models, embedder=name, device="cpu"))
    assert embedder.id != fp32_vectors["embedder"].id and embedder.dims == 768
    for kind, texts in seed_texts().items():
        vectors = embedder.embed_batch(texts, kind)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)
        cosines = (vectors * fp32_vectors[kind]).sum(axis=1)
        mean, least = BOUNDS[name]
        assert cosines.mean() > mean and cosines.min() > least, f"{kind}: {cosines.mean():.4f}, {cosines.min():.4f}"


@pytest.mark.real
@pytest.mark.parametrize("name", ["embeddinggemma-300m", *EXPORTS])
def test_real_embedders_serve_several_threads_at_once(name, real_models, fp32_vectors):
    """The UI embeds several chats' questions at once (an OpenVINO request alone says 'Infer Request is busy')."""
    if name in EXPORTS:
        export.pull_export(EXPORTS[name], real_models, real_models.parent / "downloads", log=lambda *_: None)
    embedder = make_embedder(load_config(models_dir=real_models, embedder=name, device="cpu"))
    questions = seed_texts()["query"][:16]
    alone = [embedder.embed_batch([q], "query") for q in questions]  # one at a time: dynamic int8 scales per batch
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda q: embedder.embed_batch([q], "query"), questions))
    assert np.allclose(np.concatenate(together), np.concatenate(alone), atol=1e-5)


@pytest.mark.real
def test_real_weights_int8_variant_is_cached_without_its_weights(real_models, tmp_path, monkeypatch):
    spec = EXPORTS["embeddinggemma-300m-openvino-w8"]
    export.pull_export(spec, real_models, real_models.parent / "downloads", log=lambda *_: None)
    monkeypatch.setattr(exported, "CACHE_DIR", tmp_path)
    config = load_config(models_dir=real_models, embedder=spec.name, device="cpu")
    questions = seed_texts()["query"][:4]
    first = make_embedder(config).embed_batch(questions, "query")
    assert np.array_equal(make_embedder(config).embed_batch(questions, "query"), first)  # compiled from the cache
    [blob] = (tmp_path / "openvino").rglob("*.blob")
    assert blob.stat().st_size < (real_models / spec.target / "openvino_model.bin").stat().st_size / 20


@pytest.mark.real
def test_real_tokens_match_sentence_transformers(real_models, fp32_vectors):
    tokens, model = Tokens(real_models / "embeddinggemma-300m"), fp32_vectors["embedder"].model
    for kind, texts in seed_texts().items():
        texts = [*texts[:8], " ".join(texts) * 2, "", "ی ک 2020 ٢٠٢٠ 🙂"]  # cut at max_seq_length; odd ones
        ours = tokens(texts, kind)
        theirs = model.preprocess(texts, prompt=model.prompts[kind])
        assert np.array_equal(ours["input_ids"], theirs["input_ids"].numpy())
        assert np.array_equal(ours["attention_mask"], theirs["attention_mask"].numpy())


@pytest.mark.real
def test_real_rag_index_and_search_with_the_int8_variant(real_models, tmp_path, capsys, isolated):
    export.pull_export(EXPORTS[INT8], real_models, real_models.parent / "downloads", log=lambda *_: None)
    flags = ["--embedder", INT8, "--device", "cpu", "--models-dir", str(real_models),
             "--seeds-dir", str(PACKAGE_ROOT / "seeds"), "--index-dir", str(tmp_path / "index")]
    assert main([*flags, "index"]) == 0
    assert "embedded 36 chunks" in capsys.readouterr().out
    assert main([*flags, "search", "--json", "متى زار بوتين قطر لأول مرة كرئيس؟"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert "003_73b545dee77c06cc.txt" in [p["source"] for p in found[:3]]
    assert main([*flags, "--embedder", "embeddinggemma-300m", "search", "قطر"]) == 2
    assert "run `rag index`" in capsys.readouterr().err
