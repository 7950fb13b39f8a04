"""End to end on a tiny recipe: phases, outputs that stock transformers loads, resume after a kill,
two processes under accelerate, and bad input stopping with one line."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import SCRIPT, TWO_PROCESSES, phase_weights, script_env, synthetic_documents, train, write_recipe

# End-to-end runs of training or of several processes: the fast tier (-m "not slow") leaves them out.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("run")
    recipe = write_recipe(tmp_path, **{"logging.report_to": ["tensorboard"], "holdout.every_steps": CURVE_EVERY})
    (tmp_path / "stdout.txt").write_text(train(tmp_path, recipe).stdout)
    return tmp_path / "out"


CURVE_EVERY = 4  # steps between measurements of each source's held-out loss in finished_run


def test_each_phase_leaves_a_folder_stock_transformers_loads(finished_run):
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, pipeline

    for phase in ("phase1", "phase2"):
        folder = finished_run / phase
        assert (folder / "model.safetensors").exists()
        assert not list(folder.glob("*.bin"))
        assert not list(folder.glob("*.pt"))
        assert not list(folder.glob("*.pth"))
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == "modernbert"
        assert not config.get("sparse_prediction")
        assert "auto_map" not in config
        mlm = AutoModelForMaskedLM.from_pretrained(folder)
        assert type(mlm).__name__ == "ModernBertForMaskedLM"
        assert type(AutoModel.from_pretrained(folder)).__name__ == "ModernBertModel"
        tokenizer = AutoTokenizer.from_pretrained(folder)
        logits = mlm(**tokenizer("patient denies chest [MASK] fever", return_tensors="pt")).logits
        assert logits.shape[-1] == mlm.config.vocab_size
        assert logits.dim() == 3
        predictions = pipeline("fill-mask", model=str(folder))("patient denies chest [MASK] fever")
        assert len(predictions) == 5
        assert all("token_str" in p for p in predictions)


def test_row_indexes_are_kept_with_the_store_for_every_run_on_it(finished_run):
    indexes = finished_run.parent / "stores" / "tiny" / "row_indexes"
    assert len(list(indexes.glob("weighted-*.npz"))) == 1  # phase 1: weighted
    assert len(list(indexes.glob("epoch-00000-*.npz"))) == 1  # phase 2: natural proportion, one epoch
    assert not (finished_run / "phase1" / "index").exists()
    assert not (finished_run / "phase2" / "index").exists()


def test_contamination_command_finds_the_task_documents_the_store_trains_on(finished_run):
    """Test documents copied from the store's training notes (re-cased, re-wrapped) are found whole; documents in
    other words, and a note the store holds out, are not; the report is written beside the store."""
    import yaml

    from modeling.data.store import is_held_out

    root = finished_run.parent
    notes = (root / "corpus" / "notes.txt").read_text().splitlines()
    trained = [n for n in notes if n and not is_held_out(n, 0.05)]
    held_out = [n for n in notes if n and is_held_out(n, 0.05)]
    other = ["zebra quartz violin harbor meadow lantern copper orchid glacier saddle " * 3] * 2
    files = {
        "train": ["zebra"] * 4,
        "validation": [other[0], held_out[0]],
        "test": [trained[3].upper(), trained[9].replace(" ", "\n ", 4), trained[20], other[1]],
    }
    data = root / "task"
    data.mkdir(exist_ok=True)
    for split, texts in files.items():
        (data / f"{split}.jsonl").write_text("".join(json.dumps({"text": t, "label": "a"}) + "\n" for t in texts))
    config = {
        "name": "copied",
        "task": "single_label",
        "model": "unused",
        "labels": ["a", "b"],
        "data": {"loader": "jsonl", "path": None, "files": {s: f"{s}.jsonl" for s in files}},
    }
    (root / "copied.yaml").write_text(yaml.safe_dump(config))
    result = train(root, "contamination", root / "recipe.yaml", "--task", root / "copied.yaml", "--data_dir", data)
    assert "copied" in result.stdout
    report = json.loads((root / "stores" / "tiny" / "contamination.json").read_text())
    whole = {(d["split"], d["id"].rsplit(":", 1)[-1]) for d in report["documents"] if d["whole"]}
    assert whole == {("test", "1"), ("test", "2"), ("test", "3")}  # file:line of the three copies
    splits = {s["split"]: s for s in report["splits"]}
    assert splits["test"]["documents"] == 4
    assert splits["validation"]["whole"] == 0
    assert report["ngram"] == 13
    refused = train(root, "contamination", root / "recipe.yaml", check=False)
    assert refused.returncode != 0
    assert "--task" in refused.stderr

    # A clean store: prepare leaves the task's documents out, and every document sharing a 13-token run with them
    clean = ["--store.path", str(root / "stores" / "clean")]
    exclude = ["--store.exclude_tasks", json.dumps([{"config": str(root / "copied.yaml"), "data_dir": str(data)}])]
    train(root, "prepare", root / "recipe.yaml", *clean, *exclude)
    manifest = json.loads((root / "stores" / "clean" / "manifest.json").read_text())
    assert manifest["exclusion"]["documents"] == 6  # validation 2 + test 4
    assert manifest["sources"]["notes"]["skipped"]["an evaluation document"] == 4  # 3 copies, the held-out note
    train(root, "contamination", root / "recipe.yaml", *clean, "--task", root / "copied.yaml", "--data_dir", data)
    report = json.loads((root / "stores" / "clean" / "contamination.json").read_text())
    assert all(s["whole"] == 0 for s in report["splits"])
    assert all(s["with_ngram"] == 0 for s in report["splits"])
    mismatch = train(root, "prepare", root / "recipe.yaml", *clean, check=False)  # the recipe leaves out nothing
    assert mismatch.returncode != 0
    assert "store.exclude_tasks" in mismatch.stderr


def test_summary_counts_tokens_and_loss_falls_in_both_phases(finished_run):
    summary = json.loads((finished_run / "training_summary.json").read_text())
    phase1, phase2 = summary["phases"]
    assert phase1["steps"] == 8
    assert phase2["steps"] >= 10
    assert set(phase1["tokens_per_source"]) == {"notes", "abstracts"}
    assert all(phase1["tokens_per_source"].values())
    assert set(phase2["tokens_per_source"]) == {"notes"}
    assert phase1["tokens"] == sum(phase1["tokens_per_source"].values())
    assert phase1["tokens"] <= phase1["steps"] * 8 * 128
    assert phase1["row_fill"] > 0.8
    assert summary["total"]["tokens"] == phase1["tokens"] + phase2["tokens"]
    for phase in (phase1, phase2):
        assert phase["held_out"]["loss_end"] < phase["held_out"]["loss_start"]
        assert phase["wall_time_s"] > 0
        assert phase["tokens_per_second"] > 0
        for name, source in phase["sources"].items():
            assert source["first_pass_complete"]
            assert source["held_out_per_pass"] > 0
            assert 0 < phase["documents_trained"][name]
    # One epoch of notes, cut to whole steps: nearly every document of a pass, and never more.
    notes = phase2["sources"]["notes"]
    assert 0.8 * notes["documents_per_pass"] <= phase2["documents_trained"]["notes"] <= notes["documents_per_pass"]
    assert notes["documents_per_pass"] + notes["held_out_per_pass"] == 400
    assert abs(phase1["masking"]["measured"] - 0.3) < 0.03
    assert 0.15 < phase2["masking"]["measured"] < 0.3  # the 0.30 -> 0.15 ramp
    assert phase2["lr"]["decay"] == "1-sqrt"
    assert phase2["lr"]["decay_steps"] == phase2["steps"]
    logged = [
        e
        for e in (json.loads((finished_run / "phase2" / "phase_summary.json").read_text())["log_history"])
        if "loss" in e
    ]
    assert logged[0]["masking_rate"] > logged[-1]["masking_rate"]
    assert logged[-1]["learning_rate"] < logged[0]["learning_rate"]
    assert (finished_run / "training_curves.png").stat().st_size > 10_000


def test_each_sources_held_out_loss_is_the_saved_models_loss_on_that_sources_own_slice(finished_run):
    """Every source the recipe trains on is measured in every phase, trained in it or not: the recorded loss equals
    the saved phase model's loss on the source's slice, built and masked here from the store; a phase starts where
    the one before it ended, and the curve has a point every `holdout.every_steps`."""
    import statistics

    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from modeling.common.attention import packed_model_inputs
    from modeling.data.packing import Packing
    from modeling.data.rows import source_held_out_rows
    from modeling.data.store import Store
    from modeling.pretrain.masking import MLMCollator
    from modeling.pretrain.schedules import MaskingSchedule
    from modeling.pretrain.summary import PhaseSummary

    store = Store(finished_run.parent / "stores" / "tiny")
    phases = [PhaseSummary.load(finished_run / name / "phase_summary.json") for name in ("phase1", "phase2")]
    for phase in phases:
        assert set(phase.held_out_sources) == {"notes", "abstracts"}
        assert phase.held_out_sources["notes"].trained
        assert phase.held_out_sources["abstracts"].trained == (phase.phase == "phase1")
        model = AutoModelForMaskedLM.from_pretrained(finished_run / phase.phase).eval()
        tokenizer = AutoTokenizer.from_pretrained(finished_run / phase.phase)
        packing = Packing.of(tokenizer, 128)
        for name, record in phase.held_out_sources.items():
            rows = source_held_out_rows(store, name, 7, 20, packing)  # holdout.max_documents of the recipe
            assert record.rows == len(rows)
            assert record.masking == 0.15  # the last phase's final rate, in every phase
            collator = MLMCollator(
                tokenizer, packing, MaskingSchedule(0.15, 0.15, len(rows)), 7, f"held-out/source/{name}"
            )
            losses = []
            for first in range(0, len(rows), 4):  # the Trainer's evaluation: batches of 4, mean over rows
                batch = packed_model_inputs(collator(rows[first : first + 4]), model.config, model.dtype)
                with torch.no_grad():
                    losses += [model(**batch).loss.item()] * len(rows[first : first + 4])
            assert record.loss_end == pytest.approx(statistics.fmean(losses), abs=1e-4)
            curve = phase.source_curve(name)
            assert curve[0][1] == record.loss_start
            assert curve[-1][1] == record.loss_end
            assert len(curve) == 2 + len(range(CURVE_EVERY, phase.steps, CURVE_EVERY))
            assert [tokens for tokens, _ in curve] == sorted(tokens for tokens, _ in curve)
            assert curve[-1][0] == phase.tokens
        # measuring mid-phase leaves the training log whole: an entry every logging.steps (2), first step included
        logged = [e["step"] for e in phase.log_history if "loss" in e]
        assert logged == [1, *range(2, phase.steps + 1, 2)]
    for name in ("notes", "abstracts"):
        after_phase1 = phases[0].held_out_sources[name].loss_end
        assert phases[1].held_out_sources[name].loss_start == pytest.approx(after_phase1, abs=1e-6)
    printed = (finished_run.parent / "stdout.txt").read_text()
    assert "held-out loss per source" in printed
    abstracts = next(line for line in printed.splitlines() if line.startswith("abstracts "))
    first, second = (phase.held_out_sources["abstracts"] for phase in phases)
    assert f"{first.loss_end:.3f}*" in abstracts  # trained in phase 1
    assert f"{second.loss_end:.3f} " in abstracts + " "  # not in phase 2
    assert f"{first.loss_start:.3f}" in abstracts


def test_tensorboard_gets_loss_lr_masking_rate_and_tokens(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(
        str(next((finished_run / "tensorboard" / "phase2").rglob("events.out.tfevents.*")).parent)
    )
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "train/loss",
        "train/learning_rate",
        "train/masking_rate",
        "train/tokens_seen",
        "train/tokens_per_second",
    } <= tags
    rates = [e.value for e in events.Scalars("train/masking_rate")]
    assert rates[0] > rates[-1]  # phase 2 ramps masking down


def test_resume_after_a_kill_ends_with_the_same_parameters(tmp_path, finished_run):
    """Kill the run (SIGKILL) as soon as a mid-phase checkpoint exists, resume, compare every parameter. The
    uninterrupted run also measured each source's held-out loss every few steps: measuring changes nothing trained."""
    recipe = write_recipe(tmp_path)
    process = subprocess.Popen(
        [sys.executable, SCRIPT, str(recipe)],
        env=script_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = tmp_path / "out" / "phase2" / "checkpoints" / "checkpoint-3" / "checkpoint_complete.json"
    deadline = time.time() + 240
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert marker.exists(), "killed mid-phase 2"
    assert not (tmp_path / "out" / "phase2" / "phase_summary.json").exists(), "killed mid-phase 2"
    refused = train(tmp_path, recipe, check=False)
    assert refused.returncode == 2
    assert "--resume" in refused.stderr
    train(tmp_path, recipe, "--resume")
    for phase in ("phase1", "phase2"):
        resumed, uninterrupted = phase_weights(tmp_path / "out" / phase), phase_weights(finished_run / phase)
        worst = max((resumed[k] - uninterrupted[k]).abs().max().item() for k in uninterrupted)
        print(f"killed and resumed vs uninterrupted, {phase}: max abs parameter difference {worst:.2e}")
        assert worst <= 1e-6, f"{phase}: resumed run differs by {worst}"
    summaries = [
        json.loads((root / "training_summary.json").read_text())["phases"][1]
        for root in (tmp_path / "out", finished_run)
    ]
    assert summaries[0]["tokens_per_source"] == summaries[1]["tokens_per_source"]
    assert summaries[0]["held_out"]["loss_end"] == pytest.approx(summaries[1]["held_out"]["loss_end"], abs=1e-6)
    for name in ("notes", "abstracts"):  # the start, measured before the kill, is read back from phase_state.json
        resumed, uninterrupted = (summary["held_out_sources"][name] for summary in summaries)
        assert resumed["loss_start"] == pytest.approx(uninterrupted["loss_start"], abs=1e-6)
        assert resumed["loss_end"] == pytest.approx(uninterrupted["loss_end"], abs=1e-6)


def test_revisions_survive_kills_failed_pushes_and_steps_trained_again(tmp_path):
    """hub.push_every against a local Hub whose first commit fails (403: not retried): the revision of step 3
    stays on disk with its weights. Killed once step 6's checkpoint exists, with step 6's revision
    removed (as a kill between the checkpoint and the revision leaves it), --resume pushes step 3's and takes
    step 6's again before training on. Then phase 2 trained again from its step-3 checkpoint meets revisions
    that exist and keeps them. Every revision holds its checkpoint's weights, on disk until pushed and on the
    Hub after."""
    from fake_hub import FakeHub
    from safetensors.torch import load_file

    token, repo = "hf_TestSecretToken0123456789", "org/revisions"
    settings = {"hub.push_every": 3, "checkpoint.keep": 20, "hub.repo_id": repo, "hub.license": "apache-2.0"}
    settings["phases.1.length"] = {"steps": 7}  # revisions at 3 and 6 in both phases
    recipe = write_recipe(tmp_path, **settings)
    out, phase1 = tmp_path / "out", tmp_path / "out" / "phase1"
    with FakeHub(token) as hub:
        env = {**script_env(tmp_path), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_TOKEN": token}
        hub.fail = {"commit": [403]}  # the first push, step 3's
        process = subprocess.Popen(
            [sys.executable, SCRIPT, str(recipe)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        marker = phase1 / "checkpoints" / "checkpoint-6" / "checkpoint_complete.json"
        deadline = time.time() + 240
        while not marker.exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert marker.exists() and not (phase1 / "phase_summary.json").exists(), "killed after step 6"
        assert hub.fail == {"commit": []} and (phase1 / "revisions" / "step-0000003" / "model.safetensors").exists()
        shutil.rmtree(phase1 / "revisions" / "step-0000006", ignore_errors=True)
        again = [sys.executable, SCRIPT, str(recipe), "--resume"]
        subprocess.run(again, env=env, cwd=tmp_path, check=True, capture_output=True)

        phase2 = out / "phase2"
        for path in phase2.glob("checkpoints/checkpoint-*"):  # phase 2 again, from its step-3 checkpoint
            if path.name != "checkpoint-3":
                shutil.rmtree(path)
        (phase2 / "phase_summary.json").unlink()
        result = subprocess.run(again, env=env, cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]

        summaries = json.loads((out / "training_summary.json").read_text())["phases"]
        records = [r for s in summaries for r in s["revisions"]]
        expected = [("phase1", s) for s in range(3, summaries[0]["steps"], 3)]
        expected += [("phase2", s) for s in range(3, summaries[1]["steps"], 3)]
        assert [(r["phase"], r["step"]) for r in records] == expected
        for r in records:
            checkpoint = load_file(out / r["phase"] / "checkpoints" / f"checkpoint-{r['step']}" / "model.safetensors")
            folder = hub.write_out(repo, r["revision"], tmp_path / "hub" / r["revision"])
            weights = load_file(folder / "model.safetensors")
            assert all(torch.equal(weights[k], checkpoint[k]) for k in weights), r["revision"]
            assert json.loads((folder / "config.json").read_text())["sparse_prediction"] is False
            assert [p.name for p in (out / r["phase"] / "revisions" / r["revision"]).iterdir()] == ["revision.json"]


def test_dataloader_workers_train_exactly_as_the_main_process(tmp_path):
    """Rows and masks come from the data position, not from who reads it: 2 workers give the same weights."""
    changes = {"phases.0.length.steps": 4, "phases.1.length": {"steps": 3}}
    runs = {}
    for workers in (0, 2):
        folder = tmp_path / f"workers{workers}"
        folder.mkdir()
        train(folder, write_recipe(folder, **changes, **{"data.workers": workers}))
        runs[workers] = phase_weights(folder / "out" / "phase2")
    assert max((runs[0][k] - runs[2][k]).abs().max().item() for k in runs[0]) == 0.0


def test_incomplete_last_checkpoint_is_skipped_with_a_warning(tmp_path, caplog):
    """Newer checkpoints cut off while saving (no marker, an empty marker, Trainer state behind the marker) or
    damaged since (weights or a sharded file cut short) are skipped, each with a warning saying what is wrong;
    the newest sound one is used. A sound one written under another engine stops the resume instead."""
    import torch
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file

    from modeling.common.errors import ConfigError
    from modeling.pretrain.run_folder import PhaseFolder
    from modeling.pretrain.runner import last_complete_checkpoint
    from modeling.pretrain.trainer import CheckpointMarker

    def checkpoint(phase, step: int, engine: str, marker: str | None = "", trainer_step: int | None = None):
        folder = phase / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        weights = {"w": torch.arange(64, dtype=torch.float32)}
        if engine == "ddp":
            save_file(weights, str(folder / "model.safetensors"))
            torch.save({"state": {}}, folder / "optimizer.pt")
        else:  # as FSDP2 saves them: torch.distributed.checkpoint folders (one process writes one file)
            dcp.save(weights, checkpoint_id=str(folder / "pytorch_model_fsdp_0"))
            dcp.save({"moments": torch.ones(64)}, checkpoint_id=str(folder / "optimizer_0"))
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": trainer_step or step}))
        if marker is not None:
            text = json.dumps(CheckpointMarker(step=step, engine=engine).to_dict()) if marker == "" else marker
            (folder / PhaseFolder.CHECKPOINT_MARKER).write_text(text)
        return folder

    ddp = tmp_path / "ddp"
    for step in (3, 6):
        checkpoint(ddp, step, "ddp")
    checkpoint(ddp, 9, "ddp", marker=None)
    cut = checkpoint(ddp, 12, "ddp") / "model.safetensors"
    cut.write_bytes(cut.read_bytes()[:-40])
    checkpoint(ddp, 15, "ddp", marker="{}")
    checkpoint(ddp, 18, "ddp", trainer_step=17)
    # the files Trainer loads after the weights: cut short, emptied, a flipped byte
    optimizer = checkpoint(ddp, 21, "ddp") / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:-100])
    scheduler = checkpoint(ddp, 24, "ddp") / "scheduler.pt"
    torch.save({"last_epoch": 24, "lrs": torch.arange(512.0)}, scheduler)
    damaged = bytearray(scheduler.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    scheduler.write_bytes(bytes(damaged))
    (checkpoint(ddp, 27, "ddp") / "rng_state.pth").write_bytes(b"")
    with caplog.at_level("WARNING"):
        assert last_complete_checkpoint(PhaseFolder(ddp), "ddp") == str(ddp / "checkpoints" / "checkpoint-6")
    assert "checkpoint-27 is incomplete (rng_state.pth cannot be read (BadZipFile" in caplog.text
    assert "checkpoint-24 is incomplete (scheduler.pt is damaged (its record" in caplog.text
    assert "checkpoint-21 is incomplete (optimizer.pt cannot be read (BadZipFile" in caplog.text
    assert "checkpoint-18 is incomplete (trainer_state.json is at step 17, the marker at 18)" in caplog.text
    assert "checkpoint-15 is incomplete (checkpoint_complete.json cannot be read)" in caplog.text
    assert "checkpoint-12 is incomplete (model.safetensors cannot be read" in caplog.text
    assert "checkpoint-9 is incomplete (no completion marker" in caplog.text

    fsdp2 = tmp_path / "fsdp2"
    checkpoint(fsdp2, 3, "fsdp2")
    shard = next((checkpoint(fsdp2, 6, "fsdp2") / "optimizer_0").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:-8])
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert last_complete_checkpoint(PhaseFolder(fsdp2), "fsdp2") == str(fsdp2 / "checkpoints" / "checkpoint-3")
    assert f"checkpoint-6 is incomplete (optimizer_0/{shard.name} is missing or cut short)" in caplog.text
    with pytest.raises(ConfigError, match="checkpoint-3 was saved under fsdp2 and this launch runs ddp"):
        last_complete_checkpoint(PhaseFolder(fsdp2), "ddp")

    # ZeRO: one optimizer partition per process that wrote it, and loadable only into as many processes
    zero2 = tmp_path / "zero2" / "checkpoints"
    for step, partitions in ((3, 2), (6, 1), (9, 2)):
        folder = zero2 / f"checkpoint-{step}"
        (folder / f"global_step{step}").mkdir(parents=True)
        (folder / "latest").write_text(f"global_step{step}")
        for name in ["mp_rank_00_model_states.pt"] + [
            f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(partitions)
        ]:
            torch.save({"states": torch.ones(4)}, folder / f"global_step{step}" / name)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        marker = CheckpointMarker(step=step, engine="zero2", processes=2)
        (folder / PhaseFolder.CHECKPOINT_MARKER).write_text(json.dumps(marker.to_dict()))
    partition = zero2 / "checkpoint-9" / "global_step9" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    partition.write_bytes(partition.read_bytes()[:-30])
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert last_complete_checkpoint(PhaseFolder(zero2.parent), "zero2", 2) == str(zero2 / "checkpoint-3")
    assert "checkpoint-9 is incomplete (global_step9/zero_pp_rank_1_mp_rank_00_optim_states.pt cannot" in caplog.text
    assert "checkpoint-6 is incomplete (1 optimizer partitions in global_step6/, not 2)" in caplog.text
    # another number of processes loads it (through DeepSpeed's universal checkpoint); another engine cannot
    assert last_complete_checkpoint(PhaseFolder(zero2.parent), "zero2", 4) == str(zero2 / "checkpoint-3")
    with pytest.raises(ConfigError, match="checkpoint-3 was saved under zero2 and this launch runs zero3"):
        last_complete_checkpoint(PhaseFolder(zero2.parent), "zero3", 2)


def test_two_processes_need_a_prepared_store(tmp_path):
    """Several processes never prepare a store: one would work for minutes while the others wait. Training with
    two processes, on one machine or two, is tests/integration/test_distributed.py."""
    recipe = write_recipe(tmp_path, **{"phases.0.length.steps": 3, "phases.1.length": {"steps": 2}})
    refused = subprocess.run(
        [*TWO_PROCESSES, SCRIPT, str(recipe)], capture_output=True, text=True, env=script_env(tmp_path), cwd=tmp_path
    )
    assert refused.returncode != 0
    assert "prepare it first with `python train_mlm.py prepare RECIPE`" in refused.stderr


def test_skipped_records_are_counted_and_reported(tmp_path):
    lines = [
        line
        for day in range(5)
        for line in (
            f'{{"text": "fever and cough for {day} days"}}',
            '{"text": broken',
            '{"text": ""}',
            '{"note": "no text"}',
        )
    ]
    (tmp_path / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    recipe = write_recipe(
        tmp_path,
        **{
            "sources.mixed": {"path": str(tmp_path / "mixed.jsonl"), "format": "jsonl", "on_bad_record": "skip"},
            "phases.0.sources.mixed": 1.0,
            "phases.0.length.steps": 2,
            "phases.1.length": {"steps": 1},
        },
    )
    result = train(tmp_path, recipe)
    assert "skipped, bad record at" in result.stderr
    assert "mixed.jsonl:2" in result.stderr
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    mixed = summary["phases"][0]["sources"]["mixed"]
    assert mixed["skipped_per_pass"] == {"bad record": 10, "empty document": 5}
    assert mixed["documents_per_pass"] + mixed["held_out_per_pass"] == 5
    assert summary["total"]["documents_skipped_per_pass"]["mixed"] == {"bad record": 10, "empty document": 5}


def test_pretraining_models_run_the_decoder_on_masked_positions_only(tmp_path, tiny_tokenizer):
    import torch

    from modeling.pretrain.model import build_model, reload_phase_model
    from modeling.pretrain.recipe import load_recipe

    recipe = load_recipe(write_recipe(tmp_path))
    fresh = build_model(recipe, tiny_tokenizer)
    fresh.config.sparse_prediction = False
    fresh.save_pretrained(tmp_path / "phase")  # as a finished phase is saved: dense in config.json
    input_ids = torch.randint(10, len(tiny_tokenizer), (2, 20))
    labels = torch.full_like(input_ids, -100)
    labels[0, 3], labels[1, 7], labels[1, 9] = 11, 12, 13
    for model in (build_model(recipe, tiny_tokenizer), reload_phase_model(tmp_path / "phase", recipe)):
        assert model(input_ids=input_ids, labels=labels).logits.shape == (3, model.config.vocab_size)


def test_document_sdpa_trains_the_recipe_as_dense_masks_do(tmp_path, finished_run):
    """The CPU backend the demo uses: the same run, held-out losses equal to the sdpa run's."""
    train(tmp_path, write_recipe(tmp_path, **{"model.attn_implementation": "document_sdpa"}))
    ours = json.loads((tmp_path / "out" / "training_summary.json").read_text())["phases"]
    dense = json.loads((finished_run / "training_summary.json").read_text())["phases"]
    for a, b in zip(ours, dense, strict=True):
        assert a["tokens"] == b["tokens"]
        assert abs(a["held_out"]["loss_end"] - b["held_out"]["loss_end"]) < 1e-3


def test_a_single_cpu_process_under_accelerate_launch_uses_every_core(monkeypatch):
    """accelerate launch (no config, no --cpu) sets OMP_NUM_THREADS=1; a lone CPU process takes its cores back."""
    import torch
    from accelerate import PartialState

    from modeling.common.runtime import use_every_core

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        use_every_core(PartialState(cpu=True))  # not launched by accelerate: left alone
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")  # what accelerate launch exports
        use_every_core(PartialState(cpu=True))
        assert torch.get_num_threads() == len(os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(before)


def test_a_killed_prepare_continues_to_the_store_an_uninterrupted_one_makes(tmp_path):
    """kill -9 once the first part is written, prepare again: the same shards, byte for byte."""
    corpus = tmp_path / "many"
    corpus.mkdir()
    for f in range(6):
        (corpus / f"notes{f}.txt").write_text("\n".join(synthetic_documents(3000, seed=f)) + "\n")
    changes = {"sources.notes": {"path": str(corpus / "*.txt"), "format": "text"}, "store.part_mb": 1}
    checksums = {}
    for name in ("killed", "whole"):
        folder = tmp_path / name
        folder.mkdir()
        recipe = write_recipe(folder, **changes)
        if name == "killed":
            process = subprocess.Popen(
                [sys.executable, SCRIPT, "prepare", str(recipe), "--num_proc", "1"],
                env=script_env(folder),
                cwd=folder,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            first = folder / "stores" / "tiny" / "notes" / "part-00000.json"
            deadline = time.time() + 120
            while not first.exists() and process.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            # the whole process group, as Slurm or a terminal would: killing only the main process leaves
            # datatrove's queue-manager process waiting for it forever
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            assert first.exists(), "killed mid-way"
            assert not (folder / "stores" / "tiny" / "manifest.json").exists(), "killed mid-way"
        result = train(folder, "prepare", recipe, "--num_proc", 2)
        assert "store:" in result.stdout
        manifest = json.loads((folder / "stores" / "tiny" / "manifest.json").read_text())
        checksums[name] = {
            (source, part["part"], split): shard["sha256"]
            for source, record in manifest["sources"].items()
            for part in record["parts"]
            for split, shard in part["shards"].items()
        }
    assert len(checksums["whole"]) >= 8
    assert checksums["killed"] == checksums["whole"]


def test_the_model_learns_context_not_only_token_frequencies(tmp_path):
    """On text whose words follow each other in a fixed order, a long-enough tiny run ends well below the
    held-out text's unigram entropy: the loss of a model that knows only how frequent each token is."""
    recipe = write_recipe(
        tmp_path,
        **{
            "phases": [
                {"name": "phase1", "sources": ["notes"], "masking": 0.15, "length": {"steps": 400}},
            ],
            "batch": {"global_sequences": 2, "per_device": 2},  # many small steps, as the demo learned
            "optimizer.lr": 2e-3,
            "model.config.hidden_size": 64,
            "model.config.intermediate_size": 128,
            "checkpoint.every_steps": 1000,
        },
    )
    train(tmp_path, recipe)
    held_out = json.loads((tmp_path / "out" / "training_summary.json").read_text())["phases"][0]["held_out"]
    assert held_out["loss_start"] > held_out["unigram_entropy"]  # a fresh model is worse than frequencies
    assert held_out["loss_end"] < held_out["unigram_entropy"] - 2.0, held_out  # the demo's target


def test_a_phase_whose_push_did_not_arrive_is_pushed_by_the_resume(tmp_path):
    """hub.repo_id against a local Hub whose first commit fails (403, not retried): phase 1's push is lost while
    the run goes on, as a kill during the background push loses it. --resume on the finished run pushes phase 1,
    and only it, to its branch; what arrived before is recorded in hub_pushes.json and not pushed again."""
    from fake_hub import FakeHub

    token, repo = "hf_TestSecretToken0123456789", "org/resumed-pushes"
    settings = {"hub.repo_id": repo, "hub.license": "apache-2.0", "phases.0.length.steps": 2}
    recipe = write_recipe(tmp_path, **settings, **{"phases.1.length": {"steps": 2}})
    out = tmp_path / "out"
    with FakeHub(token) as hub:
        env = {**script_env(tmp_path), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_TOKEN": token}
        hub.fail = {"commit": [403]}  # phase 1's push
        subprocess.run([sys.executable, SCRIPT, str(recipe)], env=env, cwd=tmp_path, check=True, capture_output=True)
        assert "model.safetensors" not in hub.files(repo, "phase1")  # the branch was made, its commit refused
        assert {"phase2", "main"} <= set(hub.repos[repo]["branches"])
        assert json.loads((out / "hub_pushes.json").read_text())["pushed"] == {"phase2": ["main", "phase2"]}
        main_sha = hub.revision_sha(repo, "main")
        again = [sys.executable, SCRIPT, str(recipe), "--resume"]
        result = subprocess.run(again, env=env, cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "phase phase1: not yet on org/resumed-pushes (phase1)" in result.stderr
        assert hub.files(repo, "phase1")["model.safetensors"] == (out / "phase1" / "model.safetensors").read_bytes()
        assert hub.revision_sha(repo, "main") == main_sha, "what had arrived is not pushed again"
        recorded = json.loads((out / "hub_pushes.json").read_text())["pushed"]
        assert recorded == {"phase1": ["phase1"], "phase2": ["main", "phase2"]}
