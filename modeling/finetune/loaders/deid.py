"""The PhysioNet deid gold standard: `id.text` (notes with surrogate PHI) and `id.res` (the same notes with
each PHI span masked as `[**...**]`), records `START_OF_RECORD=patient||||note||||` ... `||||END_OF_RECORD`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.finetune.examples import Example, TaskLabels, bio_tags, word_spans
from modeling.finetune.loaders.base import bad_record, data_path, entity_types, read_text
from modeling.finetune.loaders.spec import DataSpec

DEID_TEXT, DEID_MASKED = "id.text", "id.res"
RECORD_START = re.compile(r"START_OF_RECORD=([^|\n]*)\|\|\|\|([^|\n]*)\|\|\|\|\s*$")
RECORD_END = "||||END_OF_RECORD"
PHI_MASK = re.compile(r"\[\*\*(.*?)\*\*\]")

# Mask content -> PHI kind; the first rule whose pattern occurs in the lowercased content wins, so the
# order settles mixed names ("E-mail address" is other, "Hospital Unit Name" is a location).
PHI_KIND_RULES = (
    ("phone_nb", r"telephone|phone|fax|pager"),
    ("other", r"e-?mail|url|company"),
    ("age", r"\bage\b"),
    ("date", r"date|year|month|\bday\b|holiday|^[\d\s/.:-]+$"),  # bare digits: [**1994**], [**04-18**]
    (
        "location",
        r"hospital|location|street|address|\bstate\b|country|zip|apartment|ward|city|town|"
        r"university|college|po box",
    ),
    ("name", r"name|initial|doctor"),  # First/Last Name, Known firstname/lastname, Doctor ..., Initials
    ("other", r"number|social security|serial|identifier|info"),  # MD/Medical Record/Unit/Job/... Number
)


class DeidRecord(NamedTuple):
    key: str  # "patient||||note"
    line: int  # of its START_OF_RECORD line
    text: str  # between the START_OF_RECORD line and ||||END_OF_RECORD


def phi_kind(mask: str) -> str | None:
    """The PHI kind (age, date, location, name, other, phone_nb) a mask's content names; None if no rule knows it."""
    content = mask.strip().lower()
    return next((kind for kind, pattern in PHI_KIND_RULES if re.search(pattern, content)), None)


def load_deid(spec: DataSpec, task: TaskLabels, skips: SkipLog) -> list[Example]:
    """One example per note of id.text, its PHI tagged by aligning the masks of id.res (both under data.path).

    Masks map to six kinds by PHI_KIND_RULES; a mask no rule knows is tagged `other` and counted. Two masks
    with no text between them cannot be told apart: they become one entity of the first mask's kind
    (counted). group = the note, as the paper splits over notes (a patient's notes may land in different splits).
    """
    text_file, masked_file = data_path(spec, DEID_TEXT), data_path(spec, DEID_MASKED)
    originals, masked = _deid_records(text_file), _deid_records(masked_file)
    if len(originals) != len(masked):
        raise DataError(
            f"{text_file} has {len(originals)} records but {masked_file} has {len(masked)}; "
            "they must hold the same records in the same order"
        )
    kept = entity_types(spec, task)
    examples = []
    for original, masked_record in zip(originals, masked, strict=True):
        if original.key != masked_record.key:
            raise DataError(
                f"{masked_file}:{masked_record.line}: record {masked_record.key} where {text_file}:"
                f"{original.line} has record {original.key}; the files must hold the same records in the same order"
            )
        where = f"{masked_file}:{masked_record.line} record {original.key}"
        try:
            phi = _phi_spans(original.text, masked_record.text)
        except ValueError as e:
            bad_record(spec, skips, task.name, where, f"does not align with {DEID_TEXT}: {e}")
            continue
        entities = []
        for start, end, masks in phi:
            kind = phi_kind(masks[0])
            if kind is None:
                skips.add(task.name, "unrecognised PHI mask mapped to other", f"{where} [**{masks[0]}**]", changed=True)
                kind = "other"
            if len(masks) > 1:
                skips.add(task.name, "adjacent PHI masks tagged as one entity", f"{where} character {start}")
            if kind in kept:
                entities.append((start, end, kind))
            else:
                skips.add(task.name, f"PHI kind '{kind}' not in entity_types", where, expected=True)
        example_id = f"{text_file}#{original.key}"
        words = word_spans(original.text, spec.word_pattern)
        examples.append(
            Example(
                id=example_id,
                text=original.text,
                words=words,
                group=original.key,
                tags=bio_tags(words, entities, skips, task.name, example_id),
            )
        )
    return examples


def _deid_records(path: Path) -> list[DeidRecord]:
    records, key, first_line, body = [], None, 0, []
    for number, line in enumerate(read_text(path).splitlines(keepends=True), 1):
        if key is None:
            start = RECORD_START.match(line)
            if start:
                key, first_line, body = f"{start[1]}||||{start[2]}", number, []
            elif line.strip():
                raise DataError(f"{path}:{number}: text outside a record (expected START_OF_RECORD=...)")
        elif line.rstrip("\r\n").endswith(RECORD_END):
            body.append(line.rstrip("\r\n")[: -len(RECORD_END)])
            records.append(DeidRecord(key, first_line, "".join(body)))
            key = None
        elif RECORD_START.match(line):
            raise DataError(
                f"{path}:{number}: START_OF_RECORD inside record {key} (line {first_line} has no {RECORD_END})"
            )
        else:
            body.append(line)
    if key is not None:
        raise DataError(f"{path}:{first_line}: record {key} has no {RECORD_END}")
    return records


def _phi_spans(text: str, masked: str) -> list[tuple[int, int, list[str]]]:
    """(start, end, mask contents) in `text` of each PHI span masked in `masked`, by walking both: the text
    outside masks must match exactly, and a mask covers `text` up to where the next literal text resumes
    (its first occurrence; the last literal must end the text). ValueError names the character where they part."""
    pieces = PHI_MASK.split(masked)
    literals, masks = pieces[0::2], pieces[1::2]  # literal, mask, literal, ..., literal
    spans, position, pending = [], 0, []
    for i, literal in enumerate(literals):
        if i:
            pending.append(masks[i - 1])
            last = i == len(literals) - 1
            if not literal and not last:  # the next mask follows at once: one span for both
                continue
            end = len(text) - len(literal) if last else text.find(literal, position + 1)
            if end <= position:
                raise ValueError(
                    f"character {position}: the text after [**{pending[-1]}**] "
                    f"({literal[:30]!r}) does not follow in {DEID_TEXT}"
                )
            spans.append((position, end, pending))
            position, pending = end, []
        if not text.startswith(literal, position):
            at = position + len(os.path.commonprefix([literal, text[position : position + len(literal)]]))
            raise ValueError(
                f"character {at}: {text[at : at + 30]!r} in {DEID_TEXT}, "
                f"{literal[at - position : at - position + 30]!r} in {DEID_MASKED}"
            )
        position += len(literal)
    if position != len(text):
        raise ValueError(f"character {position}: {DEID_TEXT} goes on with {text[position : position + 30]!r}")
    return spans
