"""Articles added and removed from the chat UI: read by rag.ingest's rules before they are stored, stored under a safe
name in the articles folder without overwriting anything, removed into its hidden .deleted folder (never erased), and
indexed by a background build, one at a time, after which the shared store switches to the new version."""

from __future__ import annotations

import logging
import os
import secrets
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rag.article import Article
from rag.config import Config
from rag.embedders import Embedder
from rag.errors import RagError
from rag.files import read_bounded
from rag.formats import MAX_BYTES, SUFFIXES
from rag.index import BuildReport, build_index
from rag.ingest import corpus_files, parse
from rag.stores import Store, make_store

log = logging.getLogger(__name__)

DELETED = ".deleted"  # hidden: rag.ingest does not walk it, so what is moved there is out of the corpus
MAX_STEM_BYTES = 150  # of UTF-8, leaving room for "-999" and the suffix under the usual 255-byte limit
MAX_COPIES = 999  # "name-2.txt" … "name-999.txt"
UNNAMED = "مقال"  # the name of a file whose name had nothing left
_DROPPED = {"Cc", "Cf", "Cs", "Co", "Cn"}  # controls, format (bidi overrides, zero-width), surrogates, unassigned
_RESERVED = set('<>:"|?*')  # refused by other systems' file names and shells' globbing


class Duplicate(ValueError):
    """The file holds the same bytes as an indexed article (the message is that article's id)."""


def safe_name(name: str) -> str:
    """The name an uploaded file is stored under: its base name only, without control, bidi-override or reserved
    characters, leading dots or runs of spaces, at most MAX_STEM_BYTES long, Arabic kept; ValueError for a type that
    is not read."""
    base = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    base = " ".join("".join(ch for ch in base if unicodedata.category(ch) not in _DROPPED and ch not in _RESERVED)
                    .split())
    suffix = PurePosixPath(base).suffix
    if suffix.lower() not in SUFFIXES:
        raise ValueError(f"not a {', '.join(SUFFIXES)} file")
    stem = base[: -len(suffix)].encode()[:MAX_STEM_BYTES].decode("utf-8", "ignore").strip(" .")
    return f"{stem or UNNAMED}{suffix.lower()}"


def read_upload(path: Path, name: str) -> tuple[Article, bytes]:
    """The article an uploaded file gives, read as `rag index` reads articles, and its bytes; ValueError (with the
    reason) for a file it cannot read."""
    try:
        data = read_bounded(path, MAX_BYTES[PurePosixPath(name).suffix])
    except OSError as e:
        raise ValueError(e.strerror or str(e)) from e
    return parse(name, data), data


def place(source: Path, folder: Path, name: str) -> Path:
    """Give source (a file or link) the first free name of name, name-2, name-3… in folder, in one step that never
    replaces an existing file, and remove it from where it was."""
    stem, suffix = os.path.splitext(name)
    for n in range(1, MAX_COPIES + 1):
        target = folder / (name if n == 1 else f"{stem}-{n}{suffix}")
        try:
            os.link(source, target, follow_symlinks=False)  # fails if the name is taken, unlike a rename
        except FileExistsError:
            continue
        os.unlink(source)
        return target
    raise ValueError(f"{MAX_COPIES} files in {folder} are already named like {name}")


def store_file(data: bytes, folder: Path, name: str) -> Path:
    """Write data into folder under name (or the first free name-2, name-3…): into a hidden temp file of the folder
    first, then linked under its name, so the folder never shows a partly written article."""
    temp = folder / f".upload-{secrets.token_hex(8)}.part"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return place(temp, folder, name)
    finally:
        temp.unlink(missing_ok=True)


def add_file(upload: Path, folder: Path, indexed: dict[str, str]) -> str:
    """Store an uploaded file in the articles folder if it reads as an article and is no indexed article's copy;
    returns the name it was stored under. indexed maps sha256 -> article id, and learns the new file."""
    name = safe_name(upload.name)
    article, data = read_upload(upload, name)
    if article.sha256 in indexed:
        raise Duplicate(indexed[article.sha256])
    stored = store_file(data, Path(folder), name).name
    indexed[article.sha256] = stored
    return stored


def remove_file(folder: Path, article_id: str) -> Path:
    """Move an article's file (or link) into the folder's hidden .deleted folder; returns where it went."""
    files, _ = corpus_files(folder)
    if article_id not in dict(files):
        raise ValueError("no longer in the articles folder: update the index to drop it")
    aside = Path(folder) / DELETED
    aside.mkdir(exist_ok=True)
    return place(Path(folder).resolve() / article_id, aside, PurePosixPath(article_id).name)


def sorted_articles(articles: dict[str, dict], order: str) -> list[tuple[str, dict]]:
    """(id, manifest entry) of the articles: the newest first (undated last), or by title."""
    by_title = sorted(articles.items(), key=lambda item: (item[1]["title"].casefold(), item[0]))
    if order == "title":
        return by_title
    return sorted(by_title, key=lambda item: item[1].get("date") or "", reverse=True)


@dataclass(frozen=True)
class Status:
    """Where the background builds stand."""

    building: bool
    done: int  # chunks embedded by the running build
    total: int  # chunks it embeds (0 until it knows)
    report: BuildReport | None  # of the last finished build, if it succeeded
    error: str  # why the last finished build failed


class Indexer:
    """Builds the index in a background thread, one build at a time: asked again while building, it builds once more
    afterwards (taking every change made meanwhile). After each build the shared store switches to the new version,
    while answers go on reading the old one until then."""

    def __init__(self, config: Config, embedder: Embedder, store: Store):
        self.config, self.embedder, self.store = config, embedder, store
        self._changed = threading.Condition()
        self._asked = self._built = 0  # builds asked for; of those, the ones a finished build covered
        self._running = False
        self._progress = (0, 0)
        self._report: BuildReport | None = None
        self._error = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def request(self) -> int:
        """Ask for a build of the articles folder as it is now; returns the ticket to wait for."""
        with self._changed:
            self._asked += 1
            if not self._running and not self._stop.is_set():
                self._running = True
                self._thread = threading.Thread(target=self._run, name="rag-index")
                self._thread.start()
            return self._asked

    def close(self) -> None:
        """Stop a running build at its next batch (nothing is published; its temp files go) and wait for it: a thread
        still embedding while the interpreter shuts down could crash the process."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def wait(self, ticket: int, timeout: float | None = None) -> bool:
        """Wait until a build that started after the ticket was issued has finished; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._built >= ticket, timeout)

    def status(self) -> Status:
        """The running build's progress and the last build's outcome."""
        with self._changed:
            return Status(self._running, *self._progress, self._report, self._error)

    def _run(self) -> None:
        while True:
            with self._changed:
                if self._built >= self._asked or self._stop.is_set():
                    self._running = False
                    return
                covers, self._progress = self._asked, (0, 0)
            report, error = self._build()
            with self._changed:
                self._built, self._report, self._error = covers, report, error
                self._changed.notify_all()

    def _build(self) -> tuple[BuildReport | None, str]:
        """Build with a store of its own, then switch the shared one; (report, "") or (None, why it failed)."""
        c = self.config
        try:
            report = build_index(c.seeds_dir, make_store(c), self.embedder, c.chunk_size, c.chunk_overlap,
                                 log=lambda line: log.info("%s", line), progress=self._told)
            self.store.refresh()
        except RagError as e:
            log.warning("the index was not updated: %s", e)
            return None, str(e)
        except Exception as e:
            log.exception("the index build failed")
            return None, f"{type(e).__name__}: {e}"
        return report, ""

    def _told(self, done: int, total: int) -> None:
        if self._stop.is_set():
            raise RagError("the build was stopped: the program is closing")
        with self._changed:
            self._progress = (done, total)
