"""A generator on an OpenAI-compatible server (llama-server, llama-cpp-python's server, vLLM) that many users share.

`extract` copies spans with a GBNF grammar where the server takes one (llama.cpp's servers) and `choose` reads the
first token's log-probabilities where the server returns them; both are probed once (see `features`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import httpx

from rag.config import Config
from rag.errors import RagError
from rag.generators.base import Piece

NO_KEY = "no-key"  # the client insists on a key; servers started without one ignore it
TOP_LOGPROBS = 20  # the most OpenAI's API returns
PUSH = 100.0  # logit bias that makes an option's first token the sampled one, so that its log-probability is shown
PROBE = [{"role": "user", "content": "Say hello."}]
PROBE_ANSWER = "42"  # what a grammar forces the probe's reply to be; no model answers it unprompted
MESSAGE_CHARS = 200  # of a server's error message shown to the user
_SPACE = re.compile(r"\s+")
_TAG = re.compile(r"<[^>]+>")


def gbnf_literal(text: str) -> str:
    """text as a GBNF string literal: quotes and backslashes escaped, unprintable characters (newlines, bidi marks)
    as \\u escapes; Arabic letters stay as they are (GBNF reads UTF-8)."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c.isprintable():
            out.append(c)
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


def span_grammar(spans: list[str], whole: bool = False) -> str:
    """A GBNF grammar whose language is any run of consecutive whole words of one span (or, whole, one span
    exactly), words and the spacing between them as in the span; "" when no span has a word.

    Compact: rule sI-J is "word J of span I, optionally followed by its spacing and rule sI-(J+1)", so the rules
    grow with the number of words, not with the number of runs; the root picks the word a run starts with.
    """
    # Without NULs, which abort llama.cpp's grammar engine (and the server with it).
    spans = [s for s in dict.fromkeys(s.replace("\x00", "").strip() for s in spans) if s]
    if whole:
        return f"root ::= {' | '.join(gbnf_literal(s) for s in spans)}" if spans else ""
    starts, rules = [], []
    for i, span in enumerate(spans):
        words = list(re.finditer(r"\S+", span))
        for j, word in enumerate(words):
            name = f"s{i}-{j}"
            starts.append(name)
            rule = gbnf_literal(word.group())
            if j + 1 < len(words):
                rule += f" ({gbnf_literal(span[word.end() : words[j + 1].start()])} s{i}-{j + 1})?"
            rules.append(f"{name} ::= {rule}")
    return "\n".join([f"root ::= {' | '.join(starts)}", *rules]) if starts else ""


def server_message(body: object, secret: str = "") -> str:
    """A server's error body as one short line: its message, without markup or the API key."""
    if isinstance(body, dict):
        body = body.get("message") or body.get("detail") or body
    text = _SPACE.sub(" ", _TAG.sub(" ", str(body))).strip()
    if secret:
        text = text.replace(secret, "***")
    return text[:MESSAGE_CHARS] + ("…" if len(text) > MESSAGE_CHARS else "")


def top_logprobs(reply: Any) -> dict[str, float]:
    """{token: log-probability} of the first token of a chat completion: the top list and the sampled token."""
    content = reply.choices[0].logprobs.content if reply.choices and reply.choices[0].logprobs else None
    if not content:
        return {}
    first = content[0]
    return {**{t.token: t.logprob for t in first.top_logprobs or []}, first.token: first.logprob}


def pieces(text: str, tokens: list[tuple[str, float]]) -> list[Piece]:
    """The reply text cut into its tokens, each with its log-probability. A server may show a token that holds
    only part of a letter's bytes as "" (llama-cpp-python does): such tokens join the next token that shows text."""
    out, start, logprob, count = [], 0, 0.0, 0
    for token, token_logprob in tokens:
        logprob, count = logprob + token_logprob, count + 1
        at = text.find(token, start) if token else -1
        if at >= 0:
            out.append(Piece(text[start : at + len(token)], logprob, count))
            start, logprob, count = at + len(token), 0.0, 0
    if start < len(text):  # letters whose tokens showed no text at the end
        out.append(Piece(text[start:], logprob, count))
    return out


class OpenAIGenerator:
    """The answer model on a server spoken to through the OpenAI chat API; one client, shared by all threads."""

    def __init__(self, url: str, model: str = "", api_key: str = "", timeout: float = 120.0):
        try:
            import openai
        except ImportError as e:
            raise RagError("the openai package is not installed: run `pip install openai` (or `pip install -e "
                           "'.[server]'`)") from e
        self._openai = openai
        self.url = url.rstrip("/")
        self.root = self.url.removesuffix("/v1")  # the tokenize endpoints are outside the OpenAI API
        self.api_key = api_key
        self.timeout = timeout
        self.client = openai.OpenAI(base_url=self.url, api_key=api_key or NO_KEY, timeout=timeout, max_retries=1)
        self.model = self._pick_model(model)
        self.id = f"{self.model}@{self.url}"
        self._features: frozenset[str] | None = None
        self._tokens: dict[str, tuple[int, str] | None] = {}  # option -> (id, text) of its first token

    @classmethod
    def from_config(cls, config: Config, spec: str) -> OpenAIGenerator:
        """The server at spec, e.g. http://127.0.0.1:8080/v1, asked for config.generator_model."""
        parsed = urlparse(spec)
        try:
            valid = parsed.scheme in ("http", "https") and bool(parsed.hostname) and (parsed.port or 0) >= 0
        except ValueError:  # a port that is not a number
            valid = False
        if not valid:
            raise RagError(f"generator openai:{spec} needs the server's http(s) URL, e.g. "
                           "openai:http://127.0.0.1:8080/v1")
        return cls(spec, config.generator_model, config.api_key, config.timeout)

    @property
    def features(self) -> frozenset[str]:
        """What the server can do: "extract" where it takes GBNF grammars, "choose" where it returns top
        log-probabilities; asked once, with two tiny requests."""
        if self._features is None:
            forced = self._accepts(max_tokens=4, extra_body={"grammar": f'root ::= "{PROBE_ANSWER}"'})
            scored = self._accepts(max_tokens=1, logprobs=True, top_logprobs=2)
            features = set()
            if forced and forced.choices and forced.choices[0].message.content == PROBE_ANSWER:
                features.add("extract")
            if scored and top_logprobs(scored):
                features.add("choose")
            self._features = frozenset(features)
        return self._features

    def prefill(self, messages: list[dict]) -> None:
        """Have the server read the prompt (and write one token): its prompt cache keeps it for the next request."""
        for _ in self.generate(messages, 1, ["\n"], 0.0):
            pass

    def generate(self, messages: list[dict], max_tokens: int, stop: list[str], temperature: float) -> Iterator[str]:
        """Stream the chat reply; temperature 0 is greedy. A reply that ends without a finish reason was cut off
        (llama_cpp.server does that to answer another request unless told not to)."""
        chunks = 0
        finished = False
        with self._errors(), self._create(messages, temperature, max_tokens=max_tokens, stop=stop,
                                          stream=True) as stream:
            for chunk in stream:
                chunks += 1
                for choice in chunk.choices[:1]:
                    finished = finished or choice.finish_reason is not None
                    if choice.delta and choice.delta.content:
                        yield choice.delta.content
        if not chunks:
            raise RagError(f"the answer server at {self.url} sent no answer: is it an OpenAI-compatible server?")
        if not finished:
            raise RagError(f"the answer server at {self.url} stopped before the answer was finished (start "
                           "llama_cpp.server with --interrupt_requests False)")

    def extract(self, messages: list[dict], spans: list[str], max_tokens: int, whole: bool = False) -> Iterator[Piece]:
        """A greedy reply held to words of the spans by a grammar; where the server takes no grammar, a free reply
        (the caller maps it onto the evidence). One piece per token, with its log-probability where the server
        gives them. Not streamed: llama-cpp-python's server drops the bytes of a letter split across tokens from
        streamed pieces when it sends log-probabilities."""
        grammar = span_grammar(spans, whole)
        if not grammar:
            return
        features = self.features
        options: dict[str, Any] = {"logprobs": True, "top_logprobs": 1} if "choose" in features else {}
        if "extract" in features:
            options["extra_body"] = {"grammar": grammar}
        reply = self._complete(messages, max_tokens, **options)
        if not reply.choices or not reply.choices[0].message.content:
            return
        choice = reply.choices[0]
        if choice.logprobs and choice.logprobs.content:
            yield from pieces(choice.message.content, [(t.token, t.logprob) for t in choice.logprobs.content])
        else:
            yield Piece(choice.message.content)

    def choose(self, messages: list[dict], options: list[str]) -> dict[str, float]:
        """The log-probability of each option's first token as the reply's first token: read from the top 20;
        an option outside them is pushed to be the sampled token by a logit bias (-inf where that cannot be done)."""
        top = top_logprobs(self._complete(messages, max_tokens=1, logprobs=True, top_logprobs=TOP_LOGPROBS))
        if not top:  # a server that gives no log-probabilities
            return dict.fromkeys(options, -math.inf)
        floor = min(top.values())
        scores = {}
        for option in options:
            token = self._first_token(option)
            if token is None:  # no tokenizer: the longest token of the top list that starts the option
                known = [t for t in top if t and option.startswith(t)]
                scores[option] = top[max(known, key=len)] if known else -math.inf
            elif token[1] in top:
                scores[option] = top[token[1]]
            else:
                pushed = top_logprobs(self._complete(messages, max_tokens=1, logprobs=True, top_logprobs=1,
                                                     logit_bias={str(token[0]): PUSH}))
                value = pushed.get(token[1], -math.inf)
                # Outside the top 20, it scores below them; unless the server shows log-probabilities after the bias.
                scores[option] = value if value <= floor else -math.inf
        return scores

    def _pick_model(self, wanted: str) -> str:
        """The model to ask for: the wanted one if the server serves it, else the server's first model."""
        with self._errors():
            reply = self.client.get("/models", cast_to=httpx.Response)
        try:
            served = [m["id"] for m in reply.json()["data"]]
        except (ValueError, KeyError, TypeError) as e:
            raise RagError(f"the answer server at {self.url} is not an OpenAI-compatible server: its /models "
                           f"answer is {server_message(reply.text, self.api_key)!r}") from e
        if wanted and wanted not in served:
            raise RagError(f"the answer server at {self.url} has no model {wanted!r} (setting generator_model); it "
                           f"serves: {', '.join(served) or 'nothing'}")
        if not (wanted or served):
            raise RagError(f"the answer server at {self.url} lists no model: set generator_model")
        return wanted or served[0]

    def _first_token(self, text: str) -> tuple[int, str] | None:
        """(id, text) of the first token of text by the server's tokenizer; None where the server has no tokenize
        endpoint (llama-cpp-python: /extras/tokenize, llama-server: /tokenize)."""
        if text not in self._tokens:
            self._tokens[text] = self._tokenize_first(text)
        return self._tokens[text]

    def _tokenize_first(self, text: str) -> tuple[int, str] | None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

        def post(path: str, body: dict) -> Any:
            reply = httpx.post(self.root + path, json=body, headers=headers, timeout=self.timeout)
            return reply.json() if reply.status_code == 200 else None

        try:
            with self._errors():
                tokens = post("/tokenize", {"content": text, "with_pieces": True})  # llama-server
                if tokens:
                    return next(((t["id"], t["piece"]) for t in tokens["tokens"] if t["piece"]), None)
                tokens = post("/extras/tokenize", {"input": text})  # llama-cpp-python
                for token in tokens["tokens"] if tokens else []:  # a BOS token some models add has no text
                    piece = post("/extras/detokenize", {"tokens": [token]})["text"]
                    if piece:
                        return token, piece
        except (ValueError, KeyError, TypeError):  # an endpoint of that name that answers something else
            pass
        return None

    def _accepts(self, **options: Any) -> Any:
        """The reply to a tiny greedy request with these options, or None when the server refuses them."""
        with self._errors():
            try:
                return self._create(PROBE, temperature=0.0, **options)
            except self._openai.APIStatusError:
                return None

    def _complete(self, messages: list[dict], max_tokens: int, **options: Any) -> Any:
        """A greedy chat completion, not streamed."""
        with self._errors():
            return self._create(messages, max_tokens=max_tokens, temperature=0.0, **options)

    def _create(self, messages: list[dict], temperature: float, **options: Any) -> Any:
        """The client's chat completion call, sampling as the in-process model does: no repeat penalty (llama-cpp-
        python's server adds one by default) and, at temperature 0, top_k 1 so that llama.cpp servers are greedy."""
        options["extra_body"] = {**options.get("extra_body", {}), "repeat_penalty": 1.0}
        if temperature == 0:
            options["extra_body"]["top_k"] = 1
        return self.client.chat.completions.create(model=self.model, messages=messages, temperature=temperature,
                                                   **options)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn the client's errors into one-line RagErrors that name the server."""
        openai = self._openai
        try:
            yield
        except (openai.APITimeoutError, httpx.TimeoutException) as e:
            raise RagError(f"the answer server at {self.url} did not answer within {self.timeout:g} s (setting "
                           "timeout)") from e
        except (openai.APIConnectionError, httpx.TransportError) as e:
            reason = server_message(e.__cause__ or e, self.api_key)
            raise RagError(f"cannot reach the answer server at {self.url} ({reason}): start it, or fix the generator "
                           "setting") from e
        except openai.APIStatusError as e:
            hint = " (does the URL end in /v1?)" if e.status_code == 404 and self.root == self.url else ""
            raise RagError(f"the answer server at {self.url} answered HTTP {e.status_code}: "
                           f"{server_message(e.body, self.api_key)}{hint}") from e
        except (openai.APIError, json.JSONDecodeError) as e:
            raise RagError(f"the answer server at {self.url} sent a reply that is not OpenAI-compatible "
                           f"({server_message(e, self.api_key)})") from e

