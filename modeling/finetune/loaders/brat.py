"""BRAT standoff `.txt`/`.ann` pairs (COS, Social History); `.ann` entity lines read
`T1<TAB>Type start end<TAB>covered text`."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.finetune.examples import Example, TaskLabels, bio_tags, word_spans
from modeling.finetune.loaders.base import bad_record, entity_types, read_text, split_files, split_name
from modeling.finetune.loaders.spec import DataSpec

SNIPPET = "Snippet"
BRAT_IGNORED_LINES = {
    "R": "relation",
    "*": "equivalence",
    "E": "event",
    "A": "attribute",
    "M": "attribute",
    "N": "normalization",
    "#": "note",
}


class BratEntity(NamedTuple):
    id: str
    kind: str
    start: int
    end: int
    fragments: int  # > 1: a discontinuous entity, tagged from its first start to its last end
    where: str  # file.ann:line


def load_brat(spec: DataSpec, task: TaskLabels, skips: SkipLog) -> list[Example]:
    """BRAT .txt/.ann pairs found under data.path (or one folder per split in data.files).

    unit `file`: one example per file (group = the file). unit `snippet`: one example per `Snippet` entity,
    its text the snippet's and the entities inside it shifted to it (group = the file, id = file.ann#T-id);
    entities inside no snippet are counted. Entity types not in data.entity_types (default: the config's
    labels) are counted per type and ignored, as are relation, event, attribute, normalization and note lines.
    A discontinuous entity (`T1<TAB>Loc 10 15;20 25<TAB>...`) is tagged over its whole extent (counted),
    keeping one BIO entity per annotation. Overlaps: bio_tags keeps the longest and counts the rest.
    """
    kept = entity_types(spec, task)
    examples = []
    for split, folder in split_files(spec).items():
        for txt, ann in _brat_pairs(folder):
            text = read_text(txt)
            entities = _brat_entities(ann, text, spec, task.name, skips)
            if spec.unit == "file":
                units = [(str(txt), 0, len(text))]
            else:
                units = sorted(
                    ((f"{ann}#{e.id}", e.start, e.end) for e in entities if e.kind == SNIPPET), key=lambda unit: unit[1]
                )
                if not units:
                    skips.add(task.name, "file without a Snippet entity", str(ann))
            tagged = []
            for entity in entities:
                if spec.unit == "snippet" and entity.kind == SNIPPET:
                    continue
                if entity.kind not in kept:
                    skips.add(
                        task.name, f"entity type '{entity.kind}' not in entity_types", entity.where, expected=True
                    )
                elif not any(start <= entity.start and entity.end <= end for _, start, end in units):
                    skips.add(task.name, "entity outside every Snippet", entity.where)
                else:
                    tagged.append(entity)
            for unit_id, start, end in units:
                inside = [e for e in tagged if start <= e.start and e.end <= end]
                for entity in inside:
                    if entity.fragments > 1:
                        skips.add(task.name, "discontinuous entity tagged over its whole extent", entity.where)
                words = word_spans(text[start:end], spec.word_pattern)
                tags = bio_tags(
                    words, [(e.start - start, e.end - start, e.kind) for e in inside], skips, task.name, unit_id
                )
                examples.append(
                    Example(
                        id=unit_id,
                        text=text[start:end],
                        words=words,
                        tags=tags,
                        group=str(txt),
                        split=split_name(split),
                    )
                )
    return examples


def _brat_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(.txt, .ann) pairs under a folder, sorted; a file without its partner is an error."""
    if not folder.is_dir():
        raise DataError(f"{folder}: expected a folder of BRAT .txt/.ann files")
    texts = {p.with_suffix(""): p for p in folder.rglob("*.txt")}
    annotations = {p.with_suffix(""): p for p in folder.rglob("*.ann")}
    for stem in sorted(texts.keys() ^ annotations.keys()):
        present, absent = (texts[stem], ".ann") if stem in texts else (annotations[stem], ".txt")
        raise DataError(f"{present}: no {stem.name}{absent} next to it (BRAT needs both files)")
    return [(texts[stem], annotations[stem]) for stem in sorted(annotations)]


def _brat_entities(ann: Path, text: str, spec: DataSpec, task: str, skips: SkipLog) -> list[BratEntity]:
    entities = []
    for number, line in enumerate(read_text(ann).split("\n"), 1):  # not splitlines: covered text may hold \x85 etc.
        line, where = line.rstrip("\r"), f"{ann}:{number}"
        if not line.strip():
            continue
        if line[0] != "T":
            if line[0] not in BRAT_IGNORED_LINES:
                bad_record(spec, skips, task, where, f"not a BRAT annotation line: {line[:40]!r}")
            else:
                skips.add(task, f"BRAT {BRAT_IGNORED_LINES[line[0]]} line ignored", where, expected=True)
            continue
        try:
            entity_id, kind_and_spans, covered = line.split("\t", 2)
            kind, fragments = kind_and_spans.split(" ", 1)
            spans = [(int(start), int(end)) for start, end in (f.split() for f in fragments.split(";"))]
        except ValueError:
            bad_record(spec, skips, task, where, f"malformed entity line: {line[:60]!r}")
            continue
        if not all(0 <= start < end <= len(text) for start, end in spans):
            bad_record(
                spec, skips, task, where, f"span outside the text: {fragments}, the .txt has {len(text)} characters"
            )
            continue
        found = " ".join(text[start:end] for start, end in spans)  # BRAT joins fragments with a space
        if found.split() != covered.split():  # and writes line breaks inside a span as spaces
            bad_record(
                spec,
                skips,
                task,
                where,
                f"covered text differs from the .txt: {covered[:40]!r} in the .ann, {found[:40]!r} in the .txt",
            )
            continue
        entities.append(BratEntity(entity_id, kind, spans[0][0], spans[-1][1], len(spans), where))
    return entities
