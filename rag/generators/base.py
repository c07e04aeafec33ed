"""The generator contract: chat messages in, the reply streamed out; and the reader's two constrained calls."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass
class Piece:
    """A piece of a constrained reply and the model's log-probability of it (None where the backend has none)."""

    text: str
    logprob: float | None = None  # of the tokens the piece adds (None where the backend gives none)
    tokens: int = 0  # how many tokens that is


class Generator(Protocol):
    """Anything that streams a reply to chat messages.

    Readers also use `extract` (copy a span of the evidence, never write one), `choose` (score a few possible
    first words, e.g. نعم/لا) and `score` (judge whole replies); a backend that cannot do one says so in `features`.
    """

    id: str
    features: frozenset[str]  # of "extract", "choose", "score": what this backend can do

    def generate(self, messages: list[dict], max_tokens: int, stop: list[str], temperature: float) -> Iterator[str]:
        """Yield the reply piece by piece."""
        ...

    def prefill(self, messages: list[dict]) -> None:
        """Read a prompt that later prompts start with (the system prompt and worked examples) into the backend's
        cache, so that a question reads only what follows it."""
        ...

    def extract(self, messages: list[dict], spans: list[str], max_tokens: int, whole: bool = False) -> Iterator[Piece]:
        """Yield a greedy reply that copies words of one of the spans: any run of whole words of one span, or (whole)
        one span from its first word to its last. The log-probabilities of all pieces add up to the reply's (a
        backend may give them per piece, or all on a last, empty piece)."""
        ...

    def choose(self, messages: list[dict], options: list[str]) -> dict[str, float]:
        """The log-probability of each option's first token as the first token of the reply."""
        ...

    def score(self, messages: list[dict], replies: list[str]) -> list[list[float]]:
        """For each reply, the log-probability of each of its tokens and of its end, as the model's whole reply."""
        ...
