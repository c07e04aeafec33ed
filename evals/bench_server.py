"""Load benchmark of the answer model on a server: N chat sessions ask at once through the Gradio UI (`rag ui`, a
separate process), the UI answering with the model in-process, then through an OpenAI-compatible server; and the
cost of the server's span-copying grammar. Writes evals/results/server.md and server.json, the run's line in
history.jsonl and each session's record in runs/ (rag.report).

    .venv/bin/python evals/bench_server.py [--quick] [--sessions N] [--model NAME] [--server URL] [--parallel N]

Without --server it starts `python -m llama_cpp.server` (one answer at a time); give the URL of a
`llama-server -np N` to measure parallel slots (and --parallel N, the answers the UI asks for at once).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path

from rag.benchmarks import free_port, gold_questions, running
from rag.chunk import sentence_spans
from rag.config import Config, load_config
from rag.generators import make_generator
from rag.generators.openai import span_grammar
from rag.metrics import percentile
from rag.models import resolve
from rag.report import commit, load_average, machine, table, write_report

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GOLD = [HERE / "gold-dev.jsonl", HERE / "gold-test.jsonl"]
LIMIT = 900  # seconds a session waits for its answer
EVIDENCE_SENTENCES = 8  # for the grammar figures: sentences of about 30 words, as in passages mode
REPEATS = 3


def ask(url: str, question: str, model: str, barrier: threading.Barrier) -> dict:
    """One chat session: wait for the others, ask, and say what came back ('answer', 'refusal', 'busy' or
    'failed') and after how long."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    try:
        barrier.wait(timeout=120)
        began = time.monotonic()
        try:
            messages, _ = client.submit(question, [], model, 4, 0.0, api_name="/respond_3").result(timeout=LIMIT)
            html = messages[-1]["content"][0]["text"]
            kind = ("answer" if 'class="msg answer"' in html else "refusal" if 'class="refusal"' in html
                    else "failed")
            detail = "" if kind != "failed" else html[-300:]
        except Exception as e:  # the queue is full, or the session failed: both are counted
            kind, detail = ("busy" if "Queue is full" in str(e) else "failed"), f"{type(e).__name__}: {e}"[:300]
        return {"question": question, "kind": kind, "seconds": round(time.monotonic() - began, 2), "detail": detail}
    finally:
        client.close()


def burst(url: str, questions: list[str], model: str) -> dict:
    """Every question asked at once, one session each; the figures of the burst."""
    barrier = threading.Barrier(len(questions))
    began = time.monotonic()
    with ThreadPoolExecutor(len(questions)) as pool:
        sessions = list(pool.map(lambda q: ask(url, q, model, barrier), questions))
    elapsed = time.monotonic() - began
    done = [s["seconds"] for s in sessions if s["kind"] in ("answer", "refusal")]
    counts = {kind: sum(s["kind"] == kind for s in sessions) for kind in ("answer", "refusal", "busy", "failed")}
    return {
        "sessions": len(sessions), **counts, "everyone_answered": len(done) == len(sessions),
        "seconds": round(elapsed, 1), "answers_per_minute": round(60 * len(done) / elapsed, 2),
        "wait_p50_s": percentile(done, 50), "wait_p95_s": percentile(done, 95), "wait_max_s": max(done, default=None),
        "load_average": load_average(), "records": sessions,
    }


@contextmanager
def ui(config: Config, generator: str, concurrency: int, work: Path) -> Iterator[str]:
    """`rag ui` in its own process with this generator and concurrency, warmed up with one question; its URL."""
    port = free_port()
    args = [sys.executable, "-m", "rag", "--seeds-dir", str(config.seeds_dir), "--index-dir", str(config.index_dir),
            "--generator", generator, "--port", str(port), "--concurrency", str(concurrency), "ui"]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}
    with running(args, url + "/config", work / f"ui-{port}.log", timeout=300, env=env, cwd=HERE.parent):
        warm = ask(url, "متى زار بوتين قطر لأول مرة كرئيس؟", generator, threading.Barrier(1))
        if warm["kind"] not in ("answer", "refusal"):
            raise RuntimeError(f"the UI did not answer a first question: {warm['detail']}")
        yield url


@contextmanager
def llama_cpp_server(model: Path, config: Config, work: Path) -> Iterator[str]:
    """`python -m llama_cpp.server` with the model on a free loopback port; its /v1 URL."""
    port = free_port()
    args = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--n_ctx", str(config.n_ctx),
            "--n_threads", str(config.n_threads), "--n_threads_batch", str(config.n_threads_batch),
            "--interrupt_requests", "False", "--host", "127.0.0.1", "--port", str(port)]
    with running(args, f"http://127.0.0.1:{port}/v1/models", work / "llama-server.log", timeout=300):
        yield f"http://127.0.0.1:{port}/v1"


def evidence(count: int = EVIDENCE_SENTENCES) -> list[str]:
    """Sentences of 25–35 words from the seed articles, as evidence a reader copies from."""
    found = []
    for path in sorted((HERE.parent / "seeds").glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        found += [" ".join(text[s:e].split()) for s, e in sentence_spans(text) if 25 <= len(text[s:e].split()) <= 35]
    return found[:count]


def timed_reply(pieces: Iterator) -> tuple[float, float, int]:
    """(seconds to the first piece, seconds in all, pieces) of a reply."""
    began, first, count = time.perf_counter(), None, 0
    for _ in pieces:
        first = first or time.perf_counter() - began
        count += 1
    return round(first or 0.0, 3), round(time.perf_counter() - began, 3), count


def bench_grammar(config: Config, url: str) -> dict:
    """Size of the span grammar over 8 evidence sentences, and a 16-token reply's time with it and without."""
    generator = make_generator(config, f"openai:{url}")
    spans = evidence()
    grammar = span_grammar(spans)
    passages = "\n".join(f"[{n}] {s}" for n, s in enumerate(spans, 1))
    messages = [{"role": "user", "content": f"المقاطع:\n{passages}\n\nالسؤال: ماذا قال إيفانوف عن الغاز؟"}]
    for _ in generator.generate(messages, 1, [], 0.0):  # the prompt into the server's cache: replies alone are timed
        pass
    calls = {"free": lambda: generator.generate(messages, 16, [], 0.0),
             "grammar": lambda: generator.extract(messages, spans, 16),
             "grammar, whole spans": lambda: generator.extract(messages, spans, 16, whole=True)}
    rows = {name: [timed_reply(call()) for _ in range(REPEATS)] for name, call in calls.items()}
    return {
        "features": sorted(generator.features), "spans": len(spans), "words": sum(len(s.split()) for s in spans),
        "grammar_chars": len(grammar), "grammar_bytes": len(grammar.encode()), "grammar_rules": grammar.count("::="),
        "replies": {name: {"first_s": percentile([r[0] for r in rs], 50), "total_s": percentile([r[1] for r in rs], 50),
                           "pieces": rs[0][2]} for name, rs in rows.items()},
        "note": "extract is not streamed (see rag/generators/openai.py): its first piece comes with the whole reply",
        "load_average": load_average(),
    }


def run(args: argparse.Namespace) -> dict:
    """Index the seeds, then the burst with the in-process model and with the server; the result as one dict."""
    started = time.perf_counter()
    result: dict = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv[1:],
                    "revision": commit(HERE.parent), "machine": machine()}
    gold = [q["question"] for q in gold_questions(GOLD) if q["answerable"]]
    questions = [gold[i % len(gold)] for i in range(args.sessions)]
    with tempfile.TemporaryDirectory(prefix="rag-bench-server-") as tmp:
        work = Path(tmp)
        config = load_config(seeds_dir=HERE.parent / "seeds", index_dir=work / "index", generator=args.model)
        subprocess.run([sys.executable, "-m", "rag", "--seeds-dir", str(config.seeds_dir), "--index-dir",
                        str(config.index_dir), "index"], check=True, cwd=HERE.parent)
        print(f"in-process {args.model}: {args.sessions} sessions", file=sys.stderr)
        with ui(config, args.model, 1, work) as url:
            result["in_process"] = {"generator": args.model, "ui_concurrency": 1,
                                    **burst(url, questions, args.model)}
        server = nullcontext(args.server) if args.server else llama_cpp_server(
            resolve(args.model, config.models_dir, "generator"), config, work)
        with server as server_url:
            generator = f"openai:{server_url}"
            print(f"{generator}: {args.sessions} sessions", file=sys.stderr)
            with ui(config, generator, args.parallel, work) as url:
                result["server"] = {"generator": generator, "started": "given" if args.server else
                                    "python -m llama_cpp.server --interrupt_requests False",
                                    "ui_concurrency": args.parallel, **burst(url, questions, generator)}
            result["grammar"] = bench_grammar(config, server_url)
    result["model"] = args.model
    result["machine"]["load_average_end"] = load_average()
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def render_markdown(result: dict) -> str:
    """The report: the two bursts side by side, then the grammar's figures."""
    modes = {"in-process model": result["in_process"], "server": result["server"]}
    figures = ["sessions", "answer", "refusal", "busy", "failed", "everyone_answered", "answers_per_minute",
               "wait_p50_s", "wait_p95_s", "wait_max_s", "seconds", "ui_concurrency", "load_average"]
    g = result["grammar"]
    m = result["machine"]
    return "\n".join([
        f"# Answer model on a server: {result['server']['sessions']} sessions at once "
        f"({result['created']})", "",
        f"- `evals/bench_server.py {' '.join(result['argv'])}`, {result['seconds']} s; model `{result['model']}`; "
        f"server `{result['server']['generator']}` ({result['server']['started']})",
        f"- machine: {m['cpus']} × {m['cpu_model']}, {m['ram_gb']} GB RAM; load average {m['load_average']} "
        f"at start, {m['load_average_end']} at end (shared cores: latencies are upper bounds)",
        "- wait: from a session's question to its finished answer (or refusal); busy: the UI's queue was full",
        "", *table(["figure", *modes], [[f, *(mode[f] for mode in modes.values())] for f in figures]),
        "", f"## Span-copying grammar ({g['spans']} evidence sentences, {g['words']} words; server features: "
        f"{', '.join(g['features']) or 'none'})", "",
        f"{g['grammar_rules']} rules, {g['grammar_chars']:,} characters ({g['grammar_bytes']:,} bytes). Median of "
        f"{REPEATS} replies of at most 16 tokens, prompt already cached; {g['note']}.", "",
        *table(["reply", "first piece (s)", "whole reply (s)", "pieces"],
               [[name, r["first_s"], r["total_s"], r["pieces"]] for name, r in g["replies"].items()]),
        "",
    ])


def write_results(result: dict, out: Path) -> Path:
    """The report into out: server.md, server.json (without the sessions' records, which go to runs/) and a line in
    history.jsonl; the report's path."""
    result = {**result, **{mode: dict(result[mode]) for mode in ("in_process", "server")}}
    rows = [{"mode": mode, **r} for mode in ("in_process", "server") for r in result[mode].pop("records")]
    headline = {f"{mode}: answers per minute": result[mode]["answers_per_minute"] for mode in ("in_process", "server")}
    return write_report(out, "server", render_markdown(result), result, headline, result["revision"],
                        result["machine"], rows)


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, run the benchmark, write and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 sessions with the 0.5B model, to check it runs")
    parser.add_argument("--sessions", type=int, help="chat sessions asking at once (default 20; --quick 3)")
    parser.add_argument("--model", help="registered model or .gguf file (default qwen2.5-coder-1.5b; --quick 0.5b)")
    parser.add_argument("--server", help="the /v1 URL of a running server (default: start llama_cpp.server)")
    parser.add_argument("--parallel", type=int, default=4, help="answers the UI asks the server for at once "
                        "(its parallel slots; default 4)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default evals/results)")
    args = parser.parse_args(argv)
    args.sessions = args.sessions or (3 if args.quick else 20)
    args.model = args.model or ("qwen2.5-coder-0.5b" if args.quick else "qwen2.5-coder-1.5b")
    result = run(args)
    path = write_results(result, args.out)
    print(render_markdown(result))
    print(f"results: {path} (and server.json; the run's line in history.jsonl)")


if __name__ == "__main__":
    main()
