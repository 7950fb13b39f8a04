"""Real fine-tuning runs of tiny models (ModernBERT and BERT) on easy fixture tasks, offline."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import DRUGS, ROOT, launch_command, make_task, sentence
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

from modeling.finetune.dataset import load_task_examples
from modeling.finetune.encoding import encode_split, load_task_tokenizer
from modeling.finetune.model import build_task_model
from modeling.finetune.runner import run
from modeling.finetune.trainer import score_split

# End-to-end runs of training or of several processes: the fast tier (-m "not slow") leaves them out.
pytestmark = pytest.mark.slow


def untrained_validation(task, seed):
    """The validation score of the model a run starts from (same seed -> same head initialisation)."""
    splits, _ = load_task_examples(task)
    tokenizer = load_task_tokenizer(task.model, task.task)
    split = encode_split("validation", splits["validation"], tokenizer, task, task.max_length, sort_by_length=True)
    model = build_task_model(task, seed).eval()
    batches = []
    for start in range(0, len(split.features), 16):
        features = split.features[start : start + 16]
        padded = tokenizer.pad(
            [{k: f[k] for k in ("input_ids", "attention_mask")} for f in features], return_tensors="pt"
        )
        with torch.no_grad():
            logits = model(**padded).logits.numpy()
        if logits.ndim == 3:  # pad the token axis to the longest window overall
            logits = np.pad(logits, ((0, 0), (0, task.max_length - logits.shape[1]), (0, 0)))
        batches.append(logits)
    scores, _ = score_split(task, split, np.concatenate(batches))
    return scores[task.metric_for_selection]


@pytest.mark.parametrize("task_type", ["single_label", "multi_label", "ner"])
def test_tiny_modernbert_learns_each_task_type(tmp_path, modernbert_dir, task_type):
    task = make_task(tmp_path, modernbert_dir, task_type)
    before = untrained_validation(task, seed=3)
    summary = run(task)
    record = json.loads((tmp_path / "results" / "seed3" / "results.json").read_text())
    after = record["metrics"]["validation"][task.metric_for_selection]
    print(f"{task_type}: validation {task.metric_for_selection} {before:.3f} untrained -> {after:.3f}")
    assert after > before + 0.2
    assert after > 0.6
    # the best epoch is the one whose validation score is highest, and it is the model that was tested
    by_epoch = {row["epoch"]: row[task.metric_for_selection] for row in record["validation_by_epoch"]}
    assert by_epoch[record["best_epoch"]] == max(by_epoch.values()) == pytest.approx(after)
    assert set(record["metric_descriptions"]) <= set(record["metrics"]["test"])
    assert summary.test[task.metric_for_selection].n == 1
    # the saved model is the best epoch's: reloaded, it scores the same on validation
    auto = AutoModelForTokenClassification if task_type == "ner" else AutoModelForSequenceClassification
    reloaded = auto.from_pretrained(record["saved"]["model"])
    assert reloaded.config.id2label[1] == task.tag_names[1]
    reloaded_task = make_task(tmp_path / "again", record["saved"]["model"], task_type)
    assert untrained_validation(reloaded_task, seed=3) == pytest.approx(after, abs=1e-6)


@pytest.mark.parametrize("task_type", ["multi_label", "ner"])
def test_packed_run_follows_the_padded_random_batches_run(tmp_path, modernbert_dir, task_type):
    """Packing changes how a batch is laid out, not which examples it holds or what the model computes: the two
    runs see the same batches and their losses and validation scores agree to float rounding."""
    records = {}
    for batching in ("random", "packed"):
        task = make_task(
            tmp_path / batching,
            modernbert_dir,
            task_type,
            training={"lr": 5e-3, "epochs": 2, "batch_size": 8, "logging_steps": 1, "batching": batching},
            save_model=False,
        )
        run(task)
        records[batching] = json.loads((tmp_path / batching / "results" / "seed3" / "results.json").read_text())
    random_run, packed_run = records["random"], records["packed"]
    assert (random_run["batching"], packed_run["batching"]) == ("random", "packed")
    assert [step for step, _ in packed_run["train_loss"]] == [step for step, _ in random_run["train_loss"]]
    assert len(packed_run["train_loss"]) > 20
    np.testing.assert_allclose(
        [loss for _, loss in packed_run["train_loss"]], [loss for _, loss in random_run["train_loss"]], atol=1e-4
    )
    for packed_epoch, random_epoch in zip(
        packed_run["validation_by_epoch"], random_run["validation_by_epoch"], strict=True
    ):
        assert packed_epoch["loss"] == pytest.approx(random_epoch["loss"], abs=1e-4)
    metric = "seqeval_f1" if task_type == "ner" else "weighted_f1"
    assert packed_run["metrics"]["test"][metric] == pytest.approx(random_run["metrics"]["test"][metric], abs=1e-3)


def test_ner_predictions_are_spans_with_character_offsets(tmp_path, modernbert_dir):
    task = make_task(tmp_path, modernbert_dir, "ner", save_model=False)
    run(task)
    rows = [json.loads(line) for line in (tmp_path / "results" / "seed3" / "predictions_test.jsonl").open()]
    splits, _ = load_task_examples(task)
    texts = {e.id: e.text for e in splits["test"]}
    assert len(rows) == len(texts)
    for row in rows:
        for entity in row["entities"] + row["gold_entities"]:
            assert texts[row["id"]][entity["start"] : entity["end"]] == entity["text"]
    assert sum(len(r["gold_entities"]) for r in rows) > 0
    assert not (tmp_path / "results" / "seed3" / "model").exists()


def test_non_modernbert_encoder_with_two_seeds_aggregated(tmp_path, bert_dir, caplog):
    # On random batches the tiny BERT stays at the majority class for a few epochs (seed 3 left it at epoch 4 of
    # 6, and once in CI not at all), so it gets 10.
    task = make_task(
        tmp_path, bert_dir, "single_label", seeds=[3, 4], training={"lr": 5e-3, "epochs": 10, "batch_size": 8}
    )
    assert task.training.batching == "packed"  # the default, which BERT cannot do
    before = untrained_validation(task, seed=3)
    with caplog.at_level(logging.INFO, logger="modeling.finetune.runner"):
        summary = run(task)
    assert "packed needs a ModernBERT encoder (this one is 'bert'); training on padded random batches" in caplog.text
    records = [json.loads((tmp_path / "results" / f"seed{s}" / "results.json").read_text()) for s in (3, 4)]
    assert [r["batching"] for r in records] == ["random", "random"]
    values = [r["metrics"]["test"]["accuracy"] for r in records]
    assert summary.test["accuracy"].mean == pytest.approx(np.mean(values))
    assert summary.test["accuracy"].std == pytest.approx(np.std(values, ddof=1))
    assert summary.test["accuracy"].min == min(values)
    assert records[0]["metrics"]["validation"]["weighted_f1"] > before + 0.2
    rows = [json.loads(line) for line in (tmp_path / "results" / "seed3" / "predictions_test.jsonl").open()]
    assert rows[0]["label"] in DRUGS
    assert sum(rows[0]["probabilities"].values()) == pytest.approx(1, abs=0.0001)
    saved = json.loads((tmp_path / "results" / "aggregate.json").read_text())
    assert saved["seeds"] == [3, 4]
    assert "| accuracy |" in (tmp_path / "results" / "aggregate.md").read_text()
    # the aggregate command rebuilds the same figures from the results.json files
    out = subprocess.run(
        [sys.executable, "finetune.py", "aggregate", str(tmp_path / "results")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"{summary.test['accuracy'].mean:.4f} +- {summary.test['accuracy'].std:.4f}" in out


def test_lora_adapter_saved_alone_reloads_and_merges(tmp_path, modernbert_dir):
    from peft import PeftModel

    task = make_task(tmp_path, modernbert_dir, "single_label", peft={"r": 4, "alpha": 8, "dropout": 0.0, "merge": True})
    model = build_task_model(task, seed=3)
    trainable = {n.split(".")[-2] if "lora" in n else n for n, p in model.named_parameters() if p.requires_grad}
    assert any(("lora_A" in n for n, _ in model.named_parameters()))
    assert not any("embeddings" in n for n in trainable)
    run(task)
    record = json.loads((tmp_path / "results" / "seed3" / "results.json").read_text())
    adapter, merged = record["saved"]["adapter"], record["saved"]["model"]
    assert sorted(p.name for p in (tmp_path / "results" / "seed3" / "adapter").glob("adapter_*")) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    base = AutoModelForSequenceClassification.from_pretrained(
        modernbert_dir, num_labels=3, classifier_pooling=task.classifier_pooling
    )
    with_adapter = PeftModel.from_pretrained(base, adapter).eval()
    plain = AutoModelForSequenceClassification.from_pretrained(merged).eval()
    tokenizer = load_task_tokenizer(modernbert_dir, "single_label")
    batch = tokenizer(["patient took insulin", "metformin at discharge home"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(with_adapter(**batch).logits, plain(**batch).logits, atol=1e-5)
    assert record["metrics"]["validation"]["weighted_f1"] > 0.5


def test_learning_rate_grid_picks_the_best_mean_validation(tmp_path, modernbert_dir):
    task = make_task(
        tmp_path, modernbert_dir, "single_label", training={"lr_grid": [1e-7, 3e-3], "epochs": 3}, save_model=False
    )
    summary = run(task)
    assert summary.lr == 0.003
    assert set(summary.by_lr) == {"1e-07", "0.003"}
    assert summary.by_lr["0.003"].validation["weighted_f1"].mean > summary.by_lr["1e-07"].validation["weighted_f1"].mean


def test_cli_reports_a_bad_config_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: ner\nlabels: [A]\ndata: {loader: brat, path: /nowhere, unit: sentence}\n")
    result = subprocess.run([sys.executable, "finetune.py", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: bad.yaml: data.unit='sentence': allowed values are file, snippet"


def test_two_processes_under_fsdp2_write_one_result_with_every_test_example(tmp_path, modernbert_dir):
    """The shipped FSDP2 config on two CPU processes: the best epoch's sharded weights are saved whole, and
    predictions gathered from both processes come back in order."""
    import yaml

    task = make_task(tmp_path, modernbert_dir, "ner", training={"lr": 5e-3, "epochs": 4, "batch_size": 8})
    path = tmp_path / "task.yaml"
    raw = json.loads(json.dumps(__import__("dataclasses").asdict(task)))
    path.write_text(yaml.safe_dump(raw))
    command = [*launch_command("8gpu_fsdp2.yaml"), "finetune.py", str(path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training under fsdp2" in result.stderr
    record = json.loads((tmp_path / "results" / "seed3" / "results.json").read_text())
    rows = (tmp_path / "results" / "seed3" / "predictions_test.jsonl").read_text().splitlines()
    assert len(rows) == record["examples"]["test"]
    assert len({json.loads(r)["id"] for r in rows}) == len(rows)
    # 2 processes x 4 rows = the global batch of 8: steps per epoch as with one process
    assert record["validation_by_epoch"][0]["step"] == -(-record["windows"]["train"] // 8)
    # predictions gathered from both processes are in order: one process scoring the saved model agrees
    alone = make_task(tmp_path / "alone", record["saved"]["model"], "ner")
    splits, _ = load_task_examples(alone)
    tokenizer = load_task_tokenizer(alone.model, "ner")
    test = encode_split("test", splits["test"], tokenizer, alone, alone.max_length, sort_by_length=True)
    model = AutoModelForTokenClassification.from_pretrained(alone.model).eval()
    logits = np.zeros((len(test.features), alone.max_length, len(alone.tag_names)), dtype=np.float32)
    for i, feature in enumerate(test.features):
        with torch.no_grad():
            logits[i, : len(feature["input_ids"])] = (
                model(input_ids=torch.tensor([feature["input_ids"]])).logits[0].numpy()
            )
    scores, _ = score_split(alone, test, logits)
    assert record["metrics"]["test"]["seqeval_f1"] > 0.5  # a model that found entities, so order matters
    assert scores["seqeval_f1"] == pytest.approx(record["metrics"]["test"]["seqeval_f1"], abs=1e-6)


def test_finished_runs_are_reused_and_other_settings_refused(tmp_path, modernbert_dir):
    from modeling.common.errors import ConfigError

    task = make_task(tmp_path, modernbert_dir, "multi_label", save_model=False, training={"epochs": 1})
    run(task)
    results = tmp_path / "results" / "seed3" / "results.json"
    first = results.stat().st_mtime_ns
    again = make_task(tmp_path, modernbert_dir, "multi_label", save_model=False, training={"epochs": 1}, seeds=[3, 5])
    summary = run(again)
    assert results.stat().st_mtime_ns == first
    assert summary.seeds == [3, 5]
    assert (tmp_path / "results" / "curves.png").stat().st_size > 10_000
    changed = make_task(tmp_path, modernbert_dir, "multi_label", save_model=False, training={"epochs": 2})
    with pytest.raises(ConfigError, match="seed3/results.json holds a run with other settings"):
        run(changed)
    # A run recorded before training.batching existed was trained on length-grouped batches: reused as such only.
    record = json.loads(results.read_text())
    del record["config"]["training"]["batching"]
    results.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="other settings"):
        run(task)  # packed, the default now
    grouped = make_task(
        tmp_path, modernbert_dir, "multi_label", save_model=False, training={"epochs": 1, "batching": "length_grouped"}
    )
    run(grouped)
    assert json.loads(results.read_text()) == record  # reused, not retrained


def test_shipped_chemprot_config_runs_from_the_command_line(tmp_path, modernbert_dir):
    """The documented command on BLUE-format files: official splits, positive-class F1 reported."""
    rng = random.Random(1)
    labels = ["CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9", "false"]
    for name, n in (("train", 40), ("dev", 12), ("test", 12)):
        rows = ["index\tsentence\tlabel"] + [
            f"{i}.T1.T2\t@CHEMICAL$ {' '.join(sentence(rng))} @GENE$ .\t{labels[i % 6]}" for i in range(n)
        ]
        (tmp_path / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    command = [
        sys.executable,
        "finetune.py",
        "eval_configs/chemprot.yaml",
        "--model",
        modernbert_dir,
        "--data_dir",
        str(tmp_path),
        "--seeds",
        "7",
        "--output_dir",
        str(tmp_path / "out"),
        "--training.epochs",
        "1",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "seed7" / "results.json").read_text())
    assert record["examples"] == {"train": 40, "validation": 12, "test": 12}
    assert record["max_length"] == 512  # the model's maximum when the config leaves it open
    assert {"positive_micro_f1", "micro_f1", "weighted_f1"} <= set(record["metrics"]["test"])
    assert "| positive_micro_f1 |" in result.stdout


def test_context_length_sweep_runs_the_protocol_at_every_length_and_seed(tmp_path, modernbert_dir):
    """`--max_length_grid`: every length's runs in their own folder, and a table, record and plot holding every
    length and seed, with the share of test documents each length cuts (counted here with the tokenizer)."""
    import dataclasses
    import statistics

    import yaml

    from modeling.finetune.results import RunRecord

    task = make_task(tmp_path, modernbert_dir, "single_label", seeds=[3, 4], save_model=False)
    config = tmp_path / "task.yaml"
    config.write_text(yaml.safe_dump(dataclasses.asdict(task)))
    grid = [16, 24, 64]
    command = [sys.executable, "finetune.py", str(config), "--max_length_grid", str(grid), "--training.epochs", "1"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "results"
    sweep = json.loads((out / "context_sweep.json").read_text())
    assert [row["max_length"] for row in sweep["lengths"]] == grid
    splits, _ = load_task_examples(task)
    tokenizer = load_task_tokenizer(task.model, task.task)
    lengths = [len(tokenizer(example.text)["input_ids"]) for example in splits["test"]]
    table = (out / "context_sweep.md").read_text()
    for row in sweep["lengths"]:
        length = row["max_length"]
        assert row["window_stride"] < length // 2
        assert row["seeds"] == [3, 4]
        runs = {seed: RunRecord.load(out / f"max_length-{length}" / f"seed{seed}" / "results.json") for seed in (3, 4)}
        assert all(run.max_length == length for run in runs.values())
        scores = [runs[seed].score("test", "weighted_f1") for seed in (3, 4)]
        assert row["test_by_seed"] == scores
        assert row["test"]["mean"] == pytest.approx(statistics.fmean(scores))
        assert row["test_documents"] == len(lengths)
        assert row["test_longer"] == sum(n > length for n in lengths)
        assert f"| {length} | {row['window_stride']} |" in table
        assert ", ".join(f"{s:.4f}" for s in scores) in table
    assert sweep["lengths"][0]["test_longer"] > 0  # the shortest length cuts some documents
    assert sweep["lengths"][-1]["test_longer"] == 0
    assert table.strip() in result.stdout
    assert (out / "context_sweep.png").stat().st_size > 10_000


def test_a_sweep_length_above_the_models_positions_is_refused_before_any_length_runs(tmp_path, modernbert_dir):
    from modeling.common.errors import ConfigError
    from modeling.finetune.sweep import run_sweep

    task = make_task(tmp_path, modernbert_dir, "single_label", max_length_grid=[16, 4096])
    with pytest.raises(ConfigError, match=r"max_length_grid: \[4096\] above the model's \d+ positions"):
        run_sweep(task, lambda at_length: pytest.fail(f"max_length {at_length.max_length} ran"))
