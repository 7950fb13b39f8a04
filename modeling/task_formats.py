"""Loaders for the original distribution formats of the five benchmark corpora (see task_data).

- `chemprot_tsv`: BLUE ChemProt, `train.tsv`/`dev.tsv`/`test.tsv` with the header `index<TAB>sentence<TAB>label`;
  one chemical-gene pair per row, its mentions replaced by `@CHEMICAL$`/`@GENE$` (kept in the text).
- `phenotype`: PhysioNet's `ACTdb102003.csv` (one row per note and annotator, a 0/1 column per phenotype
  plus `NONE`) joined on ROW_ID with MIMIC-III `NOTEEVENTS.csv(.gz)`; one example per note.
- `deid`: the PhysioNet deid gold standard, `id.text` (notes with surrogate PHI) and `id.res` (the same notes
  with each PHI span masked as `[**...**]`), records `START_OF_RECORD=patient||||note||||` ... `||||END_OF_RECORD`.
- `brat`: BRAT standoff `.txt`/`.ann` pairs (COS, Social History); `.ann` entity lines read
  `T1<TAB>Type start end<TAB>covered text`.
- `conll`: one token per line with its tag in a column, a blank line between sentences.

Details of each format and of the decisions taken for it are in each loader's docstring.
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import re
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from modeling.sources import DataError, SkipLog, SourceSpec, csv_rows
from modeling.task_data import bad_record, bio_tags, data_path, join_words, register_loader, split_files, word_spans
from modeling.tasks import DataSpec, Example, TaskConfig

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ shared helpers


@contextmanager
def _reading(path: Path):
    """Undecodable bytes, broken CSV quoting or a corrupt gzip as one line naming the file."""
    try:
        yield
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except (csv.Error, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None


def _read_text(path: Path) -> str:
    """The whole file with its line ends as they are (BRAT offsets count a \\r\\n as two characters)."""
    with _reading(path), open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


def _entity_types(spec: DataSpec, config: TaskConfig) -> set[str]:
    """Entity types kept as tags: data.entity_types, else those the config's labels name."""
    if spec.entity_types is not None:
        return set(spec.entity_types)
    return {tag[2:] for tag in config.tag_names if tag != "O"}


def _split_name(split: str) -> str | None:
    return None if split == "all" else split  # "all": split_files found no split mapping


# ------------------------------------------------------------------------------ ChemProt (BLUE TSV)

CHEMPROT_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
CHEMPROT_HEADER = ["index", "sentence", "label"]


@register_loader("chemprot_tsv", {"path", "files"})
def load_chemprot_tsv(spec: DataSpec, config: TaskConfig, skips: SkipLog) -> list[Example]:
    """One example per row (id file:line, one label), in the split its file defines."""
    examples = []
    for split, path in split_files(spec, CHEMPROT_FILES).items():
        with _reading(path), open(path, encoding="utf-8", newline="") as handle:
            rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)  # sentences hold bare quotes
            header = next(rows, None)
            if header != CHEMPROT_HEADER:
                raise DataError(f"{path}:1: expected the header {'<TAB>'.join(CHEMPROT_HEADER)}, found {header!r}")
            for row in rows:
                where = f"{path}:{rows.line_num}"
                if not row:  # a blank line holds no record
                    continue
                if len(row) != len(CHEMPROT_HEADER):
                    bad_record(
                        spec,
                        skips,
                        config.name,
                        where,
                        f"wrong number of columns: {len(row)} instead of 3 (index, sentence, label)",
                    )
                    continue
                examples.append(Example(id=where, text=row[1], labels=[row[2]], split=split))
    return examples


# ------------------------------------------------------------------------------ Phenotype (ACTdb + NOTEEVENTS)

PHENOTYPE_ANNOTATIONS = "ACTdb102003.csv"
NOTEEVENTS_NAMES = ("NOTEEVENTS.csv.gz", "NOTEEVENTS.csv")
NO_PHENOTYPE = "NONE"


@register_loader("phenotype", {"path", "notes", "label_combination"})
def load_phenotype(spec: DataSpec, config: TaskConfig, skips: SkipLog) -> list[Example]:
    """One example per annotated note (group = ROW_ID, no split), its text from NOTEEVENTS.

    data.path is the folder holding ACTdb102003.csv (or that file itself); data.notes names NOTEEVENTS
    relative to that folder (default: NOTEEVENTS.csv.gz, else NOTEEVENTS.csv there). The label columns are
    the config's labels. A note's annotator rows are combined per label by data.label_combination:
    `majority` (positive when at least half of its rows mark it), `any` or `all`. A NONE row counts as
    marking nothing; a row with NONE=1 and any label set is inconsistent (a bad record).
    """
    annotations = data_path(spec)
    if annotations.is_dir():
        annotations = data_path(spec, PHENOTYPE_ANNOTATIONS)
    notes_file = _noteevents_file(spec, annotations.parent)
    votes = _annotator_votes(annotations, spec, config, skips)
    texts = _note_texts(notes_file, set(votes), spec, config.name, skips)
    examples = []
    for row_id, (where, rows) in votes.items():
        if row_id not in texts:
            bad_record(spec, skips, config.name, where, f"note not found in {notes_file}")
            continue
        labels = [
            label
            for label in config.labels
            if _combined(sum(label in marked for marked in rows), len(rows), spec.label_combination)
        ]
        examples.append(Example(id=f"{annotations}#ROW_ID={row_id}", text=texts[row_id], labels=labels, group=row_id))
    log.info(
        "%s: %d annotator rows combined into %d notes (label_combination: %s)",
        config.name,
        sum(len(rows) for _, rows in votes.values()),
        len(votes),
        spec.label_combination,
    )
    return examples


def _noteevents_file(spec: DataSpec, folder: Path) -> Path:
    if spec.notes:
        path = folder / spec.notes  # an absolute data.notes stays as it is
        if not path.is_file():
            raise DataError(f"{path}: not found (data.notes)")
        return path
    for name in NOTEEVENTS_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: no {' or '.join(NOTEEVENTS_NAMES)}; set data.notes to MIMIC-III's NOTEEVENTS file")


def _annotator_votes(
    path: Path, spec: DataSpec, config: TaskConfig, skips: SkipLog
) -> dict[str, tuple[str, list[set[str]]]]:
    """ROW_ID -> (where its first row is, the set of labels each of its annotator rows marks), in file order."""
    votes: dict[str, tuple[str, list[set[str]]]] = {}
    reader = SourceSpec(name=config.name, path=str(path), on_bad_record=spec.on_bad_record)
    for line, row in csv_rows(reader, str(path), skips, required=["ROW_ID", NO_PHENOTYPE, *config.labels]):
        row_id = row["ROW_ID"].strip()
        where = f"{line} (ROW_ID {row_id})"
        if not row_id.isdigit():
            bad_record(spec, skips, config.name, where, f"ROW_ID is not a number: {row_id!r}")
            continue
        unreadable = [c for c in (NO_PHENOTYPE, *config.labels) if _flag(row[c]) is None]
        if unreadable:
            bad_record(spec, skips, config.name, where, f"not 0, 1 or blank: {unreadable[0]}={row[unreadable[0]]!r}")
            continue
        marked = {label for label in config.labels if _flag(row[label])}
        if _flag(row[NO_PHENOTYPE]) and marked:
            bad_record(spec, skips, config.name, where, f"NONE=1 but phenotypes set: {', '.join(sorted(marked))}")
            continue
        votes.setdefault(row_id, (where, []))[1].append(marked)
    return votes


def _flag(value: str) -> bool | None:
    """A 0/1 cell ("1", "0", "1.0", "0.0" or blank); None when it is something else."""
    return {"": False, "0": False, "0.0": False, "1": True, "1.0": True}.get(value.strip())


def _combined(votes: int, annotators: int, rule: str) -> bool:
    if rule == "any":
        return votes > 0
    if rule == "all":
        return votes == annotators
    return 2 * votes >= annotators  # majority: at least half


def _note_texts(path: Path, wanted: set[str], spec: DataSpec, task: str, skips: SkipLog) -> dict[str, str]:
    """TEXT of the wanted ROW_IDs. NOTEEVENTS is about 4 GB: streamed, only wanted texts kept, and the
    reading stops once all are found."""
    texts: dict[str, str] = {}
    reader = SourceSpec(name=task, path=str(path), on_bad_record=spec.on_bad_record)
    for _, row in csv_rows(reader, str(path), skips, required=["ROW_ID", "TEXT"]):  # quoted TEXT spans many lines
        if row["ROW_ID"] in wanted:
            texts[row["ROW_ID"]] = row["TEXT"]
            if len(texts) == len(wanted):
                break
    return texts


# ------------------------------------------------------------------------------ DEID (id.text + id.res)

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


@register_loader("deid", {"path", "entity_types", "word_pattern"})
def load_deid(spec: DataSpec, config: TaskConfig, skips: SkipLog) -> list[Example]:
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
    kept = _entity_types(spec, config)
    examples = []
    for original, masked_record in zip(originals, masked):
        if original.key != masked_record.key:
            raise DataError(
                f"{masked_file}:{masked_record.line}: record {masked_record.key} where {text_file}:"
                f"{original.line} has record {original.key}; the files must hold the same records in the same order"
            )
        where = f"{masked_file}:{masked_record.line} record {original.key}"
        try:
            phi = _phi_spans(original.text, masked_record.text)
        except ValueError as e:
            bad_record(spec, skips, config.name, where, f"does not align with {DEID_TEXT}: {e}")
            continue
        entities = []
        for start, end, masks in phi:
            kind = phi_kind(masks[0])
            if kind is None:
                skips.add(config.name, "unrecognised PHI mask mapped to other", f"{where} [**{masks[0]}**]")
                kind = "other"
            if len(masks) > 1:
                skips.add(config.name, "adjacent PHI masks tagged as one entity", f"{where} character {start}")
            if kind in kept:
                entities.append((start, end, kind))
            else:
                skips.add(config.name, f"PHI kind '{kind}' not in entity_types", where, expected=True)
        example_id = f"{text_file}#{original.key}"
        words = word_spans(original.text, spec.word_pattern)
        examples.append(
            Example(
                id=example_id,
                text=original.text,
                words=words,
                group=original.key,
                tags=bio_tags(words, entities, skips, config.name, example_id),
            )
        )
    return examples


def _deid_records(path: Path) -> list[DeidRecord]:
    records, key, first_line, body = [], None, 0, []
    for number, line in enumerate(_read_text(path).splitlines(keepends=True), 1):
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


# ------------------------------------------------------------------------------ BRAT standoff (COS, Social History)

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


@register_loader("brat", {"path", "files", "unit", "entity_types", "word_pattern"})
def load_brat(spec: DataSpec, config: TaskConfig, skips: SkipLog) -> list[Example]:
    """BRAT .txt/.ann pairs found under data.path (or one folder per split in data.files).

    unit `file`: one example per file (group = the file). unit `snippet`: one example per `Snippet` entity,
    its text the snippet's and the entities inside it shifted to it (group = the file, id = file.ann#T-id);
    entities inside no snippet are counted. Entity types not in data.entity_types (default: the config's
    labels) are counted per type and ignored, as are relation, event, attribute, normalization and note lines.
    A discontinuous entity (`T1<TAB>Loc 10 15;20 25<TAB>...`) is tagged over its whole extent (counted),
    keeping one BIO entity per annotation. Overlaps: bio_tags keeps the longest and counts the rest.
    """
    kept = _entity_types(spec, config)
    examples = []
    for split, folder in split_files(spec).items():
        for txt, ann in _brat_pairs(folder):
            text = _read_text(txt)
            entities = _brat_entities(ann, text, spec, config.name, skips)
            if spec.unit == "file":
                units = [(str(txt), 0, len(text))]
            else:
                units = sorted(
                    ((f"{ann}#{e.id}", e.start, e.end) for e in entities if e.kind == SNIPPET), key=lambda unit: unit[1]
                )
                if not units:
                    skips.add(config.name, "file without a Snippet entity", str(ann))
            tagged = []
            for entity in entities:
                if spec.unit == "snippet" and entity.kind == SNIPPET:
                    continue
                if entity.kind not in kept:
                    skips.add(
                        config.name, f"entity type '{entity.kind}' not in entity_types", entity.where, expected=True
                    )
                elif not any(start <= entity.start and entity.end <= end for _, start, end in units):
                    skips.add(config.name, "entity outside every Snippet", entity.where)
                else:
                    tagged.append(entity)
            for unit_id, start, end in units:
                inside = [e for e in tagged if start <= e.start and e.end <= end]
                for entity in inside:
                    if entity.fragments > 1:
                        skips.add(config.name, "discontinuous entity tagged over its whole extent", entity.where)
                words = word_spans(text[start:end], spec.word_pattern)
                tags = bio_tags(
                    words, [(e.start - start, e.end - start, e.kind) for e in inside], skips, config.name, unit_id
                )
                examples.append(
                    Example(
                        id=unit_id,
                        text=text[start:end],
                        words=words,
                        tags=tags,
                        group=str(txt),
                        split=_split_name(split),
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
    for number, line in enumerate(_read_text(ann).split("\n"), 1):  # not splitlines: covered text may hold \x85 etc.
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


# ------------------------------------------------------------------------------ CoNLL columns

DOCSTART = "-DOCSTART-"


@register_loader("conll", {"path", "files", "token_column", "tag_column"})
def load_conll(spec: DataSpec, config: TaskConfig, skips: SkipLog) -> list[Example]:
    """One example per sentence (id = file:first line), words joined by spaces; columns split on any
    whitespace. `-DOCSTART-` lines are counted and start a document, which becomes the group of its
    sentences. A line without the token and tag columns is a bad record; skipping it skips its sentence."""
    examples = []
    for split, path in split_files(spec).items():
        for file in sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]:
            for document, sentence in _conll_sentences(file, config.name, skips):
                short = next(
                    (
                        number
                        for number, columns in sentence
                        if not _columns_fit(len(columns), spec.token_column, spec.tag_column)
                    ),
                    None,
                )
                if short is not None:
                    bad_record(
                        spec,
                        skips,
                        config.name,
                        f"{file}:{short}",
                        f"too few columns for token_column {spec.token_column} and tag_column {spec.tag_column}",
                    )
                    continue
                text, words = join_words([columns[spec.token_column] for _, columns in sentence])
                examples.append(
                    Example(
                        id=f"{file}:{sentence[0][0]}",
                        text=text,
                        words=words,
                        group=document,
                        tags=[columns[spec.tag_column] for _, columns in sentence],
                        split=_split_name(split),
                    )
                )
    return examples


def _columns_fit(count: int, token: int, tag: int) -> bool:
    """Both columns exist and are two different columns (a one-column line is not word and tag)."""
    return all(-count <= i < count for i in (token, tag)) and token % count != tag % count


def _conll_sentences(file: Path, task: str, skips: SkipLog):
    """(document, [(line number, columns), ...]) per sentence; document = file:line of its -DOCSTART-."""
    sentence, document = [], None
    with _reading(file), open(file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            columns = line.split()
            if columns and columns[0] != DOCSTART:
                sentence.append((number, columns))
                continue
            if sentence:
                yield document, sentence
                sentence = []
            if columns:
                skips.add(task, f"{DOCSTART} line", f"{file}:{number}", expected=True)
                document = f"{file}:{number}"
    if sentence:
        yield document, sentence
