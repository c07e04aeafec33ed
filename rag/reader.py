"""The reader: the answer is a span copied from the evidence, chosen by the model, never written by it.

The question asks for a kind of answer (rag.answer_types). The model first answers in its own words, and that reply
is snapped onto the run of evidence words it names. Where it names none, or none of the kind asked for, the model
answers again with its output confined to the evidence (a token prefix tree over the sentences, or over the dates,
numbers or places they hold). A yes/no question is decided by the model's scores of نعم and لا together with the
negations of the sentence that decides it. Lists of countries or cities are collected across the evidence. The
citation of each part is the sentence it was copied from, with exact offsets.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from rag.answer_types import DATE, LIST, NUMBER, PLACE, YESNO, fold, spans_of
from rag.evidence import Evidence, format_evidence
from rag.generators import Generator
from rag.normalize import normalize, terms, tokens
from rag.prompts import load_prompt, load_strings
from rag.spans import find_span, match_span

TYPED = (DATE, NUMBER, PLACE)
NEGATION_WEIGHT = 3.0  # a negation in the deciding sentence outweighs a model that leans yes by less than e^3
_PLACE_LISTS = frozenset(normalize(w) for w in "الدول البلدان الدولتان الدولتين المدن العواصم البلدين".split())


@dataclass
class Part:
    """A span copied from one evidence sentence: its text and its offsets in the article."""

    text: str
    evidence: Evidence
    start: int
    end: int


@dataclass
class Reading:
    """What the reader found: the parts of the answer (one span; several for a list), or none (refuse)."""

    kind: str
    parts: list[Part] = field(default_factory=list)
    decision: str = ""  # نعم or لا for a yes/no question, decided on parts[0].evidence
    method: str = ""  # snapped, copied, typed, yesno, list, or none
    confidence: float = -math.inf  # mean log-probability per token of the copied span (0 = certain)
    raw: str = ""  # the model's own reply


def messages(question: str, evidence: list[Evidence], kind: str, template: str = "reader_question") -> list[dict]:
    """System prompt and worked example (a fixed prefix, cached by llama.cpp), then the evidence and question. Only
    questions asking when see publication dates, and only beside sentences that give no date of their own."""
    strings = load_strings("reader")
    passages = format_evidence(evidence, lambda ev: kind == DATE and not spans_of(ev.text, DATE), strings["published"])
    return [
        {"role": "system", "content": load_prompt("reader_system")},
        {"role": "user", "content": load_prompt("reader_example_question")},
        {"role": "assistant", "content": load_prompt("reader_example_answer")},
        {"role": "user", "content": load_prompt(template).format(passages=passages, question=question)},
    ]


def adds_to(span: str, question: str) -> bool:
    """True when a span says something the question does not: an answer, not the question restated."""
    asked = set(terms(question))
    return any(t not in asked for t in terms(span))


def typed_spans(evidence: list[Evidence], kind: str, question: str) -> list[tuple[Evidence, int, int]]:
    """The dates, numbers or places of the evidence sentences, except those the question itself names."""
    named = {fold(question[s:e])[0] for s, e in spans_of(question, kind)}
    return [(ev, s, e) for ev in evidence for s, e in spans_of(ev.text, kind) if fold(ev.text[s:e])[0] not in named]


_EDGES = " \t\n.,;:!?،؛؟\"'«»“”()[]-–—"


def part_at(evidence: list[Evidence], index: int, start: int, end: int) -> Part:
    """The part of evidence[index] from start to end (offsets in the sentence), without punctuation at its edges."""
    ev = evidence[index]
    while start < end and ev.text[start] in _EDGES:
        start += 1
    while end > start and ev.text[end - 1] in _EDGES:
        end -= 1
    return Part(ev.text[start:end], ev, ev.start + start, ev.start + end)


def snap(reply: str, evidence: list[Evidence]) -> Part | None:
    """The run of evidence words a free reply names: word for word, else the best fuzzy match."""
    texts = [ev.text for ev in evidence]
    found = find_span(reply, texts) or match_span(reply, texts)
    return part_at(evidence, found.index, found.start, found.end) if found else None


def copy(generator: Generator, chat: list[dict], spans: list[str], max_tokens: int, whole: bool) -> tuple[str, float]:
    """The model's reply confined to the spans, and its mean log-probability per token."""
    pieces = list(generator.extract(chat, spans, max_tokens, whole))
    last = pieces[-1] if pieces else None
    confidence = last.logprob / last.tokens if last and last.logprob is not None and last.tokens else -math.inf
    return "".join(p.text for p in pieces).strip(), confidence


def deciding(question: str, evidence: list[Evidence]) -> Evidence:
    """The sentence that holds most of the question's terms (the first of equals)."""
    asked = set(terms(question))
    return max(evidence, key=lambda ev: (len(asked & set(terms(ev.text))), -evidence.index(ev)))


def negated(sentence: str, question: str, negations: list[str]) -> bool:
    """True when the sentence holds a negation the question does not."""
    words = set(tokens(sentence)) - set(tokens(question))
    return any(normalize(n) in words for n in negations)


def read_yesno(question: str, evidence: list[Evidence], generator: Generator) -> Reading:
    """Yes or no from the model's scores of the two words, tipped to no by a negation in the deciding sentence."""
    strings = load_strings("reader")
    quote = deciding(question, evidence)
    scores = generator.choose(messages(question, evidence, YESNO, "reader_yesno"), [strings["yes"], strings["no"]])
    lean = scores[strings["yes"]] - scores[strings["no"]]
    if negated(quote.text, question, strings["negations"]):
        lean -= NEGATION_WEIGHT
    decision = strings["yes"] if lean > 0 else strings["no"]
    confidence = -math.log1p(math.exp(-abs(lean)))  # log-probability of the side taken, given the two
    return Reading(YESNO, [Part(quote.text, quote, quote.start, quote.end)], decision, "yesno", confidence)


def read_places(question: str, evidence: list[Evidence]) -> Reading | None:
    """Every country or city the evidence names for 'ما الدول…؟', except those the question names."""
    found, seen = [], set()
    for ev, s, e in typed_spans(evidence, PLACE, question):
        key = fold(ev.text[s:e])[0]
        if key not in seen:
            seen.add(key)
            found.append(Part(ev.text[s:e], ev, ev.start + s, ev.start + e))
    return Reading(LIST, found, method="list", confidence=0.0) if len(found) > 1 else None


def read(question: str, evidence: list[Evidence], generator: Generator, kind: str,
         max_tokens: int) -> Iterator[str | Reading]:
    """Yield the model's own reply as it comes, then the Reading."""
    if not evidence:
        yield Reading(kind, method="none")
        return
    if kind == YESNO and "choose" in generator.features:
        yield read_yesno(question, evidence, generator)
        return
    if kind == LIST and set(tokens(question)) & _PLACE_LISTS and (places := read_places(question, evidence)):
        yield places
        return
    chat = messages(question, evidence, kind)
    pieces = []
    for piece in generator.generate(chat, max_tokens, ["\n"], 0.0):
        pieces.append(piece)
        yield piece
    raw = "".join(pieces).strip()
    part = snap(raw, evidence)
    if part and not adds_to(part.text, question):
        part = None
    typed = typed_spans(evidence, kind, question) if kind in TYPED else []
    if typed and part and not spans_of(part.text, kind):
        part = None  # the reply names no date (number, place) where the question asks for one
    can_copy = "extract" in generator.features
    if part:
        confidence = copy(generator, chat, [part.text], max_tokens, whole=True)[1] if can_copy else 0.0
        yield Reading(kind, [part], method="snapped", confidence=confidence, raw=raw)
        return
    if not can_copy:
        yield Reading(kind, method="none", raw=raw)
        return
    spans = [ev.text[s:e] for ev, s, e in typed] or [ev.text for ev in evidence]
    text, confidence = copy(generator, chat, spans, max_tokens, whole=bool(typed))
    part = snap(text, evidence)
    method = "typed" if typed else "copied"
    if part is None or not adds_to(part.text, question):
        yield Reading(kind, method="none", confidence=confidence, raw=raw)
        return
    yield Reading(kind, [part], method=method, confidence=confidence, raw=raw)
