"""Run files are written whole or not at all, and typed records read back what they wrote (and older files)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from modeling.common import run_files
from modeling.common.records import Record
from modeling.finetune.run_folder import TaskResults
from modeling.pretrain.run_folder import PhaseFolder, PretrainingRun

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "run_before_layout"


@dataclass
class Inner(Record):
    value: float
    note: str = "default"


@dataclass
class Outer(Record):
    name: str
    one: Inner
    many: list[Inner]
    named: dict[str, Inner]
    maybe: Inner | None = None
    extra: list[int] = field(default_factory=list)


def test_records_round_trip_through_json_with_nested_types():
    record = Outer("x", Inner(1.5), [Inner(2.0, "b")], {"k": Inner(3.0)}, maybe=Inner(4.0), extra=[1, 2])
    again = Outer.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record
    assert isinstance(again.named["k"], Inner)
    assert isinstance(again.maybe, Inner)
    assert list(record.to_dict()) == ["name", "one", "many", "named", "maybe", "extra"]  # keys in field order


def test_older_and_newer_files_still_read():
    """A field an older file lacks takes its default; a key a newer writer added is ignored."""
    old = {"name": "x", "one": {"value": 1}, "many": [], "named": {}}
    assert Outer.from_dict(old) == Outer("x", Inner(1), [], {})
    newer = {**old, "one": {"value": 1, "added_later": True}, "unknown": 3}
    assert Outer.from_dict(newer).one == Inner(1)


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "state.json"
    run_files.write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        run_files.write_text(path, None)  # fails while writing the temporary file
    assert json.loads(path.read_text()) == {"a": 1}, "a failed write leaves the previous file whole"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_folder_appears_only_when_complete(tmp_path):
    target = tmp_path / "tokenizer"
    with pytest.raises(RuntimeError), run_files.atomic_folder(target) as tmp:
        (tmp / "vocab.json").write_text("{}")
        raise RuntimeError("killed while saving")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with run_files.atomic_folder(target) as tmp:
        (tmp / "vocab.json").write_text("{}")
    assert (target / "vocab.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer"]


def test_every_file_has_one_name(tmp_path):
    run = PretrainingRun(tmp_path)
    phase = run.phase("phase2")
    assert [p.name for p in (run.recipe_json, run.summary_json, run.plot_png)] == [
        "recipe.json",
        "training_summary.json",
        "training_curves.png",
    ]
    assert [p.name for p in (phase.state_json, phase.index_dir, phase.summary_json)] == [
        "phase_state.json",
        "index",
        "phase_summary.json",
    ]
    assert PhaseFolder.CHECKPOINT_MARKER == "checkpoint_complete.json"
    for step in (3, 12, 6):
        (phase.checkpoints_dir / f"checkpoint-{step}").mkdir(parents=True)
    (phase.checkpoints_dir / "checkpoint-last").mkdir()  # not a step: ignored
    assert [p.name for p in phase.checkpoints()] == ["checkpoint-12", "checkpoint-6", "checkpoint-3"]
    results = TaskResults(tmp_path / "results")
    assert results.run(42).folder.name == "seed42"
    assert results.run(42, lr=3e-05).folder.name == "lr3e-05-seed42"


def test_summaries_written_before_the_typed_records_still_load():
    from modeling.finetune.results import RunRecord, aggregate_runs
    from modeling.pretrain.recipe import recipe_from_dict
    from modeling.pretrain.summary import TrainingSummary

    raw = json.loads((FIXTURES / "training_summary.json").read_text())
    summary = TrainingSummary.from_dict(raw)
    assert [p.phase for p in summary.phases] == ["phase1", "phase2"]
    assert summary.phases[1].held_out.loss_end == raw["phases"][1]["held_out"]["loss_end"]
    assert (
        summary.phases[0].sources["notes"].documents_per_pass
        == raw["phases"][0]["sources"]["notes"]["documents_per_pass"]
    )
    assert summary.to_dict() == raw, "read back and written again, the file is the same"
    recipe = recipe_from_dict(json.loads((FIXTURES / "recipe.json").read_text()), validate=False)
    assert recipe.sources["notes"].domain == "clinical"
    assert recipe.hub.license == "apache-2.0"
    record = RunRecord.from_dict(json.loads((FIXTURES / "results.json").read_text()))
    assert record.to_dict() == json.loads((FIXTURES / "results.json").read_text())
    assert aggregate_runs([record], record.selection_metric).test[record.selection_metric].n == 1


def test_the_earliest_summaries_and_broken_files(tmp_path):
    """Phase summaries from before per-source counts read back with those empty; a file cut short is one line."""
    from modeling.common.errors import DataError
    from modeling.pretrain.summary import TrainingSummary

    raw = json.loads((FIXTURES / "training_summary.json").read_text())
    for phase in raw["phases"]:
        del phase["documents_trained"], phase["sources"]
    earliest = tmp_path / "training_summary.json"
    earliest.write_text(json.dumps(raw))
    summary = TrainingSummary.load(earliest)
    assert summary.phases[0].sources == {}
    assert summary.phases[0].documents_trained == {}
    assert summary.phases[1].held_out.loss_end == raw["phases"][1]["held_out"]["loss_end"]
    earliest.write_text(json.dumps(raw)[:200])
    with pytest.raises(DataError, match=r"training_summary\.json: not a readable TrainingSummary"):
        TrainingSummary.load(earliest)


def test_optional_mappings_of_records_are_rebuilt():
    from modeling.finetune.results import LearningRateResult, RunRecord, aggregate_runs

    record = RunRecord.from_dict(json.loads((FIXTURES / "results.json").read_text()))
    other = RunRecord.from_dict({**record.to_dict(), "lr": record.lr * 10})
    aggregate = aggregate_runs([record, other], record.selection_metric)
    again = type(aggregate).from_dict(json.loads(json.dumps(aggregate.to_dict())))
    assert isinstance(next(iter(again.by_lr.values())), LearningRateResult)
    assert again == aggregate


def test_temporaries_of_dead_writers_are_removed_and_those_of_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from modeling.common.run_files import remove_orphaned_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has ended
    (tmp_path / "notes").mkdir()
    orphan = tmp_path / "notes" / f"train-00000.arrow.{dead_pid}.tmp"
    live = tmp_path / "notes" / f"train-00001.arrow.{os.getpid()}.tmp"
    shard = tmp_path / "notes" / "train-00002.arrow"
    for path in (orphan, live, shard):
        path.write_bytes(b"x")
    assert remove_orphaned_temporaries(tmp_path) == 1
    assert not orphan.exists()
    assert live.exists()
    assert shard.exists()
