"""The OpenAI-compatible generator: against a real llama-cpp-python server with the 0.5B model (marked `server`),
and its one-line errors against a closed port and tiny loopback servers that fail."""

from __future__ import annotations

import http.server
import math
import re
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import HashEmbedder, build_store

from rag.assistant import Answer, Assistant
from rag.benchmarks import free_port, running
from rag.config import Config, load_config
from rag.errors import RagError
from rag.generators import make_generator
from rag.generators.base import Piece
from rag.generators.openai import gbnf_literal, pieces, server_message, span_grammar
from rag.models import resolve
from rag.normalize import is_arabic
from rag.reading.free import STOP

SPANS = [
    "قام الرئيس الروسي فلاديمير بوتين بزيارة إلى الدوحة في فبراير عام 2007، وهي أول زيارة له إلى قطر كرئيس.",
    "تعود العلاقات الدبلوماسية بين قطر وروسيا إلى الأول من أغسطس عام 1988.",
    'وقال الأمير: "نأمل أن تتطور العلاقات" بين البلدين \\ و«نعم»\u200f.',
]
QUESTION = "متى زار بوتين قطر لأول مرة كرئيس؟"


def ask(question: str, evidence: list[str] = SPANS) -> list[dict]:
    """Chat messages asking a question about some evidence."""
    passages = "\n".join(f"[{n}] {text}" for n, text in enumerate(evidence, 1))
    return [
        {"role": "system", "content": "أجب عن السؤال من المقاطع فقط، بإيجاز."},
        {"role": "user", "content": f"المقاطع:\n{passages}\n\nالسؤال: {question}"},
    ]


def is_run(text: str, span: str) -> bool:
    """True when text is consecutive whole words of span, spaced as in span."""
    words = span.split()
    n = len(text.split())
    return any(" ".join(words[i : i + n]) == text for i in range(len(words) - n + 1)) if n else False


# Without a server: the grammar, the pieces, the messages.


def test_gbnf_literal_escapes_quotes_backslashes_and_invisible_characters():
    assert gbnf_literal('قال: "نعم" \\') == '"قال: \\"نعم\\" \\\\"'
    assert gbnf_literal("سطر\nثان\u200fو\u200c") == '"سطر\\u000aثان\\u200fو\\u200c"'
    assert gbnf_literal("«وجه 😀»") == '"«وجه 😀»"'


def test_span_grammar_has_a_rule_per_word():
    grammar = span_grammar(["أ ب  ج", "د"])
    assert grammar.splitlines() == [
        "root ::= s0-0 | s0-1 | s0-2 | s1-0",
        's0-0 ::= "أ" (" " s0-1)?',
        's0-1 ::= "ب" ("  " s0-2)?',
        's0-2 ::= "ج"',
        's1-0 ::= "د"',
    ]
    assert span_grammar(["أ ب", " أ ب ", "د"], whole=True) == 'root ::= "أ ب" | "د"'
    assert span_grammar(["  ", "\x00"]) == span_grammar([], whole=True) == ""
    assert "\x00" not in span_grammar(["قبل \x00 بعد"])  # llama.cpp's grammar engine aborts on a NUL


def test_pieces_join_tokens_that_show_part_of_a_letter():
    # llama-cpp-python shows a token holding part of a letter's bytes as "": its text and log-probability go to
    # the next token that shows text.
    assert pieces("بوتين", [("ب", -1.0), ("", -2.0), ("", -3.0), ("ت", -4.0), ("ين", -5.0)]) == [
        Piece("ب", -1.0, 1), Piece("وت", -9.0, 3), Piece("ين", -5.0, 1)]
    assert pieces("بو", [("ب", -1.0), ("", -2.0), ("", -3.0)]) == [Piece("ب", -1.0, 1), Piece("و", -5.0, 2)]


def test_server_message_is_one_short_line_without_the_key():
    html = "<html><body><h1>Error</h1>\n<p>bad key sk-secret</p></body></html>"
    assert server_message(html, "sk-secret") == "Error bad key ***"
    assert server_message({"message": "The model `x` does not exist"}) == "The model `x` does not exist"
    assert len(server_message("x" * 1000)) <= 201


# Errors, against no server and against tiny loopback servers that fail.


def test_a_closed_port_is_a_one_line_error_naming_the_url_quickly():
    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.monotonic()
    with pytest.raises(RagError) as e:
        make_generator(Config(timeout=5), f"openai:{url}")
    assert time.monotonic() - started < 5 + 3
    assert url in str(e.value) and "\n" not in str(e.value) and "Traceback" not in str(e.value)


@pytest.mark.parametrize("spec", ["openai:ftp://127.0.0.1/v1", "openai:127.0.0.1:8080", "openai:", "openai:http://",
                                  "openai:http://127.0.0.1:port/v1"])
def test_a_url_that_is_not_http_is_refused(spec):
    with pytest.raises(RagError, match="http"):
        make_generator(Config(), spec)


class Failing(http.server.BaseHTTPRequestHandler):
    """Answers every request as its server's `mode` says: 500, garbage, silence, or models but a bad chat."""

    def do_GET(self):
        self.reply()

    def do_POST(self):
        self.reply()

    def reply(self):
        mode = self.server.mode
        if mode == "silent":
            time.sleep(4)
        elif mode == "500":
            self.send_error(500, f"broken, your key was {self.headers.get('Authorization')}")
        elif self.path.endswith("/models") and mode != "garbage":
            self.send(b'{"object": "list", "data": [{"id": "m"}]}', "application/json")
        elif mode == "chat-500":
            self.send_error(500, "out of memory")
        else:
            self.send(b"hello, I am not an OpenAI server", "text/plain")

    def send(self, body: bytes, kind: str):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def failing() -> Iterator[http.server.ThreadingHTTPServer]:
    """A loopback HTTP server that answers as Failing does (set .mode); its URL is .url."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    server.daemon_threads = True
    server.mode = "500"
    server.url = f"http://127.0.0.1:{server.server_port}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _error(call) -> str:
    with pytest.raises(RagError) as e:
        call()
    message = str(e.value)
    assert "\n" not in message and "Traceback" not in message and "sk-secret" not in message
    return message


@pytest.mark.parametrize("mode", ["500", "garbage"])
def test_a_server_that_fails_is_a_one_line_error(failing, mode):
    failing.mode = mode
    message = _error(lambda: make_generator(Config(api_key="sk-secret", timeout=5), f"openai:{failing.url}"))
    assert failing.url in message
    assert ("HTTP 500" in message and "broken" in message) if mode == "500" else "not an OpenAI" in message


@pytest.mark.parametrize("mode", ["chat-500", "chat-garbage"])
def test_a_chat_that_fails_is_a_one_line_error(failing, mode):
    failing.mode = mode
    generator = make_generator(Config(timeout=5), f"openai:{failing.url}")
    message = _error(lambda: list(generator.generate(ask(QUESTION), 16, STOP, 0.0)))
    assert failing.url in message
    assert "out of memory" in message if mode == "chat-500" else "sent no answer" in message


def test_a_server_that_does_not_answer_in_time_is_a_one_line_error(failing):
    failing.mode = "silent"
    started = time.monotonic()
    message = _error(lambda: make_generator(Config(timeout=1), f"openai:{failing.url}"))
    assert failing.url in message and "within 1 s" in message
    assert time.monotonic() - started < 2 * 1 + 3  # one retry


# Against a real llama-cpp-python server.


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> Iterator[str]:
    """`python -m llama_cpp.server` with the 0.5B model on a free loopback port; its /v1 URL."""
    model = resolve("qwen2.5-coder-0.5b", load_config().models_dir, "generator")
    port = free_port()
    args = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--n_ctx", "2048",
            "--interrupt_requests", "False", "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with running(args, f"http://127.0.0.1:{port}/v1/models", log, timeout=120):
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="session")
def generator(llama_server: str):
    return make_generator(Config(timeout=60), f"openai:{llama_server}")


@pytest.mark.server
def test_streams_an_answer_to_an_arabic_question(generator):
    parts = list(generator.generate(ask(QUESTION), 32, STOP, 0.0))
    assert len(parts) > 1 and all(isinstance(p, str) for p in parts)
    assert is_arabic("".join(parts)) or "2007" in "".join(parts)


@pytest.mark.server
def test_greedy_answers_are_the_same_every_time(generator):
    first, second = ("".join(generator.generate(ask("ماذا قال الأمير عن العلاقات؟"), 24, STOP, 0.0)) for _ in range(2))
    assert first and first == second


@pytest.mark.server
def test_two_streams_at_once_both_finish(generator):
    questions = ["ماذا قال الأمير عن العلاقات؟", "متى بدأت العلاقات الدبلوماسية بين قطر وروسيا؟"]
    alone = ["".join(generator.generate(ask(q), 24, STOP, 0.0)) for q in questions]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda q: "".join(generator.generate(ask(q), 24, STOP, 0.0)), questions))
    assert all(alone) and together == alone  # nobody cut off: each answer is whole


@pytest.mark.server
def test_the_server_can_extract_and_choose(generator):
    assert generator.features == {"extract", "choose"}


@pytest.mark.server
def test_extract_copies_a_run_of_words_of_one_span(generator):
    replies = [list(generator.extract(ask(q), SPANS, 12)) for q in (QUESTION, "اكتب قصيدة عن البحر.")]
    for reply in replies:
        text = "".join(p.text for p in reply)
        assert any(is_run(text, span) for span in SPANS), text
        assert all(p.logprob is not None and math.isfinite(p.logprob) for p in reply)


@pytest.mark.server
def test_extract_whole_copies_exactly_one_span(generator):
    text = "".join(p.text for p in generator.extract(ask(QUESTION), SPANS, 96, whole=True))
    assert text in [s.strip() for s in SPANS]


@pytest.mark.server
@pytest.mark.parametrize("whole", [False, True])
def test_extract_from_one_word_gives_that_word(generator, whole):
    assert "".join(p.text for p in generator.extract(ask("اكتب قصيدة عن البحر."), ["بوتين"], 8, whole)) == "بوتين"


@pytest.mark.server
def test_extract_survives_characters_llama_cpp_rejects(generator):
    text = "".join(p.text for p in generator.extract(ask(QUESTION), ["قبل \x00 بعد"], 8, whole=True))
    assert text == "قبل  بعد"  # the NUL is left out of the grammar rather than crash the server


@pytest.mark.server
def test_choose_scores_yes_and_no(generator):
    scores = generator.choose(ask("هل الدوحة عاصمة قطر؟ أجب بنعم أو لا فقط.", ["الدوحة هي عاصمة قطر."]),
                              ["نعم", "لا", "زرافة"])
    assert all(math.isfinite(v) and v <= 0 for v in scores.values()), scores
    assert scores["نعم"] > scores["لا"] > scores["زرافة"]  # زرافة is outside the top 20: pushed there by a bias


@pytest.mark.server
def test_an_unknown_model_name_is_a_one_line_error(llama_server):
    message = _error(lambda: make_generator(Config(generator_model="gpt-9"), f"openai:{llama_server}"))
    assert llama_server in message and "gpt-9" in message and re.search(r"qwen2\.5-coder-0\.5b", message)


@pytest.mark.server
def test_a_url_without_v1_gets_a_hint(llama_server):
    message = _error(lambda: make_generator(Config(), f"openai:{llama_server.removesuffix('/v1')}"))
    assert "HTTP 404" in message and "end in /v1" in message


@pytest.mark.server
def test_the_assistant_answers_through_the_server(fake_config, llama_server):
    config = fake_config.replace(generator=f"openai:{llama_server}", max_tokens=32)
    assistant = Assistant(config, HashEmbedder(), build_store(config.seeds_dir, config.index_dir))
    *stages, answer = assistant.stream(QUESTION)
    assert isinstance(answer, Answer) and answer.raw and [s.name for s in stages][-1] == "checking"
    assert assistant.generator.id.endswith(llama_server)
