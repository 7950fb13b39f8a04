"""Where fine-tuning (`finetune.py`) keeps its results, under `results/TASK/`:

aggregate.json, aggregate.md    mean, std, min, max over seeds of every metric
curves.png                      training loss and validation score per epoch of every run
seedN/ (lrX-seedN/ with a grid) one run: results.json, predictions_test.jsonl, model/ or adapter/

A context-length sweep (`max_length_grid`) keeps one such folder per length, max_length-N/, and beside them
context_sweep.json, context_sweep.md and context_sweep.png.
"""

from __future__ import annotations

from pathlib import Path

from modeling.common.run_files import File, Folder


class TaskResults(Folder):
    """The results folder of one task and model (see the module docstring)."""

    aggregate_json = File("aggregate.json")
    aggregate_md = File("aggregate.md")
    plot_png = File("curves.png")

    def run(self, seed: int, lr: float | None = None) -> TaskRun:
        """One run's folder: seedN, or lrX-seedN when a learning-rate grid is searched."""
        return TaskRun(self.folder / (f"lr{lr:g}-seed{seed}" if lr is not None else f"seed{seed}"))

    def results_files(self) -> list[Path]:
        return sorted(self.folder.rglob("results.json"))


class TaskRun(Folder):
    results_json = File("results.json")
    predictions_jsonl = File("predictions_test.jsonl")
    model_dir = File("model")
    adapter_dir = File("adapter")
    checkpoints_dir = File("checkpoints")


class SweepResults(Folder):
    """The folder of a context-length sweep (see the module docstring)."""

    sweep_json = File("context_sweep.json")
    sweep_md = File("context_sweep.md")
    plot_png = File("context_sweep.png")

    def length(self, max_length: int) -> Path:
        return self.folder / f"max_length-{max_length}"
