"""Offline Arabic question answering over news articles, with checked citations.

Data flow: ingest -> chunk -> embed -> index -> retrieve -> generate -> cite, wired in `Assistant`.
"""

from rag.config import Config, load_config
from rag.errors import RagError

__all__ = ["Answer", "Assistant", "Config", "RagError", "load_config"]


def __getattr__(name: str):
    # Keep `import rag` cheap: the assistant (and numpy, faiss...) load on first use.
    if name in ("Assistant", "Answer"):
        from rag import assistant

        return getattr(assistant, name)
    raise AttributeError(name)
