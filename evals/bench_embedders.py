"""Embedding backends side by side, against the fp32 torch model measured in the same run: load time, chunks/s on
the seed articles' chunks (batch sizes x threads, then the best setting on ~200 chunks), projected hours for 10^5
articles, cosine of each variant's vectors to fp32's, and hybrid (and dense) recall@1/@5 and MRR on the gold set
(gold-dev + gold-test, questions with sources) and on XQuAD-ar (every paragraph indexed as an article).
Writes evals/results/embedders.md and embedders.json, and the run's line in history.jsonl (rag.report).

    .venv/bin/python evals/bench_embedders.py [--quick] [--variants a,b] [--questions N]

Each variant is pulled/built first (`rag models pull <name>`); every measurement runs in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rag.assistant import Assistant
from rag.benchmarks import embedding_rate, gold_questions, in_subprocess, seed_chunks, timed
from rag.config import load_config
from rag.embedders import make_embedder
from rag.evaluate import GOLD_KS, SQUAD_KS, evaluate, squad_questions, summarize_retrieval
from rag.index import build_index, embed_documents
from rag.models import EXPORTS
from rag.report import commit, load_average, machine, table, write_report
from rag.stores import make_store

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SEEDS = HERE.parent / "seeds"
GOLD = [HERE / "gold-dev.jsonl", HERE / "gold-test.jsonl"]
XQUAD = HERE.parent.parent / "shared" / "benchmarks" / "xquad.ar.json"  # the project's shared/ beside the checkout
BASELINE = "embeddinggemma-300m"
TARGET_RATE = 15.0  # chunks/s on two cores, the goal
RECALL_SLACK = 0.01  # hybrid recall@5 may fall this much below fp32's


def sweep(name: str, threads: int, batches: list[int], chunks: int) -> dict:
    """Load a variant with `threads` threads (0: the library's default) and time embedding at each batch size."""
    config = load_config(seeds_dir=SEEDS, embedder=name, embed_threads=threads)
    embedder, seconds = timed(make_embedder, config)
    embedder.embed_batch(["تسخين"] * 4, "document")  # warm up: first calls allocate and pick kernels
    rates = [{"batch": batch, **embedding_rate(embedder, config, chunks, batch)} for batch in batches]
    return {"threads": threads, "load_s": round(seconds, 2), "rates": rates}


def retrieval(config, embedder, seeds: Path, index: Path, questions: list[dict], ks: tuple[int, ...]) -> dict:
    """Index the articles in seeds with the embedder, retrieve for the questions; recall and MRR per mode."""
    config = config.replace(seeds_dir=seeds, index_dir=index)
    report = build_index(seeds, make_store(config), embedder, config.chunk_size, config.chunk_overlap,
                         log=lambda *_: None)
    records = evaluate(Assistant(config, embedder, make_store(config)), questions, ks, [])
    return {"chunks": report.chunks, "index_s": report.seconds, "questions": len(questions),
            **summarize_retrieval(records, ks)}


def measure(name: str, threads: int, batch: int, target: int, xquad: Path, sample: int, work: Path) -> dict:
    """The full figures of a variant at its best setting; its vectors of the seed chunks and gold questions are
    saved into work/<name>-{documents,queries}.npy for the cosine to fp32."""
    config = load_config(seeds_dir=SEEDS, embedder=name, embed_threads=threads)
    embedder, seconds = timed(make_embedder, config)
    gold = gold_questions(GOLD)
    chunks, _ = seed_chunks(config)
    np.save(work / f"{name}-documents.npy", embed_documents(chunks, embedder, batch))
    np.save(work / f"{name}-queries.npy", embedder.embed_batch([q["question"] for q in gold], "query"))
    rate = embedding_rate(embedder, config, target, batch)
    result = {"name": name, "id": embedder.id, "backend": type(embedder).__name__, "threads": threads,
              "batch": batch, "load_s": round(seconds, 2), "embedding": rate}
    print(f"{name}: {result['embedding']['chunks_per_s']} chunks/s; gold retrieval", file=sys.stderr)
    result["gold"] = retrieval(config, embedder, config.seeds_dir, work / f"{name}-gold", gold, GOLD_KS)
    if xquad.exists():
        print(f"{name}: XQuAD-ar retrieval", file=sys.stderr)
        seeds = work / f"{name}-xquad"
        seeds.mkdir()
        questions = squad_questions(json.loads(xquad.read_text(encoding="utf-8")), seeds, "xquad.ar")
        if sample:
            questions = random.Random(0).sample(questions, min(sample, len(questions)))
        result["xquad"] = retrieval(config, embedder, seeds, work / f"{name}-xquad-index", questions, SQUAD_KS)
    result["load_average"] = load_average()
    return result


def cosines(work: Path, name: str) -> dict:
    """Mean and minimum cosine between a variant's vectors and fp32's, for documents and queries."""
    out = {}
    for kind in ("documents", "queries"):
        both = (np.load(work / f"{n}-{kind}.npy") for n in (name, BASELINE))
        values = np.sum(np.multiply(*both), axis=1)
        out[kind] = {"mean": round(float(values.mean()), 4), "min": round(float(values.min()), 4)}
    return out


def bench_variant(name: str, args: argparse.Namespace, work: Path) -> dict:
    """Sweep threads and batch sizes in fresh processes, then measure the variant at its fastest setting."""
    settings = [(threads, batch) for threads in args.threads for batch in args.batches]
    sweeps = [in_subprocess(sweep, name, threads, args.batches, args.sweep_chunks) for threads in args.threads
              ] if len(settings) > 1 else []
    threads, batch = max(((s["threads"], r["batch"], r["chunks_per_s"]) for s in sweeps for r in s["rates"]),
                         key=lambda row: row[2])[:2] if sweeps else settings[0]
    result = in_subprocess(measure, name, threads, batch, args.chunks, args.xquad, args.questions, work)
    return {**result, "sweep": sweeps}


def judge(variants: list[dict]) -> None:
    """Mark each variant against the goal: >= 15 chunks/s and hybrid recall@5 within 0.01 of fp32's."""
    base = next(v for v in variants if v["name"] == BASELINE)
    for v in variants:
        recall = {where: v[where]["hybrid"]["recall@5"] - base[where]["hybrid"]["recall@5"]
                  for where in ("gold", "xquad") if where in v}
        v["recall@5_vs_fp32"] = {where: round(delta, 4) for where, delta in recall.items()}
        v["meets_target"] = (v["embedding"]["chunks_per_s"] >= TARGET_RATE
                             and all(delta >= -RECALL_SLACK for delta in recall.values()))


def _figures(scores: dict) -> str:
    return f"{scores['recall@1']:.3f} / {scores['recall@5']:.3f} / {scores['mrr']:.3f}"


def render_markdown(result: dict) -> str:
    """The report: speed, fidelity and recall per variant, then the sweeps."""
    m, base = result["machine"], result["variants"][0]
    lines = [f"# Embedding backends ({result['created']})", "",
             f"- machine: {m['cpus']} CPUs ({m['cpu_model']}), load average {m['load_average']} at start, "
             f"{m['load_average_end']} at end (the cores are shared: rates are lower bounds)",
             f"- revision {result['revision']}; flags {' '.join(result['argv']) or '(none)'}",
             f"- gold: the {base['gold']['hybrid']['n']} questions with sources of gold-dev.jsonl and "
             f"gold-test.jsonl over the {base['gold']['chunks']} chunks of seeds/; XQuAD-ar: "
             f"{base.get('xquad', {}).get('questions', 0)} questions over "
             f"{base.get('xquad', {}).get('chunks', 0)} chunks", "",
             f"Target: at least {TARGET_RATE:g} chunks/s and hybrid recall@5 within {RECALL_SLACK} of fp32's.", ""]
    rows = []
    for v in result["variants"]:
        e, c = v["embedding"], v.get("cosine", {})
        gold, xq = v["gold"]["hybrid"], v.get("xquad", {}).get("hybrid", {})
        rows.append([v["name"], v["load_s"], f"{v['threads'] or 'default'} / {v['batch']}", e["chunks_per_s"],
                     e["projected_hours_for_1e5_articles"],
                     f"{c['documents']['mean']:.4f} / {c['documents']['min']:.4f}" if c else "1 (baseline)",
                     f"{c['queries']['mean']:.4f} / {c['queries']['min']:.4f}" if c else "1 (baseline)",
                     _figures(gold), _figures(xq) if xq else "–",
                     " ".join(f"{k} {d:+.3f}" for k, d in v["recall@5_vs_fp32"].items()),
                     str(e["load_average"]), "yes" if v["meets_target"] else "no"])
    lines += table(["variant", "load (s)", "threads / batch", "chunks/s", "hours for 10^5 articles",
                    "cosine to fp32, documents (mean / min)", "queries (mean / min)",
                    "gold hybrid R@1 / R@5 / MRR", "XQuAD hybrid R@1 / R@5 / MRR", "R@5 vs fp32", "load average",
                    "meets target"], rows)
    lines += ["", "## Dense-only retrieval (what the embedder alone finds)", ""]
    lines += table(["variant", "gold dense R@1 / R@5 / MRR", "XQuAD dense R@1 / R@5 / MRR"],
                   [[v["name"], *(_figures(v[w]["dense"]) if w in v else "–" for w in ("gold", "xquad"))]
                    for v in result["variants"]])
    lines += ["", "## Sweep (chunks/s on the seed chunks; threads 0 = the library's default)", ""]
    lines += table(["variant", "threads", "batch", "chunks/s", "load average"],
                   [[v["name"], s["threads"], r["batch"], r["chunks_per_s"], str(r["load_average"])]
                    for v in result["variants"] for s in v["sweep"] for r in s["rates"]])
    return "\n".join(lines) + "\n"


def write_results(result: dict, out: Path) -> Path:
    """The report into out: embedders.md, embedders.json and a line in history.jsonl (each variant's chunks/s and
    verdict); the report's path."""
    headline = {v["name"]: {"chunks_per_s": v["embedding"]["chunks_per_s"], "meets_target": v["meets_target"]}
                for v in result["variants"]}
    return write_report(out, "embedders", render_markdown(result), result, headline, result["revision"],
                        result["machine"])


def run(args: argparse.Namespace) -> dict:
    """Every variant (fp32 first), then the cosines and the verdicts."""
    started = time.perf_counter()
    names = [BASELINE, *(n for n in args.variants if n != BASELINE)]
    result: dict = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv[1:], "machine": machine()}
    result["revision"] = commit(HERE.parent)
    with tempfile.TemporaryDirectory(prefix="rag-embedders-") as tmp:
        variants = []
        for name in names:
            print(f"== {name}", file=sys.stderr)
            variants.append(bench_variant(name, args, Path(tmp)))
        for v in variants[1:]:
            v["cosine"] = cosines(Path(tmp), v["name"])
    judge(variants)
    result["variants"] = variants
    result["machine"]["load_average_end"] = load_average()
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, run the benchmark, write and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one thread setting and batch size, 48 chunks, 200 "
                        "XQuAD questions: to check that everything runs")
    parser.add_argument("--variants", default=",".join(EXPORTS),
                        help=f"comma-separated models to compare with {BASELINE} (default: every registered export)")
    parser.add_argument("--questions", type=int, help="XQuAD-ar questions, a seeded sample (default all; --quick 200)")
    parser.add_argument("--xquad", type=Path, default=XQUAD, help=f"XQuAD-ar file (default {XQUAD})")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default evals/results)")
    args = parser.parse_args(argv)
    args.variants = [n.strip() for n in args.variants.split(",") if n.strip()]
    args.threads, args.batches = ([0], [16]) if args.quick else ([1, 2], [4, 8, 16, 32])
    args.sweep_chunks, args.chunks = (8, 48) if args.quick else (64, 200)
    args.questions = args.questions or (200 if args.quick else 0)
    result = run(args)
    path = write_results(result, args.out)
    print(render_markdown(result))
    print(f"results: {path} (and embedders.json; the run's line in history.jsonl)")


if __name__ == "__main__":
    main()
