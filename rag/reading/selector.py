"""The selector: a logistic regression over the candidates' features, trained on data (rag.reading.train), that
says how likely each candidate is to be the right answer. Where the model can judge whole replies, a second one,
the judge, looks again at the selector's best few with the model's log-probability of each as its reply. The most
likely candidate is the answer; below the refusal threshold, chosen on validation data for a stated false-refusal
rate, the reader refuses."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from rag.errors import RagError
from rag.files import MB, read_input_text
from rag.reading.candidates import Candidate, Proposal
from rag.reading.features import context, features, judge_features

MAX_SELECTOR_BYTES = 1 * MB  # a selector is a few kilobytes of coefficients


@dataclass
class Selector:
    """Standardized features, their coefficients and the refusal threshold, with how they were made."""

    names: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    threshold: float  # refuse when the best candidate's probability is below it
    manifest: dict = field(default_factory=dict)  # data hashes, model id, validation scores
    judge: Selector | None = None  # the second look, over judge_features of the `judged` most likely candidates
    judged: int = 0

    def probability(self, values: dict[str, float]) -> float:
        """The probability that a candidate with these features is right."""
        z = self.intercept + sum(c * (values[n] - m) / s
                                 for n, m, s, c in zip(self.names, self.mean, self.scale, self.coef, strict=True))
        return 1 / (1 + math.exp(-z)) if z > -700 else 0.0

    def choose(self, proposal: Proposal, threshold: float | None = None, values: list[dict[str, float]] | None = None,
               judge: Judge | None = None, judged: int = -1) -> tuple[float | None, Candidate | None]:
        """The best candidate's probability, and the candidate when it is given: at least the threshold (None: this
        selector's own, or its judge's when the judge looked), or a yes/no decision (no training question asks yes
        or no; only the gate refuses one). values: the candidates' features, if already worked out; judge: the
        model's log-probabilities of some candidates as its reply, where the backend gives them, for the `judged` best
        (-1: as many as the judge was trained for; 0: no judge)."""
        if not proposal.candidates:
            return None, None
        if values is None:
            shared = context(proposal)
            values = [features(proposal, c, shared) for c in proposal.candidates]
        probabilities = [self.probability(v) for v in values]
        rule = self
        if self.judge and judge and judged and not proposal.candidates[0].decision:
            top = sorted(range(len(probabilities)), key=lambda i: (-probabilities[i], i))
            top = top[: self.judged if judged < 0 else judged]
            looks = judge_features([probabilities[i] for i in top], judge(top))
            probabilities = [0.0] * len(probabilities)  # the candidates the judge did not see are not given
            for i, v in zip(top, looks, strict=True):
                probabilities[i] = self.judge.probability(v)
            rule = self.judge
        limit = rule.threshold if threshold is None else threshold
        probability, i = max((p, -i) for i, p in enumerate(probabilities))  # the first of equals
        best = proposal.candidates[-i]
        return probability, best if probability >= limit or best.decision else None

    def to_dict(self) -> dict:
        """The JSON shape of the selector file."""
        out = {"names": self.names, "mean": self.mean, "scale": self.scale, "coef": self.coef,
               "intercept": self.intercept, "threshold": self.threshold, "manifest": self.manifest}
        return out | ({"judge": self.judge.to_dict(), "judged": self.judged} if self.judge else {})


Judge = Callable[[list[int]], list[list[float]]]  # candidates' indices -> log-probabilities of their tokens and end,
# then of saying there is no answer (Generator.score)


def parse_selector(text: str, where: str) -> Selector:
    """A selector from its JSON text; a RagError naming `where` when it is not one."""
    try:
        selector = from_dict(json.loads(text))
    except (ValueError, TypeError, RecursionError) as e:
        raise RagError(f"{where} is not a selector file ({type(e).__name__}: {e}); rebuild it with "
                       "`python evals/train_reader.py`") from e
    return selector


def from_dict(data: dict) -> Selector:
    """The selector (and its judge) of a JSON shape; ValueError or TypeError when it is not one."""
    data = dict(data)  # the caller's dict is left as it was
    judge = data.pop("judge", None)
    selector = Selector(**data, judge=from_dict(judge) if judge is not None else None)
    lengths = {len(selector.names), len(selector.mean), len(selector.scale), len(selector.coef)}
    if len(lengths) != 1 or not all(math.isfinite(float(x)) for x in [*selector.mean, *selector.scale,
                                                                      *selector.coef, selector.intercept]):
        raise ValueError("names, mean, scale and coef must be lists of finite numbers of one length")
    if any(s <= 0 for s in selector.scale):
        raise ValueError("scale must be positive")
    if selector.judge and selector.judged < 1:
        raise ValueError("a judge needs judged >= 1 candidates")
    return selector


@cache
def load_selector(path: str = "") -> Selector:
    """The selector in a JSON file, or ('') the one shipped in the package (rag/data/selector.json)."""
    if not path:
        return parse_selector(resources.files("rag").joinpath("data/selector.json").read_text("utf-8"),
                              "the packaged selector")
    return parse_selector(read_input_text(Path(path), MAX_SELECTOR_BYTES, "selector file"), path)
