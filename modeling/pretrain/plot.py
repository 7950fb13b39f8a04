"""training_curves.png: loss, learning rate and masking rate across the phases. The loss panel draws the
training loss and each source's own held-out loss through the whole run (the same documents, masked alike, in
every phase, so a phase that makes the model forget a source shows as its line rising), with the unigram
entropy of each source's held-out text: what a model that knew only token frequencies would score. Runs
recorded before sources were measured draw the phase's held-out loss, start and end.
The x axis is tokens seen, so phases of different batch sizes line up."""

from __future__ import annotations

from pathlib import Path

from modeling.common.plotting import pyplot, save_figure
from modeling.pretrain.summary import PhaseSummary


def plot_training(path: Path, phases: list[PhaseSummary]) -> Path:
    fig, (loss_ax, lr_ax, mask_ax) = pyplot().subplots(3, 1, figsize=(9, 8), sharex=True)
    offset = 0.0
    per_source = all(p.held_out_sources for p in phases)
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for phase in phases:
        train = [e for e in phase.log_history if "loss" in e and "tokens_seen" in e]
        x = [(offset + e["tokens_seen"]) / 1e6 for e in train]
        (line,) = loss_ax.plot(x, [e["loss"] for e in train], label=f"{phase.phase} train", linewidth=1)
        end = offset + phase.tokens
        if per_source:
            for name, record in phase.held_out_sources.items():
                xs, ys = curves.setdefault(name, ([], []))
                points = phase.source_curve(name) or [(0.0, record.loss_start), (phase.tokens, record.loss_end)]
                for tokens, loss in points:
                    if loss is not None:
                        xs.append((offset + tokens) / 1e6)
                        ys.append(loss)
        else:
            _phase_held_out(loss_ax, phase, offset, end, line.get_color())
        lr_ax.plot(x, [e["learning_rate"] for e in train], color=line.get_color())
        mask_ax.plot(x, [e["masking_rate"] for e in train], color=line.get_color())
        for ax in (loss_ax, lr_ax, mask_ax):
            ax.axvline(end / 1e6, color="grey", linestyle=":", linewidth=1)
        offset = end
    for i, (name, (xs, ys)) in enumerate(curves.items()):
        color = f"C{(len(phases) + i) % 10}"
        entropy = phases[0].held_out_sources[name].unigram_entropy
        loss_ax.plot(xs, ys, "o-", color=color, markersize=3, label=f"held-out {name} ({ys[0]:.2f} -> {ys[-1]:.2f})")
        loss_ax.axhline(entropy, color=color, linestyle=":", label=f"{name} unigram entropy ({entropy:.2f})")
    loss_ax.set_ylabel("MLM loss")
    loss_ax.legend(fontsize=8)
    lr_ax.set_ylabel("learning rate")
    mask_ax.set_ylabel("masking rate")
    mask_ax.set_xlabel("tokens seen (millions); dotted lines end each phase")
    return save_figure(fig, (loss_ax, lr_ax, mask_ax), path)


def _phase_held_out(loss_ax, phase: PhaseSummary, offset: float, end: float, color: str):
    held = phase.held_out
    loss_ax.plot(
        [offset / 1e6, end / 1e6],
        [held.loss_start, held.loss_end],
        "o--",
        color=color,
        label=f"{phase.phase} held-out ({held.loss_start:.2f} -> {held.loss_end:.2f})",
    )
    if held.unigram_entropy is not None:  # a frequency-only model's loss on the same held-out text
        loss_ax.hlines(
            held.unigram_entropy,
            offset / 1e6,
            end / 1e6,
            colors=color,
            linestyles=":",
            label=f"{phase.phase} held-out unigram entropy ({held.unigram_entropy:.2f})",
        )
