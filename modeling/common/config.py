"""YAML -> typed configs: dataclasses built from mappings, command-line overrides, generated `--help`.

Recipes (modeling.pretrain.recipe) and task configs (modeling.finetune.config) are dataclasses whose fields
carry their help text (`option`). `build` turns a YAML mapping into one, naming the dotted key of any
unknown field or wrong type; `apply_override` applies `--dotted.key VALUE` (list items by index or by
`name`); `describe_fields` writes the `--help` lines.

Why not transformers' HfArgumentParser: it maps flat dataclasses to argparse flags, while recipes are
nested YAML with lists of phases addressed by name, and its errors are argparse's usage dumps; here every
mistake is one line that names the key and what is allowed (`error: phases.0.masking ...`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import yaml

from modeling.common.errors import ConfigError


def option(text: str, default=dataclasses.MISSING, factory=dataclasses.MISSING):
    """A dataclass field with its help text (shown by --help)."""
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"help": text})
    return dataclasses.field(default=default, metadata={"help": text})


# ---------------------------------------------------------------- checks shared by every config


def positive(key, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or math.isinf(value):
        raise ConfigError(f"{key}={value!r}: must be a number > 0")


def choice(key, value, allowed):
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: allowed values are {', '.join(map(str, allowed))}")


# ---------------------------------------------------------------- building from YAML


def build(cls, data, key: str):
    """Dataclass `cls` from a mapping; unknown keys and wrong types stop with the key's path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{key or 'recipe'}: expected a mapping of fields, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{key}.{unknown[0]}" if key else unknown[0]
        raise ConfigError(f"unknown key '{where}'; allowed keys{' under ' + key if key else ''}: {', '.join(fields)}")
    values = {}
    for name, value in data.items():
        sub = f"{key}.{name}" if key else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = build(hint, value, sub)
        elif value is not None:
            value = _coerce(hint, value, sub)
        values[name] = value
    return cls(**values)


def _coerce(hint, value, key):
    """Accept what YAML gives for simple scalar types (YAML reads 3e-4 as a string)."""
    if hint is float or hint == (float | None):
        try:
            return float(value) if not isinstance(value, bool) else _type_error(key, value, "a number")
        except (TypeError, ValueError):
            _type_error(key, value, "a number")
    if hint is int or hint == (int | None):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value))
            except ValueError:
                pass
        if not isinstance(value, int) or isinstance(value, bool):
            _type_error(key, value, "an integer")
    if hint is bool and not isinstance(value, bool):
        _type_error(key, value, "true or false")
    if hint is str or hint == (str | None):
        if not isinstance(value, str):
            _type_error(key, value, "a string")
    return value


def _type_error(key, value, expected):
    raise ConfigError(f"{key}={value!r}: must be {expected}")


def numbers(obj):
    """YAML 1.1 reads `3e-4` as a string; turn such strings back into numbers inside free-form values."""
    if isinstance(obj, dict):
        return {k: numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [numbers(v) for v in obj]
    if isinstance(obj, str):
        try:
            return float(obj) if any(c in obj.lower() for c in ".e") else int(obj)
        except ValueError:
            return obj
    return obj


def read_yaml(path: Path, what: str, shipped_dir: Path, shipped: str = "shipped", settings: str = "settings") -> dict:
    """The mapping in a YAML file; `path` may also be the name of a file shipped in `shipped_dir`. `what`,
    `shipped` and `settings` word the errors: "{path}: {what} not found ({shipped}: ...)"."""
    if not path.exists() and (shipped_dir / f"{path}.yaml").exists():
        path = shipped_dir / f"{path}.yaml"  # `train_mlm.py demo` means recipes/demo.yaml
    if not path.is_file():
        names = ", ".join(p.stem for p in sorted(shipped_dir.glob("*.yaml")))
        raise ConfigError(f"{path}: {what} not found ({shipped}: {names})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}{yaml_error(e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of {settings}, got {type(raw).__name__}")
    return raw


# ---------------------------------------------------------------- command-line overrides


def parse_overrides(args: list[str]) -> list[tuple[str, object]]:
    """['--a.b', '1', '--c=x'] -> [('a.b', 1), ('c', 'x')]; values are read as YAML."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument '{arg}': overrides look like --key.path value")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"{arg}: missing value")
            key, value = arg[2:], args[i + 1]
            i += 2
        try:
            pairs.append((key, yaml.safe_load(value) if value != "" else None))
        except yaml.YAMLError as e:
            raise ConfigError(f"--{key} {value!r}: not a valid YAML value ({yaml_error(e, where=False)})") from None
    return pairs


def yaml_error(error: yaml.YAMLError, where: bool = True) -> str:
    """':LINE:COLUMN: not valid YAML (the problem)' from PyYAML's several-line message."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    cause = f"{context}, {problem}" if context else problem
    if not where:
        return cause
    place = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    return f"{place}: not valid YAML ({cause})"


def folder_name(key: str, name) -> None:
    """Names that become folder names (runs, phases, tasks) stay inside their parent folder."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{key}={name!r}: give a name")
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise ConfigError(f"{key}={name!r}: becomes a folder name, so it cannot hold / or \\ or start with a dot")


def apply_override(raw: dict, dotted: str, value):
    """Set `dotted` (`a.b.0.c`, or a list item by its `name`) in a raw YAML mapping."""
    node, parts = raw, dotted.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            index = _list_index(node, part, where)
            if last:
                node[index] = value
                return
            node = node[index]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--{dotted}: '{'.'.join(parts[:depth])}' is not a mapping or list")
        if last:
            node[part] = value
            return
        if node.get(part) is None:
            node[part] = {}
        node = node[part]


def _list_index(items: list, part: str, where: str) -> int:
    if part.lstrip("-").isdigit():
        index = int(part)
        if not -len(items) <= index < len(items):
            raise ConfigError(f"--{where}: index out of range (there are {len(items)})")
        return index
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return index
    names = [item.get("name") for item in items if isinstance(item, dict)]
    raise ConfigError(f"--{where}: no entry named '{part}'; names: {names}")


# ---------------------------------------------------------------- --help


def describe_fields(cls, prefix: str = "") -> list[str]:
    """Lines for --help: every key of the dataclass `cls` (nested ones too) with its default and meaning."""
    lines = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            lines.append(f"  {key}.*: {f.metadata.get('help', '')}")
            lines += describe_fields(hint, key + ".")
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        lines.append(f"  --{key:<34} {f.metadata.get('help', '')} [default: {default}]")
    return lines
