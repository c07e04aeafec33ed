"""`rag serve`: the HTTP API served by uvicorn on a loopback port over the fake assistant, called with the real OpenAI
client and httpx: answers, citations, conversations, errors, keys, limits, concurrency; the deployment files."""

from __future__ import annotations

import configparser
import json
import logging
import re
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import openai
import pytest
from conftest import HashEmbedder, ScriptedGenerator, build_store

from rag import cli
from rag.assistant import Assistant
from rag.benchmarks import free_port, running
from rag.config import FIELD_TYPES, PACKAGE_ROOT, load_config
from rag.errors import RagError
from rag.serve import MAX_BODY, MODEL_ID, create_api, server

sys.path.insert(0, str(PACKAGE_ROOT / "evals"))
import bench_api  # noqa: E402

KEY = "test-key-1"
QUESTION = "متى زار بوتين قطر لأول مرة كرئيس؟"
AUTH = {"Authorization": f"Bearer {KEY}"}
CITIES = {"طنجة": 1961, "صفاقس": 1962, "حلب": 1963, "الموصل": 1964, "نابلس": 1965, "عدن": 1966, "تبوك": 1967,
          "الأقصر": 1968}


@contextmanager
def api(assistant: Assistant, **settings) -> Iterator[str]:
    """The API over the assistant, served by uvicorn in a thread on a free loopback port; its base URL."""
    config = assistant.config.replace(**{"api_keys": KEY, **settings})
    port = free_port()
    uvicorn_server = server(create_api(assistant, config), "127.0.0.1", port)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uvicorn_server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def url(fake_assistant) -> Iterator[str]:
    with api(fake_assistant) as base:
        yield base


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def one_line_error(response: httpx.Response, status: int, kind: str) -> str:
    """The error's message, after checking its status, its type and its one-line JSON shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and body["error"]["type"] == kind
    message = body["error"]["message"]
    assert "\n" not in message and "Traceback" not in response.text
    return message


def test_chat_completion_has_the_answer_its_sources_and_structured_citations(url):
    reply = client(url).chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}])
    content = reply.choices[0].message.content
    assert content.startswith("في فبراير عام 2007 [1].")
    assert content.endswith("\n\n[1] a_visit.txt — زيارة بوتين إلى الدوحة")
    (citation,) = reply.model_extra["citations"]
    assert citation["n"] == 1 and citation["source"] == "a_visit.txt" and "2007" in citation["text"]
    assert reply.choices[0].finish_reason == "stop" and reply.model == MODEL_ID


def test_streamed_chat_completion_sends_the_same_reply_in_chunks_then_citations(url):
    plain = client(url).chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}])
    chunks = list(client(url).chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == plain.choices[0].message.content
    assert len(chunks) > 4  # word by word
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["citations"] == plain.model_extra["citations"]


def test_streaming_ends_with_done(url):
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": QUESTION}], "stream": True}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_a_follow_up_gets_the_earlier_questions_as_history(fake_assistant, monkeypatch):
    asked = []
    ask = fake_assistant.ask
    monkeypatch.setattr(fake_assistant, "ask",
                        lambda q, history=(): asked.append((q, list(history))) or ask(q, history))
    messages = [{"role": "system", "content": "أجب بإيجاز"}, {"role": "user", "content": QUESTION},
                {"role": "assistant", "content": "في فبراير عام 2007 [1]."},
                {"role": "user", "content": [{"type": "text", "text": "وماذا بحث الجانبان؟"}]}]
    with api(fake_assistant) as url:
        client(url).chat.completions.create(model=MODEL_ID, messages=messages)
    assert asked == [("وماذا بحث الجانبان؟", [QUESTION])]


def test_models_lists_the_assistant(url):
    assert [m.id for m in client(url).models.list()] == [MODEL_ID]


def test_an_unknown_model_or_a_last_message_not_the_users_is_refused(url):
    with pytest.raises(openai.NotFoundError, match="unknown model"):
        client(url).chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": QUESTION}])
    with pytest.raises(openai.BadRequestError, match="last message"):
        client(url).chat.completions.create(model=MODEL_ID, messages=[{"role": "assistant", "content": "x"}])


def test_ask_returns_the_json_of_rag_ask(url, fake_assistant):
    response = httpx.post(f"{url}/v1/ask", json={"question": QUESTION}, headers=AUTH)
    assert response.status_code == 200
    got, expected = response.json(), fake_assistant.ask(QUESTION).to_dict()
    assert got.keys() == expected.keys()
    assert {k: v for k, v in got.items() if k != "timings"} == {k: v for k, v in expected.items() if k != "timings"}
    assert got["citations"][0]["start"] < got["citations"][0]["span_start"] < got["citations"][0]["end"]


def test_search_and_articles(url):
    passages = httpx.get(f"{url}/v1/search", params={"q": QUESTION, "k": 2}, headers=AUTH).json()
    assert len(passages) == 2 and passages[0]["source"] == "a_visit.txt"
    articles = httpx.get(f"{url}/v1/articles", headers=AUTH).json()
    assert articles[0] == {"id": "a_visit.txt", "title": "زيارة بوتين إلى الدوحة", "date": "2022-10-12", "chunks": 1}
    assert {a["id"] for a in articles} == {"a_visit.txt", "b_persian.txt", "c_relations.txt"}
    message = one_line_error(httpx.get(f"{url}/v1/search", params={"q": "x", "k": 0}, headers=AUTH), 422,
                             "invalid_request_error")
    assert "k" in message


def test_health_and_readiness(url, fake_assistant):
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
    unloaded = Assistant(fake_assistant.config, fake_assistant.embedder, fake_assistant.store)
    with api(unloaded) as other:
        assert "model is not loaded" in one_line_error(httpx.get(f"{other}/readyz"), 503, "unavailable")


def test_keys_are_checked(url):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
        response = httpx.get(f"{url}/v1/models", headers=headers)
        assert "API key" in one_line_error(response, 401, "authentication_error")
        assert response.headers["www-authenticate"] == "Bearer"
    with pytest.raises(openai.AuthenticationError):
        client(url, "wrong").models.list()
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_several_keys_and_no_key_on_loopback(fake_assistant):
    with api(fake_assistant, api_keys=f" other , {KEY},") as url:
        assert httpx.get(f"{url}/v1/models", headers=AUTH).status_code == 200
    with api(fake_assistant, api_auth="none") as url:
        assert httpx.get(f"{url}/v1/models").status_code == 200


def test_no_key_is_only_allowed_on_loopback(isolated):
    with pytest.raises(RagError, match="only allowed on a loopback host"):
        load_config(host="0.0.0.0", api_auth="none")
    assert load_config(host="::1", api_auth="none").api_auth == "none"


def test_serve_without_a_key_is_a_one_line_error(hash_cli, capsys):
    assert cli.main(["serve"]) == 2
    assert capsys.readouterr().err.startswith("error: rag serve needs an API key")


def test_a_body_over_the_limit_is_refused(url):
    big = {"question": "س" * MAX_BODY}
    assert "KB" in one_line_error(httpx.post(f"{url}/v1/ask", json=big, headers=AUTH), 413, "request_too_large")
    chunked = (b"x" * 8192 for _ in range(MAX_BODY // 8192 + 2))  # no Content-Length: counted as it arrives
    response = httpx.post(f"{url}/v1/ask", content=chunked, headers={**AUTH, "Content-Type": "application/json"})
    one_line_error(response, 413, "request_too_large")


def test_the_rate_limit_answers_429_with_retry_after(fake_assistant):
    with api(fake_assistant, api_rate=2) as url:
        assert [httpx.get(f"{url}/v1/models", headers=AUTH).status_code for _ in range(2)] == [200, 200]
        response = httpx.get(f"{url}/v1/models", headers=AUTH)
        assert "2 requests a minute" in one_line_error(response, 429, "rate_limit_error")
        assert 1 <= int(response.headers["retry-after"]) <= 30
        assert httpx.get(f"{url}/healthz").status_code == 200  # probes are not limited


def test_bad_requests_are_one_line_json_errors(url):
    post = lambda content: httpx.post(f"{url}/v1/ask", content=content, headers={**AUTH,  # noqa: E731
                                                                                "Content-Type": "application/json"})
    assert "not valid JSON" in one_line_error(post(b'{"question": '), 400, "invalid_request_error")
    assert "body.question" in one_line_error(post(b'{"q": 1}'), 422, "invalid_request_error")
    one_line_error(post(b"[]"), 422, "invalid_request_error")
    assert "empty" in one_line_error(post(b'{"question": "  "}'), 400, "invalid_request_error").lower()
    assert "/v1/nothing" in one_line_error(httpx.get(f"{url}/v1/nothing", headers=AUTH), 404, "not_found_error")
    one_line_error(httpx.get(f"{url}/v1/ask", headers=AUTH), 405, "method_not_allowed")


def test_failures_are_503_or_500_without_a_traceback(fake_assistant):
    def fail(error: Exception):
        def reply(messages):
            raise error
        return Assistant(fake_assistant.config, fake_assistant.embedder, fake_assistant.store,
                         ScriptedGenerator(reply))

    with api(fail(RagError("the model server at http://127.0.0.1:9/v1 did not answer"))) as url:
        response = httpx.post(f"{url}/v1/ask", json={"question": QUESTION}, headers=AUTH)
        assert "did not answer" in one_line_error(response, 503, "unavailable")
    with api(fail(RuntimeError("secret internals\nline two"))) as url:
        response = httpx.post(f"{url}/v1/ask", json={"question": QUESTION}, headers=AUTH)
        assert "secret" not in one_line_error(response, 500, "server_error")


def test_access_log_is_one_json_line_per_request_without_the_key(url, caplog):
    caplog.set_level(logging.INFO, logger="rag.serve.access")
    httpx.get(f"{url}/v1/models", headers=AUTH)
    httpx.get(f"{url}/v1/no%0Athing%1b[31m", headers=AUTH)
    deadline = time.monotonic() + 5
    while len(lines := [json.loads(r.getMessage()) for r in caplog.records if r.name == "rag.serve.access"]) < 2:
        assert time.monotonic() < deadline, lines
        time.sleep(0.02)  # a line is written once its reply has been sent
    assert [(line["method"], line["status"]) for line in lines] == [("GET", 200), ("GET", 404)]
    assert set(lines[0]) == {"time", "method", "path", "status", "ms", "client"}
    assert lines[0]["client"] == "127.0.0.1" and lines[0]["ms"] >= 0
    assert not re.search(r"[\x00-\x1f\x7f]", lines[1]["path"])
    assert KEY not in caplog.text


def test_health_answers_while_a_question_is_being_answered(fake_assistant):
    started, release = threading.Event(), threading.Event()

    def slow(messages):
        started.set()
        release.wait(timeout=20)
        return "في فبراير عام 2007 [1]."

    slow_assistant = Assistant(fake_assistant.config, fake_assistant.embedder, fake_assistant.store,
                               ScriptedGenerator(slow))
    with api(slow_assistant) as url, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{url}/v1/ask", json={"question": QUESTION}, headers=AUTH, timeout=30)
        assert started.wait(timeout=20)
        began = time.monotonic()
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert time.monotonic() - began < 2
        release.set()
        assert "2007" in pending.result(timeout=30).json()["answer"]


@pytest.fixture
def cities(tmp_path, fake_config) -> Assistant:
    """An assistant over eight articles, each dating one city's visit, whose model names the year of the city in the
    question, a little slowly so that answers overlap."""
    seeds = tmp_path / "cities"
    seeds.mkdir()
    for n, (city, year) in enumerate(CITIES.items()):
        (seeds / f"{n}.txt").write_text(f"زيارة {city}\nزار الوفد الرسمي مدينة {city} في عام {year} للمرة الأولى.\n",
                                        encoding="utf-8")

    def year_of_city(messages: list[dict]) -> str:
        time.sleep(0.05)
        city = next(c for c in CITIES if f"مدينة {c}؟" in messages[-1]["content"])
        return f"في عام {CITIES[city]} [1]."

    config = fake_config.replace(seeds_dir=seeds, index_dir=tmp_path / "cities-index")
    embedder = HashEmbedder()
    return Assistant(config, embedder, build_store(seeds, config.index_dir, embedder),
                     ScriptedGenerator(year_of_city))


def test_concurrent_questions_each_get_their_own_answer(cities):
    def ask(url: str, city: str) -> tuple[str, dict]:
        question = f"متى زار الوفد مدينة {city}؟"
        return question, httpx.post(f"{url}/v1/ask", json={"question": question}, headers=AUTH, timeout=60).json()

    with api(cities) as url, ThreadPoolExecutor(len(CITIES)) as pool:
        results = list(pool.map(lambda city: ask(url, city), CITIES))
    for (question, answer), (city, year) in zip(results, CITIES.items(), strict=True):
        assert answer["question"] == question and not answer["refused"], answer
        assert str(year) in answer["answer"] and city in answer["citations"][0]["text"]


@pytest.mark.parametrize("concurrency", [1, 3])
def test_at_most_concurrency_answers_are_made_at_once_the_others_wait(cities, monkeypatch, concurrency):
    inside, most, lock = [0], [0], threading.Lock()
    ask = cities.ask

    def counted(*args, **kwargs):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            time.sleep(0.3)  # long enough for the other requests to arrive, even on a loaded machine
            return ask(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(cities, "ask", counted)
    with api(cities, concurrency=concurrency) as url, ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda city: httpx.post(f"{url}/v1/ask", json={"question": f"متى زار الوفد مدينة "
                                                        f"{city}؟"}, headers=AUTH, timeout=60), list(CITIES)[:6]))
    assert all(r.status_code == 200 for r in replies) and most[0] == concurrency


def test_the_api_bench_measures_every_level_and_checks_each_answer(cities, tmp_path):
    questions = [f"متى زار الوفد مدينة {city}؟" for city in CITIES]
    with api(cities, api_rate=0) as url:
        levels = bench_api.measure(url, KEY, questions, clients=(1, 4), requests=4, limit=60)
    assert [level["clients"] for level in levels] == [1, 4]
    for level in levels:
        assert level["answered"] == 4 and level["failed"] == level["mixed"] == 0
        assert level["per_minute"] > 0 and level["p50"] <= level["p95"]
    report = bench_api.report(levels, url, "test machine")
    assert "| 4 |" in report and "answers per minute" in report


UNITS = PACKAGE_ROOT / "deploy"


def units() -> dict[str, configparser.ConfigParser]:
    parsed = {}
    for path in sorted(UNITS.glob("*.service")):
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str  # systemd keys are case-sensitive
        unit.read(path, encoding="utf-8")
        parsed[path.name] = unit
    return parsed


def test_the_deployment_units_run_commands_the_cli_has_on_matching_ports():
    found = units()
    assert set(found) == {"rag-serve.service", "rag-ui.service", "llama-server.service"}
    known = {f"--{name.replace('_', '-')}" for name in FIELD_TYPES} | {"--config", "--debug"}
    args = {}
    for name, command in (("rag-serve.service", "serve"), ("rag-ui.service", "ui")):
        words = shlex.split(found[name]["Service"]["ExecStart"])
        assert words[0].endswith("/rag")
        assert {w.split("=")[0] for w in words if w.startswith("--")} <= known, name  # no abbreviated flag either
        args[name] = cli.parser().parse_args(words[1:])  # exits on an unknown command or flag
        assert args[name].command == command
        assert "llama-server.service" in found[name]["Unit"]["After"].split()
    llama = shlex.split(found["llama-server.service"]["Service"]["ExecStart"])
    model_server = f"openai:http://127.0.0.1:{llama[llama.index('--port') + 1]}/v1"
    assert args["rag-serve.service"].generator == args["rag-ui.service"].generator == model_server
    assert args["rag-serve.service"].api_port != args["rag-ui.service"].port


@pytest.mark.real
def test_rag_serve_answers_through_the_openai_client(real_assistant, tmp_path):
    port = free_port()
    args = [sys.executable, "-m", "rag", "--seeds-dir", str(real_assistant.config.seeds_dir), "--index-dir",
            str(real_assistant.config.index_dir), "--api-port", str(port), "--api-keys", KEY, "serve"]
    with running(args, f"http://127.0.0.1:{port}/readyz", tmp_path / "serve.log", timeout=300):
        reply = client(f"http://127.0.0.1:{port}").with_options(timeout=300).chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}])
    assert "2007" in reply.choices[0].message.content
    assert any(c["source"] == "003_73b545dee77c06cc.txt" and c["supported"] for c in reply.model_extra["citations"])
