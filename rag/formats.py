"""Read a journalist's own files (saved web pages, PDFs, Word files) into clean display text, title and date."""

from __future__ import annotations

import codecs
import io
import re
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple

from rag.dates import find_dates
from rag.errors import RagError, require
from rag.files import MB

if TYPE_CHECKING:  # the libraries load only when a file of their kind is read
    from docx.document import Document
    from pypdf import PageObject, PdfReader

# The files read as articles, and the most bytes read of each: plain text (decoded by rag.ingest) and documents
# (read by READERS below).
TEXT_SUFFIXES = (".txt", ".md")
DOCUMENT_SUFFIXES = (".html", ".htm", ".pdf", ".docx")
SUFFIXES = (*TEXT_SUFFIXES, *DOCUMENT_SUFFIXES)
MAX_BYTES = {".txt": 5 * MB, ".md": 5 * MB, ".html": 10 * MB, ".htm": 10 * MB, ".pdf": 50 * MB, ".docx": 50 * MB}
# A Word file unpacks to its XML and its media. The XML is bounded like the text it holds: a few times the largest
# text file read (markup around every run of text). Media hardly compress, so they unpack to about the file's size.
MAX_MARKUP_BYTES = 4 * MAX_BYTES[".txt"]
MAX_UNZIPPED_BYTES = MAX_BYTES[".docx"] + MAX_MARKUP_BYTES
MARKUP_SUFFIXES = (".xml", ".rels")
TITLE_MAX_WORDS = 15
PROSE_MIN_WORDS = 5  # a page whose every line is shorter holds menus and link lists, not an article
DATE_LINES = 5  # a publication date is written in the first lines, near the headline
DATE_LINE_MAX_WORDS = 10  # ... on a short line of its own: a date inside a sentence is an event's date


@dataclass
class Extracted:
    """Text pulled out of a file: what users see and what citation offsets point into."""

    title: str  # "" when the file has none
    date: str | None  # ISO yyyy-mm-dd publication date when the file states one
    text: str  # clean display text in logical order, paragraphs separated by "\n"
    format: str  # "html", "pdf" or "docx"


def _require(module: str, package: str) -> ModuleType:
    """Import a reader library, or tell the user which pip package to install."""
    return require(module, "reading this file type", f"pip install {package}")


def _reason(what: str, error: BaseException) -> str:
    """A one-line message for a library error: no traceback, no multi-line dump."""
    lines = str(error).strip().splitlines()
    detail = " ".join(lines[0].split())[:160] if lines else type(error).__name__
    return f"{what}: {detail}"


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _paragraphs(lines: list[str]) -> str:
    """Non-empty lines, white space folded, joined by one newline."""
    return "\n".join(line for line in map(_one_line, lines) if line)


def _date_near_top(text: str) -> str | None:
    """The first date written on a short line at the top of the text (a dateline), else None."""
    for line in text.split("\n")[:DATE_LINES]:
        if len(line.split()) <= DATE_LINE_MAX_WORDS and (dates := find_dates(line)):
            return dates[0]
    return None


_JUNK_TITLE = re.compile(
    r"^(untitled.*|document\s*\d*|doc\d*|word document|microsoft word\b.*|.*\.(docx?|pdf|indd|rtf|txt|html?))$",
    re.IGNORECASE,
)


def _good_title(title: str | None) -> str:
    """A metadata title, or "" when it is a placeholder or a file name that tools write by default."""
    title = _one_line(title)
    return "" if _JUNK_TITLE.match(title) or not any(c.isalpha() for c in title) else title


# ---------------------------------------------------------------------------------------------------------------
# HTML

_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([-\w.:]+)""", re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# What browsers do with these labels (WHATWG encoding standard): Latin-1 pages are really Windows-1252.
_CHARSET_ALIASES = {"iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "us-ascii": "cp1252",
                    "ascii": "cp1252"}


def _decode_html(data: bytes) -> str:
    """Page bytes to text as a browser reads them: a BOM, valid UTF-8, the page's meta charset, else a guess."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(encoding, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if m := _META_CHARSET.search(data[:8192]):
        label = m.group(1).decode("ascii", errors="replace").lower()
        try:
            return data.decode(_CHARSET_ALIASES.get(label, label), errors="replace")
        except LookupError:
            pass  # an unknown label: guess as if there were none
    from charset_normalizer import from_bytes  # installed with trafilatura

    best = from_bytes(data).best()
    if best is None:
        raise ValueError("cannot tell the page's text encoding: save it as UTF-8")
    return str(best)


def from_html(data: bytes) -> Extracted:
    """Main text, title and publication date of a saved news page, without menus, share buttons or comments."""
    trafilatura = _require("trafilatura", "trafilatura")
    html = _decode_html(data)
    try:
        # No url is given, so neither trafilatura nor htmldate fetches anything: all comes from the page itself.
        # Precision: a section page's lists of headline links are not an article. No extensive date search: it
        # takes a copyright year in the footer for a publication date.
        doc = trafilatura.bare_extraction(
            html, include_comments=False, include_tables=True, with_metadata=True, favor_precision=True,
            date_extraction_params={"extensive_search": False, "original_date": True},
        )
    except Exception as e:  # lxml and trafilatura raise many types on broken markup: all mean "cannot read"
        raise ValueError(_reason("unreadable HTML page", e)) from e
    text = _paragraphs(doc.text.split("\n")) if doc and doc.text else ""
    if not any(len(line.split()) >= PROSE_MIN_WORDS for line in text.split("\n")):
        raise ValueError("no article text found in the page")
    # htmldate reads the page's metadata and markup; a dateline in Arabic words is found in the text.
    date = doc.date if doc.date and re.fullmatch(r"\d{4}-\d{2}-\d{2}", doc.date) else _date_near_top(text)
    return Extracted(_one_line(doc.title), date, text, "html")


# ---------------------------------------------------------------------------------------------------------------
# PDF. Arabic is drawn right to left: a PDF keeps each line's glyphs in drawing order (visual order), often as
# presentation forms. pypdf's plain mode reads them in that order and turns each right-to-left run around on its
# own, which leaves numbers and Latin words on the wrong side of the line. So the runs are taken as pypdf hands them
# to a visitor, put back in drawing order, and each whole line is read again in logical order; then the forms are
# folded to base letters.

# How pypdf's plain mode tells the runs apart (pypdf/_utils.py: RTL_CHARACTER_RANGES, NEUTRAL_CHARACTER_RANGES).
_PYPDF_RTL = re.compile(r"[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufeff]")
_PYPDF_NEUTRAL = re.compile(r"[\x00-\x2f\x3a-\x40\u0660-\u066d\u06f0-\u06f9\u2000-\u206f\u20a0-\u21ff]")
# Arabic presentation forms (and Latin ligatures such as "ﬁ") that PDF fonts map their shaped glyphs to.
# U+FEFF, the byte order mark, sits at the end of that block and is not one.
_FORMS = re.compile(r"[\ufb00-\ufb06\ufb50-\ufdff\ufe70-\ufefe]")
_HARAKAT = r"\u064b-\u065f\u0670"
_ARABIC_WORD = re.compile(rf"[\u0621-\u064a\u066e-\u06d3\u06fa-\u06ff\ufb50-\ufdff\ufe70-\ufefe{_HARAKAT}]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # a glyph the font gives no character for comes out as NUL
# pypdf puts a space where a glyph of another font (a fallback for punctuation) starts a little apart.
_SPACE_BEFORE_STOP = re.compile(r" +(?=[.,،؛;](?:\s|$))")
_SPLIT_DECIMAL = re.compile(r"(?<=\d) \. (?=\d)")  # "12 . 5": the same, around a decimal point
_MIRRORED = dict(zip("()[]{}<>«»‹›", ")(][}{><»«›‹", strict=True))
PARAGRAPH_GAP = 1.3  # a gap this many times the usual spacing of lines of that size separates paragraphs


def _fold_forms(text: str) -> str:
    """Presentation forms to base letters (lam-alef to two letters), leaving every other character as it is."""
    # An isolated haraka form (U+FE70...) decomposes to a space and the mark: keep the mark only.
    return _FORMS.sub(lambda m: unicodedata.normalize("NFKC", m.group()).lstrip(" "), text.replace("\ufeff", ""))


def _form(char: str) -> str:
    """'initial', 'medial', 'final', 'isolated' for an Arabic presentation form, else ''."""
    tag = unicodedata.decomposition(char)
    return tag[1:tag.index(">")] if tag.startswith("<") else ""


def _order_votes(line: str) -> int:
    """Positive when the line's Arabic words run right to left as drawn (visual order), negative when logical.

    Presentation forms tell directly: a word is written initial...final, so read backwards it shows final...initial.
    Lines in base letters fall back on the article: many words start with "ال", backwards they end with "لا".
    """
    votes = 0
    for word in _ARABIC_WORD.findall(line):
        word = re.sub(f"[{_HARAKAT}]", "", word)
        if not word:
            continue
        first, last = _form(word[0]), _form(word[-1])
        if first or last:
            votes += (first == "final") + (last == "initial") - (first == "initial") - (last == "final")
        elif len(word) > 3:
            votes += word.endswith("لا") - word.startswith("ال")
    return votes


def _kind(char: str) -> str:
    """'R' right-to-left letter, 'L' left-to-right letter, 'N' digit, 'CS' number separator, '' other neutral."""
    return {"R": "R", "AL": "R", "L": "L", "EN": "N", "AN": "N", "CS": "CS"}.get(unicodedata.bidirectional(char), "")


def _ltr_units(chars: str) -> list[str]:
    """Cut a stretch drawn right to left into units: left-to-right runs (Latin words, numbers) and single characters.

    This undoes the Unicode bidi rules that matter in news text: neutrals between Latin letters read with them
    ("New York"; "iPhone 15", a number after Latin joins it), the digits of a number stay together across one
    separator ("12.5", "10:30"), anything else between numbers reads right to left ("10 - 20", "%30" for "30%").
    """
    units: list[str] = []
    run = ""  # the left-to-right run being built
    pending = ""  # neutrals after it, until we know whether the run goes on
    latin = False  # the run has a Latin letter
    for char in chars:
        kind = _kind(char)
        if kind in ("L", "N"):
            if run and (latin or not pending or (kind == "N" and len(pending) == 1 and _kind(pending) == "CS")):
                run += pending + char
            else:
                units += [run, *pending] if run else [*pending]
                run, latin = char, False
            pending, latin = "", latin or kind == "L"
        elif run and kind != "R":
            pending += char
        else:
            units += [run, *pending, char] if run else [*pending, char]
            run, pending = "", ""
    return units + ([run, *pending] if run else [*pending])


def _rtl_span(chars: str) -> str:
    """A stretch drawn right to left, read from its right end; brackets drawn mirrored turn back."""
    return "".join(_MIRRORED.get(unit, unit) for unit in reversed(_ltr_units(chars)))


def _ltr_line(line: str) -> str:
    """A left-to-right line (mostly Latin): only its right-to-left stretches turn around."""
    out = []
    for latin, group in groupby(line, key=lambda char: _kind(char) == "L"):
        gap = "".join(group)
        strong = [i for i, char in enumerate(gap) if _kind(char) in ("R", "N")]
        if latin or not any(_kind(gap[i]) == "R" for i in strong):
            out.append(gap)
        else:  # the Arabic words with the numbers among them turn around, not the neutrals at their edges
            first, last = strong[0], strong[-1] + 1
            out.append(gap[:first] + _rtl_span(gap[first:last]) + gap[last:])
    return "".join(out)


_PUNCTUATION = set(".!?؟:;؛,،")


def _rtl_base(line: str, previous: bool | None, page_rtl: bool) -> bool:
    """Whether a line belongs to a right-to-left paragraph.

    A line never starts with a full stop or a comma, so one at a drawn end marks where the line ends. Else the letters
    at its two ends tell (a paragraph takes its direction from its first letter), else it goes on like the line
    before, else its main script tells, else the page's.
    """
    if (line[0] in _PUNCTUATION) != (line[-1] in _PUNCTUATION):
        return line[0] in _PUNCTUATION
    strong = [kind for kind in map(_kind, line) if kind in ("R", "L")]
    if strong and strong[0] == strong[-1]:
        return strong[0] == "R"
    if previous is not None:
        return previous
    rtl, ltr = strong.count("R"), strong.count("L")
    return page_rtl if rtl == ltr else rtl > ltr


def _logical_line(line: str, visual: bool, rtl: bool) -> str:
    """A line in drawing order, in logical order; `visual` (the page's order) decides when the line cannot tell."""
    votes = _order_votes(line)
    if not any(_kind(char) == "R" for char in line) or votes < 0 or (votes == 0 and not visual):
        return line  # no right-to-left text, or it is in logical order already
    return _rtl_span(line) if rtl else _ltr_line(line)


def _run_is_rtl(run: str) -> bool | None:
    """Whether pypdf turned a run around (a right-to-left run); None for a run of neutrals only."""
    strong = next((char for char in run if not _PYPDF_NEUTRAL.match(char)), None)
    return None if strong is None else bool(_PYPDF_RTL.match(strong))


class _Clip:
    """The heights a page's rectangular clipping paths let show, from the operators pypdf reports.

    Chromium paints a line cut by a page break on both pages and clips it away on the first; without this, the top
    of a tall letter ("أ") would come out as a word of its own. Other clipping shapes are taken as showing all.
    """

    def __init__(self) -> None:
        self.shown: tuple[float, float] | None = None  # (low, high) page heights; None: the whole page
        self.saved: list[tuple[float, float] | None] = []
        self.path: tuple[float, float] | None = None  # the rectangle being drawn, if the path is one rectangle
        self.rectangles = 0
        self.clipping = False

    def operator(self, op: bytes, args: list, cm: list[float], tm: list[float]) -> None:
        """Follow one content-stream operator (pypdf's visitor_operand_before)."""
        if op == b"q":
            self.saved.append(self.shown)
        elif op == b"Q":
            self.shown = self.saved.pop() if self.saved else None
        elif op == b"re" and len(args) == 4 and all(isinstance(a, (int, float)) for a in args):
            x, y, width, height = (float(a) for a in args)
            ends = [x * cm[1] + v * cm[3] + cm[5] for v in (y, y + height)]  # the rectangle's heights on the page
            self.path, self.rectangles = (min(ends), max(ends)), self.rectangles + 1
        elif op in (b"m", b"l", b"c", b"v", b"y", b"h"):
            self.rectangles += 2  # not a plain rectangle
        elif op in (b"W", b"W*"):
            self.clipping = True
        elif op in (b"n", b"f", b"F", b"f*", b"S", b"s", b"B", b"B*", b"b", b"b*"):  # the path is used: it clips now
            if self.clipping and self.rectangles == 1 and self.path:
                low, high = self.path
                self.shown = (max(low, self.shown[0]), min(high, self.shown[1])) if self.shown else self.path
            self.path, self.rectangles, self.clipping = None, 0, False

    def hides(self, height: float) -> bool:
        """Whether text on this baseline falls outside what the clip shows (1 pt of slack for rounding)."""
        return self.shown is not None and not self.shown[0] - 1 <= height <= self.shown[1] + 1


class _Line(NamedTuple):
    """A line of a PDF page."""

    height: float  # of its baseline on the page (y points up)
    size: float  # font size on the page
    text: str


def _drawn_lines(page: PageObject) -> list[_Line]:
    """The lines of a pypdf page that the page shows, their text in drawing order."""
    lines: list[_Line] = []
    parts: list[str] = []
    first: tuple[float, float] | None = None  # (height, size) of the line's first visible run
    rtl = False  # pypdf's direction, which a run of neutrals keeps
    clip = _Clip()

    def visit(text: str, cm: list[float], tm: list[float], font: object, size: float) -> None:
        nonlocal first, rtl
        run = text.removesuffix("\n")  # pypdf ends a run with "\n" at the end of a line
        rtl = direction if (direction := _run_is_rtl(run)) is not None else rtl
        height = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]  # the run's baseline in page space
        if not clip.hides(height):
            parts.append(run[::-1] if rtl else run)
            if first is None and run.strip():
                # The font size as drawn: text and page matrices scale it.
                first = height, size * abs(tm[2] * cm[1] + tm[3] * cm[3])
        if text.endswith("\n"):
            close()

    def close() -> None:
        nonlocal first
        line = _SPLIT_DECIMAL.sub(".", _one_line(_CONTROL.sub("", "".join(parts))))
        if line and first is not None:
            lines.append(_Line(*first, line))
        parts.clear()
        first = None

    page.extract_text(visitor_operand_before=clip.operator, visitor_text=visit)
    close()
    return lines


def _logical_page(drawn: list[_Line]) -> list[_Line]:
    """A page's lines in logical order with base letters."""
    # A page is made by one program: lines too short to tell their order read like the rest of the page.
    visual = sum(_order_votes(line.text) for line in drawn) >= 0
    kinds = Counter(_kind(char) for line in drawn for char in line.text)
    lines = []
    rtl = None
    for line in drawn:
        rtl = _rtl_base(line.text, rtl, kinds["R"] >= kinds["L"])
        text = _SPACE_BEFORE_STOP.sub("", _fold_forms(_logical_line(line.text, visual, rtl)))
        lines.append(line._replace(text=text))
    return lines


_PAGE_NUMBER = re.compile(r"^[\W_]*\d+[\W_]*(\d+[\W_]*)?$")  # "3", "- 3 -", "3/12"


def _drop_headers(pages: list[list[_Line]]) -> list[list[_Line]]:
    """Remove running headers, footers and page numbers: lines at a page's edge repeated at the same height on
    other pages (page numbers and dates change, so digits are masked)."""
    edges = [
        {i: (round(page[i].height), re.sub(r"\d+", "#", page[i].text)) for i in {0, 1, len(page) - 2, len(page) - 1}
         if 0 <= i < len(page)}
        for page in pages
    ]
    counts = Counter(key for page_edges in edges for key in set(page_edges.values()))
    repeated = {key for key, n in counts.items() if n >= 2 and n * 2 >= len(pages)}
    kept = []
    for page, page_edges in zip(pages, edges, strict=True):
        furniture = {i for i, key in page_edges.items() if key in repeated or _PAGE_NUMBER.match(page[i].text)}
        kept.append([line for i, line in enumerate(page) if i not in furniture])
    return kept


_SENTENCE_END = (".", "!", "?", "؟", ":", "»", '"', "”")
_HYPHENATED = re.compile(r"[A-Za-z]-$")


def _line_spacing(lines: list[_Line]) -> dict[float, float]:
    """The usual gap between two lines of one font size: most gaps, as a paragraph has several lines."""
    gaps: dict[float, list[float]] = {}
    for above, below in zip(lines, lines[1:], strict=False):
        if above.size == below.size and above.height > below.height:
            gaps.setdefault(above.size, []).append(above.height - below.height)
    return {size: sorted(sizes)[len(sizes) // 4] for size, sizes in gaps.items()}


def _same_paragraph(above: _Line, line: _Line, spacing: dict[float, float]) -> bool:
    """Whether a line goes on with the paragraph of the line above: same font size, the usual gap between them."""
    gap = above.height - line.height
    return above.size == line.size and 0 < gap <= PARAGRAPH_GAP * spacing.get(line.size, 0.0)


def _join_lines(lines: list[_Line]) -> list[str]:
    """A page's lines to paragraphs. A new font size, a wider gap above a line, a jump back up (a new column) or a
    short line that ends a sentence close a paragraph. Latin words hyphenated at a line end are joined again."""
    lines = [line._replace(size=round(line.size, 1)) for line in lines]
    spacing = _line_spacing(lines)
    width = max((len(line.text) for line in lines), default=0)
    paragraphs = [""]
    for above, line in zip([None, *lines], lines, strict=False):
        if above and not _same_paragraph(above, line, spacing):
            paragraphs.append("")
        if _HYPHENATED.search(paragraphs[-1]) and line.text[:1].islower():
            paragraphs[-1] = paragraphs[-1][:-1] + line.text
        else:
            paragraphs[-1] = f"{paragraphs[-1]} {line.text}".strip()
        if line.text.endswith(_SENTENCE_END) and len(line.text) < 0.7 * width:
            paragraphs.append("")
    return [p for p in paragraphs if p]


def _join_pages(pages: list[list[str]]) -> list[str]:
    """All paragraphs; one cut by a page break (no sentence end at the bottom of the page) is joined again."""
    paragraphs: list[str] = []
    for page in pages:
        if paragraphs and page and not paragraphs[-1].endswith(_SENTENCE_END):
            paragraphs[-1] += " " + page[0]
            page = page[1:]
        paragraphs += page
    return paragraphs


def _open_pdf(pypdf: ModuleType, data: bytes) -> PdfReader:
    """A PdfReader with the document unlocked, or ValueError."""
    if b"%PDF-" not in data[:1024]:  # readers accept the header anywhere in the first kilobyte
        raise ValueError("not a PDF file")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        # Many PDFs are encrypted with an empty user password (only editing is restricted): those open.
        locked = reader.is_encrypted and not reader.decrypt("")
    except pypdf.errors.DependencyError as e:
        raise RagError(f"this PDF is AES-encrypted: reading it needs pip install cryptography ({e})") from e
    except Exception as e:  # pypdf raises many types on damaged files: all mean "cannot read"
        raise ValueError(_reason("damaged or incomplete PDF", e)) from e
    if locked:
        raise ValueError("encrypted PDF: remove the password first")
    return reader


def _unreadable(text: str) -> bool:
    """Text of fonts without a Unicode map: replacement characters and private-use code points."""
    chars = [c for c in text if not c.isspace()]
    junk = sum(c == "\ufffd" or unicodedata.category(c) == "Co" for c in chars)
    return junk * 3 > len(chars)


def from_pdf(data: bytes) -> Extracted:
    """Text layer of a PDF in logical order with base letters, and its title; the date is the one written on top."""
    pypdf = _require("pypdf", "pypdf")
    reader = _open_pdf(pypdf, data)
    try:
        drawn = [_drawn_lines(page) for page in reader.pages]
        meta_title = reader.metadata.title if reader.metadata else None
    except Exception as e:  # as in _open_pdf: a damaged page or font
        raise ValueError(_reason("damaged PDF", e)) from e
    pages = _drop_headers([_logical_page(lines) for lines in drawn])
    text = _paragraphs(_join_pages([_join_lines(page) for page in pages]))
    if not any(char.isalnum() for char in text):
        raise ValueError("no text layer (a scanned PDF?): run OCR first")
    if _unreadable(text):
        raise ValueError("the PDF's fonts have no text map, so its text cannot be read: run OCR first")
    # The metadata title (Chromium writes the page's <title> there), else a first line short enough for a headline.
    first_line = next((line.text for page in pages for line in page), "")
    headline = first_line if len(first_line.split()) <= TITLE_MAX_WORDS else ""
    title = _good_title(_fold_forms(meta_title or "")) or headline
    # The PDF's CreationDate is when it was printed or exported, not when the article was published.
    return Extracted(title, _date_near_top(text), text, "pdf")


# ---------------------------------------------------------------------------------------------------------------
# DOCX


def _zip_names(data: bytes) -> list[str]:
    """The files in a .docx, or ValueError when the bytes are no zip archive of a sane unpacked size."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except Exception as e:  # BadZipFile, and the odd OSError or ValueError on a damaged directory
        raise ValueError(
            "not a readable .docx (zip) file: damaged, an old .doc or password-protected? save it again as .docx"
        ) from e
    # The sizes the archive declares bound what is read: zipfile stops inflating a member at its declared size.
    markup = sum(info.file_size for info in infos if info.filename.lower().endswith(MARKUP_SUFFIXES))
    if markup > MAX_MARKUP_BYTES:
        raise ValueError(f"the .docx unpacks to {markup / MB:.0f} MB of XML, more than the {MAX_MARKUP_BYTES // MB} MB "
                         "a Word file of the largest text read needs")
    if sum(info.file_size for info in infos) > MAX_UNZIPPED_BYTES:
        raise ValueError(f"the .docx unpacks to more than {MAX_UNZIPPED_BYTES // MB} MB")
    return [info.filename for info in infos]


def _docx_blocks(document: Document) -> list[tuple[str, str]]:
    """(style name, text) of each paragraph and of each table row, in document order."""
    from docx.table import Table

    blocks = []
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            for row in item.rows:
                # A merged cell comes back once per grid column it spans: keep it once.
                cells = [c.text for i, c in enumerate(row.cells) if i == 0 or c._tc is not row.cells[i - 1]._tc]
                blocks.append(("", " | ".join(_one_line(text) for text in cells if text.strip())))
        else:
            blocks.append((getattr(item.style, "name", "") or "", item.text))
    return blocks


def _docx_title(blocks: list[tuple[str, str]], core_title: str | None) -> str:
    """The Title or Heading 1 paragraph the reader sees first, else the document's title property."""
    for style, text in blocks:
        if style.lower() in ("title", "heading 1") and _one_line(text):
            return _one_line(text)
    return _good_title(core_title)


def from_docx(data: bytes) -> Extracted:
    """Paragraphs and table rows of a Word file in order, its title and date."""
    docx = _require("docx", "python-docx")
    names = _zip_names(data)
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = _docx_blocks(document)
        core = document.core_properties
        core_title, created = core.title, core.created
    except Exception as e:  # python-docx raises KeyError, ValueError, lxml errors... on a damaged or foreign zip
        if "word/document.xml" not in names:
            raise ValueError("a zip file but no Word document: it has no word/document.xml") from e
        raise ValueError(_reason("damaged Word file", e)) from e
    text = _paragraphs([text for _, text in blocks])
    if not text:
        raise ValueError("no text in the Word document")
    # The file's creation date only when the text states none: it is when writing began, near publication.
    date = _date_near_top(text) or (created.date().isoformat() if created else None)
    return Extracted(_docx_title(blocks, core_title), date, text, "docx")


READERS: dict[str, Callable[[bytes], Extracted]] = {
    ".html": from_html,
    ".htm": from_html,
    ".pdf": from_pdf,
    ".docx": from_docx,
}
