"""Continued masked-language-model pretraining of ModernBERT, phase by phase.

    accelerate launch train_mlm.py                                   # the offline demo recipe
    accelerate launch train_mlm.py recipes/bioclinical-modernbert-base.yaml --sources.clinical /data/NOTEEVENTS.csv
    accelerate launch train_mlm.py RECIPE --resume                   # continue a killed run

Any recipe key can be overridden with --dotted.key VALUE (values are read as YAML).
"""

from __future__ import annotations

import sys

from modeling.common.cli import run_command
from modeling.common.config import parse_overrides
from modeling.common.runtime import is_main_process
from modeling.pretrain.recipe import describe_recipe_fields, load_recipe


def parse_args(argv: list[str]):
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        print(
            "\nflags:\n  RECIPE                               YAML file or shipped recipe name (default: demo)\n"
            "  --resume                             continue from the last complete checkpoint\n"
            "\nrecipe keys:"
        )
        print("\n".join(describe_recipe_fields()))
        sys.exit(0)
    recipe = argv[0] if argv and not argv[0].startswith("-") else None
    rest = argv[1:] if recipe else argv
    resume = "--resume" in rest
    return recipe, resume, parse_overrides([a for a in rest if a != "--resume"])


def train(argv: list[str]) -> int:
    recipe_path, resume, overrides = parse_args(argv)
    recipe = load_recipe(recipe_path, overrides)
    # heavy imports only once the recipe is known to be good (and publishing only when the recipe pushes)
    from modeling.pretrain.runner import run

    summary = run(recipe, resume=resume, on_phase_end=_pusher(recipe))
    if is_main_process():
        print(f"\n{'phase':<12}{'tokens':>14}{'held-out loss':>22}{'wall (s)':>10}{'tokens/s':>10}")
        for phase in summary.phases:
            held = phase.held_out
            print(
                f"{phase.phase:<12}{phase.tokens:>14,}{held.loss_start:>11.3f} -> {held.loss_end:<7.3f}"
                f"{phase.wall_time_s:>10.0f}{phase.tokens_per_second:>10.0f}"
            )
        print(f"\nsummary: {recipe.output_dir}/training_summary.json   plot: {recipe.output_dir}/{summary.plot}")
        print("models:  " + "  ".join(phase.model_dir for phase in summary.phases))
    return 0


def _pusher(recipe):
    """With hub.repo_id, each phase is pushed when it ends (branch = phase; the last also to main)."""
    if not recipe.hub.repo_id:
        return None
    from modeling.publish.hub import push_phase

    return lambda folder, phase, last: push_phase(folder, phase, recipe.hub, last)


def main(argv: list[str] | None = None) -> int:
    return run_command(train, argv)


if __name__ == "__main__":
    sys.exit(main())
