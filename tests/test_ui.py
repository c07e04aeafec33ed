"""The chat UI's handlers without a browser: streamed messages, linked citations, cards, escaping, errors."""

from __future__ import annotations

import logging
import time
import tomllib
from importlib import resources
from pathlib import Path

import gradio as gr
import pytest
from conftest import ScriptedGenerator, build_store

from rag import cli, ui
from rag.assistant import Answer, Assistant, Stage
from rag.cite import Citation
from rag.errors import RagError
from rag.models import MODELS
from rag.stores.faiss import FaissStore
from rag.ui import UNEXPECTED, Chat, answer_html, create_app, escape, in_context, model_choices

QUESTION = "متى زار بوتين قطر لأول مرة كرئيس؟"
MODEL = "qwen2.5-coder-1.5b"


def ask(chat: Chat, question: str, messages=(), questions=(), model: str = MODEL, top_k: int = 3):
    """Every (messages, questions, box) the handler yields."""
    return list(chat.respond(question, list(messages), list(questions), model, top_k, 0.0))


def html_of(message: dict) -> str:
    return message["content"]


def with_reply(assistant: Assistant, reply) -> Chat:
    """A chat over the fake corpus whose model gives another scripted reply."""
    return Chat(Assistant(assistant.config, assistant.embedder, assistant.store, ScriptedGenerator(reply)))


def test_answer_streams_then_shows_linked_markers_and_cards(fake_assistant):
    steps = ask(Chat(fake_assistant), QUESTION)
    first, *waiting, (messages, questions, box) = steps
    assert [m["role"] for m in first[0]] == ["user", "assistant"]
    assert "stage-searching" in html_of(first[0][1]) and Stage("searching").label in html_of(first[0][1])
    shown = [html_of(s[0][-1]) for s in waiting]
    assert any("stage-reading" in h for h in shown) and any("stage-checking" in h for h in shown)
    assert not any("فبراير" in h for h in shown)  # no draft of the reply before the answer
    assert questions == [QUESTION] and box == ""
    answer = html_of(messages[-1])
    assert 'class="msg answer" dir="rtl"' in answer
    assert '2007 <a class="cite" href="#src-0-1">[1]</a>.' in answer
    assert 'id="src-0-1"' in answer and "a_visit.txt" in answer and "2022-10-12" in answer
    assert "زيارة بوتين إلى الدوحة" in answer  # the article title
    assert ('<span class="quote">قام الرئيس الروسي فلاديمير بوتين بزيارة إلى الدوحة في <mark>فبراير عام 2007</mark>، '
            "وهي أول زيارة له إلى قطر كرئيس.</span>") in answer  # the sentence, and in it the words copied
    assert "غير مؤكد" not in answer


def test_user_bubble_direction_follows_its_language(fake_assistant):
    chat = Chat(fake_assistant)
    assert 'dir="rtl"' in html_of(ask(chat, QUESTION)[-1][0][0])
    assert 'dir="ltr"' in html_of(ask(chat, "When did Putin first visit Qatar?")[-1][0][0])


def test_unsupported_citation_is_marked(fake_assistant):
    text = fake_assistant.article("a_visit.txt").text

    def cite(n: int, sentence: str, supported: bool) -> Citation:
        start = text.index(sentence)
        return Citation(n, "a_visit.txt", "زيارة بوتين إلى الدوحة", "2022-10-12", start, start + len(sentence),
                        sentence, supported, 1.0 if supported else 0.5)

    citations = [cite(1, "قام الرئيس الروسي فلاديمير بوتين", True), cite(2, "وبحث الجانبان التعاون", False)]
    answer = Answer(QUESTION, "في فبراير عام 2007 [1]. وبحث الجانبان النفط [2].", citations, False, [])
    shown = answer_html(answer, fake_assistant, 0)
    assert '<a class="cite" href="#src-0-1">[1]</a>' in shown
    assert '<a class="cite unsupported" href="#src-0-2">[2]</a>' in shown
    assert '<div class="card unsupported" id="src-0-2"' in shown and '<div class="card" id="src-0-1"' in shown
    assert shown.count("غير مؤكد") == 1 and "<mark>وبحث الجانبان التعاون</mark>" in shown


def test_refusal_is_styled_apart_with_closest_passages(fake_assistant):
    messages, questions, _ = ask(Chat(fake_assistant), "ما عاصمة اليابان؟")[-1]
    refusal = html_of(messages[-1])
    assert refusal.startswith('<div class="refusal"')
    assert "لا تتضمن المصادر المتاحة إجابة عن هذا السؤال." in refusal
    assert "أقرب المقاطع" in refusal and 1 <= refusal.count('class="card"') <= 3
    assert 'id="near-0-1"' in refusal and "cite" not in refusal
    assert questions == ["ما عاصمة اليابان؟"]


def test_follow_up_sends_earlier_questions_as_history(fake_assistant):
    chat = Chat(fake_assistant)
    messages, questions, _ = ask(chat, QUESTION)[-1]
    messages, questions, _ = ask(chat, "ومتى حدث ذلك؟", messages, questions)[-1]
    assert questions == [QUESTION, "ومتى حدث ذلك؟"]
    assert len(messages) == 4 and 'href="#src-1-1"' in html_of(messages[-1])  # anchors unique per turn
    prompt = fake_assistant.generator.prompts[-1][-1]["content"]
    assert QUESTION in prompt and "ومتى حدث ذلك؟" in prompt


def test_corpus_model_and_user_text_are_escaped(fake_assistant, seeds):
    (seeds / "a_visit.txt").write_text(
        "زيارة <script>alert('t')</script> بوتين إلى الدوحة\n"
        "قام الرئيس الروسي فلاديمير بوتين <b>بزيارة</b> إلى الدوحة في فبراير عام 2007، وهي أول زيارة له إلى قطر كرئيس.",
        encoding="utf-8",
    )

    build_store(seeds, fake_assistant.config.index_dir, fake_assistant.embedder, 200, 20)
    hostile = Assistant(fake_assistant.config, fake_assistant.embedder, FaissStore(fake_assistant.config.index_dir),
                        ScriptedGenerator("<img src=x onerror=alert(1)> في فبراير عام 2007 [1]."))
    steps = ask(Chat(hostile), "<script>alert(1)</script> " + QUESTION)
    html = "".join(html_of(m) for messages, _, _ in steps for m in messages)
    assert "<script" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&#x27;t&#x27;)&lt;/script&gt;" in html  # the article title
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_of(steps[-1][0][0])  # the question


def test_rag_error_becomes_a_chat_message(fake_assistant):
    messages, questions, box = ask(Chat(fake_assistant), "x" * 1001)[-1]
    assert 'class="msg failed"' in html_of(messages[-1]) and "the limit is 1000" in html_of(messages[-1])
    assert questions == [] and box == ""


def test_unexpected_error_is_logged_not_shown(fake_assistant, caplog):
    def explode(messages):
        raise RuntimeError("secret internals")

    with caplog.at_level(logging.ERROR, logger="rag.ui"):
        messages, questions, _ = ask(with_reply(fake_assistant, explode), QUESTION)[-1]
    shown = html_of(messages[-1])
    assert UNEXPECTED in shown and "secret" not in shown and "Traceback" not in shown
    assert "secret internals" in caplog.text and questions == []


def test_missing_model_is_reported_in_the_chat(fake_assistant):
    messages, _, _ = ask(Chat(fake_assistant), QUESTION, model="qwen2.5-coder-0.5b")[-1]
    assert "rag models pull qwen2.5-coder-0.5b" in html_of(messages[-1])


def test_blank_question_changes_nothing(fake_assistant):
    assert ask(Chat(fake_assistant), "   ", [{"role": "user", "content": "x"}], ["x"]) == [
        ([{"role": "user", "content": "x"}], ["x"], "")
    ]


def test_clear_starts_over():
    assert Chat.clear() == ([], [], "")


def test_settings_apply_per_request_and_models_load_once(fake_assistant, monkeypatch):
    loaded = []

    class FakeLlama(ScriptedGenerator):
        @classmethod
        def from_config(cls, config, spec):
            loaded.append(Path(spec))
            return cls("في فبراير عام 2007 [1].")

    monkeypatch.setattr("rag.generators.llama.LlamaGenerator", FakeLlama)
    chat = Chat(fake_assistant)
    same = chat.assistant_for(MODEL, 2, 0.0)
    assert same.config.top_k == 2 and same.generator is fake_assistant.generator
    assert same.embedder is fake_assistant.embedder and same.store is fake_assistant.store
    small = chat.assistant_for("qwen2.5-coder-0.5b", 5, 0.7)
    again = chat.assistant_for("qwen2.5-coder-0.5b", 5, 0.0)
    assert loaded == [Path("qwen2.5-coder-0.5b")]
    assert small.config.generator == "qwen2.5-coder-0.5b" and small.config.top_k == 5
    assert small.config.temperature == 0.7 and again.config.temperature == 0.0
    assert small.generator is again.generator
    assert "2007" in html_of(ask(chat, QUESTION, model="qwen2.5-coder-0.5b")[-1][0][-1])


def test_context_window_is_cut_at_words():
    text = "كلمة " * 100 + "الجملة المقتبسة" + " نص" * 100
    start = text.index("الجملة")
    shown = in_context(text, start, start + len("الجملة المقتبسة"), width=20)
    assert shown.startswith("…كلمة") and shown.endswith("نص…")
    assert "<mark>الجملة المقتبسة</mark>" in shown
    assert in_context("أ <b> ب", 2, 5) == "أ <mark>&lt;b&gt;</mark> ب"
    lines = "بقية سطر سابق.\nسطر كامل " + "الجملة" + " تتمة.\nسطر تال طويل"
    start = lines.index("الجملة")
    assert in_context(lines, start, start + 6, width=14) == "سطر كامل <mark>الجملة</mark> تتمة."


def test_a_card_marks_the_copied_span_inside_its_sentence_or_the_whole_sentence_without_one(fake_assistant):
    text = fake_assistant.article("a_visit.txt").text
    sentence = "قام الرئيس الروسي فلاديمير بوتين بزيارة إلى الدوحة في فبراير عام 2007، وهي أول زيارة له إلى قطر كرئيس."
    start = text.index(sentence)
    span = text.index("فبراير عام 2007")

    def cited(span_start, span_end) -> str:
        c = Citation(1, "a_visit.txt", "زيارة بوتين إلى الدوحة", "2022-10-12", start, start + len(sentence), sentence,
                     True, 0.0, span_start, span_end)
        return answer_html(Answer(QUESTION, "فبراير عام 2007 [1].", [c], False, []), fake_assistant, 0)

    copied = cited(span, span + len("فبراير عام 2007"))
    assert copied.count("<mark>") == 1 and "في <mark>فبراير عام 2007</mark>، وهي" in copied
    assert '<span class="quote">قام الرئيس' in copied and "كرئيس.</span>" in copied
    assert "زيارة بوتين إلى الدوحة<br>" in copied  # the context around the sentence, unhighlighted
    for decided in (cited(None, None), cited(0, 5)):  # a yes/no answer's deciding sentence; a span outside it
        assert f"<mark>{sentence}</mark>" in decided and "quote" not in decided


def test_escape_keeps_one_line_break_per_run():
    assert escape("سطر <i>\n\n  تال") == "سطر &lt;i&gt;<br>تال"


def test_create_app_builds_the_app(fake_assistant):
    app = create_app(fake_assistant)
    assert isinstance(app, gr.Blocks)


def test_bad_auth_is_refused_before_any_model_loads(isolated, monkeypatch, capsys):
    def load(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(Assistant, "load", load)
    monkeypatch.setenv("RAG_AUTH", "nocolon")
    assert cli.main(["ui"]) == 2
    assert capsys.readouterr().err == "error: setting auth must be written user:password\n"


def test_the_model_menu_names_a_file_by_its_name_and_a_server_by_its_url():
    assert model_choices("openai:http://10.0.0.5:8080/v1")[0] == ("http://10.0.0.5:8080/v1",
                                                                  "openai:http://10.0.0.5:8080/v1")
    assert model_choices("/models/my.gguf")[0] == ("my.gguf", "/models/my.gguf")
    assert [name for _, name in model_choices("qwen2.5-coder-0.5b")] == ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]


def test_the_styles_and_words_are_package_data_and_the_models_come_from_the_registry():
    data = resources.files("rag.prompts")
    css, words = (data / "ui.css").read_text(encoding="utf-8"), tomllib.loads((data / "ui.toml").read_text("utf-8"))
    assert ui.load_css() == css and "#chat .card" in css
    assert words == ui.TEXT and words["chat"]["unexpected"] == UNEXPECTED and len(words["chat"]["examples"]) == 3
    generators = [name for name, spec in MODELS.items() if spec.kind == "generator"]
    assert set(words["models"]) <= set(generators)  # a label names a registered model, never a list of its own
    assert [name for _, name in model_choices(generators[0])] == generators


def test_the_warm_up_thread_is_joined_when_serving_fails(fake_assistant, monkeypatch):
    finished = []

    def warm_up():
        time.sleep(0.3)  # still decoding when the server fails to start
        finished.append(True)

    def launch(*_args, **_kwargs):
        raise RagError("cannot listen")

    monkeypatch.setattr(fake_assistant, "warm_up", warm_up)
    monkeypatch.setattr(Assistant, "load", lambda config: fake_assistant)
    monkeypatch.setattr(ui, "launch", launch)
    monkeypatch.setattr(ui, "check_port", lambda *_: None)
    with pytest.raises(RagError, match="cannot listen"):
        ui.serve(fake_assistant.config)
    assert finished  # never left running into the interpreter's exit, where llama.cpp would crash
