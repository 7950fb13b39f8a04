"""Typed pretraining recipes: the dataclasses a recipe YAML becomes, their checks, loading with overrides.

A recipe is plain YAML. Every field can be overridden from the command line with its dotted path
(`--optimizer.lr 1e-4`, `--phases.phase2.masking 0.2`, `--phases.0.length.steps 10`); problems stop with
one line naming the key and what is allowed (ConfigError). The YAML machinery is modeling.common.config.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from modeling.common.config import (
    apply_override,
    build,
    choice,
    describe_fields,
    folder_name,
    numbers,
    option,
    positive,
    read_yaml,
)
from modeling.common.errors import ConfigError, DataError
from modeling.data.sources import SourceSpec

RECIPES_DIR = Path(__file__).resolve().parent.parent.parent / "recipes"
DEFAULT_RECIPE = RECIPES_DIR / "demo.yaml"


@dataclass
class ModelConfig:
    init: str | None = option(
        "Hub id or local folder of the checkpoint to continue from, or a Composer checkpoint (.pt) of ModernBERT's "
        "training code, read without running anything in it; null = a fresh model from `config`",
        None,
    )
    composer_config: str | None = option(
        "The run YAML (ModernBERT repository format, its model.model_config block) of a Composer .pt `init`; "
        "null = the copy of the model config the checkpoint keeps",
        None,
    )
    config: dict | None = option(
        "ModernBertConfig fields: a fresh model (on top of init's config when both are given)", None
    )
    attn_implementation: str = option(
        "document_sdpa (per-document attention, fastest on CPUs) | varlen (per-document attention on GPUs, "
        "PyTorch's own flash kernel, nothing to build; document_sdpa on CPUs) | sdpa | eager; "
        "flash_attention_2 (flash-attn installed) | flex_attention (GPU)",
        "sdpa",
    )
    compile: bool = option("torch.compile the model", False)
    allow_pickle: bool = option(
        "Also load pickle weights (pytorch_model.bin), which can run code; only for checkpoints you trust", False
    )

    def validate(self, key: str):
        choice(f"{key}.attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        if self.init is None and self.config is None:
            raise ConfigError(f"{key}: give `init` (a Hub id or folder) or `config` (a fresh model), or both")
        if self.composer_config is not None and not self.init_is_composer():
            raise ConfigError(f"{key}.composer_config: only for a Composer checkpoint (.pt) as {key}.init")

    def init_is_composer(self) -> bool:
        """`init` names a Composer training checkpoint rather than a transformers folder or Hub id."""
        return self.init is not None and self.init.endswith(COMPOSER_SUFFIXES)


COMPOSER_SUFFIXES = (".pt", ".pth")  # Composer names its checkpoints ep{E}-ba{B}-rank{R}.pt

# document_sdpa and varlen are this project's (modeling.common.attention, not imported here: recipes load before
# torch); the others are transformers'.
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flex_attention", "document_sdpa", "varlen")


@dataclass
class TokenizerConfig:
    path: str | None = option("Hub id or local folder of the tokenizer; null = model.init", None)
    train_vocab_size: int | None = option(
        "Train a byte-level BPE tokenizer of this size on the first phase's sources (cached) instead of loading one",
        None,
    )
    train_max_documents: int = option("Documents read to train the tokenizer", 50_000)

    def validate(self, key: str):
        if self.train_vocab_size is not None and self.train_vocab_size < 300:
            raise ConfigError(
                f"{key}.train_vocab_size={self.train_vocab_size}: must be >= 300 (256 bytes + special tokens + merges)"
            )
        positive(f"{key}.train_max_documents", self.train_max_documents)


@dataclass
class BatchConfig:
    global_sequences: int | None = option("Sequences (packed rows) per optimizer step, over all processes", None)
    global_tokens: int | None = option(
        "Alternative to global_sequences: tokens per optimizer step (rows = tokens // max_seq_length)", None
    )
    per_device: int = option(
        "Rows per device per forward pass; gradient accumulation = global / (per_device x processes)", 8
    )

    def validate(self, key: str):
        if (self.global_sequences is None) == (self.global_tokens is None):
            raise ConfigError(f"{key}: give exactly one of global_sequences or global_tokens")
        for name in ("global_sequences", "global_tokens", "per_device"):
            if getattr(self, name) is not None:
                positive(f"{key}.{name}", getattr(self, name))

    def rows_per_step(self, max_seq_length: int) -> int:
        if self.global_sequences is not None:
            return self.global_sequences
        return max(1, self.global_tokens // max_seq_length)

    def accumulation_steps(self, max_seq_length: int, num_processes: int) -> int:
        rows, per_step = self.rows_per_step(max_seq_length), self.per_device * num_processes
        if rows % per_step:
            raise ConfigError(
                f"batch: a global batch of {rows} rows is not divisible by batch.per_device ({self.per_device}) x "
                f"{num_processes} processes; choose batch.per_device so that it divides"
            )
        return rows // per_step


@dataclass
class OptimizerConfig:
    lr: float = option("Peak learning rate (a phase may override it)", 3e-4)
    betas: list[float] = option("AdamW betas", factory=lambda: [0.9, 0.98])
    eps: float = option("AdamW epsilon", 1e-6)
    weight_decay: float = option("Decoupled weight decay (never on biases and norms)", 1e-5)
    max_grad_norm: float = option("Gradient clipping norm (0 = off)", 1.0)

    def validate(self, key: str):
        positive(f"{key}.lr", self.lr)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{key}.betas={self.betas}: must be two numbers in [0, 1)")
        positive(f"{key}.eps", self.eps)
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError(f"{key}: weight_decay and max_grad_norm must be >= 0")


@dataclass
class ScheduleConfig:
    warmup: float = option("Warmup: a fraction of the phase if < 1, else tokens", 0.0)
    decay: str = option("none | linear | cosine | 1-sqrt", "none")
    decay_tokens: float | None = option("Decay over the last N tokens of the phase", None)
    decay_fraction: float | None = option(
        "Alternative: decay over this fraction of the phase (default: everything after warmup)", None
    )
    min_lr_ratio: float = option("LR at the end of the decay, as a ratio of the peak", 0.0)

    def validate(self, key: str):
        choice(f"{key}.decay", self.decay, ("none", "linear", "cosine", "1-sqrt"))
        if self.warmup < 0:
            raise ConfigError(f"{key}.warmup={self.warmup}: must be >= 0 (a fraction < 1 or a number of tokens)")
        if self.decay_tokens is not None and self.decay_fraction is not None:
            raise ConfigError(f"{key}: give decay_tokens or decay_fraction, not both")
        if self.decay_fraction is not None and not 0 < self.decay_fraction <= 1:
            raise ConfigError(f"{key}.decay_fraction={self.decay_fraction}: must be in (0, 1]")
        if self.decay_tokens is not None:
            positive(f"{key}.decay_tokens", self.decay_tokens)
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"{key}.min_lr_ratio={self.min_lr_ratio}: must be in [0, 1]")


@dataclass
class PhaseConfig:
    name: str = option("Name of the phase; also its output folder", None)
    sources: dict | list = option(
        "Sources with sampling weights {name: weight}, or a list of names for natural proportion "
        "(each source read once per epoch)",
        None,
    )
    masking: float | dict = option(
        "Masking probability: a number, or {start, end} for a linear ramp over the phase", 0.15
    )
    length: dict = option("Exactly one of {tokens: N}, {steps: N}, {epochs: N}", None)
    lr: float | None = option("Peak learning rate of this phase (default: optimizer.lr)", None)
    schedule: ScheduleConfig = option("Learning-rate schedule of this phase", factory=ScheduleConfig)
    reset_optimizer: bool = option("Start this phase with a fresh optimizer state (else carry it over)", False)

    def validate(self, key: str, source_names: set[str]):
        if not self.name:
            raise ConfigError(f"{key}.name: every phase needs a name")
        folder_name(f"{key}.name", self.name)
        if not self.sources:
            raise ConfigError(f"{key}.sources: list at least one source (declared under `sources`)")
        names = self.sources if isinstance(self.sources, list) else list(self.sources)
        for name in names:
            if name not in source_names:
                raise ConfigError(f"{key}.sources: unknown source '{name}'; declared sources: {sorted(source_names)}")
        if isinstance(self.sources, dict):
            for name, weight in self.sources.items():
                if not isinstance(weight, (int, float)) or weight <= 0:
                    raise ConfigError(f"{key}.sources.{name}={weight!r}: a sampling weight must be a number > 0")
        start, end = self.masking_range(key)
        for which, p in (("start", start), ("end", end)):
            if not isinstance(p, (int, float)) or not 0 < p < 1:
                raise ConfigError(f"{key}.masking ({which}={p!r}): a masking probability must be in (0, 1)")
        if (
            not isinstance(self.length, dict)
            or len(self.length) != 1
            or next(iter(self.length)) not in ("tokens", "steps", "epochs")
        ):
            raise ConfigError(
                f"{key}.length={self.length!r}: give exactly one of tokens, steps or epochs, e.g. {{steps: 1000}}"
            )
        amount = next(iter(self.length.values()))
        if not isinstance(amount, (int, float)) or amount <= 0:
            raise ConfigError(f"{key}.length: {amount!r} must be a number > 0")
        if "epochs" in self.length and isinstance(self.sources, dict):
            raise ConfigError(
                f"{key}.length.epochs: epochs need natural proportion (sources as a list); "
                "with sampling weights give the length in tokens or steps"
            )
        if self.lr is not None:
            positive(f"{key}.lr", self.lr)
        self.schedule.validate(f"{key}.schedule")

    def source_names(self) -> list[str]:
        return list(self.sources)

    def masking_range(self, key: str = "masking") -> tuple[float, float]:
        if isinstance(self.masking, dict):
            unknown = set(self.masking) - {"start", "end"}
            if unknown or "start" not in self.masking or "end" not in self.masking:
                raise ConfigError(f"{key}.masking: a ramp is {{start: P, end: P}}; got keys {sorted(self.masking)}")
            return self.masking["start"], self.masking["end"]
        return self.masking, self.masking


@dataclass
class HoldoutConfig:
    fraction: float = option("Share of documents (chosen by a hash of their text) kept out of training", 0.002)
    max_documents: int = option(
        "Held-out documents used to measure the loss at the start and end of each phase (the phase's slice, and "
        "each source's own)",
        200,
    )
    every_steps: int = option("Also measure each source's held-out loss every N optimizer steps (0: never)", 0)

    def validate(self, key: str):
        if not 0 < self.fraction < 0.5:
            raise ConfigError(f"{key}.fraction={self.fraction}: must be in (0, 0.5)")
        positive(f"{key}.max_documents", self.max_documents)
        if isinstance(self.every_steps, bool) or not isinstance(self.every_steps, int) or self.every_steps < 0:
            raise ConfigError(f"{key}.every_steps={self.every_steps!r}: give a whole number of steps >= 0 (0: never)")


@dataclass
class LoggingConfig:
    steps: int = option("Log every N optimizer steps", 10)
    report_to: list[str] = option("Extra trackers: tensorboard, trackio", factory=list)

    def validate(self, key: str):
        positive(f"{key}.steps", self.steps)
        for tracker in self.report_to:
            choice(f"{key}.report_to", tracker, ("tensorboard", "trackio"))
            if importlib.util.find_spec(tracker) is None:
                raise ConfigError(f"{key}.report_to: {tracker} is not installed (pip install {tracker})")


@dataclass
class CheckpointConfig:
    every_steps: int = option("Save a resumable checkpoint every N optimizer steps", 500)
    keep: int = option("Checkpoints kept per phase (older ones are deleted)", 2)

    def validate(self, key: str):
        positive(f"{key}.every_steps", self.every_steps)
        positive(f"{key}.keep", self.keep)


@dataclass
class DataConfig:
    workers: int = option("DataLoader worker processes (rows and masking stay identical for any number)", 0)
    pack_open_rows: int = option("Rows kept open by the best-fit packer (more = fuller rows)", 64)

    def validate(self, key: str):
        if self.workers < 0:
            raise ConfigError(f"{key}.workers={self.workers}: must be >= 0")
        positive(f"{key}.pack_open_rows", self.pack_open_rows)


@dataclass
class StoreConfig:
    path: str | None = option(
        "Folder of the token store that `train_mlm.py prepare` writes and training reads; null = stores/NAME", None
    )
    part_mb: int = option(
        "Input files per unit of preparation work, in MB (compressed files count 4x); parts are what processes share",
        256,
    )
    exclude_tasks: list = option(
        "Task configs (eval_configs/*.yaml, or {config: PATH, data_dir: DIR}) whose validation and test documents "
        "are left out of the store, with every document sharing an exclude_ngram-token run with them (counted as "
        "skipped): a store clean of the evaluation",
        factory=list,
    )
    exclude_ngram: int = option("Run length, in tokens, that makes a document share text with an evaluation set", 13)

    def validate(self, key: str):
        positive(f"{key}.part_mb", self.part_mb)
        positive(f"{key}.exclude_ngram", self.exclude_ngram)
        if not isinstance(self.exclude_tasks, list):
            raise ConfigError(
                f"{key}.exclude_tasks: a list of task configs, e.g. [chemprot]; got {self.exclude_tasks!r}"
            )
        for i, task in enumerate(self.exclude_tasks):
            if isinstance(task, str) and task:
                continue
            if isinstance(task, dict) and isinstance(task.get("config"), str) and set(task) <= {"config", "data_dir"}:
                continue
            raise ConfigError(
                f"{key}.exclude_tasks.{i}: a task config path, or {{config: PATH, data_dir: DIR}}; got {task!r}"
            )

    def excluded_tasks(self) -> list[tuple[str, str | None]]:
        """(config, data_dir) of each task left out of the store."""
        return [(t, None) if isinstance(t, str) else (t["config"], t.get("data_dir")) for t in self.exclude_tasks]


@dataclass
class DistributedConfig:
    timeout_minutes: float = option(
        "How long a process waits for the others at a collective before the run fails (the process group's timeout)",
        180.0,
    )

    def validate(self, key: str):
        positive(f"{key}.timeout_minutes", self.timeout_minutes)


@dataclass
class HubConfig:
    repo_id: str | None = option(
        "Hub repo (org/name) that each phase's model is pushed to when the phase ends "
        "(branch = phase name; the last phase also to main); null = no push",
        None,
    )
    private: bool = option("Create the Hub repo private", False)
    license: str | None = option(
        "License of the weights, for the model card (ModernBERT is apache-2.0; check what your data allows)", None
    )
    language: list[str] = option("Languages of the training text (model card)", factory=lambda: ["en"])
    datasets: list[str] = option(
        "Hub dataset ids of the training corpora, where they are public (model card)", factory=list
    )
    tags: list[str] = option("Extra tags for the model card", factory=list)
    push_every: int = option(
        "Also keep the model every N optimizer steps of a phase as a revision (PHASE/revisions/step-NNNNNNN, "
        "NNNNNNN counted over the whole run), pushed to the branch of that name when repo_id is set; 0: phases only",
        0,
    )

    def validate(self, key: str):
        if self.push_every < 0:  # (the type is checked when the recipe is built)
            raise ConfigError(f"{key}.push_every={self.push_every!r}: give a whole number of steps >= 0 (0: never)")
        if self.repo_id is not None and (self.repo_id.count("/") != 1 or not all(self.repo_id.split("/"))):
            raise ConfigError(f"{key}.repo_id={self.repo_id!r}: must be 'namespace/name'")
        if self.repo_id is not None and self.license is None:
            raise ConfigError(
                f"{key}.license: pushing to {self.repo_id} needs the license of the weights for the model card"
            )


@dataclass
class Recipe:
    name: str = option("Name of the run", None)
    output_dir: str = option("Where phases, checkpoints, summary and plot go", None)
    seed: int = option("Seed of initialisation, sampling and masking", 42)
    model: ModelConfig = option("Model initialisation", factory=ModelConfig)
    tokenizer: TokenizerConfig = option("Tokenizer", factory=TokenizerConfig)
    max_seq_length: int = option("Length of packed rows in tokens (<= the model's max positions)", 8192)
    batch: BatchConfig = option("Global batch", factory=BatchConfig)
    optimizer: OptimizerConfig = option("AdamW-style optimizer", factory=OptimizerConfig)
    precision: str = option("auto (bf16 on a GPU that has it, else fp32) | bf16 | fp16 | fp32", "auto")
    sources: dict = option("Named corpora: {name: path} or {name: {path, format, text_column, ...}}", factory=dict)
    phases: list = option("Ordered training phases", factory=list)
    holdout: HoldoutConfig = option("Held-out slice for the loss before/after each phase", factory=HoldoutConfig)
    logging: LoggingConfig = option("Console/tracker logging", factory=LoggingConfig)
    checkpoint: CheckpointConfig = option("Resumable checkpoints", factory=CheckpointConfig)
    data: DataConfig = option("Data pipeline", factory=DataConfig)
    store: StoreConfig = option("Token store: every source read and tokenized once", factory=StoreConfig)
    hub: HubConfig = option("Model card metadata and pushing to the Hugging Face Hub", factory=HubConfig)
    distributed: DistributedConfig = option("Several processes and machines", factory=DistributedConfig)

    def validate(self):
        if not self.name or not self.output_dir:
            raise ConfigError("recipe: `name` and `output_dir` are required")
        folder_name("name", self.name)
        self.model.validate("model")
        self.tokenizer.validate("tokenizer")
        if self.model.init_is_composer() and not (self.tokenizer.path or self.tokenizer.train_vocab_size):
            raise ConfigError(
                f"tokenizer.path: model.init {self.model.init} is a Composer checkpoint, which is not a tokenizer; "
                "give the tokenizer's Hub id or folder (ModernBERT's: answerdotai/ModernBERT-base)"
            )
        positive("max_seq_length", self.max_seq_length)
        if self.max_seq_length < 8:
            raise ConfigError(f"max_seq_length={self.max_seq_length}: must be >= 8")
        self.batch.validate("batch")
        self.optimizer.validate("optimizer")
        choice("precision", self.precision, ("auto", "bf16", "fp16", "fp32"))
        if not self.phases:
            raise ConfigError("phases: a recipe needs at least one phase")
        seen = set()
        for i, phase in enumerate(self.phases):
            phase.validate(f"phases.{i}", set(self.sources))
            if phase.name in seen:
                raise ConfigError(f"phases.{i}.name: '{phase.name}' is used twice")
            seen.add(phase.name)
        self.holdout.validate("holdout")
        self.logging.validate("logging")
        self.checkpoint.validate("checkpoint")
        self.data.validate("data")
        self.store.validate("store")
        self.hub.validate("hub")
        self.distributed.validate("distributed")
        return self

    def store_dir(self) -> Path:
        return Path(self.store.path or f"stores/{self.name}")

    def used_sources(self) -> list:
        """The sources some phase reads, in the order the recipe declares them."""
        used = {name for phase in self.phases for name in phase.source_names()}
        return [spec for name, spec in self.sources.items() if name in used]

    def to_dict(self) -> dict:
        """What recipe.json holds: every field, sources as their full specs (recipe_from_dict reads it back)."""
        data = dataclasses.asdict(self)
        data["sources"] = {name: dataclasses.asdict(spec) for name, spec in self.sources.items()}
        return data

    def check_model_limits(self, max_position_embeddings: int):
        """Checked once the model config is known."""
        if self.max_seq_length > max_position_embeddings:
            raise ConfigError(
                f"max_seq_length={self.max_seq_length}: above the model's max_position_embeddings "
                f"({max_position_embeddings}); allowed: 8..{max_position_embeddings}"
            )


# ---------------------------------------------------------------- building from YAML


# Keys earlier versions had: a recipe.json recorded with them still reads; a recipe that sets them is told why.
RETIRED_KEYS = {
    "data.tokenize_batch": "documents are tokenized once, by `train_mlm.py prepare`",
    "data.shuffle_buffer": "each epoch is a permutation of the whole corpus (the token store's row index)",
}


def recipe_from_dict(raw: dict, validate: bool = True) -> Recipe:
    """A Recipe from its YAML mapping. `validate=False` reads back a recipe.json a run recorded (it was
    validated when the run started; its sources' files need not exist where the record is read)."""
    raw = dict(raw)
    for dotted, why in RETIRED_KEYS.items():
        section, key = dotted.split(".")
        if isinstance(raw.get(section), dict) and key in raw[section]:
            if validate:
                raise ConfigError(f"{dotted}: no longer a setting ({why}); remove it")
            raw[section] = {k: v for k, v in raw[section].items() if k != key}
    sources = raw.pop("sources", None) or {}
    phases = raw.pop("phases", None) or []
    if not isinstance(sources, dict):
        raise ConfigError("sources: expected a mapping {name: path or {path, format, ...}}")
    if not isinstance(phases, list):
        raise ConfigError("phases: expected a list of phases")
    recipe = build(Recipe, raw, "")
    try:
        recipe.sources = {name: SourceSpec.from_config(name, _unnamed(name, spec)) for name, spec in sources.items()}
    except DataError as e:
        raise ConfigError(f"sources: {e}") from None
    recipe.phases = []
    for i, phase in enumerate(phases):
        phase = build(PhaseConfig, phase, f"phases.{i}")
        phase.masking = numbers(phase.masking)
        phase.length = numbers(phase.length)
        phase.sources = numbers(phase.sources)
        recipe.phases.append(phase)
    return recipe.validate() if validate else recipe


def _unnamed(name: str, spec):
    """recipe.json keeps each source's full spec, its name included; the name is the key."""
    if isinstance(spec, dict) and spec.get("name") == name:
        return {key: value for key, value in spec.items() if key != "name"}
    return spec


def load_recipe(path: str | Path | None = None, overrides: list[tuple[str, object]] | None = None) -> Recipe:
    """Read a YAML recipe (default: the demo) and apply (dotted.key, value) overrides (see parse_overrides)."""
    raw = read_yaml(
        Path(path) if path else DEFAULT_RECIPE, "recipe file", RECIPES_DIR, "shipped recipes", "recipe settings"
    )
    for key, value in overrides or []:
        parts = key.split(".")
        declared = raw.get("sources") if isinstance(raw.get("sources"), dict) else {}
        source = declared.get(parts[1]) if len(parts) == 2 and parts[0] == "sources" else None
        if isinstance(source, dict) and not isinstance(value, dict):
            key = f"{key}.path"  # `--sources.clinical /data/x.csv` points a source at new files, keeping its options
        apply_override(raw, key, value)
    return recipe_from_dict(raw)


def describe_recipe_fields() -> list[str]:
    """Lines for --help: every recipe key with its default and meaning."""
    return [
        *describe_fields(Recipe),
        "  phases.N.*: (N = index or phase name)",
        *describe_fields(PhaseConfig, "phases.N."),
    ]
