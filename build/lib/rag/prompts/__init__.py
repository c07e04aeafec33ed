"""Prompts and the strings tied to them, shipped as package data: every prompt lives in a file, never in code."""

from __future__ import annotations

from functools import cache
from importlib import resources

from rag.errors import RagError


@cache
def load_prompt(name: str) -> str:
    """The text of rag/prompts/<name>.txt."""
    try:
        return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8").strip()
    except OSError as e:
        raise RagError(f"prompt file {name}.txt is missing from the installed package: reinstall it") from e


@cache
def load_strings(name: str) -> dict:
    """The strings tied to a prompt: rag/prompts/<name>.toml."""
    import tomllib

    try:
        return tomllib.loads(resources.files(__package__).joinpath(f"{name}.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RagError(f"strings file {name}.toml is missing or damaged in the installed package: reinstall it") from e
