"""Scoring answers and retrieval: pure functions of texts and source lists, shared by `rag eval`, the benchmarks and
the reader's training."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from rag.cite import strip_markers
from rag.normalize import normalize, stem, tokens
from rag.prompts import load_strings


def answer_tokens(text: str) -> list[str]:
    """Normalized word tokens of an answer, without its [n] citation markers."""
    return tokens(strip_markers(text))


def exact_match(prediction: str, references: Iterable[str]) -> bool:
    """True when the prediction's tokens equal those of one of the references."""
    words = answer_tokens(prediction)
    return bool(words) and any(words == answer_tokens(ref) for ref in references)


def _contains_tokens(words: list[str], part: list[str]) -> bool:
    n = len(part)
    return n > 0 and any(words[i : i + n] == part for i in range(len(words) - n + 1))


def contains(prediction: str, references: Iterable[str]) -> bool:
    """True when one reference appears word for word in the prediction (light stems: 'وإيران' holds 'إيران')."""
    words = [stem(t) for t in answer_tokens(prediction)]
    return any(_contains_tokens(words, [stem(t) for t in answer_tokens(ref)]) for ref in references)


def token_f1(prediction: str, references: Iterable[str]) -> float:
    """SQuAD token F1 on normalized tokens, best over the references."""
    words = answer_tokens(prediction)
    best = 0.0
    for ref in references:
        gold = answer_tokens(ref)
        common = sum(min(words.count(t), gold.count(t)) for t in set(gold))
        if common:
            precision, recall = common / len(words), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


SHORT_WORDS = 15  # an answer is short with at most max(15, 2 x the reference's) words


def short(prediction: str, references: list[str]) -> bool:
    """True when the prediction is a short answer: at most max(15, twice the reference's) words."""
    return len(answer_tokens(prediction)) <= max(SHORT_WORDS, 2 * len(answer_tokens(references[0])))


def list_items(answer: str) -> list[str]:
    """The items of a list answer written 'a، b، c' (empty when the answer is not a list)."""
    items = [item.strip() for item in normalize(answer).split(",") if item.strip()]
    return items if len(items) > 1 else []


def items_found(prediction: str, references: Iterable[str]) -> float | None:
    """Share of a list answer's items contained in the prediction (best over list references), None if no list."""
    shares = [sum(contains(prediction, [item]) for item in items) / len(items)
              for items in map(list_items, references) if items]
    return max(shares) if shares else None


def answer_written(text: str, references: Iterable[str]) -> bool | None:
    """Whether a text holds the answer: a reference word for word, or every item of a list reference; None for a
    yes/no question, whose answer is a decision that no evidence writes."""
    references = list(references)
    strings = load_strings("reader")
    if not references or {normalize(r) for r in references} <= {normalize(strings["yes"]), normalize(strings["no"])}:
        return None
    return contains(text, references) or items_found(text, references) == 1.0


def recall_at(ranked: list[str], gold: list[str], k: int) -> float:
    """Share of the gold sources found among the first k retrieved sources."""
    return len(set(ranked[:k]) & set(gold)) / len(set(gold))


def reciprocal_rank(ranked: list[str], gold: list[str]) -> float:
    """1 / rank of the first retrieved passage from a gold source (0 when none is retrieved)."""
    return next((1 / rank for rank, source in enumerate(ranked, 1) if source in gold), 0.0)


def citation_scores(cited: list[str], gold: list[str]) -> tuple[float | None, float | None]:
    """Article-level (precision, recall) of the cited sources against the gold sources."""
    cited_set, gold_set = set(cited), set(gold)
    precision = len(cited_set & gold_set) / len(cited_set) if cited_set else None
    recall = len(cited_set & gold_set) / len(gold_set) if gold_set else None
    return precision, recall


def mean(values: Iterable[float | bool | None]) -> float | None:
    """Mean of the values that are not None (None when there are none)."""
    kept = [float(v) for v in values if v is not None]
    return round(sum(kept) / len(kept), 4) if kept else None


def percentile(values: Iterable[float | None], q: float) -> float | None:
    """The q-th percentile of the values that are not None."""
    kept = [v for v in values if v is not None]
    return round(float(np.percentile(kept, q)), 3) if kept else None
