"""The users' commands (benchmarks/gpu/users.py) run end to end here in their --cpu mode, through run.sh as the GPU
machine runs them: prepare, a two-phase run straight through, the same run killed with SIGKILL in phase 2 and
resumed, fine-tuning (full and LoRA) on the demo tasks, inference on notes longer than the model's positions, a push
to the test Hub server and a stock `AutoModel.from_pretrained` of what was pushed in a fresh process. On a CPU in
fp32 the resumed run must equal the straight one exactly, and the pushed model's embeddings the phase folder's."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

from benchmarks.gpu.users import DEMO_TASKS, REPO_ID, size, write_corpus

CPU = size(cpu=True)
THROUGHPUT = {"prepare", "reference", "resumed", "inference", "push"} | {
    f"{'lora' if lora else 'finetune'}:{task}" for lora, task in CPU.fine_tuning()
}


@pytest.fixture(scope="module")
def users_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("gpu_users")
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_WHEELS": str(tmp_path / "no-wheels")}
    command = ["bash", str(ROOT / "benchmarks" / "gpu" / "run.sh"), "--users", str(out), "--cpu", "--work", str(work)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "users.json").read_text()), (out / "users.md").read_text(), work


@pytest.mark.slow
def test_every_command_runs_and_reports_time_memory_and_throughput(users_run):
    report, _, _ = users_run
    assert list(report["steps"]) == CPU.step_names()
    assert {(False, task) for task in DEMO_TASKS} | {(True, task) for task in DEMO_TASKS} == set(
        size(cpu=False).fine_tuning()
    ), "on the GPU every task is fine-tuned both ways"
    for name, step in report["steps"].items():
        assert step["status"].startswith("done"), (name, step["status"])
        assert step["wall_s"] > 0, name
        assert step["peak_memory_gb"] > 0, name
        if name in THROUGHPUT:
            assert step["throughput"] > 0, name
    assert report["steps"]["killed"]["status"].startswith("done: SIGKILL in phase 2 after checkpoint-")


@pytest.mark.slow
def test_every_check_holds(users_run):
    report, _, _ = users_run
    failed = [check for check in report["checks"] if not check["ok"]]
    assert not failed
    names = " | ".join(check["check"] for check in report["checks"])
    expected = (
        "killed and resumed vs straight: held-out loss",
        "killed and resumed vs straight: largest weight",
        "weights saved as",
        "cuts the notes longer",
        "pushed model (AutoModel, stock)",
    )
    for what in expected:
        assert what in names


@pytest.mark.slow
def test_the_resumed_run_equals_the_straight_one_on_a_cpu(users_run):
    report, _, _ = users_run
    reference, resumed = report["steps"]["reference"]["details"], report["steps"]["resumed"]["details"]
    assert resumed["held_out"] == reference["held_out"]
    assert set(reference["held_out"]) == {"phase1", "phase2"}


@pytest.mark.slow
def test_fine_tuning_is_packed_and_lora_saves_an_adapter(users_run):
    report, _, work = users_run
    assert {task for _, task in CPU.fine_tuning()} == set(DEMO_TASKS), "both kinds of task run"
    for lora, task in CPU.fine_tuning():
        result = json.loads(
            next((work / "results" / f"{task}{'_lora' if lora else ''}").glob("*/results.json")).read_text()
        )
        assert result["model"] == str(work / "run" / "phase2")
        if lora:
            assert result["peft"]["r"] == 8
            assert "adapter" in result["saved"]
        else:
            assert report["steps"][f"finetune:{task}"]["details"]["batching"] == "packed"
            assert result["peft"] is None


@pytest.mark.slow
def test_the_push_reaches_every_branch_and_the_tables_are_written(users_run):
    report, markdown, _ = users_run
    assert set(report["steps"]["push"]["details"]["branches"]) == {"main", "phase1", "phase2"}
    loaded = report["steps"]["load"]["details"]
    assert loaded["class"] == "ModernBertModel"
    assert loaded["project_imported"] == []
    assert REPO_ID in report["steps"]["load"]["command"]
    for title in ("| step | command |", "## Held-out loss", "## Fine-tuning", "## Checks"):
        assert title in markdown
    assert report["steps"]["inference"]["details"]["longer_than_rows"] > 0


def test_write_corpus_keeps_the_first_citations_as_a_baseline_file(tmp_path):
    from benchmarks.gpu.users import demo_corpus
    from modeling.common.skips import SkipLog
    from modeling.data.sources import SourceSpec, iter_documents

    cut = write_corpus(demo_corpus(), tmp_path / "cut.xml.gz", 25)
    with gzip.open(cut, "rt") as text:
        body = text.read()
    assert body.count("<PubmedArticle>") == 25
    assert body.rstrip().endswith("</PubmedArticleSet>")
    skips = SkipLog(quiet=True)
    documents = list(iter_documents(SourceSpec("cut", str(cut), format="pubmed"), skips))
    assert 0 < len(documents) <= 25
    assert len(documents) + skips.total() == 25
