"""Engines with one GPU process: `train_mlm.py` end to end under DDP (a process group of one over NCCL) and under
the shipped FSDP2 config, against a plain single-process run of the same recipe.

Each launch is the command a user runs, on a small ModernBERT (the layer pattern at hidden 256, 6 layers) and the
part's synthetic store, for a few steps: store checks, held-out loss, training, the phase's checkpoint and its
stock-transformers folder. The launches run side by side (they are small; ports differ). Their phase weights are
compared with the plain run's; a second plain run gives the run-to-run difference of the GPU kernels themselves
(atomics in backward kernels make bf16 training on a GPU not bit-reproducible), which DDP must stay near. FSDP2's
difference is reported, not judged: under bf16 accelerate gives it a MixedPrecisionPolicy (bf16 parameters and
gradient reduction), other numerics than the autocast of the plain run. What ran is read from each run's own
record: the engine of its checkpoint, and the log line naming the engine, the process group's type and the
attention backend.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.gpu.pretraining import recipe_dict, store_for
from benchmarks.gpu.setting import PartContext, last_line

ROOT = Path(__file__).resolve().parent.parent.parent
TOLERANCE_FACTOR = 4.0  # an engine may differ from the plain run by this many times the plain runs' own difference
FLOOR = 1e-6  # ... and always by this much (fp32 on a CPU is bit-reproducible: the difference there is 0)


def launches(ctx: PartContext, recipe: Path, work: Path) -> dict[str, list[str]]:
    train = [str(ROOT / "train_mlm.py"), str(recipe)]
    out = {
        "plain": [sys.executable, *train, "--output_dir", str(work / "plain")],
        "plain, again": [sys.executable, *train, "--output_dir", str(work / "plain-again")],
        "DDP, 1 process": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1"]
        + ["--master_port", str(_port(1)), *train, "--output_dir", str(work / "ddp")],
    }
    if ctx.setting.on_gpu:
        config = ROOT / "accelerate_configs" / "8gpu_fsdp2.yaml"
        out["FSDP2, 1 process"] = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
        out["FSDP2, 1 process"] += ["--num_processes", "1", "--main_process_port", str(_port(2)), *train]
        out["FSDP2, 1 process"] += ["--output_dir", str(work / "fsdp2")]
    else:
        ctx.skip("FSDP2, 1 process", "accelerate turns FSDP on only for GPU launches (on a CPU it would train as DDP)")
    return out


def _port(offset: int) -> int:
    return 29600 + (os.getpid() % 200) * 2 + offset


def run(ctx: PartContext) -> None:
    from safetensors.torch import load_file

    setting = ctx.setting
    store, _ = store_for(ctx)
    work = ctx.work / "engines"
    work.mkdir(parents=True, exist_ok=True)
    raw = recipe_dict(setting, store, "varlen", work / "unused")
    raw["model"]["config"] = {**setting.engine_model, "max_position_embeddings": setting.engine_row}
    raw["max_seq_length"] = setting.engine_row
    raw["phases"][0]["length"] = {"steps": setting.engine_steps}
    raw["logging"] = {"steps": 1}
    raw["data"] = {"workers": 0}
    recipe = work / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    if not setting.on_gpu:
        env["OMP_NUM_THREADS"] = "1"  # three launches on a few cores; also the same thread count for each
    started, running = time.monotonic(), {}
    for name, command in launches(ctx, recipe, work).items():
        slug = name.split(",")[0].lower() + ("-again" if "again" in name else "")
        log = open(ctx.out / "logs" / f"engines-{slug}.log", "w")  # beside the part's own log, under OUT
        running[name] = (subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log)
    results = {}
    for name, (process, log) in running.items():
        try:
            code = process.wait(timeout=max(1, ctx.time_left()))
        except subprocess.TimeoutExpired:
            # SIGTERM first: torchrun and accelerate forward it to their workers, which run in sessions of their own
            # and would outlive a SIGKILL of the launcher, holding the GPU during the next part
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
            code = None
        log.close()
        results[name] = (code, Path(log.name))
    weights = {}
    for name, (code, log_path) in results.items():
        folder = Path(running[name][0].args[-1]) / "phase1"
        if code != 0:
            ctx.skip(name, "stopped at the part's cap" if code is None else f"exit code {code}: {last_line(log_path)}")
            continue
        weights[name] = load_file(str(folder / "model.safetensors"))
        marker = json.loads(next((folder / "checkpoints").glob("checkpoint-*/checkpoint_complete.json")).read_text())
        said = re.search(r"engine (\S+), (\d+) process\w* \((\w+)\), (\S+) attention", log_path.read_text())
        ctx.add(
            {
                "launch": name,
                "checkpoint_engine": marker.get("engine"),
                "distributed_type": said.group(3) if said else None,
                "attention": said.group(4) if said else None,
                "held_out_loss_end": json.loads((folder / "phase_summary.json").read_text())["held_out"]["loss_end"],
                "max_weight_diff_vs_plain": None,
            }
        )
    if "plain" in weights:
        reference = weights["plain"]
        for row in ctx.rows:
            other = weights[row["launch"]]
            row["max_weight_diff_vs_plain"] = max(
                (other[k].float() - reference[k].float()).abs().max().item() for k in reference
            )
        noise = next((r["max_weight_diff_vs_plain"] for r in ctx.rows if r["launch"] == "plain, again"), None)
        tolerance = max(TOLERANCE_FACTOR * noise, FLOOR) if noise is not None else None
        for row in ctx.rows:
            if row["launch"].startswith("FSDP2") and setting.on_gpu:
                row["tolerance"], row["ok"] = None, None  # other numerics (see the module docstring): reported only
                continue
            row["tolerance"] = tolerance
            row["ok"] = tolerance is not None and row["max_weight_diff_vs_plain"] <= tolerance
        ctx.save()
    ctx.note(
        f"{len(running)} launches side by side in {time.monotonic() - started:.0f} s; {setting.engine_steps} steps "
        f"of rows of {setting.engine_row}"
    )


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "launch",
        "engine (checkpoint)",
        "process group",
        "attention",
        "held-out loss",
        "max weight diff vs plain",
    ]
    headers += ["tolerance", "ok"]
    return headers, [
        [
            r["launch"],
            str(r["checkpoint_engine"]),
            str(r["distributed_type"]),
            str(r["attention"]),
            f"{r['held_out_loss_end']:.4f}",
            f"{r['max_weight_diff_vs_plain']:.1e}" if r["max_weight_diff_vs_plain"] is not None else "-",
            f"{r['tolerance']:.1e}" if r.get("tolerance") is not None else "-",
            {True: "yes", False: "**no**", None: "n/a (bf16 parameters)"}[r["ok"]] if "ok" in r else "-",
        ]
        for r in rows
    ]
