"""Fine-tuning tasks: typed task configs (eval_configs/*.yaml) and the examples loaders produce.

A task config names the data (a loader and its files), the task type, the label list, the split rule,
the maximum length and the training protocol. It is validated like a pretraining recipe: unknown keys
and impossible values stop with one line naming the key (ConfigError).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from modeling.config import ConfigError, _build, _choice, _help, _positive, apply_override, describe_fields

EVAL_CONFIGS_DIR = Path(__file__).resolve().parent.parent / "eval_configs"
TASK_TYPES = ("single_label", "multi_label", "ner")
PAPER_SEEDS = [42, 43, 44, 45, 46]


# ------------------------------------------------------------------------------------ examples


@dataclass
class Example:
    """One document (classification) or one tagged text (NER), whatever format it came from.

    NER words are character spans of `text`, so predictions can be reported with offsets into the
    original text. `group` keeps examples that must not be split apart (annotator rows of one note,
    snippets of one report) in the same split; `split` is the split the files themselves define.
    """

    id: str  # where it came from: "file:line", "file#record", an id column
    text: str
    labels: list[str] | None = None  # classification: label names (single-label: exactly one)
    words: list[tuple[int, int]] | None = None  # NER: [start, end) character span of each word
    tags: list[str] | None = None  # NER: one BIO tag per word
    group: str | None = None
    split: str | None = None  # train | validation | test, when the source defines it

    def word_texts(self) -> list[str]:
        return [self.text[start:end] for start, end in self.words]


# ------------------------------------------------------------------------------------ config


@dataclass
class DataSpec:
    loader: str = _help(
        "Loader: chemprot_tsv, phenotype, deid, brat, conll, jsonl, csv, parquet, hf, pubmed_mesh, pubmed_chemicals",
        None,
    )
    path: str | None = _help("Folder, file, glob or Hub dataset id (`--data_dir` sets it)", None)
    files: dict | None = _help(
        "Split -> file (relative to path), e.g. {train: train.tsv, validation: dev.tsv, test: test.tsv}", None
    )
    notes: str | None = _help("phenotype: MIMIC-III NOTEEVENTS.csv(.gz), relative to path", None)
    text_field: str = _help("Column/field holding the text", "text")
    label_field: str = _help(
        "Column/field holding the label (classification) or labels (multi-label: list or separated string)", "label"
    )
    id_field: str | None = _help("Column/field naming each record (default: file and line)", None)
    label_separator: str | None = _help("Multi-label labels stored in one string, separated by this", None)
    words_field: str = _help("NER (jsonl/parquet/hf): field with the list of words", "tokens")
    tags_field: str = _help(
        "NER (jsonl/parquet/hf): field with the list of tags (names, or ids into the label list)", "ner_tags"
    )
    token_column: int = _help("conll: column of the word", 0)
    tag_column: int = _help("conll: column of the tag", -1)
    subset: str | None = _help("hf: dataset configuration name", None)
    entity_types: list | None = _help("brat/deid: entity types kept as tags (others are counted and ignored)", None)
    unit: str = _help("brat: one example per `file` or per `Snippet` entity", "file")
    word_pattern: str = _help("Regex that splits text into words (NER from character offsets)", r"\w+|[^\w\s]")
    label_combination: str = _help(
        "phenotype: several annotators per note -> `majority` (at least half), `any` or `all`", "majority"
    )
    max_examples: int | None = _help("Keep at most this many examples (in file order), e.g. for demos", None)
    on_bad_record: str = _help("raise | skip (skipped records are counted and reported)", "raise")
    strict_bio: bool = _help(
        "An I- tag that does not continue an entity is an error (else it is repaired to B- and counted)", False
    )

    def validate(self, key: str):
        from modeling.task_data import LOADERS  # the registry lives with the loaders

        if self.loader is None:
            raise ConfigError(f"{key}.loader: name a loader ({', '.join(sorted(LOADERS))})")
        _choice(f"{key}.loader", self.loader, sorted(LOADERS))
        _choice(f"{key}.on_bad_record", self.on_bad_record, ("raise", "skip"))
        _choice(f"{key}.unit", self.unit, ("file", "snippet"))
        _choice(f"{key}.label_combination", self.label_combination, ("majority", "any", "all"))
        if self.max_examples is not None:
            _positive(f"{key}.max_examples", self.max_examples)
        if self.files is not None and (not isinstance(self.files, dict) or set(self.files) - set(SPLITS)):
            raise ConfigError(f"{key}.files: a mapping of {', '.join(SPLITS)} to files, got {self.files!r}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        reads = LOADERS[self.loader].reads | {"loader", "max_examples", "on_bad_record", "strict_bio"}
        for name in defaults:
            if name not in reads and getattr(self, name) != defaults[name]:
                raise ConfigError(
                    f"{key}.{name}: not read by loader '{self.loader}' (it reads: {', '.join(sorted(reads))})"
                )


SPLITS = ("train", "validation", "test")


@dataclass
class SplitConfig:
    official: bool = _help("Use the splits the files define when they define them", True)
    seed: int = _help("Seed of the random split (by group, so a note never lands in two splits)", 42)
    validation: float = _help(
        "Share of groups for validation (random split), or carved from train when the files have no validation split",
        0.15,
    )
    test: float = _help("Share of groups for test (random split)", 0.15)

    def validate(self, key: str):
        for name in ("validation", "test"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(f"{key}.{name}={value}: must be in (0, 1)")
        if self.validation + self.test >= 1:
            raise ConfigError(f"{key}: validation + test = {self.validation + self.test:g} leaves nothing to train on")


@dataclass
class TrainingConfig:
    lr: float = _help("Learning rate", 2e-5)
    lr_grid: list | None = _help("Learning rates to try; the best on validation (mean over seeds) is reported", None)
    weight_decay: float = _help("Weight decay", 0.01)
    epochs: float = _help("Training epochs (the best epoch on validation is kept)", 3)
    batch_size: int = _help("Examples (windows) per optimizer step", 16)
    per_device_batch_size: int | None = _help(
        "Per forward pass (default: batch_size); gradient accumulation makes up the rest", None
    )
    eval_batch_size: int = _help("Per device, for validation and test", 16)
    warmup_ratio: float = _help("Linear warmup as a fraction of training", 0.0)
    lr_scheduler: str = _help("transformers scheduler name (linear, cosine, constant, ...)", "linear")
    max_grad_norm: float = _help("Gradient clipping", 1.0)
    precision: str = _help("auto (bf16 on a GPU that has it) | bf16 | fp16 | fp32", "auto")
    logging_steps: int = _help("Log every N steps", 10)

    def validate(self, key: str):
        for name in ("lr", "epochs", "batch_size", "eval_batch_size", "logging_steps"):
            _positive(f"{key}.{name}", getattr(self, name))
        for lr in self.lr_grid or []:
            _positive(f"{key}.lr_grid", lr)
        if self.per_device_batch_size is not None:
            _positive(f"{key}.per_device_batch_size", self.per_device_batch_size)
            if self.batch_size % self.per_device_batch_size:
                raise ConfigError(
                    f"{key}.per_device_batch_size={self.per_device_batch_size}: must divide batch_size ({self.batch_size})"
                )
        if self.weight_decay < 0 or not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"{key}: weight_decay must be >= 0 and warmup_ratio in [0, 1)")
        _choice(f"{key}.precision", self.precision, ("auto", "bf16", "fp16", "fp32"))


@dataclass
class PeftSpec:
    r: int = _help("LoRA rank", 8)
    alpha: int = _help("LoRA alpha", 16)
    dropout: float = _help("LoRA dropout", 0.1)
    target_modules: list | None = _help(
        "Modules adapted (default for ModernBERT: Wqkv, Wo, Wi; name them for other encoders)", None
    )
    modules_to_save: list | None = _help(
        "Modules trained in full next to the adapter (default: classifier and ModernBERT's task head)", None
    )
    merge: bool = _help("Also save the model with the adapter merged into the weights", False)

    def validate(self, key: str):
        _positive(f"{key}.r", self.r)
        _positive(f"{key}.alpha", self.alpha)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"{key}.dropout={self.dropout}: must be in [0, 1)")


@dataclass
class TaskConfig:
    name: str = _help("Task name (results and the model card use it)", None)
    task: str = _help("single_label | multi_label | ner", None)
    model: str = _help("Hub id or folder of the encoder to fine-tune (`--model`)", "answerdotai/ModernBERT-base")
    random_init: bool = _help("Same architecture as `model`, random weights (a baseline at the same budget)", False)
    attn_implementation: str = _help("sdpa | eager; flash_attention_2 on GPUs with flash-attn installed", "sdpa")
    output_dir: str | None = _help("Where results, predictions and models go (default: results/NAME)", None)
    labels: list = _help("Label names; NER: entity types (B-/I- tags are derived) or the full BIO tag list", None)
    negative_labels: list | None = _help("single-label: labels left out of positive_micro_f1 (ChemProt: [false])", None)
    data: DataSpec = _help("Where and how to read the examples", factory=DataSpec)
    split: SplitConfig = _help("Split rule", factory=SplitConfig)
    max_length: int | None = _help("Tokens per window (default: the model's maximum, 8192 for ModernBERT)", None)
    window_stride: int = _help("Tokens shared by consecutive windows of a longer document", 128)
    window_aggregation: str = _help(
        "Classification of a multi-window document: mean or max of the window logits", "mean"
    )
    classifier_pooling: str | None = _help("ModernBERT: cls or mean pooling (default: the checkpoint's)", None)
    training: TrainingConfig = _help("Training protocol (the paper's defaults)", factory=TrainingConfig)
    selection_metric: str | None = _help(
        "Validation metric that picks the best epoch (default: weighted_f1, or seqeval_f1 for NER)", None
    )
    seeds: list = _help("One run per seed", factory=lambda: list(PAPER_SEEDS))
    peft: PeftSpec | None = _help("LoRA instead of full fine-tuning (null = full)", None)
    save_model: bool = _help("Save each run's best model (safetensors) next to its results", True)
    allow_pickle: bool = _help(
        "Also load pickle weights (pytorch_model.bin), which can run code; only for checkpoints you trust", False
    )

    def validate(self):
        if not self.name:
            raise ConfigError("name: a task config needs a name")
        _choice("task", self.task, TASK_TYPES)
        _choice(
            "attn_implementation", self.attn_implementation, ("sdpa", "eager", "flash_attention_2", "flex_attention")
        )
        if self.random_init and self.peft is not None:
            raise ConfigError(
                "peft: an adapter on a randomly initialised encoder is not a meaningful baseline; drop random_init or peft"
            )
        if not isinstance(self.labels, list) or not self.labels or not all(isinstance(x, str) for x in self.labels):
            raise ConfigError("labels: give the label names as a non-empty list of strings")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"labels: listed twice: {sorted({x for x in self.labels if self.labels.count(x) > 1})}")
        if self.task == "single_label" and len(self.labels) < 2:
            raise ConfigError("labels: single-label classification needs at least 2 labels")
        self.data.validate("data")
        self.split.validate("split")
        if self.max_length is not None and self.max_length < 16:
            raise ConfigError(f"max_length={self.max_length}: must be >= 16")
        if self.window_stride < 0 or (self.max_length and self.window_stride >= self.max_length // 2):
            raise ConfigError(f"window_stride={self.window_stride}: must be >= 0 and below half of max_length")
        _choice("window_aggregation", self.window_aggregation, ("mean", "max"))
        if self.classifier_pooling is not None:
            _choice("classifier_pooling", self.classifier_pooling, ("cls", "mean"))
        self.training.validate("training")
        from modeling.metrics import metric_names  # what each task type reports

        for name in self.negative_labels or []:
            if self.task != "single_label" or name not in self.labels:
                raise ConfigError(f"negative_labels: '{name}' must be a label of a single_label task")
        _choice("selection_metric", self.metric_for_selection, metric_names(self.task, self.negative_labels))
        if not self.seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise ConfigError(f"seeds={self.seeds!r}: give a list of integers")
        if self.peft is not None:
            self.peft.validate("peft")
        return self

    @property
    def metric_for_selection(self) -> str:
        return self.selection_metric or ("seqeval_f1" if self.task == "ner" else "weighted_f1")

    @property
    def tag_names(self) -> list[str]:
        """NER: the BIO tag list (O first), from entity types or as given."""
        if self.task != "ner":
            return list(self.labels)
        if all(x == "O" or x[:2] in ("B-", "I-") for x in self.labels):
            return ["O"] + [x for x in self.labels if x != "O"]
        return ["O"] + [f"{prefix}-{kind}" for kind in self.labels for prefix in ("B", "I")]

    def results_dir(self) -> Path:
        return Path(self.output_dir or f"results/{self.name}")


def task_from_dict(raw: dict) -> TaskConfig:
    raw = dict(raw)
    peft = raw.pop("peft", None)
    config = _build(TaskConfig, raw, "")
    config.peft = _build(PeftSpec, peft, "peft") if peft is not None else None
    return config.validate()


def load_task_config(path: str | Path, overrides: list[tuple[str, object]] | None = None) -> TaskConfig:
    """Read eval_configs/NAME.yaml (or a path) and apply (dotted.key, value) overrides."""
    path = Path(path)
    if not path.exists() and (EVAL_CONFIGS_DIR / f"{path}.yaml").exists():
        path = EVAL_CONFIGS_DIR / f"{path}.yaml"
    if not path.is_file():
        shipped = ", ".join(p.stem for p in sorted(EVAL_CONFIGS_DIR.glob("*.yaml")))
        raise ConfigError(f"{path}: task config not found (shipped: {shipped})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of task settings")
    for key, value in overrides or []:
        apply_override(raw, key, value)
    try:
        return task_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path.name}: {e}") from None


def describe_task_fields() -> list[str]:
    return describe_fields(TaskConfig) + describe_fields(PeftSpec, "peft.")
