"""Model states per process under each distributed engine, measured: the demo recipe, cut to a few steps per
phase, trained end to end by `train_mlm.py` with two CPU processes over gloo under the shipped launch configs
(shrunk to two processes; FSDP2 through tests/fsdp_on_cpu.py, as the tests run it).

  states     parameters, gradients and optimizer state held by one process after its first optimizer step,
             the largest over processes, counted on the tensors themselves (phase_summary.json, model_states).
             ZeRO keeps gradients and fp32 weights in flat partitions of its own: not counted.
  agreement  the largest difference of any phase-2 weight from the DDP run's: the engines train the same
             batches with the same optimizer, so only the order of reductions differs

    python train_mlm.py prepare demo      # once: the demo's token store
    python -m benchmarks.engines
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

from benchmarks.common import ROOT, arguments, markdown_table, write_json

CONFIGS = {
    "DDP": "8gpu_ddp.yaml",
    "FSDP2": "8gpu_fsdp2.yaml",
    "ZeRO-2": "8gpu_zero2.yaml",
    "ZeRO-3": "8gpu_zero3.yaml",
}
MB = 1e6


def train(engine: str, output_dir: Path, steps: int) -> float:
    config = CONFIGS[engine]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    command += [str(ROOT / "accelerate_configs" / config), "--num_processes", "2"]
    command += [str(ROOT / "tests" / "fsdp_on_cpu.py")] if "fsdp" in config else []
    command += [str(ROOT / "train_mlm.py"), "demo", "--output_dir", str(output_dir), "--precision", "fp32"]
    command += ["--batch.global_sequences", "4", "--distributed.timeout_minutes", "10"]
    for phase in ("phase1", "phase2"):
        command += [f"--phases.{phase}.length", json.dumps({"steps": steps})]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{engine}: the launch failed:\n{result.stderr[-3000:]}")
    return time.monotonic() - started


def main(argv=None):
    parser = arguments(__doc__)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per phase")
    args = parser.parse_args(argv)
    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for engine in CONFIGS:
            out = Path(folder) / engine
            wall = train(engine, out, args.steps)
            summary = json.loads((out / "phase2" / "phase_summary.json").read_text())
            weights = load_file(str(out / "phase2" / "model.safetensors"))
            if engine == "DDP":
                reference = weights
            worst = max((weights[k] - reference[k]).abs().max().item() for k in reference)
            states = summary.get("model_states")
            figures[engine] = {"model_states": states, "wall_s": wall, "max_weight_difference_vs_ddp": worst}
            measured = (
                [f"{states[k] / MB:.2f}" for k in ("parameters", "gradients", "optimizer")]
                + [f"{sum(states[k] for k in ('parameters', 'gradients', 'optimizer')) / MB:.2f}"]
                if states
                else ["-", "-", "-", "not counted"]
            )
            rows.append([engine, *measured, f"{worst:.1e}", f"{wall:.0f}"])
    print(
        markdown_table(
            [
                "engine",
                "parameters MB",
                "gradients MB",
                "optimizer MB",
                "states MB per process",
                "max weight diff vs DDP",
                "wall s",
            ],
            rows,
        )
    )
    write_json(args.json, {"steps_per_phase": args.steps, "engines": figures})


if __name__ == "__main__":
    main()
