"""Backends are plugins: a registry maps a name to "module:Class", and a setting may name its backend with a
prefix ("openai:http://host/v1"). Each backend class builds itself with `from_config(config, spec)`."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from rag.config import Config
from rag.errors import RagError


def parse(value: str, registry: dict[str, str], default: str) -> tuple[str, str]:
    """('backend', 'spec') of a setting: 'backend:spec' when backend is registered, else the default backend with
    the whole value as its spec."""
    backend, sep, spec = value.partition(":")
    return (backend, spec) if sep and backend in registry else (default, value)


def build(registry: dict[str, str], backend: str, spec: str, what: str, config: Config) -> Any:
    """An instance of a registered backend, built by its class's from_config(config, spec)."""
    if backend not in registry:
        raise RagError(f"unknown {what} {backend!r}; known: {', '.join(registry)}")
    module, _, name = registry[backend].partition(":")
    return getattr(import_module(module), name).from_config(config, spec)
