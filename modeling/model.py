"""Model and tokenizer: continue from a checkpoint (Hub id or folder) or start a fresh ModernBERT
from a config; load a tokenizer, or train a byte-level BPE one with ModernBERT's special tokens.

Only stock transformers classes are used, so everything saved here loads with AutoModel* and no
trust_remote_code.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoTokenizer,
    ModernBertConfig,
    ModernBertForMaskedLM,
    PreTrainedTokenizerFast,
)

from modeling.config import ConfigError, Recipe
from modeling.sources import SkipLog, iter_documents

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "mask_token": "[MASK]",
}


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "bioclinical-modernbert"


def build_tokenizer(recipe: Recipe) -> PreTrainedTokenizerFast:
    if recipe.tokenizer.train_vocab_size:
        return trained_tokenizer(recipe)
    path = recipe.tokenizer.path or recipe.model.init
    if path is None:
        raise ConfigError(
            "tokenizer.path: a fresh model needs a tokenizer: give tokenizer.path or tokenizer.train_vocab_size"
        )
    return AutoTokenizer.from_pretrained(path)


def trained_tokenizer(recipe: Recipe) -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained on the first phase's sources, cached by what it was trained on."""
    specs = [recipe.sources[name] for name in recipe.phases[0].sources]
    settings = {
        "sources": [repr(spec) for spec in specs],
        "vocab_size": recipe.tokenizer.train_vocab_size,
        "max_documents": recipe.tokenizer.train_max_documents,
        "max_seq_length": recipe.max_seq_length,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir() / "tokenizers" / key
    if (folder / "tokenizer.json").exists():
        log.info("tokenizer: reusing %s", folder)
        return AutoTokenizer.from_pretrained(folder)
    log.info(
        "tokenizer: training a %d-token BPE vocabulary on up to %d documents of %s",
        recipe.tokenizer.train_vocab_size,
        recipe.tokenizer.train_max_documents,
        [s.name for s in specs],
    )
    skips = SkipLog()
    per_source = max(1, recipe.tokenizer.train_max_documents // len(specs))
    texts = itertools.chain.from_iterable(itertools.islice(iter_documents(spec, skips), per_source) for spec in specs)
    tokenizer = train_bpe_tokenizer(texts, recipe.tokenizer.train_vocab_size, recipe.max_seq_length)
    tmp = folder.with_name(folder.name + ".tmp")
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)  # atomic: a killed run never leaves a half-written tokenizer in the cache
    return AutoTokenizer.from_pretrained(folder)


def train_bpe_tokenizer(texts, vocab_size: int, model_max_length: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (as ModernBERT's OLMo-style tokenizer) with [CLS] x [SEP] templates."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = list(SPECIAL_TOKENS.values())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    # [MASK] swallows the space before it, so "the [MASK] ." works in fill-mask (as in ModernBERT).
    tokenizer.add_special_tokens([AddedToken("[MASK]", lstrip=True, special=True)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=model_max_length,
        model_input_names=["input_ids", "attention_mask"],
        **SPECIAL_TOKENS,
    )


def load_pretrained(
    auto_class, path: str, allow_pickle: bool = False, flag: str = "--model.allow_pickle true", **kwargs
):
    """`auto_class.from_pretrained` from safetensors only, unless `allow_pickle`: pickle weights
    (pytorch_model.bin, *.pt) can run arbitrary code while they are unpickled."""
    if not allow_pickle and Path(path).is_dir() and not any(Path(path).glob("*.safetensors")):
        pickles = sorted(p.name for pattern in ("*.bin", "*.pt", "*.pth", "*.ckpt") for p in Path(path).glob(pattern))
        if pickles:
            raise ConfigError(
                f"{path}: holds only pickle weights ({', '.join(pickles)}), which can run code when loaded; "
                f"convert them to safetensors, or pass {flag} if you trust their source"
            )
    try:
        return auto_class.from_pretrained(path, use_safetensors=None if allow_pickle else True, **kwargs)
    except OSError as error:
        if not allow_pickle and "safetensors" in str(error):
            raise ConfigError(
                f"{path}: no safetensors weights ({error}); pickle weights are loaded only with {flag}"
            ) from None
        raise


def build_model(recipe: Recipe, tokenizer) -> ModernBertForMaskedLM:
    """`model.init` alone: its weights. `model.config` (with or without init): a fresh model."""
    spec = recipe.model
    if spec.config is None:
        model = load_pretrained(
            AutoModelForMaskedLM, spec.init, spec.allow_pickle, attn_implementation=spec.attn_implementation
        )
    else:
        base = AutoConfig.from_pretrained(spec.init).to_dict() if spec.init else {}
        fields = {**base, **spec.config}
        fields.setdefault("vocab_size", _round_up(len(tokenizer), 64))
        fields.update(
            pad_token_id=tokenizer.pad_token_id,
            cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
        )
        fields.pop("model_type", None)
        try:
            config = ModernBertConfig(**fields)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model.config: {e}") from None
        model = ModernBertForMaskedLM._from_config(config, attn_implementation=spec.attn_implementation)
    if len(tokenizer) > model.config.vocab_size:
        raise ConfigError(
            f"tokenizer: {len(tokenizer)} tokens do not fit the model's vocab_size {model.config.vocab_size}"
        )
    recipe.check_model_limits(model.config.max_position_embeddings)
    set_sparse_prediction(model, True)
    return model


def set_sparse_prediction(model: ModernBertForMaskedLM, enabled: bool):
    """Sparse prediction runs the head and decoder on masked positions only (same loss, far less compute).
    ModernBertForMaskedLM copies config.sparse_prediction into an attribute when it is built, and forward
    reads that attribute: setting the config alone afterwards does nothing."""
    model.config.sparse_prediction = model.sparse_prediction = enabled


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
