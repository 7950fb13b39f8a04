"""Process and device facts that pretraining and fine-tuning both need."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import uuid
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object

from modeling.common.errors import ConfigError

log = logging.getLogger(__name__)


def is_main_process() -> bool:
    """Known before any process group exists (logging is set up before one is joined)."""
    return int(os.environ.get("RANK", "0")) == 0


DEFAULT_TIMEOUT_MINUTES = 180.0


def join_processes(timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES) -> PartialState:
    """The process group of this launch (one process when not launched with several); on a machine
    without CUDA the processes talk over gloo. Also gives a lone CPU process every core (use_every_core).

    The group is created here, before any Trainer, so the run's timeout must be given here: a collective that
    waits longer fails. Left to torch, NCCL's is 10 minutes, less than a large model's checkpoint on a slow
    disk; TrainingArguments.ddp_timeout never reaches a group that already exists."""
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=datetime.timedelta(minutes=timeout_minutes))
    use_every_core(state)
    return state


def process_group_timeout() -> datetime.timedelta | None:
    """The timeout of this launch's process group (None without one)."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return None
    group = torch.distributed.distributed_c10d._get_default_group()
    return group._get_backend(torch.device("cpu")).options._timeout


def processes_without(state: PartialState, has: bool) -> list[str]:
    """Every process says whether it has something (a collective: all must call it); those that do not, as
    "rank R on HOST", the same list on every process, so all of them decide alike."""
    said = gather_object([(state.process_index, socket.gethostname(), has)])
    return [f"rank {rank} on {host}" for rank, host, found in said if not found]


def check_shared_folder(state: PartialState, folder: Path, key: str) -> None:
    """Several processes read what one of them writes in `folder` (run state, results): every process must see
    the same folder. The main process writes a marker there and every process looks for it; where one cannot
    (another machine with the same path on its own disk), every process stops with the same line, instead of
    one failing while the others wait at the next collective until the timeout."""
    if state.num_processes == 1:
        return
    name = [f".shared-folder-check-{uuid.uuid4().hex}" if state.is_main_process else None]
    name = broadcast_object_list(name)[0]
    marker = Path(folder) / name
    if state.is_main_process:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(socket.gethostname())
    state.wait_for_everyone()
    blind = processes_without(state, marker.exists())
    if state.is_main_process:
        marker.unlink(missing_ok=True)
    state.wait_for_everyone()  # no process goes on while the marker is still there
    if blind:
        raise ConfigError(
            f"{key}={folder}: not one folder for every process ({', '.join(blind)} cannot see what rank 0 wrote "
            f"there); runs on several machines need {key} on a filesystem they all mount (NFS, Lustre, ...)"
        )


def use_every_core(state: PartialState):
    """`accelerate launch` without a config or --cpu (the quickstart) sets OMP_NUM_THREADS=1, which leaves a
    single CPU process on one core (the demo's phase 1 ran 1.56x slower so). Such a run gets every core it may use."""
    launched_by_accelerate = "ACCELERATE_DYNAMO_BACKEND" in os.environ
    if (
        state.device.type != "cpu"
        or state.num_processes != 1
        or not launched_by_accelerate
        or os.environ.get("OMP_NUM_THREADS") != "1"
    ):
        return
    cores = len(os.sched_getaffinity(0))
    if cores > torch.get_num_threads():
        torch.set_num_threads(cores)
        log.info(
            "accelerate launch set OMP_NUM_THREADS=1; this single CPU process uses all %d cores "
            "(run it with `python` to keep one thread)",
            cores,
        )


def resolve_precision(precision: str) -> str:
    """`auto` -> bf16 on a GPU that has it, else fp32; other values as given."""
    if precision != "auto":
        return precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def use_cpu() -> bool:
    """TrainingArguments.use_cpu: on a machine without CUDA several processes then talk over gloo."""
    return not torch.cuda.is_available()
