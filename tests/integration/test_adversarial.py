"""Bad inputs and faults, as an adversarial user would try them, across recipes, corpora, stores, runs and
checkpoints, task files, inference and publishing. Each ends in one line naming the culprit and exit code
2 (or, where the README promises it, a counted skip or a warning and success), never a traceback.

Commands run in this process (`main(argv)`), in a folder of their own; faults that need a real signal or
standard input run as subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from helpers import SCRIPT, script_env, synthetic_documents, tiny_model_config, train, write_recipe

import finetune
import train_mlm
from modeling.inference import cli as inference_cli
from modeling.publish import hub

# End-to-end runs of training or of several processes: the fast tier (-m "not slow") leaves them out.
pytestmark = pytest.mark.slow


@dataclass
class Case:
    name: str
    command: str  # train | prepare | finetune | infer | publish
    expected: str  # in the one error line
    changes: dict = field(default_factory=dict)  # recipe / task changes (dotted keys)
    files: dict = field(default_factory=dict)  # file name -> bytes, written in the case's folder
    argv: list = field(default_factory=list)  # extra arguments ({dir} = the case's folder)
    exit_code: int = 2


# A folder even root cannot write in (sysfs), standing in for a read-only mount: the machines run as root, where a
# chmod changes nothing.
UNWRITABLE = "/sys/kernel"


def _notes(n=200, seed=1) -> bytes:
    return ("\n".join(synthetic_documents(n, seed=seed)) + "\n").encode()


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


TASK_ROWS = [{"text": " ".join(synthetic_documents(1, seed=i)), "label": "a" if i % 2 else "b"} for i in range(60)]

RECIPE_CASES = [
    Case("recipe file missing", "train", "recipe file not found", argv=["{dir}/nope.yaml"]),
    Case("recipe not YAML", "train", "recipe.yaml:2:6: not valid YAML", files={"recipe.yaml": b"name: x\n  - y: [\n"}),
    Case("recipe is a list", "train", "expected a mapping of recipe settings", files={"recipe.yaml": b"- a\n- b\n"}),
    Case("unknown top-level key", "train", "unknown key 'optimiser'", changes={"optimiser": {"lr": 1}}),
    Case(
        "unknown nested key", "train", "unknown key 'optimizer.learning_rate'", changes={"optimizer.learning_rate": 1}
    ),
    Case(
        "typo in model.config",
        "train",
        "model.config.hidden_sise: not a setting ModernBertConfig reads",
        changes={"model.config.hidden_sise": 64},
    ),
    Case("masking above 1", "train", "phases.0.masking (start=1.2)", changes={"phases.0.masking": 1.2}),
    Case("phase name with a slash", "train", "phases.0.name='../up'", changes={"phases.0.name": "../up"}),
    Case("run name that is a path", "train", "name='a/b'", changes={"name": "a/b"}),
    Case("override not YAML", "train", "--optimizer.lr '{': not a valid YAML value", argv=["--optimizer.lr", "{"]),
    Case(
        "override of a phase that is not there",
        "train",
        "no entry named 'phase9'",
        argv=["--phases.phase9.masking", "0.2"],
    ),
    Case("override without a value", "train", "--seed: missing value", argv=["--seed"]),
    Case(
        "row length above the model's positions",
        "train",
        "above the model's max_position_embeddings",
        changes={"max_seq_length": 1024},
    ),
    Case("retired key", "train", "data.shuffle_buffer: no longer a setting", changes={"data.shuffle_buffer": 10}),
    Case("epochs with weights", "train", "epochs need natural proportion", changes={"phases.0.length": {"epochs": 1}}),
    Case(
        "output_dir is a file", "train", "output_dir=", changes={"output_dir": "{dir}/a_file"}, files={"a_file": b"x"}
    ),
    Case(
        "output_dir read-only",
        "train",
        f"output_dir={UNWRITABLE}/run: cannot write in",
        changes={"output_dir": f"{UNWRITABLE}/run"},
    ),
    Case(
        "no tokenizer for a fresh model",
        "train",
        "tokenizer.path: a fresh model needs a tokenizer",
        changes={"tokenizer.train_vocab_size": None},
    ),
    Case(
        "a batch the processes cannot share",
        "train",
        "not divisible by batch.per_device",
        changes={"batch.per_device": 3},
    ),
]

CORPUS_CASES = [
    Case(
        "source file missing",
        "prepare",
        "no file matches '/nonexistent/notes.txt'",
        changes={"sources.notes.path": "/nonexistent/notes.txt"},
    ),
    Case(
        "empty source file",
        "prepare",
        "empty.txt: empty file",
        files={"empty.txt": b""},
        changes={"sources.notes": {"path": "{dir}/empty.txt", "format": "text"}},
    ),
    Case(
        "malformed JSONL",
        "prepare",
        "bad.jsonl:2: malformed JSON",
        files={"bad.jsonl": b'{"text": "a"}\n{"text": x\n'},
        changes={"sources.abstracts": "{dir}/bad.jsonl"},
    ),
    Case(
        "bytes that are not UTF-8",
        "prepare",
        "latin.txt:2: not valid UTF-8",
        files={"latin.txt": "ok\nfi\u00e8vre\n".encode("latin-1")},
        changes={"sources.notes": {"path": "{dir}/latin.txt", "format": "text"}},
    ),
    Case(
        "a source with nothing to train on",
        "train",
        "source 'notes' yielded no training documents",
        files={"blank.jsonl": b'{"text": ""}\n{"text": "  "}\n'},
        changes={"sources.notes": {"path": "{dir}/blank.jsonl", "format": "jsonl"}},
    ),
    Case(
        "corrupt gzip",
        "prepare",
        "notes.txt.gz: cannot read file",
        files={"notes.txt.gz": b"\x1f\x8b not gzip"},
        changes={"sources.notes": {"path": "{dir}/notes.txt.gz", "format": "text"}},
    ),
    Case(
        "unknown source option",
        "prepare",
        "source 'notes': unknown key 'colum'",
        changes={"sources.notes": {"path": "x.txt", "colum": "text"}},
    ),
    Case(
        "CSV without the text column",
        "prepare",
        "no column 'text'",
        files={"notes.csv": b"id,body\n1,fever\n"},
        changes={"sources.notes": {"path": "{dir}/notes.csv", "format": "csv"}},
    ),
    Case(
        "store read-only",
        "prepare",
        f"store.path={UNWRITABLE}/store: cannot write",
        changes={"store.path": f"{UNWRITABLE}/store"},
    ),
    Case(
        "store path is a file",
        "prepare",
        "store.path=",
        files={"store_file": b"x"},
        changes={"store.path": "{dir}/store_file"},
    ),
]

TASK_CASES = [
    Case("task config missing", "finetune", "task config not found", argv=["{dir}/nope.yaml"]),
    Case("unknown loader", "finetune", "data.loader='nope'", changes={"data.loader": "nope"}),
    Case(
        "label not in the list",
        "finetune",
        "label 'c' is not in the label list",
        files={"data.jsonl": _jsonl(TASK_ROWS + [{"text": "x y", "label": "c"}])},
    ),
    Case(
        "null text",
        "finetune",
        "data.jsonl:61: null text in field 'text'",
        files={"data.jsonl": _jsonl(TASK_ROWS + [{"text": None, "label": "a"}])},
    ),
    Case(
        "empty text",
        "finetune",
        "data.jsonl:61: empty text in field 'text'",
        files={"data.jsonl": _jsonl(TASK_ROWS + [{"text": "  ", "label": "a"}])},
    ),
    Case(
        "empty split file",
        "finetune",
        "test.jsonl: no records (the test split",
        files={"train.jsonl": _jsonl(TASK_ROWS[:40]), "dev.jsonl": _jsonl(TASK_ROWS[40:]), "test.jsonl": b""},
        changes={"data.files": {"train": "train.jsonl", "validation": "dev.jsonl", "test": "test.jsonl"}},
    ),
    Case(
        "unreadable Parquet",
        "finetune",
        "data.parquet: not a readable Parquet file",
        files={"data.parquet": b"PAR1 this is not parquet"},
        changes={"data.loader": "parquet", "data.path": "{dir}/data.parquet"},
    ),
    Case("missing model folder", "finetune", "model: folder", changes={"model": "{dir}/no_model"}),
    Case("results path is a file", "finetune", "output_dir=", files={"res": b"x"}, changes={"output_dir": "{dir}/res"}),
    Case(
        "results read-only", "finetune", f"output_dir={UNWRITABLE}: cannot write in", changes={"output_dir": UNWRITABLE}
    ),
    Case("fine-tuning a model with custom code", "finetune", "asks for custom code", changes={"model": "{remote}"}),
    Case(
        "fine-tuning with a tokenizer with custom code",
        "finetune",
        "tokenizer_config.json: asks for custom code (AutoTokenizer",
        changes={"model": "{remote_tokenizer}"},
    ),
    Case("task name that is a path", "finetune", "name='x/../y'", changes={"name": "x/../y"}),
    Case(
        "a setting the loader does not read",
        "finetune",
        "data.unit: not read by loader 'jsonl'",
        changes={"data.unit": "snippet"},
    ),
    Case(
        "task config not a mapping",
        "finetune",
        "expected a mapping of task settings",
        files={"task.yaml": b"[1, 2]\n"},
        argv=["{dir}/task.yaml"],
    ),
]

INFERENCE_CASES = [
    Case(
        "notes file missing", "infer", "no file matches", argv=["{model}", "{dir}/nope.txt", "--output_dir", "{dir}/o"]
    ),
    Case(
        "notes all blank",
        "infer",
        "notes.txt: empty file",
        files={"notes.txt": b"\n  \n"},
        argv=["{model}", "{dir}/notes.txt", "--output_dir", "{dir}/o"],
    ),
    Case(
        "model folder missing",
        "infer",
        "no_model",
        files={"notes.txt": b"fever\n"},
        argv=["{dir}/no_model", "{dir}/notes.txt", "--output_dir", "{dir}/o"],
    ),
    Case(
        "inference output_dir read-only",
        "infer",
        f"--output_dir={UNWRITABLE}/o: cannot write in {UNWRITABLE}",
        files={"notes.txt": b"fever\n"},
        argv=["{model}", "{dir}/notes.txt", "--output_dir", f"{UNWRITABLE}/o"],
    ),
    Case(
        "output_dir is a file",
        "infer",
        "--output_dir=",
        files={"notes.txt": b"fever\n", "o": b"x"},
        argv=["{model}", "{dir}/notes.txt", "--output_dir", "{dir}/o"],
    ),
    Case(
        "model with custom code",
        "infer",
        "asks for custom code",
        files={"notes.txt": b"fever\n"},
        argv=["{remote}", "{dir}/notes.txt", "--output_dir", "{dir}/o"],
    ),
    Case(
        "model with only pickle weights",
        "infer",
        "holds only pickle weights",
        files={"notes.txt": b"fever\n"},
        argv=["{pickled}", "{dir}/notes.txt", "--output_dir", "{dir}/o"],
    ),
]

PUBLISH_CASES = [
    Case("card of a folder that is no model", "publish", "not a model folder", argv=["card", "{dir}"]),
    Case("card of a model no run recorded", "publish", "no training_summary.json beside it", argv=["card", "{model}"]),
    Case(
        "push of truncated weights",
        "publish",
        "model.safetensors cannot be read (SafetensorError: Error while deserializing header",
        files={"model.safetensors": b"\x40\x00\x00\x00\x00\x00\x00\x00{"},  # a header cut short
        argv=["push", "{dir}", "--repo", "org/model"],
    ),
]

CASES = RECIPE_CASES + CORPUS_CASES + TASK_CASES + INFERENCE_CASES + PUBLISH_CASES


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_tokenizer):
    """A tiny encoder, one whose config and one whose tokenizer ask for custom code, and one with pickle
    weights only."""
    import torch

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    from transformers import ModernBertForMaskedLM

    model = ModernBertForMaskedLM(tiny_model_config(tiny_tokenizer))
    for name in ("model", "remote", "remote_tokenizer", "pickled"):
        model.save_pretrained(root / name)
        tiny_tokenizer.save_pretrained(root / name)
    config = json.loads((root / "remote" / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (root / "remote" / "config.json").write_text(json.dumps(config))
    (root / "remote" / "modeling_evil.py").write_text("open('RAN', 'w').write('custom code ran')\n")
    tokenizer_config = json.loads((root / "remote_tokenizer" / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (root / "remote_tokenizer" / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (root / "remote_tokenizer" / "tokenization_evil.py").write_text("open('RAN', 'w').write('custom code ran')\n")
    weights = root / "pickled" / "model.safetensors"
    torch.save({}, root / "pickled" / "pytorch_model.bin")
    weights.unlink()
    return {name: root / name for name in ("model", "remote", "remote_tokenizer", "pickled")}


def _task_config(folder: Path, model: str, changes: dict, models: dict | None = None) -> Path:
    from modeling.common.config import apply_override

    if not (folder / "data.jsonl").exists():
        (folder / "data.jsonl").write_bytes(_jsonl(TASK_ROWS))
    raw = {"name": "adversarial", "task": "single_label", "model": model, "labels": ["a", "b"],
           "output_dir": str(folder / "results"), "data": {"loader": "jsonl", "path": str(folder / "data.jsonl")},
           "split": {"seed": 0, "validation": 0.2, "test": 0.2}, "max_length": 32, "window_stride": 8, "seeds": [1],
           "training": {"epochs": 1, "batch_size": 8}}  # fmt: skip
    for key, value in changes.items():
        if key == "data.files":
            raw["data"]["path"] = str(folder)
        apply_override(raw, key, _fill(value, folder, models))
    path = folder / "task.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _fill(value, folder: Path, models: dict | None = None):
    if isinstance(value, str):
        value = value.replace("{dir}", str(folder))
        for name, path in (models or {}).items():
            value = value.replace("{" + name + "}", str(path))
        return value
    if isinstance(value, dict):
        return {k: _fill(v, folder, models) for k, v in value.items()}
    return value


def run_case(case: Case, folder: Path, models: dict) -> tuple[int, str]:
    for name, data in case.files.items():
        (folder / name).write_bytes(data)
    argv = [_fill(a, folder, models) for a in case.argv]
    if case.command in ("train", "prepare"):
        changes = {k: _fill(v, folder) for k, v in case.changes.items()}
        if not argv or argv[0].startswith("--"):
            recipe = folder / "recipe.yaml" if "recipe.yaml" in case.files else write_recipe(folder, **changes)
            argv = [str(recipe), *argv]
        argv = ["prepare", *argv] if case.command == "prepare" else argv
        return train_mlm.main(argv), "prepare"
    if case.command == "finetune":
        if not argv:
            argv = [str(_task_config(folder, str(models["model"]), case.changes, models))]
        return finetune.main(argv), ""
    if case.command == "infer":
        return inference_cli.main(argv), ""
    return hub.main(argv), ""


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_ends_in_one_line(case, tmp_path, models, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _ = run_case(case, tmp_path, models)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == case.exit_code, err[-2000:]
    assert len(errors) == 1, err[-2000:]
    assert case.expected in errors[0], err[-2000:]
    assert "Traceback" not in err
    assert not list(tmp_path.rglob("RAN"))
    assert not list(models["model"].parent.rglob("RAN"))


# ---------------------------------------------------------------- runs, checkpoints and signals


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (with its store), copied by each fault case."""
    root = tmp_path_factory.mktemp("finished")
    train(root, write_recipe(root, **{"phases.1.length": {"steps": 4}}))
    return root


def _copy_run(finished: Path, tmp_path: Path) -> Path:
    for name in ("out", "stores", "corpus"):
        shutil.copytree(finished / name, tmp_path / name)
    return write_recipe(tmp_path, **{"phases.1.length": {"steps": 4}})


def _fault_resume_with_another_learning_rate(run, recipe, capsys):
    code = train_mlm.main([str(recipe), "--resume", "--optimizer.lr", "0.1"])
    return code, "--resume: the recipe differs from the run's", 2


def _fault_without_resume(run, recipe, capsys):
    return train_mlm.main([str(recipe)]), "already holds a run; pass --resume", 2


def _fault_truncated_phase_weights(run, recipe, capsys):
    weights = run / "out" / "phase1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return train_mlm.main([str(recipe), "--resume"]), "phase 'phase1' is marked complete but its model.safetensors", 2


def _fault_truncated_shard(run, recipe, capsys):
    shard = next((run / "stores" / "tiny" / "notes").glob("train-*.arrow"))
    shard.write_bytes(shard.read_bytes()[:100])
    (run / "out" / "phase2" / "phase_summary.json").unlink()
    return train_mlm.main([str(recipe), "--resume"]), "the manifest says", 2


def _fault_store_for_another_holdout(run, recipe, capsys):
    shutil.rmtree(run / "out")
    return train_mlm.main([str(recipe), "--holdout.fraction", "0.2"]), "holds out 0.05 of the documents", 2


def _fault_lock_held_by_a_live_process(run, recipe, capsys):
    (run / "out" / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename}))
    return train_mlm.main([str(recipe), "--resume"]), "is training into it", 2


def _fault_lock_left_by_a_dead_process(run, recipe, capsys):
    (run / "out" / ".lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename}))
    return train_mlm.main([str(recipe), "--resume"]), None, 0  # taken over; nothing left to train


def _fault_empty_checkpoint_marker(run, recipe, capsys):
    phase2 = run / "out" / "phase2"
    (phase2 / "phase_summary.json").unlink()
    newest = sorted((phase2 / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    (newest / "checkpoint_complete.json").write_text("")  # killed while the marker was written
    return train_mlm.main([str(recipe), "--resume"]), None, 0  # the one before is used, with a warning


RUN_FAULTS = {name[len("_fault_") :]: f for name, f in globals().items() if name.startswith("_fault_")}


@pytest.mark.parametrize("fault", sorted(RUN_FAULTS))
def test_faults_of_runs_and_checkpoints(fault, finished, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.chdir(tmp_path)
    recipe = _copy_run(finished, tmp_path)
    code, expected, exit_code = RUN_FAULTS[fault](tmp_path, recipe, capsys)
    err = capsys.readouterr().err
    assert code == exit_code, err[-2000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    if expected is None:
        assert not errors
    else:
        assert len(errors) == 1, err[-2000:]
        assert expected in errors[0], err[-2000:]
    if fault == "empty_checkpoint_marker":
        assert "is incomplete (checkpoint_complete.json cannot be read)" in caplog.text
    if fault == "resume_with_another_learning_rate":
        assert json.loads((tmp_path / "out" / "recipe.json").read_text())["optimizer"]["lr"] != 0.1


def test_custom_code_never_runs_whatever_standard_input_says(tmp_path, models):
    """Pretraining from a folder that asks for custom code, with "y" waiting on standard input."""
    recipe = write_recipe(tmp_path, **{"model.init": str(models["remote"]), "model.config": None,
                                       "tokenizer": {"path": str(models["model"])}})  # fmt: skip
    result = subprocess.run([sys.executable, SCRIPT, str(recipe)], input="y\ny\n", capture_output=True, text=True,
                            env=script_env(tmp_path), cwd=tmp_path, timeout=300)  # fmt: skip
    assert result.returncode == 2
    assert "asks for custom code (AutoModel in auto_map)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("RAN"))
    assert not list(models["remote"].glob("RAN"))


@pytest.mark.parametrize("signum", [signal.SIGTERM])  # SIGINT takes the same handler: tests/unit/common/test_cli.py
def test_an_interrupted_run_says_how_to_continue(tmp_path, signum):
    recipe = write_recipe(tmp_path, **{"phases.0.length.steps": 400})
    process = subprocess.Popen([sys.executable, SCRIPT, str(recipe)], env=script_env(tmp_path), cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    marker = tmp_path / "out" / "phase1" / "phase_state.json"
    deadline = time.time() + 240
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signum)
    err = process.communicate(timeout=120)[1]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert process.returncode == 130
    assert "Traceback" not in err
    assert len(lines) == 1
    assert "interrupted; continue with: accelerate launch train_mlm.py" in lines[0]
    assert lines[0].endswith("--resume")
    assert not (tmp_path / "out" / ".lock").exists()


def test_nothing_local_is_uploaded(tmp_path, finished):
    """The recipe and summaries staged for the Hub hold file names, not this machine's folders."""
    from modeling.publish.card import build_card

    card = build_card(finished / "out" / "phase2", "org/tiny", license="apache-2.0")
    for name in ("recipe.json", "training_summary.json"):
        text = card.files[name].decode()
        assert str(finished) not in text, name
        assert "/tmp/" not in text, name
    assert json.loads(card.files["recipe.json"])["sources"]["notes"]["path"] == "notes.txt"


def test_a_moved_run_resumes(tmp_path, finished):
    """Paths a run records are relative to its folder: moved elsewhere, it resumes from its checkpoints."""
    moved = tmp_path / "elsewhere"
    shutil.copytree(finished, moved)
    phase2 = moved / "out" / "phase2"
    (phase2 / "phase_summary.json").unlink()
    summary = json.loads((moved / "out" / "phase1" / "phase_summary.json").read_text())
    assert not os.path.isabs(summary["final_checkpoint"])
    assert not os.path.isabs(summary["model_dir"])
    result = train(moved, write_recipe(moved, **{"phases.1.length": {"steps": 4}}), "--resume")
    assert "resuming from" in result.stderr
    assert (phase2 / "phase_summary.json").exists()


def test_null_and_empty_texts_are_skipped_and_counted_when_asked(tmp_path, models, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rows = TASK_ROWS + [{"text": None, "label": "a"}, {"text": "", "label": "b"}, {"text": None, "label": "b"}]
    (tmp_path / "data.jsonl").write_bytes(_jsonl(rows))
    config = _task_config(tmp_path, str(models["model"]), {"data.on_bad_record": "skip"})
    assert finetune.main([str(config)]) == 0, capsys.readouterr().err[-2000:]
    results = json.loads((tmp_path / "results" / "seed1" / "results.json").read_text())
    assert results["skipped_or_repaired"] == {"null text in field 'text'": 2, "empty text in field 'text'": 1}
    assert sum(results["examples"].values()) == len(TASK_ROWS)


def test_a_late_config_error_does_not_block_the_corrected_rerun(tmp_path, monkeypatch, capsys):
    """Rows longer than the model's positions are found only once the model is built (after the store is
    prepared): the run stops with one line, and the corrected rerun starts fresh without --resume."""
    monkeypatch.chdir(tmp_path)
    short = {"phases.0.length.steps": 2, "phases.1.length": {"steps": 2}}
    recipe = write_recipe(tmp_path, **short, max_seq_length=512)
    assert train_mlm.main([str(recipe)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert "max_seq_length=512: above the model's max_position_embeddings" in errors[0]
    assert (tmp_path / "stores" / "tiny").is_dir()  # found late: the store was prepared first
    assert not (tmp_path / "out" / "recipe.json").exists()
    assert not (tmp_path / "out" / ".lock").exists()
    recipe = write_recipe(tmp_path, **short)
    assert train_mlm.main([str(recipe)]) == 0, capsys.readouterr().err[-2000:]
    assert (tmp_path / "out" / "phase2" / "phase_summary.json").exists()
