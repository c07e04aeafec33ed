"""Several `rag index` runs sharing one build of the pgvector store (setting index_batch), against a real PostgreSQL
(`make pg`; RAG_TEST_PG_DSN): they split the work and publish what one run alone builds; a worker killed part way
loses nothing, and readers see the previous version until the build is complete."""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import ARTICLES, RAG_MAIN, HashEmbedder

from rag.benchmarks import pg_schema
from rag.config import PACKAGE_ROOT
from rag.errors import RagError
from rag.index import build_index, share_index
from rag.normalize import terms
from rag.stores.pgvector import PgVectorStore

DSN = os.environ.get("RAG_TEST_PG_DSN", "")
pytestmark = [pytest.mark.pg, pytest.mark.skipif(not DSN, reason="RAG_TEST_PG_DSN is not set: `make pg` starts a "
                                                 "server and prints it; `make test` sets it")]
SIZE, OVERLAP = 200, 20
FIRST, ALL = 4, 24  # articles of the first build (alone), then of the shared one
SLOW = "slowhash:0.2"  # seconds per chunk: a shared build of about 8 s of embedding


def _corpus(folder: Path, n: int) -> None:
    """n articles in folder, the test corpus's texts each made distinct."""
    folder.mkdir(exist_ok=True)
    texts = list(ARTICLES.values())
    for i in range(n):
        (folder / f"{i:03d}.txt").write_text(f"{texts[i % len(texts)]}\nالخبر رقم {i}.", encoding="utf-8")


def _first_then_all(folder: Path, schema: str) -> Path:
    """A first build, alone, of FIRST articles into schema; then the folder holds ALL, one of the first changed."""
    _corpus(folder, FIRST)
    build_index(folder, PgVectorStore(DSN, schema), HashEmbedder(), SIZE, OVERLAP, log=lambda *_: None)
    _corpus(folder, ALL)
    (folder / "001.txt").write_text(ARTICLES["b_persian.txt"] + "\nوأكد الجانبان أهمية التعاون.", encoding="utf-8")
    return folder


@pytest.fixture
def reference(tmp_path) -> tuple[str, int]:
    """(schema, chunks embedded) of the same two builds by one process alone."""
    with pg_schema(DSN, "rag_test_") as schema:
        seeds = _first_then_all(tmp_path / "reference", schema)
        report = build_index(seeds, PgVectorStore(DSN, schema), HashEmbedder(), SIZE, OVERLAP, log=lambda *_: None)
        yield schema, report.embedded


def _start(seeds: Path, schema: str, embedder: str) -> subprocess.Popen:
    """`rag index` as a worker of a shared build, in a process of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_EMBEDDER=embedder, RAG_STORE="pgvector", RAG_PG_DSN=DSN, RAG_PG_SCHEMA=schema, TQDM_DISABLE="1",
               PYTHONPATH=str(PACKAGE_ROOT))
    args = ["--seeds-dir", str(seeds), "--chunk-size", str(SIZE), "--chunk-overlap", str(OVERLAP), "--index-batch", "2",
            "index"]
    return subprocess.Popen([sys.executable, "-c", RAG_MAIN, *args], env=env, cwd=seeds.parent, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(worker: subprocess.Popen) -> str:
    out, err = worker.communicate(timeout=180)
    assert worker.returncode == 0, err
    return out


def _embedded(out: str) -> int:
    return int(re.search(r"embedded (\d+) chunks", out).group(1))


def _queue(schema: str) -> dict[str, int]:
    """The open shared build: its articles, those done, those a worker's claim holds, and the chunks staged."""
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'SET search_path = "{schema}", public')
        articles, done = conn.execute("SELECT count(*), count(*) FILTER (WHERE done) FROM build_queue").fetchone()
        with conn.transaction():  # the unfinished articles that no claim holds
            free = len(conn.execute("SELECT 1 FROM build_queue WHERE NOT done FOR UPDATE SKIP LOCKED").fetchall())
        (staged,) = conn.execute("SELECT count(*) FROM build_chunks").fetchone()
    return {"articles": articles, "done": done, "held": articles - done - free, "staged": staged}


def _wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _tables(schema: str) -> list[str]:
    import psycopg

    with psycopg.connect(DSN) as conn:
        return [name for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))]


def _assert_same_index(schema: str, reference: str) -> None:
    """The published versions of both schemas hold the same articles, chunks in the same order, vectors and
    rankings; no shared build is left open."""
    got, want = PgVectorStore(DSN, schema), PgVectorStore(DSN, reference)
    assert got.manifest()["articles"] == want.manifest()["articles"] and got.count() == want.count()
    (chunks, vectors), (want_chunks, want_vectors) = got.chunks_of(want.manifest()["articles"]), want.chunks_of(
        want.manifest()["articles"])
    assert chunks == want_chunks and np.array_equal(vectors, want_vectors)
    question = "الغاز الطبيعي في قطر"
    vector = HashEmbedder().embed_batch([question], "query")[0]
    assert [p.to_dict() for p in got.search(vector, terms(question), 10)] == [
        p.to_dict() for p in want.search(vector, terms(question), 10)]
    assert not [name for name in _tables(schema) if name.startswith("build")]


def test_two_workers_share_the_build_and_publish_what_one_process_builds(tmp_path, schema, reference):
    seeds = _first_then_all(tmp_path / "seeds", schema)
    outs = [_finish(worker) for worker in [_start(seeds, schema, SLOW) for _ in range(2)]]
    embedded = [_embedded(out) for out in outs]
    assert min(embedded) > 0 and sum(embedded) == reference[1]  # each did part, together all, nothing twice
    assert sorted("shared build published by this run" in out for out in outs) == [False, True]
    assert all(f"added {ALL - FIRST}, changed 1, removed 0, unchanged {FIRST - 1}" in out for out in outs)
    _assert_same_index(schema, reference[0])


def test_a_worker_killed_part_way_loses_nothing_and_another_run_completes_the_build(tmp_path, schema, reference):
    seeds = _first_then_all(tmp_path / "seeds", schema)
    before = PgVectorStore(DSN, schema).manifest()
    worker = _start(seeds, schema, SLOW)
    _wait_for(lambda: "build_queue" in _tables(schema))
    _wait_for(lambda: (queue := _queue(schema))["done"] >= 4 and queue["held"] > 0)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    _wait_for(lambda: _queue(schema)["held"] == 0)  # the server rolled its claim back: the articles are free again
    queue = _queue(schema)
    assert 0 < queue["done"] < queue["articles"] == ALL - FIRST + 1 and queue["staged"] > 0
    assert PgVectorStore(DSN, schema).manifest() == before  # readers still see the previous version
    with pytest.raises(RagError, match=r"the shared build open in .* embeds with hash-embedder-64 in chunks of "
                                       r"size/overlap 200/20, this run .* 300/20: give every worker the same"):
        share_index(seeds, PgVectorStore(DSN, schema), HashEmbedder(), 300, OVERLAP, 2, log=lambda *_: None)
    out = _finish(_start(tmp_path / "no-articles", schema, "hash:"))  # a worker that joins needs no articles
    assert "shared build published by this run" in out
    assert _embedded(out) == reference[1] - queue["staged"]  # only what the killed worker had not staged
    _assert_same_index(schema, reference[0])


class FailingEmbedder(HashEmbedder):
    """Fails on its second batch, as a worker's model might."""

    def embed_batch(self, texts: list[str], kind: str) -> np.ndarray:
        if self.calls:
            raise RuntimeError("out of memory")
        return super().embed_batch(texts, kind)


def test_a_build_alone_excludes_workers_and_discards_a_build_they_left(tmp_path, schema, reference):
    seeds = _first_then_all(tmp_path / "seeds", schema)
    store = PgVectorStore(DSN, schema)
    with store.building(shared=True), PgVectorStore(DSN, schema).building(shared=True), pytest.raises(
            RagError, match=r"another `rag index` is writing .*; wait for it to finish"):
        build_index(seeds, PgVectorStore(DSN, schema), HashEmbedder(), SIZE, OVERLAP, log=lambda *_: None)
    with store.building(), pytest.raises(RagError, match=r"another `rag index` is writing"):
        share_index(seeds, PgVectorStore(DSN, schema), HashEmbedder(), SIZE, OVERLAP, 2, log=lambda *_: None)
    with pytest.raises(RuntimeError, match="out of memory"):
        share_index(seeds, PgVectorStore(DSN, schema), FailingEmbedder(), SIZE, OVERLAP, 2, log=lambda *_: None)
    assert _queue(schema)["done"] == 2 and _queue(schema)["held"] == 0  # the failed claim was rolled back
    report = build_index(seeds, PgVectorStore(DSN, schema), HashEmbedder(), SIZE, OVERLAP, log=lambda *_: None)
    assert report.embedded == reference[1]
    _assert_same_index(schema, reference[0])


def test_the_benchmark_measures_one_and_two_workers(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(PACKAGE_ROOT / "evals"))
    bench = importlib.import_module("bench_index_workers")
    rows = bench.measure(DSN, bench.corpus(tmp_path / "seeds", 6), "hash:", (1, 2), batch=2,
                         command=[sys.executable, "-c", RAG_MAIN])  # `rag` with the fakes registered
    assert [row["workers"] for row in rows] == [1, 2]
    for row in rows:
        assert row["articles"] == 6 and row["articles_per_s"] > 0 and sum(row["embedded"]) == row["chunks"] > 0
    assert "| workers |" in bench.report(rows, "hash:", 2)
