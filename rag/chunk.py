"""Split articles into passages (with offsets into the article text) and passages into sentences."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from rag.article import Article

# Paragraphs first, then lines, then Arabic and Latin sentence ends, then clause marks, then words.
SEPARATORS = ["\n\n", "\n", ". ", "؟", "?", "!", "؛", "،", ", ", " ", ""]
_SENTENCE_END = re.compile(r"(?<=[.!?؟؛])[\"”»)]*\s+|\n+")


@dataclass
class Chunk:
    """A passage of one article; text == article.text[start:end]."""

    id: str
    article_id: str
    title: str
    date: str | None
    start: int
    end: int
    text: str

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def chunk_article(article: Article, size: int, overlap: int) -> list[Chunk]:
    """Cut an article into passages of about `size` characters that end at sentence boundaries."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(
        chunk_size=size,
        chunk_overlap=overlap,
        separators=SEPARATORS,
        keep_separator="end",
        strip_whitespace=True,
    )
    text = article.text
    chunks, previous_start, previous_end = [], -1, 0
    for piece in splitter.split_text(text):
        start = _place(text, piece, previous_start, previous_end, overlap)
        chunks.append(Chunk(f"{article.id}#{len(chunks)}", article.id, article.title, article.date, start,
                            start + len(piece), piece))
        previous_start, previous_end = start, start + len(piece)
    return chunks


def _place(text: str, piece: str, previous_start: int, previous_end: int, overlap: int) -> int:
    """Where a passage starts in the text: between where the overlap with the passage before can begin and the first
    word after it, at the first place there that adds text the passage before did not have (so that a repeated
    sentence is found at its own place, not at an earlier copy)."""
    low = max(previous_start + 1, previous_end - overlap)
    high = len(text) - len(text[previous_end:].lstrip())
    start = text.find(piece, low)
    while 0 <= start <= high and start + len(piece) <= previous_end:
        start = text.find(piece, start + 1)
    if 0 <= start <= high:
        return start
    return next(at for at in (text.find(piece, low), text.find(piece, previous_start + 1), text.find(piece)) if at >= 0)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence in text, trimmed of surrounding white space."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start() + len(m.group(0).rstrip())))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out
