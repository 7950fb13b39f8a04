"""Continued masked-language-model pretraining of ModernBERT, phase by phase.

    accelerate launch train_mlm.py                                   # the offline demo recipe
    accelerate launch train_mlm.py recipes/bioclinical-modernbert-base.yaml --sources.clinical /data/NOTEEVENTS.csv
    accelerate launch train_mlm.py RECIPE --resume                   # continue a killed run

Any recipe key can be overridden with --dotted.key VALUE (values are read as YAML).
"""

from __future__ import annotations

import logging
import os
import sys

from modeling.config import ConfigError, describe_fields, load_recipe, parse_overrides
from modeling.sources import DataError


def parse_args(argv: list[str]):
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        print(
            "\nflags:\n  RECIPE                               YAML file or shipped recipe name (default: demo)\n"
            "  --resume                             continue from the last complete checkpoint\n"
            "\nrecipe keys:"
        )
        print("\n".join(describe_fields()))
        sys.exit(0)
    recipe = argv[0] if argv and not argv[0].startswith("-") else None
    rest = argv[1:] if recipe else argv
    resume = "--resume" in rest
    return recipe, resume, parse_overrides([a for a in rest if a != "--resume"])


def main(argv: list[str] | None = None) -> int:
    main_process = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        recipe_path, resume, overrides = parse_args(sys.argv[1:] if argv is None else argv)
        recipe = load_recipe(recipe_path, overrides)
        from modeling.training import run  # heavy imports only once the recipe is known to be good

        summary = run(recipe, resume=resume)
    except (ConfigError, DataError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2
    if main_process:
        print(f"\n{'phase':<12}{'tokens':>14}{'held-out loss':>22}{'wall (s)':>10}{'tokens/s':>10}")
        for phase in summary["phases"]:
            held = phase["held_out"]
            print(
                f"{phase['phase']:<12}{phase['tokens']:>14,}{held['loss_start']:>11.3f} -> {held['loss_end']:<7.3f}"
                f"{phase['wall_time_s']:>10.0f}{phase['tokens_per_second']:>10.0f}"
            )
        print(f"\nsummary: {recipe.output_dir}/training_summary.json   plot: {recipe.output_dir}/{summary['plot']}")
        print("models:  " + "  ".join(phase["model_dir"] for phase in summary["phases"]))
    return 0


def _one_line(error: Exception) -> str:
    """Errors raised in dataloader workers arrive wrapped in the worker's traceback: keep the message."""
    text = str(error).strip()
    return text.splitlines()[-1].split(": ", 1)[-1] if "Traceback" in text else text


if __name__ == "__main__":
    sys.exit(main())
