"""The chat UI: a right-to-left Gradio app over an injected Assistant, streaming answers with cited source cards."""

from __future__ import annotations

import html
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from rag.assistant import Answer, Assistant, Stage
from rag.cite import MARKER, Citation
from rag.config import Config, check_port
from rag.errors import RagError
from rag.files import MB
from rag.formats import MAX_BYTES, SUFFIXES
from rag.library import DELETED, Duplicate, Indexer, Status, add_file, remove_file, sorted_articles
from rag.models import MODELS
from rag.normalize import is_arabic
from rag.prompts import load_strings
from rag.retrieve import Passage
from rag.terminal import clean_logs

if TYPE_CHECKING:
    import gradio as gr

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline product: no usage pings, set before gradio loads
log = logging.getLogger(__name__)

CONTEXT = 200  # characters of article text shown on each side of a cited span
EXCERPT = 300  # characters of a passage shown under a refusal
MAX_QUEUE = 64  # questions waiting for the model (about 1.5 minutes of answers); beyond it the user is told it is busy
POLL = 0.5  # seconds between progress updates while the index is built
INDEXING = {"concurrency_limit": 4, "concurrency_id": "sources", "show_progress": "hidden"}  # they wait on the build
FONTS = ["Noto Naskh Arabic", "Noto Sans Arabic", "Segoe UI", "Tahoma", "Geeza Pro", "DejaVu Sans", "sans-serif"]
PAGE_JS = "() => { document.documentElement.dir = 'rtl'; document.documentElement.lang = 'ar'; }"
TEXT = load_strings("ui")  # the UI's words (prompts/ui.toml): labels, messages, examples, model names
CHAT, SOURCES = TEXT["chat"], TEXT["sources"]  # the words of the chat tab, of the sources tab
UNEXPECTED = CHAT["unexpected"]


class Chat:
    """The UI's event handlers as plain methods: testable without a browser."""

    def __init__(self, assistant: Assistant):
        self.base = assistant
        self._by_model = {assistant.config.generator: assistant}
        self._lock = threading.Lock()

    def assistant_for(self, model: str, top_k: int, temperature: float) -> Assistant:
        """An assistant with these settings; one per model, all sharing the loaded embedder and store."""
        with self._lock:
            if model not in self._by_model:
                base = self.base
                self._by_model[model] = Assistant(base.config.replace(generator=model), base.embedder, base.store)
            shared = self._by_model[model]
            generator = shared.generator  # loaded once per model, on first use
        config = shared.config.replace(top_k=int(top_k), temperature=float(temperature))
        return Assistant(config, shared.embedder, shared.store, generator)

    def respond(
        self, question: str, messages: list[dict], questions: list[str], model: str, top_k: int, temperature: float
    ) -> Iterator[tuple[list[dict], list[str], str]]:
        """Yield (chat messages, questions asked so far, input box) while the assistant answers."""
        if not question.strip():
            yield messages, questions, ""
            return
        turn = len(questions)
        shown = [*messages, user_message(question)]
        yield [*shown, bot_message(stage_html(Stage("searching")))], questions, ""
        try:
            assistant = self.assistant_for(model, top_k, temperature)
            for piece in assistant.stream(question, questions):
                if isinstance(piece, Answer):
                    reply = answer_html(piece, assistant, turn)
                    questions = [*questions, question]
                else:
                    reply = stage_html(piece)
                yield [*shown, bot_message(reply)], questions, ""
        except RagError as e:
            log.warning("could not answer %r: %s", question, e)
            yield [*shown, bot_message(error_html(str(e)))], questions, ""
        except Exception:
            log.exception("answering %r failed", question)
            yield [*shown, bot_message(error_html())], questions, ""

    @staticmethod
    def clear() -> tuple[list[dict], list[str], str]:
        """Start a new conversation."""
        return [], [], ""


class Sources:
    """The sources tab's handlers as plain methods: the indexed articles, files added to them and articles removed,
    indexed in the background while the chat goes on answering from the index it has."""

    def __init__(self, assistant: Assistant, indexer: Indexer | None = None):
        self.store = assistant.store
        self.seeds = Path(assistant.config.seeds_dir)
        self.indexer = indexer or Indexer(assistant.config, assistant.embedder, assistant.store)

    def articles(self) -> dict[str, dict]:
        """The indexed articles (id -> title, date, format, chunks, sha256), from the store's manifest."""
        return self.store.manifest()["articles"]

    def show(self, order: str) -> tuple[str, gr.Dropdown]:
        """The list of indexed articles and the menu of the delete button."""
        import gradio as gr

        articles = self.articles()
        return articles_html(articles, order), gr.Dropdown(choices=delete_choices(articles), value=None)

    def reload(self, order: str) -> tuple[str, str, gr.Dropdown]:
        """Switch to the newest published index (one `rag index` built, say) and show it, with the build status."""
        self.store.refresh()
        return status_html([], self.indexer.status()), *self.show(order)

    def upload(self, files: list[str] | None, order: str) -> Iterator[tuple[str, str, gr.Dropdown, None]]:
        """Store the uploaded files that read as new articles, then index them; yields (status, list, delete menu,
        upload box) until the index holds them."""
        indexed = {meta["sha256"]: article_id for article_id, meta in self.articles().items()}
        lines, added = [], False
        for file in files or []:
            said, stored = self._add(Path(file), indexed)
            lines.append(said)
            added = added or stored
        for shown in self._update(lines, order, added):
            yield *shown, None

    def delete(self, article_id: str | None, order: str) -> Iterator[tuple[str, str, gr.Dropdown]]:
        """Move an article's file into the hidden .deleted folder of the articles folder, then index without it."""
        articles = self.articles()
        if not article_id or article_id not in articles:
            yield from self._update([line("refused", SOURCES["pick"])], order, False)
            return
        if len(articles) == 1:
            yield from self._update([line("refused", SOURCES["last"])], order, False)
            return
        try:
            moved = remove_file(self.seeds, article_id)
        except (ValueError, OSError) as e:
            yield from self._update([refused(article_id, str(e))], order, False)
            return
        moved_line = SOURCES["moved"].format(name=bdi(article_id), where=bdi(str(PurePosixPath(DELETED, moved.name))))
        yield from self._update([line("moved", moved_line)], order, True)

    def rebuild(self, order: str) -> Iterator[tuple[str, str, gr.Dropdown]]:
        """Index the articles folder as it is now (files copied into it by hand, a build that failed)."""
        yield from self._update([], order, True)

    def _add(self, upload: Path, indexed: dict[str, str]) -> tuple[str, bool]:
        """The status line of one uploaded file, and whether it was stored; Gradio's copy of it is removed, so that
        no copy of the user's file is left outside the articles folder."""
        name = upload.name
        try:
            stored = add_file(upload, self.seeds, indexed)
        except Duplicate as e:
            return line("duplicate", SOURCES["duplicate"].format(name=bdi(name), article=bdi(str(e)))), False
        except (ValueError, RagError, OSError) as e:
            return refused(name, str(e)), False
        finally:
            upload.unlink(missing_ok=True)
        renamed = SOURCES["renamed"].format(name=bdi(stored)) if stored != name else ""
        return line("added", SOURCES["added"].format(name=bdi(name), renamed=renamed)), True

    def _update(self, lines: list[str], order: str, build: bool) -> Iterator[tuple[str, str, gr.Dropdown]]:
        """Yield (status, list, delete menu): with build, while the index is built in the background, then when the
        chat answers from the new one."""
        if build:
            ticket = self.indexer.request()
            while not self.indexer.wait(ticket, POLL):
                yield status_html(lines, self.indexer.status()), *self.show(order)
        finished = replace(self.indexer.status(), building=False)  # how the build that covered these changes ended
        yield status_html(lines, finished if build else None), *self.show(order)


def direction(text: str) -> str:
    """'rtl' for mostly Arabic text, 'ltr' otherwise."""
    return "rtl" if is_arabic(text) else "ltr"


def escape(text: str) -> str:
    """Text made safe for HTML, each run of line breaks made one <br> (a message is one line of HTML)."""
    return re.sub(r"\n\s*", "<br>", html.escape(text))


def bdi(text: str) -> str:
    """Text escaped and isolated from the direction of the line around it: a file name, a reason, a path."""
    return f"<bdi>{escape(text)}</bdi>"


def user_message(question: str) -> dict:
    """The user's question as a chat message."""
    return {"role": "user", "content": f'<div class="msg" dir="{direction(question)}">{escape(question)}</div>'}


def bot_message(content: str) -> dict:
    """An assistant chat message holding HTML."""
    return {"role": "assistant", "content": content}


def stage_html(stage: Stage) -> str:
    """The step of answering under way (searching, reading, checking), shown in place of the answer to come."""
    return f'<div class="msg stage stage-{stage.name}" dir="rtl">{escape(stage.label)}</div>'


def error_html(message: str = "") -> str:
    """An error shown in the chat: the RagError's message, or a generic one for unexpected failures."""
    text = CHAT["failed"].format(reason=bdi(message)) if message else UNEXPECTED
    return f'<div class="msg failed" dir="rtl">{text}</div>'


def answer_html(answer: Answer, assistant: Assistant, turn: int) -> str:
    """The checked answer with linked [n] markers and its source cards, or a refusal with the closest passages."""
    if answer.refused:
        return refusal_html(answer, turn)
    unsupported = {c.n for c in answer.citations if not c.supported}
    body = link_markers(answer.text, turn, unsupported)
    cards = "".join(citation_card(c, assistant.article(c.source).text, turn) for c in answer.citations)
    return (
        f'<div class="msg answer" dir="{direction(answer.text)}">{body}</div>'
        f'<div class="sources" dir="rtl"><div class="sources-title">{CHAT["sources"]}</div>{cards}</div>'
    )


def link_markers(text: str, turn: int, unsupported: set[int]) -> str:
    """Escaped text whose [n] markers link to source card n of this turn."""

    def link(m) -> str:
        n = int(m.group(1))
        kind = "cite unsupported" if n in unsupported else "cite"
        return f'<a class="{kind}" href="#src-{turn}-{n}">[{n}]</a>'

    return MARKER.sub(link, escape(text))


def citation_card(citation: Citation, article_text: str, turn: int) -> str:
    """The card of a citation: the cited sentence highlighted in its surrounding article text, and in it the span the
    answer was copied from."""
    c = citation
    passage = in_context(article_text, c.start, c.end, span=copied(c))
    return card(f"src-{turn}-{c.n}", c.n, c.title, c.date, c.source, passage, c.text, unsupported=not c.supported)


def copied(citation: Citation) -> tuple[int, int] | None:
    """(start, end) of the span the answer copied from the cited sentence, if it has one inside the sentence."""
    c = citation
    if c.span_start is None or c.span_end is None or not c.start <= c.span_start < c.span_end <= c.end:
        return None
    return c.span_start, c.span_end


def passage_card(passage: Passage, turn: int, rank: int) -> str:
    """The card of a retrieved passage offered after a refusal: the start of its text."""
    c = passage.chunk
    text = c.text if len(c.text) <= EXCERPT else c.text[:EXCERPT].rsplit(" ", 1)[0] + "…"
    return card(f"near-{turn}-{rank}", rank, c.title, c.date, c.article_id, escape(text), text)


def card(anchor: str, n: int, title: str, date: str | None, source: str, passage: str, plain: str,
         unsupported: bool = False) -> str:
    """A source card: number, title, date and file name, then the passage (HTML; `plain` sets its direction)."""
    badge = f'<span class="badge">{CHAT["unsupported"]}</span>' if unsupported else ""
    dated = f"{escape(date)} · " if date else ""
    return (
        f'<div class="card{" unsupported" if unsupported else ""}" id="{anchor}" dir="rtl">'
        f'<div class="card-head"><span class="num">{n}</span>'
        f'<span class="card-title">{escape(title)}</span>{badge}</div>'
        f'<div class="meta">{dated}<bdi>{escape(source)}</bdi></div>'
        f'<div class="passage" dir="{direction(plain)}">{passage}</div></div>'
    )


def in_context(text: str, start: int, end: int, width: int = CONTEXT, span: tuple[int, int] | None = None) -> str:
    """text[start:end] highlighted, with about `width` characters around it cut at line or word ends: all of it in
    <mark>, or, given a span inside it, lightly (class "quote") with the span in <mark>."""
    before, after = text[max(0, start - width) : start], text[end : end + width]
    if start > width:
        before = before.split("\n", 1)[1] if "\n" in before else "…" + before.split(" ", 1)[-1]
    if end + width < len(text):
        after = after.rsplit("\n", 1)[0] if "\n" in after else after.rsplit(" ", 1)[0] + "…"
    if span is None:
        cited = f"<mark>{escape(text[start:end])}</mark>"
    else:
        a, b = span
        cited = (f'<span class="quote">{escape(text[start:a])}<mark>{escape(text[a:b])}</mark>'
                 f"{escape(text[b:end])}</span>")
    return f"{escape(before)}{cited}{escape(after)}"


def refusal_html(answer: Answer, turn: int) -> str:
    """A refusal, styled apart, offering the closest passages."""
    cards = "".join(passage_card(p, turn, rank) for rank, p in enumerate(answer.passages[:3], 1))
    closest = f'<div class="sources"><div class="sources-title">{CHAT["closest"]}</div>{cards}</div>' if cards else ""
    text = f'<div class="msg" dir="{direction(answer.text)}">{escape(answer.text)}</div>'
    return f'<div class="refusal" dir="rtl">{text}{closest}</div>'


def line(kind: str, content: str) -> str:
    """One line of the sources tab's status (content is HTML): added, moved, duplicate or refused."""
    return f'<li class="{kind}">{content}</li>'


def refused(name: str, reason: str) -> str:
    """The status line of a file that was not added or moved, with the reader's one-line reason."""
    return line("refused", SOURCES["refused"].format(name=bdi(name), reason=bdi(reason)))


def status_html(lines: list[str], status: Status | None) -> str:
    """What became of each file, then (given a status) the index build."""
    listed = f"<ul>{''.join(lines)}</ul>" if lines else ""
    return f'<div class="status" dir="rtl">{listed}{build_html(status) if status else ""}</div>'


def build_html(status: Status) -> str:
    """The index build: its progress while it runs, else how the last one ended."""
    if status.building:
        done, total = status.done, status.total
        bar = f'<progress value="{done}" max="{total}"></progress>' if total else "<progress></progress>"
        count = f"<span>{SOURCES['count'].format(done=done, total=total)}</span>" if total else ""
        return (f'<div class="building">{SOURCES["building"]} {bar}{count}</div>'
                f'<div class="note">{SOURCES["building_note"]}</div>')
    if status.error:
        return f'<div class="failed">{SOURCES["build_failed"].format(error=bdi(status.error))}</div>'
    if status.report:
        r = status.report
        built = SOURCES["built"].format(added=len(r.added), changed=len(r.changed), removed=len(r.removed),
                                        embedded=r.embedded, seconds=r.seconds)
        return f'<div class="done">{built}</div>'
    return ""


def articles_html(articles: dict[str, dict], order: str) -> str:
    """The indexed articles as a table (title, date, passages, format, file), newest first or by title."""
    rows = "".join(
        f'<tr><td dir="{direction(meta["title"])}">{escape(meta["title"])}</td>'
        f'<td>{escape(meta.get("date") or "—")}</td>'
        f'<td class="num">{meta["chunks"]}</td><td>{SOURCES["formats"].get(meta.get("format", "text"), "")}</td>'
        f"<td><bdi>{escape(article_id)}</bdi></td></tr>"
        for article_id, meta in sorted_articles(articles, order)
    )
    summary = SOURCES["summary"].format(articles=len(articles), chunks=sum(m["chunks"] for m in articles.values()))
    columns = "".join(f"<th>{column}</th>" for column in SOURCES["columns"])
    return (
        f'<div class="summary" dir="rtl">{summary}</div>'
        f'<table class="articles" dir="rtl"><thead><tr>{columns}</tr></thead><tbody>{rows}</tbody></table>'
    )


def delete_choices(articles: dict[str, dict]) -> list[tuple[str, str]]:
    """(label, id) of the delete menu: each article's title and file name, by title."""
    return [(f"{meta['title']} — {article_id}", article_id) for article_id, meta in sorted_articles(articles, "title")]


def model_choices(current: str) -> list[tuple[str, str]]:
    """(label, generator name) for the model menu: the configured model first, then the generators of the model
    registry (rag/models.py). A model file shows its name, a server its URL."""
    def label(name: str) -> str:
        return TEXT["models"].get(name) or (name.partition(":")[2] if "://" in name else Path(name).name)

    registered = [name for name, spec in MODELS.items() if spec.kind == "generator"]
    return [(label(name), name) for name in dict.fromkeys([current, *registered])]


def create_app(assistant: Assistant, config: Config | None = None, indexer: Indexer | None = None) -> gr.Blocks:
    """The chat app over an assistant: config.concurrency answers at once, up to MAX_QUEUE questions waiting; beside
    the chat, the sources tab."""
    import gradio as gr

    config = config or assistant.config
    chat = Chat(assistant)
    with gr.Blocks(title=TEXT["title"], analytics_enabled=False) as app:
        gr.HTML(f'<div id="header" dir="rtl"><h1>{TEXT["title"]}</h1><p>{TEXT["tagline"]}</p></div>')
        with gr.Tabs():
            with gr.Tab(CHAT["tab"], id="chat-tab"):
                chatbot = gr.Chatbot(
                    elem_id="chat", show_label=False, height="68vh", render_markdown=False, sanitize_html=True,
                    latex_delimiters=[], feedback_options=None, buttons=[], layout="bubble", rtl=True,
                    placeholder=f'<div dir="rtl">{CHAT["placeholder"]}</div>',
                )
                with gr.Row(equal_height=True):
                    box = gr.Textbox(
                        elem_id="question", show_label=False, placeholder=CHAT["question"], rtl=True, scale=8,
                        autofocus=True, max_lines=4,
                    )
                    send = gr.Button(CHAT["send"], variant="primary", scale=1, min_width=80)
                    clear = gr.Button(CHAT["clear"], scale=1, min_width=140)
                with gr.Row(elem_id="examples"):
                    example_buttons = [gr.Button(q, size="sm", variant="secondary") for q in CHAT["examples"]]
                with gr.Accordion(CHAT["settings"], open=False, elem_id="settings"):
                    with gr.Row():
                        top_k = gr.Slider(1, 10, value=config.top_k, step=1, label=CHAT["top_k"])
                        temperature = gr.Slider(0.0, 1.0, value=config.temperature, step=0.1, label=CHAT["temperature"])
                    model = gr.Radio(model_choices(config.generator), value=config.generator, label=CHAT["model"])
            with gr.Tab(SOURCES["tab"], id="sources-tab", elem_id="sources") as sources_tab:
                sources = sources_panel()
        questions = gr.State([])
        settings = [chatbot, questions, model, top_k, temperature]
        outputs = [chatbot, questions, box]
        answering = [b.click(chat.respond, [b, *settings], outputs, **_queued(config)) for b in example_buttons]
        answering.append(gr.on([box.submit, send.click], chat.respond, [box, *settings], outputs, **_queued(config)))
        clear.click(Chat.clear, None, outputs, queue=False, cancels=answering)
        chatbot.clear(Chat.clear, None, outputs, queue=False, cancels=answering)
        wire_sources(Sources(assistant, indexer), sources_tab, **sources)
    return app.queue(max_size=MAX_QUEUE)


def sources_panel() -> dict[str, gr.Component]:
    """The sources tab's components: upload box, status, order, list of articles, delete menu and buttons."""
    import gradio as gr

    gr.HTML(f'<div class="note" dir="rtl">{SOURCES["intro"].format(limits=limits_text())}</div>')
    panel = {"files": gr.File(label=SOURCES["files"], file_count="multiple",
                              file_types=list(SUFFIXES), type="filepath", elem_id="upload", height=140),
             "status": gr.HTML(elem_id="sources-status")}
    orders = [(label, order) for order, label in SOURCES["orders"].items()]
    with gr.Row():
        panel["order"] = gr.Radio(orders, value="date", label=SOURCES["order"], rtl=True, scale=3)
        panel["rebuild"] = gr.Button(SOURCES["rebuild"], size="sm", scale=1, min_width=120)
    panel["listing"] = gr.HTML(elem_id="articles")
    with gr.Row(equal_height=True):
        panel["menu"] = gr.Dropdown(choices=[], value=None, label=SOURCES["menu"], scale=4, elem_id="delete-menu")
        panel["delete"] = gr.Button(SOURCES["delete"], variant="stop", scale=1, min_width=120)
    gr.HTML(f'<div class="note" dir="rtl">{SOURCES["delete_note"].format(folder=bdi(f"{DELETED}/"))}</div>')
    return panel


def wire_sources(sources: Sources, tab: gr.Tab, files: gr.File, status: gr.HTML, order: gr.Radio, rebuild: gr.Button,
                 listing: gr.HTML, menu: gr.Dropdown, delete: gr.Button) -> None:
    """The sources tab's events: shown when opened, files added, articles deleted, the index rebuilt."""
    shown = [status, listing, menu]
    tab.select(sources.reload, [order], shown)
    order.change(sources.show, [order], [listing, menu], queue=False)
    files.upload(sources.upload, [files, order], [*shown, files], **INDEXING)
    delete.click(sources.delete, [menu, order], shown, **INDEXING)
    rebuild.click(sources.rebuild, [order], shown, **INDEXING)


def _queued(config: Config) -> dict:
    """Event options of the answering events: they share the model's concurrency limit."""
    return {"concurrency_limit": config.concurrency, "concurrency_id": "model", "show_progress": "minimal"}


def limits_text() -> str:
    """The accepted file types and their size limits, e.g. '.txt و.md حتى 5 ميغابايت، …'."""
    by_size: dict[int, list[str]] = {}
    for suffix in SUFFIXES:
        by_size.setdefault(MAX_BYTES[suffix] // MB, []).append(bdi(suffix))
    return SOURCES["comma"].join(SOURCES["limit"].format(suffixes=SOURCES["and"].join(names), size=size)
                                 for size, names in by_size.items())


def load_css() -> str:
    """The UI's style sheet, prompts/ui.css (shipped in the package rag.prompts, beside the UI's words)."""
    try:
        return resources.files("rag.prompts").joinpath("ui.css").read_text(encoding="utf-8")
    except OSError as e:
        raise RagError("style sheet ui.css is missing from the installed package: reinstall it") from e


def launch(app: gr.Blocks, config: Config, prevent_thread_lock: bool = False) -> str:
    """Serve the app on config.host:config.port (never shared publicly); returns its local URL."""
    import gradio as gr

    user, _, password = config.auth.partition(":")  # checked with the other settings: user:password or empty
    auth = (user, password) if config.auth else None
    _, url, _ = app.launch(
        server_name=config.host, server_port=config.port, auth=auth, share=False, ssr_mode=False,
        prevent_thread_lock=prevent_thread_lock, quiet=prevent_thread_lock, footer_links=[],
        max_file_size=max(MAX_BYTES.values()),  # refused before it is stored; each type's own limit is checked after
        theme=gr.themes.Soft(font=FONTS, font_mono=["ui-monospace", "monospace"]), css=load_css(), js=PAGE_JS,
    )
    return url


def serve(config: Config) -> None:
    """`rag ui`: load the assistant and its model, then serve the chat until interrupted."""
    clean_logs()  # the server logs request paths and questions: no escape sequence reaches its terminal
    check_port(config.host, config.port, "port")
    assistant = Assistant.load(config)
    assistant.generator  # noqa: B018  load the model now: a missing model fails here, not in the first answer
    # The first answer is then as fast as later ones. Joined, never left running: a thread still decoding inside
    # llama.cpp while the interpreter shuts down crashes the process.
    warm = threading.Thread(target=assistant.warm_up, name="warm-up")
    warm.start()
    indexer = Indexer(config, assistant.embedder, assistant.store)  # the sources tab's background builds
    try:
        launch(create_app(assistant, config, indexer), config)
    finally:
        warm.join()
        indexer.close()
