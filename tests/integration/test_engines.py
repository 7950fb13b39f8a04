"""Sharded engines through the project's own Trainer path, with real processes over gloo: a two-phase run under
FSDP2 (the shipped config, shrunk to two processes), killed mid-phase 2 and resumed, ends where an uninterrupted
run ends, and its phase folders load in stock transformers.

accelerate turns FSDP on only for GPU launches; tests/fsdp_on_cpu.py makes that one switch on a CPU launch and
runs train_mlm.py unchanged (see its docstring)."""

from __future__ import annotations

import json
import subprocess
import time

import psutil
import pytest
from helpers import SCRIPT, launch_command, phase_weights, script_env, train, write_recipe

# End-to-end runs of training or of several processes: the fast tier (-m "not slow") leaves them out.
pytestmark = pytest.mark.slow

CHANGES = {"phases.1.length": {"steps": 7}, "distributed.timeout_minutes": 5}


def launch(tmp_path, config: str, *args, **popen):
    return subprocess.Popen(
        [*launch_command(config), SCRIPT, *map(str, args)], env=script_env(tmp_path), cwd=tmp_path, text=True, **popen
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


def kill_mid_phase_2(tmp_path, config: str):
    """Launch, and kill every process of the launch (as a node failure would) once phase 2 has a checkpoint.
    torch's launcher starts the training processes in sessions of their own: they are found as descendants."""
    process = launch(tmp_path, config, tmp_path / "recipe.yaml", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "out" / "phase2" / "checkpoints" / "checkpoint-3" / "checkpoint_complete.json"
    deadline = time.time() + 240
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    launched = psutil.Process(process.pid)
    members = [*launched.children(recursive=True), launched]
    for member in members:
        member.kill()
    process.wait()
    psutil.wait_procs(members, timeout=30)
    assert marker.exists(), "killed mid-phase 2"
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


def test_deepspeed_zero3_trains_as_fsdp2_does(tmp_path, fsdp2_run):
    """DeepSpeed runs on CPU over gloo with no switch (its CPU accelerator). Same batches, same optimizer: the
    engines differ only in the order of their reductions, far below the tolerance. The optimizer is carried into
    phase 2 through DeepSpeed's loader and the phase folders are consolidated from its partitions. (ZeRO-2 takes
    the same code paths; benchmarks/engines.py trains it, and every other shipped config, on the demo recipe.)"""
    zero3 = prepared(tmp_path / "zero3")
    log = train_under(zero3, "8gpu_zero3.yaml", zero3 / "recipe.yaml")
    assert "phase phase2: optimizer state carried over" in log
    marker = zero3 / "out" / "phase2" / "checkpoints" / "checkpoint-7" / "checkpoint_complete.json"
    assert json.loads(marker.read_text())["engine"] == "zero3"
    assert_same_weights(zero3, fsdp2_run, "ZeRO-3 vs FSDP2")
