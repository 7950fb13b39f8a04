"""Generic loaders for a user's own tasks: JSONL, CSV, Parquet and Hugging Face datasets.

Classification records hold a text field and a label field (multi-label: a list, or a string with a
separator); NER records hold a list of words and a list of tags (names, or ids into the label list).
Files are read through the pretraining readers, so malformed lines and bytes that are not UTF-8 are
reported the same way.
"""

from __future__ import annotations

import glob

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.data.sources import SourceSpec, csv_rows, jsonl_objects
from modeling.finetune.examples import Example, TaskLabels, join_words
from modeling.finetune.loaders.base import as_label_list, bad_record, split_files
from modeling.finetune.loaders.spec import DataSpec


def _records(spec: DataSpec, task: TaskLabels, fmt: str, skips: SkipLog):
    """(split, 'file:line', record) from JSONL/CSV/Parquet files (the pretraining readers, so malformed lines
    and bytes that are not UTF-8 are reported the same way); the split comes from data.files when given."""
    import pandas as pd

    for split, path in split_files(spec).items():
        for file in sorted(glob.glob(str(path / "*"))) if path.is_dir() else [str(path)]:
            reader = SourceSpec(name=task.name, path=file, on_bad_record=spec.on_bad_record)
            if fmt == "jsonl":
                rows = jsonl_objects(reader, file, skips)
            elif fmt == "csv":
                rows = csv_rows(reader, file, skips, required=[])
            else:
                try:
                    table = pd.read_parquet(file)
                except Exception as error:  # pyarrow raises several types for a file that is not Parquet
                    raise DataError(f"{file}: not a readable Parquet file ({str(error).splitlines()[0]})") from None
                rows = ((f"{file}:row {i}", row) for i, row in enumerate(table.to_dict("records")))
            count = 0
            for where, record in rows:
                count += 1
                yield split, where, record
            if count == 0 and split != "all":
                raise DataError(f"{file}: no records (the {split} split, data.files.{split})")


def _examples_from_records(records, spec: DataSpec, task: TaskLabels, skips: SkipLog) -> list[Example]:
    examples = []
    tag_names = task.tag_names
    for split, where, record in records:
        example_id = str(record[spec.id_field]) if spec.id_field in record else where
        if task.type == "ner":
            missing = [f for f in (spec.words_field, spec.tags_field) if f not in record]
            if missing:
                bad_record(spec, skips, task.name, where, f"missing field '{missing[0]}'")
                continue
            words, tags = _plain(record[spec.words_field]), _plain(record[spec.tags_field])
            if len(words) != len(tags):
                bad_record(spec, skips, task.name, where, f"{len(words)} words but {len(tags)} tags")
                continue
            tags = [tag_names[t] if isinstance(t, int) and 0 <= t < len(tag_names) else str(t) for t in tags]
            text, spans = join_words([str(w) for w in words])
            example = Example(id=example_id, text=text, words=spans, tags=tags)
        else:
            if spec.text_field not in record:
                bad_record(spec, skips, task.name, where, f"missing field '{spec.text_field}'")
                continue
            text = _plain(record[spec.text_field])
            if not isinstance(text, str) or not text.strip():
                what = "null" if text is None or text != text else "empty" if isinstance(text, str) else "not text"
                bad_record(spec, skips, task.name, where, f"{what} text in field '{spec.text_field}'")
                continue
            label = _plain(record.get(spec.label_field))
            if isinstance(label, int) and not isinstance(label, bool) and task.type == "single_label":
                label = task.labels[label] if 0 <= label < len(task.labels) else label
            example = Example(id=example_id, text=text, labels=as_label_list(label, spec, where))
        example.split = None if split == "all" else split
        examples.append(example)
    return examples


def _plain(value):
    """numpy arrays and scalars (Parquet, datasets) as Python lists and numbers."""
    return value.tolist() if hasattr(value, "tolist") else list(value) if isinstance(value, tuple) else value


# DataSpec fields the generic loaders read (a csv has no lists of words and tags; hf has its own splits)
JSONL_READS = {"path", "files", "text_field", "label_field", "id_field", "label_separator", "words_field", "tags_field"}
CSV_READS = JSONL_READS - {"words_field", "tags_field"}
PARQUET_READS = JSONL_READS
HF_READS = JSONL_READS - {"files"} | {"subset"}


def load_jsonl(spec: DataSpec, task: TaskLabels, skips: SkipLog) -> list[Example]:
    return _examples_from_records(_records(spec, task, "jsonl", skips), spec, task, skips)


def load_csv(spec: DataSpec, task: TaskLabels, skips: SkipLog) -> list[Example]:
    return _examples_from_records(_records(spec, task, "csv", skips), spec, task, skips)


def load_parquet(spec: DataSpec, task: TaskLabels, skips: SkipLog) -> list[Example]:
    return _examples_from_records(_records(spec, task, "parquet", skips), spec, task, skips)


def load_hf(spec: DataSpec, task: TaskLabels, skips: SkipLog) -> list[Example]:
    """A Hugging Face dataset id (or a local dataset folder/script path): its own splits are used."""
    import datasets

    if spec.path is None:
        raise DataError("data.path: name the Hugging Face dataset id (or pass --data_dir)")
    try:
        loaded = datasets.load_dataset(spec.path, spec.subset)
    except Exception as e:  # the datasets library raises many types for a missing or unreachable dataset
        raise DataError(
            f"{spec.path}: could not load the dataset ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None
    names = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation", "test": "test"}
    records = (
        (names.get(split, split), f"{spec.path}[{split}]#{i}", row)
        for split in loaded
        for i, row in enumerate(loaded[split])
    )
    return _examples_from_records(records, spec, task, skips)
