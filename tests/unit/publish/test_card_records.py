"""Runs recorded before the typed records (tests/fixtures/run_before_layout) still get model cards, written
from their figures by the templates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import tiny_model_config
from huggingface_hub import ModelCard
from transformers import ModernBertForMaskedLM, ModernBertForSequenceClassification

from modeling.publish.card import build_card

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "run_before_layout"


@pytest.fixture
def old_run(tmp_path, tiny_tokenizer):
    """The recorded files, around tiny weights: a pretraining run with its phase2 folder, and one fine-tuned seed."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("training_summary.json", "recipe.json"):
        shutil.copy(FIXTURES / name, out / name)
    torch.manual_seed(0)
    phase2 = out / "phase2"
    ModernBertForMaskedLM(tiny_model_config(tiny_tokenizer)).save_pretrained(phase2)
    tiny_tokenizer.save_pretrained(phase2)
    record = json.loads((FIXTURES / "results.json").read_text())
    record["model"] = str(phase2)  # the run's paths, relocated to this machine
    seed = tmp_path / "results" / "own" / "seed3"
    config = tiny_model_config(tiny_tokenizer, num_labels=3, id2label=dict(enumerate(record["config"]["labels"])))
    ModernBertForSequenceClassification(config).save_pretrained(seed / "model")
    tiny_tokenizer.save_pretrained(seed / "model")
    (seed / "results.json").write_text(json.dumps(record, indent=2))
    return {"phase2": phase2, "results": tmp_path / "results", "record": record, "seed": seed}


def test_encoder_card_from_a_run_recorded_before(old_run):
    summary = json.loads((FIXTURES / "training_summary.json").read_text())
    card = build_card(old_run["phase2"], "org/tiny", results=[old_run["results"]])
    text = card.files["README.md"].decode()
    phase1, phase2 = summary["phases"]
    for phase in (phase1, phase2):
        held = phase["held_out"]
        assert f"| {phase['phase']} |" in text
        assert f"{held['loss_start']:.3f} -> {held['loss_end']:.3f}" in text
    assert f"Held-out MLM loss ended at {phase2['held_out']['loss_end']:.3f}" in text
    assert "Held-out MLM loss per source" not in text  # recorded before sources were measured
    assert "**Clinical text.**" in text
    assert "`notes` 100.0%" in text  # the recipe marks notes clinical
    record = old_run["record"]
    selected = record["metrics"]["test"][record["selection_metric"]]
    assert (
        f"| easy_single_label | single-label classification | **{record['selection_metric']}** | {selected:.4f}" in text
    )
    loaded = ModelCard(text)
    assert loaded.data.license == "apache-2.0"
    assert loaded.data.eval_results[0].metric_value == round(selected, 4)
    assert {"training_summary.json", "recipe.json", "model.safetensors", "README.md"} <= set(card.files)


def test_task_card_from_a_run_recorded_before(old_run):
    card = build_card(old_run["seed"] / "model", "org/tiny-task", base_model="org/tiny")
    text = card.files["README.md"].decode()
    record = old_run["record"]
    assert "fine-tuned from [org/tiny](https://huggingface.co/org/tiny)" in text
    assert f"This checkpoint is seed {record['seed']}" in text
    for label, count in record["label_counts"]["train"].items():
        assert f"| {label} | {count} |" in text
    assert "| metric | validation | test | test min | test max | this checkpoint (test) |" in text
    assert "**Not a medical device.**" in text
    assert "**Protected health information.**" not in text


def test_encoder_card_shows_the_stores_contamination_check(old_run, tmp_path, monkeypatch):
    from modeling.data.contamination import ContaminationReport, DocumentOverlap, SplitOverlap

    monkeypatch.chdir(tmp_path)  # the recipe's store.path is relative: stores/NAME where the run was made
    name = json.loads((FIXTURES / "recipe.json").read_text())["name"]
    report = ContaminationReport(
        store=f"stores/{name}",
        ngram=13,
        store_documents=1000,
        store_tokens=300_000,
        processes=2,
        seconds=0.5,
        text_keys=True,
        splits=[SplitOverlap("chemprot", "test", 400, 3, 17, 120_000, 6_000)],
        documents=[DocumentOverlap("chemprot", "test", "test.tsv:12", 300, 288, 288, 1.0, True, ["pubmed/x#4"])],
    )
    (tmp_path / "stores" / name).mkdir(parents=True)
    (tmp_path / "stores" / name / "contamination.json").write_text(json.dumps(report.to_dict()))
    card = build_card(old_run["phase2"], "org/tiny", results=[old_run["results"]])
    text = card.files["README.md"].decode()
    assert "### Evaluation text in the pretraining data" in text
    assert "| chemprot | test | 400 | 3 | 17 | 5.0% |" in text
    assert json.loads(card.files["contamination.json"])["splits"][0]["whole"] == 3


def test_encoder_card_says_nothing_of_contamination_without_a_check(old_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = build_card(old_run["phase2"], "org/tiny", results=[old_run["results"]]).files["README.md"].decode()
    assert "pretraining data whole" not in text
