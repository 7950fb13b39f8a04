"""The model a recipe trains: continued from a checkpoint (a Hub id or folder) or a fresh ModernBERT built
from a config, with sparse prediction on (the decoder runs on masked positions only).

Only stock transformers classes are used, so everything saved here loads with AutoModel* and no
trust_remote_code.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForMaskedLM, ModernBertConfig, ModernBertForMaskedLM

from modeling.common.attention import known_attention
from modeling.common.composer import import_checkpoint, imported_model
from modeling.common.errors import ConfigError
from modeling.common.loading import load_config, load_pretrained, special_token_ids
from modeling.pretrain.recipe import Recipe


def check_model_config(recipe: Recipe) -> None:
    """Every `model.config` key is one ModernBertConfig reads (a typo would silently give the default).
    transformers has no list of what a config reads: fields are in its signature, and older names that it
    still converts (global_attn_every_n_layers -> layer_types, global_rope_theta, ...) are found by whether
    another value of them changes the config that gets built."""
    import inspect

    from transformers import PreTrainedConfig

    known = set(inspect.signature(ModernBertConfig.__init__).parameters) - {"self", "kwargs"}
    known |= set(PreTrainedConfig().to_dict())
    for key, value in (recipe.model.config or {}).items():
        if key in known or _changes_the_config(key, value):
            continue
        close = sorted(k for k in known if k.split("_")[0] == str(key).split("_")[0])[:5]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"model.config.{key}: not a setting ModernBertConfig reads{hint}")
    _check_model_values(recipe)


def _check_model_values(recipe: Recipe) -> None:
    """Types as ModernBertConfig's defaults have them (a "32" would fail deep inside the model), and heads that
    divide the hidden size: found before any store is prepared."""
    defaults = ModernBertConfig().to_dict()
    config = recipe.model.config or {}
    for key, value in config.items():
        default = defaults.get(key)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            continue
        if not ok:
            kind = {bool: "true or false", int: "whole number", float: "number", str: "string"}[type(default)]
            raise ConfigError(f"model.config.{key}={value!r}: give a {kind} (the default is {default!r})")
    if recipe.model.init is None or {"hidden_size", "num_attention_heads"} <= set(config):
        hidden = config.get("hidden_size", defaults["hidden_size"])
        heads = config.get("num_attention_heads", defaults["num_attention_heads"])
        if heads <= 0 or hidden % heads:
            raise ConfigError(
                f"model.config.num_attention_heads={heads}: must divide hidden_size ({hidden}) into whole heads"
            )


def _changes_the_config(key: str, value) -> bool:
    """Whether ModernBertConfig(key=value) and ModernBertConfig(key=other value) differ beyond the key."""
    if isinstance(value, bool):
        other = not value
    elif isinstance(value, int | float):
        other = value * 2 + 1
    elif isinstance(value, str):
        other = value + "_other"
    else:
        other = None if value is not None else 1
    try:
        built = [ModernBertConfig(**{key: v}).to_dict() for v in (value, other)]
    except Exception:  # the config class rejected a value: it reads the key
        return True
    for fields in built:
        fields.pop(key, None)
    return built[0] != built[1]


def modernbert_config(tokenizer, **fields) -> ModernBertConfig:
    """A ModernBertConfig for this tokenizer: its special token ids (whatever `fields` say: a model must predict
    with the ids its tokenizer writes) and, unless given, a vocabulary rounded up to a multiple of 64 (tensor-core
    friendly, as ModernBERT's 50,368). The recipe's builder, the benchmarks and the tests all build models so."""
    fields.setdefault("vocab_size", _round_up(len(tokenizer), 64))
    fields.update(special_token_ids(tokenizer))
    fields.pop("model_type", None)  # from an init model's config.json
    return ModernBertConfig(**fields)


def build_model(recipe: Recipe, tokenizer) -> ModernBertForMaskedLM:
    """`model.init` alone: its weights (a transformers checkpoint, or a Composer one renamed onto ModernBERT).
    `model.config` (with or without init): a fresh model."""
    spec = recipe.model
    imported = None
    if spec.init_is_composer():  # read without running anything in it (modeling.common.safe_pickle)
        imported = import_checkpoint(spec.init, spec.composer_config, tokenizer=tokenizer)
    if spec.config is None and imported is not None:
        model = imported_model(imported, spec.attn_implementation)
    elif spec.config is None:
        model = load_pretrained(
            AutoModelForMaskedLM, spec.init, spec.allow_pickle, attn_implementation=spec.attn_implementation
        )
    else:
        if imported is not None:
            base = imported.config.to_dict()
        else:
            base = load_config(spec.init).to_dict() if spec.init else {}
        try:
            config = modernbert_config(tokenizer, **{**base, **spec.config})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model.config: {e}") from None
        model = ModernBertForMaskedLM._from_config(
            config, attn_implementation=known_attention(spec.attn_implementation)
        )
    if len(tokenizer) > model.config.vocab_size:
        raise ConfigError(
            f"tokenizer: {len(tokenizer)} tokens do not fit the model's vocab_size {model.config.vocab_size}"
        )
    recipe.check_model_limits(model.config.max_position_embeddings)
    set_sparse_prediction(model, True)
    return model


def reload_phase_model(folder: Path, recipe: Recipe) -> ModernBertForMaskedLM:
    """A finished phase's model, to train the next phase from (sparse prediction back on)."""
    model = load_pretrained(AutoModelForMaskedLM, str(folder), attn_implementation=recipe.model.attn_implementation)
    set_sparse_prediction(model, True)
    return model


def set_sparse_prediction(model: ModernBertForMaskedLM, enabled: bool):
    """Sparse prediction runs the head and decoder on masked positions only (same loss, far less compute).
    ModernBertForMaskedLM copies config.sparse_prediction into an attribute when it is built, and forward
    reads that attribute: setting the config alone afterwards does nothing."""
    model.config.sparse_prediction = model.sparse_prediction = enabled


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
