"""Read the corpus: only regular files inside the articles folder, read with bounded reads and honest decoding;
drop web boilerplate, find the title and publication date."""

from __future__ import annotations

import codecs
import errno
import hashlib
import os
import re
import stat
from pathlib import Path, PurePosixPath

from rag.article import Article
from rag.dates import find_dates, is_date_only
from rag.files import MB, read_bounded, read_descriptor
from rag.formats import MAX_BYTES, READERS, SUFFIXES, TEXT_SUFFIXES
from rag.normalize import normalize

INDEX_MARKER = "rag-index.json"  # a folder holding this file is an index, never articles
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0/C1 controls but tab and line breaks
MAX_CONTROL_SHARE = 0.05  # text with more control characters than this is binary data

# Matched against the normalized line (alef/yeh/teh-marbuta folded, lower-cased).
_BOILERPLATE = re.compile(
    "|".join(
        [
            r"تم نسخ", r"نسخ الرابط", r"اترك تعليق", r"اضف تعليق", r"لن يتم نشر عنوان بريدك",
            r"الحقول الالزاميه", r"الذهاب الي الاعلي", r"العوده الي الاعلي", r"نعرض لكم زوارنا",
            r"^اخبار متعلقه", r"^اقرا ايضا", r"^تابعونا", r"جميع الحقوق محفوظه", r"^(back to top|read more)\b",
        ]
    )
)
# Matched only on very short lines: a weather crumb or a share button, never a sentence that mentions "°C".
_CRUMB = re.compile(r"[℃°]|^شارك(ها)?\b|^(share|print|related)\b")
BOILERPLATE_MAX_WORDS = 16  # a longer line is content, whatever phrase it contains


def _strip_trailing_date(title: str) -> str:
    """'Some headline, اليوم الأربعاء 16 أبريل 2025 06:33 مساءً' -> 'Some headline'."""
    for sep in (",", "،", " - ", "|"):
        head, found, tail = title.rpartition(sep)
        if found and head.strip() and is_date_only(tail):
            return head.strip()
    return title


def clean(raw: str) -> tuple[str, str | None, str]:
    """(title, date, cleaned text) of a scraped page."""
    raw = _CONTROL.sub("", raw.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [ln.strip() for ln in raw.split("\n")]
    kept: list[str] = []
    seen: set[str] = set()
    header_dates: list[tuple[bool, str]] = []  # (seen after the title?, iso date)
    title = ""
    in_header = True
    for line in lines:
        bare = line.lstrip("-•*·– ").strip()
        norm = normalize(bare)
        if not bare:
            if kept and kept[-1]:
                kept.append("")
            continue
        words = len(norm.split())
        if norm in seen or (words <= BOILERPLATE_MAX_WORDS and _BOILERPLATE.search(norm)) or (
            words <= 4 and _CRUMB.search(norm)
        ):
            continue
        if in_header and is_date_only(bare):
            header_dates += [(bool(title), d) for d in find_dates(bare)]
            continue
        if in_header and not title and words >= 3:
            title = _strip_trailing_date(bare)
            header_dates += [(True, d) for d in find_dates(bare)]
            bare = title
            if words > 25 or bare.endswith((".", "!", "؟")):  # no headline: the page opens with a paragraph
                title = _headline_from(bare)
                in_header = False
        elif in_header and words <= 3:
            continue  # section/tag crumbs around the headline ("روسيا", an author name)
        elif words >= 8:
            in_header = False
        seen.add(normalize(bare))
        kept.append(bare)
    after_title = [d for after, d in header_dates if after]
    dates = after_title or [d for _, d in header_dates]
    return title, (dates[0] if dates else None), "\n".join(kept).strip()


def _headline_from(paragraph: str, max_words: int = 12) -> str:
    """A short title cut from a paragraph, without a leading 'SiteName - ' dateline."""
    head, sep, rest = paragraph.partition(" - ")
    if sep and len(head.split()) <= 2:
        paragraph = rest
    words = paragraph.split()
    return " ".join(words[:max_words]) + ("…" if len(words) > max_words else "")


def decode_text(data: bytes) -> str:
    """Text of a file's bytes: UTF-8 (with or without BOM), or UTF-16/32 told by a BOM or by its NUL pattern.
    Raises ValueError for anything else, with the reason."""
    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                          (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return _decode(data, encoding)
    if b"\x00" in data:
        # UTF-16 without a BOM: spaces, digits and Latin letters have a NUL high byte, always at the same parity
        # (Arabic letters are 0x06xx). Anything else with NULs in it is binary data.
        even, odd = data[0::2].count(0), data[1::2].count(0)
        if len(data) % 2 == 0 and max(even, odd) > 0.02 * len(data) / 2 and min(even, odd) == 0:
            return _decode(data, "utf-16-le" if odd > even else "utf-16-be")
        raise ValueError("binary data (NUL bytes), not text")
    return _decode(data, "utf-8")


def _decode(data: bytes, encoding: str) -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        if encoding == "utf-8":
            raise ValueError(f"not UTF-8 text (byte {e.start}); convert it with `iconv -t UTF-8`") from e
        raise ValueError(f"not valid {encoding.upper()} text (byte {e.start})") from e
    if len(_CONTROL.findall(text)) > MAX_CONTROL_SHARE * max(len(text), 1):
        raise ValueError("binary data (control characters), not text")
    return text


def open_inside(root_fd: int, relative: PurePosixPath) -> int:
    """A descriptor of the file at relative under the folder open on root_fd, opened without following a link in
    any component and without blocking. O_NOFOLLOW guards only the last component of a path, so the folders are
    walked one descriptor at a time: a folder swapped for a link after listing is never entered."""
    if not relative.parts or any(part in (".", "..") for part in relative.parts) or relative.is_absolute():
        raise ValueError("not a path inside the articles folder")
    fd = os.dup(root_fd)
    try:
        for part in relative.parts[:-1]:
            child = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.open(relative.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    except OSError as e:
        # A link where a folder or the file was: O_NOFOLLOW refuses it with ELOOP, O_DIRECTORY with ENOTDIR.
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ValueError("became a link or left the folder while being read (not followed)") from e
        raise
    finally:
        os.close(fd)


def parse(name: str, data: bytes) -> Article:
    """An article from a file's name (its id) and bytes; raises ValueError with a readable reason."""
    suffix = Path(name).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        title, date, text = clean(decode_text(data))
        kind = "text"
    else:
        extracted = READERS[suffix](data)
        found_title, date, text = clean(extracted.text)
        title = extracted.title or found_title
        date = extracted.date or date
        kind = extracted.format
    if not text:
        raise ValueError("no text left after removing boilerplate")
    return Article(name, title or Path(name).stem, date, text, hashlib.sha256(data).hexdigest(), kind)


def read_article(path: Path, name: str | None = None) -> Article:
    """Load and clean one article file; raises ValueError (or OSError) with a readable reason."""
    return parse(name or path.name, read_bounded(path, MAX_BYTES.get(path.suffix.lower(), 5 * MB)))


def corpus_files(folder: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """(article id, path) of every article file of the corpus, and one warning per file that may not be read.

    Articles are the files with a known suffix in the folder and its subfolders (ids are their relative paths).
    Links are followed only where they lead to a regular file inside the folder; hidden files and folders, and
    index folders, are not articles.
    """
    root = Path(folder).resolve()
    found, warnings = [], []
    for top, dirs, names in os.walk(root, onerror=lambda e: warnings.append(f"skipped {e.filename}: {e.strerror}")):
        here = Path(top)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (here / d / INDEX_MARKER).exists()
                         and not _warn_link(here / d, root, warnings))
        for name in sorted(names):
            path = here / name
            if name.startswith(".") or path.suffix.lower() not in SUFFIXES:
                continue
            article_id = path.relative_to(root).as_posix()
            reason = _unreadable(path, root)
            if reason:
                warnings.append(f"skipped {article_id}: {reason}")
            else:
                found.append((article_id, path.resolve()))
    return found, warnings


def _warn_link(path: Path, root: Path, warnings: list[str]) -> bool:
    """True (with a warning) for a link to a folder: linked folders are not walked (loops, folders outside)."""
    if path.is_symlink():
        warnings.append(f"skipped {path.relative_to(root).as_posix()}/: a link to a folder (not followed)")
        return True
    return False


def _unreadable(path: Path, root: Path) -> str | None:
    """Why a file of the corpus may not be read, or None."""
    try:
        target = path.resolve(strict=True)
        info = target.stat()
    except FileNotFoundError:
        return "a broken link"
    except (OSError, RuntimeError) as e:  # RuntimeError: a link loop
        return getattr(e, "strerror", None) or "a link loop"
    if not target.is_relative_to(root):
        return "a link to a file outside the articles folder"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a device, pipe or socket)"
    if info.st_size == 0:
        return "empty"
    if info.st_size > MAX_BYTES[path.suffix.lower()]:
        return f"larger than {MAX_BYTES[path.suffix.lower()] // MB} MB"
    return None


def _read_listed(root_fd: int, root: Path, article_id: str, path: Path) -> Article:
    """The article of a file listed by corpus_files (path: the file it leads to, inside root), read through
    open_inside and judged on the open descriptor. A hard link is a regular file of the folder: it is read."""
    relative = PurePosixPath(path.relative_to(root).as_posix())
    limit = MAX_BYTES[PurePosixPath(article_id).suffix.lower()]
    return parse(article_id, read_descriptor(open_inside(root_fd, relative), limit))


def load_articles(folder: Path) -> tuple[list[Article], list[str]]:
    """All readable articles of the corpus, and one warning per file that was skipped (or that became a link, or
    moved out of a folder that became a link, between listing and reading)."""
    files, warnings = corpus_files(folder)
    root = Path(folder).resolve()
    articles = []
    seen_hashes: dict[str, str] = {}
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for article_id, path in files:
            try:
                article = _read_listed(root_fd, root, article_id, path)
            except ValueError as e:
                warnings.append(f"skipped {article_id}: {e}")
                continue
            except OSError as e:
                warnings.append(f"skipped {article_id}: {e.strerror or e}")
                continue
            if article.sha256 in seen_hashes:
                warnings.append(f"skipped {article_id}: same content as {seen_hashes[article.sha256]}")
                continue
            seen_hashes[article.sha256] = article_id
            articles.append(article)
    finally:
        os.close(root_fd)
    return articles, warnings
