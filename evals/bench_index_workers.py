"""Throughput of a shared pgvector build (setting index_batch): the same articles indexed by 1, then 2, `rag index`
workers started at once against one PostgreSQL server. Articles per second from the start of the first worker to
the end of the last (process start, model loading and publishing included) and the chunks each worker embedded.
Writes evals/results/index-workers.md and index-workers.json, and the run's line in history.jsonl (rag.report).

    .venv/bin/python evals/bench_index_workers.py [--dsn DSN] [--embedder NAME] [--articles 60] [--workers 1,2]

The articles are copies of seeds/, each made distinct. The workers use the configured embedder unless --embedder
names one (the tests run them with their hash embedder, which measures the queue and the publish step only).
All workers run on this machine: they share its cores, so 2 workers gain only what one left idle (see the report).
Each worker count builds into a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rag.benchmarks import pg_schema
from rag.report import commit, machine, table, write_report
from rag.stores.pgvector import PgVectorStore, shown_dsn

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RAG = [sys.executable, "-m", "rag"]
TIMEOUT = 3600  # seconds one build may take


def corpus(folder: Path, n: int) -> Path:
    """n articles in folder: the repository's seed articles over and over, each copy made distinct by a last line."""
    sources = sorted((HERE.parent / "seeds").glob("*.txt"))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        source = sources[i % len(sources)]
        text = source.read_text(encoding="utf-8")
        (folder / f"{i:05d}-{source.name}").write_text(f"{text}\n\nنسخة رقم {i}.\n", encoding="utf-8")
    return folder


def build(dsn: str, schema: str, seeds: Path, embedder: str, workers: int, batch: int,
          command: list[str]) -> tuple[float, list[int]]:
    """Seconds for `workers` processes of `rag index` (command: how `rag` is started) to build seeds into schema,
    and the chunks each embedded; embedder '' keeps the configured one."""
    env = {**os.environ, "RAG_STORE": "pgvector", "RAG_PG_DSN": dsn, "RAG_PG_SCHEMA": schema,  # other settings:
           "TQDM_DISABLE": "1", "PYTHONPATH": str(HERE.parent)} | ({"RAG_EMBEDDER": embedder} if embedder else {})
    args = [*command, "--seeds-dir", str(seeds), "--index-batch", str(batch), "index"]
    started = time.perf_counter()
    processes = [subprocess.Popen(args, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(workers)]
    outs = []
    for process in processes:
        out, err = process.communicate(timeout=TIMEOUT)
        if process.returncode:
            raise RuntimeError(f"a worker failed: {err.strip()[-2000:]}")
        outs.append(out)
    seconds = time.perf_counter() - started
    return seconds, [int(re.search(r"embedded (\d+) chunks", out).group(1)) for out in outs]


def measure(dsn: str, seeds: Path, embedder: str, workers: tuple[int, ...], batch: int,
            command: list[str] = RAG) -> list[dict]:
    """One row per number of workers: a fresh build of seeds, its time and throughput."""
    articles = len(list(seeds.iterdir()))
    rows = []
    for n in workers:
        with pg_schema(dsn, "rag_bench_") as schema:
            seconds, embedded = build(dsn, schema, seeds, embedder, n, batch, command)
            chunks = PgVectorStore(dsn, schema).count()
        rows.append({"workers": n, "articles": articles, "chunks": chunks, "seconds": round(seconds, 2),
                     "articles_per_s": round(articles / seconds, 2), "embedded": embedded})
    return rows


def report(rows: list[dict], embedder: str, batch: int) -> str:
    """The Markdown report."""
    one = rows[0]["articles_per_s"]
    cells = [[r["workers"], r["articles"], r["chunks"], r["seconds"], r["articles_per_s"],
              f"{r['articles_per_s'] / one:.2f}x", " / ".join(map(str, r["embedded"]))] for r in rows]
    info = machine()
    return "\n".join([
        f"# Shared pgvector build: 1 and more workers ({time.strftime('%Y-%m-%dT%H:%M:%S%z')})", "",
        f"- `evals/bench_index_workers.py {' '.join(sys.argv[1:])}`: embedder `{embedder or 'configured'}`, "
        f"index_batch {batch}",
        f"- machine: {info['cpus']} × {info['cpu_model']}, {info['ram_gb']} GB RAM, load average "
        f"{info['load_average']}; the PostgreSQL server on the same machine",
        "- time: from the first worker's start to the last one's end, process start, model loading and the publish "
        "step (HNSW and term index of the whole version, by one worker) included", "",
        *table(["workers", "articles", "chunks", "seconds", "articles/s", "speed-up", "chunks embedded by each"],
               cells), "",
        "All workers share this machine's cores, and an embedding model already uses every core it is given: a "
        "second worker here gains only what one left idle (waits on the server, the serial parts of a batch). On "
        "separate machines each worker brings its own cores, and the embedding part, nearly all of a real build, "
        "divides by the number of workers; the publish step (one worker, on the server) and each worker's start do "
        "not.", "",
    ])


def main() -> None:
    """Measure each number of workers; write the report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", default=os.environ.get("RAG_PG_DSN") or os.environ.get("RAG_TEST_PG_DSN"),
                   help="the PostgreSQL server (default: RAG_PG_DSN or RAG_TEST_PG_DSN)")
    p.add_argument("--embedder", default="", help="embedder setting of the workers (default: the configured one)")
    p.add_argument("--articles", type=int, default=60, help="articles to index (copies of seeds/)")
    p.add_argument("--workers", default="1,2", help="comma-separated numbers of workers")
    p.add_argument("--batch", type=int, default=4, help="index_batch: articles a worker claims at a time")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (default evals/results)")
    args = p.parse_args()
    if not args.dsn:
        p.error("no PostgreSQL server: pass --dsn or set RAG_PG_DSN (`make pg` starts one)")
    print(f"indexing {args.articles} articles into {shown_dsn(args.dsn)}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        seeds = corpus(Path(folder) / "seeds", args.articles)
        rows = measure(args.dsn, seeds, args.embedder, tuple(int(n) for n in args.workers.split(",")), args.batch)
    text = report(rows, args.embedder, args.batch)
    info = machine()
    headline = {f"{r['workers']} workers: articles per second": r["articles_per_s"] for r in rows}
    write_report(args.out, "index-workers", text, {"embedder": args.embedder, "batch": args.batch, "rows": rows},
                 headline, commit(HERE.parent), info)
    print(text)


if __name__ == "__main__":
    main()
