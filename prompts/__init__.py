"""Prompts and the strings tied to them (the UI's words and styles too): every one lives in a file here, never in code.

The folder is the top-level `prompts/` of the checkout and installs as the package `rag.prompts` (pyproject.toml
maps it), so a wheel carries it."""

from __future__ import annotations

from functools import cache
from importlib import resources

from rag.errors import RagError


@cache
def load_prompt(name: str) -> str:
    """The text of prompts/<name>.txt."""
    try:
        return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8").strip()
    except OSError as e:
        raise RagError(f"prompt file {name}.txt is missing from the installed package: reinstall it") from e


@cache
def load_strings(name: str) -> dict:
    """The strings tied to a prompt: prompts/<name>.toml."""
    import tomllib

    try:
        return tomllib.loads(resources.files(__package__).joinpath(f"{name}.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RagError(f"strings file {name}.toml is missing or damaged in the installed package: reinstall it") from e
