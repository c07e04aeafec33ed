"""Search stores side by side: pgvector (PostgreSQL) and the default FAISS + bm25s folder. At 10^4..10^6 synthetic
chunks (768-d Gaussian-mixture vectors, Zipf-drawn words): build time, dense and hybrid search p50/p95, recall@10
against exact search, size on disk, memory (the FAISS process; the PostgreSQL server's processes) and hnsw.ef_search
values; then recall@k and MRR of both stores with the real embedder on the gold questions and on XQuAD-ar. Writes
evals/results/stores.md and stores.json, and the run's line in history.jsonl (rag.report).

    .venv/bin/python evals/bench_stores.py [--quick] [--sizes 10000,100000,1000000] [--gold FILE] [--dsn DSN]

The PostgreSQL server is RAG_PG_DSN (or RAG_TEST_PG_DSN, as `make pg` prints it); its tables go to a schema of their
own, dropped at the end. HNSW builds run with --maintenance-work-mem and --parallel-workers (session settings).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from rag.article import Article
from rag.assistant import Assistant
from rag.benchmarks import clustered_vectors, gold_questions, in_subprocess, vocabulary
from rag.chunk import Chunk
from rag.config import Config, load_config
from rag.embedders import Embedder, make_embedder
from rag.evaluate import GOLD_KS, SQUAD_KS, evaluate, squad_questions, summarize_retrieval
from rag.index import build_index
from rag.metrics import percentile
from rag.normalize import terms
from rag.report import commit, load_average, machine, table, write_report
from rag.stores import make_store
from rag.stores.base import DEPTH, FORMAT_VERSION, Store
from rag.stores.pgvector import PgVectorStore, shown_dsn

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GOLD = [HERE / "gold-dev.jsonl", HERE / "gold-test.jsonl"]
XQUAD = HERE.parent.parent / "shared" / "benchmarks" / "xquad.ar.json"  # the project's shared/ beside the checkout
MB = 2**20
SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (2_000,)
DIMS = 768
K = 10  # recall@K against exact search
TERMS_PER_CHUNK = 60  # about what rag.normalize.terms keeps of a 600-character chunk
VOCABULARY = 50_000
QUESTION_TERMS = 4
EF_SEARCH = (200, 400)  # tried besides the store's own setting (2 x depth = 100)
SCHEMA = "rag_bench"


# Synthetic corpora: the same for both stores, rebuilt from seeds in each process.


def synthetic(n: int, queries: int) -> tuple[np.ndarray, np.ndarray, list[Chunk], list[list[str]]]:
    """n unit vectors and chunks of Zipf-drawn words; `queries` query vectors, each with a question's words: a few
    of any frequency (words drawn uniformly, as a question's words fall anywhere in the vocabulary) and one of the
    100 most frequent (a question's "قطر": BM25 must weigh it, yet not score every chunk that holds it)."""
    corpus, query = clustered_vectors(n, queries, DIMS)
    words = np.array(vocabulary([], VOCABULARY), dtype=object)
    rng = np.random.default_rng(1)
    weights = 1.0 / np.arange(1, len(words) + 1)
    draws = rng.choice(len(words), size=(n, TERMS_PER_CHUNK), p=weights / weights.sum())
    chunks = [Chunk(f"s{i}", f"a{i // 8:07d}", "", None, 0, 0, " ".join(words[row])) for i, row in enumerate(draws)]
    asked = [[*words[rng.integers(0, len(words), QUESTION_TERMS - 1)], words[rng.integers(0, 100)]]
             for _ in range(queries)]
    return corpus, query, chunks, [terms(" ".join(question)) for question in asked]


def publish(store: Store, chunks: list[Chunk], vectors: np.ndarray) -> float:
    """Publish a synthetic corpus as `rag index` does (one article per 8 chunks); the seconds it took."""
    articles = [Article(f"a{j:07d}", "", None, "", "", "text") for j in range(0, len(chunks), 8)]
    manifest = {"format_version": FORMAT_VERSION, "embedder": {"id": "synthetic", "dims": DIMS},
                "chunking": {"size": 600, "overlap": 80}, "articles": {}}
    started = time.perf_counter()
    with store.building():
        store.publish(manifest, set(), articles, chunks, vectors)
    return round(time.perf_counter() - started, 2)


def search_figures(store: Store, queries: np.ndarray, words: list[list[str]], truth: list[list[int]]) -> dict:
    """Latency of one-question dense and hybrid searches (k = K, depth as retrieval asks), recall@K of dense."""
    store.search(queries[0], words[0], K)  # connects, loads
    out = {}
    for mode in ("dense", "hybrid"):
        times, recalls = [], []
        for query, question, exact in zip(queries, words, truth, strict=True):
            started = time.perf_counter()
            passages = store.search(query, question, K, mode, DEPTH)
            times.append(1000 * (time.perf_counter() - started))
            recalls.append(len({int(p.chunk.id[1:]) for p in passages} & set(exact)) / K)
        out |= {f"{mode}_ms_p50": percentile(times, 50), f"{mode}_ms_p95": percentile(times, 95)}
        if mode == "dense":
            out[f"recall@{K}"] = round(float(np.mean(recalls)), 4)
    return out


def faiss_store(folder: Path) -> Store:
    """The FAISS store of a folder, built by the factory as the product builds it."""
    return make_store(Config(index_dir=folder, store="faiss"))


def pg_store(dsn: str, **settings) -> Store:
    """The pgvector store of a database, in the benchmark's own schema, built by the factory (settings: pg_hnsw_*)."""
    return make_store(Config(store="pgvector", pg_dsn=dsn, pg_schema=SCHEMA, **settings))


def _rss_mb() -> float:
    return round(psutil.Process().memory_info().rss / MB, 1)


def bench_faiss(n: int, queries: int, work: Path) -> dict:
    """FAISS store at n chunks: exact neighbours (returned, for the pgvector run), build, disk, load, memory, search."""
    import faiss

    corpus, query, chunks, words = synthetic(n, queries)
    truth = faiss.knn(query, corpus, K, metric=faiss.METRIC_INNER_PRODUCT)[1].tolist()
    folder = work / f"faiss-{n}"
    build = publish(faiss_store(folder), chunks, corpus)
    disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    del chunks
    before = _rss_mb()
    store = faiss_store(folder)
    started = time.perf_counter()
    store.snapshot  # noqa: B018  loads the published version
    load = round(time.perf_counter() - started, 2)
    figures = search_figures(store, query, words, truth)
    shutil.rmtree(folder)
    return {"store": "faiss", "chunks": n, "index": store.manifest()["dense"]["type"], "build_s": build,
            "load_s": load, **figures, "disk_mb": round(disk / MB, 1), "memory_mb": round(_rss_mb() - before, 1),
            "memory": "loaded index in the searching process", "truth": truth, "load_average": load_average()}


def server_memory_mb(store: PgVectorStore) -> float | None:
    """Proportional set size (shared memory counted once) of the server's processes, when the server is local."""
    pid = store.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    try:
        postmaster = psutil.Process(pid).parent()
        processes = [postmaster, *postmaster.children()]
    except psutil.Error:
        return None  # a server on another machine
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):  # a backend that ended meanwhile
            total += process.memory_full_info().pss
    return round(total / MB, 1)


def session_dsn(dsn: str, **settings: str) -> str:
    """The DSN with session settings added to its options."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    options = " ".join([conninfo_to_dict(dsn).get("options", ""), *(f"-c {k}={v}" for k, v in settings.items())])
    return make_conninfo(dsn, options=options.strip())


def bench_pgvector(n: int, queries: int, dsn: str, truth: list[list[int]], build_settings: dict,
                   hnsw: dict) -> dict:
    """pgvector store at n chunks: build (COPY, indexes, statistics), table sizes, search, ef_search values."""
    corpus, query, chunks, words = synthetic(n, queries)
    build = publish(pg_store(session_dsn(dsn, **build_settings), **hnsw), chunks, corpus)
    del chunks
    store = pg_store(dsn)
    figures = search_figures(store, query, words, truth)
    tables = store.version.tables
    disk = store.conn.execute("SELECT sum(pg_total_relation_size(t)) FROM unnest(%s::regclass[]) AS t",
                              (list(tables.values()),)).fetchone()[0]
    sweep = []
    for ef in EF_SEARCH:
        tuned = pg_store(session_dsn(dsn, **{"hnsw.ef_search": str(ef)}))
        sweep.append({"ef_search": ef, **search_figures(tuned, query, words, truth)})
        tuned.close()
    return {"store": "pgvector", "chunks": n, "index": store.manifest()["dense"]["type"], "build_s": build,
            **figures, "disk_mb": round(int(disk) / MB, 1), "memory_mb": server_memory_mb(store),
            "memory": "server processes (PSS)", "ef_search": 2 * DEPTH, "ef_search_sweep": sweep,
            "load_average": load_average()}


def bench_scale(sizes: list[int], queries: int, dsn: str, build_settings: dict, hnsw: dict) -> list[dict]:
    """Both stores at each size, each in a fresh process."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="rag-bench-stores-") as tmp:
        for n in sizes:
            print(f"scale: {n:,} chunks, FAISS", file=sys.stderr)
            faiss_row = in_subprocess(bench_faiss, n, queries, Path(tmp))
            print(f"scale: {n:,} chunks, pgvector", file=sys.stderr)
            pg_row = in_subprocess(bench_pgvector, n, queries, dsn, faiss_row.pop("truth"), build_settings, hnsw)
            rows += [faiss_row, pg_row]
    return rows


# Retrieval quality with the real embedder.


class MemoEmbedder:
    """Wraps an embedder: each text is embedded once, however many stores are built and searched."""

    def __init__(self, embedder: Embedder):
        self.embedder, self.id, self.dims = embedder, embedder.id, embedder.dims
        self.memo: dict[tuple[str, str], np.ndarray] = {}

    def embed_batch(self, texts: list[str], kind: str) -> np.ndarray:
        """The vectors of texts, embedding only the new ones."""
        new = list(dict.fromkeys(t for t in texts if (kind, t) not in self.memo))
        if new:
            self.memo |= {(kind, t): v for t, v in zip(new, self.embedder.embed_batch(new, kind), strict=True)}
        return np.stack([self.memo[kind, t] for t in texts])


def compare_stores(seeds: Path, questions: list[dict], ks: tuple[int, ...], embedder: MemoEmbedder, dsn: str,
                   work: Path) -> dict:
    """Build both stores from the same articles and score retrieval of the questions on each; the share of
    questions whose hybrid passages are the same in both."""
    config = load_config(seeds_dir=seeds)
    out, passages = {}, {}
    for store in (faiss_store(work / "faiss"), pg_store(dsn)):
        build_index(seeds, store, embedder, config.chunk_size, config.chunk_overlap, log=lambda *_: None)
        records = evaluate(Assistant(config, embedder, store), questions, ks, [])
        out[store.name] = summarize_retrieval(records, ks)
        passages[store.name] = [[p["id"] for p in r["retrieval"]["hybrid"]["passages"]] for r in records]
    same = [a == b for a, b in zip(passages["faiss"], passages["pgvector"], strict=True)]
    return {"questions": len(questions), "stores": out, "same_hybrid_passages": round(sum(same) / len(same), 4)}


def bench_retrieval(args: argparse.Namespace, dsn: str) -> dict:
    """Gold questions over the seed articles, and XQuAD-ar (each paragraph an article), in both stores."""
    embedder = MemoEmbedder(make_embedder(load_config()))
    limit = 10 if args.quick else None
    out = {}
    with tempfile.TemporaryDirectory(prefix="rag-bench-stores-") as tmp:
        print("retrieval: gold questions", file=sys.stderr)
        out["gold"] = compare_stores(HERE.parent / "seeds", gold_questions(args.gold)[:limit], GOLD_KS, embedder, dsn,
                                     Path(tmp) / "gold")
        if args.xquad.exists():
            print("retrieval: XQuAD-ar", file=sys.stderr)
            data = json.loads(args.xquad.read_text(encoding="utf-8"))
            data["data"] = data["data"][:1] if args.quick else data["data"]
            (Path(tmp) / "xquad").mkdir()
            questions = squad_questions(data, Path(tmp) / "xquad", "xquad.ar")[:limit]
            out["xquad.ar"] = compare_stores(Path(tmp) / "xquad", questions, SQUAD_KS, embedder, dsn,
                                             Path(tmp) / "xquad-index")
    return out


# Report.


def render_markdown(result: dict) -> str:
    """The results as Markdown tables."""
    s = result["settings"]
    lines = [f"# Search stores: pgvector and FAISS ({result['created']})", "",
             f"Machine: {result['machine']['cpus']} CPUs, {result['machine']['cpu_model']}, "
             f"{result['machine']['ram_gb']} GB; load {result['machine']['load_average']}. PostgreSQL "
             f"{s['server_version']}, pgvector {s['pgvector']}, shared_buffers {s['shared_buffers']}; HNSW m "
             f"{s['hnsw_m']}, ef_construction {s['hnsw_ef_construction']}, built with {s['build']}.", "",
             f"## Synthetic chunks ({DIMS}-d Gaussian mixture, {TERMS_PER_CHUNK} Zipf-drawn words of {VOCABULARY:,} "
             f"each; {result['queries']} one-question searches for {K} passages, depth {DEPTH}, questions of "
             f"{QUESTION_TERMS} words, one of them among the 100 most frequent)", ""]
    lines += table(["chunks", "store", "dense index", "build (s)", "dense p50 / p95 (ms)", "hybrid p50 / p95 (ms)",
                    f"recall@{K}", "disk (MB)", "memory (MB)", "load"],
                   [[f"{r['chunks']:,}", r["store"], r["index"], r["build_s"],
                     f"{r['dense_ms_p50']} / {r['dense_ms_p95']}", f"{r['hybrid_ms_p50']} / {r['hybrid_ms_p95']}",
                     r[f"recall@{K}"], r["disk_mb"], f"{r['memory_mb']} ({r['memory']})", r["load_average"]]
                    for r in result["scale"]])
    sweeps = [(r["chunks"], row) for r in result["scale"] if r["store"] == "pgvector"
              for row in [{"ef_search": r["ef_search"], **r}, *r["ef_search_sweep"]]]
    lines += ["", "### hnsw.ef_search (the store sets max(server setting, 2 x depth))", ""]
    lines += table(["chunks", "ef_search", f"recall@{K}", "dense p50 / p95 (ms)", "hybrid p50 / p95 (ms)"],
                   [[f"{n:,}", row["ef_search"], row[f"recall@{K}"], f"{row['dense_ms_p50']} / {row['dense_ms_p95']}",
                     f"{row['hybrid_ms_p50']} / {row['hybrid_ms_p95']}"] for n, row in sweeps])
    for name, part in result["retrieval"].items():
        lines += ["", f"## Retrieval on {name} ({part['questions']} questions, real embedder): hybrid passages the "
                  f"same in both stores for {part['same_hybrid_passages']:.1%} of the questions", ""]
        ks = [key for key in next(iter(part["stores"]["faiss"].values())) if key.startswith("recall@")]
        lines += table(["store", "mode", *ks, "MRR"],
                       [[store, mode, *(m[k] for k in ks), m["mrr"]]
                        for store, modes in part["stores"].items() for mode, m in modes.items()])
    lines += ["", "## Targets at the largest size (pgvector)", ""]
    lines += table(["target", "goal", "measured"],
                   [[t["target"], t["goal"], t["measured"]] for t in result["targets"]])
    return "\n".join(lines) + "\n"


def targets(result: dict) -> list[dict]:
    """The issue's targets for the pgvector store at the largest size measured."""
    row = max((r for r in result["scale"] if r["store"] == "pgvector"), key=lambda r: r["chunks"])
    return [{"target": f"recall@{K} vs exact search at {row['chunks']:,} chunks", "goal": ">= 0.95",
             "measured": row[f"recall@{K}"], "met": row[f"recall@{K}"] >= 0.95},
            {"target": f"dense search p50 at {row['chunks']:,} chunks (ms)", "goal": "<= 20",
             "measured": row["dense_ms_p50"], "met": row["dense_ms_p50"] <= 20}]


def server_settings(dsn: str) -> dict:
    """Version and memory settings of the server."""
    store = pg_store(dsn)
    row = store.conn.execute("""SELECT current_setting('server_version'), current_setting('shared_buffers'),
                                       (SELECT extversion FROM pg_extension WHERE extname = 'vector')""").fetchone()
    store.close()
    return {"server_version": row[0], "shared_buffers": row[1], "pgvector": row[2]}


def drop_schema(dsn: str) -> None:
    """Remove the benchmark's tables."""
    store = pg_store(dsn)
    store.conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    store.close()


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, run the benchmark, write and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SIZES[0]:,} chunks and 10 questions of each "
                        "set, to check that everything runs")
    parser.add_argument("--sizes", help=f"comma-separated chunk counts (default {','.join(map(str, SIZES))})")
    parser.add_argument("--queries", type=int, help="searches per size (default 200; --quick 20)")
    parser.add_argument("--gold", type=Path, nargs="+", default=GOLD,
                        help="gold question files over the seed articles (JSONL; default both splits)")
    parser.add_argument("--xquad", type=Path, default=XQUAD, help="XQuAD-ar in SQuAD format (skipped if missing)")
    parser.add_argument("--dsn", default=os.environ.get("RAG_PG_DSN") or os.environ.get("RAG_TEST_PG_DSN"),
                        help="PostgreSQL with pgvector (default RAG_PG_DSN, then RAG_TEST_PG_DSN)")
    parser.add_argument("--maintenance-work-mem", default="6GB", help="for the HNSW build: the graph should fit")
    parser.add_argument("--parallel-workers", default="1", help="max_parallel_maintenance_workers for the build")
    defaults = Config()
    parser.add_argument("--hnsw-m", type=int, default=defaults.pg_hnsw_m,
                        help=f"pg_hnsw_m of the synthetic indexes (default {defaults.pg_hnsw_m})")
    parser.add_argument("--hnsw-ef-construction", type=int, default=defaults.pg_hnsw_ef_construction,
                        help=f"pg_hnsw_ef_construction of the synthetic indexes (default "
                             f"{defaults.pg_hnsw_ef_construction})")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default evals/results)")
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("no PostgreSQL: pass --dsn or set RAG_PG_DSN (`make pg` prints one)")
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else list(QUICK_SIZES if args.quick else SIZES)
    queries = args.queries or (20 if args.quick else 200)
    build = {"maintenance_work_mem": args.maintenance_work_mem,
             "max_parallel_maintenance_workers": args.parallel_workers}
    started = time.perf_counter()
    result = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv[1:], "revision": commit(HERE.parent),
              "machine": machine(),
              "server": shown_dsn(args.dsn), "queries": queries,
              "settings": {**server_settings(args.dsn), "hnsw_m": args.hnsw_m,
                           "hnsw_ef_construction": args.hnsw_ef_construction,
                           "build": ", ".join(f"{k} {v}" for k, v in build.items())}}
    try:
        hnsw = {"pg_hnsw_m": args.hnsw_m, "pg_hnsw_ef_construction": args.hnsw_ef_construction}
        result["scale"] = bench_scale(sizes, queries, args.dsn, build, hnsw)
        result["retrieval"] = bench_retrieval(args, args.dsn)
    finally:
        drop_schema(args.dsn)
    result["targets"] = targets(result)
    result["seconds"] = round(time.perf_counter() - started, 1)
    headline = {t["target"]: t["measured"] for t in result["targets"]}
    path = write_report(args.out, "stores", render_markdown(result), result, headline, result["revision"],
                        result["machine"])
    print(render_markdown(result))
    print(f"results: {path} (and stores.json; the run's line in history.jsonl)")


if __name__ == "__main__":
    main()
