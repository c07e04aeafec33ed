"""Load test of the HTTP API (`rag serve`) on loopback: 1, 4 and 16 clients ask at once, each request its own gold
question; answers per minute, p50/p95 wait, and a check that nothing is lost or mixed up (every answer is its own
question's). Writes evals/results/api.md and api.json, and the run's line in history.jsonl (rag.report).

    .venv/bin/python evals/bench_api.py [--url http://127.0.0.1:8000 --key KEY] [--requests N] [--clients 1,4,16]

Without --url it starts `python -m rag serve` with the configured settings (run `make index` first) on a free loopback
port, without a rate limit. A server of your own needs api_rate = 0, or its 429s are counted as 'limited'.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import httpx

from rag.benchmarks import free_port, gold_questions, running
from rag.metrics import percentile
from rag.report import commit, machine, table, write_report

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GOLD = [HERE / "gold-dev.jsonl", HERE / "gold-test.jsonl"]
LIMIT = 900  # seconds one level may take: requests not begun by then are counted as 'skipped'
TIMEOUT = 600  # seconds a request waits for its answer
KINDS = ("answered", "mixed", "limited", "failed", "skipped")


def ask(http: httpx.Client, question: str, deadline: float) -> dict:
    """One question through /v1/ask: how it ended ('answered'; 'mixed': the answer of another question; 'limited':
    429; 'failed'; 'skipped': past the deadline) and how long it waited."""
    if time.monotonic() > deadline:
        return {"kind": "skipped", "wait": None}
    began = time.monotonic()
    try:
        response = http.post("/v1/ask", json={"question": question})
        if response.status_code == 429:
            kind = "limited"
        else:
            response.raise_for_status()
            kind = "answered" if response.json()["question"] == question else "mixed"
    except (httpx.HTTPError, ValueError, KeyError):
        kind = "failed"
    return {"kind": kind, "wait": time.monotonic() - began}


def measure(url: str, key: str, questions: list[str], clients: tuple[int, ...], requests: int,
            limit: float = LIMIT) -> list[dict]:
    """For each number of clients: `requests` questions (different ones, as far as there are) asked by that many
    clients at once, within `limit` seconds; what came back and how fast."""
    levels = []
    for n in clients:
        asked = [questions[i % len(questions)] for i in range(requests)]
        deadline = time.monotonic() + limit
        started = time.monotonic()
        with (httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT) as http,
              ThreadPoolExecutor(n) as pool):
            results = list(pool.map(ask, [http] * requests, asked, [deadline] * requests))
        seconds = time.monotonic() - started
        counts = {kind: sum(r["kind"] == kind for r in results) for kind in KINDS}
        waits = [r["wait"] for r in results if r["kind"] == "answered"]
        levels.append({"clients": n, "requests": requests, **counts, "seconds": round(seconds, 1),
                       "per_minute": round(counts["answered"] * 60 / seconds, 2),
                       "p50": percentile(waits, 50), "p95": percentile(waits, 95)})
    return levels


def report(levels: list[dict], url: str, where: str) -> str:
    """The Markdown report."""
    rows = [[lv["clients"], lv["requests"], *(lv[kind] for kind in KINDS), lv["per_minute"], lv["p50"], lv["p95"],
             lv["seconds"]] for lv in levels]
    header = ["clients", "requests", *KINDS, "answers per minute", "wait p50 (s)", "wait p95 (s)", "seconds"]
    return "\n".join([
        f"# HTTP API under load ({time.strftime('%Y-%m-%dT%H:%M:%S%z')})", "",
        f"- `evals/bench_api.py {' '.join(sys.argv[1:])}` against `{url}` (POST /v1/ask)",
        f"- machine: {where}",
        "- wait: from a request to its answer; mixed: the answer of another question; limited: 429; skipped: not "
        "asked within the time limit", "",
        *table(header, rows), "",
    ])


def main() -> None:
    """Measure every level against the given server, or one started here; write the report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="a running `rag serve` (default: start one)")
    p.add_argument("--key", default=os.environ.get("RAG_API_KEY", ""), help="its API key (or RAG_API_KEY)")
    p.add_argument("--requests", type=int, default=32, help="questions asked at each level")
    p.add_argument("--clients", default="1,4,16", help="comma-separated numbers of clients asking at once")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (default evals/results)")
    args = p.parse_args()
    clients = tuple(int(n) for n in args.clients.split(","))
    questions = [q["question"] for q in gold_questions(GOLD)]
    key = args.key or secrets.token_urlsafe(24)
    port = free_port()
    url = args.url or f"http://127.0.0.1:{port}"
    env = {**os.environ, "RAG_API_KEYS": key, "RAG_API_RATE": "0", "RAG_API_PORT": str(port)}  # not in `ps`
    log = Path(tempfile.gettempdir()) / f"rag-serve-{port}.log"
    started = nullcontext() if args.url else running([sys.executable, "-m", "rag", "serve"], f"{url}/readyz", log,
                                                     timeout=600, env=env, cwd=HERE.parent)
    with started:
        levels = measure(url, key, questions, clients, args.requests)
    info = machine()
    where = f"{info['cpus']} × {info['cpu_model']}, {info['ram_gb']} GB RAM, load average {info['load_average']}"
    text = report(levels, url, where)
    headline = {f"{lv['clients']} clients: answers per minute": lv["per_minute"] for lv in levels}
    write_report(args.out, "api", text, {"url": url, "machine": info, "levels": levels}, headline,
                 commit(HERE.parent), info)
    print(text)


if __name__ == "__main__":
    main()
