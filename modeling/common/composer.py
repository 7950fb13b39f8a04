"""Checkpoints of ModernBERT's own training stack (Composer, FlexBert) as stock transformers ModernBERT models.

ModernBERT, Ettin, mmBERT and BioClinical ModernBERT were trained with Composer on ModernBERT's research code
(FlexBert). Their training checkpoints are `torch.save` pickles: `{"state": {"model": ..., "optimizers": ...,
"timestamp": ..., "integrations": ...}, "rng": [...]}`, the model under FlexBert's names. This module reads one
without running anything from it (modeling.common.safe_pickle), renames every tensor to transformers' ModernBERT
(`FLEXBERT_TO_TRANSFORMERS`), builds the ModernBertConfig from the run's `model.model_config` (from the run YAML,
or the copy Composer keeps in the checkpoint), and refuses, in one line, any name or shape that does not map.

Facts from ModernBERT's repository (its `convert_to_hf.py` and `src/bert_layers`) this relies on:
- every model key starts with `model.` (Composer's HuggingFaceModel wrapper), then FlexBertForMaskedLM's names;
- the fused Wqkv ([q | k | v] rows) and GLU Wi ([input | gate] rows) have transformers' layouts: a rename, no reshape;
- `decoder.weight` is the token embedding (tied); `decoder.bias` is its own tensor;
- `local_attn_rotary_emb_base: -1` means "the global base": written as -1 it gives NaN logits (ModernBERT#215);
- the MLM head's activation is `head_pred_act`, not `head_class_act`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from modeling.common.errors import ConfigError, DataError
from modeling.common.loading import special_token_ids

# FlexBert name (after Composer's `model.` prefix) -> transformers ModernBertForMaskedLM name. Every parameter of
# a convertible FlexBert model matches one of these; any other name is refused.
FLEXBERT_TO_TRANSFORMERS = (
    (r"bert\.embeddings\.tok_embeddings\.weight", r"model.embeddings.tok_embeddings.weight"),
    (r"bert\.embeddings\.norm\.(weight|bias)", r"model.embeddings.norm.\1"),
    (r"bert\.encoder\.layers\.(\d+)\.(attn_norm|mlp_norm)\.(weight|bias)", r"model.layers.\1.\2.\3"),
    (r"bert\.encoder\.layers\.(\d+)\.attn\.(Wqkv|Wo)\.(weight|bias)", r"model.layers.\1.attn.\2.\3"),
    (r"bert\.encoder\.layers\.(\d+)\.mlp\.(Wi|Wo)\.(weight|bias)", r"model.layers.\1.mlp.\2.\3"),
    (r"bert\.final_norm\.(weight|bias)", r"model.final_norm.\1"),
    (r"head\.(dense|norm)\.(weight|bias)", r"head.\1.\2"),
    (r"decoder\.(weight|bias)", r"decoder.\1"),
)
_PATTERNS = [(re.compile(f"^{source}$"), target) for source, target in FLEXBERT_TO_TRANSFORMERS]

# FlexBertConfig's defaults (ModernBERT's src/bert_layers/configuration_bert.py) for the keys read here; the run
# YAML lists only what it changes.
FLEXBERT_DEFAULTS = {
    "attention_layer": "base",
    "embedding_layer": "absolute_pos",
    "bert_layer": "prenorm",
    "mlp_layer": "mlp",
    "normalization": "rmsnorm",
    "norm_kwargs": {},
    "embed_norm": True,
    "final_norm": False,
    "skip_first_prenorm": False,
    "head_pred_act": "silu",
    "head_pred_bias": False,
    "head_pred_norm": True,
    "decoder_bias": True,
    "attn_qkv_bias": False,
    "attn_out_bias": False,
    "mlp_in_bias": False,
    "mlp_out_bias": False,
    "rotary_emb_base": 10000.0,
    "local_attn_rotary_emb_base": -1,
    "rotary_emb_dim": None,
    "rotary_emb_interleaved": False,
    "rotary_emb_scale_base": None,
    "sliding_window": -1,
    "global_attn_every_n_layers": -1,
    "hidden_act": "gelu",
    "attention_probs_dropout_prob": 0.0,
    "embed_dropout_prob": 0.0,
    "mlp_dropout_prob": 0.0,
    "init_std": 0.02,
    "init_cutoff_factor": 2.0,
    "tie_word_embeddings": True,
}
# What transformers' ModernBERT can express: a FlexBert setting with another value has no counterpart there.
REQUIRED = {
    "attention_layer": "rope",
    "embedding_layer": "sans_pos",
    "bert_layer": "prenorm",
    "mlp_layer": "glu",
    "normalization": "layernorm",
    "embed_norm": True,
    "final_norm": True,
    "head_pred_norm": True,
    "skip_first_prenorm": True,  # transformers' layer 0 has no attention norm
    "rotary_emb_interleaved": False,
    "rotary_emb_scale_base": None,
}
MODEL_KEY_PREFIX = "model."  # Composer's HuggingFaceModel wrapper
# The only files Composer's copy of a tokenizer may become
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "added_tokens.json",
)
# FlexBert activation names transformers spells otherwise
ACTIVATION_NAMES = {"gelu_tanh": "gelu_pytorch_tanh"}


@dataclass
class ImportedCheckpoint:
    """What an import read and what it made of it."""

    source: str
    weights: dict  # transformers name -> tensor
    config: object  # ModernBertConfig
    renamed: list[tuple[str, str]]  # (checkpoint name, transformers name), in checkpoint order
    dropped: list[str]  # checkpoint names not carried (the tied decoder weight)
    timestamp: dict = field(default_factory=dict)  # batch, sample, token ... of the source run, where recorded
    run_name: str | None = None
    left_behind: dict[str, str] = field(default_factory=dict)  # part of the checkpoint -> why it is not carried
    tokenizer_files: dict[str, str] = field(default_factory=dict)  # name -> text, as Composer keeps them
    flexbert: dict = field(default_factory=dict)  # the run's model_config the config was built from
    where: str = ""  # where that model_config came from, for errors

    def with_tokenizer(self, tokenizer, max_position_embeddings: int = 8192) -> None:
        """The config again, its special token ids the tokenizer's (the weights do not change)."""
        self.config = config_from_flexbert(self.flexbert, self.where, max_position_embeddings, tokenizer)


def transformers_name(flexbert_name: str) -> str | None:
    for pattern, target in _PATTERNS:
        if pattern.match(flexbert_name):
            return pattern.sub(target, flexbert_name)
    return None


# ------------------------------------------------------------------------------------ the run's config


def run_model_config(path: str | Path) -> dict:
    """`model.model_config` of a ModernBERT-repo training YAML (`${key}` references to top-level keys resolved)."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"--config {path}: cannot read it ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"--config {path}: not valid YAML ({' '.join(str(error).split())})") from None
    block = (raw or {}).get("model", {}) if isinstance(raw, dict) else {}
    config = block.get("model_config") if isinstance(block, dict) else None
    if not isinstance(config, dict):
        raise ConfigError(
            f"--config {path}: no model.model_config block (a ModernBERT-repo training YAML, e.g. "
            "yamls/modernbert/modernbert-base-pretrain.yaml, has one)"
        )
    return _resolve_references(config, raw, path)


def _resolve_references(value, top: dict, path: Path):
    if isinstance(value, dict):
        return {k: _resolve_references(v, top, path) for k, v in value.items()}
    if isinstance(value, str) and (match := re.fullmatch(r"\$\{(\w+)\}", value.strip())):
        if match.group(1) not in top:
            raise ConfigError(f"--config {path}: {value} refers to a top-level key the file does not have")
        return top[match.group(1)]
    return value


def config_from_flexbert(flexbert: dict, where: str, max_position_embeddings: int = 8192, tokenizer=None):
    """The ModernBertConfig a FlexBert `model_config` describes; a setting transformers cannot express is refused."""
    from transformers import ModernBertConfig
    from transformers.activations import ACT2FN

    fb = {**FLEXBERT_DEFAULTS, **flexbert}
    for key, needed in REQUIRED.items():
        if _normalized(fb[key]) != needed:
            raise ConfigError(
                f"{where}: model_config.{key}={fb[key]!r} has no counterpart in transformers' ModernBERT "
                f"(it needs {needed!r}); this checkpoint cannot become a stock ModernBERT model"
            )
    for a, b in (("attn_qkv_bias", "attn_out_bias"), ("mlp_in_bias", "mlp_out_bias")):
        if bool(fb[a]) != bool(fb[b]):
            raise ConfigError(
                f"{where}: model_config.{a} and {b} differ; transformers' ModernBERT has one flag for both"
            )
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads") if k not in fb]
    if missing:
        raise ConfigError(f"{where}: model_config lacks {', '.join(missing)}")
    head_dim = fb["hidden_size"] // fb["num_attention_heads"]
    for key in ("rotary_emb_dim", "local_attn_rotary_emb_dim"):
        if fb.get(key) not in (None, head_dim):
            raise ConfigError(f"{where}: model_config.{key}={fb[key]}: transformers rotates whole heads ({head_dim})")
    window, every = fb["sliding_window"], fb["global_attn_every_n_layers"]
    if window and window > 0 and every <= 0:
        raise ConfigError(
            f"{where}: model_config.sliding_window={window} with global_attn_every_n_layers={every}: every FlexBert "
            "layer is local, which transformers' ModernBERT (layer 0 always global) cannot express"
        )
    activations = {}
    for key in ("hidden_act", "head_pred_act"):
        activations[key] = ACTIVATION_NAMES.get(fb[key], fb[key])
        if activations[key] not in ACT2FN:
            raise ConfigError(f"{where}: model_config.{key}={fb[key]!r} is not an activation transformers knows")
    norm = fb["norm_kwargs"] or {}
    local_theta = fb["local_attn_rotary_emb_base"]
    if local_theta in (None, -1):  # FlexBert's "same as the global base" (written as -1 it gives NaN logits)
        local_theta = fb["rotary_emb_base"]
    fields = dict(
        vocab_size=fb["vocab_size"],
        hidden_size=fb["hidden_size"],
        intermediate_size=fb.get("intermediate_size", 3072),
        num_hidden_layers=fb["num_hidden_layers"],
        num_attention_heads=fb["num_attention_heads"],
        hidden_activation=activations["hidden_act"],
        classifier_activation=activations["head_pred_act"],  # the MLM head's: FlexBert's head_pred_act
        classifier_bias=bool(fb["head_pred_bias"]),
        decoder_bias=bool(fb["decoder_bias"]),
        attention_bias=bool(fb["attn_qkv_bias"]),
        mlp_bias=bool(fb["mlp_in_bias"]),
        norm_eps=float(norm.get("eps", 1e-5)),
        norm_bias=bool(norm.get("bias", True)),
        # every layer global when FlexBert had no window
        local_attention=window if window and window > 0 else max_position_embeddings,
        global_attn_every_n_layers=max(1, every),
        global_rope_theta=float(fb["rotary_emb_base"]),
        local_rope_theta=float(local_theta),
        attention_dropout=fb["attention_probs_dropout_prob"],
        embedding_dropout=fb["embed_dropout_prob"],
        mlp_dropout=fb["mlp_dropout_prob"],
        initializer_range=fb["init_std"],
        initializer_cutoff_factor=fb["init_cutoff_factor"],
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=bool(fb["tie_word_embeddings"]),
    )
    if tokenizer is not None:
        return ModernBertConfig(**fields, **special_token_ids(tokenizer))
    config = ModernBertConfig(**fields)
    for key in ("pad_token_id", "cls_token_id", "sep_token_id", "bos_token_id", "eos_token_id"):
        if getattr(config, key) is not None and getattr(config, key) >= config.vocab_size:
            setattr(config, key, None)  # ModernBERT's default ids, outside a smaller vocabulary, and no tokenizer
    return config


def _normalized(value):
    return value.lower() if isinstance(value, str) else value


# ------------------------------------------------------------------------------------ the checkpoint


def import_checkpoint(
    path: str | Path, run_config: str | Path | None = None, max_position_embeddings: int = 8192, tokenizer=None
) -> ImportedCheckpoint:
    """Read a Composer checkpoint of a FlexBert MLM and map it onto transformers' ModernBERT, checked in full."""
    from modeling.common.safe_pickle import load_checkpoint

    path = Path(path)
    if path.is_dir():
        raise DataError(
            f"{path}: a folder (a sharded checkpoint?); give one monolithic Composer .pt file (ModernBERT's are "
            "written by rank 0; consolidate a sharded one with Composer first)"
        )
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    checkpoint = load_checkpoint(path)
    state = checkpoint.get("state") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        keys = ", ".join(map(str, checkpoint)) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise DataError(f"{path}: not a Composer checkpoint: no state.model (found: {keys})")
    embedded = _embedded_config(state)
    if run_config is not None:
        flexbert, where = run_model_config(run_config), f"--config {run_config}"
    elif embedded is not None:
        flexbert, where = embedded, f"{path} (its own copy of the run's model_config)"
    else:
        raise ConfigError(f"{path}: holds no copy of the run's model config; give the run YAML with --config")
    config = config_from_flexbert(flexbert, where, max_position_embeddings, tokenizer)
    weights, renamed, dropped = map_weights(state["model"], config, path)
    return ImportedCheckpoint(
        source=str(path),
        weights=weights,
        config=config,
        renamed=renamed,
        dropped=dropped,
        timestamp=_timestamp(state.get("timestamp")),
        run_name=state.get("run_name") if isinstance(state.get("run_name"), str) else None,
        left_behind=_left_behind(state, checkpoint),
        tokenizer_files=_embedded_tokenizer(state, path),
        flexbert=flexbert,
        where=where,
    )


def map_weights(model_state: dict, config, path) -> tuple[dict, list, list]:
    """Checkpoint tensors under transformers' names, every name and shape checked against the model the config
    builds; returns (weights, renamed, dropped)."""
    import torch
    from transformers import ModernBertForMaskedLM

    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in ModernBertForMaskedLM(config).state_dict().items()}
    weights, renamed, dropped, unmapped = {}, [], [], []
    for name, tensor in model_state.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        plain = name[len(MODEL_KEY_PREFIX) :] if name.startswith(MODEL_KEY_PREFIX) else name
        target = transformers_name(plain)
        if target is None or target not in expected:
            unmapped.append(name)
            continue
        renamed.append((name, target))
        weights[target] = tensor
    if unmapped:
        raise DataError(
            f"{path}: {len(unmapped)} tensors have no place in transformers' ModernBERT of this config: "
            f"{_first(unmapped)}"
        )
    tied = "decoder.weight"
    if config.tie_word_embeddings and tied in weights:
        embeddings = weights["model.embeddings.tok_embeddings.weight"]
        if weights[tied].shape != embeddings.shape or not torch.equal(weights[tied], embeddings):
            raise DataError(
                f"{path}: decoder.weight differs from the token embeddings, but the config ties them "
                "(set tie_word_embeddings: false in the run's model_config)"
            )
        del weights[tied]
        dropped.append(next(source for source, target in renamed if target == tied))
    need = {name for name in expected if not (config.tie_word_embeddings and name == tied)}
    missing = sorted(need - set(weights))
    if missing:
        raise DataError(f"{path}: missing {len(missing)} tensors of the model its config describes: {_first(missing)}")
    misshapen = [
        f"{n} {tuple(weights[n].shape)} (expected {expected[n]})"
        for n in weights
        if tuple(weights[n].shape) != expected[n]
    ]
    if misshapen:
        raise DataError(f"{path}: {len(misshapen)} tensors have the wrong shape for the config: {_first(misshapen)}")
    return {n: t.detach().to(torch.float32).contiguous() for n, t in weights.items()}, renamed, dropped


def imported_model(imported: ImportedCheckpoint, attn_implementation: str = "sdpa"):
    """A ModernBertForMaskedLM holding the imported weights (strict: every tensor placed)."""
    from transformers import ModernBertForMaskedLM

    from modeling.common.attention import known_attention

    model = ModernBertForMaskedLM._from_config(
        imported.config, attn_implementation=known_attention(attn_implementation)
    )
    result = model.load_state_dict(imported.weights, strict=False)
    tied = {"decoder.weight"} if imported.config.tie_word_embeddings else set()
    if set(result.missing_keys) - tied or result.unexpected_keys:
        raise DataError(
            f"{imported.source}: the model did not take every tensor (missing {_first(result.missing_keys)}, "
            f"unexpected {_first(result.unexpected_keys)})"
        )
    model.tie_weights()
    return model.eval()


def _embedded_config(state: dict) -> dict | None:
    try:
        content = state["integrations"]["huggingface"]["model"]["config"]["content"]
    except (KeyError, TypeError):
        return None
    return content if isinstance(content, dict) else None


def _embedded_tokenizer(state: dict, path) -> dict[str, str]:
    """The tokenizer files Composer keeps, by file name; a name that is not a tokenizer file's is refused (it
    becomes a path on this machine)."""
    try:
        files = state["integrations"]["huggingface"]["tokenizer"]
    except (KeyError, TypeError):
        return {}
    found = {}
    for name, entry in (files or {}).items() if isinstance(files, dict) else ():
        if not isinstance(entry, dict) or "content" not in entry:
            continue
        extension = entry.get("file_extension", "")
        file_name = f"{name}{extension}" if isinstance(name, str) and isinstance(extension, str) else None
        if file_name not in TOKENIZER_FILES:
            raise DataError(
                f"{path}: integrations.huggingface.tokenizer holds {file_name or name!r}, not a tokenizer file "
                f"({', '.join(TOKENIZER_FILES)}); refused"
            )
        content = entry["content"]
        found[file_name] = content if isinstance(content, str) else json.dumps(content, indent=2)
    return found


def _timestamp(value) -> dict:
    """Composer keeps `{"Timestamp": {"batch": ..., "token": ...}}` (older releases: a pickled Timestamp)."""
    inner = value.get("Timestamp", value) if isinstance(value, dict) else getattr(value, "state", None)
    if not isinstance(inner, dict):
        return {}
    return {k: int(v) for k, v in inner.items() if k in ("epoch", "batch", "sample", "token") and _is_int(v)}


def _is_int(value) -> bool:
    try:
        int(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def _left_behind(state: dict, checkpoint: dict) -> dict[str, str]:
    why = {
        "optimizers": "the optimizer's moments: the recipe's optimizer starts fresh with its own warm-up "
        "(ModernBERT's StableAdamW clips its updates, so its moments would not continue in AdamW as they were)",
        "schedulers": "the learning-rate schedule: the recipe's own applies",
        "rng": "random states: the recipe's seed applies",
        "dataset_state": "the data loader's position: the recipe's store and row index apply",
    }
    present = {**state, "rng": checkpoint.get("rng")}
    return {key: text for key, text in why.items() if _holds_something(present.get(key))}


def _holds_something(value) -> bool:
    if isinstance(value, dict):
        return any(_holds_something(v) for v in value.values())
    return value is not None and not (isinstance(value, list | tuple | str) and not value)


def _first(names: list[str], shown: int = 5) -> str:
    more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more if names else "none"
