"""Shared fixtures: everything offline and tiny (a corpus written here, a tokenizer trained here,
a ModernBERT built from a small config)."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = (
    "patient denies chest pain fever cough dyspnea nausea history of diabetes hypertension admitted "
    "with pneumonia treated antibiotics discharged home stable follow up clinic in two weeks blood "
    "pressure heart rate normal labs notable for elevated creatinine glucose insulin metformin"
).split()


def synthetic_documents(n: int, seed: int = 0, min_words: int = 5, max_words: int = 120) -> list[str]:
    """Clinical-sounding documents with a learnable pattern (words follow each other in a fixed order)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        start, length = rng.randrange(len(WORDS)), rng.randint(min_words, max_words)
        docs.append(" ".join(WORDS[(start + i) % len(WORDS)] for i in range(length)) + ".")
    return docs


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from modeling.model import train_bpe_tokenizer

    return train_bpe_tokenizer(iter(synthetic_documents(300)), vocab_size=400, model_max_length=512)


def tiny_model_config(tokenizer, **overrides):
    from transformers import ModernBertConfig

    fields = dict(
        vocab_size=448,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=512,
        local_attention=16,
        global_attn_every_n_layers=3,
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    fields.update(overrides)
    return ModernBertConfig(**fields)


def write_recipe(tmp_path: Path, **changes) -> Path:
    """A two-phase tiny recipe over two written corpora; `changes` are dotted keys -> values."""
    from modeling.config import apply_override

    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    (corpus / "notes.txt").write_text("\n".join(synthetic_documents(400, seed=1)) + "\n")
    (corpus / "abstracts.jsonl").write_text(
        "\n".join('{"text": "%s"}' % d for d in synthetic_documents(300, seed=2, max_words=60)) + "\n"
    )
    raw = {
        "name": "tiny",
        "output_dir": str(tmp_path / "out"),
        "seed": 7,
        "model": {
            "config": {
                "hidden_size": 32,
                "intermediate_size": 48,
                "num_hidden_layers": 3,
                "num_attention_heads": 2,
                "max_position_embeddings": 256,
                "local_attention": 16,
            }
        },
        "tokenizer": {"train_vocab_size": 400, "train_max_documents": 500},
        "max_seq_length": 128,
        "batch": {"global_sequences": 8, "per_device": 4},
        "optimizer": {"lr": 3e-3},
        "sources": {
            "notes": {"path": str(corpus / "notes.txt"), "format": "text"},
            "abstracts": str(corpus / "abstracts.jsonl"),
        },
        "phases": [
            {
                "name": "phase1",
                "sources": {"notes": 1.0, "abstracts": 1.0},
                "masking": 0.3,
                "length": {"steps": 8},
                "schedule": {"warmup": 0.25},
            },
            {
                "name": "phase2",
                "sources": ["notes"],
                "masking": {"start": 0.3, "end": 0.15},
                "length": {"epochs": 1},
                "schedule": {"decay": "1-sqrt", "min_lr_ratio": 0.1},
            },
        ],
        "holdout": {"fraction": 0.05, "max_documents": 20},
        "logging": {"steps": 2},
        "checkpoint": {"every_steps": 3, "keep": 3},
    }
    for key, value in changes.items():
        apply_override(raw, key, value)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
