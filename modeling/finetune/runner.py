"""Fine-tune and evaluate an encoder on a task: one Trainer run per (learning rate, seed).

The paper's protocol: validation after every epoch, the best epoch by the task's selection metric is
kept (Trainer's load_best_model_at_end), and the test split is evaluated once, with that model. Each run
writes results.json, the test predictions and (optionally) the model; the seeds are then aggregated.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time

from accelerate import PartialState
from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding, Trainer

from modeling.common import run_files
from modeling.common.engines import engine_of, full_state_dict
from modeling.common.errors import ConfigError
from modeling.common.run_files import writable_folder
from modeling.common.runtime import check_shared_folder, join_processes
from modeling.finetune.config import TaskConfig, default_stride
from modeling.finetune.dataset import label_counts, load_task_examples
from modeling.finetune.encoding import EncodedSplit, encode_split, load_task_tokenizer
from modeling.finetune.metrics import DESCRIPTIONS
from modeling.finetune.model import build_task_model, check_model_exists, max_length_for, save_task_model
from modeling.finetune.packing import install_packing
from modeling.finetune.results import RunRecord, TaskAggregate, aggregate_runs, write_aggregate
from modeling.finetune.run_folder import TaskResults, TaskRun
from modeling.finetune.trainer import TaskTrainer, score_split, training_arguments

log = logging.getLogger(__name__)


@dataclasses.dataclass
class DataSummary:
    """What every run of a task records about its data (the same for all seeds)."""

    examples: dict[str, int]
    windows: dict[str, int]
    longer_than_max_length: dict[str, int]
    label_counts: dict[str, dict[str, int]]
    skipped_or_repaired: dict[str, int]
    max_length: int


def run(task: TaskConfig) -> TaskAggregate:
    """All runs of a task (seeds x learning rates); returns the aggregate over seeds."""
    results = TaskResults(task.results_dir())
    writable_folder("output_dir", results.folder)
    state = join_processes()
    check_shared_folder(state, results.folder, "output_dir")  # every process reads the finished runs there
    check_model_exists(task.model)
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
    data = DataSummary(
        examples={n: len(s.examples) for n, s in encoded.items()},
        windows={n: len(s.features) for n, s in encoded.items()},
        longer_than_max_length={n: s.examples_of_several_windows() for n, s in encoded.items()},
        label_counts={n: label_counts(s.examples, task.task) for n, s in encoded.items()},
        skipped_or_repaired=skips.as_dict().get(task.name, {}),
        max_length=max_length,
    )
    runs = []
    for lr in task.training.lr_grid or [task.training.lr]:
        for seed in task.seeds:
            folder = results.run(seed, lr if task.training.lr_grid else None)
            runs.append(_finished_run(task, folder) or run_one(task, encoded, tokenizer, seed, lr, folder, data))
    aggregate = aggregate_runs(runs, task.metric_for_selection)
    if PartialState().is_main_process:
        write_aggregate(aggregate, results, runs)
    return aggregate


def _comparable(config: dict) -> dict:
    """A run's settings, less those that do not change the run itself. Runs recorded before
    `training.batching` existed were trained on length-grouped batches."""
    config = json.loads(json.dumps(config))
    config.get("training", {}).setdefault("batching", "length_grouped")
    config.setdefault("max_length_grid", None)  # runs recorded before sweeps existed
    if config.get("window_stride") is None:  # the default, as the run resolved it (earlier runs recorded 128)
        config["window_stride"] = default_stride(config.get("max_length"))
    return {k: v for k, v in config.items() if k not in ("seeds", "output_dir")}


def _finished_run(task: TaskConfig, folder: TaskRun) -> RunRecord | None:
    """A run whose results.json exists is not repeated (an interrupted seed sweep goes on where it stopped),
    unless it was made with other settings: then stop rather than mix results."""
    path = folder.results_json
    if not path.exists():
        return None
    record = RunRecord.load(path)
    if _comparable(record.config) != _comparable(dataclasses.asdict(task)):
        raise ConfigError(f"{path} holds a run with other settings; choose another --output_dir or delete that folder")
    log.info("%s: finished earlier, reusing %s (delete it to run again)", folder.folder.name, path)
    return record


def run_one(
    task: TaskConfig,
    encoded: dict[str, EncodedSplit],
    tokenizer,
    seed: int,
    lr: float,
    folder: TaskRun,
    data: DataSummary,
) -> RunRecord:
    started = time.time()
    model = build_task_model(task, seed)
    batching = task.training.batching
    if batching == "packed" and install_packing(model) is None:
        log.info(
            "batching: packed needs a ModernBERT encoder (this one is '%s'); training on padded random batches",
            model.config.model_type,
        )
        batching = "random"
    collator = (
        DataCollatorForTokenClassification(tokenizer) if task.task == "ner" else DataCollatorWithPadding(tokenizer)
    )
    trainer = TaskTrainer(
        model=model,
        args=training_arguments(task, seed, lr, folder, batching),
        train_dataset=encoded["train"].features,
        eval_dataset=encoded["validation"],
        data_collator=collator,
        task=task,
    )
    engine = engine_of(trainer.accelerator)
    if engine != "ddp":
        if task.peft:
            raise ConfigError(
                f"peft: LoRA under {engine}; LoRA trains a few parameters and needs no sharding: launch with DDP "
                "(accelerate_configs/8gpu_ddp.yaml)"
            )
        log.info("training under %s: model states sharded over %d processes", engine, trainer.accelerator.num_processes)
    trainer.train()
    epochs = _validation_by_epoch(trainer, task.metric_for_selection)
    best = max(epochs, key=lambda e: e[task.metric_for_selection])  # what load_best_model_at_end restored
    scores = {"validation": _scores(trainer, encoded["validation"])[0]}
    scores["test"], test_records = _scores(trainer, encoded["test"])  # the test split, once, with the best epoch
    record = RunRecord(
        task=task.name,
        task_type=task.task,
        model=task.model,
        random_init=task.random_init,
        peft=dataclasses.asdict(task.peft) if task.peft else None,
        seed=seed,
        lr=lr,
        batching=batching,
        selection_metric=task.metric_for_selection,
        best_epoch=best["epoch"],
        validation_by_epoch=epochs,
        metrics=scores,
        metric_descriptions={k: v for k, v in DESCRIPTIONS.items() if k in scores["test"]},
        train_loss=[[h["step"], h["loss"]] for h in trainer.state.log_history if "loss" in h],
        steps_per_epoch=math.ceil(trainer.state.max_steps / max(trainer.args.num_train_epochs, 1e-9)),
        **dataclasses.asdict(data),
        train_runtime_s=round(trainer.state.log_history[-1].get("train_runtime", math.nan), 1),
        config=dataclasses.asdict(task),
    )
    # where an engine sharded them, the best epoch's weights gathered whole (every process takes part)
    weights = full_state_dict(trainer, engine, trainer.state.best_model_checkpoint) if task.save_model else None
    if trainer.is_world_process_zero():
        folder.folder.mkdir(parents=True, exist_ok=True)
        run_files.write_text(folder.predictions_jsonl, "".join(json.dumps(row) + "\n" for row in test_records))
        if task.save_model:
            record.saved = save_task_model(
                trainer.accelerator.unwrap_model(trainer.model), tokenizer, folder, task, weights
            )
        shutil.rmtree(folder.checkpoints_dir, ignore_errors=True)  # the best epoch is saved above
        record.wall_time_s = round(time.time() - started, 1)
        run_files.write_json(folder.results_json, record.to_dict())
        log.info(
            "%s seed %d lr %g: best epoch %s, test %s = %.4f (%.0f s)",
            task.name,
            seed,
            lr,
            best["epoch"],
            task.metric_for_selection,
            scores["test"][task.metric_for_selection],
            record.wall_time_s,
        )
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
