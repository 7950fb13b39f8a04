"""The tokenizer a recipe asks for: loaded (a Hub id or folder), or a byte-level BPE one with ModernBERT's
special tokens, trained on the training documents of the first phase's sources (never on held-out ones)
and cached by what it was trained on. `train_mlm.py prepare` puts it in the token store."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from modeling.common import run_files
from modeling.common.errors import ConfigError
from modeling.common.loading import load_tokenizer
from modeling.common.skips import SkipLog
from modeling.data.sources import iter_documents
from modeling.data.store import is_held_out
from modeling.pretrain.recipe import Recipe

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
    return load_tokenizer(path)


def trained_tokenizer(recipe: Recipe) -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained on the first phase's sources, cached by what it was trained on."""
    specs = [recipe.sources[name] for name in recipe.phases[0].source_names()]
    settings = {
        "sources": [repr(spec) for spec in specs],
        "vocab_size": recipe.tokenizer.train_vocab_size,
        "max_documents": recipe.tokenizer.train_max_documents,
        "max_seq_length": recipe.max_seq_length,
        "held_out_excluded": recipe.holdout.fraction,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir() / "tokenizers" / key
    if (folder / "tokenizer.json").exists():
        log.info("tokenizer: reusing %s", folder)
        return load_tokenizer(folder)
    log.info(
        "tokenizer: training a %d-token BPE vocabulary on up to %d documents of %s",
        recipe.tokenizer.train_vocab_size,
        recipe.tokenizer.train_max_documents,
        [s.name for s in specs],
    )
    skips = SkipLog()
    per_source = max(1, recipe.tokenizer.train_max_documents // len(specs))
    fraction = recipe.holdout.fraction
    training = ((text for text in iter_documents(spec, skips) if not is_held_out(text, fraction)) for spec in specs)
    texts = itertools.chain.from_iterable(itertools.islice(documents, per_source) for documents in training)
    tokenizer = train_bpe_tokenizer(texts, recipe.tokenizer.train_vocab_size, recipe.max_seq_length)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with run_files.atomic_folder(folder) as tmp:  # a killed run never leaves a half-written tokenizer in the cache
        tokenizer.save_pretrained(tmp)
    return load_tokenizer(folder)


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
