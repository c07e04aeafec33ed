"""The reader: evidence sentences in, an answer copied from them (or a refusal) out.

One contract, `read(question, evidence, kind) -> Reading`, and two readers behind it, chosen by the `reader` setting:
- extract (the default): rag.reading.candidates proposes answers (the model's reply snapped onto the evidence, its
  reply confined to the evidence, typed spans, definitions, clauses, lists), rag.reading.features describes each,
  and rag.reading.selector, trained on data, picks one or refuses;
- free (kept for comparison): rag.reading.free lets the model write and checks each sentence's citation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from rag.config import Config
from rag.errors import RagError

if TYPE_CHECKING:
    from rag.cite import Citation
    from rag.evidence import Evidence
    from rag.generators import Generator
    from rag.reading.candidates import Part, Proposal

__all__ = ["Reader", "Reading", "make_reader"]


@dataclass
class Reading:
    """What a reader found: the parts of the answer (one span; several for a list) or, for the free reader, its
    written text and citations; nothing when it refuses."""

    kind: str
    parts: list[Part] = field(default_factory=list)
    decision: str = ""  # نعم or لا for a yes/no question, decided on parts[0].evidence
    method: str = ""  # how the answer was proposed: reply, copy, typed, definition, clause, list, yesno; or free
    confidence: float | None = None  # the selector's probability that the answer is right
    raw: str = ""  # the model's own reply
    proposal: Proposal | None = None  # every candidate, for evaluation
    text: str = ""  # the free reader's answer, with [n] markers
    citations: list[Citation] = field(default_factory=list)  # the free reader's checked citations

    @property
    def refused(self) -> bool:
        """True when the reader gives no answer."""
        return not self.parts and not self.text


class Reader(Protocol):
    """Reads the evidence for a question; `messages` is its prompt, so the caller can fit it into n_ctx."""

    def messages(self, question: str, evidence: list[Evidence], kind: str) -> list[dict]:
        """The chat the model reads."""
        ...

    def read(self, question: str, evidence: list[Evidence], kind: str) -> Reading:
        """The answer to the question from the evidence, or a refusal."""
        ...


READERS = {"extract": "rag.reading.select:SelectingReader", "free": "rag.reading.free:FreeReader"}


def make_reader(config: Config, generator: Generator) -> Reader:
    """The reader named by the `reader` setting."""
    from importlib import import_module

    if config.reader not in READERS:
        raise RagError(f"setting reader must be one of {', '.join(READERS)}, not {config.reader!r}")
    module, _, name = READERS[config.reader].partition(":")
    return getattr(import_module(module), name)(config, generator)
