"""Context-length sweep: the whole fine-tuning protocol (seeds, learning rate chosen on validation, best epoch)
at each maximum length of `max_length_grid`, on the same checkpoint, to tell what a longer context buys from
what the checkpoint knows.

Each length is a task of its own, in `output_dir/max_length-N/` (its runs, aggregate and curves, reused when
finished, as any task's); the sweep writes context_sweep.json, context_sweep.md and context_sweep.png beside
them: the test score against the maximum length (mean +- std over seeds), with the share of test documents
longer than each length (those the length cuts into windows).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from accelerate import PartialState

from modeling.common import run_files
from modeling.common.errors import ConfigError, DataError
from modeling.common.loading import load_config
from modeling.common.plotting import pyplot, save_figure
from modeling.common.records import Record
from modeling.finetune.config import TaskConfig
from modeling.finetune.results import MetricStats, TaskAggregate, mean_std, read_runs
from modeling.finetune.run_folder import SweepResults

log = logging.getLogger(__name__)


@dataclass
class LengthResult(Record):
    """The protocol at one maximum length."""

    max_length: int
    window_stride: int
    test_documents: int
    test_longer: int  # test documents longer than max_length: cut into several windows
    test_windows: int
    lr: float  # chosen on validation
    seeds: list[int]
    validation: MetricStats  # the selection metric
    test: MetricStats
    test_by_seed: list[float]  # in the order of `seeds`
    folder: str  # relative to the sweep's folder

    @property
    def longer_share(self) -> float:
        return self.test_longer / max(1, self.test_documents)


@dataclass
class ContextSweep(Record):
    """context_sweep.json."""

    task: str
    model: str
    random_init: bool
    selection_metric: str
    lengths: list[LengthResult]
    plot: str = SweepResults.plot_png.name


def task_at_length(task: TaskConfig, max_length: int) -> TaskConfig:
    """The task at one length of its sweep, in its own folder; a window stride given that does not fit the length
    (it must stay below half of it) becomes a quarter of the length (the default follows each length anyway)."""
    stride = task.window_stride
    if stride is not None and stride >= max_length // 2:
        stride = max_length // 4
        log.info("max_length %d: window_stride %d -> %d (below half of it)", max_length, task.window_stride, stride)
    folder = SweepResults(task.results_dir()).length(max_length)
    changed = dataclasses.replace(
        task, max_length=max_length, max_length_grid=None, window_stride=stride, output_dir=str(folder)
    )
    return changed.validate()


def run_sweep(task: TaskConfig, run_task: Callable[[TaskConfig], TaskAggregate]) -> ContextSweep:
    """`run_task` (modeling.finetune.runner.run) at each length of the grid, shortest first; the sweep's record,
    table and plot are written by the main process."""
    results = SweepResults(task.results_dir())
    positions = load_config(task.model).max_position_embeddings
    too_long = [n for n in task.max_length_grid if n > positions]
    if too_long:  # said before the shorter lengths run, not after
        raise ConfigError(f"max_length_grid: {too_long} above the model's {positions} positions")
    if task.max_length is not None:
        log.info("max_length_grid %s replaces max_length %d", task.max_length_grid, task.max_length)
    lengths = []
    for max_length in sorted(task.max_length_grid):
        at_length = task_at_length(task, max_length)
        log.info("context-length sweep: max_length %d (%s)", max_length, at_length.results_dir())
        aggregate = run_task(at_length)
        PartialState().wait_for_everyone()  # the main process has written every run's results.json, read below
        lengths.append(_length_result(at_length, aggregate, results.folder))
    sweep = ContextSweep(task.name, task.model, task.random_init, task.metric_for_selection, lengths)
    if PartialState().is_main_process:
        results.folder.mkdir(parents=True, exist_ok=True)
        plot_sweep(sweep, results.plot_png)
        run_files.write_json(results.sweep_json, sweep.to_dict())
        run_files.write_text(results.sweep_md, sweep_table(sweep) + "\n")
    return sweep


def _length_result(task: TaskConfig, aggregate: TaskAggregate, sweep_folder: Path) -> LengthResult:
    metric = aggregate.selection_metric
    runs = {r.seed: r for r in read_runs(task.results_dir()) if r.lr == aggregate.lr}
    first = runs[aggregate.seeds[0]]
    if first.longer_than_max_length is None:
        raise DataError(
            f"{task.results_dir()}: its runs were recorded before documents longer than max_length were counted; "
            "delete the folder to run that length again"
        )
    return LengthResult(
        max_length=task.max_length,
        window_stride=task.stride_for(task.max_length),
        test_documents=first.examples["test"],
        test_longer=first.longer_than_max_length["test"],
        test_windows=first.windows["test"],
        lr=aggregate.lr,
        seeds=aggregate.seeds,
        validation=aggregate.validation[metric],
        test=aggregate.test[metric],
        test_by_seed=[runs[seed].score("test", metric) for seed in aggregate.seeds],
        folder=task.results_dir().relative_to(sweep_folder).as_posix(),
    )


def sweep_table(sweep: ContextSweep) -> str:
    """context_sweep.md, and what finetune.py prints."""
    lines = [
        f"### {sweep.task}: test {sweep.selection_metric} against maximum length, model `{sweep.model}`"
        f"{' (random init)' if sweep.random_init else ''}",
        "",
        "Mean +- std (sample) over seeds, at the learning rate chosen on validation at each length; longer: test "
        "documents the length cuts into several windows.",
        "",
        "| max length | window stride | test documents longer | windows per test document | lr | validation | test "
        "| test by seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in sweep.lengths:
        lines.append(
            f"| {row.max_length} | {row.window_stride} | {row.longer_share:.1%} ({row.test_longer}/"
            f"{row.test_documents}) | {row.test_windows / max(1, row.test_documents):.2f} | {row.lr:g} "
            f"| {mean_std(row.validation)} | {mean_std(row.test)} | "
            + ", ".join(f"{score:.4f}" for score in row.test_by_seed)
            + " |"
        )
    return "\n".join(lines)


def plot_sweep(sweep: ContextSweep, path: Path) -> Path:
    """Test score (mean +- std over seeds, each seed a dot) against the maximum length, on a log scale; below, the
    share of test documents longer than each length."""
    fig, (score_ax, share_ax) = pyplot().subplots(
        2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    x = [row.max_length for row in sweep.lengths]
    score_ax.errorbar(
        x,
        [row.test.mean for row in sweep.lengths],
        yerr=[row.test.std for row in sweep.lengths],
        fmt="o-",
        capsize=4,
        label="test (mean +- std)",
    )
    score_ax.plot(x, [row.validation.mean for row in sweep.lengths], "s--", alpha=0.6, label="validation (mean)")
    for row in sweep.lengths:
        score_ax.plot([row.max_length] * len(row.test_by_seed), row.test_by_seed, ".", color="grey", alpha=0.7)
    score_ax.set(ylabel=f"{sweep.selection_metric}", title=f"{sweep.task}: score against maximum length")
    score_ax.legend(fontsize=8)
    share_ax.bar(x, [100 * row.longer_share for row in sweep.lengths], width=[0.3 * n for n in x], color="C1")
    share_ax.set(xscale="log", xlabel="maximum length (tokens)", ylabel="test docs longer (%)")
    for ax in (score_ax, share_ax):
        ax.minorticks_off()  # the log scale's own labels (2 x 10^2) would sit between the lengths
    share_ax.set_xticks(x, [str(n) for n in x])
    return save_figure(fig, (score_ax, share_ax), path)
