"""Questions as users type them: cleaned and checked, and a follow-up that cannot stand alone folded into the one
before it."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from rag.errors import RagError
from rag.normalize import normalize, terms

_REFERRING = frozenset(
    normalize(w) for w in "ذلك هذا هذه تلك هو هي هم حينها عندها وقتها it that this they he she".split()
)


def check_question(question: object, max_chars: int) -> str:
    """The question cleaned of control characters, or a RagError that says what is wrong with it."""
    if isinstance(question, bytes):
        question = question.decode("utf-8", errors="replace")
    if not isinstance(question, str):
        raise RagError("the question must be text")
    cleaned = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in question.replace("\ufffd", " "))
    cleaned = " ".join(cleaned.split())
    if not cleaned:
        raise RagError("the question is empty: type a question about the articles")
    if len(cleaned) > max_chars:
        raise RagError(f"the question is {len(cleaned)} characters long; the limit is {max_chars}")
    if not any(c.isalnum() for c in cleaned):
        raise RagError("the question has no words in it: type a question about the articles")
    return cleaned


def rewrite_followup(question: str, previous: Sequence[str], template: str) -> str:
    """Fold the previous question into a follow-up that cannot stand alone ('ومتى حدث ذلك؟')."""
    if not previous:
        return question
    words = {w[1:] if w.startswith("و") and len(w) > 3 else w for w in normalize(question).split()}
    content = terms(question)
    if len(content) > 3 and not words & _REFERRING:
        return question
    return template.format(previous=previous[-1], question=question)
