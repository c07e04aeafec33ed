"""Generators: the contract in base.py, one file per backend, built from the config by `make_generator`."""

from __future__ import annotations

from rag.config import Config
from rag.generators.base import Generator
from rag.plugins import build, parse

__all__ = ["GENERATORS", "Generator", "make_generator"]

# backend -> "module:Class"; the generator setting is "backend:spec" or a model name/.gguf file for llama.cpp.
GENERATORS = {
    "llama": "rag.generators.llama:LlamaGenerator",
    "openai": "rag.generators.openai:OpenAIGenerator",
}


def make_generator(config: Config, generator: str | None = None) -> Generator:
    """The generator named by config.generator (or by `generator`, e.g. another model picked in the UI)."""
    return build(GENERATORS, *parse(generator or config.generator, GENERATORS, "llama"), "generator", config)
