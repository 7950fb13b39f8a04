"""Typed pretraining recipes: YAML -> dataclasses, command-line overrides, validation.

A recipe is plain YAML. Every field can be overridden from the command line with its
dotted path (`--optimizer.lr 1e-4`, `--phases.phase2.masking 0.2`, `--phases.0.length.steps 10`).
Problems stop with one line naming the key and what is allowed (ConfigError).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from modeling.sources import DataError, SourceSpec

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
DEFAULT_RECIPE = RECIPES_DIR / "demo.yaml"


class ConfigError(ValueError):
    """A recipe problem, phrased as one line that names the key."""


def _help(text: str, default=dataclasses.MISSING, factory=dataclasses.MISSING):
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class ModelConfig:
    init: str | None = _help(
        "Hub id or local folder of the checkpoint to continue from; null = a fresh model from `config`", None
    )
    config: dict | None = _help(
        "ModernBertConfig fields: a fresh model (on top of init's config when both are given)", None
    )
    attn_implementation: str = _help(
        "document_sdpa (per-document attention, fastest on CPUs) | sdpa | eager; "
        "flash_attention_2 | flex_attention (GPU)",
        "sdpa",
    )
    compile: bool = _help("torch.compile the model", False)
    allow_pickle: bool = _help(
        "Also load pickle weights (pytorch_model.bin), which can run code; only for checkpoints you trust", False
    )

    def validate(self, key: str):
        _choice(f"{key}.attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        if self.init is None and self.config is None:
            raise ConfigError(f"{key}: give `init` (a Hub id or folder) or `config` (a fresh model), or both")


ATTN_IMPLEMENTATIONS = (
    "sdpa",
    "eager",
    "flash_attention_2",
    "flex_attention",
    "document_sdpa",
)  # the last: modeling.attention


@dataclass
class TokenizerConfig:
    path: str | None = _help("Hub id or local folder of the tokenizer; null = model.init", None)
    train_vocab_size: int | None = _help(
        "Train a byte-level BPE tokenizer of this size on the first phase's sources (cached) instead of loading one",
        None,
    )
    train_max_documents: int = _help("Documents read to train the tokenizer", 50_000)

    def validate(self, key: str):
        if self.train_vocab_size is not None and self.train_vocab_size < 300:
            raise ConfigError(
                f"{key}.train_vocab_size={self.train_vocab_size}: must be >= 300 (256 bytes + special tokens + merges)"
            )
        _positive(f"{key}.train_max_documents", self.train_max_documents)


@dataclass
class BatchConfig:
    global_sequences: int | None = _help("Sequences (packed rows) per optimizer step, over all processes", None)
    global_tokens: int | None = _help(
        "Alternative to global_sequences: tokens per optimizer step (rows = tokens // max_seq_length)", None
    )
    per_device: int = _help(
        "Rows per device per forward pass; gradient accumulation = global / (per_device x processes)", 8
    )

    def validate(self, key: str):
        if (self.global_sequences is None) == (self.global_tokens is None):
            raise ConfigError(f"{key}: give exactly one of global_sequences or global_tokens")
        for name in ("global_sequences", "global_tokens", "per_device"):
            if getattr(self, name) is not None:
                _positive(f"{key}.{name}", getattr(self, name))

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
    lr: float = _help("Peak learning rate (a phase may override it)", 3e-4)
    betas: list[float] = _help("AdamW betas", factory=lambda: [0.9, 0.98])
    eps: float = _help("AdamW epsilon", 1e-6)
    weight_decay: float = _help("Decoupled weight decay (never on biases and norms)", 1e-5)
    max_grad_norm: float = _help("Gradient clipping norm (0 = off)", 1.0)

    def validate(self, key: str):
        _positive(f"{key}.lr", self.lr)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{key}.betas={self.betas}: must be two numbers in [0, 1)")
        _positive(f"{key}.eps", self.eps)
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError(f"{key}: weight_decay and max_grad_norm must be >= 0")


@dataclass
class ScheduleConfig:
    warmup: float = _help("Warmup: a fraction of the phase if < 1, else tokens", 0.0)
    decay: str = _help("none | linear | cosine | 1-sqrt", "none")
    decay_tokens: float | None = _help("Decay over the last N tokens of the phase", None)
    decay_fraction: float | None = _help(
        "Alternative: decay over this fraction of the phase (default: everything after warmup)", None
    )
    min_lr_ratio: float = _help("LR at the end of the decay, as a ratio of the peak", 0.0)

    def validate(self, key: str):
        _choice(f"{key}.decay", self.decay, ("none", "linear", "cosine", "1-sqrt"))
        if self.warmup < 0:
            raise ConfigError(f"{key}.warmup={self.warmup}: must be >= 0 (a fraction < 1 or a number of tokens)")
        if self.decay_tokens is not None and self.decay_fraction is not None:
            raise ConfigError(f"{key}: give decay_tokens or decay_fraction, not both")
        if self.decay_fraction is not None and not 0 < self.decay_fraction <= 1:
            raise ConfigError(f"{key}.decay_fraction={self.decay_fraction}: must be in (0, 1]")
        if self.decay_tokens is not None:
            _positive(f"{key}.decay_tokens", self.decay_tokens)
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"{key}.min_lr_ratio={self.min_lr_ratio}: must be in [0, 1]")


@dataclass
class PhaseConfig:
    name: str = _help("Name of the phase; also its output folder", None)
    sources: dict | list = _help(
        "Sources with sampling weights {name: weight}, or a list of names for natural proportion (each source read once per epoch)",
        None,
    )
    masking: float | dict = _help(
        "Masking probability: a number, or {start, end} for a linear ramp over the phase", 0.15
    )
    length: dict = _help("Exactly one of {tokens: N}, {steps: N}, {epochs: N}", None)
    lr: float | None = _help("Peak learning rate of this phase (default: optimizer.lr)", None)
    schedule: ScheduleConfig = _help("Learning-rate schedule of this phase", factory=ScheduleConfig)
    reset_optimizer: bool = _help("Start this phase with a fresh optimizer state (else carry it over)", False)

    def validate(self, key: str, source_names: set[str]):
        if not self.name:
            raise ConfigError(f"{key}.name: every phase needs a name")
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
            _positive(f"{key}.lr", self.lr)
        self.schedule.validate(f"{key}.schedule")

    def masking_range(self, key: str = "masking") -> tuple[float, float]:
        if isinstance(self.masking, dict):
            unknown = set(self.masking) - {"start", "end"}
            if unknown or "start" not in self.masking or "end" not in self.masking:
                raise ConfigError(f"{key}.masking: a ramp is {{start: P, end: P}}; got keys {sorted(self.masking)}")
            return self.masking["start"], self.masking["end"]
        return self.masking, self.masking


@dataclass
class HoldoutConfig:
    fraction: float = _help("Share of documents (chosen by a hash of their text) kept out of training", 0.002)
    max_documents: int = _help("Held-out documents used to measure the loss at the start and end of each phase", 200)

    def validate(self, key: str):
        if not 0 < self.fraction < 0.5:
            raise ConfigError(f"{key}.fraction={self.fraction}: must be in (0, 0.5)")
        _positive(f"{key}.max_documents", self.max_documents)


@dataclass
class LoggingConfig:
    steps: int = _help("Log every N optimizer steps", 10)
    report_to: list[str] = _help("Extra trackers: tensorboard, trackio", factory=list)

    def validate(self, key: str):
        _positive(f"{key}.steps", self.steps)
        for tracker in self.report_to:
            _choice(f"{key}.report_to", tracker, ("tensorboard", "trackio"))
            if importlib.util.find_spec(tracker) is None:
                raise ConfigError(f"{key}.report_to: {tracker} is not installed (pip install {tracker})")


@dataclass
class CheckpointConfig:
    every_steps: int = _help("Save a resumable checkpoint every N optimizer steps", 500)
    keep: int = _help("Checkpoints kept per phase (older ones are deleted)", 2)

    def validate(self, key: str):
        _positive(f"{key}.every_steps", self.every_steps)
        _positive(f"{key}.keep", self.keep)


@dataclass
class DataConfig:
    workers: int = _help("DataLoader worker processes (masking stays identical for any number)", 0)
    pack_open_rows: int = _help("Rows kept open by the best-fit packer (more = fuller rows, more memory)", 64)
    tokenize_batch: int = _help("Documents tokenized per call to the fast tokenizer", 256)
    shuffle_buffer: int = _help("Documents in the seeded shuffle buffer (1 = read in file order)", 10_000)

    def validate(self, key: str):
        if self.workers < 0:
            raise ConfigError(f"{key}.workers={self.workers}: must be >= 0")
        _positive(f"{key}.pack_open_rows", self.pack_open_rows)
        _positive(f"{key}.tokenize_batch", self.tokenize_batch)
        _positive(f"{key}.shuffle_buffer", self.shuffle_buffer)


@dataclass
class HubConfig:
    repo_id: str | None = _help(
        "Hub repo (org/name) that each phase's model is pushed to when the phase ends "
        "(branch = phase name; the last phase also to main); null = no push",
        None,
    )
    private: bool = _help("Create the Hub repo private", False)
    license: str | None = _help(
        "License of the weights, for the model card (ModernBERT is apache-2.0; check what your data allows)", None
    )
    language: list[str] = _help("Languages of the training text (model card)", factory=lambda: ["en"])
    datasets: list[str] = _help(
        "Hub dataset ids of the training corpora, where they are public (model card)", factory=list
    )
    tags: list[str] = _help("Extra tags for the model card", factory=list)

    def validate(self, key: str):
        if self.repo_id is not None and (self.repo_id.count("/") != 1 or not all(self.repo_id.split("/"))):
            raise ConfigError(f"{key}.repo_id={self.repo_id!r}: must be 'namespace/name'")
        if self.repo_id is not None and self.license is None:
            raise ConfigError(
                f"{key}.license: pushing to {self.repo_id} needs the license of the weights for the model card"
            )


@dataclass
class Recipe:
    name: str = _help("Name of the run", None)
    output_dir: str = _help("Where phases, checkpoints, summary and plot go", None)
    seed: int = _help("Seed of initialisation, sampling and masking", 42)
    model: ModelConfig = _help("Model initialisation", factory=ModelConfig)
    tokenizer: TokenizerConfig = _help("Tokenizer", factory=TokenizerConfig)
    max_seq_length: int = _help("Length of packed rows in tokens (<= the model's max positions)", 8192)
    batch: BatchConfig = _help("Global batch", factory=BatchConfig)
    optimizer: OptimizerConfig = _help("AdamW-style optimizer", factory=OptimizerConfig)
    precision: str = _help("auto (bf16 on a GPU that has it, else fp32) | bf16 | fp16 | fp32", "auto")
    sources: dict = _help("Named corpora: {name: path} or {name: {path, format, text_column, ...}}", factory=dict)
    phases: list = _help("Ordered training phases", factory=list)
    holdout: HoldoutConfig = _help("Held-out slice for the loss before/after each phase", factory=HoldoutConfig)
    logging: LoggingConfig = _help("Console/tracker logging", factory=LoggingConfig)
    checkpoint: CheckpointConfig = _help("Resumable checkpoints", factory=CheckpointConfig)
    data: DataConfig = _help("Data pipeline", factory=DataConfig)
    hub: HubConfig = _help("Model card metadata and pushing to the Hugging Face Hub", factory=HubConfig)

    def validate(self):
        if not self.name or not self.output_dir:
            raise ConfigError("recipe: `name` and `output_dir` are required")
        self.model.validate("model")
        self.tokenizer.validate("tokenizer")
        _positive("max_seq_length", self.max_seq_length)
        if self.max_seq_length < 8:
            raise ConfigError(f"max_seq_length={self.max_seq_length}: must be >= 8")
        self.batch.validate("batch")
        self.optimizer.validate("optimizer")
        _choice("precision", self.precision, ("auto", "bf16", "fp16", "fp32"))
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
        self.hub.validate("hub")
        return self

    def check_model_limits(self, max_position_embeddings: int):
        """Checked once the model config is known."""
        if self.max_seq_length > max_position_embeddings:
            raise ConfigError(
                f"max_seq_length={self.max_seq_length}: above the model's max_position_embeddings "
                f"({max_position_embeddings}); allowed: 8..{max_position_embeddings}"
            )


# ---------------------------------------------------------------- building from YAML


def _positive(key, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or math.isinf(value):
        raise ConfigError(f"{key}={value!r}: must be a number > 0")


def _choice(key, value, allowed):
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: allowed values are {', '.join(map(str, allowed))}")


def _build(cls, data, key: str):
    """Dataclass `cls` from a mapping; unknown keys and wrong types stop with the key's path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{key or 'recipe'}: expected a mapping of fields, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{key}.{unknown[0]}" if key else unknown[0]
        raise ConfigError(f"unknown key '{where}'; allowed keys{' under ' + key if key else ''}: {', '.join(fields)}")
    values = {}
    for name, value in data.items():
        sub = f"{key}.{name}" if key else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value, sub)
        elif value is not None:
            value = _coerce(hint, value, sub)
        values[name] = value
    return cls(**values)


def _coerce(hint, value, key):
    """Accept what YAML gives for simple scalar types (YAML reads 3e-4 as a string)."""
    if hint is float or hint == (float | None):
        try:
            return float(value) if not isinstance(value, bool) else _type_error(key, value, "a number")
        except (TypeError, ValueError):
            _type_error(key, value, "a number")
    if hint is int or hint == (int | None):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value))
            except ValueError:
                pass
        if not isinstance(value, int) or isinstance(value, bool):
            _type_error(key, value, "an integer")
    if hint is bool and not isinstance(value, bool):
        _type_error(key, value, "true or false")
    if hint is str or hint == (str | None):
        if not isinstance(value, str):
            _type_error(key, value, "a string")
    return value


def _type_error(key, value, expected):
    raise ConfigError(f"{key}={value!r}: must be {expected}")


def _numbers(obj):
    """YAML 1.1 reads `3e-4` as a string; turn such strings back into numbers inside free-form values."""
    if isinstance(obj, dict):
        return {k: _numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_numbers(v) for v in obj]
    if isinstance(obj, str):
        try:
            return float(obj) if any(c in obj.lower() for c in ".e") else int(obj)
        except ValueError:
            return obj
    return obj


def recipe_from_dict(raw: dict) -> Recipe:
    raw = dict(raw)
    sources = raw.pop("sources", None) or {}
    phases = raw.pop("phases", None) or []
    if not isinstance(sources, dict):
        raise ConfigError("sources: expected a mapping {name: path or {path, format, ...}}")
    if not isinstance(phases, list):
        raise ConfigError("phases: expected a list of phases")
    recipe = _build(Recipe, raw, "")
    try:
        recipe.sources = {name: SourceSpec.from_config(name, spec) for name, spec in sources.items()}
    except DataError as e:
        raise ConfigError(f"sources: {e}") from None
    recipe.phases = []
    for i, phase in enumerate(phases):
        phase = _build(PhaseConfig, phase, f"phases.{i}")
        phase.masking = _numbers(phase.masking)
        phase.length = _numbers(phase.length)
        phase.sources = _numbers(phase.sources)
        recipe.phases.append(phase)
    return recipe.validate()


def load_recipe(path: str | Path | None = None, overrides: list[tuple[str, object]] | None = None) -> Recipe:
    """Read a YAML recipe (default: the demo) and apply (dotted.key, value) overrides (see parse_overrides)."""
    path = Path(path) if path else DEFAULT_RECIPE
    if not path.exists() and (RECIPES_DIR / f"{path}.yaml").exists():
        path = RECIPES_DIR / f"{path}.yaml"  # `train_mlm.py demo` means recipes/demo.yaml
    if not path.is_file():
        raise ConfigError(
            f"{path}: recipe file not found (shipped recipes: {', '.join(p.stem for p in sorted(RECIPES_DIR.glob('*.yaml')))})"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    for key, value in overrides or []:
        apply_override(raw, key, value)
    return recipe_from_dict(raw)


def parse_overrides(args: list[str]) -> list[tuple[str, object]]:
    """['--a.b', '1', '--c=x'] -> [('a.b', 1), ('c', 'x')]; values are read as YAML."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument '{arg}': overrides look like --key.path value")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"{arg}: missing value")
            key, value = arg[2:], args[i + 1]
            i += 2
        pairs.append((key, yaml.safe_load(value) if value != "" else None))
    return pairs


def apply_override(raw: dict, dotted: str, value):
    node, parts = raw, dotted.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            index = _list_index(node, part, where)
            if last:
                node[index] = value
                return
            node = node[index]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--{dotted}: '{'.'.join(parts[:depth])}' is not a mapping or list")
        if last:
            # `--sources.clinical /data/x.csv` points an existing source at new files, keeping its format options
            if (
                parts[0] == "sources"
                and depth == 1
                and isinstance(node.get(part), dict)
                and not isinstance(value, dict)
            ):
                node[part]["path"] = value
            else:
                node[part] = value
            return
        if node.get(part) is None:
            node[part] = {}
        node = node[part]


def _list_index(items: list, part: str, where: str) -> int:
    if part.lstrip("-").isdigit():
        index = int(part)
        if not -len(items) <= index < len(items):
            raise ConfigError(f"--{where}: index out of range (there are {len(items)})")
        return index
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return index
    names = [item.get("name") for item in items if isinstance(item, dict)]
    raise ConfigError(f"--{where}: no entry named '{part}'; names: {names}")


def describe_fields(cls=Recipe, prefix: str = "") -> list[str]:
    """Lines for --help: every recipe key with its default and meaning."""
    lines = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            lines.append(f"  {key}.*: {f.metadata.get('help', '')}")
            lines += describe_fields(hint, key + ".")
            continue
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        lines.append(f"  --{key:<34} {f.metadata.get('help', '')} [default: {default}]")
    if cls is Recipe:
        lines.append("  phases.N.*: (N = index or phase name)")
        lines += describe_fields(PhaseConfig, "phases.N.")
    return lines
