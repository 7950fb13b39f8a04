"""Embedding / classifying notes: packed, length-sorted batches give what stock transformers gives for
each note alone, and the CLI writes it for a file of notes."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch
from helpers import synthetic_documents, tiny_model_config
from safetensors.torch import load_file
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    ModernBertForMaskedLM,
    ModernBertForSequenceClassification,
)

from modeling.common.attention import reference_varlen_attn, varlen_kernel
from modeling.data.packers import packed_batches
from modeling.inference.cli import main
from modeling.inference.encoder import NoteEncoder, tokenize_notes

MAX_LENGTH = 96


def notes(n: int = 40, seed: int = 3) -> list[str]:
    # Long-tailed lengths, a few longer than MAX_LENGTH tokens (cut), one of a single word.
    rng = random.Random(seed)
    docs = synthetic_documents(n, seed=seed, min_words=1, max_words=30)
    return [d if rng.random() < 0.8 else " ".join([d] * 6) for d in docs] + ["fever"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(0)
    # An MLM checkpoint, as a pretraining phase leaves it: loads as the bare encoder.
    ModernBertForMaskedLM(tiny_model_config(tiny_tokenizer, max_position_embeddings=MAX_LENGTH)).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(1)
    labels = ["cardiac", "renal", "infection"]
    config = tiny_model_config(
        tiny_tokenizer,
        max_position_embeddings=MAX_LENGTH,
        num_labels=3,
        classifier_pooling="mean",
        problem_type="multi_label_classification",
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    ModernBertForSequenceClassification(config).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def stock_outputs(model, tokenizer, notes_ids, pooling):
    """One note at a time through the stock forward, no padding at all."""
    rows = []
    with torch.no_grad():
        for ids in notes_ids:
            input_ids = torch.tensor([ids])
            if hasattr(model, "classifier"):
                rows.append(model(input_ids=input_ids).logits[0])
            else:
                hidden = model(input_ids=input_ids).last_hidden_state[0]
                rows.append(hidden[0] if pooling == "cls" else hidden.mean(0))
    return torch.stack(rows)


def test_packed_batches_are_full_sorted_and_keep_every_note():
    rng = random.Random(0)
    lengths = [rng.choice([3, 10, 40, 90]) for _ in range(200)]
    batches = packed_batches(lengths, batch_tokens=256)
    seen = [i for rows in batches for row in rows for i in row]
    assert sorted(seen) == list(range(200))
    for rows in batches:
        width = lengths[rows[0][0]]  # the batch's first note is its longest
        assert all(sum(lengths[i] for i in row) <= width for row in rows)
        assert len(rows) == 1 or len(rows) * width <= 256
    positions = sum(len(rows) * lengths[rows[0][0]] for rows in batches)
    assert sum(lengths) / positions > 0.95  # padding only at row ends


@pytest.mark.parametrize(
    "pooling,attention", [("mean", "sdpa"), ("cls", "sdpa"), ("mean", "document_sdpa"), ("cls", "varlen")]
)
def test_packed_and_padded_embeddings_equal_each_note_alone(encoder_dir, pooling, attention):
    with varlen_kernel(reference_varlen_attn):  # varlen's layout work, on the plain reference kernel (no CUDA here)
        encoder = NoteEncoder.from_pretrained(str(encoder_dir), attention, pooling=pooling)
        assert encoder.encoder.config._attn_implementation == attention
        widths = []
        encoder.encoder.embeddings.register_forward_pre_hook(
            lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape), with_kwargs=True
        )
        texts = notes()
        packed, tokenized = encoder.encode(texts, batching="packed", batch_tokens=4 * MAX_LENGTH)
        packed_shapes, widths[:] = list(widths), []
        padded, _ = encoder.encode(texts, batching="padded", notes_per_batch=8)
    batches = packed_batches(tokenized.lengths(), 4 * MAX_LENGTH)
    if attention == "sdpa":  # dense masks: rows as long as each batch's longest note
        assert [shape[0] for shape in packed_shapes] == [len(rows) for rows in batches]
    else:  # attention per note: each batch one row of its notes, no padding
        assert packed_shapes == [(1, sum(tokenized.lengths()[i] for row in rows for i in row)) for rows in batches]
    alone = stock_outputs(AutoModel.from_pretrained(encoder_dir), encoder.tokenizer, tokenized.ids, pooling)
    assert packed.shape == (len(texts), encoder.model.config.hidden_size)
    assert (packed - alone).abs().max() <= 1e-5
    assert (padded - alone).abs().max() <= 1e-5
    # Several notes did share rows, and the long ones were cut and counted.
    assert any(len(row) > 1 for rows in packed_batches(tokenized.lengths(), 4 * MAX_LENGTH) for row in rows)
    assert 0 < sum(tokenized.truncated) < len(texts)
    assert max(tokenized.lengths()) == MAX_LENGTH


def test_tokenize_notes_wraps_and_cuts_like_training(tiny_tokenizer):
    long_note = " ".join(synthetic_documents(1, min_words=200, max_words=200))
    notes_ids = tokenize_notes(tiny_tokenizer, ["fever and cough", long_note], max_length=32)
    short, cut = notes_ids.ids
    assert short == tiny_tokenizer("fever and cough")["input_ids"]
    assert len(cut) == 32
    assert cut[0] == tiny_tokenizer.cls_token_id
    assert cut[-1] == tiny_tokenizer.sep_token_id
    assert notes_ids.truncated == [False, True]


def test_cli_writes_embeddings_in_input_order(encoder_dir, tmp_path, capsys):
    texts = notes(12, seed=5)
    path = tmp_path / "notes.jsonl"
    lines = (
        [json.dumps({"text": t}) for t in texts[:6]]
        + [json.dumps({"text": "  "})]
        + [json.dumps({"text": t}) for t in texts[6:]]
    )
    path.write_text("\n".join(lines) + "\n")
    assert main([str(encoder_dir), str(path), "--output_dir", str(tmp_path / "out"), "--batch_tokens", "200"]) == 0
    embeddings = load_file(tmp_path / "out" / "embeddings.safetensors")["embeddings"]
    records = [json.loads(line) for line in (tmp_path / "out" / "notes.jsonl").read_text().splitlines()]
    assert embeddings.shape[0] == len(texts) == len(records)
    assert records[6]["where"] == f"{path}:8"  # the blank line 7 was skipped, not shifted
    encoder = NoteEncoder.from_pretrained(str(encoder_dir))
    alone = stock_outputs(
        AutoModel.from_pretrained(encoder_dir),
        encoder.tokenizer,
        tokenize_notes(encoder.tokenizer, texts, MAX_LENGTH).ids,
        "mean",
    )
    assert (embeddings - alone).abs().max() <= 1e-5
    out = capsys.readouterr().out
    assert f"{len(texts)} notes" in out
    assert "1 records skipped" in out


def test_cli_classifier_predictions_equal_stock_forward(classifier_dir, tmp_path):
    texts = notes(15, seed=7)
    path = tmp_path / "notes.txt"
    path.write_text("\n".join(texts) + "\n")
    assert main([str(classifier_dir), str(path), "--output_dir", str(tmp_path / "out"), "--batch_tokens", "300"]) == 0
    records = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir)
    encoder = NoteEncoder.from_pretrained(str(classifier_dir))
    logits = stock_outputs(model, encoder.tokenizer, tokenize_notes(encoder.tokenizer, texts, MAX_LENGTH).ids, "mean")
    scores = torch.tensor([[r["scores"][name] for name in ("cardiac", "renal", "infection")] for r in records])
    assert (scores - torch.sigmoid(logits)).abs().max() <= 1e-5
    assert [r["labels"] for r in records] == [[n for n, s in r["scores"].items() if s >= 0.5] for r in records]
    assert [r["where"] for r in records] == [f"{path}:{i + 1}" for i in range(len(texts))]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--max_length", "1", "argument --max_length: 1 is below 3"),
        ("--max_length", "-5", "argument --max_length: -5 is below 3"),
        ("--notes_per_batch", "0", "argument --notes_per_batch: 0 is below 1"),
        ("--batch_tokens", "many", "argument --batch_tokens: 'many' is not a whole number"),
    ],
)
def test_cli_numbers_are_checked_where_they_enter(encoder_dir, tmp_path, capsys, flag, value, message):
    (tmp_path / "notes.txt").write_text("fever\n")
    with pytest.raises(SystemExit) as exited:
        main([str(encoder_dir), str(tmp_path / "notes.txt"), "--output_dir", str(tmp_path / "out"), flag, value])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_bad_record_is_one_line_naming_it(encoder_dir, tmp_path, capsys):
    path = tmp_path / "notes.jsonl"
    path.write_text('{"text": "fever"}\n{"text": "cough"\n{"text": "pain"}\n')
    assert main([str(encoder_dir), str(path), "--output_dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:")
    assert f"{path}:2" in error
    assert "\n" not in error
    assert not (tmp_path / "out").exists()
    assert main([str(encoder_dir), str(path), "--output_dir", str(tmp_path / "out"), "--on_bad_record", "skip"]) == 0
    assert load_file(tmp_path / "out" / "embeddings.safetensors")["embeddings"].shape[0] == 2


# --------------------------------------------------------------------------- a fine-tuned classifier's windows

WINDOW, SHARED = 32, 8


@pytest.fixture
def fine_tuned_dir(tmp_path, classifier_dir):
    """The classifier as finetune.py leaves it: seedN/model, with the run's results.json beside it."""
    model = tmp_path / "seed3" / "model"
    shutil.copytree(classifier_dir, model)
    record = {
        "task_type": "multi_label",
        "max_length": WINDOW,
        "config": {"labels": ["cardiac", "renal", "infection"], "window_stride": SHARED, "window_aggregation": "max"},
    }
    (model.parent / "results.json").write_text(json.dumps(record))
    return model


def windows_of(tokenizer, text: str) -> list[list[int]]:
    """The windows of a note, written out: WINDOW - 2 tokens each between [CLS] and [SEP], each starting SHARED
    tokens before the previous one ends, the last reaching the note's end."""
    ids, body = tokenizer(text, add_special_tokens=False)["input_ids"], WINDOW - 2
    starts = [0]
    while starts[-1] + body < len(ids):
        starts.append(starts[-1] + body - SHARED)
    return [[tokenizer.cls_token_id, *ids[s : s + body], tokenizer.sep_token_id] for s in starts]


def test_cli_classifies_long_notes_in_the_runs_windows(fine_tuned_dir, tmp_path, capsys):
    texts = notes(15, seed=7)
    path = tmp_path / "notes.txt"
    path.write_text("\n".join(texts) + "\n")
    assert main([str(fine_tuned_dir), str(path), "--output_dir", str(tmp_path / "out"), "--batch_tokens", "100"]) == 0
    records = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    model = AutoModelForSequenceClassification.from_pretrained(fine_tuned_dir)
    tokenizer = NoteEncoder.from_pretrained(str(fine_tuned_dir)).tokenizer
    expected = torch.stack(
        [stock_outputs(model, tokenizer, windows_of(tokenizer, text), "mean").max(0).values for text in texts]
    )
    scores = torch.tensor([[r["scores"][name] for name in ("cardiac", "renal", "infection")] for r in records])
    assert (scores - torch.sigmoid(expected)).abs().max() <= 1e-5
    assert [r["windows"] for r in records] == [len(windows_of(tokenizer, text)) for text in texts]
    assert [r["tokens"] for r in records] == [len(tokenizer(text)["input_ids"]) for text in texts]
    windowed = sum(r["windows"] > 1 for r in records)
    assert 0 < windowed < len(texts) and not any(r["truncated"] for r in records)
    assert f"{windowed} longer than {WINDOW} tokens cut into windows of {WINDOW} tokens, {SHARED} shared" in (
        capsys.readouterr().out
    )


def test_cli_max_length_other_than_the_runs_windows_is_one_line(fine_tuned_dir, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("fever\n")
    command = [str(fine_tuned_dir), str(tmp_path / "notes.txt"), "--output_dir", str(tmp_path / "out")]
    assert main([*command, "--max_length", "64"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"error: --max_length 64: {fine_tuned_dir.parent / 'results.json'} records that this classifier was "
        f"fine-tuned and tested on windows of {WINDOW} tokens; leave --max_length out to classify as it did"
    )
    assert not (tmp_path / "out").exists()
    assert main([*command, "--max_length", str(WINDOW)]) == 0  # the run's own length is no contradiction


def test_a_run_record_of_other_labels_is_refused(fine_tuned_dir, tmp_path, capsys):
    record_path = fine_tuned_dir.parent / "results.json"
    record = json.loads(record_path.read_text())
    record["config"]["labels"] = ["positive", "negative"]
    record_path.write_text(json.dumps(record))
    (tmp_path / "notes.txt").write_text("fever\n")
    assert main([str(fine_tuned_dir), str(tmp_path / "notes.txt"), "--output_dir", str(tmp_path / "out")]) == 2
    assert "not a run of this classifier (labels ['cardiac', 'renal', 'infection'])" in capsys.readouterr().err
