"""Importing a Composer checkpoint of ModernBERT's training code: the name mapping with its counts, the time, and
the logits of the imported folder against the model the checkpoint was written from.

    python -m benchmarks.composer_import [--shape base] [--json FILE]

A ModernBertForMaskedLM of the shape (`base`: ModernBERT-base's 22 layers, 768 hidden, 50,368 tokens; norms and
decoder bias perturbed so no tensor is at its initial value) is written as Composer writes a FlexBert MLM
(tests/composer_checkpoint.py: state.model under FlexBert names, optimizer moments, timestamp, RNG, the run's
model_config), with the run YAML of ModernBERT's repository format. `python -m modeling.publish
import-composer` turns it into a folder; the table counts the tensors each mapping rule renamed, and the
imported model's MLM logits on two padded sentences are compared with the source model's (fp32, sdpa).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM, ModernBertConfig, ModernBertForMaskedLM

from benchmarks.common import ROOT, arguments, markdown_table, write_json
from modeling.common.composer import import_checkpoint
from modeling.publish.hub import main as publish

sys.path.insert(0, str(ROOT / "tests"))  # the Composer checkpoint writer the tests use

LAYERS = dict(global_attn_every_n_layers=3, local_attention=128)  # ModernBERT's layer pattern
SHAPES = {
    "base": LAYERS,  # ModernBertConfig's defaults are ModernBERT-base's otherwise
    "small": dict(hidden_size=256, intermediate_size=384, num_hidden_layers=6, num_attention_heads=4, **LAYERS),
}


def main(argv=None):
    parser = arguments(__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="base")
    args = parser.parse_args(argv)
    from composer_checkpoint import composer_state, write_checkpoint, write_run_yaml

    torch.manual_seed(0)
    source = ModernBertForMaskedLM(ModernBertConfig(**SHAPES[args.shape])).eval()
    with torch.no_grad():
        for name, tensor in source.named_parameters():
            if "norm" in name or name.endswith("bias"):
                tensor.add_(torch.randn_like(tensor) * 0.1)
    with tempfile.TemporaryDirectory(prefix="composer-bench-") as tmp:
        tmp = Path(tmp)
        ckpt = write_checkpoint(tmp / "ep0-ba1234-rank0.pt", composer_state(source))
        run_yaml = write_run_yaml(tmp / "run.yaml", source.config)
        started = time.perf_counter()
        assert publish(["import-composer", str(ckpt), "--config", str(run_yaml), "--out", str(tmp / "out")]) == 0
        wall = time.perf_counter() - started
        record = json.loads((tmp / "out" / "composer_import.json").read_text())
        families: dict[tuple[str, str], int] = {}  # each name with its layer number as N -> tensors
        for a, b in import_checkpoint(ckpt, run_yaml).renamed:
            key = (re.sub(r"\.\d+\.", ".N.", a), re.sub(r"\.\d+\.", ".N.", b))
            families[key] = families.get(key, 0) + 1
        imported = AutoModelForMaskedLM.from_pretrained(tmp / "out").eval()
        ids = torch.randint(10, 50000, (2, 96))
        mask = torch.ones_like(ids)
        mask[1, 60:] = 0
        with torch.no_grad():
            a, b = (
                source(input_ids=ids, attention_mask=mask).logits,
                imported(input_ids=ids, attention_mask=mask).logits,
            )
        diff = (a - b)[mask.bool()].abs().max().item()
        size = ckpt.stat().st_size
    rows = [
        [f"`{a}`", f"`{b}`" if a not in record["dropped"] else "not written: tied to the embeddings", n]
        for (a, b), n in families.items()
    ]
    parameters = sum(p.numel() for p in source.parameters())
    print(f"\n{args.shape}: {parameters / 1e6:.1f}M parameters, checkpoint {size / 1e6:.0f} MB")
    print(markdown_table(["FlexBert name in the checkpoint (N: layer)", "transformers name", "tensors"], rows))
    print(f"\n{record['tensors']} tensors carried; import {wall:.1f} s; max abs logit difference {diff:.2e}")
    write_json(
        args.json, {"shape": args.shape, "renamed": record["renamed"], "wall_s": wall, "max_abs_logit_diff": diff}
    )


if __name__ == "__main__":
    main()
