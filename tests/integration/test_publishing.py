"""Publishing, end to end against a real HTTP server on 127.0.0.1 (tests/fake_hub.py): a tiny two-phase run
that pushes each phase as it ends, fine-tuning results on its last phase, cards filled from both, pushes
that arrive byte for byte on the right branch, retries, resuming a failed push, and loading what arrived."""

import json
import os
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fake_hub import FakeHub
from helpers import ROOT, make_task, tiny_model_config, write_recipe
from huggingface_hub import ModelCard

from modeling.common.errors import ConfigError
from modeling.finetune.runner import run as finetune
from modeling.publish import hub

# End-to-end runs of training or of several processes: the fast tier (-m "not slow") leaves them out.
pytestmark = pytest.mark.slow

TOKEN = "hf_TestSecretToken0123456789"
REPO = "clinical-org/tiny-bioclinical"


@pytest.fixture(scope="module")
def fake_hub():
    with FakeHub(TOKEN) as server:
        yield server


@pytest.fixture(autouse=True)
def _online_to_the_local_hub(fake_hub, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # conftest keeps the real Hub off
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)


@pytest.fixture(scope="module")
def run(tmp_path_factory, fake_hub):
    """train_mlm.py with hub.repo_id set, so each phase is pushed when it ends; then fine-tuning on its last
    phase (two seeds), a random-init baseline and a LoRA adapter."""
    tmp = tmp_path_factory.mktemp("publish")
    recipe = write_recipe(
        tmp,
        **{
            "hub.repo_id": REPO,
            "hub.license": "apache-2.0",
            "hub.private": True,
            "hub.push_every": 3,  # revisions step-0000003, step-0000006 in phase 1, then phase 2's
            "checkpoint.keep": 20,  # every checkpoint stays, to compare the revisions with
            "sources.notes.domain": "clinical",
        },
    )
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp / "cache"),
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": fake_hub.url,
        "HF_TOKEN": TOKEN,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    result = subprocess.run(
        [sys.executable, str(ROOT / "train_mlm.py"), str(recipe)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out, encoder = tmp / "out", str(tmp / "out" / "phase2")
    common = dict(seeds=[3, 4], training={"lr": 5e-3, "epochs": 2, "batch_size": 8, "logging_steps": 5})
    finetune(make_task(tmp / "ft", encoder, "single_label", output_dir=str(tmp / "results" / "own"), **common))
    finetune(
        make_task(
            tmp / "ft", encoder, "single_label", output_dir=str(tmp / "results" / "random"), random_init=True, **common
        )
    )
    finetune(
        make_task(
            tmp / "ft",
            encoder,
            "single_label",
            output_dir=str(tmp / "lora"),
            seeds=[3],
            training=common["training"],
            peft={"r": 4, "alpha": 8, "dropout": 0.0},
        )
    )
    return {"tmp": tmp, "out": out, "results": tmp / "results", "log": result.stderr}


def _digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_training_pushed_each_phase_to_its_branch_and_the_last_to_main(run, fake_hub):
    assert fake_hub.repos[REPO]["private"] is True
    assert {"phase1", "phase2", "main"} <= set(fake_hub.repos[REPO]["branches"])
    for branch, phase in (("phase1", "phase1"), ("phase2", "phase2"), ("main", "phase2")):
        arrived = fake_hub.files(REPO, branch)
        assert arrived["model.safetensors"] == (run["out"] / phase / "model.safetensors").read_bytes()
        assert ModelCard(arrived["README.md"].decode()).data.pipeline_tag == "fill-mask"
    assert 'revision="phase1"' in fake_hub.files(REPO, "phase1")["README.md"].decode()
    assert TOKEN not in run["log"]


def test_revisions_are_pushed_as_sorting_branches_with_the_checkpoints_weights(run, fake_hub, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM

    out = run["out"]
    phases = [json.loads((out / p / "phase_summary.json").read_text()) for p in ("phase1", "phase2")]
    expected = []
    for before, phase in zip((0, phases[0]["steps"]), phases, strict=True):
        expected += [(phase["phase"], s, before + s) for s in range(3, phase["steps"], 3)]
    assert len(expected) >= 3
    records = [r for phase in phases for r in phase["revisions"]]
    assert [(r["phase"], r["step"], r["run_step"]) for r in records] == expected
    assert [r["revision"] for r in records] == sorted(r["revision"] for r in records)  # names sort in run order
    branches = set(fake_hub.repos[REPO]["branches"])
    assert {r["revision"] for r in records} <= branches
    for record in records:
        assert record["revision"] == f"step-{record['run_step']:07d}"
        assert record["rows_trained"] == record["step"] * 8  # global_sequences
        arrived = fake_hub.files(REPO, record["revision"])
        assert json.loads(arrived["revision.json"]) == record
        card = arrived["README.md"].decode()
        assert f'revision="{record["revision"]}"' in card and "data-order" in card
        # the weights are the checkpoint's at that step
        checkpoint = load_file(
            out / record["phase"] / "checkpoints" / f"checkpoint-{record['step']}" / "model.safetensors"
        )
        pushed = load_file(
            fake_hub.write_out(REPO, record["revision"], tmp_path / record["revision"]) / "model.safetensors"
        )
        assert pushed.keys() <= checkpoint.keys()
        assert all(torch.equal(pushed[k], checkpoint[k]) for k in pushed)
        # its held-out loss is the one logged at that step
        history = phases[[p["phase"] for p in phases].index(record["phase"])]["log_history"]
        logged = [e["held_out_loss"] for e in history if e.get("step") == record["step"] and "held_out_loss" in e]
        assert logged == [record["held_out_loss"]]
        # pushed: only the record stays on disk
        assert sorted(p.name for p in (out / record["phase"] / "revisions" / record["revision"]).iterdir()) == [
            "revision.json"
        ]
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path / records[0]["revision"])
    assert loaded.config.model_type == "modernbert"
    main_card = fake_hub.files(REPO, "main")["README.md"].decode()
    for record in records:
        assert f"[`{record['revision']}`](https://huggingface.co/{REPO}/tree/{record['revision']})" in main_card


def test_data_order_lists_the_rows_the_trainer_fed_at_a_step(run, capsys, monkeypatch):
    """The documents `train_mlm.py data-order` names for phase1 step 2 rebuild, row for row, the batches the
    phase's Trainer reads for its second optimizer step (4 rows per device x 2 accumulation steps)."""
    import numpy as np

    import train_mlm
    from modeling.common.loading import load_tokenizer
    from modeling.data.store import Store
    from modeling.pretrain.model import build_model
    from modeling.pretrain.prepare import open_store
    from modeling.pretrain.recipe import recipe_from_dict
    from modeling.pretrain.runner import set_up_phase

    monkeypatch.chdir(run["tmp"])  # where the run was started: its store is stores/NAME there
    answer = run["tmp"] / "order.json"
    argv = ["data-order", str(run["out"]), "--phase", "phase1", "--step", "2", "--json", str(answer)]
    indexes = run["tmp"] / "stores" / "tiny" / "row_indexes"
    built_by_training = sorted(p.name for p in indexes.iterdir())
    assert train_mlm.main(argv) == 0
    assert sorted(p.name for p in indexes.iterdir()) == built_by_training  # it read the index training read
    printed = capsys.readouterr().out
    assert "phase phase1, step 2: rows 8 to 15" in printed
    pieces = json.loads(answer.read_text())
    assert sorted({p["row"] for p in pieces}) == list(range(8, 16))

    recipe = recipe_from_dict(json.loads((run["out"] / "recipe.json").read_text()))
    store = open_store(recipe)
    tokenizer = load_tokenizer(store.folder.tokenizer_dir)
    setup = set_up_phase(recipe, 0, build_model(recipe, tokenizer), tokenizer, store, None)
    batches = iter(setup.trainer.get_train_dataloader())
    fed = [next(batches) for _ in range(4)][2:]  # step 2: the third and fourth batches
    fed_rows = []
    for batch in fed:
        original = torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])  # masking undone
        fed_rows += [ids[ids != tokenizer.pad_token_id].tolist() for ids in original]
    shards = Store(recipe.store_dir())
    rebuilt = []
    for row in range(8, 16):
        ids = []
        for p in (p for p in pieces if p["row"] == row):
            tokens = shards.split(p["source"]).tokens(p["document"], p["start"], p["tokens"])
            ids += [tokenizer.cls_token_id, *np.asarray(tokens).tolist(), tokenizer.sep_token_id]
        rebuilt.append(ids)
    assert rebuilt == fed_rows


def test_card_is_filled_from_the_run_and_parses_back(run, tmp_path):
    stage = tmp_path / "stage"
    assert (
        hub.main(
            [
                "card",
                str(run["out"] / "phase2"),
                "--repo",
                REPO,
                "--results",
                str(run["results"]),
                "--stage",
                str(stage),
            ]
        )
        == 0
    )
    card = ModelCard.load(stage / "README.md")
    data = card.data
    assert (data.license, data.library_name, data.pipeline_tag, data.language) == (
        "apache-2.0",
        "transformers",
        "fill-mask",
        ["en"],
    )
    assert "clinical" in data.tags
    assert data.base_model is None  # a fresh model: no base model to name
    # model-index: the selection metric's mean over the two seeds, test split
    seeds = [json.loads(p.read_text()) for p in sorted((run["results"] / "own").glob("seed*/results.json"))]
    (result,) = data.eval_results
    assert (result.dataset_name, result.dataset_split, result.metric_type) == (
        "easy_single_label",
        "test",
        "weighted_f1",
    )
    assert result.metric_value == round(statistics.fmean(r["metrics"]["test"]["weighted_f1"] for r in seeds), 4)
    # the recipe table and the clinical share come from training_summary.json
    summary = json.loads((run["out"] / "training_summary.json").read_text())
    tokens = summary["total"]["tokens_per_source"]
    assert f"{tokens['notes']:,}" in card.text
    assert f"{tokens['abstracts']:,}" in card.text
    # each source's own held-out loss, before and after each phase; phase 2 trains on notes only
    phase2 = summary["phases"][1]["held_out_sources"]
    for name, record in phase2.items():
        assert f"`{name}` from {record['loss_start']:.3f} to {record['loss_end']:.3f}" in card.text
    assert f"to {phase2['abstracts']['loss_end']:.3f} (not trained on)" in card.text
    assert f"| **{phase2['notes']['loss_end']:.3f}** |" in card.text
    share = tokens["notes"] / sum(tokens.values())
    assert f"({share:.1%}) are clinical notes" in card.text
    assert "PHI" in card.text
    random = [json.loads(p.read_text()) for p in sorted((run["results"] / "random").glob("seed*/results.json"))]
    random_mean = statistics.fmean(r["metrics"]["test"]["weighted_f1"] for r in random)
    assert re.search(rf"\*\*weighted_f1\*\* \| [0-9.]+ \+- [0-9.]+ \| 2 \| {random_mean:.4f}", card.text)
    listed = {p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file()} - {hub.STAGE_MARKER}
    assert {
        "README.md",
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "training_curves.png",
        "training_summary.json",
        "eval/easy_single_label/aggregate.json",
    } <= listed
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in listed)
    with pytest.raises(ConfigError, match="not a staging folder"):  # never clears a folder it did not write
        hub.prepare(run["out"] / "phase2", REPO, run["out"] / "phase1")
    assert (run["out"] / "phase1" / "model.safetensors").exists()


def test_push_arrives_byte_for_byte_and_loads_with_stock_transformers(run, tmp_path, fake_hub):
    from transformers import AutoModel, pipeline

    repo, stage = "clinical-org/pushed", tmp_path / "stage"
    result = hub.push(run["out"] / "phase2", repo, results=[run["results"]], revision="phase2", stage_dir=stage)
    arrived = fake_hub.files(repo, "phase2")
    staged = {k: v for k, v in _digest(stage).items() if k != hub.STAGE_MARKER}
    assert arrived == staged
    assert sorted(arrived) == [f["path"] for f in result["files"]]
    assert arrived["model.safetensors"] == (run["out"] / "phase2" / "model.safetensors").read_bytes()
    assert fake_hub.repos[repo]["private"] is False
    downloaded = fake_hub.write_out(repo, "phase2", tmp_path / "downloaded")
    model = AutoModel.from_pretrained(downloaded)
    assert model.config.model_type == "modernbert"
    fill = pipeline("fill-mask", model=str(downloaded))
    assert len(fill("patient denies chest [MASK] fever")) == 5
    # the card's usage snippets run as written, with the repo id pointing at what arrived
    snippets = re.findall(r"```python\n(.*?)```", arrived["README.md"].decode(), re.S)
    assert len(snippets) == 2
    for code in snippets:
        exec(
            code.replace(f'"{repo}", revision="phase2"', f'"{downloaded}"').replace(f'"{repo}"', f'"{downloaded}"'), {}
        )


def test_transient_errors_are_retried_with_backoff(run, fake_hub, caplog):
    repo = "clinical-org/flaky"
    fake_hub.fail = {"create": [503, 502], "commit": [503]}
    hub.push(run["out"] / "phase2", repo, retry_wait=0.01)
    assert fake_hub.fail == {"create": [], "commit": []}  # every injected failure was met, then it went through
    assert "model.safetensors" in fake_hub.files(repo)
    assert "retry 2 of 4" in caplog.text
    assert TOKEN not in caplog.text


def test_failed_push_leaves_the_folder_untouched_and_the_printed_command_resumes(run, fake_hub, capsys, caplog):
    repo, folder = "clinical-org/resumed", run["out"] / "phase2"
    before = _digest(folder)
    fake_hub.fail = {"commit": [403]}  # not transient: fails at once
    assert hub.main(["push", str(folder), "--repo", repo, "--private", "--retry-wait", "0.01"]) == 1
    err = capsys.readouterr().err
    assert "403" in err
    assert f"{folder} is untouched" in err
    assert TOKEN not in err + caplog.text
    resume = err.split("Resume with:\n")[1].strip()
    assert _digest(folder) == before
    assert not fake_hub.files(repo)
    args = shlex.split(resume)
    assert args[:4] == ["python", "-m", "modeling.publish", "push"]
    assert "--private" in args
    assert hub.main(args[3:]) == 0
    assert fake_hub.files(repo)["model.safetensors"] == (folder / "model.safetensors").read_bytes()


def test_task_model_and_adapter_cards_name_their_base_and_their_snippets_run(run, tmp_path, fake_hub):
    seed_dir = run["results"] / "own" / "seed3"
    hub.push(seed_dir / "model", "clinical-org/tiny-task", base_model=REPO)
    arrived = fake_hub.files("clinical-org/tiny-task")
    card = ModelCard(arrived["README.md"].decode())
    assert (card.data.pipeline_tag, card.data.base_model, card.data.library_name) == (
        "text-classification",
        REPO,
        "transformers",
    )
    own = json.loads((seed_dir / "results.json").read_text())
    assert f"{own['metrics']['test']['weighted_f1']:.4f}" in card.text
    assert {"results.json", "eval/aggregate.json", "curves.png"} <= set(arrived)
    task_dir = fake_hub.write_out("clinical-org/tiny-task", "main", tmp_path / "task")
    encoder_dir = fake_hub.write_out(REPO, "main", tmp_path / "encoder")
    for code in re.findall(r"```python\n(.*?)```", card.text, re.S):
        exec(code.replace('"clinical-org/tiny-task"', f'"{task_dir}"'), {})

    adapter = run["tmp"] / "lora" / "seed3" / "adapter"
    with pytest.raises(ConfigError, match="--base_model"):
        hub.push(adapter, "clinical-org/tiny-adapter")
    hub.push(adapter, "clinical-org/tiny-adapter", base_model=REPO)
    arrived = fake_hub.files("clinical-org/tiny-adapter")
    assert json.loads(arrived["adapter_config.json"])["base_model_name_or_path"] == REPO
    assert "adapter_model.safetensors" in arrived
    card = ModelCard(arrived["README.md"].decode())
    assert (card.data.library_name, card.data.base_model) == ("peft", REPO)
    adapter_dir = fake_hub.write_out("clinical-org/tiny-adapter", "main", tmp_path / "adapter")
    scope = {}
    for code in re.findall(r"```python\n(.*?)```", card.text, re.S):
        exec(
            code.replace(f'"{REPO}"', f'"{encoder_dir}"').replace('"clinical-org/tiny-adapter"', f'"{adapter_dir}"'),
            scope,
        )
    assert scope["logits"].shape == (1, 3)


def test_pickle_weights_are_refused_unless_allowed_and_never_published(tmp_path, tiny_tokenizer):
    from transformers import AutoModelForMaskedLM, ModernBertForMaskedLM

    from modeling.common.loading import load_pretrained
    from modeling.publish.card import _model_files

    folder = tmp_path / "pickled"
    model = ModernBertForMaskedLM(tiny_model_config(tiny_tokenizer))
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="pickle weights.*--model.allow_pickle true"):
        load_pretrained(AutoModelForMaskedLM, str(folder))
    loaded = load_pretrained(AutoModelForMaskedLM, str(folder), allow_pickle=True)
    assert torch.equal(loaded.model.embeddings.tok_embeddings.weight, model.model.embeddings.tok_embeddings.weight)
    model.save_pretrained(folder)  # safetensors beside the pickle: only the safetensors go out
    kept, left_out = _model_files(folder)
    assert "model.safetensors" in kept
    assert "pytorch_model.bin" not in kept
    assert "pickle" in left_out["pytorch_model.bin"]


def test_the_project_never_turns_on_trust_remote_code():
    sources = [p for p in [*ROOT.glob("*.py"), *(ROOT / "modeling").rglob("*.py")]]
    offenders = [str(p) for p in sources if re.search(r"trust_remote_code\s*=\s*True", p.read_text())]
    assert sources
    assert not offenders
