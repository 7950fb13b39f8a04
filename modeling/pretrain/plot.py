"""training_curves.png: loss (training and held-out, with the held-out text's unigram entropy: what a model
that knew only token frequencies would score), learning rate and masking rate across the phases.
The x axis is tokens seen, so phases of different batch sizes line up."""

from __future__ import annotations

from pathlib import Path

from modeling.common.plotting import pyplot, save_figure
from modeling.pretrain.summary import PhaseSummary


def plot_training(path: Path, phases: list[PhaseSummary]) -> Path:
    fig, (loss_ax, lr_ax, mask_ax) = pyplot().subplots(3, 1, figsize=(9, 8), sharex=True)
    offset = 0.0
    for phase in phases:
        train = [e for e in phase.log_history if "loss" in e and "tokens_seen" in e]
        x = [(offset + e["tokens_seen"]) / 1e6 for e in train]
        (line,) = loss_ax.plot(x, [e["loss"] for e in train], label=f"{phase.phase} train")
        end = offset + phase.tokens
        held = phase.held_out
        loss_ax.plot(
            [offset / 1e6, end / 1e6],
            [held.loss_start, held.loss_end],
            "o--",
            color=line.get_color(),
            label=f"{phase.phase} held-out ({held.loss_start:.2f} -> {held.loss_end:.2f})",
        )
        if held.unigram_entropy is not None:  # a frequency-only model's loss on the same held-out text
            loss_ax.hlines(
                held.unigram_entropy,
                offset / 1e6,
                end / 1e6,
                colors=line.get_color(),
                linestyles=":",
                label=f"{phase.phase} held-out unigram entropy ({held.unigram_entropy:.2f})",
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
    return save_figure(fig, (loss_ax, lr_ax, mask_ax), path)
