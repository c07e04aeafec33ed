"""Read scraped article files: drop web boilerplate, find the title and publication date."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from rag.normalize import normalize

SUFFIXES = (".txt", ".md")
MAX_FILE_BYTES = 5_000_000

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
_MONTHS = {
    "يناير": 1, "كانون الثاني": 1, "جانفي": 1, "فبراير": 2, "شباط": 2, "فيفري": 2,
    "مارس": 3, "اذار": 3, "ابريل": 4, "نيسان": 4, "افريل": 4, "مايو": 5, "ايار": 5, "ماي": 5,
    "يونيو": 6, "حزيران": 6, "جوان": 6, "يوليو": 7, "تموز": 7, "جويليه": 7, "اغسطس": 8, "اب": 8,
    "اوت": 8, "سبتمبر": 9, "ايلول": 9, "اكتوبر": 10, "تشرين الاول": 10, "نوفمبر": 11,
    "تشرين الثاني": 11, "ديسمبر": 12, "كانون الاول": 12,
}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_DATE_WORDS = re.compile(
    rf"\b(\d{{1,2}})\s+({_MONTH})(?:\s*/\s*(?:{_MONTH}))?\s*,?\s+(?:عام\s+|سنه\s+)?(\d{{4}})\b"
)
_DATE_ISO = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_DATE_DMY = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b")
_WEEKDAY = r"(?:اليوم\s+)?(?:السبت|الاحد|الاثنين|الثلاثاء|الاربعاء|الخميس|الجمعه)?"
_TIME = r"(?:\s*,?\s*\d{1,2}:\d{2}(?::\d{2})?\s*(?:صباحا|مساءا|مساء|am|pm|ص|م)?)?"


@dataclass
class Article:
    """One source document: cleaned display text plus metadata."""

    id: str  # the file name
    title: str
    date: str | None  # ISO yyyy-mm-dd when the page states one
    text: str  # cleaned, never normalized: this is what users see and what offsets point into
    sha256: str  # of the raw file bytes


_MONTH_NAMES = ["يناير", "فبراير", "مارس", "أبريل", "مايو", "يونيو", "يوليو", "أغسطس", "سبتمبر", "أكتوبر", "نوفمبر",
                "ديسمبر"]


def arabic_date(iso: str | None) -> str:
    """'2022-10-12' -> '12 أكتوبر 2022' (how the article's readers, and the model, write a date)."""
    if not iso:
        return ""
    year, month, day = (int(part) for part in iso.split("-"))
    return f"{day} {_MONTH_NAMES[month - 1]} {year}"


def find_dates(line: str) -> list[str]:
    """ISO dates written in a line, in the order they appear (Arabic month names or numbers)."""
    norm = normalize(line)
    found: list[tuple[int, str]] = []
    for m in _DATE_WORDS.finditer(norm):
        found.append((m.start(), _iso(m.group(3), _MONTHS[m.group(2)], m.group(1))))
    for m in _DATE_ISO.finditer(norm):
        found.append((m.start(), _iso(m.group(1), m.group(2), m.group(3))))
    for m in _DATE_DMY.finditer(norm):
        found.append((m.start(), _iso(m.group(3), m.group(2), m.group(1))))
    return [iso for _, iso in sorted(found) if iso]


def _iso(year: str, month: int | str, day: str) -> str:
    y, mo, d = int(year), int(month), int(day)
    return f"{y:04d}-{mo:02d}-{d:02d}" if 1 <= mo <= 12 and 1 <= d <= 31 and 1800 < y < 2200 else ""


def _is_date_only(line: str) -> bool:
    """A line that is nothing but a date (and maybe a weekday and a time): page metadata."""
    rest = _DATE_WORDS.sub(" ", normalize(line))
    rest = re.sub(_WEEKDAY + _TIME, " ", rest)
    return bool(find_dates(line)) and len(re.findall(r"\w+", rest)) == 0


def _strip_trailing_date(title: str) -> str:
    """'Some headline, اليوم الأربعاء 16 أبريل 2025 06:33 مساءً' -> 'Some headline'."""
    for sep in (",", "،", " - ", "|"):
        head, found, tail = title.rpartition(sep)
        if found and head.strip() and _is_date_only(tail):
            return head.strip()
    return title


def clean(raw: str) -> tuple[str, str | None, str]:
    """(title, date, cleaned text) of a scraped page."""
    lines = [ln.strip() for ln in raw.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
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
        if in_header and _is_date_only(bare):
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


def read_article(path: Path) -> Article:
    """Load and clean one article file; raises ValueError with a readable reason."""
    data = path.read_bytes()
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES // 1_000_000} MB")
    try:
        raw = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte {e.start}); convert it with `iconv -t UTF-8`") from e
    title, date, text = clean(raw)
    if not text:
        raise ValueError("no text left after removing boilerplate")
    return Article(path.name, title or path.stem, date, text, hashlib.sha256(data).hexdigest())


def load_articles(folder: Path) -> tuple[list[Article], list[str]]:
    """All readable articles of a folder, and one warning per file that was skipped."""
    articles, warnings = [], []
    seen_hashes: dict[str, str] = {}
    for path in sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in SUFFIXES and p.is_file()):
        try:
            article = read_article(path)
        except (ValueError, OSError) as e:
            warnings.append(f"skipped {path.name}: {e}")
            continue
        if article.sha256 in seen_hashes:
            warnings.append(f"skipped {path.name}: same content as {seen_hashes[article.sha256]}")
            continue
        seen_hashes[article.sha256] = path.name
        articles.append(article)
    return articles, warnings
