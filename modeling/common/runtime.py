"""Process and device facts that pretraining and fine-tuning both need."""

from __future__ import annotations

import logging
import os

import torch
from accelerate import PartialState

log = logging.getLogger(__name__)


def is_main_process() -> bool:
    """Known before any process group exists (logging is set up before one is joined)."""
    return int(os.environ.get("RANK", "0")) == 0


def join_processes() -> PartialState:
    """The process group of this launch (one process when not launched with several); on a machine
    without CUDA the processes talk over gloo. Also gives a lone CPU process every core (use_every_core)."""
    state = PartialState(cpu=not torch.cuda.is_available())
    use_every_core(state)
    return state


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
