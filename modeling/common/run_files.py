"""Every file a run leaves: its name, its place, and the one way it is written (atomically).

A reader never sees half a file: everything is written to a temporary file beside it (unique per
process, so concurrent writers never share one) and renamed over the target, which POSIX makes atomic.
A folder that must appear whole (a trained tokenizer in the cache) is built under a temporary name and
renamed the same way.

Each lifecycle names its own files, with `File` and `Folder` from here: the token store in
modeling/data/store.py, a pretraining run in modeling/pretrain/run_folder.py, fine-tuning results in
modeling/finetune/run_folder.py, inference outputs in modeling/inference/outputs.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def not_a_file(key: str, folder: Path) -> None:
    """A folder a command writes into must not be an existing file; checked before any work."""
    from modeling.common.errors import ConfigError

    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{key}={folder}: is a file, not a folder; choose a folder to write into")


def writable_folder(key: str, folder: Path) -> None:
    """A folder a command writes into must be writable, checked before any work: by writing a probe in it (or in
    its nearest existing parent), since os.access answers yes to root on a read-only mount."""
    import tempfile

    from modeling.common.errors import ConfigError

    not_a_file(key, folder)
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}={folder}: {existing} is a file, not a folder; choose a folder to write into")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ConfigError(
            f"{key}={folder}: cannot write in {existing} ({error.strerror or error}); choose a folder you can write to"
        ) from None


# ---------------------------------------------------------------- atomic writes


def write_text(path: Path | str, text: str) -> Path:
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: Path | str, data, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(data, indent=indent, default=str) + ("\n" if indent else ""))


def read_json(path: Path | str):
    return json.loads(Path(path).read_text(encoding="utf-8"))


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write a file to (numpy, Arrow, ...); on success it becomes
    `path` in one rename, on failure it is removed."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yields a new, empty temporary folder beside `path`; on success it becomes `path` in one rename."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- the folders


class File:
    """A file of a run folder, by name: `run.summary_json` is `run.folder / "training_summary.json"`
    (on the class, the descriptor itself, whose `.name` is the file name)."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, instance, owner):
        return self if instance is None else instance.folder / self.name


class Folder:
    """A folder a lifecycle writes; its subclasses name the files in it with `File`."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)


# ---------------------------------------------------------------- one writer per run


class RunLock:
    """`.lock` in a run folder: one process trains or resumes into a folder at a time. A lock left by a
    process that is no longer running (killed) is recognised and taken over."""

    def __init__(self, folder: Path | str):
        self.path = Path(folder) / ".lock"
        self.held = False

    def acquire(self) -> str | None:
        """None once the lock is held; else why it cannot be (another live process holds it)."""
        import socket

        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self._holder()
                if holder is None or (holder.get("host") == me["host"] and not alive(holder.get("pid"))):
                    logging.getLogger(__name__).warning(
                        "%s: left by process %s, which is no longer running; taking it over",
                        self.path,
                        holder.get("pid") if holder else "?",
                    )
                    self.path.unlink(missing_ok=True)
                    continue
                where = "" if holder.get("host") == me["host"] else f" on {holder.get('host')}"
                return (
                    f"{self.path.parent}: process {holder.get('pid')}{where} is training into it (its lock is "
                    f"{self.path}); wait for it to end, or remove the lock if that process is gone"
                )
            with os.fdopen(descriptor, "w") as handle:
                json.dump(me, handle)
            self.held = True
            return None
        return f"{self.path}: cannot take the lock"

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
            return holder if isinstance(holder, dict) else None
        except (OSError, ValueError):
            return None  # empty or cut short: its writer died while writing it


def remove_orphaned_temporaries(folder: Path) -> int:
    """Remove the temporary files (`NAME.PID.tmp`, as the writers here name them) under `folder` whose writer
    is no longer running on this host: a process killed mid-write (a pool terminated after another task's
    error, a kill) leaves one. Files of writers still alive are kept. Returns how many went."""
    removed = 0
    for path in Path(folder).rglob("*.tmp"):
        pid = path.name.rsplit(".", 2)[-2] if path.name.count(".") >= 2 else ""
        if pid.isdigit() and not alive(int(pid)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
    return removed


def alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
