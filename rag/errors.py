"""The one error type users see: a message that says what went wrong and how to fix it."""

from __future__ import annotations

import importlib
from types import ModuleType


class RagError(Exception):
    """A problem the user can fix; the message says how."""


def require(module: str, needed_by: str, install: str) -> ModuleType:
    """Import an optional library, or raise a RagError naming what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise RagError(f"{needed_by} needs the package {module.split('.')[0]}: {install}") from e
