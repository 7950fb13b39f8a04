"""Typed task configs (eval_configs/*.yaml): the data (a loader and its files), the task type, the label
list, the split rule, the maximum length and the training protocol.

Validated like a pretraining recipe: unknown keys and impossible values stop with one line naming the
key (ConfigError). The YAML machinery is modeling.common.config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modeling.common.config import (
    apply_override,
    build,
    choice,
    describe_fields,
    folder_name,
    option,
    positive,
    read_yaml,
)
from modeling.common.errors import ConfigError
from modeling.common.windows import default_stride  # inference resolves a run's stride with it too
from modeling.finetune.examples import TASK_TYPES, TaskLabels
from modeling.finetune.loaders import check_data_spec
from modeling.finetune.loaders.spec import DataSpec
from modeling.finetune.metrics import metric_names

EVAL_CONFIGS_DIR = Path(__file__).resolve().parent.parent.parent / "eval_configs"
PAPER_SEEDS = [42, 43, 44, 45, 46]
BATCHINGS = ("packed", "random", "length_grouped")


@dataclass
class SplitConfig:
    official: bool = option("Use the splits the files define when they define them", True)
    seed: int = option("Seed of the random split (by group, so a note never lands in two splits)", 42)
    validation: float = option(
        "Share of groups for validation (random split), or carved from train when the files have no validation split",
        0.15,
    )
    test: float = option("Share of groups for test (random split)", 0.15)

    def validate(self, key: str):
        for name in ("validation", "test"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(f"{key}.{name}={value}: must be in (0, 1)")
        if self.validation + self.test >= 1:
            raise ConfigError(f"{key}: validation + test = {self.validation + self.test:g} leaves nothing to train on")


@dataclass
class TrainingConfig:
    lr: float = option("Learning rate", 2e-5)
    lr_grid: list | None = option("Learning rates to try; the best on validation (mean over seeds) is reported", None)
    weight_decay: float = option("Weight decay", 0.01)
    epochs: float = option("Training epochs (the best epoch on validation is kept)", 3)
    batch_size: int = option("Examples (windows) per optimizer step", 16)
    per_device_batch_size: int | None = option(
        "Per forward pass (default: batch_size); gradient accumulation makes up the rest", None
    )
    eval_batch_size: int = option("Per device, for validation and test", 16)
    warmup_ratio: float = option("Linear warmup as a fraction of training", 0.0)
    lr_scheduler: str = option("transformers scheduler name (linear, cosine, constant, ...)", "linear")
    max_grad_norm: float = option("Gradient clipping", 1.0)
    precision: str = option("auto (bf16 on a GPU that has it) | bf16 | fp16 | fp32", "auto")
    logging_steps: int = option("Log every N steps", 10)
    batching: str = option(
        "packed: random batches (the paper's protocol) whose examples share rows, attention confined to each, "
        "outputs equal to padded (ModernBERT; other encoders get random) | random: random batches padded to their "
        "longest | length_grouped: batches of similar lengths, faster than random but scores lower at a fixed budget",
        "packed",
    )

    def validate(self, key: str):
        for name in ("lr", "epochs", "batch_size", "eval_batch_size", "logging_steps"):
            positive(f"{key}.{name}", getattr(self, name))
        if self.lr_grid is not None and not isinstance(self.lr_grid, list):  # "1e-3" would be a grid of characters
            raise ConfigError(f"{key}.lr_grid={self.lr_grid!r}: give a list of learning rates, e.g. [3.0e-4, 1.0e-3]")
        for lr in self.lr_grid or []:
            positive(f"{key}.lr_grid", lr)
        if self.per_device_batch_size is not None:
            positive(f"{key}.per_device_batch_size", self.per_device_batch_size)
            if self.batch_size % self.per_device_batch_size:
                raise ConfigError(
                    f"{key}.per_device_batch_size={self.per_device_batch_size}: "
                    f"must divide batch_size ({self.batch_size})"
                )
        if self.weight_decay < 0 or not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"{key}: weight_decay must be >= 0 and warmup_ratio in [0, 1)")
        choice(f"{key}.precision", self.precision, ("auto", "bf16", "fp16", "fp32"))
        choice(f"{key}.batching", self.batching, BATCHINGS)


@dataclass
class PeftSpec:
    r: int = option("LoRA rank", 8)
    alpha: int = option("LoRA alpha", 16)
    dropout: float = option("LoRA dropout", 0.1)
    target_modules: list | None = option(
        "Modules adapted (default for ModernBERT: Wqkv, Wo, Wi; name them for other encoders)", None
    )
    modules_to_save: list | None = option(
        "Modules trained in full next to the adapter (default: classifier and ModernBERT's task head)", None
    )
    merge: bool = option("Also save the model with the adapter merged into the weights", False)

    def validate(self, key: str):
        positive(f"{key}.r", self.r)
        positive(f"{key}.alpha", self.alpha)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"{key}.dropout={self.dropout}: must be in [0, 1)")


@dataclass
class TaskConfig:
    name: str = option("Task name (results and the model card use it)", None)
    task: str = option("single_label | multi_label | ner", None)
    model: str = option("Hub id or folder of the encoder to fine-tune (`--model`)", "answerdotai/ModernBERT-base")
    random_init: bool = option("Same architecture as `model`, random weights (a baseline at the same budget)", False)
    attn_implementation: str = option(
        "sdpa | eager | document_sdpa (packed batches on CPU: attention per example, no dense masks) | "
        "varlen (packed batches on GPU, PyTorch's own flash kernel; document_sdpa on CPU) | flex_attention; "
        "flash_attention_2 on GPUs with flash-attn installed",
        "sdpa",
    )
    output_dir: str | None = option("Where results, predictions and models go (default: results/NAME)", None)
    labels: list = option("Label names; NER: entity types (B-/I- tags are derived) or the full BIO tag list", None)
    negative_labels: list | None = option(
        "single-label: labels left out of positive_micro_f1 (ChemProt: [false])", None
    )
    data: DataSpec = option("Where and how to read the examples", factory=DataSpec)
    split: SplitConfig = option("Split rule", factory=SplitConfig)
    max_length: int | None = option("Tokens per window (default: the model's maximum, 8192 for ModernBERT)", None)
    max_length_grid: list | None = option(
        "Context-length sweep: the whole protocol at each of these maximum lengths (context_sweep.md / .json / .png "
        "in output_dir); a window_stride given that does not fit a length becomes a quarter of it",
        None,
    )
    window_stride: int | None = option(
        "Tokens shared by consecutive windows of a longer document (default: a quarter of max_length, at most 128)",
        None,
    )
    window_aggregation: str = option(
        "Classification of a multi-window document: mean or max of the window logits", "mean"
    )
    classifier_pooling: str | None = option("ModernBERT: cls or mean pooling (default: the checkpoint's)", None)
    training: TrainingConfig = option("Training protocol (the paper's defaults)", factory=TrainingConfig)
    selection_metric: str | None = option(
        "Validation metric that picks the best epoch (default: weighted_f1, or seqeval_f1 for NER)", None
    )
    seeds: list = option("One run per seed", factory=lambda: list(PAPER_SEEDS))
    peft: PeftSpec | None = option("LoRA instead of full fine-tuning (null = full)", None)
    save_model: bool = option("Save each run's best model (safetensors) next to its results", True)
    allow_pickle: bool = option(
        "Also load pickle weights (pytorch_model.bin), which can run code; only for checkpoints you trust", False
    )

    def validate(self):
        if not self.name:
            raise ConfigError("name: a task config needs a name")
        folder_name("name", self.name)
        choice("task", self.task, TASK_TYPES)
        choice(
            "attn_implementation",
            self.attn_implementation,
            ("sdpa", "eager", "document_sdpa", "varlen", "flash_attention_2", "flex_attention"),
        )
        if self.random_init and self.peft is not None:
            raise ConfigError(
                "peft: an adapter on a randomly initialised encoder is not a meaningful baseline; "
                "drop random_init or peft"
            )
        if not isinstance(self.labels, list) or not self.labels or not all(isinstance(x, str) for x in self.labels):
            raise ConfigError("labels: give the label names as a non-empty list of strings")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"labels: listed twice: {sorted({x for x in self.labels if self.labels.count(x) > 1})}")
        if self.task == "single_label" and len(self.labels) < 2:
            raise ConfigError("labels: single-label classification needs at least 2 labels")
        check_data_spec(self.data, "data")
        self.split.validate("split")
        if self.max_length is not None and self.max_length < 16:
            raise ConfigError(f"max_length={self.max_length}: must be >= 16")
        if self.max_length_grid is not None:
            grid = self.max_length_grid
            whole = isinstance(grid, list) and all(isinstance(n, int) and not isinstance(n, bool) for n in grid)
            if not whole or not grid:
                raise ConfigError(f"max_length_grid={grid!r}: give a list of whole numbers of tokens, e.g. [512, 1024]")
            if min(grid) < 16 or len(set(grid)) != len(grid):
                raise ConfigError(f"max_length_grid={grid}: each length must be >= 16, and listed once")
        # a sweep replaces max_length, and fits the stride to each of its lengths (modeling.finetune.sweep)
        fixed_length = self.max_length if not self.max_length_grid else None
        stride = self.window_stride
        if stride is not None and (stride < 0 or (fixed_length and stride >= fixed_length // 2)):
            raise ConfigError(f"window_stride={stride}: must be >= 0 and below half of max_length")
        choice("window_aggregation", self.window_aggregation, ("mean", "max"))
        if self.classifier_pooling is not None:
            choice("classifier_pooling", self.classifier_pooling, ("cls", "mean"))
        self.training.validate("training")
        for name in self.negative_labels or []:
            if self.task != "single_label" or name not in self.labels:
                raise ConfigError(f"negative_labels: '{name}' must be a label of a single_label task")
        choice("selection_metric", self.metric_for_selection, metric_names(self.task, self.negative_labels))
        if isinstance(self.seeds, int) and not isinstance(self.seeds, bool):  # one seed written without brackets
            self.seeds = [self.seeds]
        if (
            not isinstance(self.seeds, list)
            or not self.seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds)
        ):
            raise ConfigError(f"seeds={self.seeds!r}: give a list of integers")
        if self.peft is not None:
            self.peft.validate("peft")
        return self

    def stride_for(self, max_length: int) -> int:
        """Tokens consecutive windows share: window_stride as given, else a quarter of the window, at most 128 (a
        fixed default would not fit short windows: it must stay below half of them)."""
        return self.window_stride if self.window_stride is not None else default_stride(max_length)

    @property
    def metric_for_selection(self) -> str:
        return self.selection_metric or ("seqeval_f1" if self.task == "ner" else "weighted_f1")

    def task_labels(self) -> TaskLabels:
        """What the loaders need to know of this task."""
        return TaskLabels(self.name, self.task, list(self.labels))

    @property
    def tag_names(self) -> list[str]:
        """NER: the BIO tag list (O first), from entity types or as given; else the labels."""
        return self.task_labels().tag_names

    def results_dir(self) -> Path:
        return Path(self.output_dir or f"results/{self.name}")


def task_from_dict(raw: dict) -> TaskConfig:
    raw = dict(raw)
    peft = raw.pop("peft", None)
    config = build(TaskConfig, raw, "")
    config.peft = build(PeftSpec, peft, "peft") if peft is not None else None
    return config.validate()


def load_task_config(path: str | Path, overrides: list[tuple[str, object]] | None = None) -> TaskConfig:
    """Read eval_configs/NAME.yaml (or a path) and apply (dotted.key, value) overrides."""
    path = Path(path)
    raw = read_yaml(path, "task config", EVAL_CONFIGS_DIR, settings="task settings")
    for key, value in overrides or []:
        apply_override(raw, key, value)
    try:
        return task_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path.name}: {e}") from None


def describe_task_fields() -> list[str]:
    return describe_fields(TaskConfig) + describe_fields(PeftSpec, "peft.")
