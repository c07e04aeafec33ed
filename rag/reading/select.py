"""The extracting reader: propose candidates, let the trained selector pick its best few, the model judge them, and
the judge pick one or refuse."""

from __future__ import annotations

from rag.answer_types import YESNO
from rag.config import Config
from rag.evidence import Evidence
from rag.generators import Generator
from rag.normalize import fold_letters
from rag.prompts import load_strings
from rag.reading import Reading
from rag.reading.candidates import Proposal, messages, propose
from rag.reading.selector import Judge, Selector, load_selector


def judge_with(generator: Generator, proposal: Proposal) -> Judge:
    """The model's log-probabilities of some candidates as its whole reply to the reader's prompt (letters folded,
    as it read them), then of saying there is no answer."""

    def judge(indices: list[int]) -> list[list[float]]:
        replies = [fold_letters(proposal.candidates[i].text) for i in indices]
        chat = messages(proposal.question, proposal.evidence, proposal.kind)
        return generator.score(chat, [*replies, load_strings("judge")["no_answer"]])

    return judge


def choose(proposal: Proposal, selector: Selector, threshold: float | None, judge: Judge | None = None,
           judged: int = -1) -> Reading:
    """The selector's answer (its judge's, where there is one) as the reading, or a refusal."""
    probability, best = selector.choose(proposal, threshold, judge=judge, judged=judged)
    reading = Reading(proposal.kind, raw=proposal.raw, proposal=proposal, confidence=probability)
    if best:
        reading.parts, reading.decision, reading.method = best.parts, best.decision, "+".join(best.sources)
    return reading


class SelectingReader:
    """Candidates from the model and the evidence; the answer picked by a selector trained on data, after the model
    judged the selector's best few where the backend can (setting judged)."""

    def __init__(self, config: Config, generator: Generator):
        self.generator = generator
        self.selector = load_selector(config.selector)
        # min_confidence < 0: the trained selector's own threshold, chosen on validation data
        self.threshold = config.min_confidence if config.min_confidence >= 0 else None
        self.sources = frozenset(config.candidates.split(","))
        self.max_tokens = config.max_tokens
        self.judged = config.judged if "score" in generator.features else 0

    def messages(self, question: str, evidence: list[Evidence], kind: str) -> list[dict]:
        """The chat the model reads (rag.reading.candidates.messages)."""
        return messages(question, evidence, kind, "reader_yesno" if kind == YESNO else "reader_question")

    def read(self, question: str, evidence: list[Evidence], kind: str) -> Reading:
        """Propose every candidate, then choose."""
        proposal = propose(question, evidence, self.generator, kind, self.max_tokens, self.sources)
        return choose(proposal, self.selector, self.threshold, judge_with(self.generator, proposal), self.judged)
