"""The extracting reader: propose candidates, then let the trained selector pick one or refuse."""

from __future__ import annotations

from rag.answer_types import YESNO
from rag.config import Config
from rag.evidence import Evidence
from rag.generators import Generator
from rag.reading import Reading
from rag.reading.candidates import Proposal, messages, propose
from rag.reading.selector import Selector, load_selector


def choose(proposal: Proposal, selector: Selector, threshold: float) -> Reading:
    """The selector's answer as the reading, or a refusal."""
    probability, best = selector.choose(proposal, threshold)
    reading = Reading(proposal.kind, raw=proposal.raw, proposal=proposal, confidence=probability)
    if best:
        reading.parts, reading.decision, reading.method = best.parts, best.decision, "+".join(best.sources)
    return reading


class SelectingReader:
    """Candidates from the model and the evidence; the answer picked by a selector trained on data."""

    def __init__(self, config: Config, generator: Generator):
        self.generator = generator
        self.selector = load_selector(config.selector)
        # min_confidence < 0: the trained selector's own threshold, chosen on validation data
        self.threshold = config.min_confidence if config.min_confidence >= 0 else self.selector.threshold
        self.sources = frozenset(config.candidates.split(","))
        self.max_tokens = config.max_tokens

    def messages(self, question: str, evidence: list[Evidence], kind: str) -> list[dict]:
        """The chat the model reads (rag.reading.candidates.messages)."""
        return messages(question, evidence, kind, "reader_yesno" if kind == YESNO else "reader_question")

    def read(self, question: str, evidence: list[Evidence], kind: str) -> Reading:
        """Propose every candidate, then choose."""
        proposal = propose(question, evidence, self.generator, kind, self.max_tokens, self.sources)
        return choose(proposal, self.selector, self.threshold)

