"""What fine-tuning records: one `RunRecord` per (seed, learning rate) (results.json), and `TaskAggregate`
over the seeds (aggregate.json, aggregate.md, curves.png).

The learning rate (when a grid was run) is chosen by the mean validation score of the selection metric;
test scores are reported for that learning rate only. The JSON keys are the field names, unchanged since
the first runs, so results written by earlier versions still aggregate and still get model cards.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from modeling.common import run_files
from modeling.common.errors import DataError
from modeling.common.plotting import pyplot, save_figure
from modeling.common.records import Record
from modeling.finetune.run_folder import TaskResults


@dataclass
class RunRecord(Record):
    """results.json: one fine-tuning run (a seed at a learning rate), with what it was trained on."""

    task: str
    task_type: str
    model: str
    random_init: bool
    peft: dict | None
    seed: int
    lr: float
    selection_metric: str
    best_epoch: float
    validation_by_epoch: list[dict]  # per epoch: epoch, step and every validation score
    metrics: dict[str, dict]  # validation / test -> metric name -> score (per-type breakdowns as mappings)
    metric_descriptions: dict[str, str] = field(default_factory=dict)
    train_loss: list[list[float]] = field(default_factory=list)  # [step, loss]
    steps_per_epoch: int = 1
    examples: dict[str, int] = field(default_factory=dict)  # split -> examples
    windows: dict[str, int] = field(default_factory=dict)  # split -> windows of at most max_length tokens
    longer_than_max_length: dict[str, int] | None = None  # split -> examples of several windows (None: not recorded)
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped_or_repaired: dict[str, int] = field(default_factory=dict)
    max_length: int | None = None
    train_runtime_s: float | None = None
    config: dict = field(default_factory=dict)  # the TaskConfig as run (config.task_from_dict reads it back)
    saved: dict[str, str] | None = None  # model / adapter folders
    wall_time_s: float | None = None
    batching: str | None = None  # packed | random | length_grouped as run (None: written before it was recorded)

    OMITTED_WHEN_NONE = ("batching", "longer_than_max_length")

    def to_dict(self) -> dict:
        data = super().to_dict()
        if data["saved"] is None:
            del data["saved"]  # as the first versions wrote it: absent when nothing was saved
        return data

    def score(self, split: str, metric: str) -> float:
        return self.metrics[split][metric]


@dataclass
class MetricStats(Record):
    mean: float
    std: float  # sample standard deviation (0 for one seed)
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> MetricStats:
        return cls(
            mean=statistics.fmean(values),
            std=statistics.stdev(values) if len(values) > 1 else 0.0,
            min=min(values),
            max=max(values),
            n=len(values),
        )


def mean_std(stats: MetricStats | None) -> str:
    """The one way a score over seeds is written, in aggregate.md and in model cards."""
    return f"{stats.mean:.4f} +- {stats.std:.4f}" if stats else ""


@dataclass
class LearningRateResult(Record):
    validation: dict[str, MetricStats]
    test: dict[str, MetricStats]
    seeds: list[int]
    best_epochs: list[float]


@dataclass
class TaskAggregate(Record):
    """aggregate.json: a task's runs of one model, over seeds, at the learning rate chosen on validation."""

    task: str
    task_type: str
    model: str
    random_init: bool
    peft: dict | None
    selection_metric: str
    lr: float
    seeds: list[int]
    best_epochs: list[float]
    validation: dict[str, MetricStats]
    test: dict[str, MetricStats]
    by_lr: dict[str, LearningRateResult] | None  # every learning rate of a grid
    metric_descriptions: dict[str, str]
    wall_time_s: float
    plot: str | None = None

    def to_dict(self) -> dict:
        data = super().to_dict()
        if data["plot"] is None:
            del data["plot"]
        return data


def aggregate_runs(runs: list[RunRecord], selection_metric: str) -> TaskAggregate:
    """Runs of one task and model (one per seed and learning rate)."""
    by_lr: dict[float, list[RunRecord]] = {}
    for record in runs:
        by_lr.setdefault(record.lr, []).append(record)
    per_lr: dict[float, LearningRateResult] = {}
    for lr, records in sorted(by_lr.items()):
        stats = {
            split: {
                name: MetricStats.of([r.metrics[split][name] for r in records])
                for name, value in records[0].metrics[split].items()
                if isinstance(value, float)
            }
            for split in ("validation", "test")
        }
        per_lr[lr] = LearningRateResult(
            stats["validation"], stats["test"], [r.seed for r in records], [r.best_epoch for r in records]
        )
    best_lr = max(per_lr, key=lambda lr: per_lr[lr].validation[selection_metric].mean)
    first, best = runs[0], per_lr[best_lr]
    return TaskAggregate(
        task=first.task,
        task_type=first.task_type,
        model=first.model,
        random_init=first.random_init,
        peft=first.peft,
        selection_metric=selection_metric,
        lr=best_lr,
        seeds=best.seeds,
        best_epochs=best.best_epochs,
        validation=best.validation,
        test=best.test,
        by_lr={f"{lr:g}": result for lr, result in per_lr.items()} if len(per_lr) > 1 else None,
        metric_descriptions=first.metric_descriptions,
        wall_time_s=round(sum(r.wall_time_s or 0.0 for r in runs), 1),
    )


def metric_table(aggregate: TaskAggregate, checkpoint: RunRecord | None = None) -> str:
    """Every metric: validation and test (mean +- std over seeds), test min and max; with `checkpoint`, also
    that run's own test score (a task model's card)."""
    header = "| metric | validation | test | test min | test max |"
    rule = "|---|---|---|---|---|"
    if checkpoint:
        header, rule = header + " this checkpoint (test) |", rule + "---|"
    lines = [header, rule]
    for name, test in aggregate.test.items():
        line = (
            f"| {name} | {mean_std(aggregate.validation.get(name))} | {mean_std(test)} "
            f"| {test.min:.4f} | {test.max:.4f} |"
        )
        if checkpoint:
            line += f" {checkpoint.metrics['test'].get(name, float('nan')):.4f} |"
        lines.append(line)
    return "\n".join(lines)


def markdown_summary(aggregate: TaskAggregate) -> str:
    """aggregate.md, and what finetune.py prints."""
    title = (
        f"### {aggregate.task} ({aggregate.task_type}), model `{aggregate.model}`"
        f"{' (random init)' if aggregate.random_init else ''}{' + LoRA' if aggregate.peft else ''}"
    )
    selection = (
        f"lr {aggregate.lr:g}, seeds {aggregate.seeds}, best epochs {aggregate.best_epochs}; "
        f"model selected on validation `{aggregate.selection_metric}`; mean +- std (sample) over seeds."
    )
    return "\n".join([title, "", selection, "", metric_table(aggregate)]) + "\n"


def write_aggregate(aggregate: TaskAggregate, results: TaskResults, runs: list[RunRecord]) -> None:
    results.folder.mkdir(parents=True, exist_ok=True)
    aggregate.plot = plot_runs(runs, aggregate.selection_metric, results.plot_png).name
    run_files.write_json(results.aggregate_json, aggregate.to_dict())
    run_files.write_text(results.aggregate_md, markdown_summary(aggregate))


def plot_runs(runs: list[RunRecord], metric: str, path: Path) -> Path:
    """Training loss and the validation selection metric per epoch, one line per run (seed, lr)."""
    fig, (loss_ax, metric_ax) = pyplot().subplots(1, 2, figsize=(11, 4))
    several_lrs = len({r.lr for r in runs}) > 1
    for record in sorted(runs, key=lambda r: (r.lr, r.seed)):
        label = f"seed {record.seed}" + (f", lr {record.lr:g}" if several_lrs else "")
        per_epoch = max(1, record.steps_per_epoch)
        loss = record.train_loss
        (line,) = loss_ax.plot([step / per_epoch for step, _ in loss], [value for _, value in loss], label=label)
        epochs = record.validation_by_epoch
        metric_ax.plot(
            [e["epoch"] for e in epochs], [e[metric] for e in epochs], "o-", color=line.get_color(), label=label
        )
        metric_ax.plot(
            [record.best_epoch],
            [record.metrics["validation"][metric]],
            "*",
            markersize=14,
            color=line.get_color(),
        )
    loss_ax.set(xlabel="epoch", ylabel="training loss", title=f"{runs[0].task}: training loss")
    metric_ax.set(xlabel="epoch", ylabel=f"validation {metric}", title="validation (star: the epoch kept)")
    loss_ax.legend(fontsize=8)
    metric_ax.legend(fontsize=8)
    return save_figure(fig, (loss_ax, metric_ax), path)


def read_runs(folder: Path) -> list[RunRecord]:
    """Every results.json below `folder`."""
    return [RunRecord.load(path) for path in TaskResults(folder).results_files()]


def aggregate_folder(folder: str | Path) -> TaskAggregate:
    """Aggregate every results.json under `folder` (one task, one model) and write aggregate.json/.md."""
    folder = Path(folder)
    runs = read_runs(folder)
    if not runs:
        raise DataError(f"{folder}: no results.json found below it")
    kinds = {(r.task, r.model, r.random_init, r.max_length) for r in runs}
    if len(kinds) > 1:
        raise DataError(
            f"{folder}: results of several tasks, models or maximum lengths {sorted(kinds, key=str)}; aggregate "
            "one at a time (a context-length sweep keeps each length in its own max_length-N folder)"
        )
    aggregate = aggregate_runs(runs, runs[0].selection_metric)
    write_aggregate(aggregate, TaskResults(folder), runs)
    return aggregate
