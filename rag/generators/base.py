"""The generator contract: chat messages in, the reply streamed out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class Generator(Protocol):
    """Anything that streams a reply to chat messages."""

    id: str

    def generate(self, messages: list[dict], max_tokens: int, stop: list[str], temperature: float) -> Iterator[str]:
        """Yield the reply piece by piece."""
        ...
