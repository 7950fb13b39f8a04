"""Fine-tune an encoder on a task and evaluate it (the BioClinical ModernBERT protocol by default).

    python finetune.py eval_configs/chemprot.yaml --model answerdotai/ModernBERT-base --data_dir /data/chemprot
    accelerate launch finetune.py eval_configs/deid.yaml --model out/demo/phase2 --seeds 42 43 44 45 46
    python finetune.py demo_mesh                          # offline, on the demo checkpoint
    python finetune.py aggregate results/chemprot         # mean/std/min/max over the seeds found there
    python finetune.py demo_mesh --max_length_grid '[64, 128, 256, 512]'   # the protocol at each context length

Any task-config key can be overridden with --dotted.key VALUE (values are read as YAML), e.g.
--training.lr 3e-5 --max_length 4096 --peft '{r: 16}'.
"""

from __future__ import annotations

import argparse
import sys

from modeling.common.cli import run_command
from modeling.common.config import parse_overrides
from modeling.common.errors import ConfigError
from modeling.common.runtime import is_main_process
from modeling.finetune.config import describe_task_fields, load_task_config


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


def finetune(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    if args.config == "aggregate":
        from modeling.finetune.results import aggregate_folder, markdown_summary

        if not args.folder:
            raise ConfigError("aggregate: name the results folder, e.g. `finetune.py aggregate results/chemprot`")
        print(markdown_summary(aggregate_folder(args.folder)))
        return 0
    task = load_task_config(args.config, overrides)
    # heavy imports only once the config is known to be good
    from modeling.finetune.results import markdown_summary
    from modeling.finetune.runner import run

    if task.max_length_grid:
        from modeling.finetune.sweep import run_sweep, sweep_table

        sweep = run_sweep(task, run)
        if is_main_process():
            print("\n" + sweep_table(sweep))
            print(f"results: {task.results_dir()}/ context_sweep.json, context_sweep.md, context_sweep.png")
        return 0
    aggregate = run(task)
    if is_main_process():
        print("\n" + markdown_summary(aggregate))
        print(f"results: {task.results_dir()}/ aggregate.json, aggregate.md, curves.png and one folder per run")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(finetune, argv, lambda argv: "run the same command again: finished runs are reused")


if __name__ == "__main__":
    sys.exit(main())
