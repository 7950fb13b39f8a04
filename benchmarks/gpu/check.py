"""The GPU check: one command that proves the project's GPU path and measures it, inside a fixed time.

    bash benchmarks/gpu/run.sh OUT             # on the GPU machine: installs the carried wheels, then this
    python -m benchmarks.gpu.check OUT --cpu   # the same parts at tiny sizes on a CPU (the test suite runs it)

Parts, in order of value, each in a process of its own with its own time cap (a part that overruns is stopped and
keeps what it had measured; one that fails does not stop the others; parts left without time are named, with why):

  correctness     every attention backend present: each document of packed rows vs alone, fp32 and bf16;
                  loss and gradients of a packed MLM batch against dense masks
  pretraining     the project's Trainer path (store, row index, collator, masking, sparse decoder, bf16) at
                  ModernBERT-base and 8,192 per backend, and the stock way: tokens/s, MFU, peak memory, data wait
  largest_batch   the largest per-device batch of 8,192-token rows that trains, measured, next to the computed one
  inference       the ModernBERT paper's synthetic length sets: packed NoteEncoder vs padded, against its RTX 4090
  finetuning      packed vs length_grouped vs random batches, examples/s at ModernBERT-base
  engines         train_mlm.py end to end with one GPU process under DDP (NCCL) and the shipped FSDP2 config,
                  weights against a plain single-process run
  compiled        the pretraining path under torch.compile (varlen and dense masks)

Writes OUT/gpu_check.json (every figure), OUT/gpu_check.md (the tables), OUT/parts/NAME.json (each part as it goes)
and OUT/logs/NAME.log (each part's output).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from modeling.common import run_files

ROOT = Path(__file__).resolve().parent.parent.parent
BUDGET_S = 455  # the whole check; run.sh's own `timeout` is the backstop, the wheels' install comes before
MARGIN_S = 8  # a part stops taking on work this long before its cap: start-up and the last write


# name: (module, cap in seconds on a GPU, cap on a CPU, title)
# The GPU caps add up to the budget less the driver's own start (a few seconds): the last part, the costliest per
# figure, takes what the others leave.
PARTS = {
    "correctness": ("benchmarks.gpu.correctness", 70, 120, "Correctness: packed vs alone, per backend"),
    "pretraining": ("benchmarks.gpu.pretraining", 100, 150, "Pretraining throughput through the Trainer path"),
    "largest_batch": ("benchmarks.gpu.largest_batch", 40, 60, "Largest per-device batch"),
    "inference": ("benchmarks.gpu.inference", 45, 60, "Inference: the ModernBERT paper's length sets"),
    "finetuning": ("benchmarks.gpu.finetuning", 40, 90, "Fine-tuning batches"),
    "engines": ("benchmarks.gpu.engines", 60, 120, "Engines: one GPU process under DDP and FSDP2"),
    "compiled": ("benchmarks.gpu.pretraining_compiled", 95, 120, "Pretraining under torch.compile"),
}


def run_part(name: str, out: Path, cpu: bool, deadline: float, work: Path) -> None:
    """In the part's own process: run it, its figures written to OUT/parts/NAME.json as it goes."""
    from benchmarks.gpu.setting import PartContext, kernel_context, setting

    module = importlib.import_module(PARTS[name][0])
    ctx = PartContext(name, out, setting(cpu), deadline - MARGIN_S, work)
    ctx.save()
    with kernel_context(ctx.setting):  # on a CPU, varlen runs on its reference kernel (no CUDA kernel there)
        module.run(ctx)


def launch(name: str, out: Path, cpu: bool, cap: float, work: Path) -> dict:
    """The part in a child process, stopped (with everything it started) at its cap."""
    from benchmarks.gpu.setting import last_line

    log_path = out / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "benchmarks.gpu.check", str(out), "--part", name, "--work", str(work)]
    command += ["--deadline", str(time.time() + cap)] + (["--cpu"] if cpu else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    started = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait(timeout=cap)
            status = "done" if code == 0 else f"failed (exit code {code}): {last_line(log_path)}"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the part and whatever it launched
            process.wait()
            status = f"stopped at its cap of {cap:.0f} s"
    figures = {"rows": [], "skipped": [], "failed": [], "notes": []}
    part_json = out / "parts" / f"{name}.json"
    try:
        figures.update(json.loads(part_json.read_text()))
    except (OSError, ValueError):  # never written (killed at once), or unreadable: the status says what happened
        pass
    return {"status": status, "cap_s": round(cap), "seconds": round(time.monotonic() - started, 1), **figures}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for gpu_check.json, gpu_check.md, parts/ and logs/")
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (what the test suite runs)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--budget_s", type=float, default=BUDGET_S, help="the whole check stops inside this")
    parser.add_argument(
        "--cap", action="append", default=[], metavar="PART=SECONDS", help="another time cap for a part (repeatable)"
    )
    parser.add_argument(
        "--work", help="folder for the stores, runs and checkpoints the parts make (default: a temporary one, removed)"
    )
    parser.add_argument("--part", help=argparse.SUPPRESS)  # in a part's own process
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.part:
        run_part(args.part, out, args.cpu, args.deadline, Path(args.work))
        return 0

    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in PARTS]
    if unknown:
        parser.error(f"--parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    caps = {name: spec[2 if args.cpu else 1] for name, spec in PARTS.items()}
    for given in args.cap:
        name, _, seconds = given.partition("=")
        if name not in PARTS or not seconds.replace(".", "", 1).isdigit():
            parser.error(f"--cap {given}: give PART=SECONDS with PART one of {', '.join(PARTS)}")
        caps[name] = float(seconds)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-work-"))
    try:
        return _check(args, out, wanted, caps, work, started)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def _check(args, out: Path, wanted: list[str], caps: dict, work: Path, started: float) -> int:
    from benchmarks.gpu.report import goals
    from benchmarks.gpu.setting import Machine, setting

    chosen = setting(args.cpu)
    if chosen.on_gpu:
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA device here; run with --cpu for the tiny CPU check", file=sys.stderr)
            return 2
    try:
        machine = asdict(Machine.here(chosen))
    except Exception as error:  # the parts may still run: each reports its own trouble
        machine = {"device": f"unknown ({type(error).__name__}: {error})"}
    report = {"mode": chosen.mode, "machine": machine, "budget_s": args.budget_s, "parts": {}}
    print(f"GPU check ({chosen.mode}) on {machine['device']}; budget {args.budget_s:.0f} s", flush=True)
    for name in PARTS:
        if name not in wanted:
            continue
        cap = caps[name]
        left = args.budget_s - (time.monotonic() - started)
        if left < min(20, cap):
            report["parts"][name] = {"status": f"skipped: {left:.0f} s of the check's budget left", "rows": []}
        else:
            print(f"- {name} (cap {min(cap, left):.0f} s) ...", flush=True)
            report["parts"][name] = launch(name, out, args.cpu, min(cap, left), work)
            print(f"  {report['parts'][name]['status']} in {report['parts'][name]['seconds']} s", flush=True)
        _write(out, report, started)
    try:
        report["goals"] = goals(report)
    except Exception as error:  # the figures are written either way
        report["goals"] = [["the goals could not be read off the figures", f"{type(error).__name__}: {error}", "-"]]
    _write(out, report, started)
    print((out / "gpu_check.md").read_text())
    return 0


def _write(out: Path, report: dict, started: float) -> None:
    """gpu_check.json first (every figure), then the tables; a table that cannot be made costs only the tables."""
    from benchmarks.gpu.report import markdown

    report["wall_s"] = round(time.monotonic() - started, 1)
    run_files.write_json(out / "gpu_check.json", report, indent=1)
    try:
        text = markdown(report)
    except Exception as error:
        text = f"# GPU check\n\nThe tables could not be made ({type(error).__name__}: {error}); see gpu_check.json.\n"
    run_files.write_text(out / "gpu_check.md", text)


if __name__ == "__main__":
    sys.exit(main())
