"""Phases turned into numbers: optimizer steps, learning-rate schedule, masking probability.

Everything here is a pure function of the recipe (and, for epoch-length phases, of the number of packed
rows the phase's epochs hold, which the row index gives), so a resumed run recomputes the same plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modeling.pretrain.recipe import PhaseConfig, Recipe


@dataclass(frozen=True)
class MaskingSchedule:
    """Masking probability as a function of a row's position in its phase (constant or a linear ramp).

    It is read from the row index, not from the trainer's step, so prefetching and worker processes
    cannot make it lag, and it changes exactly where the phase changes."""

    start: float
    end: float
    total_rows: int

    def probability(self, row_index: int) -> float:
        if self.start == self.end or self.total_rows <= 1:
            return self.start
        progress = min(max(row_index / (self.total_rows - 1), 0.0), 1.0)
        return self.start + (self.end - self.start) * progress


@dataclass(frozen=True)
class PhasePlan:
    name: str
    index: int
    steps: int
    rows_per_step: int
    tokens_per_step: int  # row capacity: rows x max_seq_length
    lr: float
    warmup_steps: int
    stable_steps: int
    decay_steps: int
    decay_type: str
    min_lr_ratio: float
    masking: MaskingSchedule

    def scheduler_kwargs(self) -> dict:
        """Arguments for transformers' warmup-stable-decay schedule (TrainingArguments.lr_scheduler_kwargs)."""
        return {
            "num_stable_steps": self.stable_steps,
            "num_decay_steps": self.decay_steps,
            "decay_type": self.decay_type if self.decay_steps else "linear",
            "min_lr_ratio": self.min_lr_ratio,
        }


def held_out_masking(plan: PhasePlan, rows: int) -> MaskingSchedule:
    """The held-out slice is masked at the rate the phase ends with, the same before and after the phase, so the
    two losses measure the model and not the rate."""
    return MaskingSchedule(plan.masking.end, plan.masking.end, rows)


def plan_phase(recipe: Recipe, index: int, epoch_rows: int | None = None) -> PhasePlan:
    """Steps and schedule of phase `index`. Epoch-length phases need `epoch_rows`: the rows their epochs
    hold (modeling.data.rows.PhaseData.epoch_rows)."""
    phase: PhaseConfig = recipe.phases[index]
    rows_per_step = recipe.batch.rows_per_step(recipe.max_seq_length)
    tokens_per_step = rows_per_step * recipe.max_seq_length
    ((unit, amount),) = phase.length.items()
    if unit == "steps":
        steps = int(amount)
    elif unit == "tokens":
        steps = math.ceil(amount / tokens_per_step)
    else:
        if epoch_rows is None:
            raise ValueError(f"phase '{phase.name}': epochs need the number of rows of its epochs")
        steps = epoch_rows // rows_per_step  # whole steps only; the remainder is not trained
    steps = max(1, steps)

    schedule = phase.schedule
    warmup = _to_steps(schedule.warmup, steps, tokens_per_step)
    if schedule.decay == "none":
        decay = 0
    elif schedule.decay_tokens is not None:
        decay = math.ceil(schedule.decay_tokens / tokens_per_step)
    elif schedule.decay_fraction is not None:
        decay = round(schedule.decay_fraction * steps)
    else:
        decay = steps - warmup
    warmup, decay = min(warmup, steps), min(decay, steps - min(warmup, steps))
    start, end = phase.masking_range()
    return PhasePlan(
        name=phase.name,
        index=index,
        steps=steps,
        rows_per_step=rows_per_step,
        tokens_per_step=tokens_per_step,
        lr=phase.lr if phase.lr is not None else recipe.optimizer.lr,
        warmup_steps=warmup,
        stable_steps=steps - warmup - decay,
        decay_steps=decay,
        decay_type=schedule.decay,
        min_lr_ratio=schedule.min_lr_ratio,
        masking=MaskingSchedule(float(start), float(end), steps * rows_per_step),
    )


def _to_steps(amount: float, steps: int, tokens_per_step: int) -> int:
    """A fraction of the phase (< 1) or a number of tokens (>= 1), in optimizer steps."""
    if amount <= 0:
        return 0
    if amount < 1:
        return round(amount * steps)
    return math.ceil(amount / tokens_per_step)
