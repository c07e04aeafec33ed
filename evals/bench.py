"""Performance benchmark: answer time and quality (sentence evidence vs whole passages), the LLM's prompt cache and
settings, retrieval at 10^5 chunks, the dense index at 10^4..10^6 synthetic vectors, embedding throughput,
incremental indexing and memory. Writes evals/results/bench.md and bench.json (rag.report: a line in
history.jsonl, the per-question answers in runs/).

    .venv/bin/python evals/bench.py [--quick] [--questions N] [--max-scale N] [--skip-llm]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil

from rag.assistant import Assistant
from rag.benchmarks import (
    clustered_vectors,
    embedding_rate,
    gold_questions,
    in_subprocess,
    seed_chunks,
    timed,
    vocabulary,
)
from rag.chunk import Chunk
from rag.config import Config, load_config
from rag.embedders import Embedder, make_embedder
from rag.evaluate import QueryCache, run_info, score_answer, summarize_answers
from rag.generators import make_generator
from rag.index import build_index
from rag.metrics import mean, percentile
from rag.normalize import fold_script, terms
from rag.report import commit, load_average, machine, table, write_report
from rag.retrieve import search
from rag.stores import make_store
from rag.stores.faiss import FaissStore, Snapshot, make_dense_index

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GOLD = [HERE / "gold-dev.jsonl", HERE / "gold-test.jsonl"]
SCALES = (10_000, 100_000, 1_000_000)
RETRIEVAL_CHUNKS = 100_000
DIMS = 768
DEPTH = 50  # candidates per ranking that rag.retrieve.search asks for
K = 10  # recall@K against exact search
EVIDENCE = ("sentences", "passages")
VARIANTS = [{"evidence_sentences": 4}, {"evidence_sentences": 3}, {"top_k": 3}]
VARIANT_FIGURES = ("correct", "f1", "citation_precision", "citation_recall", "refusal_accuracy", "false_refusal_rate",
                   "prompt_tokens_p50", "read_tokens_p50")
MB = 2**20


# Helpers.


def _ms(function: Callable, *args) -> float:
    """Milliseconds one call takes."""
    return 1000 * timed(function, *args)[1]


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far. On Linux VmHWM: ru_maxrss would also count the parent's memory
    that a spawned child had before it exec'd Python."""
    status = Path("/proc/self/status")
    if status.exists():
        line = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MB, 1)  # macOS: bytes


# Dense index scale: synthetic vectors through the index that ships (rag.index.make_dense_index).


def search_figures(dense, queries: np.ndarray, truth: np.ndarray) -> dict:
    """Latency of one-question searches for DEPTH candidates (as retrieval asks), and recall@K of their top K."""
    times, recalls = [], []
    for query, exact in zip(queries, truth, strict=True):
        started = time.perf_counter()
        _, ids = dense.search(query[None, :], DEPTH)
        times.append(1000 * (time.perf_counter() - started))
        recalls.append(len(set(ids[0, :K].tolist()) & set(exact.tolist())) / K)
    return {"search_ms_p50": percentile(times, 50), "search_ms_p95": percentile(times, 95),
            f"recall@{K}": mean(recalls)}


def nprobe_sweep(dense, queries: np.ndarray, truth: np.ndarray) -> list[dict]:
    """Recall and latency of an IVF index at several nprobe values (the shipped value is restored after)."""
    import faiss

    ivf = faiss.extract_index_ivf(dense)
    shipped = ivf.nprobe
    rows = []
    for nprobe in sorted({4, 8, 16, 32, 64, 128, shipped}):
        ivf.nprobe = nprobe
        rows.append({"nprobe": nprobe, "shipped": nprobe == shipped, **search_figures(dense, queries, truth)})
    ivf.nprobe = shipped
    return rows


def bench_scale(n: int, folder: Path, queries: int = 200, dims: int = DIMS) -> dict:
    """Build the shipped dense index over n synthetic vectors: build time, search latency, recall@K against exact
    search, exact search latency, size on disk and memory. Writes the index to folder/dense-<n>.faiss."""
    import faiss

    process = psutil.Process()
    corpus, query = clustered_vectors(n, queries, dims)
    truth = faiss.knn(query, corpus, K, metric=faiss.METRIC_INNER_PRODUCT)[1]
    exact = [_ms(faiss.knn, q[None, :], corpus, DEPTH, faiss.METRIC_INNER_PRODUCT) for q in query[:20]]
    before = process.memory_info().rss
    started = time.perf_counter()
    dense, kind = make_dense_index(corpus)
    build = time.perf_counter() - started
    index_rss = (process.memory_info().rss - before) / MB
    path = Path(folder) / f"dense-{n}.faiss"
    faiss.write_index(dense, str(path))
    return {
        "chunks": n, "dims": dims, "queries": queries, "index_type": kind, "build_s": round(build, 2),
        **search_figures(dense, query, truth),
        "exact_search_ms_p50": percentile(exact, 50),
        "disk_mb": round(path.stat().st_size / MB, 1), "vectors_mb": round(corpus.nbytes / MB, 1),
        "index_rss_mb": round(index_rss, 1), "peak_rss_mb": _peak_rss_mb(),
        "nprobe_sweep": nprobe_sweep(dense, query, truth) if "ivf" in kind else [],
        "load_average": load_average(),
    }


# Retrieval: the real embedder and hybrid search over a synthetic index of 10^5 chunks.


def synthetic_index(dense, vectors: np.ndarray, words: list[str], terms_per_chunk: int, seed: int = 0) -> FaissStore:
    """A FAISS store over len(vectors) synthetic chunks: the given dense index, and BM25 over token lists drawn from a
    Zipf distribution over the words."""
    import bm25s

    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(words) + 1)
    draws = rng.choice(len(words), size=(len(vectors), terms_per_chunk), p=weights / weights.sum())
    table = np.array(words, dtype=object)
    bm25 = bm25s.BM25()
    bm25.index([table[row].tolist() for row in draws], show_progress=False)
    chunks = [Chunk(f"s{i}", f"article{i // 8}", "", None, 0, 0, "") for i in range(len(vectors))]
    return FaissStore("synthetic", Snapshot(Path("synthetic"), {}, {}, chunks, vectors, dense, bm25))


def bench_retrieval(embedder: Embedder, index: FaissStore, questions: list[str], k: int, threads: int) -> dict:
    """Query embedding, hybrid search with a ready query vector, and both together, one question at a time, with
    torch using `threads` threads."""
    import torch

    shipped = torch.get_num_threads()
    torch.set_num_threads(threads)
    embedder.embed_batch(["سؤال للتحمية"], "query")  # the first call initializes the model
    cached = QueryCache(embedder)
    cached.prefill(questions)
    embed = [_ms(embedder.embed_batch, [fold_script(q)], "query") for q in questions]
    hybrid = [_ms(search, index, cached, q, k) for q in questions]
    total = [_ms(search, index, embedder, q, k) for q in questions]
    torch.set_num_threads(shipped)
    return {
        "chunks": index.count(), "questions": len(questions), "index_type": type(index.snapshot.dense).__name__,
        "torch_threads": threads, "shipped": threads == shipped,
        "embed_ms_p50": percentile(embed, 50), "embed_ms_p95": percentile(embed, 95),
        "hybrid_search_ms_p50": percentile(hybrid, 50), "hybrid_search_ms_p95": percentile(hybrid, 95),
        "retrieval_ms_p50": percentile(total, 50), "retrieval_ms_p95": percentile(total, 95),
        "load_average": load_average(),
    }


def retrieval_on_synthetic(embedder: Embedder, config: Config, dense_file: Path, questions: list[str]) -> dict:
    """bench_retrieval over the synthetic index whose dense part bench_scale wrote to dense_file, with torch's
    default number of threads (what ships) and with one thread."""
    import faiss
    import torch

    n = int(dense_file.stem.split("-")[1])
    chunk_terms = [terms(f"{c.title}\n{c.text}") for c in seed_chunks(config)[0]]  # as rag.index.make_bm25
    per_chunk = round(float(np.mean([len(t) for t in chunk_terms])))
    words = vocabulary(sorted({t for ts in chunk_terms for t in ts}), 50_000)
    started = time.perf_counter()
    index = synthetic_index(faiss.read_index(str(dense_file)), clustered_vectors(n, 0)[0], words, per_chunk)
    setup = round(time.perf_counter() - started, 1)
    runs = [bench_retrieval(embedder, index, questions, config.top_k, threads)
            for threads in sorted({torch.get_num_threads(), 1}, reverse=True)]
    shipped = next(run for run in runs if run["shipped"])
    return {**shipped, "runs": runs, "terms_per_chunk": per_chunk, "vocabulary": len(words), "setup_s": setup}


# Indexing: embedding throughput and incremental rebuilds, with the real embedder.


def _build(seeds: Path, folder: Path, embedder: Embedder, config: Config) -> dict:
    store = make_store(config.replace(index_dir=folder, store="faiss"))
    report = build_index(seeds, store, embedder, config.chunk_size, config.chunk_overlap, log=lambda *_: None)
    return {"seconds": report.seconds, "chunks": report.chunks, "embedded": report.embedded,
            "added": len(report.added), "removed": len(report.removed)}


def bench_incremental(embedder: Embedder, config: Config, work: Path) -> dict:
    """Build an index over a copy of the seeds, add one article and rebuild, remove it and rebuild. Leaves the
    index of the seeds in work/index."""
    seeds = work / "seeds"
    shutil.copytree(config.seeds_dir, seeds)
    full = _build(seeds, work / "index", embedder, config)
    first = sorted(seeds.iterdir())[0]
    new = seeds / "new_article.txt"
    new.write_text("مقال جديد\n" + first.read_text(encoding="utf-8"), encoding="utf-8")
    added = _build(seeds, work / "index", embedder, config)
    new.unlink()
    removed = _build(seeds, work / "index", embedder, config)
    return {"full": full, "add_one": {**added, "new_article_chunks": added["chunks"] - full["chunks"]},
            "remove_one": removed, "load_average": load_average()}


# The LLM: answers in both evidence modes, the prompt cache, n_threads / n_batch.


def _common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


class TracedGenerator:
    """Wraps a LlamaGenerator and records, per call: prompt tokens, how many of them llama.cpp reused from its KV
    cache, tokens sampled, seconds to the first streamed piece and in all."""

    def __init__(self, inner):
        self.inner, self.id, self.calls = inner, inner.id, []
        self._sample = inner.llm.generate
        inner.llm.generate = self._tokens  # llama-cpp-python's completion calls self.generate(prompt_tokens, ...)

    def _tokens(self, tokens, **kwargs) -> Iterator[int]:
        """llama-cpp-python's token generator, counting what it reads and samples into the current call."""
        call = self.calls[-1]
        call["prompt_tokens"] = len(tokens)
        call["cached_tokens"] = _common_prefix(self.inner.llm._input_ids.tolist(), list(tokens))
        for token in self._sample(tokens, **kwargs):
            call["generated_tokens"] += 1
            yield token

    def count_tokens(self, text: str) -> int:
        """Tokens the model uses for a text."""
        return self.inner.count_tokens(text)

    def reset_cache(self) -> None:
        """Forget the cached prompt: the next prompt is read whole."""
        self.inner.llm.reset()

    def prefill(self, messages: list[dict]) -> None:
        """Nothing: this benchmark fills and empties the prompt cache itself (reset_cache)."""

    def generate(self, messages: list[dict], max_tokens: int, stop: list[str], temperature: float) -> Iterator[str]:
        """The wrapped generator's pieces, recording the call in self.calls."""
        call = {"max_tokens": max_tokens, "generated_tokens": 0}
        self.calls.append(call)
        started = time.perf_counter()
        for piece in self.inner.generate(messages, max_tokens, stop, temperature):
            call.setdefault("first_token_s", time.perf_counter() - started)
            yield piece
        call["seconds"] = time.perf_counter() - started


def llm_rates(call: dict) -> dict:
    """Prompt tokens read per second (those not in the cache) and tokens generated per second, of one call."""
    read = call["prompt_tokens"] - call["cached_tokens"]
    decode = call["seconds"] - call["first_token_s"]
    return {"prompt_tokens_per_s": round(read / call["first_token_s"], 1),
            "generated_tokens_per_s": round((call["generated_tokens"] - 1) / decode, 1) if decode > 0 else None}


def answer_figures(records: list[dict]) -> dict:
    """rag.evaluate's answer summary, plus time and token figures of the questions that reached the LLM."""
    summary = summarize_answers(records)
    calls = [r["llm"] for r in records if r["llm"]]
    generated = [c["generated_tokens"] for c in calls]
    return {
        **summary,
        "reached_llm": len(calls),
        "total_s_p50_reached_llm": percentile((r["timings"]["total"] for r in records if r["llm"]), 50),
        "prompt_tokens_p50": percentile([c["prompt_tokens"] for c in calls], 50),
        "prompt_tokens_p95": percentile([c["prompt_tokens"] for c in calls], 95),
        "cached_tokens_p50": percentile([c["cached_tokens"] for c in calls], 50),
        "read_tokens_p50": percentile([c["prompt_tokens"] - c["cached_tokens"] for c in calls], 50),
        "generated_tokens_p50": percentile(generated, 50), "generated_tokens_p95": percentile(generated, 95),
        "generated_tokens_max": max(generated, default=None),
        "hit_max_tokens": sum(c["generated_tokens"] >= c["max_tokens"] for c in calls),
        "prompt_tokens_per_s_p50": percentile([llm_rates(c)["prompt_tokens_per_s"] for c in calls], 50),
        "generated_tokens_per_s_p50": percentile([llm_rates(c)["generated_tokens_per_s"] for c in calls], 50),
    }


def _new_call(generator: TracedGenerator, before: int) -> dict | None:
    """The generator's last call if one was made after it had `before` calls and it streamed a piece."""
    call = generator.calls[-1] if len(generator.calls) > before else None
    return call if call and "first_token_s" in call else None


def _ask(assistant: Assistant, generator: TracedGenerator, question: dict) -> dict:
    """rag.evaluate.score_answer for a gold question, with the LLM call's figures (None if it was not called)."""
    before = len(generator.calls)
    references = question["answers"] if question["answerable"] else []
    record = {**question, **score_answer(assistant, question["question"], references, question["sources"])}
    return {**record, "llm": _new_call(generator, before)}


def _llm_call(assistant: Assistant, generator: TracedGenerator, question: str) -> dict | None:
    """Ask a question; the figures of the LLM call (None when it was refused before generating)."""
    before = len(generator.calls)
    assistant.ask(question)
    return _new_call(generator, before)


def bench_answers(config: Config, embedder: Embedder, index: FaissStore, generator: TracedGenerator,
                  questions: list[dict]) -> tuple[dict, list[dict]]:
    """The questions answered with sentence evidence, then again with whole passages, scored with rag.evaluate;
    figures per mode and the per-question records. One pass per mode keeps llama.cpp's cache as in use: each
    prompt follows the previous question's prompt of the same mode, never the same question's in the other mode."""
    records: dict[str, list[dict]] = {}
    for mode in EVIDENCE:
        assistant = Assistant(config.replace(evidence=mode), embedder, index, generator)
        generator.reset_cache()
        assistant.warm_up()  # as `rag ui` starts
        records[mode] = []
        for question in questions:
            record = {**_ask(assistant, generator, question), "mode": mode}
            records[mode].append(record)
            print(f"{question['id']} {mode:>9}: first token {record['timings'].get('first_token', 0):.1f} s, "
                  f"total {record['timings']['total']:.1f} s, correct {record['correct']}", file=sys.stderr)
    figures = {mode: {**answer_figures(rows), "load_average": load_average()} for mode, rows in records.items()}
    return figures, [r for rows in records.values() for r in rows]


def compare_modes(figures: dict) -> dict:
    """Sentence evidence against the whole-passage baseline: each metric's pair and ratio (sentences / passages)."""
    names = ["correct", "f1", "citation_precision", "citation_recall", "citation_supported", "refusal_accuracy",
             "false_refusal_rate", "prompt_tokens_p50", "read_tokens_p50"]
    out = {}
    for name in names:
        s, p = figures["sentences"][name], figures["passages"][name]
        out[name] = {"sentences": s, "passages": p, "ratio": round(s / p, 3) if s is not None and p else None}
    for name in ("first_token_p50", "first_token_p95", "total_p50", "total_p95"):
        s, p = figures["sentences"]["latency"][name], figures["passages"]["latency"][name]
        out[f"{name}_s"] = {"sentences": s, "passages": p, "ratio": round(s / p, 3) if s is not None and p else None}
    return out


def bench_variants(config: Config, embedder: Embedder, index: FaissStore, generator: TracedGenerator,
                   questions: list[dict], variants: list[dict]) -> list[dict]:
    """Sentence evidence with other settings (e.g. fewer evidence sentences): quality, time and prompt tokens."""
    rows = []
    for variant in variants:
        assistant = Assistant(config.replace(evidence="sentences", **variant), embedder, index, generator)
        figures = answer_figures([_ask(assistant, generator, q) for q in questions])
        rows.append({"settings": variant, **{name: figures[name] for name in VARIANT_FIGURES},
                     **figures["latency"], "load_average": load_average()})
        print(f"variant {variant}: {rows[-1]}", file=sys.stderr)
    return rows


def bench_prompt_cache(assistant: Assistant, generator: TracedGenerator, questions: list[dict]) -> dict:
    """Time to first token with an empty KV cache vs after Assistant.warm_up read the fixed prefix (system prompt +
    example), as `rag ui` does at start: each question asked after a cache reset, then after a reset and warm-up."""
    cold, warm = [], []
    for question in questions:
        generator.reset_cache()
        cold.append(_llm_call(assistant, generator, question["question"]))
        generator.reset_cache()
        assistant.warm_up()
        warm.append(_llm_call(assistant, generator, question["question"]))

    def figures(calls: list[dict | None]) -> dict:
        calls = [c for c in calls if c]
        return {"first_token_s_p50": percentile([c["first_token_s"] for c in calls], 50),
                "prompt_tokens_p50": percentile([c["prompt_tokens"] for c in calls], 50),
                "cached_tokens_p50": percentile([c["cached_tokens"] for c in calls], 50),
                "prompt_tokens_per_s_p50": percentile([llm_rates(c)["prompt_tokens_per_s"] for c in calls], 50)}

    return {"questions": len(questions), "cold": figures(cold), "warm": figures(warm), "load_average": load_average()}


def bench_llm_settings(config: Config, embedder: Embedder, index: FaissStore, question: dict,
                       settings: list[tuple[int, int]], repeats: int) -> list[dict]:
    """Prompt reading and generation speed for (n_threads, n_batch) pairs: one question asked with an empty
    cache `repeats` times per pair, the fastest kept (the cores are shared with other work)."""
    rows = []
    for n_threads, n_batch in settings:
        varied = config.replace(n_threads=n_threads, n_batch=n_batch)
        generator = TracedGenerator(make_generator(varied))
        assistant = Assistant(varied, embedder, index, generator)
        calls = []
        for _ in range(repeats):
            generator.reset_cache()
            calls.append(_llm_call(assistant, generator, question["question"]))
        best = min((c for c in calls if c), key=lambda c: c["first_token_s"])
        rows.append({"n_threads": n_threads, "n_batch": n_batch, "prompt_tokens": best["prompt_tokens"],
                     "first_token_s": round(best["first_token_s"], 2), **llm_rates(best),
                     "load_average": load_average()})
        print(f"n_threads {n_threads}, n_batch {n_batch}: {rows[-1]}", file=sys.stderr)
        del assistant, generator
        gc.collect()
    return rows


def memory_probe(config: Config, question: str) -> dict:
    """Load the assistant (embedder, index, generator) and answer one question; this process's memory. Run it in
    a fresh process (in_subprocess)."""
    assistant = Assistant.load(config)
    assistant.generator  # noqa: B018 - load the generator even if the question is refused before generating
    answer = assistant.ask(question)
    return {"peak_rss_mb": _peak_rss_mb(), "rss_after_mb": round(psutil.Process().memory_info().rss / MB, 1),
            "refused": answer.refused, "load_average": load_average()}


# Targets, report, command line.


def _target(name: str, goal: str, measured: object, met: bool | None) -> dict:
    return {"target": name, "goal": goal, "measured": measured, "met": met}


def _at_least(value: float | None, baseline: float | None) -> bool | None:
    return None if value is None or baseline is None else value >= baseline


def targets(result: dict) -> list[dict]:
    """Each target of the issue with what was measured and whether it is met."""
    rows = []
    if "answers" in result:
        s, p = result["answers"]["sentences"], result["answers"]["passages"]
        total, first = s["latency"]["total_p50"], s["latency"]["first_token_p50"]
        rows += [
            _target("median answer time, all gold questions (s)", "<= 6", total, total is not None and total <= 6),
            _target("median answer time, questions that reach the LLM (s)", "<= 6", s["total_s_p50_reached_llm"],
                    s["total_s_p50_reached_llm"] is not None and s["total_s_p50_reached_llm"] <= 6),
            _target("median time to first token, questions that reach the LLM (s)", "<= 4", first,
                    first is not None and first <= 4),
            *(_target(f"{name}: sentences vs passages baseline", f">= {p[name]}", s[name],
                      _at_least(s[name], p[name]))
              for name in ("correct", "citation_precision", "citation_recall", "refusal_accuracy")),
        ]
    r = result["retrieval"]
    rows.append(_target(f"retrieval p50 at {r['chunks']:,} chunks (ms)", "<= 150", r["retrieval_ms_p50"],
                        r["retrieval_ms_p50"] <= 150))
    if "memory" in result:
        peak = result["memory"]["peak_rss_mb"]
        rows.append(_target("peak RSS, both models loaded, one answer (MB)", "<= 3072", peak, peak <= 3072))
    for scale in result["scale"]:
        recall = scale[f"recall@{K}"]
        rows.append(_target(f"recall@{K} vs exact at {scale['chunks']:,} ({scale['index_type']})", ">= 0.95", recall,
                            recall >= 0.95))
    return rows


def _yes(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "–"}[met]


def render_markdown(result: dict) -> str:
    """The Markdown report: run description, then one table per part."""
    m = result["machine"]
    lines = [
        f"# Benchmark {result['created']}",
        "",
        f"- `evals/bench.py {' '.join(result['argv'])}`, {result['seconds']} s; revision {result['revision']}",
        f"- embedder `{result['embedder']}`, generator `{result['generator']}`; "
        + ", ".join(f"{k}={v}" for k, v in result["settings"].items()),
        f"- machine: {m['cpus']} × {m['cpu_model']}, {m['ram_gb']} GB RAM, {m['platform']}; load average "
        f"{m['load_average']} at start, {m['load_average_end']} at end (cores shared with other work: "
        "latencies are upper bounds; each part below notes the load when it ended)",
        "", "## Targets", "",
        *table(["target", "goal", "measured", "met"],
               [[t["target"], t["goal"], t["measured"], _yes(t["met"])] for t in result["targets"]]),
    ]
    if "answers" in result:
        lines += _answers_markdown(result)
    lines += _retrieval_markdown(result) + _indexing_markdown(result)
    return "\n".join(lines) + "\n"


def _answers_markdown(result: dict) -> list[str]:
    a, cache = result["answers"], result["prompt_cache"]
    s, p = a["sentences"], a["passages"]
    lines = ["", f"## Answers: sentence evidence vs whole passages ({s['n']} gold questions, {s['answerable']} "
             f"answerable; {s['reached_llm']} / {p['reached_llm']} reached the LLM; load {s['load_average']})", ""]
    lines += table(["metric", "sentences (default)", "passages (baseline)", "ratio"],
                   [[name, v["sentences"], v["passages"], v["ratio"]]
                    for name, v in result["answers_compared"].items()])
    token_names = ["total_s_p50_reached_llm", "cached_tokens_p50", "prompt_tokens_p95", "generated_tokens_p50",
                   "generated_tokens_p95", "generated_tokens_max", "hit_max_tokens", "prompt_tokens_per_s_p50",
                   "generated_tokens_per_s_p50"]
    lines += ["", "### Tokens", ""]
    lines += table(["figure", "sentences", "passages"], [[name, s[name], p[name]] for name in token_names])
    settings = result["settings"]
    default = [f"evidence_sentences={settings['evidence_sentences']}, top_k={settings['top_k']} (default)",
               *(s[name] for name in VARIANT_FIGURES), s["latency"]["first_token_p50"], s["latency"]["total_p50"],
               s["load_average"]]
    lines += ["", "### Other settings for sentence evidence (same questions, asked after the comparison)", ""]
    lines += table(["settings", *VARIANT_FIGURES, "first token p50 (s)", "total p50 (s)", "load"],
                   [default, *([", ".join(f"{k}={v}" for k, v in row["settings"].items()),
                                *(row[name] for name in VARIANT_FIGURES), row["first_token_p50"], row["total_p50"],
                                row["load_average"]] for row in result["variants"])])
    lines += ["", f"### Prompt prefix in llama.cpp's KV cache ({cache['questions']} questions, load "
              f"{cache['load_average']})", ""]
    lines += table(["cache", "first token p50 (s)", "prompt tokens", "reused from cache", "read tokens/s"],
                   [[name, c["first_token_s_p50"], c["prompt_tokens_p50"], c["cached_tokens_p50"],
                     c["prompt_tokens_per_s_p50"]] for name, c in (("empty", cache["cold"]), ("warm", cache["warm"]))])
    lines += ["", "### n_threads and n_batch (empty cache, best of the repeats)", ""]
    lines += table(["n_threads", "n_batch", "prompt tokens", "first token (s)", "read tokens/s", "generated tokens/s",
                    "load"], [[r["n_threads"], r["n_batch"], r["prompt_tokens"], r["first_token_s"],
                               r["prompt_tokens_per_s"], r["generated_tokens_per_s"], r["load_average"]]
                              for r in result["llm_settings"]])
    mem, load = result["memory"], result["load"]
    lines += ["", "### Models and memory", "",
              f"- loading takes {load['embedder_s']} s (embedder) and {load['generator_s']} s (generator, "
              "file in the page cache): once per process, never per question",
              f"- a fresh process that loaded both models and answered one question: peak RSS {mem['peak_rss_mb']} MB, "
              f"RSS after {mem['rss_after_mb']} MB (load {mem['load_average']})"]
    return lines


def _retrieval_markdown(result: dict) -> list[str]:
    r = result["retrieval"]
    lines = ["", f"## Retrieval: real query embedding + hybrid search over {r['chunks']:,} synthetic chunks "
             f"({r['questions']} gold questions, one at a time)", ""]
    lines += table(["torch threads", "query embedding p50 / p95 (ms)",
                    f"hybrid search (BM25 + {r['index_type']} + RRF) p50 / p95 (ms)",
                    "both: rag.retrieve.search p50 / p95 (ms)", "load"],
                   [[f"{run['torch_threads']}" + (" (default)" if run["shipped"] else ""),
                     f"{run['embed_ms_p50']} / {run['embed_ms_p95']}",
                     f"{run['hybrid_search_ms_p50']} / {run['hybrid_search_ms_p95']}",
                     f"{run['retrieval_ms_p50']} / {run['retrieval_ms_p95']}", run["load_average"]]
                    for run in r["runs"]])
    lines += ["", f"## Dense index at scale (synthetic {DIMS}-d Gaussian mixture, rag.index.make_dense_index; "
              f"one-query searches for {DEPTH} candidates)", ""]
    lines += table(["chunks", "index", "build (s)", "search p50 / p95 (ms)", f"recall@{K}", "exact search p50 (ms)",
                    "disk (MB)", "index RSS (MB)", "peak RSS (MB)", "load"],
                   [[s["chunks"], s["index_type"], s["build_s"], f"{s['search_ms_p50']} / {s['search_ms_p95']}",
                     s[f"recall@{K}"], s["exact_search_ms_p50"], s["disk_mb"], s["index_rss_mb"], s["peak_rss_mb"],
                     s["load_average"]] for s in result["scale"]])
    for s in result["scale"]:
        if s["nprobe_sweep"]:
            lines += ["", f"### nprobe at {s['chunks']:,} chunks ({s['index_type']})", ""]
            lines += table(["nprobe", f"recall@{K}", "search p50 / p95 (ms)"],
                           [[f"**{row['nprobe']}**" if row["shipped"] else row["nprobe"], row[f"recall@{K}"],
                             f"{row['search_ms_p50']} / {row['search_ms_p95']}"] for row in s["nprobe_sweep"]])
    return lines


def _indexing_markdown(result: dict) -> list[str]:
    e, inc = result["embedding"], result["incremental"]
    return [
        "", f"## Indexing (real embedder; load {e['load_average']})", "",
        *table(["figure", "value"], [
            ["embedding throughput (chunks/s, sorted by length, batches of 16)", e["chunks_per_s"]],
            ["chunks embedded for it", e["chunks"]],
            ["chunks per seed article", e["chunks_per_article"]],
            ["projected embedding time for 10^5 articles (h)", e["projected_hours_for_1e5_articles"]],
            ["full build of the seeds: s / chunks embedded", f"{inc['full']['seconds']} / {inc['full']['embedded']}"],
            ["add one article, rebuild: s / chunks embedded (its chunks)",
             f"{inc['add_one']['seconds']} / {inc['add_one']['embedded']} ({inc['add_one']['new_article_chunks']})"],
            ["remove it, rebuild: s / chunks embedded",
             f"{inc['remove_one']['seconds']} / {inc['remove_one']['embedded']}"],
        ]),
    ]


def write_results(result: dict, out: Path) -> Path:
    """The report into out: bench.md, bench.json (without the per-question answers, which go to runs/), a line in
    history.jsonl with each target's measured figure; the report's path."""
    result = dict(result)
    rows = result.pop("records", None)
    headline = {t["target"]: t["measured"] for t in result["targets"]}
    return write_report(out, "bench", render_markdown(result), result, headline, result["revision"],
                        result["machine"], rows)


def bench_llm(args: argparse.Namespace, config: Config, embedder: Embedder, index: FaissStore, gold: list[dict],
              result: dict) -> TracedGenerator:
    """The LLM parts, into result: prompt cache, answers in both evidence modes, settings, memory."""
    inner, seconds = timed(make_generator, config)
    result["load"]["generator_s"] = round(seconds, 2)
    generator = TracedGenerator(inner)
    answerable = [q for q in gold if q["answerable"]][: 3 if args.quick else 5]
    assistant = Assistant(config, embedder, index, generator)
    result["prompt_cache"] = bench_prompt_cache(assistant, generator, answerable)
    questions = gold[: args.questions or (4 if args.quick else len(gold))]
    result["answers"], result["records"] = bench_answers(config, embedder, index, generator, questions)
    result["answers_compared"] = compare_modes(result["answers"])
    result["variants"] = bench_variants(config, embedder, index, generator, questions, VARIANTS[:1] if args.quick
                                        else VARIANTS)
    cpus = os.cpu_count() or 1
    settings = [(cpus, 512), (1, 512)] if args.quick else [(cpus, 512), (cpus, 256), (cpus, 64), (1, 512)]
    result["llm_settings"] = bench_llm_settings(config, embedder, index, answerable[0], settings,
                                                1 if args.quick else 2)
    result["memory"] = in_subprocess(memory_probe, config, answerable[0]["question"])
    return generator


def bench_scales(sizes: list[int], keep: int, work: Path, queries: int) -> list[dict]:
    """bench_scale for each size, each in a fresh process; only the index file of size `keep` is kept."""
    rows = []
    for n in sizes:
        print(f"scale: {n:,} vectors", file=sys.stderr)
        rows.append(in_subprocess(bench_scale, n, work, queries))
        if n != keep:
            (work / f"dense-{n}.faiss").unlink()
    return rows


def run(args: argparse.Namespace) -> dict:
    """Every part of the benchmark; the result as one dict."""
    started = time.perf_counter()
    result: dict = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv[1:], "machine": machine()}
    config = load_config(seeds_dir=HERE.parent / "seeds")
    gold = gold_questions(GOLD)
    max_scale = args.max_scale or (SCALES[0] if args.quick else SCALES[-1])
    sizes = sorted({*(n for n in SCALES if n <= max_scale), min(max_scale, RETRIEVAL_CHUNKS)})
    keep = min(max_scale, RETRIEVAL_CHUNKS)
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        work = Path(tmp)
        embedder, seconds = timed(make_embedder, config)
        result["load"] = {"embedder_s": round(seconds, 2)}
        print("incremental indexing", file=sys.stderr)
        result["incremental"] = bench_incremental(embedder, config, work)
        config = config.replace(index_dir=work / "index")
        index = make_store(config)
        info = run_info(Assistant(config, embedder, index), False, commit(HERE.parent))  # as the run starts
        # The answer latencies matter most and the load of a shared machine drifts: the LLM goes first.
        generator = None if args.skip_llm else bench_llm(args, config, embedder, index, gold, result)
        result["scale"] = bench_scales(sizes, keep, work, 50 if args.quick else 200)
        print("retrieval", file=sys.stderr)
        result["retrieval"] = retrieval_on_synthetic(embedder, config, work / f"dense-{keep}.faiss",
                                                     [q["question"] for q in gold])
        print("embedding throughput", file=sys.stderr)
        result["embedding"] = embedding_rate(embedder, config, 48 if args.quick else 200)
    del info["machine"]  # the machine as the run started is result["machine"]
    result |= {**info, "generator": generator.id if generator else None}
    result["machine"]["load_average_end"] = load_average()
    result["settings"] |= {"n_batch": config.n_batch, "evidence": config.evidence}
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["targets"] = targets(result)
    return result


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, run the benchmark, write and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that everything runs")
    parser.add_argument("--questions", type=int, help="gold questions to answer (default all; --quick 4)")
    parser.add_argument("--max-scale", type=int, help=f"largest synthetic index (default {SCALES[-1]:,}; "
                        f"--quick {SCALES[0]:,})")
    parser.add_argument("--skip-llm", action="store_true", help="no answers, prompt cache, LLM settings or memory")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default evals/results)")
    args = parser.parse_args(argv)
    result = run(args)
    path = write_results(result, args.out)
    print(render_markdown(result))
    print(f"results: {path} (and bench.json; the run's line in history.jsonl)")


if __name__ == "__main__":
    main()
