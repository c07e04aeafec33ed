"""Evidence: the sentences of the retrieved passages a reader gets, ranked by how well they cover the question and
whether they hold an answer of the kind asked for; kept in reading order, with their place in the article."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from rag.answer_types import DATE, NUMBER, PLACE, fold, spans_of
from rag.chunk import sentence_spans
from rag.dates import arabic_date
from rag.normalize import terms
from rag.stores.base import Passage

_CLAUSE = re.compile(r"\s*[،,؛]\s+")
MAX_UNIT_WORDS = 40  # a longer sentence is cut into overlapping pairs of clauses
TYPE_BONUS = 0.3  # a sentence holding a span of the asked kind (a date for "متى") ranks this much higher
DENSE_WEIGHT = 0.2  # the passage's cosine breaks ties between sentences that cover the question as well


@dataclass
class Evidence:
    """One sentence given to the reader: passage number n and its place in the article."""

    n: int
    source: str
    title: str
    date: str | None
    start: int  # offsets in the article text
    end: int
    text: str
    score: float = 0.0  # how well it answers the question (rank_sentences)
    shown: bool = True  # given to the model to read; the others only propose candidates (rag.reading.candidates)


def units(text: str, max_words: int | None = None) -> list[tuple[int, int]]:
    """Sentence spans of a text; a sentence over max_words (MAX_UNIT_WORDS) becomes overlapping pairs of clauses,
    so that a clause keeps the fact stated just before it ('زار الدوحة في فبراير 2007، وهي أول زيارة له')."""
    max_words = max_words or MAX_UNIT_WORDS
    out = []
    for s, e in sentence_spans(text):
        if len(text[s:e].split()) <= max_words:
            out.append((s, e))
            continue
        clauses, start = [], s
        for m in _CLAUSE.finditer(text, s, e):
            if len(text[start : m.start()].split()) >= 8:
                clauses.append((start, m.start()))
                start = m.end()
        clauses.append((start, e))
        out += [(a[0], b[1]) for a, b in zip(clauses, clauses[1:], strict=False)] or clauses
    return out


@dataclass
class Ranked:
    """A sentence of a retrieved passage with its score."""

    score: float
    rank: int  # of its passage
    start: int  # offsets in the passage
    end: int
    passage: Passage

    def evidence(self, n: int, shown: bool = True) -> Evidence:
        """The sentence as evidence numbered n, with offsets in the article."""
        c = self.passage.chunk
        return Evidence(n, c.article_id, c.title, c.date, c.start + self.start, c.start + self.end,
                        c.text[self.start : self.end], self.score, shown)


def rank_sentences(question: str, passages: list[Passage], weights: dict[str, float], kind: str) -> list[Ranked]:
    """The sentences of the passages, best first: the idf-weighted share of the question's terms they hold, plus a
    bonus when they hold a date, number or place the question asks for (one the question does not already name)."""
    wanted = set(terms(question))
    total = sum(weights.get(t, 0.0) for t in wanted) or 1.0
    named = {fold(question[s:e])[0] for s, e in spans_of(question, kind)} if kind in (DATE, NUMBER, PLACE) else set()
    ranked = []
    for rank, passage in enumerate(passages):
        text = passage.chunk.text
        for s, e in units(text):
            sentence = text[s:e]
            coverage = sum(weights.get(t, 0.0) for t in wanted & set(terms(sentence))) / total
            typed = kind in (DATE, NUMBER, PLACE) and any(
                fold(sentence[a:b])[0] not in named for a, b in spans_of(sentence, kind))
            score = coverage + TYPE_BONUS * typed + DENSE_WEIGHT * passage.dense - 0.01 * rank
            ranked.append(Ranked(score, rank, s, e, passage))
    ranked.sort(key=lambda r: (-r.score, r.rank, r.start))
    return ranked


def select(ranked: list[Ranked], limit: int, share: float, more: int = 0) -> list[Evidence]:
    """The `limit` best sentences (none scoring below `share` of the best one) shown to the model, and the next
    `more` best ones (not shown: they only propose candidates), in reading order, numbered by passage."""
    if not ranked:
        return []
    shown = {id(r) for r in ranked[:limit] if r.score >= share * ranked[0].score}
    best = [r for r in ranked[: limit + more] if id(r) in shown or more]
    best.sort(key=lambda r: (r.rank, r.start))
    numbers: dict[int, int] = {}
    return [r.evidence(numbers.setdefault(r.rank, len(numbers) + 1), id(r) in shown) for r in best]


def whole_passages(passages: list[Passage]) -> list[Evidence]:
    """Each retrieved passage whole, as evidence (the baseline that sentence selection is measured against)."""
    return [
        Evidence(n, p.chunk.article_id, p.chunk.title, p.chunk.date, p.chunk.start, p.chunk.end, p.chunk.text)
        for n, p in enumerate(passages, 1)
    ]


def heading(evidence: Evidence, dated: bool = True, label: str = "") -> str:
    """The passage's title, and its publication date when asked (after `label`, e.g. 'تاريخ النشر: ')."""
    date = arabic_date(evidence.date) if dated else ""
    return f"{evidence.title}، {label}{date}" if date else evidence.title


def format_evidence(evidence: list[Evidence], dated: Callable[[Evidence], bool] = lambda _: True,
                    label: str = "") -> str:
    """'[n] (title، date) sentence sentence' lines, one per passage; the date only where dated(sentence)."""
    lines: dict[int, list[str]] = {}
    heads: dict[int, str] = {}
    for ev in evidence:
        heads.setdefault(ev.n, f"[{ev.n}] ({heading(ev, dated(ev), label)})")
        lines.setdefault(ev.n, []).append(" ".join(ev.text.split()))  # one line per passage: data, never a header
    return "\n".join(f"{heads[n]} {' '.join(lines[n])}" for n in sorted(lines))
