"""Twenty chat sessions at once against the served UI (fake assistant, loopback only, bounded in count and time):
each gets an answer or a clear "busy" message, the server stays up, its memory stays bounded."""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from rag.benchmarks import free_port, running

TESTS = Path(__file__).resolve().parent
SESSIONS = 20
LIMIT = 60  # seconds for the whole burst; the test stops by itself after that
TOKEN_DELAY = 0.05  # seconds per generated token: each answer holds the model for about a quarter second
MAX_RSS_GROWTH = 100 * 2**20
QUESTION = "متى زار بوتين قطر لأول مرة كرئيس؟"

# The UI as `rag ui` serves it (default host, queue and concurrency), over the fake corpus with a slow fake model.
SERVER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import ARTICLES, HashEmbedder, ScriptedGenerator, build_store
from rag.assistant import Assistant
from rag.config import Config
from rag.ui import create_app, launch

class SlowGenerator(ScriptedGenerator):
    def generate(self, messages, max_tokens, stop, temperature):
        for token in super().generate(messages, max_tokens, stop, temperature):
            time.sleep({delay})
            yield token

folder = Path(sys.argv[1])
seeds = folder / "seeds"
seeds.mkdir()
for name, text in ARTICLES.items():
    (seeds / name).write_text(text, encoding="utf-8")
config = Config(seeds_dir=seeds, index_dir=folder / "index", embedder=HashEmbedder.id, chunk_size=200,
                chunk_overlap=20, top_k=3, min_similarity=0.0, port=int(sys.argv[2]))
embedder = HashEmbedder()
store = build_store(seeds, config.index_dir, embedder)
assistant = Assistant(config, embedder, store, SlowGenerator("في فبراير عام 2007 [1]."))
launch(create_app(assistant, config), config)
"""


@pytest.fixture
def server(tmp_path, monkeypatch):
    """The UI served by a separate process; yields (url, psutil process). Stopped afterwards, whatever happens."""
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")  # gradio_client reports usage unless told not to
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    script = tmp_path / "server.py"
    script.write_text(SERVER.format(tests=str(TESTS), delay=TOKEN_DELAY), encoding="utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    url = f"http://127.0.0.1:{port}"
    with running([sys.executable, str(script), str(tmp_path), str(port)], url + "/config", tmp_path / "server.log",
                 env=env, cwd=tmp_path) as process:
        yield url, psutil.Process(process.pid)


def _ask(client, question: str = QUESTION, timeout: float = LIMIT) -> tuple[str, str]:
    """('answer', html) or ('busy', message) — anything else is returned as ('failed', what happened)."""
    from gradio_client.exceptions import AppError

    try:
        job = client.submit(question, [], "qwen2.5-coder-1.5b", 3, 0.0, api_name="/respond_3")
        messages, box = job.result(timeout=timeout)
    except Exception as e:  # sorted out below: busy, or a failure to report
        if "Queue is full" in str(e):
            return "busy", str(e)
        kind = "app error" if isinstance(e, AppError) else type(e).__name__
        return "failed", f"{kind}: {e}"
    html = messages[-1]["content"][0]["text"]
    if 'class="msg answer"' in html and "2007" in html and box == "":
        return "answer", html
    return "failed", html


def test_twenty_sessions_at_once_get_answers_or_a_busy_message(server):
    from gradio_client import Client

    url, process = server
    listening = {c.laddr.ip for c in process.net_connections() if c.status == psutil.CONN_LISTEN}
    assert listening == {"127.0.0.1"}, listening  # `rag ui` binds to loopback by default

    warm = Client(url, verbose=False)
    try:
        assert [_ask(warm)[0] for _ in range(3)] == ["answer"] * 3  # imports and caches settle before measuring
    finally:
        warm.close()
    rss_before = process.memory_info().rss

    start = threading.Barrier(SESSIONS)

    def session(_) -> tuple[str, str, float]:
        client = Client(url, verbose=False)  # one session each
        try:
            start.wait(timeout=30)  # then all ask at once
            began = time.monotonic()
            kind, detail = _ask(client)
            return kind, detail, time.monotonic() - began
        finally:
            client.close()

    began = time.monotonic()
    with ThreadPoolExecutor(SESSIONS) as pool:
        results = list(pool.map(session, range(SESSIONS), timeout=LIMIT + 30))
    elapsed = time.monotonic() - began

    kinds = [kind for kind, _, _ in results]
    summary = {kind: kinds.count(kind) for kind in sorted(set(kinds))}
    slowest = max(t for *_, t in results)
    print(f"\n{SESSIONS} sessions in {elapsed:.1f}s: {summary}; slowest answer {slowest:.1f}s")
    assert summary.get("failed", 0) == 0, [r for r in results if r[0] == "failed"]
    assert summary.get("answer", 0) >= 1 and sum(summary.values()) == SESSIONS
    for kind, detail, _ in results:
        if kind == "busy":
            assert "Queue is full" in detail and "try again" in detail
    assert slowest < LIMIT and elapsed < LIMIT + 30

    assert process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    after = Client(url, verbose=False)
    try:
        assert _ask(after)[0] == "answer"  # still serving after the burst
    finally:
        after.close()
    growth = process.memory_info().rss - rss_before
    print(f"server RSS {rss_before / 2**20:.0f} MiB before, grew {growth / 2**20:+.1f} MiB")
    assert growth < MAX_RSS_GROWTH
