"""The model of a fine-tuning run: a task head from transformers' Auto classes on the encoder (any encoder
with a classification head works), optionally with LoRA adapters, and how the best epoch is saved."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, set_seed

from modeling.common.attention import known_attention
from modeling.common.engines import save_whole
from modeling.common.errors import ConfigError
from modeling.common.loading import load_config, load_pretrained
from modeling.finetune.config import TaskConfig
from modeling.finetune.run_folder import TaskRun

MODERNBERT_LORA_TARGETS = ["Wqkv", "Wo", "Wi"]


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
            config = load_config(task.model, **options)
            model = auto.from_config(config, attn_implementation=known_attention(task.attn_implementation))
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


def check_model_exists(model: str) -> None:
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
    positions = load_config(task.model).max_position_embeddings
    limit = min(positions, tokenizer.model_max_length) if tokenizer.model_max_length < 10**9 else positions
    if task.max_length and task.max_length > positions:
        raise ConfigError(f"max_length={task.max_length}: above the model's {positions} positions")
    length = task.max_length or limit
    if task.window_stride is not None and task.window_stride >= length // 2:
        raise ConfigError(f"window_stride={task.window_stride}: must be below half of the max length ({length})")
    return length


def save_task_model(model, tokenizer, run: TaskRun, task: TaskConfig, weights: dict | None = None) -> dict[str, str]:
    """Full fine-tuning: the model (with `weights`, the full state dict, where an engine sharded it). LoRA: the
    adapter on its own (loads onto the base model with peft), and with peft.merge a stock transformers model
    with the adapter merged in."""
    saved = {}
    if task.peft is None:
        save_whole(model, run.model_dir, weights)
        tokenizer.save_pretrained(run.model_dir)
        return {"model": str(run.model_dir)}
    model.save_pretrained(run.adapter_dir)
    tokenizer.save_pretrained(run.adapter_dir)
    saved["adapter"] = str(run.adapter_dir)
    if task.peft.merge:
        merged = model.merge_and_unload()
        merged.save_pretrained(run.model_dir)
        tokenizer.save_pretrained(run.model_dir)
        saved["model"] = str(run.model_dir)
    return saved
