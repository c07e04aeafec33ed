"""The chat UI in headless Chromium: streamed answers, source cards, right-to-left text, screenshots."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import ScriptedGenerator

import rag.ui
from rag.assistant import Answer, Assistant
from rag.cite import Citation
from rag.config import PACKAGE_ROOT
from rag.ui import create_app, launch

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
OUTPUT = PACKAGE_ROOT / "test-output"
QUESTION = "متى زار بوتين قطر لأول مرة كرئيس؟"
DOUBTFUL = "وبحث الجانبان التعاون في مجال الغاز الطبيعي."  # cited, unsupported, by the patched stream below
FAKE_TIMEOUT = 20_000  # ms
REAL_TIMEOUT = 120_000  # ms: loading the 1.5B model and answering on 2 CPU cores

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]


class GatedGenerator(ScriptedGenerator):
    """Streams the first word of its reply, then waits for `release` before the rest."""

    def __init__(self, reply: str):
        super().__init__(reply)
        self.release = threading.Event()

    def generate(self, messages, max_tokens, stop, temperature):
        for i, token in enumerate(super().generate(messages, max_tokens, stop, temperature)):
            if i == 1:
                self.release.wait(FAKE_TIMEOUT / 1000)
            yield token


def with_doubtful_sentence(stream):
    """Assistant.stream whose answers end with a sentence carrying an unsupported citation."""

    def doubtful_stream(self, question, history=()):
        for piece in stream(self, question, history):
            if isinstance(piece, Answer) and not piece.refused:
                article = self.article("a_visit.txt")
                start, n = article.text.index(DOUBTFUL), len(piece.citations) + 1
                extra = Citation(n, article.id, article.title, article.date, start, start + len(DOUBTFUL), DOUBTFUL,
                                 False, 0.5)
                piece = replace(piece, text=f"{piece.text} وناقشا النفط [{n}].", citations=[*piece.citations, extra])
            yield piece

    return doubtful_stream


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    yield page
    page.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(assistant: Assistant) -> Iterator[str]:
    """The app on a free loopback port, served by this process; yields its URL."""
    config = assistant.config.replace(host="127.0.0.1", port=free_port(), auth="")
    app = create_app(assistant, config)
    try:
        yield launch(app, config, prevent_thread_lock=True)
    finally:
        app.close()


def send(page, question: str):
    """Type a question and send it; returns the locator of the reply that will answer it."""
    replies = page.locator("[data-testid=bot]")
    reply = replies.nth(replies.count())
    page.fill("#question textarea", question)
    page.press("#question textarea", "Enter")
    return reply


def finished(reply, timeout: int):
    """Wait until a reply is final (answer, refusal or error); returns it."""
    reply.locator(".answer, .refusal, .failed").wait_for(timeout=timeout)
    return reply


def direction(locator) -> str:
    return locator.evaluate("el => getComputedStyle(el).direction")


def screenshot(page, name: str) -> None:
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=OUTPUT / name, full_page=True)


def test_answer_cards_and_directions_with_the_fake_model(fake_assistant, page, monkeypatch):
    monkeypatch.setattr(Assistant, "stream", with_doubtful_sentence(Assistant.stream))
    gated = GatedGenerator("في فبراير عام 2007 [1].")
    assistant = Assistant(fake_assistant.config, fake_assistant.embedder, fake_assistant.store, gated)
    with served(assistant) as url:
        page.goto(url)
        reply = send(page, QUESTION)
        streaming = reply.locator(".streaming")
        streaming.wait_for(timeout=FAKE_TIMEOUT)
        assert streaming.inner_text().strip() == "في"  # the first token, shown before the rest is written
        gated.release.set()
        answer = finished(reply, FAKE_TIMEOUT).locator(".answer")
        assert answer.inner_text().startswith("في فبراير عام 2007 [1].")
        cards = reply.locator(".card")
        assert cards.count() == 2
        assert "a_visit.txt" in cards.first.inner_text() and "2022-10-12" in cards.first.inner_text()
        assert "فبراير عام 2007" in cards.first.locator("mark").inner_text()
        assert reply.locator("#src-0-2 .badge").inner_text() == "غير مؤكد"
        assert page.evaluate("document.documentElement.dir") == "rtl"
        question = page.locator("[data-testid=user] .msg").first
        assert [direction(el) for el in (question, answer, cards.first, page.locator("#question textarea"))] == [
            "rtl"
        ] * 4
        screenshot(page, "ui-fake.png")

        reply.locator('a.cite[href="#src-0-2"]').click()
        assert reply.locator("#src-0-2").evaluate("el => el.matches(':target')")

        english = send(page, "When did Putin first visit Qatar?")
        finished(english, FAKE_TIMEOUT)
        assert direction(page.locator("[data-testid=user] .msg").last) == "ltr"
        screenshot(page, "ui-fake-followup.png")

        page.get_by_role("button", name="محادثة جديدة").click()
        page.locator("[data-testid=user]").first.wait_for(state="detached", timeout=FAKE_TIMEOUT)


def test_a_busy_model_does_not_block_other_users(fake_assistant, browser, monkeypatch):
    monkeypatch.setattr(rag.ui, "MAX_QUEUE", 1)
    gated = GatedGenerator("في فبراير عام 2007 [1].")
    assistant = Assistant(fake_assistant.config, fake_assistant.embedder, fake_assistant.store, gated)
    pages = [browser.new_page() for _ in range(3)]
    first, second, third = pages
    try:
        with served(assistant) as url:
            first.goto(url)
            first_reply = send(first, QUESTION)
            first_reply.locator(".streaming").wait_for(timeout=FAKE_TIMEOUT)
            second.goto(url)  # the page loads and takes a question while the model is busy
            second.get_by_role("button", name="من نقل رسالة بوتين الشفهية إلى أمير قطر؟").click()
            third.goto(url)
            send(third, QUESTION)  # the queue already holds the second user's question
            third.get_by_text("currently busy").wait_for(timeout=FAKE_TIMEOUT)
            assert third.locator("#question textarea").input_value() == QUESTION  # kept, to try again
            screenshot(third, "ui-busy.png")
            assert first_reply.locator(".streaming").count() == 1
            gated.release.set()
            finished(first_reply, FAKE_TIMEOUT)
            second_reply = finished(second.locator("[data-testid=bot]").first, FAKE_TIMEOUT)
            assert "من نقل رسالة بوتين" in second.locator("[data-testid=user]").first.inner_text()
            assert second_reply.locator(".failed").count() == 0
    finally:
        for page in pages:
            page.close()


@pytest.mark.real
def test_real_model_answers_in_the_browser(real_assistant, page):
    with served(real_assistant) as url:
        page.goto(url)
        reply = finished(send(page, QUESTION), REAL_TIMEOUT)
        screenshot(page, "ui-real.png")
        cards = reply.locator(".card")
        assert cards.count() >= 1 and direction(cards.first) == "rtl"
        answer = reply.locator(".answer")
        assert answer.count() == 1, f"the real assistant did not answer: {reply.inner_text()}"
        assert "2007" in answer.inner_text() and direction(answer) == "rtl"
        for link in answer.locator("a.cite").all():
            assert reply.locator(f"{link.get_attribute('href')} mark").count() == 1
