"""Checks of what is read from JSON files (an index's, a gold file, a SQuAD file): the first field missing or of
another type, named by its place in the file and said the way JSON says it."""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, fields
from typing import Any

_JSON_NAMES = {str: "text", int: "a whole number", float: "a number", bool: "true or false", dict: "an object",
               list: "a list", type(None): "null"}


def json_name(kind: Any) -> str:
    """How JSON calls a Python type or union of types: 'text', 'a whole number or null'…"""
    return " or ".join(_JSON_NAMES.get(k, k.__name__) for k in (typing.get_args(kind) or (kind,)))


def has_type(value: object, kind: Any) -> bool:
    """Whether a JSON value is of a type or union of types (JSON true is no number)."""
    if isinstance(kind, types.UnionType):
        return any(has_type(value, k) for k in typing.get_args(kind))
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def shape_problem(value: object, shape: Any, where: str = "") -> str | None:
    """Why a JSON value does not have a shape, or None. A shape is a type (str, int | None…), a dict of shapes (an
    object with at least those fields) or a one-item list of a shape (a list of such values); `where` is the value's
    place, e.g. data[0].paragraphs[2]."""
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where} is {json_name(type(value))}, not an object" if where else \
                f"{json_name(type(value))}, not an object"
        for key, inner in shape.items():
            place = f"{where}.{key}" if where else key
            if key not in value:
                return f"no {place}"
            if problem := shape_problem(value[key], inner, place):
                return problem
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where} is {json_name(type(value))}, not a list"
        return next((p for i, item in enumerate(value) if (p := shape_problem(item, shape[0], f"{where}[{i}]"))),
                    None)
    return None if has_type(value, shape) else f"{where} is {json_name(type(value))}, not {json_name(shape)}"


def row_problem(row: object, required: dict[str, Any], optional: dict[str, Any] | None = None) -> str | None:
    """Why a row (a JSON object) lacks a required field or has a field of another shape, or None; optional fields
    are checked where present."""
    present = {k: shape for k, shape in (optional or {}).items() if isinstance(row, dict) and k in row}
    return shape_problem(row, {**required, **present})


def dataclass_fields(cls: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """(required, optional) fields of a dataclass, with their types: what a row must hold to build one."""
    hints = typing.get_type_hints(cls)
    required = {f.name: hints[f.name] for f in fields(cls) if f.default is MISSING}
    return required, {f.name: hints[f.name] for f in fields(cls) if f.default is not MISSING}
