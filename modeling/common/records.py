"""Typed records that cross module boundaries and are kept as JSON (summaries, results).

A record is a dataclass whose JSON keys are its field names, in field order, so a file written by one
version reads back into the same dataclass in the next: nested records, lists and mappings of records
are rebuilt from the type hints; fields a file lacks take their defaults; keys a file has and the
dataclass does not (a newer writer) are ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

R = TypeVar("R", bound="Record")


class Record:
    """Mixin for dataclasses stored as JSON."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[R], data: dict) -> R:
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        values = {}
        for field in dataclasses.fields(cls):
            if field.name in data:
                values[field.name] = _convert(hints[field.name], data[field.name])
        return cls(**values)


def _convert(hint, value: Any):
    if value is None:
        return None
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_dict(value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        records = [a for a in args if isinstance(a, type) and issubclass(a, Record)]
        return records[0].from_dict(value) if records and isinstance(value, dict) else value
    if origin is list and args:
        return [_convert(args[0], item) for item in value]
    if origin is dict and len(args) == 2:
        return {key: _convert(args[1], item) for key, item in value.items()}
    return value
