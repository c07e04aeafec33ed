"""The chat UI in headless Chromium: streamed answers, source cards, right-to-left text, screenshots."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import ScriptedGenerator
from test_formats import print_to_pdf
from test_sources import MUSEUM, GatedEmbedder

import rag.ui
from rag.assistant import Answer, Assistant, Stage
from rag.benchmarks import free_port
from rag.cite import Citation
from rag.config import PACKAGE_ROOT
from rag.stores.faiss import FaissStore
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
        reading = reply.locator('.stage-reading')  # the model has begun: the step, not its draft
        reading.wait_for(timeout=FAKE_TIMEOUT)
        assert reading.inner_text().strip() == Stage("reading").label and "في" not in reply.inner_text()
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
            first_reply.locator('.stage-reading').wait_for(timeout=FAKE_TIMEOUT)
            second.goto(url)  # the page loads and takes a question while the model is busy
            second.get_by_role("button", name="من نقل رسالة بوتين الشفهية إلى أمير قطر؟").click()
            third.goto(url)
            send(third, QUESTION)  # the queue already holds the second user's question
            third.get_by_text("currently busy").wait_for(timeout=FAKE_TIMEOUT)
            assert third.locator("#question textarea").input_value() == QUESTION  # kept, to try again
            screenshot(third, "ui-busy.png")
            assert first_reply.locator('.stage-reading').count() == 1
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


# --- The sources tab ----------------------------------------------------------------------------------------------

MUSEUM_QUESTION = "متى افتتح متحف اللبان في صلالة؟"
EXPORTS_QUESTION = "كم بلغت صادرات البخور من ظفار؟"
EXPORTS = ["صادرات البخور من ظفار",  # printed to a PDF: the headline, then the paragraphs
           "بلغت صادرات البخور العماني من محافظة ظفار 900 طن في عام 2019، وفق تقرير غرفة التجارة والصناعة.",
           "ويُصدَّر معظم البخور إلى دول الخليج العربي والهند."]


def fake_reply(messages: list[dict]) -> str:
    """The fake model's reply to a question about the uploaded page or PDF."""
    prompt = messages[-1]["content"]
    return "900 طن." if "البخور" in prompt else "في 3 مارس 2024." if "اللبان" in prompt else "لا أعرف."


def new_articles(tmp_path: Path) -> list[Path]:
    """The files a journalist adds: a saved web page and a PDF printed from an Arabic page by Chromium."""
    (tmp_path / "files").mkdir()
    page = tmp_path / "files" / "متحف اللبان.html"
    page.write_text(MUSEUM, encoding="utf-8")
    pdf = tmp_path / "files" / "exports.pdf"
    pdf.write_bytes(print_to_pdf(tmp_path, EXPORTS, "--no-pdf-header-footer"))
    return [page, pdf]


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def upload(page, files: list[Path], timeout: int) -> None:
    """Drop files on the sources tab's upload box and wait until the index holds them."""
    open_tab(page, "المصادر")
    page.locator("#upload input[type=file]").set_input_files([str(f) for f in files])
    page.locator("#sources-status", has_text="اكتمل تحديث الفهرس").wait_for(timeout=timeout)


def delete(page, article_id: str, timeout: int) -> None:
    """Pick an article in the delete menu, delete it and wait for the index without it."""
    open_tab(page, "المصادر")
    page.locator("#delete-menu input").click()
    page.get_by_role("option", name=article_id).click()
    page.get_by_role("button", name="احذف المقال").click()
    page.locator("#sources-status", has_text="وحُذف 1").wait_for(timeout=timeout)


def cited_sources(reply) -> list[str]:
    """The file names on the source cards of a reply."""
    return [meta.inner_text().split("·")[-1].strip() for meta in reply.locator(".card .meta").all()]


def test_uploaded_files_are_listed_answered_from_and_deleted(fake_assistant, page, tmp_path):
    assistant = Assistant(fake_assistant.config, fake_assistant.embedder, fake_assistant.store,
                          ScriptedGenerator(fake_reply))
    files = new_articles(tmp_path)
    with served(assistant) as url:
        page.goto(url)
        upload(page, files, FAKE_TIMEOUT)
        status = page.locator("#sources-status").inner_text()
        assert "أُضيف متحف اللبان.html" in status and "أُضيف exports.pdf" in status
        listing = page.locator("#articles")
        assert "المقالات المفهرسة: 5 ·" in listing.inner_text()
        rows = listing.locator("tbody tr")
        assert rows.count() == 5 and "افتتاح متحف اللبان في صلالة" in rows.first.inner_text()  # the newest: first
        assert "صادرات البخور من ظفار" in listing.inner_text() and "PDF" in listing.inner_text()
        assert direction(listing.locator("table")) == "rtl"
        screenshot(page, "ui-sources.png")

        open_tab(page, "المحادثة")
        reply = finished(send(page, MUSEUM_QUESTION), FAKE_TIMEOUT)
        assert reply.locator(".answer").inner_text().startswith("في 3 مارس 2024 [1].")
        card = reply.locator(".card").first
        assert cited_sources(reply) == ["متحف اللبان.html"]
        assert card.locator(".quote").inner_text().startswith("افتتح متحف اللبان في مدينة صلالة العمانية في 3 مارس")
        assert card.locator(".quote mark").inner_text() == "3 مارس 2024"
        exports = finished(send(page, EXPORTS_QUESTION), FAKE_TIMEOUT)
        assert cited_sources(exports) == ["exports.pdf"]
        assert exports.locator(".card .quote mark").inner_text() == "900 طن"
        screenshot(page, "ui-sources-answers.png")

        delete(page, "exports.pdf", FAKE_TIMEOUT)
        assert "exports.pdf" not in page.locator("#articles").inner_text()
        assert "نُقل exports.pdf إلى .deleted/exports.pdf" in page.locator("#sources-status").inner_text()
        screenshot(page, "ui-sources-deleted.png")
        open_tab(page, "المحادثة")
        after = finished(send(page, EXPORTS_QUESTION), FAKE_TIMEOUT)
        assert after.locator(".answer").count() == 0 and "exports.pdf" not in cited_sources(after)
    assert (fake_assistant.config.seeds_dir / ".deleted" / "exports.pdf").is_file()


@pytest.mark.real
def test_real_models_answer_from_uploaded_files(real_assistant, page, tmp_path):
    seeds, index = tmp_path / "seeds", tmp_path / "index"
    shutil.copytree(real_assistant.config.seeds_dir, seeds)  # never upload into the repository's seeds
    shutil.copytree(real_assistant.config.index_dir, index)  # its index: only the uploads are embedded
    config = real_assistant.config.replace(seeds_dir=seeds, index_dir=index)
    assistant = Assistant(config, real_assistant.embedder, FaissStore(index), real_assistant.generator)
    with served(assistant) as url:
        page.goto(url)
        upload(page, new_articles(tmp_path), REAL_TIMEOUT)
        open_tab(page, "المحادثة")
        for question, source, expected in [(MUSEUM_QUESTION, "متحف اللبان.html", "2024"),
                                           (EXPORTS_QUESTION, "exports.pdf", "900")]:
            reply = finished(send(page, question), REAL_TIMEOUT)
            answer = reply.locator(".answer")
            assert answer.count() == 1, f"the real assistant did not answer: {reply.inner_text()}"
            assert expected in answer.inner_text() and source in cited_sources(reply)
            assert expected in reply.locator(".card mark").first.inner_text()
        screenshot(page, "ui-sources-real.png")


def test_the_chat_answers_while_uploads_are_indexed(fake_assistant, page, tmp_path):
    embedder = GatedEmbedder(free=1)  # the first batch of passages, then it waits
    assistant = Assistant(fake_assistant.config, embedder, fake_assistant.store, fake_assistant.generator)
    long = tmp_path / "festival.txt"
    long.write_text("مهرجان خريف صلالة\n" + "\n".join(f"في اليوم {i} من المهرجان قدّمت الفرقة رقم {i} عرضاً شعبياً "
                                                  "في ساحة المدينة أمام آلاف الزوار." for i in range(1, 41)))
    with served(assistant) as url:
        page.goto(url)
        open_tab(page, "المصادر")
        page.locator("#upload input[type=file]").set_input_files(str(long))
        building = page.locator("#sources-status .building")
        building.locator("progress[max]").wait_for(timeout=FAKE_TIMEOUT)
        assert "المقاطع: 16 من" in building.inner_text()
        screenshot(page, "ui-sources-building.png")
        open_tab(page, "المحادثة")
        reply = finished(send(page, QUESTION), FAKE_TIMEOUT)  # answered from the index being replaced
        assert "فبراير عام 2007" in reply.locator(".answer").inner_text()
        embedder.release.set()
        open_tab(page, "المصادر")
        page.locator("#sources-status", has_text="اكتمل تحديث الفهرس").wait_for(timeout=FAKE_TIMEOUT)
        assert "festival.txt" in page.locator("#articles").inner_text()
