"""Results over seeds: mean, std, min and max of every metric, per learning rate, as JSON and Markdown.

The learning rate (when a grid was run) is chosen by the mean validation score of the selection metric;
test scores are reported for that learning rate only.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from modeling.sources import DataError


def _stats(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def aggregate_runs(runs: list[dict], selection_metric: str) -> dict:
    """Runs are results.json records (one per seed and learning rate) of one task and model."""
    by_lr: dict[float, list[dict]] = {}
    for record in runs:
        by_lr.setdefault(record["lr"], []).append(record)
    per_lr = {}
    for lr, records in sorted(by_lr.items()):
        per_lr[lr] = {
            split: {
                name: _stats([r["metrics"][split][name] for r in records])
                for name, value in records[0]["metrics"][split].items()
                if isinstance(value, float)
            }
            for split in ("validation", "test")
        }
        per_lr[lr]["seeds"] = [r["seed"] for r in records]
        per_lr[lr]["best_epochs"] = [r["best_epoch"] for r in records]
    best_lr = max(per_lr, key=lambda lr: per_lr[lr]["validation"][selection_metric]["mean"])
    first = runs[0]
    return {
        "task": first["task"],
        "task_type": first["task_type"],
        "model": first["model"],
        "random_init": first["random_init"],
        "peft": first.get("peft"),
        "selection_metric": selection_metric,
        "lr": best_lr,
        "seeds": per_lr[best_lr]["seeds"],
        "best_epochs": per_lr[best_lr]["best_epochs"],
        "validation": per_lr[best_lr]["validation"],
        "test": per_lr[best_lr]["test"],
        "by_lr": {f"{lr:g}": stats for lr, stats in per_lr.items()} if len(per_lr) > 1 else None,
        "metric_descriptions": first.get("metric_descriptions", {}),
        "wall_time_s": round(sum(r.get("wall_time_s", 0.0) for r in runs), 1),
    }


def markdown_table(summary: dict) -> str:
    lines = [
        f"### {summary['task']} ({summary['task_type']}), model `{summary['model']}`"
        f"{' (random init)' if summary['random_init'] else ''}{' + LoRA' if summary.get('peft') else ''}",
        "",
        f"lr {summary['lr']:g}, seeds {summary['seeds']}, best epochs {summary['best_epochs']}; "
        f"model selected on validation `{summary['selection_metric']}`; mean +- std (sample) over seeds.",
        "",
        "| metric | validation | test | test min | test max |",
        "|---|---|---|---|---|",
    ]
    for name, test in summary["test"].items():
        val = summary["validation"].get(name)
        val_text = f"{val['mean']:.4f} +- {val['std']:.4f}" if val else ""
        lines.append(
            f"| {name} | {val_text} | {test['mean']:.4f} +- {test['std']:.4f} | {test['min']:.4f} | {test['max']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def write_aggregate(summary: dict, folder: Path, runs: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    summary["plot"] = plot_runs(runs, summary["selection_metric"], folder).name
    (folder / "aggregate.json").write_text(json.dumps(summary, indent=2) + "\n")
    (folder / "aggregate.md").write_text(markdown_table(summary))


def plot_runs(runs: list[dict], metric: str, folder: Path) -> Path:
    """Training loss and the validation selection metric per epoch, one line per run (seed, lr)."""
    from modeling.report import pyplot, save_figure

    fig, (loss_ax, metric_ax) = pyplot().subplots(1, 2, figsize=(11, 4))
    for record in sorted(runs, key=lambda r: (r["lr"], r["seed"])):
        label = f"seed {record['seed']}" + (f", lr {record['lr']:g}" if len({r["lr"] for r in runs}) > 1 else "")
        per_epoch = max(1, record.get("steps_per_epoch", 1))
        loss = record.get("train_loss", [])
        (line,) = loss_ax.plot([step / per_epoch for step, _ in loss], [value for _, value in loss], label=label)
        epochs = record["validation_by_epoch"]
        metric_ax.plot(
            [e["epoch"] for e in epochs], [e[metric] for e in epochs], "o-", color=line.get_color(), label=label
        )
        metric_ax.plot(
            [record["best_epoch"]],
            [record["metrics"]["validation"][metric]],
            "*",
            markersize=14,
            color=line.get_color(),
        )
    loss_ax.set(xlabel="epoch", ylabel="training loss", title=f"{runs[0]['task']}: training loss")
    metric_ax.set(xlabel="epoch", ylabel=f"validation {metric}", title="validation (star: the epoch kept)")
    loss_ax.legend(fontsize=8)
    metric_ax.legend(fontsize=8)
    return save_figure(fig, (loss_ax, metric_ax), folder / "curves.png")


def aggregate_folder(folder: str | Path) -> dict:
    """Aggregate every results.json under `folder` (one task, one model) and write aggregate.json/.md."""
    folder = Path(folder)
    files = sorted(folder.rglob("results.json"))
    if not files:
        raise DataError(f"{folder}: no results.json found below it")
    runs = [json.loads(f.read_text()) for f in files]
    kinds = {(r["task"], r["model"], r["random_init"]) for r in runs}
    if len(kinds) > 1:
        raise DataError(f"{folder}: results of several tasks or models {sorted(kinds)}; aggregate one at a time")
    summary = aggregate_runs(runs, runs[0]["selection_metric"])
    write_aggregate(summary, folder, runs)
    return summary
