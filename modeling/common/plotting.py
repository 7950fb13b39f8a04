"""Figures for people: matplotlib on the file-only backend, with one look for every plot."""

from __future__ import annotations

from pathlib import Path

from modeling.common.run_files import atomic_path


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
    # One rename: a reader (a Hub push staging the run) never sees a half-written image.
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    pyplot().close(fig)
    return path
