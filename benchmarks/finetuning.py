"""Fine-tuning batches: padded random batches vs length-grouped vs packed, end to end on the demo tasks.

  random          the paper's protocol (Trainer defaults): random batches, padded to their longest window
  length_grouped  transformers' group_by_length sampler: batches of similar lengths, little padding
  packed          the project's default: the random batches of `random`, their windows sharing rows inside the
                  model (modeling.finetune.packing), attention confined to each window

Each (task, seed) runs the three sides one after the other through `finetune.py`'s own path
(modeling.finetune.runner.run), each with its learning rate and everything else from the task config.
Reported per side: training examples (windows) per second of training (the Trainer's time less validation),
the share of the positions the encoder computed in training that were padding (counted at the embeddings), and
the test score over seeds.
`--equality` also checks, on the first training batch of each task, that a packed batch gives the loss, the
gradients and the logits of its windows run one by one without padding.

    python -m benchmarks.finetuning                       # demo_mesh and demo_chemicals, seeds 42-44
    python -m benchmarks.finetuning --tasks demo_mesh --seeds 42 --equality
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import torch

from benchmarks.common import ROOT, arguments, machine, markdown_table, write_json
from modeling.common.config import apply_override
from modeling.finetune.config import BATCHINGS, TaskConfig, load_task_config, task_from_dict
from modeling.finetune.runner import run

SIDES = ("random", "length_grouped", "packed")


class PositionCounter:
    """Positions the encoder computes in training and how many of them are real tokens: counted where the
    token ids enter the embeddings, after packing has laid them out."""

    def __init__(self):
        self.positions = self.real = 0
        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(self._count)

    def _count(self, module, args):
        # The token embedding table is the encoder's only nn.Embedding, and it is called with the ids positionally
        # (global hooks see no keyword arguments).
        if isinstance(module, torch.nn.Embedding) and module.training and args:
            self.positions += args[0].numel()
            self.real += int((args[0] != module.padding_idx).sum())

    def padding(self) -> float:
        return 1 - self.real / self.positions if self.positions else float("nan")

    def close(self):
        self.handle.remove()


def with_changes(task: TaskConfig, **changes) -> TaskConfig:
    raw = dataclasses.asdict(task)
    for key, value in changes.items():
        apply_override(raw, key, value)
    return task_from_dict(raw)


def run_side(task: TaskConfig, side: str, seed: int, output_root: Path) -> dict:
    folder = output_root / task.name / side
    sided = with_changes(task, **{"training.batching": side, "seeds": [seed], "output_dir": str(folder)})
    counter = PositionCounter()
    try:
        run(sided)
    finally:
        counter.close()
    record = json.loads((folder / f"seed{seed}" / "results.json").read_text())
    examples = record["windows"]["train"] * sided.training.epochs
    # The Trainer's train_runtime includes the validation after each epoch; only training is compared here.
    training_s = record["train_runtime_s"] - sum(e.get("runtime") or 0 for e in record["validation_by_epoch"])
    return {
        "task": task.name,
        "side": side,
        "seed": seed,
        "batching": record["batching"],
        "score": record["metrics"]["test"][task.metric_for_selection],
        "training_s": training_s,
        "examples_per_second": examples / training_s,
        # None when the run was reused from an earlier one (nothing was trained this time)
        "padding": counter.padding() if counter.positions else None,
    }


def compare(tasks: list[TaskConfig], seeds: list[int], output_root: Path, sides=SIDES) -> list[dict]:
    runs = []
    for task in tasks:
        for seed in seeds:
            for side in sides:
                print(f"== {task.name}, seed {seed}, {side}", flush=True)
                runs.append(run_side(task, side, seed, output_root))
    return runs


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for task in dict.fromkeys(r["task"] for r in runs):
        mine = [r for r in runs if r["task"] == task]
        reference = statistics.median(r["examples_per_second"] for r in mine if r["side"] == "random")
        for side in dict.fromkeys(r["side"] for r in mine):
            sided = [r for r in mine if r["side"] == side]
            scores = [r["score"] for r in sided]
            speed = statistics.median(r["examples_per_second"] for r in sided)
            paddings = [r["padding"] for r in sided if r["padding"] is not None]
            rows.append(
                {
                    "task": task,
                    "side": side,
                    "seeds": len(sided),
                    "score_mean": statistics.fmean(scores),
                    "score_std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                    "examples_per_second": speed,
                    "speedup": speed / reference,
                    "padding": statistics.fmean(paddings) if paddings else None,
                }
            )
    return rows


def equality(task: TaskConfig, batch_size: int = 16) -> dict:
    """Largest differences between a packed batch and its windows run one by one without padding."""
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

    from modeling.finetune.dataset import load_task_examples
    from modeling.finetune.encoding import encode_split, load_task_tokenizer
    from modeling.finetune.model import build_task_model, max_length_for
    from modeling.finetune.packing import install_packing

    splits, _ = load_task_examples(task)
    tokenizer = load_task_tokenizer(task.model, task.task)
    split = encode_split("train", splits["train"], tokenizer, task, max_length_for(task, tokenizer))
    features = split.features[:batch_size]
    collator = (
        DataCollatorForTokenClassification(tokenizer) if task.task == "ner" else DataCollatorWithPadding(tokenizer)
    )
    model = build_task_model(task, seed=0).float()

    def labelled(feature) -> int:
        return sum(label != -100 for label in feature["labels"]) if task.task == "ner" else 1

    total = sum(labelled(f) for f in features)
    model.zero_grad()
    alone_loss, alone_logits = 0.0, []
    for feature in features:
        output = model(**collator([dict(feature)]))
        (output.loss * labelled(feature) / total).backward()
        alone_loss += float(output.loss) * labelled(feature) / total
        alone_logits.append(output.logits.detach()[0])
    alone_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    packing = install_packing(model)
    model.zero_grad()
    batch = collator([dict(f) for f in features])
    output = model(**batch)
    output.loss.backward()
    packing.remove()
    lengths = batch["attention_mask"].sum(1).tolist()
    logits_diff = max(
        float((output.logits[i, : lengths[i]] if task.task == "ner" else output.logits[i]).sub(alone).abs().max())
        for i, alone in enumerate(alone_logits)
    )
    grads_diff = max(
        float((p.grad - alone_grads[n]).abs().max()) for n, p in model.named_parameters() if p.grad is not None
    )
    grad_scale = max(float(g.abs().max()) for g in alone_grads.values())
    return {
        "task": task.name,
        "windows": len(features),
        "loss": alone_loss,
        "loss_diff": abs(float(output.loss) - alone_loss),
        "max_grad_diff": grads_diff,
        "max_grad": grad_scale,
        "max_logit_diff": logits_diff,
        "attn_implementation": model.config._attn_implementation,
    }


def main(argv=None):
    parser = arguments(__doc__)
    parser.add_argument("--tasks", nargs="+", default=["demo_mesh", "demo_chemicals"], help="task configs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=BATCHINGS)
    parser.add_argument("--model", help="override the task configs' model")
    parser.add_argument("--output_dir", default=str(ROOT / "results" / "benchmark_finetuning"))
    parser.add_argument("--equality", action="store_true", help="also check packed against one by one")
    parser.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), help="override")
    args = parser.parse_args(argv)
    overrides = [("model", args.model)] if args.model else []
    overrides += [(key, value) for key, value in args.set]
    tasks = [load_task_config(name, overrides) for name in args.tasks]
    print(f"machine: {machine()}")
    figures = {}
    if args.equality:
        figures["equality"] = [equality(task) for task in tasks]
        print(
            markdown_table(
                [
                    "task",
                    "windows",
                    "attention",
                    "loss",
                    "|loss diff|",
                    "max |grad diff|",
                    "max |grad|",
                    "max |logit diff|",
                ],
                [
                    [
                        e["task"],
                        e["windows"],
                        e["attn_implementation"],
                        f"{e['loss']:.4f}",
                        f"{e['loss_diff']:.1e}",
                        f"{e['max_grad_diff']:.1e}",
                        f"{e['max_grad']:.1e}",
                        f"{e['max_logit_diff']:.1e}",
                    ]
                    for e in figures["equality"]
                ],
            )
        )
    runs = compare(tasks, args.seeds, Path(args.output_dir), args.sides)
    figures["runs"], figures["summary"] = runs, summarise(runs)
    print(
        markdown_table(
            ["task", "batching", "seeds", "test score (mean +- std)", "examples/s (median)", "vs random", "padding"],
            [
                [
                    s["task"],
                    s["side"],
                    s["seeds"],
                    f"{s['score_mean']:.3f} +- {s['score_std']:.3f}",
                    f"{s['examples_per_second']:.1f}",
                    f"{s['speedup']:.2f}x",
                    "-" if s["padding"] is None else f"{s['padding']:.1%}",
                ]
                for s in figures["summary"]
            ],
        )
    )
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
