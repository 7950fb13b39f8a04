"""Phase lengths and LR schedules: steps from tokens/steps/epochs, warmup-stable-decay as transformers runs it."""

import math

import pytest
import torch
from helpers import write_recipe
from transformers import get_scheduler

from modeling.common.config import parse_overrides
from modeling.pretrain.recipe import load_recipe
from modeling.pretrain.schedules import plan_phase

# The Trainer's scheduler is built as here; transformers warns that the total and the stable length are both
# given (PretrainingTrainer.create_scheduler silences it for the run).
pytestmark = pytest.mark.filterwarnings("ignore:Both num_training_steps and num_stable_steps")


def _recipe(tmp_path, *overrides):
    return load_recipe(write_recipe(tmp_path), parse_overrides(list(overrides)))


def _lrs(plan):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=plan.lr)
    scheduler = get_scheduler(
        "warmup_stable_decay",
        optimizer,
        num_warmup_steps=plan.warmup_steps,
        num_training_steps=plan.steps,
        scheduler_specific_kwargs=plan.scheduler_kwargs(),
    )
    lrs = []
    for _ in range(plan.steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_length_in_tokens_steps_and_epochs(tmp_path):
    recipe = _recipe(tmp_path, "--phases.0.length", "{tokens: 10000}")
    assert plan_phase(recipe, 0).steps == math.ceil(10000 / (8 * 128))
    assert plan_phase(_recipe(tmp_path, "--phases.0.length", "{steps: 7}"), 0).steps == 7
    assert plan_phase(recipe, 1, epoch_rows=100).steps == 100 // 8
    recipe = _recipe(tmp_path, "--phases.1.length", "{epochs: 2.5}")
    assert plan_phase(recipe, 1, epoch_rows=250).steps == 250 // 8  # rows of its 2.5 epochs
    with pytest.raises(ValueError):
        plan_phase(recipe, 1)


def test_global_tokens_become_rows(tmp_path):
    recipe = _recipe(tmp_path, "--batch", "{global_tokens: 4096, per_device: 4}")
    assert recipe.batch.rows_per_step(128) == 32
    assert recipe.batch.accumulation_steps(128, 2) == 4


def test_constant_after_warmup(tmp_path):
    plan = plan_phase(_recipe(tmp_path, "--phases.0.length", "{steps: 20}"), 0)  # warmup 0.25, no decay
    lrs = _lrs(plan)
    assert plan.warmup_steps == 5
    assert plan.decay_steps == 0
    assert lrs[0] == 0
    assert lrs[4] < plan.lr
    assert all(lr == plan.lr for lr in lrs[5:])


def test_one_minus_sqrt_decay_to_the_minimum_ratio(tmp_path):
    plan = plan_phase(_recipe(tmp_path), 1, epoch_rows=800)  # 100 steps, decay the whole phase
    lrs = _lrs(plan)
    assert (plan.warmup_steps, plan.stable_steps, plan.decay_steps) == (0, 0, 100)
    assert lrs[0] == plan.lr
    progress = 64 / 100
    assert lrs[64] == pytest.approx(plan.lr * (0.1 + 0.9 * (1 - math.sqrt(progress))))
    assert lrs[-1] == pytest.approx(plan.lr * (0.1 + 0.9 * (1 - math.sqrt(0.99))))


def test_decay_over_the_last_tokens_and_cosine_with_warmup(tmp_path):
    recipe = _recipe(
        tmp_path,
        "--phases.0.length",
        "{steps: 100}",
        "--phases.0.schedule",
        "{warmup: 0.1, decay: cosine, decay_tokens: 20480, min_lr_ratio: 0}",
    )
    plan = plan_phase(recipe, 0)
    assert (plan.warmup_steps, plan.stable_steps, plan.decay_steps) == (10, 70, 20)  # 20480 tokens / 1024 per step
    lrs = _lrs(plan)
    assert lrs[10] == lrs[79] == plan.lr
    assert lrs[90] == pytest.approx(plan.lr * 0.5)


def test_masking_ramp_spans_the_phase(tmp_path):
    plan = plan_phase(_recipe(tmp_path), 1, epoch_rows=80)
    assert plan.masking.probability(0) == 0.3
    assert plan.masking.probability(plan.steps * plan.rows_per_step - 1) == pytest.approx(0.15)
