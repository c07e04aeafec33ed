"""evals/bench.py: the dense-index scale part runs at a tiny size and reports every figure (no timing checks)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

import rag.stores.faiss
from rag.benchmarks import gold_questions
from rag.config import PACKAGE_ROOT

FIGURES = {"chunks", "dims", "queries", "index_type", "build_s", "search_ms_p50", "search_ms_p95", "recall@10",
           "exact_search_ms_p50", "disk_mb", "vectors_mb", "index_rss_mb", "peak_rss_mb", "nprobe_sweep",
           "load_average"}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", PACKAGE_ROOT / "evals" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmarks_read_both_gold_splits(bench):
    questions = gold_questions(bench.GOLD)
    assert len(questions) == sum(len(path.read_text(encoding="utf-8").splitlines()) for path in bench.GOLD)
    assert len({q["id"] for q in questions}) == len(questions)


def test_scale_exact_index(bench, tmp_path: Path):
    row = bench.bench_scale(2_000, tmp_path, queries=20, dims=32)
    assert row.keys() >= FIGURES
    assert row["index_type"] == "flat-ip" and row["nprobe_sweep"] == []
    assert row["recall@10"] == 1.0  # exact search finds the exact neighbours
    assert (tmp_path / "dense-2000.faiss").stat().st_size > 0


def test_scale_ivf_index(bench, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(rag.stores.faiss, "EXACT_SEARCH_LIMIT", 1_000)
    row = bench.bench_scale(2_000, tmp_path, queries=20, dims=32)
    assert row.keys() >= FIGURES
    assert row["index_type"].startswith("ivf")
    assert 0 <= row["recall@10"] <= 1
    assert [r["shipped"] for r in row["nprobe_sweep"]].count(True) == 1
    assert all(0 <= r["recall@10"] <= 1 and r["search_ms_p50"] >= 0 for r in row["nprobe_sweep"])


def test_embedders_benchmark_measures_judges_and_reports(tmp_path: Path, monkeypatch):
    """evals/bench_embedders.py with the hash embedder in this process (the real run spawns one per variant)."""
    monkeypatch.syspath_prepend(str(PACKAGE_ROOT / "evals"))
    bench_embedders = importlib.import_module("bench_embedders")
    monkeypatch.setattr(bench_embedders, "BASELINE", "hash:")
    squad = {"data": [{"paragraphs": [{"context": "زار بوتين الدوحة في فبراير 2007.", "qas": [
        {"id": "a", "question": "متى زار بوتين الدوحة؟", "answers": [{"text": "فبراير 2007"}]}]}, {
        "context": "تعود العلاقات بين قطر وروسيا إلى عام 1988.", "qas": [
            {"id": "b", "question": "منذ متى العلاقات بين قطر وروسيا؟", "answers": [{"text": "1988"}]}]}]}]}
    (tmp_path / "squad.json").write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    swept = bench_embedders.sweep("hash:", 0, [4, 8], 8)
    assert [r["batch"] for r in swept["rates"]] == [4, 8] and all(r["chunks_per_s"] > 0 for r in swept["rates"])
    measured = bench_embedders.measure("hash:", 0, 8, 8, tmp_path / "squad.json", 0, tmp_path)
    assert measured["gold"]["hybrid"]["n"] > 100 and measured["xquad"]["questions"] == 2
    assert measured["xquad"]["hybrid"]["recall@5"] == 1.0  # two paragraphs: the right one is always in the top 5
    variants = [{**measured, "sweep": [swept]}, {**measured, "name": "copy", "sweep": []}]
    for kind in ("documents", "queries"):
        shutil.copy(tmp_path / f"hash:-{kind}.npy", tmp_path / f"copy-{kind}.npy")
    variants[1]["cosine"] = bench_embedders.cosines(tmp_path, "copy")
    assert variants[1]["cosine"]["documents"]["min"] == pytest.approx(1.0, abs=1e-4)
    bench_embedders.judge(variants)
    assert variants[1]["recall@5_vs_fp32"] == {"gold": 0.0, "xquad": 0.0}
    result = {"created": "now", "argv": [], "revision": "0" * 12, "variants": variants,
              "machine": {"cpus": 2, "cpu_model": "x", "load_average": [0, 0, 0], "load_average_end": [0, 0, 0]}}
    path = bench_embedders.write_results(result, tmp_path / "out")
    report = (tmp_path / "out" / "embedders.md").read_text()
    assert path.exists() and "| copy |" in report and "XQuAD-ar: 2 questions" in report
    [line] = (tmp_path / "out" / "history.jsonl").read_text().splitlines()
    assert json.loads(line)["copy"] == {"chunks_per_s": measured["embedding"]["chunks_per_s"],
                                        "meets_target": variants[1]["meets_target"]}
