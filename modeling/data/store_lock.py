"""Who may change a token store while others read it: `STORE/.lock`, an advisory lock (flock).

Every process that opens a store for reading holds the lock shared until it exits (training, its data loader
workers, a contamination scan); a prepare that writes into the store (a first prepare, one continuing after a
kill, `--rebuild`) holds it exclusively. So a rebuild never changes shards under a run that reads them through
an index built from the old ones, and a run never opens a store half rebuilt: whichever comes second stops in
one line naming the other. The kernel drops a killed process's lock, so nothing stale ever blocks.

Each reader also leaves `STORE/.readers/HOST-PID.json` (its command and start), only to name it in that line;
the lock alone decides. flock works across the machines of a multi-node run where their filesystem supports it
(NFSv4, Lustre with flock mounts); where it does not, the lock is taken locally only. A read-only store (where
nothing can prepare it either) is read without the lock.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from modeling.common.errors import DataError
from modeling.common.run_files import alive

LOCK = ".lock"
READERS = ".readers"

# Per process: the stores it reads (resolved folder -> open descriptor holding the shared lock), kept open until
# the process exits, so one process opening a store many times (each data loader worker, every phase) reads it
# under one lock.
_reading: dict[str, int] = {}


def _me() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv)),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _describe(who: dict) -> str:
    where = "" if who.get("host") == socket.gethostname() else f" on {who.get('host')}"
    return f"process {who.get('pid')}{where} (`{who.get('command', '?')}`, since {who.get('since', '?')})"


def _open_lock(folder: Path) -> int | None:
    """The lock file's descriptor; None where the store is read-only and has none."""
    path = folder / LOCK
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        if error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
    try:
        return os.open(path, os.O_RDONLY)  # a store someone else prepared, readable only: flock works on it
    except OSError:
        return None


def read_lock(folder: Path | str) -> None:
    """Hold `folder`'s lock shared for the rest of this process; a prepare writing into it is named in one line."""
    folder = Path(folder).resolve()
    if str(folder) in _reading:
        return
    descriptor = _open_lock(folder)
    if descriptor is None:
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        writer = _read_json(folder / LOCK)
        os.close(descriptor)
        who = _describe(writer) if writer else "another process"
        raise DataError(
            f"{folder}: {who} is preparing this store right now; wait for it to finish, then run again"
        ) from None
    _reading[str(folder)] = descriptor
    me = _me()
    note = folder / READERS / f"{me['host']}-{me['pid']}.json"
    try:
        note.parent.mkdir(exist_ok=True)
        note.write_text(json.dumps(me))
    except OSError:
        return  # a store others may read but not write: the lock holds without the note
    atexit.register(_forget_note, note, me["pid"])


def _forget_note(note: Path, pid: int) -> None:
    if os.getpid() == pid:  # not a forked data loader worker, which inherits the hook
        note.unlink(missing_ok=True)


class WriteLock:
    """`with WriteLock(folder):` the store is this process's alone to change; a reader or another prepare is
    named in one line. This process's own shared lock, if it read the store before, is given up first."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder).resolve()
        self.descriptor: int | None = None

    def __enter__(self) -> WriteLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        own = _reading.pop(str(self.folder), None)
        if own is not None:
            os.close(own)
            me = _me()
            _forget_note(self.folder / READERS / f"{me['host']}-{me['pid']}.json", me["pid"])
        try:
            self.descriptor = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise DataError(f"{self.folder / LOCK}: cannot create it ({error.strerror or error})") from None
        try:
            fcntl.flock(self.descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.descriptor)
            self.descriptor = None
            raise DataError(f"{self.folder}: {self._holders()}") from None
        os.ftruncate(self.descriptor, 0)
        os.pwrite(self.descriptor, json.dumps(_me()).encode(), 0)  # who prepares, for a reader's one line
        return self

    def __exit__(self, *exc) -> None:
        if self.descriptor is not None:
            os.ftruncate(self.descriptor, 0)
            os.close(self.descriptor)  # closing drops the lock
            self.descriptor = None

    def _holders(self) -> str:
        """Who holds the lock: the readers' notes whose process still runs (or runs on another machine)."""
        here = socket.gethostname()
        readers = []
        for note in sorted((self.folder / READERS).glob("*.json")):
            who = _read_json(note)
            if who is None or (who.get("host") == here and not alive(who.get("pid"))):
                note.unlink(missing_ok=True)  # a reader that was killed: its lock went with it
                continue
            readers.append(who)
        if readers:
            more = f" and {len(readers) - 1} more" if len(readers) > 1 else ""
            return (
                f"{_describe(readers[0])}{more} is reading this store; stop it before the store changes, or prepare "
                "into another store.path"
            )
        writer = _read_json(self.folder / LOCK)
        if writer:
            return f"{_describe(writer)} is preparing this store right now; wait for it to finish"
        return (
            "another process holds this store's lock (reading or preparing it); wait for it, or use another store.path"
        )


def clear_store(folder: Path | str) -> None:
    """Everything in the store but its lock, removed (for --rebuild, under WriteLock). The folder itself stays,
    so a store reached through a symlink is rebuilt where the link points."""
    import shutil

    for entry in Path(folder).iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None
