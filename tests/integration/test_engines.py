"""Sharded engines through the project's own Trainer path, with real processes over gloo: a two-phase run under
FSDP2 (the shipped config, shrunk to two processes), killed mid-phase 2 and resumed, ends where an uninterrupted
run ends, and its phase folders load in stock transformers. Under FSDP2 and ZeRO-3, a run killed and resumed by
another number of processes (2 -> 1, then 1 -> 2) ends where an uninterrupted run ends too, up to the order of
its sums.

accelerate turns FSDP on only for GPU launches; tests/fsdp_on_cpu.py makes that one switch on a CPU launch and
runs train_mlm.py unchanged (see its docstring)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from helpers import SCRIPT, launch_command, phase_weights, script_env, train, write_recipe

# End-to-end runs of training or of several processes: the fast tier (-m "not slow") leaves them out.
pytestmark = pytest.mark.slow

CHANGES = {"phases.1.length": {"steps": 7}, "distributed.timeout_minutes": 5}


def launch(tmp_path, config: str, *args, processes: int = 2, **popen):
    command = launch_command(config)
    command[command.index("--num_processes") + 1] = str(processes)
    return subprocess.Popen(
        [*command, SCRIPT, *map(str, args)], env=script_env(tmp_path), cwd=tmp_path, text=True, **popen
    )


def train_under(tmp_path, config: str, *args) -> str:
    process = launch(tmp_path, config, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-4000:]
    return stderr


def prepared(folder):
    folder.mkdir()
    train(folder, "prepare", write_recipe(folder, **CHANGES), "--num_proc", 1)
    return folder


def kill_when(tmp_path, config: str, written: Path, *args, processes: int = 2) -> str:
    """Launch, and kill every process of the launch (as a node failure would) once `written` exists; returns what
    the launch logged. torch's launcher starts the training processes in sessions of their own: they are found
    as descendants."""
    log = tmp_path / "killed.log"
    with log.open("w") as output:  # a file, not a pipe: nothing reads a pipe while this waits
        process = launch(
            tmp_path, config, tmp_path / "recipe.yaml", *args, processes=processes, stdout=output, stderr=output
        )
        deadline = time.time() + 240
        while not written.exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        launched = psutil.Process(process.pid)
        members = [*launched.children(recursive=True), launched]
        for member in members:
            member.kill()
        process.wait()
        psutil.wait_procs(members, timeout=30)
    assert written.exists(), f"killed once {written} was written"
    return log.read_text()


def kill_mid_phase_2(tmp_path, config: str):
    kill_when(
        tmp_path, config, tmp_path / "out" / "phase2" / "checkpoints" / "checkpoint-3" / "checkpoint_complete.json"
    )
    assert not (tmp_path / "out" / "phase2" / "phase_summary.json").exists(), "killed mid-phase 2"


def assert_same_weights(run, reference, what: str, tolerance: float = 1e-6):
    for phase in ("phase1", "phase2"):
        weights, expected = phase_weights(run / "out" / phase), phase_weights(reference / "out" / phase)
        assert weights.keys() == expected.keys()
        worst = max((weights[k] - expected[k]).abs().max().item() for k in expected)
        print(f"{what}, {phase}: max abs parameter difference {worst:.2e}")
        assert worst <= tolerance, f"{what}, {phase}: differs by {worst}"


@pytest.fixture(scope="module")
def fsdp2_run(tmp_path_factory):
    folder = prepared(tmp_path_factory.mktemp("engines") / "fsdp2")
    log = train_under(folder, "8gpu_fsdp2.yaml", folder / "recipe.yaml")
    assert "phase phase2: optimizer state carried over" in log
    return folder


def test_fsdp2_run_killed_mid_phase_2_and_resumed_ends_as_an_uninterrupted_one(tmp_path, fsdp2_run):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    killed = prepared(tmp_path / "killed")
    kill_mid_phase_2(killed, "8gpu_fsdp2.yaml")
    log = train_under(killed, "8gpu_fsdp2.yaml", killed / "recipe.yaml", "--resume")
    assert "phase phase1: already complete" in log
    assert "resuming from" in log
    assert_same_weights(killed, fsdp2_run, "FSDP2, killed and resumed vs uninterrupted")

    # Checkpoints stay sharded: one file per process, no gathered weights.
    checkpoint = fsdp2_run / "out" / "phase2" / "checkpoints" / "checkpoint-7"
    assert sorted(p.name for p in (checkpoint / "pytorch_model_fsdp_0").glob("*.distcp")) == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    assert (checkpoint / "optimizer_0" / ".metadata").exists()
    assert not (checkpoint / "model.safetensors").exists()
    # Phase folders are whole: stock transformers loads them with no process group.
    for phase in ("phase1", "phase2"):
        folder = fsdp2_run / "out" / phase
        config = json.loads((folder / "config.json").read_text())
        assert config["architectures"] == ["ModernBertForMaskedLM"]
        assert not config["sparse_prediction"]
        model = AutoModelForMaskedLM.from_pretrained(folder)
        assert not any(type(p).__name__ == "DTensor" for p in model.parameters())
        model.save_pretrained(tmp_path / "saved_again")  # the same tensors as stock transformers saves, no more
        assert phase_weights(folder).keys() == phase_weights(tmp_path / "saved_again").keys()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert model(**tokenizer("patient denies chest [MASK]", return_tensors="pt")).logits.isfinite().all()
        assert len(pipeline("fill-mask", model=str(folder))("patient denies chest [MASK] fever")) == 5
    summary = json.loads((fsdp2_run / "out" / "phase2" / "phase_summary.json").read_text())
    states = summary["model_states"]
    parameters = sum(p.numel() * p.element_size() for p in model.parameters())
    # Each process holds about half of the parameters (shards are padded to equal sizes), their gradients, and
    # AdamW's two moments per parameter.
    assert states["engine"] == "fsdp2"
    assert parameters / 2 <= states["parameters"] < 0.6 * parameters
    assert states["gradients"] == states["parameters"]
    assert states["optimizer"] >= 2 * states["parameters"]
    assert summary["held_out"]["loss_end"] < summary["held_out"]["loss_start"]


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory):
    folder = prepared(tmp_path_factory.mktemp("engines") / "zero3")
    log = train_under(folder, "8gpu_zero3.yaml", folder / "recipe.yaml")
    assert "phase phase2: optimizer state carried over" in log
    return folder


def test_deepspeed_zero3_trains_as_fsdp2_does(zero3_run, fsdp2_run):
    """DeepSpeed runs on CPU over gloo with no switch (its CPU accelerator). Same batches, same optimizer: the
    engines differ only in the order of their reductions, far below the tolerance. The optimizer is carried into
    phase 2 through DeepSpeed's loader and the phase folders are consolidated from its partitions. (ZeRO-2 takes
    the same code paths; benchmarks/engines.py trains it, and every other shipped config, on the demo recipe.)"""
    marker = zero3_run / "out" / "phase2" / "checkpoints" / "checkpoint-7" / "checkpoint_complete.json"
    assert json.loads(marker.read_text())["engine"] == "zero3"
    assert_same_weights(zero3_run, fsdp2_run, "ZeRO-3 vs FSDP2")


# ---------------------------------------------------------------- resumed by another number of processes

# One process sums a step's two micro-batches' gradients itself, two sum theirs in an all-reduce or a reduce-scatter:
# the same numbers added in another order, and float addition is not associative. Measured on these runs (15 steps):
# FSDP2 ends 1.2e-7 from the uninterrupted run (one unit in the last place of the norm weights, which are near 1),
# ZeRO-3 at 0.0, and neither moves the held-out loss (near 5, where one unit in the last place is 4.8e-7). The bounds
# are two units in the last place. Broken on purpose, these runs ended far outside them: with the step counts
# DeepSpeed's ZeRO-3 loader leaves after a universal checkpoint (engines.universal_load_settled undone) 1.7e-4 to
# 1e-3 away, with no optimizer state loaded on resume 1.6e-2; a phase restarted from scratch fails the log and
# marker checks.
ACROSS_PROCESSES_WEIGHTS = 2.4e-7
ACROSS_PROCESSES_LOSS = 1e-6


def killed_and_resumed_across_process_counts(run, config: str) -> tuple[str, str]:
    """Two processes, killed once phase 1 has a checkpoint; resumed by one, which continues phase 1 from that
    checkpoint (2 -> 1), killed once phase 1 is done; resumed by two, which start phase 2 with the optimizer state
    one process saved (1 -> 2). Returns what the two resumes logged."""
    out = run / "out"
    kill_when(run, config, out / "phase1" / "checkpoints" / "checkpoint-3" / "checkpoint_complete.json")
    one = kill_when(run, config, out / "phase1" / "phase_summary.json", "--resume", processes=1)
    assert not list((out / "phase2").glob("checkpoints/*/checkpoint_complete.json")), "killed before phase 2's first"
    two = train_under(run, config, run / "recipe.yaml", "--resume")
    assert "phase phase1: resuming from" in one
    assert "phase phase2: optimizer state carried over" in two
    # Each checkpoint loaded was saved by the other number of processes (a phase restarted from scratch would have
    # replaced them), and the phase ended under the number the reference ran with.
    for phase, step, processes in (("phase1", 3, 2), ("phase1", 8, 1), ("phase2", 7, 2)):
        marker = out / phase / "checkpoints" / f"checkpoint-{step}" / "checkpoint_complete.json"
        assert json.loads(marker.read_text())["processes"] == processes, marker
    return one, two


def assert_continues_across_process_counts(run, reference, what: str):
    for phase in ("phase1", "phase2"):
        weights, expected = phase_weights(run / "out" / phase), phase_weights(reference / "out" / phase)
        worst = max((weights[k] - expected[k]).abs().max().item() for k in expected)
        print(f"{what}, {phase}: max abs parameter difference {worst:.2e}")
        assert worst <= ACROSS_PROCESSES_WEIGHTS, f"{what}, {phase}: differs by {worst}"
    # Phase 2's start and end losses, both measured by two processes as in the reference (phase 1 ended under one,
    # and the held-out loss as Trainer.evaluate measures it depends on how its rows are split over processes).
    held_out, expected = (
        json.loads((r / "out" / "phase2" / "phase_summary.json").read_text())["held_out"] for r in (run, reference)
    )
    for key in ("loss_start", "loss_end"):
        difference = abs(held_out[key] - expected[key])
        print(f"{what}, phase2 held-out {key}: difference {difference:.2e} ({expected[key]:.4f})")
        assert difference <= ACROSS_PROCESSES_LOSS, f"{what}, phase2 held-out {key}: differs by {difference}"


def test_fsdp2_resumes_into_another_number_of_processes(tmp_path, fsdp2_run):
    """FSDP2's sharded checkpoints are resharded as they load: model, optimizer (the moments and step counts of
    each shard), scheduler; each step still takes the global batch's rows in order, by accumulating more
    micro-batches on fewer processes."""
    run = prepared(tmp_path / "elastic")
    killed_and_resumed_across_process_counts(run, "8gpu_fsdp2.yaml")
    assert_continues_across_process_counts(run, fsdp2_run, "FSDP2 2 -> 1 -> 2 vs uninterrupted")


def test_zero3_resumes_into_another_number_of_processes(tmp_path, zero3_run):
    """ZeRO's partitions load only into as many processes; a checkpoint saved by another number is converted once
    to DeepSpeed's universal checkpoint, beside its partitions, and loaded from there."""
    run = prepared(tmp_path / "elastic")
    one, two = killed_and_resumed_across_process_counts(run, "8gpu_zero3.yaml")
    universal = "through DeepSpeed's universal checkpoint (converted now)"
    assert re.search(rf"checkpoint-\d+: saved by 2 processes, loaded into 1 {re.escape(universal)}", one)
    assert f"checkpoint-8: saved by 1 process, loaded into 2 {universal}" in two
    assert len(list((run / "out" / "phase1" / "checkpoints").glob("*/latest_universal"))) == 2
    assert_continues_across_process_counts(run, zero3_run, "ZeRO-3 2 -> 1 -> 2 vs uninterrupted")
