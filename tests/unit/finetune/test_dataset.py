"""Generic loaders (JSONL, CSV, Parquet, a Hugging Face dataset folder), label checks, BIO repair, splits."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.finetune.config import task_from_dict
from modeling.finetune.dataset import assign_splits, load_task_examples
from modeling.finetune.examples import Example, bio_tags, word_spans


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(path, task="single_label", labels=("yes", "no"), **data):
    return task_from_dict(
        {
            "name": "t",
            "task": task,
            "labels": list(labels),
            "seeds": [1],
            "data": {"loader": "jsonl", "path": str(path), **data},
        }
    )


def test_jsonl_with_official_splits_and_validation_carved_from_train(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"note {i}", "label": "yes" if i % 2 else "no"} for i in range(20)])
    write_jsonl(tmp_path / "test.jsonl", [{"text": "held out", "label": "yes"}])
    splits, _ = load_task_examples(config(tmp_path, files={"train": "train.jsonl", "test": "test.jsonl"}))
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [17, 3, 1]
    assert splits["test"][0].id == f"{tmp_path}/test.jsonl:1"
    assert splits["test"][0].labels == ["yes"]


def test_multi_label_from_a_separated_string_in_csv(tmp_path):
    pd.DataFrame({"note": [f"n{i}" for i in range(10)], "codes": ["a|b", "b", "", "a"] * 2 + ["a", "b"]}).to_csv(
        tmp_path / "d.csv", index=False
    )
    splits, _ = load_task_examples(
        config(
            tmp_path / "d.csv",
            task="multi_label",
            labels=("a", "b"),
            loader="csv",
            text_field="note",
            label_field="codes",
            label_separator="|",
        )
    )
    examples = {e.text: e.labels for s in splits.values() for e in s}
    assert examples["n0"] == ["a", "b"]
    assert examples["n2"] == []
    assert len(examples) == 10


def test_ner_from_parquet_with_tag_ids(tmp_path):
    words = [["took", "aspirin", "daily"]] * 10
    pd.DataFrame({"tokens": words, "ner_tags": [[0, 1, 0]] * 10}).to_parquet(tmp_path / "d.parquet")
    splits, _ = load_task_examples(config(tmp_path / "d.parquet", task="ner", labels=("Drug",), loader="parquet"))
    example = splits["train"][0]
    assert example.text == "took aspirin daily"
    assert example.word_texts() == ["took", "aspirin", "daily"]
    assert example.tags == ["O", "B-Drug", "O"]


def test_hugging_face_dataset_folder_keeps_its_splits(tmp_path):
    for split, n in (("train", 12), ("validation", 3), ("test", 4)):
        write_jsonl(tmp_path / f"{split}.jsonl", [{"sentence": f"{split} {i}", "label": i % 2} for i in range(n)])
    splits, _ = load_task_examples(config(tmp_path, loader="hf", text_field="sentence"))
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [12, 3, 4]
    assert splits["test"][1].labels == ["no"]  # class id 1 -> the second label


def test_label_not_in_the_list_names_file_and_line(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "yes"}, {"text": "b", "label": "maybe"}])
    with pytest.raises(DataError, match=r"d.jsonl:2: label 'maybe' is not in the label list \(yes, no\)"):
        load_task_examples(config(tmp_path / "d.jsonl"))
    skipped = config(tmp_path / "d.jsonl", on_bad_record="skip")
    with pytest.raises(DataError, match="split is empty"):  # one example left: nothing to split
        load_task_examples(skipped)


def test_i_after_o_is_repaired_and_counted_or_refused_when_strict(tmp_path, caplog):
    rows = [{"tokens": ["took", "aspirin", "daily"], "ner_tags": ["O", "I-Drug", "O"]}] * 10
    write_jsonl(tmp_path / "d.jsonl", rows)
    with caplog.at_level("WARNING"):
        splits, skips = load_task_examples(config(tmp_path / "d.jsonl", task="ner", labels=("Drug",)))
    # IOB1 (every entity starts with I-) is read correctly, and the log says the tag was changed, not skipped
    assert "source 't': changed, I- tag not continuing an entity, repaired to B- at" in caplog.text
    assert "skipped, I- tag" not in caplog.text
    assert all(e.tags == ["O", "B-Drug", "O"] for s in splits.values() for e in s)
    assert skips.as_dict()["t"]["I- tag not continuing an entity, repaired to B-"] == 10
    with pytest.raises(DataError, match=r"d.jsonl:1: word 1: tag 'I-Drug' follows 'O' \(data.strict_bio is on\)"):
        load_task_examples(config(tmp_path / "d.jsonl", task="ner", labels=("Drug",), strict_bio=True))


def test_random_split_keeps_groups_together_and_is_seeded(tmp_path):
    examples = [Example(id=f"row{i}", text="x", labels=["yes"], group=f"note{i // 3}") for i in range(300)]
    task = config(tmp_path)
    splits = assign_splits(examples, task)
    where = {}
    for name, members in splits.items():
        for e in members:
            assert where.setdefault(e.group, name) == name
    assert [len(splits[s]) // 3 for s in ("train", "validation", "test")] == [70, 15, 15]
    assert [e.id for e in assign_splits(examples, task)["test"]] == [e.id for e in splits["test"]]


def test_bio_from_character_spans_keeps_the_longest_overlap():
    text = "took sodium chloride daily"
    words = word_spans(text, r"\S+")
    skips = SkipLog(quiet=True)
    tags = bio_tags(words, [(5, 11, "Chem"), (5, 20, "Chem"), (21, 26, "Time")], skips, "t", "doc")
    assert tags == ["O", "B-Chem", "I-Chem", "B-Time"]
    assert skips.as_dict() == {"t": {"overlapping entity dropped (longest kept)": 1}}


def test_missing_folder_is_one_line(tmp_path):
    with pytest.raises(DataError, match=r"missing.*not found \(data.files.train\)"):
        load_task_examples(config(tmp_path / "missing", files={"train": "train.jsonl", "test": "test.jsonl"}))


def test_malformed_records_name_file_and_line_or_are_counted(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": "yes"}\n{"text": "b", "label": \n')
    with pytest.raises(DataError, match=r"d.jsonl:2: malformed JSON"):
        load_task_examples(config(tmp_path / "d.jsonl"))
    rows = [{"text": f"note {i}", "label": "yes"} for i in range(20)]
    write_jsonl(tmp_path / "e.jsonl", rows)
    with open(tmp_path / "e.jsonl", "a") as handle:
        handle.write("not json\n")
    splits, skips = load_task_examples(config(tmp_path / "e.jsonl", on_bad_record="skip"))
    assert sum(map(len, splits.values())) == 20
    assert skips.as_dict()["t"] == {"bad record": 1}
