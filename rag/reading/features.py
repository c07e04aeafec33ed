"""Features of a candidate answer: pure functions of the proposal (what the model said, the evidence) and the
candidate. Each feature belongs to a group, so that the ablation can train the selector without one group."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from rag.answer_types import KINDS, spans_of
from rag.evidence import Evidence
from rag.normalize import STOPWORDS, normalize, terms, tokens
from rag.reading.candidates import SOURCES, TYPED, Candidate, Proposal, invented, says_none, typed_spans

GROUPS: dict[str, list[str]] = {
    "source": [f"source_{s}" for s in SOURCES] + ["agreement"],
    "model": ["reply_f1", "in_reply", "copy_f1", "copy_logprob", "says_none", "invented", "lean"],
    "type": [f"kind_{k}" for k in KINDS] + ["type_match", "type_missing"],
    "question": ["asked_share", "distance", "near", "sentence_asked", "clause_asked"],
    "evidence": ["score", "score_share", "sentence_rank", "passage", "deciding", "shown"],
    "shape": ["words", "log_words", "position", "digits", "parts", "stopword_edge"],
}
NAMES = [name for group in GROUPS.values() for name in group]
# The judge: the model's log-probability of each of the selector's best candidates as its whole reply.
JUDGE_NAMES = ["prior", "prior_rank", "logprob", "mean_logprob", "min_logprob", "end_logprob", "gap", "share",
               "none_margin", "tokens"]
PRIOR_CAP = 10.0  # the selector's log-odds, cut to +-this
DISTANCE_CAP = 20  # words: farther from the question's words counts as this far
LOGPROB_FLOOR = -20.0  # a copy cut off at max_tokens has no end, so no finite log-probability


@lru_cache(maxsize=65536)
def term_set(text: str) -> frozenset[str]:
    """The terms of a text (cached: the same words and sentences come back for every candidate)."""
    return frozenset(terms(text))


def overlap_f1(a: list[str], b: list[str]) -> float:
    """Token F1 between two token lists."""
    common = sum(min(a.count(t), b.count(t)) for t in set(b))
    if not common:
        return 0.0
    precision, recall = common / len(a), common / len(b)
    return 2 * precision * recall / (precision + recall)


def distance(sentence: str, start: int, end: int, asked: set[str]) -> int:
    """Words between a span of a sentence and the nearest word of the question outside it (DISTANCE_CAP if none)."""
    best = DISTANCE_CAP
    at = 0
    for word in sentence.split():
        begin = sentence.index(word, at)
        at = begin + len(word)
        if begin >= start and at <= end or not term_set(word) & asked:
            continue
        before = len(sentence[at:start].split()) if at <= start else None
        after = len(sentence[end:begin].split()) if begin >= end else None
        best = min(best, *(d for d in (before, after) if d is not None), DISTANCE_CAP)
    return best


def clause_of(sentence: str, start: int) -> str:
    """The clause of a sentence (between commas and stops) where a span starts."""
    cut = [i for i, c in enumerate(sentence) if c in "،,.;؛:()"]
    left = max((i for i in cut if i < start), default=-1)
    right = min((i for i in cut if i >= start), default=len(sentence))
    return sentence[left + 1 : right]


@dataclass
class Context:
    """What the features of every candidate of a proposal share, worked out once."""

    asked: set[str]
    typed: list
    ranked: list[Evidence]
    reply: list[str]
    copied: list[str]
    says_none: bool
    invented: bool


def context(proposal: Proposal) -> Context:
    """The proposal-wide part of the features."""
    kind, question = proposal.kind, proposal.question
    typed = typed_spans(proposal.evidence, kind, question) if kind in TYPED else []
    made_up = kind in TYPED and invented(proposal.raw, [t for t in typed if t[0].shown], kind)
    return Context(set(terms(question)), typed, sorted(proposal.evidence, key=lambda e: -e.score),
                   tokens(proposal.raw), tokens(proposal.copied), says_none(proposal.raw), made_up)


def features(proposal: Proposal, candidate: Candidate, shared: Context | None = None) -> dict[str, float]:
    """The features of one candidate (NAMES, in GROUPS); shared: the proposal's context, if already worked out."""
    shared = shared or context(proposal)
    kind = proposal.kind
    text = candidate.text
    words = tokens(text)
    part = candidate.parts[0]
    ev = part.evidence
    start, end = part.start - ev.start, part.end - ev.start
    asked, typed, ranked, reply = shared.asked, shared.typed, shared.ranked, shared.reply
    found = term_set(text)
    best = ranked[0].score if ranked else 0.0
    match = kind in TYPED and any(spans_of(p.text, kind) for p in candidate.parts)
    near = distance(ev.text, start, end, asked)
    out = {f"source_{s}": float(s in candidate.sources) for s in SOURCES}
    out |= {
        "agreement": float(len(candidate.sources)),
        "reply_f1": overlap_f1(words, reply) if words and reply else 0.0,
        "in_reply": float(bool(words) and all(w in reply for w in words)),
        "copy_f1": overlap_f1(words, shared.copied) if words and shared.copied else 0.0,
        "copy_logprob": max(proposal.copy_logprob, LOGPROB_FLOOR),
        "says_none": float(shared.says_none),
        "invented": float(shared.invented),
        "lean": abs(proposal.lean),
        **{f"kind_{k}": float(kind == k) for k in KINDS},
        "type_match": float(match),
        "type_missing": float(kind in TYPED and not typed),
        "asked_share": len(found & asked) / len(found) if found else 1.0,
        "distance": near / DISTANCE_CAP,
        "near": float(near <= 2),
        "sentence_asked": len(asked & term_set(ev.text)) / len(asked) if asked else 0.0,
        "clause_asked": float(bool(asked & term_set(clause_of(ev.text, start)))),
        "score": ev.score,
        "score_share": ev.score / best if best > 0 else 0.0,
        "sentence_rank": float(next((i for i, e in enumerate(ranked) if e is ev), 0)),
        "passage": float(ev.n - 1),
        "deciding": float(bool(ranked) and ranked[0] is ev),
        "shown": float(ev.shown),
        "words": len(words) / 10,
        "log_words": math.log1p(len(words)),
        "position": start / max(len(ev.text), 1),
        "digits": float(any(c.isdigit() for c in text)),
        "parts": float(len(candidate.parts)),
        "stopword_edge": float(bool(words) and (normalize(words[0]) in STOPWORDS or normalize(words[-1]) in STOPWORDS)),
    }
    return out


def judge_features(priors: list[float], logprobs: list[list[float]]) -> list[dict[str, float]]:
    """The judge's features of the selector's best candidates: priors, their probabilities from the selector (best
    first); logprobs, the model's log-probability of each token and of the end of each of them as its reply, then
    of saying there is no answer."""
    totals = [max(sum(lp), LOGPROB_FLOOR * 5) for lp in logprobs]
    *candidates, none = totals
    best = max(candidates)
    mass = sum(math.exp(t - best) for t in candidates)
    out = []
    for rank, (prior, lp, total) in enumerate(zip(priors, logprobs[:-1], candidates, strict=True)):
        odds = math.log(prior / (1 - prior)) if 0 < prior < 1 else math.copysign(PRIOR_CAP, prior - 0.5)
        out.append({
            "prior": max(-PRIOR_CAP, min(PRIOR_CAP, odds)),
            "prior_rank": float(rank),
            "logprob": total,
            "mean_logprob": total / len(lp),
            "min_logprob": max(min(lp), LOGPROB_FLOOR),
            "end_logprob": max(lp[-1], LOGPROB_FLOOR),
            "gap": total - best,
            "share": math.exp(total - best) / mass,
            "none_margin": total - none,
            "tokens": len(lp) / 10,
        })
    return out
