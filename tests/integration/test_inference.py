"""The inference CLI on a classifier finetune.py saved: notes longer than the task's max_length are cut into the
task's windows and their logits combined as fine-tuning combined them, so the CLI's scores are the run's own test
predictions."""

from __future__ import annotations

import json
import logging
import random
import shutil

import pytest
from helpers import DRUGS, make_task, sentence

from modeling.finetune.dataset import load_task_examples
from modeling.finetune.runner import run
from modeling.inference.cli import main

# A real fine-tuning run: the fast tier (-m "not slow") leaves it out.
pytestmark = pytest.mark.slow

MAX_LENGTH, STRIDE = 24, 6


def write_long_notes(folder, task_type: str, n: int = 100):
    """The helpers' easy tasks, with notes of up to about four windows of MAX_LENGTH tokens."""
    rng, rows = random.Random(0), []
    for i in range(n):
        drugs = [DRUGS[i % 3]] if task_type == "single_label" else [d for d in DRUGS[:2] if rng.random() < 0.5]
        words = [w for _ in range(rng.randint(1, 6)) for w in sentence(rng)]
        for drug in drugs:
            words.insert(rng.randrange(len(words) + 1), drug)
        rows.append({"text": " ".join(words), "label": drugs[0] if task_type == "single_label" else drugs})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "data.jsonl"


def cli_scores(model, notes, output_dir, *flags) -> list[dict]:
    assert main([str(model), str(notes), "--output_dir", str(output_dir), *flags]) == 0
    return [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]


def largest_difference(records: list[dict], expected: list[dict]) -> float:
    return max(
        abs(record["scores"][name] - probability)
        for record, row in zip(records, expected, strict=True)
        for name, probability in row["probabilities"].items()
    )


@pytest.mark.parametrize(("task_type", "aggregation"), [("single_label", "mean"), ("multi_label", "max")])
def test_cli_scores_long_notes_as_the_fine_tuning_run_predicted_them(
    tmp_path, modernbert_dir, task_type, aggregation, caplog, capsys
):
    task = make_task(
        tmp_path,
        modernbert_dir,
        task_type,
        data={"loader": "jsonl", "path": str(write_long_notes(tmp_path / "long_notes", task_type))},
        max_length=MAX_LENGTH,
        window_stride=STRIDE,
        window_aggregation=aggregation,
        training={"lr": 5e-3, "epochs": 2, "batch_size": 8},
    )
    run(task)
    run_folder = tmp_path / "results" / "seed3"
    record = json.loads((run_folder / "results.json").read_text())
    predicted = {row["id"]: row for row in map(json.loads, (run_folder / "predictions_test.jsonl").open())}
    test_notes = load_task_examples(task)[0]["test"]
    notes = tmp_path / "test_notes.jsonl"
    notes.write_text("".join(json.dumps({"text": e.text}) + "\n" for e in test_notes))
    expected = [predicted[e.id] for e in test_notes]

    with caplog.at_level(logging.INFO, logger="modeling.inference.encoder"):
        records = cli_scores(run_folder / "model", notes, tmp_path / "windowed")
    assert f"fine-tuned on windows of {MAX_LENGTH} tokens, {STRIDE} shared, the {aggregation} of" in caplog.text
    # the notes fine-tuning cut into windows, and into as many windows
    longer = [r for r in records if r["windows"] > 1]
    assert len(longer) == record["longer_than_max_length"]["test"] >= len(records) // 2
    assert sum(r["windows"] for r in records) == record["windows"]["test"]
    assert all(r["tokens"] > MAX_LENGTH and not r["truncated"] for r in longer)
    assert f"{len(longer)} longer than {MAX_LENGTH} tokens cut into windows" in capsys.readouterr().out
    # ... and scored as its test predictions scored them
    assert largest_difference(records, expected) <= 1e-5
    if task_type == "single_label":
        assert [r["labels"] for r in records] == [[row["label"]] for row in expected]
    else:
        assert [r["labels"] for r in records] == [row["labels"] for row in expected]

    # Without the run's record the classifier cuts long notes at its max positions (one truncated window):
    # the scores of the long notes are not the run's, so the comparison above fails when windowing is skipped.
    alone = tmp_path / "model_alone"
    shutil.copytree(run_folder / "model", alone)
    cut = cli_scores(alone, notes, tmp_path / "cut", "--max_length", str(MAX_LENGTH))
    assert "windows" not in cut[0]
    assert sum(r["truncated"] for r in cut) == len(longer)
    long_rows = [i for i, r in enumerate(records) if r["windows"] > 1]
    assert largest_difference([cut[i] for i in long_rows], [expected[i] for i in long_rows]) > 1e-3
    short_rows = [i for i, r in enumerate(records) if r["windows"] == 1]
    assert largest_difference([cut[i] for i in short_rows], [expected[i] for i in short_rows]) <= 1e-5
