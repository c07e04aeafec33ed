"""evals/bench.py: the dense-index scale part runs at a tiny size and reports every figure (no timing checks)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import rag.stores.faiss
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
