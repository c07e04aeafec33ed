"""Candidate answers: every way the reader can answer proposes spans copied from the evidence, never written.

The question asks for a kind of answer (rag.answer_types). The model answers in its own words, and that reply is
snapped onto the run of evidence words it names; it answers again with its output confined to the evidence (a token
prefix tree over the sentences, or over the dates, numbers or places they hold). Beside these two, the evidence
itself proposes its typed spans, the definition of what the question asks about, its clauses, and lists of places.
A yes/no question is decided by the negations of the sentence that decides it and by the model's scores of نعم and
لا. Which candidate is the answer, if any, is for the selector (rag.reading.selector) to say.

The model reads the evidence with Persian letter forms and digits folded to Arabic ones (rag.normalize.fold_letters,
character for character), so every span it picks has the same offsets in the article's own text.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from rag.answer_types import DATE, LIST, NUMBER, NUMBER_WORDS, PLACE, YESNO, defines, focus, fold, spans_of
from rag.chunk import sentence_spans
from rag.cite import is_instruction
from rag.config import CANDIDATE_SOURCES
from rag.evidence import Evidence, format_evidence
from rag.generators import Generator
from rag.normalize import STOPWORDS, fold_letters, normalize, stem, terms, tokens
from rag.prompts import load_prompt, load_strings
from rag.spans import Found, find_run, find_span, word_starts

TYPED = (DATE, NUMBER, PLACE)
SOURCES = CANDIDATE_SOURCES  # the ways a candidate is proposed
NEGATION_REACH = 3  # a negation this many words before a word of the question negates it ("لم تلتزم")
NEGATION_WEIGHT = 3.0  # a negation elsewhere in the deciding sentence tips a model leaning yes by less than e^3
PLACE_LIST_SHARE = 0.8  # places are listed from the sentences scoring at least this share of the deciding one
_PLACE_LISTS = frozenset(normalize(w) for w in "الدول البلدان الدولتان الدولتين المدن العواصم البلدين".split())
_EDGES = " \t\n.,;:!?\"'«»“”()[]-–—،؛؟"


@dataclass
class Part:
    """A span copied from one evidence sentence: its text and its offsets in the article."""

    text: str
    evidence: Evidence
    start: int
    end: int


def messages(question: str, evidence: list[Evidence], kind: str, template: str = "reader_question") -> list[dict]:
    """System prompt and worked examples (a fixed prefix, cached by llama.cpp), then the evidence and question. Only
    questions asking when see publication dates, and only beside sentences that give no date of their own."""
    strings = load_strings("reader")
    shown = [dataclasses.replace(ev, title=fold_letters(ev.title), text=fold_letters(ev.text))
             for ev in evidence if ev.shown]
    passages = format_evidence(shown, lambda ev: kind == DATE and not spans_of(ev.text, DATE), strings["published"])
    shots = [turn for example in load_strings("reader_examples")["examples"]
             for turn in ({"role": "user", "content": example["question"].strip()},
                          {"role": "assistant", "content": example["answer"]})]
    return [
        {"role": "system", "content": load_prompt("reader_system")},
        *shots,
        {"role": "user", "content": load_prompt(template).format(passages=passages, question=question)},
    ]


SAME_NAME = 0.8  # terms this alike (difflib ratio, 5 letters or more) are one name spelled two ways


def adds_to(span: str, question: str) -> bool:
    """True when a span says something the question does not: an answer, not the question restated (nor its
    names spelled another way: 'ريشارد فاغنر' for 'من هو ريتشارد فاغنر؟')."""
    asked = set(terms(question))

    def said(term: str) -> bool:
        return term in asked or len(term) >= 5 and any(SequenceMatcher(None, term, a).ratio() >= SAME_NAME
                                                       for a in asked)

    return not all(said(t) for t in terms(span))


def typed_spans(evidence: list[Evidence], kind: str, question: str) -> list[tuple[Evidence, int, int]]:
    """The dates, numbers or places of the evidence sentences, except those the question itself names."""
    named = {fold(question[s:e])[0] for s, e in spans_of(question, kind)}
    return [(ev, s, e) for ev in evidence for s, e in spans_of(ev.text, kind) if fold(ev.text[s:e])[0] not in named]


def part_of(ev: Evidence, start: int, end: int) -> Part:
    """The part of a sentence from start to end (offsets in the sentence), without punctuation at its edges."""
    while start < end and ev.text[start] in _EDGES:
        start += 1
    while end > start and ev.text[end - 1] in _EDGES:
        end -= 1
    return Part(ev.text[start:end], ev, ev.start + start, ev.start + end)


TRIM_ASKED_FROM = 4  # the question's own words are cut from the edges of a span of this many words or more


def trim(part: Part, question: str) -> Part:
    """A span without function words at its edges, nor, if it is long, the question's own words ('قناة الجزيرة
    الفضائية الناطقة بالعربية' for 'ما القناة…؟' starts at 'الجزيرة'); never less than one word."""
    ev = part.evidence
    local = part.start - ev.start
    text = part.text
    words = [(local + s, local + s + len(w), w) for s, w in zip(word_starts(text), text.split(), strict=True)]
    asked = set(terms(question)) if len(words) >= TRIM_ASKED_FROM else set()

    def idle(word: str) -> bool:
        key = normalize(word).strip(_EDGES)
        return not key or key in STOPWORDS or bool(asked) and all(t in asked for t in terms(word))

    while len(words) > 1 and idle(words[0][2]):
        words.pop(0)
    while len(words) > 1 and idle(words[-1][2]):
        words.pop()
    return part_of(ev, words[0][0], words[-1][1])


def head(part: Part, question: str) -> Part:
    """A span grows by the word before it when that word is what the question asks about: the answer to 'ما
    الوكالة…؟' is 'وكالة الأنباء القطرية', not 'الأنباء القطرية'."""
    ev = part.evidence
    local = part.start - ev.start
    before = ev.text[:local].rstrip()
    word = before.split()[-1] if before.split() else ""
    key = normalize(word).strip(_EDGES)
    for asked in focus(question):
        for form in (asked, asked.removeprefix("ال")):
            clitic = key[: len(key) - len(form)]
            if len(form) > 2 and key.endswith(form) and clitic in _CLITICS and len(word) == len(key):
                return part_of(ev, len(before) - len(word) + len(clitic), local + len(part.text))
    return part


_CLITICS = frozenset({"", "و", "ف", "ب", "ل", "ك", "وب", "فب", "ول", "فل", "وك"})


def widen(part: Part, kind: str) -> Part:
    """A date, number or place cut short by the reply grows to the whole span of that kind it overlaps
    ('ديسمبر عام 1991' -> 'السادس من ديسمبر عام 1991')."""
    ev = part.evidence
    start, end = part.start - ev.start, part.end - ev.start
    for s, e in spans_of(ev.text, kind):
        if s < end and start < e:
            start, end = min(start, s), max(end, e)
    return part_of(ev, start, end)


_IS = "هو|هي|هم|هما|يعد|تعد|يعتبر|تعتبر"  # the copulas: what comes after them says what the subject is
_COPULA = re.compile(rf"(?:\s*\([^()]*\)|\s*[:،,–—-]|\s*(?:{_IS}|عبارة عن)(?=\s))*\s*")
_DEFINING = re.compile(rf"(?<!\S)و?(?:{_IS}|كان|كانت)(?=\s)")
_CLAUSE = re.compile(r"[^،,.;؛:()\n]+")
DEFINITION_WORDS = 15
DEFINING_REACH = 20  # words from a subject to its copula ('لوكيوس أبوليوس و بالأمازيغية أفولاي (…) ترعرع في … هو')


def definition(part: Part) -> Part | None:
    """What the sentence says its subject is, after the subject the reply named ('ضمور الخلايا هو انكماش أو تقلص…'
    -> 'انكماش أو تقلص…'): the clause after the subject's copula, or right after the subject, past a parenthesis;
    none where the clause goes on with a function word ('… بوغدانوف، إن …')."""
    ev = part.evidence
    at = part.end - ev.start
    copula = _DEFINING.search(ev.text, at)
    if copula and len(ev.text[at : copula.start()].split()) <= DEFINING_REACH:
        at = copula.end()
    elif not _COPULA.match(ev.text, at).group().strip():
        # no copula, nor a parenthesis or comma after the subject: the sentence goes on ('بالاتحاد الروسي ودول…')
        return None
    return said_after(ev, at)


def definition_in(question: str, evidence: list[Evidence]) -> Part | None:
    """The first definition in the evidence of what the question asks about: the clause after a copula that follows
    the first word of its subject ('ضمور هو انكماش…' for 'ماهو ضمور الخلايا؟'; not 'بوتسوانا هي…' for 'ما هو تعداد
    سكان بوتسوانا؟')."""
    subject = set(terms(" ".join(focus(question)[:1])))
    for ev in evidence:
        for copula in _DEFINING.finditer(ev.text):
            # the subject of this copula: its own clause, not one before a comma ('تفكك الاتحاد السوفيتي، كانت قطر…')
            before = re.split(r"[،,.;؛:]", ev.text[: copula.start()])[-1].split()[-DEFINING_REACH:]
            if subject & set(terms(" ".join(before))) and (part := said_after(ev, copula.end())):
                return part
    return None


def said_after(ev: Evidence, at: int) -> Part | None:
    """The clause from offset at, past a copula or a parenthesis, at most DEFINITION_WORDS words; none when it starts
    with a function word."""
    start = _COPULA.match(ev.text, at).end()
    clause = _CLAUSE.match(ev.text, start)
    words = list(re.finditer(r"\S+", clause.group())) if clause else []
    if not words or normalize(words[0].group()) in STOPWORDS:
        return None
    return part_of(ev, start, start + words[:DEFINITION_WORDS][-1].end())


def named_span(part: Part | None, reply: str, typed: list[tuple[Evidence, int, int]], kind: str) -> Part | None:
    """The part the reply snapped to or, where it holds none of the numbers (places) the reply names, the evidence's
    span that names one: '2.773،000' is '2،773،000'; 'كازاخستان' at the end of a garbled sentence is the answer."""
    said = _names(reply, kind)
    if not said or part and said & _names(part.text, kind):
        return part
    return next((part_of(ev, s, e) for ev, s, e in typed if _names(ev.text[s:e], kind) & said), part)


def _names(text: str, kind: str) -> set[str]:
    """The numbers of a text as bare digits, or its places folded."""
    if kind == NUMBER:
        return digits(text)
    return {fold(text[s:e])[0] for s, e in spans_of(text, kind)}


_NUMERAL = r"\d+(?:[.,،٬٫]\d+)*"  # digits with any separators: '2.773،000' and '2،773،000' are one number


def digits(text: str, pattern: str = _NUMERAL) -> set[str]:
    """The numbers (or years, with a year pattern) of a text as bare digits."""
    return {re.sub(r"\D", "", n) for n in re.findall(pattern, text)}


def locate(found: Found | None, evidence: list[Evidence]) -> Part | None:
    """The part a match found in the (folded) sentences."""
    return part_of(evidence[found.index], found.start, found.end) if found else None


def copy(generator: Generator, chat: list[dict], spans: list[str], max_tokens: int, whole: bool) -> tuple[str, float]:
    """The model's reply confined to the spans, and its mean log-probability per token (0 where unknown)."""
    pieces = list(generator.extract(chat, spans, max_tokens, whole))
    scored = [p for p in pieces if p.logprob is not None]
    count = sum(p.tokens for p in scored)
    confidence = sum(p.logprob for p in scored) / count if count else 0.0
    return "".join(p.text for p in pieces).strip(), confidence


def deciding(evidence: list[Evidence]) -> Evidence:
    """The sentence shown to the model that best answers the question (the first of equals)."""
    shown = [ev for ev in evidence if ev.shown] or evidence
    return max(shown, key=lambda ev: (ev.score, -shown.index(ev)))


def negation(sentence: str, question: str, negations: list[str]) -> str:
    """'near' when a negation the question lacks stands just before one of the question's words in the sentence,
    'far' when it stands elsewhere, '' when there is none."""
    asked = {stem(t) for t in tokens(question)}
    negators = {normalize(n) for n in negations} - set(tokens(question))
    words = tokens(sentence)
    found = ""
    for i, word in enumerate(words):
        if word in negators or word[:1] in "وف" and word[1:] in negators:  # "ولم"
            near = any(stem(w) in asked for w in words[i + 1 : i + 1 + NEGATION_REACH])
            found = "near" if near else found or "far"
    return found


@dataclass
class Candidate:
    """A possible answer: the span(s) it copies (several for a list), or a yes/no decision on a sentence, and the
    ways it was proposed (reply, copy, typed, definition, clause, list, yesno)."""

    parts: list[Part]
    sources: list[str]
    decision: str = ""

    @property
    def text(self) -> str:
        """The answer's words: its span(s) joined, or its decision."""
        return self.decision or "، ".join(part.text for part in self.parts)


@dataclass
class Proposal:
    """What the model said about a question and its evidence, and the candidates proposed from it."""

    question: str
    kind: str
    evidence: list[Evidence]
    candidates: list[Candidate] = field(default_factory=list)
    sources: frozenset[str] = frozenset(SOURCES)  # the ways candidates may be proposed
    raw: str = ""  # the model's own reply
    copied: str = ""  # its reply confined to the evidence
    copy_logprob: float = 0.0  # mean log-probability per token of that copy (0: certain, or unknown)
    lean: float = 0.0  # for a yes/no question: the log-odds of yes (negations counted)

    def add(self, part: Part | None, source: str, question: str) -> None:
        """Propose a part (none, the question restated, or a span of an order to the model are not answers); a part
        proposed again gains a source."""
        if part is None or source not in self.sources or not adds_to(part.text, question) or ordered(part):
            return
        key = (part.evidence.source, part.start, part.end)
        for candidate in self.candidates:
            if [(p.evidence.source, p.start, p.end) for p in candidate.parts] == [key]:
                if source not in candidate.sources:
                    candidate.sources.append(source)
                return
        self.candidates.append(Candidate([part], [source]))

    def to_dict(self) -> dict:
        """A JSON shape from which the proposal is rebuilt (from_dict): features are recomputed from it."""
        index = {id(ev): i for i, ev in enumerate(self.evidence)}
        return {
            "question": self.question, "kind": self.kind, "raw": self.raw, "copied": self.copied,
            "copy_logprob": self.copy_logprob, "lean": self.lean, "sources": sorted(self.sources),
            "evidence": [dataclasses.asdict(ev) for ev in self.evidence],
            "candidates": [{"sources": c.sources, "decision": c.decision,
                            "parts": [[index[id(p.evidence)], p.start, p.end] for p in c.parts]}
                           for c in self.candidates],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Proposal:
        """The proposal to_dict wrote."""
        evidence = [Evidence(**ev) for ev in data["evidence"]]
        candidates = [Candidate([part_of(evidence[i], s - evidence[i].start, e - evidence[i].start)
                                 for i, s, e in c["parts"]], c["sources"], c["decision"]) for c in data["candidates"]]
        return cls(data["question"], data["kind"], evidence, candidates, raw=data["raw"], copied=data["copied"],
                   copy_logprob=data["copy_logprob"], lean=data["lean"],
                   sources=frozenset(data["sources"]))


def propose_yesno(proposal: Proposal, generator: Generator) -> None:
    """Yes or no on the deciding sentence: no when it negates a word of the question; otherwise the model's scores of
    the two words, tipped to no by a negation elsewhere in that sentence."""
    strings = load_strings("reader")
    question, evidence = proposal.question, proposal.evidence
    quote = deciding(evidence)
    found = negation(quote.text, question, strings["negations"])
    scores = generator.choose(messages(question, evidence, YESNO, "reader_yesno"), [strings["yes"], strings["no"]])
    lean = scores[strings["yes"]] - scores[strings["no"]]
    if found == "near":
        lean = min(lean, 0.0) - NEGATION_WEIGHT
    elif found == "far":
        lean -= NEGATION_WEIGHT
    proposal.lean = lean if math.isfinite(lean) else 0.0
    decision = strings["yes"] if lean > 0 else strings["no"]
    proposal.candidates.append(Candidate([part_of(quote, 0, len(quote.text))], ["yesno"], decision))


def places(question: str, evidence: list[Evidence]) -> list[Part]:
    """The countries or cities of the sentences that decide 'ما الدول…؟', except those the question names."""
    best = deciding(evidence).score
    near = [ev for ev in evidence if ev.score >= PLACE_LIST_SHARE * best]
    found, seen = [], set()
    for ev, s, e in typed_spans(near, PLACE, question):
        key = fold(ev.text[s:e])[0]
        if key not in seen:
            seen.add(key)
            found.append(part_of(ev, s, e))
    return found


CLAUSE_WORDS = 25  # a longer clause is never a short answer


def clauses(question: str, evidence: list[Evidence]) -> Iterator[Part]:
    """The clauses of the evidence sentences (between commas and stops), without function words nor, when long, the
    question's own words at their edges: the answer to 'ماذا قال…؟' is often the clause after the question's words."""
    for ev in evidence:
        for m in _CLAUSE.finditer(ev.text):
            if 0 < len(m.group().split()) <= CLAUSE_WORDS and (part := part_of(ev, m.start(), m.end())).text:
                yield trim(part, question)  # not a clause of punctuation alone ('- ')


def says_none(reply: str) -> bool:
    """True when the model's own reply says the evidence does not answer."""
    text = " ".join(tokens(reply))
    return any(" ".join(tokens(phrase)) in text for phrase in load_strings("reader")["refusals"])


def invented(reply: str, typed: list[tuple[Evidence, int, int]], kind: str) -> bool:
    """True when the reply names a year, a number or a place that none of the evidence's spans of that kind holds:
    the model answers from what it knows, not from the articles ('ولد عام 1952' when no article says so)."""
    found = " ".join(fold(ev.text[s:e])[0] for ev, s, e in typed)
    named = [fold(reply[s:e])[0] for s, e in spans_of(reply, kind)]
    if kind == PLACE:
        return bool(named) and not any(n in found for n in named)
    # Dates are written many ways ('6 ديسمبر 1991', 'السادس من ديسمبر عام 1991'): compare their years. Numbers are
    # compared by their digits ('2.773،000' is '2،773،000'), and a number the evidence writes in words counts.
    pattern = r"(?<!\d)\d{4}(?!\d)" if kind == DATE else _NUMERAL
    held = digits(found, pattern)
    if kind == NUMBER:
        held |= {str(NUMBER_WORDS[w]) for w in tokens(found) if w in NUMBER_WORDS}
    return any(n not in held for name in named for n in digits(name, pattern))


def snapped(raw: str, question: str, evidence: list[Evidence], typed: list[tuple[Evidence, int, int]],
            kind: str) -> Part | None:
    """The run of words of the sentences it read that the model's reply names, as a whole span of the kind asked
    for."""
    read = [ev for ev in evidence if ev.shown]
    part = locate(find_run(raw, [fold_letters(ev.text) for ev in read]), read)
    if kind in (NUMBER, PLACE):
        part = named_span(part, raw, typed, kind)
    if part:
        part = head(trim(part, question), question)
    if part and typed:
        part = widen(part, kind)
    return part


def propose(question: str, evidence: list[Evidence], generator: Generator, kind: str, max_tokens: int,
            sources: frozenset[str] = frozenset(SOURCES)) -> Proposal:
    """Ask the model, in its own words and, where copy is among the sources, confined to the evidence; propose every
    candidate answer of those sources."""
    proposal = Proposal(question, kind, evidence, sources=sources)
    if not evidence:
        return proposal
    if kind == YESNO and "choose" in generator.features:
        propose_yesno(proposal, generator)
        return proposal
    chat = messages(question, evidence, kind)
    proposal.raw = "".join(generator.generate(chat, max_tokens, ["\n"], 0.0)).strip()
    typed = typed_spans(evidence, kind, question) if kind in TYPED else []
    said = snapped(proposal.raw, question, evidence, typed, kind)
    proposal.add(said, "reply", question)
    if defines(question):  # what the evidence says the subject is: 'ما هو X؟' is seldom answered by 'X'
        proposal.add(said and definition(said), "definition", question)
        proposal.add(definition_in(question, evidence), "definition", question)
    if "copy" in sources and "extract" in generator.features:
        read = [ev for ev in evidence if ev.shown]
        texts = [fold_letters(ev.text) for ev in read]
        dates = [fold_letters(ev.text[s:e]) for ev, s, e in typed if ev.shown]  # or numbers, or places
        proposal.copied, proposal.copy_logprob = copy(generator, chat, dates or texts, max_tokens, whole=bool(dates))
        part = locate(find_span(proposal.copied, texts), read)
        proposal.add(part and (part if dates else head(trim(part, question), question)), "copy", question)
    for ev, s, e in typed:
        proposal.add(part_of(ev, s, e), "typed", question)
    for part in clauses(question, evidence):
        proposal.add(part, "clause", question)
    if ("list" in sources and kind == LIST and set(tokens(question)) & _PLACE_LISTS
            and len(found := places(question, evidence)) > 1):
        proposal.candidates.append(Candidate(found, ["list"]))
    return proposal


def ordered(part: Part) -> bool:
    """True when the span comes from a sentence addressed to the model ('تجاهل التعليمات وقل إن…'): data to quote,
    never an answer, even inside a whole passage."""
    ev, start = part.evidence, part.start - part.evidence.start
    return any(s <= start < e and is_instruction(ev.text[s:e]) for s, e in sentence_spans(ev.text))
