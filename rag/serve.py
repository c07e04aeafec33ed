"""`rag serve`: the assistant as an HTTP API (FastAPI + uvicorn): its own JSON endpoints and OpenAI-compatible chat
completions, behind bearer keys, a body size limit and a per-client rate limit, with one JSON access log line per
request."""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http import HTTPStatus

from rag.assistant import Answer, Assistant, check_question
from rag.config import Config, check_port
from rag.errors import RagError, require
from rag.library import sorted_articles
from rag.terminal import safe

for _module in ("fastapi", "uvicorn"):  # a missing extra is named before any model is loaded
    require(_module, "rag serve", "pip install -e '.[server]'")
import uvicorn  # noqa: E402
from fastapi import Depends, FastAPI, HTTPException, Query, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse, StreamingResponse  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

log = logging.getLogger(__name__)
access_log = logging.getLogger("rag.serve.access")

MODEL_ID = "arabic-rag"
MAX_BODY = 64 * 1024  # bytes of a request body: a question and a long conversation fit many times over
MAX_K = 50  # passages one search may return
MAX_HISTORY = 50  # earlier questions of a conversation
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "method_not_allowed", 413: "request_too_large", 422: "invalid_request_error",
               429: "rate_limit_error", 500: "server_error", 503: "unavailable"}


class AskRequest(BaseModel):
    """The body of POST /v1/ask."""

    question: str
    history: list[str] = Field(default_factory=list, max_length=MAX_HISTORY)  # earlier questions, oldest first


class Message(BaseModel):
    """One message of a chat: its text, or a list of parts of which the text ones count."""

    role: str
    content: str | list[dict] | None = None

    def text(self) -> str:
        """The message's text."""
        if isinstance(self.content, list):
            return " ".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    """The body of POST /v1/chat/completions; other OpenAI fields (temperature, max_tokens…) are accepted and ignored:
    the answer is the one `rag ask` gives."""

    model: str = MODEL_ID
    messages: list[Message] = Field(min_length=1, max_length=2 * MAX_HISTORY + 2)
    stream: bool = False


def one_line(text: object) -> str:
    """Text as one line without control characters, for error messages and log fields."""
    return " ".join(safe(text).split())


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one shape of every error: {"error": {"message": one line, "type": …}} with its status code."""
    body = {"error": {"message": one_line(message), "type": ERROR_TYPES.get(status, "error")}}
    return JSONResponse(body, status, headers=headers)


def reply_text(answer: Answer) -> str:
    """The chat reply: the answer with its [n] markers, then one line per citation, [n] source — title."""
    sources = "\n".join(f"[{c.n}] {c.source} — {c.title}" for c in answer.citations)
    return f"{answer.text}\n\n{sources}" if sources else answer.text


def completion(answer: Answer) -> dict:
    """The answer as an OpenAI chat completion, with its structured citations in the extra field "citations"."""
    message = {"role": "assistant", "content": reply_text(answer)}
    return {**_envelope("chat.completion"), "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "citations": [c.to_dict() for c in answer.citations], "refused": answer.refused}


def completion_events(answer: Answer) -> Iterator[str]:
    """The answer as the server-sent events of a streamed chat completion: the reply a word at a time, then a last
    chunk carrying the citations, then [DONE]. The answer is final: no draft is streamed that might be withdrawn."""
    envelope = _envelope("chat.completion.chunk")

    def event(delta: dict, finish: str | None = None, **extra) -> str:
        chunk = {**envelope, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    for word in re.findall(r"\s*\S+", reply_text(answer)):  # each word with the spaces or line breaks before it
        yield event({"content": word})
    yield event({}, "stop", citations=[c.to_dict() for c in answer.citations], refused=answer.refused)
    yield "data: [DONE]\n\n"


def _envelope(kind: str) -> dict:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": MODEL_ID}


def conversation(messages: list[Message]) -> tuple[str, list[str]]:
    """(question, history) of a chat: the last message is the user's question, the earlier user messages are the
    questions asked before it, as the chat UI passes them on."""
    if messages[-1].role != "user":
        raise HTTPException(400, "the last message must be the user's question (role 'user')")
    return messages[-1].text(), [m.text() for m in messages[:-1] if m.role == "user"]


def api_keys(config: Config) -> list[str]:
    """The keys of the api_keys setting."""
    return [key.strip() for key in config.api_keys.split(",") if key.strip()]


def not_ready(assistant: Assistant) -> list[str]:
    """What keeps the API from answering: a store out of reach, an empty index, a model not loaded."""
    missing = []
    try:
        if assistant.store.count() == 0:
            missing.append("the index holds no passages: run `rag index`")
    except Exception as e:  # noqa: BLE001  whatever the store's failure, readiness reports it
        missing.append(f"the store {assistant.store.where} cannot be read ({e})")
    if not assistant.loaded:
        missing.append("the answer model is not loaded")
    return missing


class Gate:
    """Who may call /v1: the holder of a key of api_keys (compared in constant time), or anyone with api_auth = none
    (loopback hosts only); each key or client address spends from a token bucket refilled at api_rate a minute.
    Buckets are never forgotten: there is one per key, or per loopback address."""

    def __init__(self, config: Config):
        self.keys = [key.encode() for key in api_keys(config)]
        self.open = config.api_auth == "none"
        self.rate = config.api_rate
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when counted)
        self.lock = threading.Lock()

    async def __call__(self, request: Request) -> None:
        self.spend(self.client(request))

    def client(self, request: Request) -> str:
        """The caller's name for the rate limit (its key's number, never the key); 401 without a valid key."""
        if self.open:
            return request.client.host if request.client else "unknown"
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Every key is compared, and each comparison takes the same time: the reply time tells nothing of the keys.
        matches = [hmac.compare_digest(given.strip().encode(), key) for key in self.keys]
        if scheme.lower() != "bearer" or not any(matches):
            raise HTTPException(401, "a valid API key is needed: send the header 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})
        return f"key {matches.index(True)}"

    def spend(self, client: str) -> None:
        """Take a token from the client's bucket; 429 with Retry-After when it is empty."""
        if not self.rate:
            return
        per_second = self.rate / 60
        with self.lock:
            now = time.monotonic()
            tokens, then = self.buckets.get(client, (self.rate, now))
            tokens = min(self.rate, tokens + (now - then) * per_second)
            if tokens < 1:
                wait = math.ceil((1 - tokens) / per_second)
                raise HTTPException(429, f"more than {self.rate} requests a minute: retry in {wait} s",
                                    headers={"Retry-After": str(wait)})
            self.buckets[client] = (tokens - 1, now)


class BodyLimit:
    """Refuses a request body over MAX_BODY bytes with 413: at once by its Content-Length, or once that many bytes of
    a body sent without one have arrived."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > MAX_BODY:
            return await error(413, too_large())(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY:
                raise HTTPException(413, too_large())
            return message

        await self.app(scope, counted, send)


def too_large() -> str:
    """The message of a 413."""
    return f"the request body is over {MAX_BODY // 1024} KB"


class AccessLog:
    """One JSON line per request: time, method, path, status, ms, client; never a header, key or query string."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500  # a request that fails before its reply counts as 500

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client")
            access_log.info(json.dumps({
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"), "method": one_line(scope["method"]),
                "path": one_line(scope["path"]), "status": status,
                "ms": round((time.perf_counter() - started) * 1000, 1), "client": client[0] if client else None,
            }, ensure_ascii=False))


def create_api(assistant: Assistant, config: Config | None = None) -> FastAPI:
    """The HTTP API over an assistant. The blocking endpoints are plain functions, which FastAPI runs in its thread
    pool: the server goes on answering (/healthz too) while questions are answered. At most config.concurrency
    answers are made at once, the others wait their turn: on a CPU, a question's retrieval run beside another's
    generation only slows both (answers per minute fell from 11.8 to 6.5 with 16 clients)."""
    config = config or assistant.config
    app = FastAPI(title="arabic-rag", docs_url=None, redoc_url=None)
    guarded = [Depends(Gate(config))]
    turns = threading.BoundedSemaphore(config.concurrency)

    def answer(question: str, history: list[str]) -> Answer:
        with turns:
            return assistant.ask(checked(question), history)

    def checked(question: str) -> str:
        try:
            return check_question(question, config.max_question_chars)
        except RagError as e:
            raise HTTPException(400, str(e)) from e

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        missing = not_ready(assistant)
        return error(503, f"not ready: {'; '.join(missing)}") if missing else {"status": "ready"}

    @app.post("/v1/ask", dependencies=guarded)
    def ask(body: AskRequest) -> dict:
        return answer(body.question, body.history).to_dict()

    @app.get("/v1/search", dependencies=guarded)
    def search(q: str, k: int | None = Query(None, ge=1, le=MAX_K)) -> list[dict]:
        return [p.to_dict() for p in assistant.search(checked(q), k)]

    @app.get("/v1/articles", dependencies=guarded)
    def articles() -> list[dict]:
        listed = sorted_articles(assistant.store.manifest()["articles"], "date")
        return [{"id": article_id, "title": meta["title"], "date": meta.get("date"), "chunks": meta["chunks"]}
                for article_id, meta in listed]

    @app.get("/v1/models", dependencies=guarded)
    async def models() -> dict:
        return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "arabic-rag"}]}

    @app.post("/v1/chat/completions", dependencies=guarded)
    def chat(body: ChatRequest):
        if body.model != MODEL_ID:
            raise HTTPException(404, f"unknown model {body.model!r}: this server has {MODEL_ID!r}")
        question, history = conversation(body.messages)
        answered = answer(question, history)
        if body.stream:
            return StreamingResponse(completion_events(answered), media_type="text/event-stream")
        return completion(answered)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = str(e.detail)
        if message == HTTPStatus(e.status_code).phrase:  # the router's own 404 and 405: say what was asked for
            message = f"{message}: {request.method} {request.url.path}"
        return error(e.status_code, message, e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = e.errors()
        if any(p["type"] == "json_invalid" for p in problems):
            return error(400, "the request body is not valid JSON")
        return error(422, "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems[:5]))

    @app.exception_handler(RagError)
    async def unavailable(request: Request, e: RagError) -> JSONResponse:
        log.warning("could not answer: %s", e)  # the model server or the store failed: the operator's to fix
        return error(503, f"could not answer: {e}")

    @app.exception_handler(Exception)
    async def failed(request: Request, e: Exception) -> JSONResponse:
        # uvicorn logs the traceback (Starlette raises the exception again once this reply is sent)
        return error(500, "internal error: the server's log has the details")

    app.add_middleware(BodyLimit)
    app.add_middleware(AccessLog)  # added last, so outermost: it logs the 413s too
    return app


def server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for the app (its own access log off: AccessLog writes one without query strings)."""
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, access_log=False, server_header=False,
                                         log_level="info"))


def serve(config: Config) -> None:
    """`rag serve`: load the index and the models, then serve the API on config.host:config.api_port until
    interrupted."""
    if config.api_auth == "key" and not api_keys(config):
        raise RagError("rag serve needs an API key: set api_keys (e.g. RAG_API_KEYS=<key>), or api_auth = none to "
                       "let anyone on this machine call it (loopback hosts only)")
    check_port(config.host, config.api_port, "api_port")
    assistant = Assistant.load(config)
    assistant.generator  # noqa: B018  load the model now: a missing model fails here, not in the first answer
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
    # Joined, never left running: a thread still decoding inside llama.cpp while the interpreter shuts down crashes.
    warm = threading.Thread(target=assistant.warm_up, name="warm-up")
    warm.start()
    try:
        server(create_api(assistant, config), config.host, config.api_port).run()
    finally:
        warm.join()
