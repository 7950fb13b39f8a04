"""Fine-tune and evaluate an encoder on a task: one Trainer run per (learning rate, seed).

The paper's protocol: validation after every epoch, the best epoch by the task's selection metric is
kept (Trainer's load_best_model_at_end), and the test split is evaluated once, with that model. Each run
writes results.json, the test predictions and (optionally) the model; the seeds are then aggregated.
Model heads are transformers' Auto classes, so any encoder with a classification head works.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from seqeval.metrics.sequence_labeling import get_entities
from torch.utils.data import SequentialSampler
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

from modeling.config import ConfigError
from modeling.encoding import EncodedSplit, document_logits, encode_split, load_task_tokenizer, word_logits
from modeling.metrics import DESCRIPTIONS, task_scores
from modeling.model import load_pretrained
from modeling.results import aggregate_runs, write_aggregate
from modeling.task_data import label_counts, load_task_examples
from modeling.tasks import TaskConfig
from modeling.training import use_every_core

log = logging.getLogger(__name__)

MODERNBERT_LORA_TARGETS = ["Wqkv", "Wo", "Wi"]


class TaskTrainer(Trainer):
    """Trainer whose evaluation scores documents, not windows: `evaluate` takes an EncodedSplit, predicts
    its windows (Trainer.predict: batching, devices, gathering across processes) and maps them back."""

    def __init__(self, *args, task: TaskConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.task = task

    def _get_eval_sampler(self, eval_dataset):
        # transformers applies train_sampling_strategy="group_by_length" to evaluation too, which shuffles the
        # predictions; windows are mapped back to documents by position (and are already sorted by length).
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        split = eval_dataset if eval_dataset is not None else self.eval_dataset
        output = self.predict(split.features, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        scores, _ = score_split(self.task, split, output.predictions)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in scores.items() if isinstance(v, float)}
        metrics[f"{metric_key_prefix}_loss"] = output.metrics.get(f"{metric_key_prefix}_loss")
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def score_split(task: TaskConfig, split: EncodedSplit, logits: np.ndarray) -> tuple[dict, list[dict]]:
    """Scores of a split from its window logits, and one prediction record per example."""
    labels = task.tag_names
    if task.task == "ner":
        per_word = word_logits(split, logits)
        predicted = [[labels[i] for i in rows.argmax(-1)] for rows in per_word]
        gold = [e.tags for e in split.examples]
        records = [
            {"id": e.id, "entities": _entities(e, tags), "gold_entities": _entities(e, e.tags)}
            for e, tags in zip(split.examples, predicted)
        ]
        return task_scores("ner", predicted, gold, labels), records
    per_doc = document_logits(split, logits, task.window_aggregation)
    if task.task == "single_label":
        probabilities = torch.softmax(torch.from_numpy(per_doc).float(), -1).numpy()
        predicted = per_doc.argmax(-1)
        gold = [labels.index(e.labels[0]) for e in split.examples]
        scores = task_scores("single_label", predicted.tolist(), gold, labels, task.negative_labels)
        records = [
            {"id": e.id, "label": labels[p], "gold": e.labels[0], "probabilities": dict(zip(labels, map(_round, row)))}
            for e, p, row in zip(split.examples, predicted, probabilities)
        ]
        return scores, records
    probabilities = torch.sigmoid(torch.from_numpy(per_doc).float()).numpy()
    gold = [[int(name in e.labels) for name in labels] for e in split.examples]
    scores = task_scores("multi_label", per_doc.tolist(), gold, labels)
    records = [
        {
            "id": e.id,
            "labels": [n for n, logit in zip(labels, row) if logit > 0],
            "gold": e.labels,
            "probabilities": dict(zip(labels, map(_round, probs))),
        }
        for e, row, probs in zip(split.examples, per_doc, probabilities)
    ]
    return scores, records


def _entities(example, tags: list[str]) -> list[dict]:
    """BIO tags of words -> entities with character offsets into the example's text."""
    spans = []
    for kind, first, last in get_entities(list(tags)):
        start, end = example.words[first][0], example.words[last][1]
        spans.append({"type": kind, "start": start, "end": end, "text": example.text[start:end]})
    return spans


def _round(x) -> float:
    return round(float(x), 6)


# ------------------------------------------------------------------------------------ models


def build_task_model(task: TaskConfig, seed: int):
    """A task head on the encoder (weights from `task.model`, or random with its config)."""
    labels = task.tag_names
    auto = AutoModelForTokenClassification if task.task == "ner" else AutoModelForSequenceClassification
    options = dict(
        num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}
    )
    if task.task == "multi_label":
        options["problem_type"] = "multi_label_classification"
    if task.classifier_pooling:
        options["classifier_pooling"] = task.classifier_pooling
    set_seed(seed)  # the new head's initialisation depends on the seed
    try:
        if task.random_init:
            config = AutoConfig.from_pretrained(task.model, **options)
            model = auto.from_config(config, attn_implementation=task.attn_implementation)
        else:
            model = load_pretrained(
                auto,
                task.model,
                task.allow_pickle,
                "--allow_pickle true",
                attn_implementation=task.attn_implementation,
                **options,
            )
    except OSError as e:
        raise ConfigError(f"model: cannot load '{task.model}' ({str(e).splitlines()[0]})") from None
    if task.peft is None:
        return model
    return _with_lora(model, task)


def _with_lora(model, task: TaskConfig):
    from peft import LoraConfig, TaskType, get_peft_model

    spec, modernbert = task.peft, model.config.model_type == "modernbert"
    targets = spec.target_modules or (MODERNBERT_LORA_TARGETS if modernbert else None)
    # ModernBERT's task models put a `head` (dense + norm) before the classifier: train it with the classifier.
    to_save = spec.modules_to_save or (["classifier", "head"] if modernbert else ["classifier"])
    lora = LoraConfig(
        task_type=TaskType.TOKEN_CLS if task.task == "ner" else TaskType.SEQ_CLS,
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=targets,
        modules_to_save=to_save,
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as e:
        raise ConfigError(
            f"peft.target_modules: {str(e).splitlines()[0]} (name the modules to adapt for "
            f"model type '{model.config.model_type}')"
        ) from None


def _check_model_exists(model: str) -> None:
    """A missing local folder gets a clear message instead of a failed Hub lookup."""
    looks_local = model.startswith((".", "/", "~")) or model.count("/") != 1
    if looks_local and not Path(model).expanduser().exists():
        hint = (
            " (the demo configs use the demo checkpoint: run `python train_mlm.py` first)"
            if "out/demo" in model
            else ""
        )
        raise ConfigError(f"model: folder '{model}' not found{hint}; pass --model a folder or Hub id")


def max_length_for(task: TaskConfig, tokenizer) -> int:
    """The config's max_length, else the model's (8192 for ModernBERT)."""
    positions = AutoConfig.from_pretrained(task.model).max_position_embeddings
    limit = min(positions, tokenizer.model_max_length) if tokenizer.model_max_length < 10**9 else positions
    if task.max_length and task.max_length > positions:
        raise ConfigError(f"max_length={task.max_length}: above the model's {positions} positions")
    length = task.max_length or limit
    if task.window_stride >= length // 2:
        raise ConfigError(f"window_stride={task.window_stride}: must be below half of the max length ({length})")
    return length


# ------------------------------------------------------------------------------------ runs


def run(task: TaskConfig) -> dict:
    """All runs of a task (seeds x learning rates); returns the aggregate over seeds."""
    out = task.results_dir()
    use_every_core(
        PartialState(cpu=not torch.cuda.is_available())
    )  # joins the other processes, if launched with several
    _check_model_exists(task.model)
    splits, skips = load_task_examples(task)
    tokenizer = load_task_tokenizer(task.model, task.task)
    max_length = max_length_for(task, tokenizer)
    encoded = {
        name: encode_split(name, examples, tokenizer, task, max_length, sort_by_length=name != "train")
        for name, examples in splits.items()
    }
    for split in encoded.values():
        log.info(
            "%s: %d examples -> %d windows of <= %d tokens (%.2f per example)",
            split.name,
            len(split.examples),
            len(split.features),
            max_length,
            split.windows_per_example(),
        )
    data_summary = {
        "examples": {n: len(s.examples) for n, s in encoded.items()},
        "windows": {n: len(s.features) for n, s in encoded.items()},
        "label_counts": {n: label_counts(s.examples, task.task) for n, s in encoded.items()},
        "skipped_or_repaired": skips.as_dict().get(task.name, {}),
        "max_length": max_length,
    }
    runs = []
    for lr in task.training.lr_grid or [task.training.lr]:
        for seed in task.seeds:
            folder = out / (f"lr{lr:g}-seed{seed}" if task.training.lr_grid else f"seed{seed}")
            runs.append(
                _finished_run(task, folder) or run_one(task, encoded, tokenizer, seed, lr, folder, data_summary)
            )
    summary = aggregate_runs(runs, task.metric_for_selection)
    if PartialState().is_main_process:
        write_aggregate(summary, out, runs)
    return summary


def _comparable(config: dict) -> dict:
    """A run's settings, less those that do not change the run itself."""
    return {k: v for k, v in json.loads(json.dumps(config)).items() if k not in ("seeds", "output_dir")}


def _finished_run(task: TaskConfig, folder: Path) -> dict | None:
    """A run whose results.json exists is not repeated (an interrupted seed sweep goes on where it stopped),
    unless it was made with other settings: then stop rather than mix results."""
    path = folder / "results.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if _comparable(record["config"]) != _comparable(dataclasses.asdict(task)):
        raise ConfigError(f"{path} holds a run with other settings; choose another --output_dir or delete that folder")
    log.info("%s: finished earlier, reusing %s (delete it to run again)", folder.name, path)
    return record


def run_one(
    task: TaskConfig,
    encoded: dict[str, EncodedSplit],
    tokenizer,
    seed: int,
    lr: float,
    folder: Path,
    data_summary: dict,
) -> dict:
    started = time.time()
    model = build_task_model(task, seed)
    collator = (
        DataCollatorForTokenClassification(tokenizer) if task.task == "ner" else DataCollatorWithPadding(tokenizer)
    )
    trainer = TaskTrainer(
        model=model,
        args=_training_arguments(task, seed, lr, folder),
        train_dataset=encoded["train"].features,
        eval_dataset=encoded["validation"],
        data_collator=collator,
        task=task,
    )
    trainer.train()
    epochs = _validation_by_epoch(trainer, task.metric_for_selection)
    best = max(epochs, key=lambda e: e[task.metric_for_selection])  # what load_best_model_at_end restored
    results = {"validation": _scores(trainer, encoded["validation"])[0]}
    results["test"], test_records = _scores(trainer, encoded["test"])  # the test split, once, with the best epoch
    record = {
        "task": task.name,
        "task_type": task.task,
        "model": task.model,
        "random_init": task.random_init,
        "peft": dataclasses.asdict(task.peft) if task.peft else None,
        "seed": seed,
        "lr": lr,
        "selection_metric": task.metric_for_selection,
        "best_epoch": best["epoch"],
        "validation_by_epoch": epochs,
        "metrics": results,
        "metric_descriptions": {k: v for k, v in DESCRIPTIONS.items() if k in results["test"]},
        "train_loss": [[h["step"], h["loss"]] for h in trainer.state.log_history if "loss" in h],
        "steps_per_epoch": math.ceil(trainer.state.max_steps / max(trainer.args.num_train_epochs, 1e-9)),
        **data_summary,
        "train_runtime_s": round(trainer.state.log_history[-1].get("train_runtime", math.nan), 1),
        "config": dataclasses.asdict(task),
    }
    if trainer.is_world_process_zero():
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "predictions_test.jsonl", "w", encoding="utf-8") as handle:
            for row in test_records:
                handle.write(json.dumps(row) + "\n")
        if task.save_model:
            record["saved"] = save_task_model(trainer.model, tokenizer, folder, task)
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # the best epoch is saved above
        record["wall_time_s"] = round(time.time() - started, 1)
        (folder / "results.json").write_text(json.dumps(record, indent=2) + "\n")
        log.info(
            "%s seed %d lr %g: best epoch %s, test %s = %.4f (%.0f s)",
            task.name,
            seed,
            lr,
            best["epoch"],
            task.metric_for_selection,
            results["test"][task.metric_for_selection],
            record["wall_time_s"],
        )
    record["folder"] = str(folder)
    return record


def _scores(trainer: TaskTrainer, split: EncodedSplit) -> tuple[dict, list[dict]]:
    output = trainer.predict(split.features, metric_key_prefix=split.name)
    return score_split(trainer.task, split, output.predictions)


def _validation_by_epoch(trainer: Trainer, metric: str) -> list[dict]:
    rows = [h for h in trainer.state.log_history if f"eval_{metric}" in h]
    return [
        {"epoch": round(h["epoch"], 2), "step": h["step"], **{k[5:]: v for k, v in h.items() if k.startswith("eval_")}}
        for h in rows
    ]


def save_task_model(model, tokenizer, folder: Path, task: TaskConfig) -> dict:
    """Full fine-tuning: the model. LoRA: the adapter on its own (loads onto the base model with peft),
    and with peft.merge a stock transformers model with the adapter merged in."""
    saved = {}
    if task.peft is None:
        model.save_pretrained(folder / "model")
        tokenizer.save_pretrained(folder / "model")
        return {"model": str(folder / "model")}
    model.save_pretrained(folder / "adapter")
    tokenizer.save_pretrained(folder / "adapter")
    saved["adapter"] = str(folder / "adapter")
    if task.peft.merge:
        merged = model.merge_and_unload()
        merged.save_pretrained(folder / "model")
        tokenizer.save_pretrained(folder / "model")
        saved["model"] = str(folder / "model")
    return saved


def _training_arguments(task: TaskConfig, seed: int, lr: float, folder: Path) -> TrainingArguments:
    spec = task.training
    world = PartialState().num_processes
    # batch_size is the global batch: split over processes, the rest made up by gradient accumulation
    per_device = spec.per_device_batch_size or max(1, spec.batch_size // world)
    if spec.batch_size % (per_device * world):
        raise ConfigError(
            f"training.batch_size={spec.batch_size} is not divisible by per-device batch {per_device} x "
            f"{world} processes; set training.per_device_batch_size"
        )
    accumulation = spec.batch_size // (per_device * world)
    bf16 = spec.precision == "bf16" or (
        spec.precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    )
    return TrainingArguments(
        output_dir=str(folder / "checkpoints"),
        seed=seed,
        data_seed=seed,
        learning_rate=lr,
        weight_decay=spec.weight_decay,
        num_train_epochs=spec.epochs,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        per_device_eval_batch_size=spec.eval_batch_size,
        warmup_steps=float(spec.warmup_ratio),
        lr_scheduler_type=spec.lr_scheduler,
        max_grad_norm=spec.max_grad_norm,
        bf16=bf16,
        fp16=spec.precision == "fp16",
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model=f"eval_{task.metric_for_selection}",
        greater_is_better=True,
        save_total_limit=1,
        save_only_model=True,
        logging_steps=spec.logging_steps,
        report_to=[],
        train_sampling_strategy="group_by_length",
        remove_unused_columns=False,
        label_names=["labels"],
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
    )
