"""Fine-tune an encoder on a task and evaluate it (the BioClinical ModernBERT protocol by default).

    python finetune.py eval_configs/chemprot.yaml --model answerdotai/ModernBERT-base --data_dir /data/chemprot
    accelerate launch finetune.py eval_configs/deid.yaml --model out/demo/phase2 --seeds 42 43 44 45 46
    python finetune.py demo_mesh                          # offline, on the demo checkpoint
    python finetune.py aggregate results/chemprot         # mean/std/min/max over the seeds found there

Any task-config key can be overridden with --dotted.key VALUE (values are read as YAML), e.g.
--training.lr 3e-5 --max_length 4096 --peft '{r: 16}'.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from modeling.config import ConfigError, parse_overrides
from modeling.sources import DataError
from modeling.tasks import describe_task_fields, load_task_config


def parse_args(argv: list[str]):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="task-config keys:\n" + "\n".join(describe_task_fields()),
    )
    parser.add_argument(
        "config", help="eval_configs/NAME.yaml, a shipped name (chemprot, demo_mesh, ...), or `aggregate`"
    )
    parser.add_argument("folder", nargs="?", help="with `aggregate`: the results folder")
    parser.add_argument("--model", help="Hub id or folder of the encoder (overrides `model`)")
    parser.add_argument("--data_dir", help="folder (or file / dataset id) of the task data (overrides `data.path`)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: the config's, 42-46)")
    parser.add_argument("--output_dir", help="where results go (default: results/NAME)")
    parser.add_argument("--random_init", action="store_true", help="same architecture as --model, random weights")
    args, rest = parser.parse_known_args(argv)
    overrides = parse_overrides(rest)
    for key in ("model", "seeds", "output_dir"):
        if getattr(args, key) is not None:
            overrides.append((key, getattr(args, key)))
    if args.data_dir is not None:
        overrides.append(("data.path", args.data_dir))
    if args.random_init:
        overrides.append(("random_init", True))
    return args, overrides


def main(argv: list[str] | None = None) -> int:
    main_process = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
        if args.config == "aggregate":
            from modeling.results import aggregate_folder, markdown_table

            if not args.folder:
                raise ConfigError("aggregate: name the results folder, e.g. `finetune.py aggregate results/chemprot`")
            print(markdown_table(aggregate_folder(args.folder)))
            return 0
        task = load_task_config(args.config, overrides)
        from modeling.finetuning import run  # heavy imports only once the config is known to be good

        summary = run(task)
    except (ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if main_process:
        from modeling.results import markdown_table

        print("\n" + markdown_table(summary))
        print(f"results: {task.results_dir()}/ aggregate.json, aggregate.md, curves.png and one folder per run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
