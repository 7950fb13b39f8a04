"""Every file a run leaves: its name, its place, and the one way it is written (atomically).

A reader never sees half a file: everything is written to a temporary file beside it (unique per
process, so concurrent writers never share one) and renamed over the target, which POSIX makes atomic.
A folder that must appear whole (a trained tokenizer in the cache) is built under a temporary name and
renamed the same way.

Token store (`train_mlm.py prepare`), `store.path`: see modeling/data/store.py.

Pretraining run (`train_mlm.py`), `output_dir/`:

    recipe.json                     the recipe as run, overrides applied
    training_summary.json           per phase and in total: tokens, steps, held-out loss, wall time, skips
    training_curves.png             loss, learning rate and masking rate over tokens seen
    tensorboard/PHASE/              TensorBoard events (when logging.report_to names tensorboard)
    PHASE/                          the phase's model: a stock transformers folder (safetensors)
    PHASE/phase_state.json          held-out loss measured before the phase's first step (a resume reads it)
    PHASE/index/                    the phase's row indexes (epoch-N-KEY.npz, weighted-KEY.npz; KEY: the settings they
                                    were built with): rebuilt if missing
    PHASE/phase_summary.json        written when the phase is done; its presence marks the phase complete
    PHASE/checkpoints/checkpoint-N/ resumable Trainer checkpoint; complete once checkpoint_complete.json is in it
                                    and the Trainer's state and the engine's files read back (DDP: model.safetensors,
                                    optimizer.pt; FSDP2: pytorch_model_fsdp_0/, optimizer_0/; ZeRO: latest,
                                    global_stepN/; modeling/common/engines.py)

Fine-tuning results (`finetune.py`), `results/TASK/`:

    aggregate.json, aggregate.md    mean, std, min, max over seeds of every metric
    curves.png                      training loss and validation score per epoch of every run
    seedN/ (lrX-seedN/ with a grid) one run: results.json, predictions_test.jsonl, model/ or adapter/

Inference (`python -m modeling.inference`), `--output_dir`:

    embeddings.safetensors, notes.jsonl   an encoder: one embedding per note, and where each note came from
    predictions.jsonl                     a classifier: labels and per-label scores per note
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


class _File:
    """A file of a run folder, by name: `run.summary_json` is `run.folder / "training_summary.json"`
    (on the class, the descriptor itself, whose `.name` is the file name)."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, instance, owner):
        return self if instance is None else instance.folder / self.name


class _Folder:
    def __init__(self, folder: Path | str):
        self.folder = Path(folder)


class PretrainingRun(_Folder):
    """The files of one `train_mlm.py` run (see the module docstring)."""

    recipe_json = _File("recipe.json")
    summary_json = _File("training_summary.json")
    plot_png = _File("training_curves.png")

    def tensorboard_dir(self, phase: str) -> Path:
        return self.folder / "tensorboard" / phase

    def phase(self, name: str) -> PhaseFolder:
        return PhaseFolder(self.folder / name)

    def has_progress(self) -> bool:
        """A run started training here: a summary, or a phase that measured its held-out loss or saved a
        checkpoint. (A folder with only recipe.json is a run that stopped before training, on a mistake
        found late: a corrected rerun may start over.)"""
        if not self.folder.is_dir():
            return False
        if self.summary_json.exists():
            return True
        return any(
            (d / PhaseFolder.state_json.name).exists() or (d / PhaseFolder.checkpoints_dir.name).exists()
            for d in self.folder.iterdir()
            if d.is_dir()
        )

    def relative(self, path: Path | str | None) -> str | None:
        """A path inside the run as recorded: relative to the run folder, so a moved run still finds it."""
        if path is None:
            return None
        return os.path.relpath(Path(path).absolute(), self.folder.absolute())

    def resolve(self, recorded: str | None) -> str | None:
        """A recorded path back to a path here. Runs recorded before paths were relative hold absolute ones:
        used where they exist, else looked up by their last parts inside this run (a moved run)."""
        if recorded is None:
            return None
        path = Path(recorded)
        if not path.is_absolute():
            return str(self.folder / path)
        if path.exists():
            return str(path)
        for depth in range(1, len(path.parts)):
            candidate = self.folder.joinpath(*path.parts[-depth:])
            if candidate.exists():
                return str(candidate)
        return str(path)


class PhaseFolder(_Folder):
    """One phase: the model it ends with, its state files and its checkpoints."""

    CHECKPOINT_MARKER = "checkpoint_complete.json"  # written last: a checkpoint without it is incomplete
    state_json = _File("phase_state.json")
    index_dir = _File("index")
    summary_json = _File("phase_summary.json")
    checkpoints_dir = _File("checkpoints")

    def checkpoints(self) -> list[Path]:
        """checkpoint-N folders (the Trainer names them so), newest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [p for p in self.checkpoints_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True)

    def is_done(self) -> bool:
        return self.summary_json.exists()


class TaskResults(_Folder):
    """The results folder of one task and model (see the module docstring)."""

    aggregate_json = _File("aggregate.json")
    aggregate_md = _File("aggregate.md")
    plot_png = _File("curves.png")

    def run(self, seed: int, lr: float | None = None) -> TaskRun:
        """One run's folder: seedN, or lrX-seedN when a learning-rate grid is searched."""
        return TaskRun(self.folder / (f"lr{lr:g}-seed{seed}" if lr is not None else f"seed{seed}"))

    def results_files(self) -> list[Path]:
        return sorted(self.folder.rglob("results.json"))


class TaskRun(_Folder):
    results_json = _File("results.json")
    predictions_jsonl = _File("predictions_test.jsonl")
    model_dir = _File("model")
    adapter_dir = _File("adapter")
    checkpoints_dir = _File("checkpoints")


class InferenceOutputs(_Folder):
    embeddings_safetensors = _File("embeddings.safetensors")
    notes_jsonl = _File("notes.jsonl")
    predictions_jsonl = _File("predictions.jsonl")


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
                if holder is None or (holder.get("host") == me["host"] and not _alive(holder.get("pid"))):
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
        if pid.isdigit() and not _alive(int(pid)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
