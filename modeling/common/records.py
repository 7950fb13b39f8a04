"""Typed records that cross module boundaries and are kept as JSON (summaries, results).

A record is a dataclass whose JSON keys are its field names, in field order, so a file written by one
version reads back into the same dataclass in the next: nested records, lists and mappings of records
are rebuilt from the type hints; fields a file lacks take their defaults; keys a file has and the
dataclass does not (a newer writer) are ignored.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from modeling.common.errors import DataError

R = TypeVar("R", bound="Record")


class Record:
    """Mixin for dataclasses stored as JSON."""

    # Required fields that files written by earlier versions lack: field -> what such a file reads back as.
    OLDER_FILES_LACK: ClassVar[dict[str, Callable[[], Any]]] = {}
    # Optional fields added later: left out while None, so a file from an earlier version, read and written
    # again, stays byte for byte what it was.
    OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict:
        return {
            field.name: _plain(getattr(self, field.name))
            for field in dataclasses.fields(self)
            if not (field.name in self.OMITTED_WHEN_NONE and getattr(self, field.name) is None)
        }

    @classmethod
    def from_dict(cls: type[R], data: dict) -> R:
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        values = {name: make() for name, make in cls.OLDER_FILES_LACK.items() if name not in data}
        for field in dataclasses.fields(cls):
            if field.name in data:
                values[field.name] = _convert(hints[field.name], data[field.name])
        return cls(**values)

    @classmethod
    def load(cls: type[R], path: Path | str) -> R:
        """The record in a JSON file; a file that is not one (cut short, another kind) is one line naming it."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, AttributeError) as error:
            raise DataError(f"{path}: not a readable {cls.__name__} ({type(error).__name__}: {error})") from None


def _plain(value: Any):
    """What dataclasses.asdict makes of a value, with nested records written by their own to_dict."""
    if isinstance(value, Record):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return copy.deepcopy(value)


def _convert(hint, value: Any):
    if value is None:
        return None
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_dict(value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        return _convert(kinds[0], value) if len(kinds) == 1 else value
    if origin is list and args:
        return [_convert(args[0], item) for item in value]
    if origin is dict and len(args) == 2:
        return {key: _convert(args[1], item) for key, item in value.items()}
    return value
