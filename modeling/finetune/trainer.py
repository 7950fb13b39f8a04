"""The Trainer of one fine-tuning run, and how its window logits become document and word predictions.

Evaluation scores documents, not windows: `TaskTrainer.evaluate` takes an EncodedSplit, predicts its
windows (Trainer.predict: batching, devices, gathering across processes) and maps them back
(modeling.finetune.encoding) before the task's metrics (modeling.finetune.metrics) score them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from modeling.common.engines import sharded_launch
from modeling.common.errors import ConfigError
from modeling.common.runtime import DEFAULT_TIMEOUT_MINUTES, resolve_precision, use_cpu
from modeling.finetune.config import TaskConfig
from modeling.finetune.encoding import EncodedSplit, document_logits, word_logits
from modeling.finetune.metrics import task_scores
from modeling.finetune.run_folder import TaskRun


class TaskTrainer(Trainer):
    """Trainer whose evaluation scores documents, not windows: `evaluate` takes an EncodedSplit, predicts
    its windows (Trainer.predict: batching, devices, gathering across processes) and maps them back."""

    def __init__(self, *args, task: TaskConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.task = task
        # The task heads take **kwargs, so the Trainer would take them for heads that normalise their loss by
        # num_items_in_batch over an accumulated batch; they ignore it and return a per-batch mean, which the
        # Trainer must then divide by the accumulation steps (else accumulated gradients are summed).
        self.model_accepts_loss_kwargs = False

    def _get_eval_sampler(self, eval_dataset):
        # transformers applies train_sampling_strategy="group_by_length" to evaluation too, which shuffles the
        # predictions; windows are mapped back to documents by position (and are already sorted by length).
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        # transformers names the best checkpoint on each process by whether its folder exists when the model has
        # been saved; FSDP writes the folder later, with the optimizer, so some processes would miss it, skip
        # loading the best epoch at the end and wait forever in the others' collectives. Decided again here, once
        # every process has written its part.
        if self.state.best_global_step:
            best = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}"
            self.accelerator.wait_for_everyone()
            if best.exists():
                self.state.best_model_checkpoint = str(best)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        split = eval_dataset if eval_dataset is not None else self.eval_dataset
        output = self.predict(split.features, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        scores, _ = score_split(self.task, split, output.predictions)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in scores.items() if isinstance(v, float)}
        for name in ("loss", "runtime"):  # the runtime lets training speed be told apart from evaluation's
            metrics[f"{metric_key_prefix}_{name}"] = output.metrics.get(f"{metric_key_prefix}_{name}")
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
            for e, tags in zip(split.examples, predicted, strict=True)
        ]
        return task_scores("ner", predicted, gold, labels), records
    per_doc = document_logits(split, logits, task.window_aggregation)
    if task.task == "single_label":
        probabilities = torch.softmax(torch.from_numpy(per_doc).float(), -1).numpy()
        predicted = per_doc.argmax(-1)
        gold = [labels.index(e.labels[0]) for e in split.examples]
        scores = task_scores("single_label", predicted.tolist(), gold, labels, task.negative_labels)
        records = [
            {
                "id": e.id,
                "label": labels[p],
                "gold": e.labels[0],
                "probabilities": dict(zip(labels, map(_round, row), strict=True)),
            }
            for e, p, row in zip(split.examples, predicted, probabilities, strict=True)
        ]
        return scores, records
    probabilities = torch.sigmoid(torch.from_numpy(per_doc).float()).numpy()
    gold = [[int(name in e.labels) for name in labels] for e in split.examples]
    scores = task_scores("multi_label", per_doc.tolist(), gold, labels)
    records = [
        {
            "id": e.id,
            "labels": [n for n, logit in zip(labels, row, strict=True) if logit > 0],
            "gold": e.labels,
            "probabilities": dict(zip(labels, map(_round, probs), strict=True)),
        }
        for e, row, probs in zip(split.examples, per_doc, probabilities, strict=True)
    ]
    return scores, records


def _entities(example, tags: list[str]) -> list[dict]:
    """BIO tags of words -> entities with character offsets into the example's text."""
    from seqeval.metrics.sequence_labeling import get_entities  # NER only: training itself never needs seqeval

    spans = []
    for kind, first, last in get_entities(list(tags)):
        start, end = example.words[first][0], example.words[last][1]
        spans.append({"type": kind, "start": start, "end": end, "text": example.text[start:end]})
    return spans


def _round(x) -> float:
    return round(float(x), 6)


def training_arguments(task: TaskConfig, seed: int, lr: float, run: TaskRun, batching: str) -> TrainingArguments:
    """`batching` as the run does it: packed and random batches are both drawn at random (packing happens inside
    the model, modeling.finetune.packing); length_grouped uses transformers' grouping sampler."""
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
    precision = resolve_precision(spec.precision)
    return TrainingArguments(
        output_dir=str(run.checkpoints_dir),
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
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model=f"eval_{task.metric_for_selection}",
        greater_is_better=True,
        save_total_limit=1,
        # the best epoch's checkpoint is reloaded at the end; FSDP and DeepSpeed reload theirs with the optimizer
        save_only_model=not sharded_launch(),
        logging_steps=spec.logging_steps,
        report_to=[],
        train_sampling_strategy="group_by_length" if batching == "length_grouped" else "random",
        remove_unused_columns=False,
        label_names=["labels"],
        use_cpu=use_cpu(),
        ddp_timeout=round(DEFAULT_TIMEOUT_MINUTES * 60),  # as join_processes gave the group
        disable_tqdm=False,
    )
