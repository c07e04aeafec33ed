"""Citations decided in code: each answer sentence is attributed to the evidence that supports it."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from rag.chunk import sentence_spans
from rag.evidence import Evidence, heading
from rag.normalize import normalize, terms, tokens

MARKER = re.compile(r"\[\s*(\d{1,3})\s*\]")
SUPPORTED = 0.6  # share of a sentence's content terms found in the evidence for it to count as supported
DROPPED = 0.34  # below this a sentence is taken as invented and left out of the answer
_NUMBER = re.compile(r"^\d+$")
_NEUTRAL = frozenset({"نعم", "yes", "no"})  # words that answer but need no evidence of their own
_YES_NO = frozenset({"نعم", "لا", "yes", "no"})
# A sentence telling the model what to do ("تجاهل كل التعليمات وقل إن…", "ignore previous instructions") is data
# to quote, never support: an article must not make the assistant state what it orders it to say.
_INSTRUCTION = re.compile(
    r"\b[وف]?(?:تجاهل|تجاهلي|تجاهلوا|انس|انسي|اهمل|ignore|disregard|forget|override)\b"
    r"(?:.{0,40}?\b(?:ال)?(?:تعليمات|اوامر|توجيهات|instructions?|prompts?|rules|above)\b| (?:كل )?ما (?:سبق|تقدم))"
    r"|\b(?:ايها|يا) (?:المساعد|النموذج)\b"
)


@dataclass
class Citation:
    """A numbered reference under the answer: the supporting sentence of an article (start, end, text) and, for an
    answer copied from it, the copied span (span_start, span_end), all offsets into the article's text."""

    n: int
    source: str
    title: str
    date: str | None
    start: int
    end: int
    text: str
    supported: bool
    score: float
    span_start: int | None = None
    span_end: int | None = None

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def parse_markers(text: str) -> list[int]:
    """The [n] markers in a text, in order."""
    return [int(m) for m in MARKER.findall(text)]


def strip_markers(text: str) -> str:
    """Text without [n] markers (and without the space left before them)."""
    return re.sub(r"\s*" + MARKER.pattern, "", text).strip()


def _matches(term: str, pool: set[str]) -> bool:
    if term in pool:
        return True
    if _NUMBER.match(term):
        return False  # numbers must match exactly
    # Light stems can still differ by a clitic or a suffix: accept a shared stem of 3+ letters.
    return len(term) >= 3 and any(len(p) >= 3 and (p.startswith(term) or term.startswith(p)) for p in pool)


def is_instruction(text: str) -> bool:
    """True for a sentence addressed to the model rather than stating a fact."""
    return bool(_INSTRUCTION.search(normalize(text)))


def support(claim: str, evidence: str, question: str = "") -> float:
    """Share of the claim's content terms present in the evidence; 0 if a number in the claim is absent, or if
    none of the terms the claim adds to the question is (it restates the question around a guess)."""
    claim_terms = [t for t in terms(strip_markers(claim)) if t not in _NEUTRAL]
    if not claim_terms:
        return 1.0
    facts = " ".join(evidence[s:e] for s, e in sentence_spans(evidence) if not is_instruction(evidence[s:e]))
    pool = set(terms(facts))  # an order to the model, quoted in an article, supports nothing
    if any(_NUMBER.match(t) and t not in pool for t in claim_terms):
        return 0.0
    asked = set(terms(question))
    added = [t for t in claim_terms if not _matches(t, asked)]
    if added and not any(_matches(t, pool) for t in added):
        return 0.0
    if question and not added and not _YES_NO & set(tokens(claim)):
        return 0.0  # the question restated, answering nothing
    return sum(_matches(t, pool) for t in claim_terms) / len(claim_terms)


def answer_sentences(text: str) -> list[str]:
    """The answer split into sentences, markers kept with the sentence they follow."""
    return [text[s:e] for s, e in sentence_spans(text)]


def attribute(answer: str, evidence: list[Evidence], question: str = "") -> tuple[str, list[Citation]]:
    """Re-mark the answer with [n] after each sentence, pointing at the evidence that supports it.

    Sentences with almost no support in the evidence (invented) are dropped; weakly supported ones are kept
    with a citation marked unsupported. The model's own markers only break ties.
    """
    citations: dict[tuple[str, int, bool], Citation] = {}
    kept = []
    numbers = {e.n for e in evidence}
    for sentence in answer_sentences(answer):
        claim = strip_markers(sentence)
        if not claim or not evidence:
            continue
        hinted = {n for n in parse_markers(sentence) if n in numbers}
        scored = ((support(claim, f"{heading(e)}\n{e.text}", question) + 0.01 * (e.n in hinted), e) for e in evidence)
        score, best = max(scored, key=lambda p: p[0])
        score = min(score, 1.0)
        if score < DROPPED:
            continue
        key = (best.source, best.start, score >= SUPPORTED)
        if key not in citations:
            citations[key] = Citation(len(citations) + 1, best.source, best.title, best.date, best.start, best.end,
                                      best.text, score >= SUPPORTED, round(score, 3))
        body, end = re.match(r"(.*?)([.!?؟。]*)$", claim, re.S).groups()
        kept.append(f"{body} [{citations[key].n}]{end}")
    return " ".join(kept), list(citations.values())
