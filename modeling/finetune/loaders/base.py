"""What every loader shares: finding the task's files, reading them with one-line errors, and the bad-record
rule (stop, or count and skip)."""

from __future__ import annotations

import csv
import gzip
import zlib
from contextlib import contextmanager
from pathlib import Path

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.finetune.examples import TaskLabels
from modeling.finetune.loaders.spec import DataSpec


def data_path(spec: DataSpec, relative: str | None = None, what: str = "data.path") -> Path:
    """`relative` under data.path (or data.path itself), which must exist."""
    if spec.path is None:
        raise DataError(f"{what}: no data folder given; pass --data_dir or set data.path")
    path = Path(spec.path).expanduser() / relative if relative else Path(spec.path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: not found ({what})")
    return path


def split_files(spec: DataSpec, default: dict[str, str] | None = None) -> dict[str, Path]:
    """Split -> file for loaders whose files define the splits ({train: train.tsv, ...} under path)."""
    files = spec.files or default
    if files:
        return {split: data_path(spec, name, f"data.files.{split}") for split, name in files.items()}
    return {"all": data_path(spec)}


def bad_record(spec: DataSpec, skips: SkipLog, task: str, where: str, problem: str) -> None:
    """Stop on a bad record, or (on_bad_record: skip) count it and go on."""
    if spec.on_bad_record == "raise":
        raise DataError(f"{where}: {problem}")
    skips.add(task, problem.split(":")[0], where)


def as_label_list(value, spec: DataSpec, where: str) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if value is None:
        raise DataError(f"{where}: no value in '{spec.label_field}'")
    if spec.label_separator is not None:
        return [part.strip() for part in str(value).split(spec.label_separator) if part.strip()]
    return [str(value)]


@contextmanager
def reading(path: Path):
    """Undecodable bytes, broken CSV quoting or a corrupt gzip as one line naming the file."""
    try:
        yield
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except (csv.Error, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None


def read_text(path: Path) -> str:
    """The whole file with its line ends as they are (BRAT offsets count a \\r\\n as two characters)."""
    with reading(path), open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


def entity_types(spec: DataSpec, task: TaskLabels) -> set[str]:
    """Entity types kept as tags: data.entity_types, else those the task's labels name."""
    if spec.entity_types is not None:
        return set(spec.entity_types)
    return {tag[2:] for tag in task.tag_names if tag != "O"}


def split_name(split: str) -> str | None:
    return None if split == "all" else split  # "all": split_files found no split mapping
