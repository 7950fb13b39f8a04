"""What the tests share: corpora, recipes and tasks written here, tiny models built from configs, and the
way a script is run in a subprocess. Everything offline and small."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import yaml
from safetensors.torch import load_file

from modeling.common.config import apply_override
from modeling.finetune.config import task_from_dict

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- corpora and models

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


def tiny_model_config(tokenizer, **overrides):
    from modeling.pretrain.model import modernbert_config

    fields = dict(
        vocab_size=448,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=512,
        local_attention=16,
        global_attn_every_n_layers=3,
    )
    return modernbert_config(tokenizer, **{**fields, **overrides})


# ---------------------------------------------------------------- pretraining


def write_recipe(tmp_path: Path, **changes) -> Path:
    """A two-phase tiny recipe over two written corpora; `changes` are dotted keys -> values."""

    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    # Written only when different, so a run (or a copy of one) keeps the corpus files its store was prepared from.
    for name, text in (
        ("notes.txt", "\n".join(synthetic_documents(400, seed=1)) + "\n"),
        (
            "abstracts.jsonl",
            "\n".join(json.dumps({"text": d}) for d in synthetic_documents(300, seed=2, max_words=60)) + "\n",
        ),
    ):
        if not (corpus / name).exists() or (corpus / name).read_text() != text:
            (corpus / name).write_text(text)
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


SCRIPT = str(ROOT / "train_mlm.py")


def script_env(tmp_path):
    return {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # DeepSpeed compiles its CPU communication op on first use: once per machine, not once per test cache
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR")
        or str(Path.home() / ".cache" / "torch_extensions"),
    }


def train(tmp_path, *args, check=True):
    result = subprocess.run(
        [sys.executable, SCRIPT, *map(str, args)],
        capture_output=True,
        text=True,
        env=script_env(tmp_path),
        cwd=tmp_path,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(result.stderr[-3000:])
    return result


# accelerate's torchrun launcher with two processes; with no GPU they run on the CPU over gloo
TWO_PROCESSES = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
]


def launch_command(config: str) -> list[str]:
    """A shipped accelerate config (accelerate_configs/), shrunk to two processes on this machine's CPU; under
    FSDP, through tests/fsdp_on_cpu.py (its docstring says why). The script and its arguments follow."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    command += [str(ROOT / "accelerate_configs" / config), "--num_processes", "2"]
    return command + ([str(ROOT / "tests" / "fsdp_on_cpu.py")] if "fsdp" in config else [])


def phase_weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


# ---------------------------------------------------------------- fine-tuning


DRUGS = ["insulin", "metformin", "antibiotics"]
FILLER = [w for w in WORDS if w not in DRUGS]


def sentence(rng, drugs=()):
    words = [rng.choice(FILLER) for _ in range(rng.randint(4, 10))]
    for drug in drugs:
        words.insert(rng.randrange(len(words) + 1), drug)
    return words


def write_task(folder, task: str, n: int = 200):
    """Easy tasks: the label is which drug words appear; NER tags the drug words."""
    rng, rows = random.Random(0), []
    for i in range(n):
        if task == "single_label":
            drug = DRUGS[i % 3]
            rows.append({"text": " ".join(sentence(rng, [drug])), "label": drug})
        elif task == "multi_label":
            present = [d for d in DRUGS[:2] if rng.random() < 0.5]
            rows.append({"text": " ".join(sentence(rng, present)), "label": present})
        else:
            words = sentence(rng, rng.sample(DRUGS, rng.randint(0, 2)))
            rows.append({"tokens": words, "ner_tags": ["B-Drug" if w in DRUGS else "O" for w in words]})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "data.jsonl"


def make_task(tmp_path, model, task, **extra):
    labels = {"single_label": DRUGS, "multi_label": DRUGS[:2], "ner": ["Drug"]}[task]
    raw = {
        "name": f"easy_{task}",
        "task": task,
        "model": model,
        "labels": labels,
        "output_dir": str(tmp_path / "results"),
        "data": {"loader": "jsonl", "path": str(write_task(tmp_path / "data", task))},
        "split": {"seed": 0, "validation": 0.2, "test": 0.2},
        "max_length": 64,
        "window_stride": 16,
        "seeds": [3],
        "training": {"lr": 5e-3, "epochs": 6, "batch_size": 8, "logging_steps": 5},
    }
    if task != "ner" and "modernbert" in model:  # mean pooling: presence of a word is learnt in a few steps
        raw["classifier_pooling"] = "mean"
    raw.update(extra)
    return task_from_dict(raw)
