"""What a run leaves for people: training_summary.json and a plot of loss, learning rate and
masking rate across the phases (x axis: tokens seen, so phases of different batch sizes line up)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_summary(output: Path, recipe, phases: list[dict]) -> dict:
    tokens_per_source: dict[str, int] = {}
    skipped: dict[str, dict[str, int]] = {}
    for phase in phases:
        for name, n in phase["tokens_per_source"].items():
            tokens_per_source[name] = tokens_per_source.get(name, 0) + n
        for name, source in phase["sources"].items():
            skipped[name] = source["skipped_per_pass"]  # the same files skip the same documents in every phase
    wall = sum(p["wall_time_s"] for p in phases)
    tokens = sum(p["tokens"] for p in phases)
    summary = {
        "name": recipe.name,
        "recipe": str(output / "recipe.json"),
        "max_seq_length": recipe.max_seq_length,
        "phases": [{k: v for k, v in p.items() if k != "log_history"} for p in phases],
        "total": {
            "steps": sum(p["steps"] for p in phases),
            "tokens": tokens,
            "tokens_per_source": tokens_per_source,
            "wall_time_s": wall,
            "tokens_per_second": tokens / wall if wall else None,
            "documents_skipped_per_pass": skipped,
        },
        "plot": "training_curves.png",
    }
    tmp = output / "training_summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, output / "training_summary.json")
    return summary


def pyplot():
    """matplotlib's pyplot on the file-only backend (training machines have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, axes, path: Path) -> Path:
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def plot_training(output: Path, phases: list[dict]) -> Path:
    fig, (loss_ax, lr_ax, mask_ax) = pyplot().subplots(3, 1, figsize=(9, 8), sharex=True)
    offset = 0.0
    for phase in phases:
        train = [e for e in phase["log_history"] if "loss" in e and "tokens_seen" in e]
        x = [(offset + e["tokens_seen"]) / 1e6 for e in train]
        (line,) = loss_ax.plot(x, [e["loss"] for e in train], label=f"{phase['phase']} train")
        end = offset + phase["tokens"]
        held = phase["held_out"]
        loss_ax.plot(
            [offset / 1e6, end / 1e6],
            [held["loss_start"], held["loss_end"]],
            "o--",
            color=line.get_color(),
            label=f"{phase['phase']} held-out ({held['loss_start']:.2f} -> {held['loss_end']:.2f})",
        )
        lr_ax.plot(x, [e["learning_rate"] for e in train], color=line.get_color())
        mask_ax.plot(x, [e["masking_rate"] for e in train], color=line.get_color())
        for ax in (loss_ax, lr_ax, mask_ax):
            ax.axvline(end / 1e6, color="grey", linestyle=":", linewidth=1)
        offset = end
    loss_ax.set_ylabel("MLM loss")
    loss_ax.legend(fontsize=8)
    lr_ax.set_ylabel("learning rate")
    mask_ax.set_ylabel("masking rate")
    mask_ax.set_xlabel("tokens seen (millions); dotted lines end each phase")
    return save_figure(fig, (loss_ax, lr_ax, mask_ax), output / "training_curves.png")
