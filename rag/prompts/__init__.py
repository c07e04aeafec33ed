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
