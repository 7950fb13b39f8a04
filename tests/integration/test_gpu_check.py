"""The GPU check (benchmarks/gpu/) runs end to end here in its --cpu mode: tiny sizes, varlen on its reference
kernel, and none of the packages the GPU image lacks importable, so the one command a lent GPU runs cannot rot
before a GPU runs it. Its figures are CPU figures and asserted only for what they must be (fields present, checks
passed, the same weights under every engine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from helpers import ROOT

from benchmarks.gpu.largest_batch import largest_that_fits
from benchmarks.gpu.report import markdown
from benchmarks.gpu.setting import PartContext, bf16_peak, setting

ABSENT_ON_THE_GPU_IMAGE = ("datasets", "evaluate", "datatrove", "pubmed_parser", "seqeval", "deepspeed", "flash_attn")

FIELDS = {  # every part's rows carry these
    "correctness": {"check", "backend", "dtype", "max_abs_diff", "tolerance", "ok"},
    "pretraining": {
        "side",
        "attention",
        "tokens_per_second",
        "step_seconds",
        "first_step_seconds",
        "data_wait",
        "mfu",
        "mfu_dense",
        "peak_memory_gb",
        "mean_document_context",
    },
    "largest_batch": {"model", "attention", "largest_batch", "bound", "tried", "computed", "peak_gb"},
    "inference": {"set", "batching", "attention", "documents", "tokens", "ktokens_per_second", "vs_paper"},
    "finetuning": {"side", "attention", "examples", "examples_per_second", "padding"},
    "engines": {"launch", "checkpoint_engine", "distributed_type", "attention", "max_weight_diff_vs_plain", "ok"},
    "compiled": {"side", "attention", "tokens_per_second", "first_step_seconds", "graphs_compiled"},
}


def run_check(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """run.sh as the GPU machine runs it, with the packages the GPU image lacks made unimportable in every process
    it starts (a sitecustomize on PYTHONPATH), and no carried wheels."""
    blocker = tmp_path / "without"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(
        f"import sys\nfor name in {ABSENT_ON_THE_GPU_IMAGE!r}:\n    sys.modules[name] = None\n"
    )
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_WHEELS": str(tmp_path / "no-wheels")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(blocker), os.environ.get("PYTHONPATH")) if p)
    command = ["bash", str(ROOT / "benchmarks" / "gpu" / "run.sh"), *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("gpu_check")
    out = tmp_path / "out"
    result = run_check(tmp_path, str(out), "--cpu")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


@pytest.mark.slow
def test_every_part_runs_and_reports_its_fields(cpu_check):
    report, markdown = cpu_check
    assert report["mode"] == "cpu"
    assert report["machine"]["varlen"].startswith("varlen_attn runs on CUDA")
    assert list(report["parts"]) == list(FIELDS)
    for name, part in report["parts"].items():
        assert part["status"] == "done", (name, part["status"])
        assert part["rows"], (name, part["failed"])
        assert not part["failed"], (name, part["failed"])
        for row in part["rows"]:
            assert FIELDS[name] <= set(row), (name, FIELDS[name] - set(row))
    for title in ("Correctness", "Pretraining throughput", "Largest per-device batch", "Goals"):
        assert f"## {title}" in markdown


@pytest.mark.slow
def test_cpu_check_proves_what_it_can_here(cpu_check):
    report, _ = cpu_check
    parts = {name: part["rows"] for name, part in report["parts"].items()}

    checks = parts["correctness"]
    assert all(row["ok"] for row in checks)
    assert {row["backend"] for row in checks} == {
        "varlen (reference kernel)",
        "sdpa",
        "document_sdpa",
        "flex_attention",
    }
    assert {(row["check"], row["dtype"]) for row in checks} == {
        (c, d) for c in ("logits", "gradients") for d in ("fp32", "bf16")
    }
    skipped = {entry["what"] for entry in report["parts"]["correctness"]["skipped"]}
    assert "flash_attention_2" in skipped  # named, with why, not silently left out
    assert report["goals"][0][2] == "yes"

    sides = {row["side"]: row for row in parts["pretraining"]}
    assert sides["project, varlen (reference kernel)"]["attention"] == "varlen"  # the Trainer path ran varlen itself
    assert any(side.startswith("stock") for side in sides)
    assert "project, document_sdpa" in sides
    assert all(row["tokens_per_second"] > 0 and 0 <= row["data_wait"] < 1 for row in sides.values())

    launches = {row["launch"]: row for row in parts["engines"]}
    assert launches["plain"]["distributed_type"] == "NO"
    assert launches["DDP, 1 process"]["distributed_type"] == "MULTI_CPU"
    assert all(row["ok"] and row["max_weight_diff_vs_plain"] == 0 for row in launches.values())  # fp32 on a CPU

    batching = {row["side"]: row for row in parts["finetuning"]}
    assert batching["packed"]["padding"] == 0 < batching["random"]["padding"]
    assert batching["packed"]["attention"] == "varlen"

    for row in parts["inference"]:
        if row["batching"] == "packed":
            assert row["max_abs_diff_vs_padded"] <= 1e-05
            assert row["attention"] == "varlen"
    assert {row["set"] for row in parts["inference"]} == {"fixed 512", "variable ~256", "fixed 8192", "variable ~4096"}

    assert parts["largest_batch"][0]["largest_batch"] == 4
    assert parts["largest_batch"][0]["bound"] == "the search's cap"
    assert [row["side"] for row in parts["compiled"]] == ["project, sdpa, torch.compile"]


@pytest.mark.slow
def test_a_part_past_its_cap_is_stopped_and_named_and_the_budget_is_kept(tmp_path):
    out = tmp_path / "capped"
    result = run_check(tmp_path, str(out), "--cpu", "--parts", "correctness", "--cap", "correctness=2")
    assert result.returncode == 0, result.stderr[-2000:]
    part = json.loads((out / "gpu_check.json").read_text())["parts"]["correctness"]
    assert part["status"] == "stopped at its cap of 2 s"
    assert part["seconds"] < 10

    out = tmp_path / "no-budget"
    result = run_check(tmp_path, str(out), "--cpu", "--parts", "inference", "--budget_s", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    part = json.loads((out / "gpu_check.json").read_text())["parts"]["inference"]
    assert part["status"].startswith("skipped:")
    assert "budget" in part["status"]
    assert "skipped:" in (out / "gpu_check.md").read_text()


def test_largest_batch_search_finds_the_limit_or_reports_the_cap():
    for limit in (1, 5, 13, 16, 63):
        tried = []

        def fits(size, limit=limit, tried=tried):
            tried.append(size)
            return size <= limit

        assert largest_that_fits(fits, cap=64) == (limit, False)
        assert len(tried) <= 2 * limit.bit_length() + 1  # doubling, then bisection
    assert largest_that_fits(lambda size: True, cap=4) == (4, True)
    assert largest_that_fits(lambda size: True, cap=6) == (6, True)  # the cap itself is tried, not only 4
    assert largest_that_fits(lambda size: False, cap=8) == (0, False)


def test_mfu_uses_the_cards_own_peak():
    assert bf16_peak("NVIDIA H100 80GB HBM3") == 989.4e12
    assert bf16_peak("NVIDIA H100 PCIe") == 756e12  # not the SXM figure its name also contains
    assert bf16_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert bf16_peak("Some Future GPU") is None


def test_a_side_that_raises_is_recorded_and_the_part_goes_on(tmp_path):
    """On a new machine one backend may break (a kernel, a compiler): its error is named in the part's figures and
    the report, and the next side still runs."""
    ctx = PartContext("pretraining", tmp_path, setting(cpu=True), time.time() + 60)
    with ctx.guard("project, flex_attention"):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore detail")
    with ctx.guard("project, sdpa"):
        ctx.add({"side": "project, sdpa"})
    saved = json.loads(ctx.path.read_text())
    assert saved["failed"] == [
        {
            "what": "project, flex_attention",
            "error": "RuntimeError: CUDA error: an illegal memory access was encountered",
        }
    ]
    assert saved["rows"] == [{"side": "project, sdpa"}]
    report = {
        "mode": "gpu",
        "machine": {"device": "unknown (RuntimeError: no CUDA)"},  # what the driver keeps when it cannot read it
        "budget_s": 455,
        "parts": {"pretraining": {"status": "done", "rows": [], **{k: saved[k] for k in ("failed", "skipped")}}},
    }
    assert "- **failed**: project, flex_attention: RuntimeError: CUDA error" in markdown(report)
