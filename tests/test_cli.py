"""The `rag` command: exit codes, error messages and the --json shape (with the fake assistant)."""

import io
import json
import sys

import pytest

from rag import cli
from rag.assistant import Assistant
from rag.config import FIELD_TYPES

VISIT_QUESTION = "متى زار بوتين قطر لأول مرة كرئيس؟"


pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture
def fake_load(monkeypatch, fake_assistant):
    """`Assistant.load` returns the fake assistant, whatever the config."""
    configs = []

    def load(config=None, generator=None):
        configs.append(config)
        return fake_assistant

    monkeypatch.setattr(Assistant, "load", staticmethod(load))
    return configs


def test_search_on_a_missing_index_names_rag_index(tmp_path, capsys):
    code = cli.main(["--index-dir", str(tmp_path / "nowhere"), "search", "بوتين"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("error: no index in")
    assert "`rag index`" in err
    assert "Traceback" not in err and out == ""


def test_ask_on_a_missing_index_via_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAG_INDEX_DIR", str(tmp_path / "elsewhere"))
    assert cli.main(["ask", VISIT_QUESTION]) == 2
    assert "elsewhere" in capsys.readouterr().err


def test_ask_an_empty_question_exits_2_with_a_message(fake_load, capsys):
    assert cli.main(["ask", ""]) == 2
    out, err = capsys.readouterr()
    assert err.strip() == "error: the question is empty: type a question about the articles"
    assert out == ""


def test_ask_json_shape(fake_load, tmp_path, capsys):
    code = cli.main(["--index-dir", str(tmp_path / "idx"), "--top-k", "2", "ask", "--json", VISIT_QUESTION])
    out, _ = capsys.readouterr()
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"question", "answer", "refused", "span", "quote", "kind", "confidence", "citations",
                         "passages", "timings"}
    assert data["question"] == VISIT_QUESTION
    assert data["answer"] == "في فبراير عام 2007 [1]."
    assert data["refused"] is False
    [citation] = data["citations"]
    assert {"n", "source", "title", "date", "start", "end", "text"} <= set(citation)
    assert (citation["n"], citation["source"], citation["date"]) == (1, "a_visit.txt", "2022-10-12")
    assert "فبراير عام 2007" in citation["text"]
    assert data["passages"] and data["passages"][0]["source"] == "a_visit.txt"
    assert all(isinstance(v, float) for v in data["timings"].values())
    assert (fake_load[0].index_dir.name, fake_load[0].top_k) == ("idx", 2)  # flags reach the config


def test_ask_plain_text_prints_answer_and_sources(fake_load, capsys):
    assert cli.main(["ask", "متى", "زار", "بوتين", "قطر", "لأول", "مرة", "كرئيس؟"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "في فبراير عام 2007 [1]."
    assert "[1] a_visit.txt — زيارة بوتين إلى الدوحة 2022-10-12" in out


def test_a_refusal_lists_the_closest_passages(fake_load, capsys):
    assert cli.main(["ask", "ما هي عاصمة اليابان؟"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("لا تتضمن المصادر")
    assert "closest passages" in out


def test_invalid_utf8_in_argv_is_handled(fake_load, capsys):
    broken = b"\xff\xfe".decode("utf-8", errors="surrogateescape")  # how Python passes undecodable argv bytes
    assert cli.main(["ask", "--json", broken + VISIT_QUESTION]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["question"] == VISIT_QUESTION
    assert cli.main(["ask", broken]) == 2
    assert "the question is empty" in capsys.readouterr().err


def test_question_from_stdin(fake_load, monkeypatch, capsys):
    stdin = io.TextIOWrapper(io.BytesIO(VISIT_QUESTION.encode() + b"\xff\n"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert cli.main(["ask", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["question"] == VISIT_QUESTION


def test_search_json(fake_load, capsys):
    assert cli.main(["search", "--json", "-k", "2", "بوغدانوف"]) == 0
    passages = json.loads(capsys.readouterr().out)
    assert len(passages) == 2
    assert passages[0]["source"] == "b_persian.txt"


def test_bad_setting_is_an_error_not_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv("RAG_TOP_K", "many")
    assert cli.main(["search", "بوتين"]) == 2
    assert capsys.readouterr().err.startswith("error: setting top_k")


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as exc:
        cli.main(["ask"])
    assert exc.value.code == 2


def test_every_setting_is_a_flag_with_a_help_line(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in FIELD_TYPES:
        assert f"--{name.replace('_', '-')}" in out
    assert "passages retrieved per question" in out and "--debug" in out


def test_eval_options_all_have_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    out = capsys.readouterr().out
    options = [line.split()[0] for line in out.splitlines() if line.strip().startswith("--")]
    assert options and all(len(line.split()) > 2 for line in out.splitlines() if line.strip().startswith("--"))


def test_flags_are_checked_like_every_other_setting(capsys):
    assert cli.main(["--top-k", "4.9", "search", "بوتين"]) == 2
    assert capsys.readouterr().err.strip() == "error: setting top_k must be a whole number, not '4.9'"
    assert cli.main(["--temperature", "nan", "search", "بوتين"]) == 2
    assert "temperature must be a finite number" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (PermissionError(13, "Permission denied", "/srv/articles"), "error: Permission denied: /srv/articles"),
        (OSError(28, "No space left on device"), "error: No space left on device"),
        (IsADirectoryError(21, "Is a directory", "seeds/x.txt"), "error: Is a directory: seeds/x.txt"),
    ],
)
def test_an_os_error_a_user_can_cause_is_one_line_and_exit_2(monkeypatch, capsys, error, line):
    def fail(*_args):
        raise error

    monkeypatch.setattr(cli, "parser", _parser_with(fail))
    assert cli.main(["index"]) == 2
    out, err = capsys.readouterr()
    assert err == line + "\n" and out == ""


def test_debug_prints_the_traceback_too(monkeypatch, capsys):
    def fail(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "parser", _parser_with(fail))
    assert cli.main(["--debug", "index"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("error: No space left on device\n")


def _parser_with(func):
    """cli.parser, except that every command runs func."""
    real = cli.parser

    def make():
        p = real()
        p.set_defaults(func=func)
        for action in p._subparsers._group_actions:
            for sub in action.choices.values():
                sub.set_defaults(func=func)
        return p

    return make


def test_control_characters_from_articles_never_reach_the_terminal(fake_load, fake_assistant, capsys, monkeypatch):
    hostile = "\x1b]0;pwned\x07\x1b[2J\u202eزيارة"
    answer_text = "في فبراير عام 2007 [1]."
    monkeypatch.setattr(fake_assistant.generator, "reply", f"{hostile} {answer_text}")
    chunk = fake_assistant.search(VISIT_QUESTION)[0].chunk
    monkeypatch.setattr(chunk, "title", hostile)
    assert cli.main(["search", VISIT_QUESTION]) == 0
    assert cli.main(["ask", VISIT_QUESTION]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "زيارة" in out


def test_safe_keeps_arabic_text_and_line_breaks():
    assert cli.safe("سطر\tأول\nسطر\u200f ثان") == "سطر\tأول\nسطر\u200f ثان"
    assert cli.safe("a\x00b\x1bc\x9bd\u2066e") == "abcde"


def test_rag_ui_on_a_port_in_use_says_so_before_loading_any_model(monkeypatch, capsys):
    import socket

    def never(*_args, **_kwargs):
        raise AssertionError("the models were loaded before the port was checked")

    monkeypatch.setattr(Assistant, "load", staticmethod(never))
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert cli.main(["--port", str(port), "ui"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port} (Address already in use)")
    assert err.count("\n") == 1
