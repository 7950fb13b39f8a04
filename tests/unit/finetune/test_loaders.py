"""Tests for modeling.finetune.loaders: each benchmark's original format, on small fixture files written here in
exactly that layout, with the expected examples worked out by hand; and every bad input the loaders detect."""

import gzip
import logging
import re

import pytest

from modeling.common.errors import ConfigError, DataError
from modeling.common.skips import SkipLog
from modeling.finetune.config import task_from_dict
from modeling.finetune.dataset import load_task_examples
from modeling.finetune.loaders import LOADERS
from modeling.finetune.loaders.deid import _phi_spans, phi_kind


def task(loader, labels, kind="ner", **data):
    return task_from_dict(
        {"name": "t", "task": kind, "labels": labels, "data": {"loader": loader, **data}, "seeds": [1]}
    )


def read(config):
    """The loader's examples (before label checks and splits) and the task's skip counts."""
    skips = SkipLog()
    examples = LOADERS[config.data.loader].read(config.data, config, skips)
    return examples, skips.as_dict().get("t", {})


def entities(example):
    """(word, tag) of the words inside entities."""
    return [(word, tag) for word, tag in zip(example.word_texts(), example.tags, strict=True) if tag != "O"]


# ------------------------------------------------------------------------------ ChemProt

CPR_LABELS = ["CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9", "false"]
CHEMPROT_HEADER = "index\tsentence\tlabel\n"
CHEMPROT_TRAIN = (
    '16357751.T1.T2\t@CHEMICAL$ selectively inhibits "activated" @GENE$ .\tCPR:4\n'
    '16357751.T1.T3\t@CHEMICAL$ spares the "inactive" kinase but not @GENE$ .\tfalse\n'
)


@pytest.fixture
def chemprot(tmp_path):
    (tmp_path / "train.tsv").write_text(CHEMPROT_HEADER + CHEMPROT_TRAIN)
    (tmp_path / "dev.tsv").write_text(CHEMPROT_HEADER + '10064839.T5.T6\t"Binding" of @CHEM-GENE$ was weak .\tCPR:3\n')
    (tmp_path / "test.tsv").write_text(CHEMPROT_HEADER + "23194825.T2.T8\t@GENE$ is activated by @CHEMICAL$ .\tCPR:3\n")
    return tmp_path


def test_chemprot_rows_keep_markers_and_quotes_in_their_official_splits(chemprot):
    splits, skips = load_task_examples(task("chemprot_tsv", CPR_LABELS, "single_label", path=str(chemprot)))
    train = splits["train"]
    assert [(e.id, e.text, e.labels) for e in train] == [
        (f"{chemprot}/train.tsv:2", '@CHEMICAL$ selectively inhibits "activated" @GENE$ .', ["CPR:4"]),
        (f"{chemprot}/train.tsv:3", '@CHEMICAL$ spares the "inactive" kinase but not @GENE$ .', ["false"]),
    ]
    assert [(e.text, e.labels) for e in splits["validation"]] == [('"Binding" of @CHEM-GENE$ was weak .', ["CPR:3"])]
    assert [e.id for e in splits["test"]] == [f"{chemprot}/test.tsv:2"]
    assert skips.total() == 0


def test_chemprot_wrong_column_count_names_file_and_line_or_is_counted(chemprot):
    (chemprot / "train.tsv").write_text(CHEMPROT_HEADER + CHEMPROT_TRAIN + "16357751.T1.T4\tno label column\n")
    with pytest.raises(DataError, match=r"train\.tsv:4: wrong number of columns: 2 instead of 3"):
        read(task("chemprot_tsv", CPR_LABELS, "single_label", path=str(chemprot)))
    examples, skips = read(task("chemprot_tsv", CPR_LABELS, "single_label", path=str(chemprot), on_bad_record="skip"))
    assert len(examples) == 4
    assert skips == {"wrong number of columns": 1}


def test_chemprot_file_without_header_is_an_error(chemprot):
    (chemprot / "dev.tsv").write_text("10064839.T5.T6\tBinding of @CHEM-GENE$ was weak .\tCPR:3\n")
    with pytest.raises(DataError, match=r"dev\.tsv:1: expected the header index<TAB>sentence<TAB>label"):
        read(task("chemprot_tsv", CPR_LABELS, "single_label", path=str(chemprot)))


# ------------------------------------------------------------------------------ Phenotype

PHENOTYPES = [
    "ADVANCED.CANCER",
    "ADVANCED.HEART.DISEASE",
    "ADVANCED.LUNG.DISEASE",
    "ALCOHOL.ABUSE",
    "CHRONIC.NEUROLOGICAL.DYSTROPHIES",
    "CHRONIC.PAIN.FIBROMYALGIA",
    "DEMENTIA",
    "DEPRESSION",
    "DEVELOPMENTAL.DELAY.RETARDATION",
    "NON.ADHERENCE",
    "OBESITY",
    "OTHER.SUBSTANCE.ABUSE",
    "SCHIZOPHRENIA.AND.OTHER.PSYCHIATRIC.DISORDERS",
]
PHENOTYPE_LABELS = PHENOTYPES + ["UNSURE"]
ACTDB_COLUMNS = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "BATCH.ID", "OPERATOR", *PHENOTYPES, "NONE", "UNSURE"]


def annotator_row(row_id, operator, marked=(), one="1", zero="0"):
    """One ACTdb102003.csv row; `marked` may include NONE. The real file mixes 1, 1.0, 0 and blanks."""
    cells = {"ROW_ID": row_id, "SUBJECT_ID": "7", "HADM_ID": "100001", "BATCH.ID": "b1", "OPERATOR": operator}
    cells.update({column: one if column in marked else zero for column in ACTDB_COLUMNS[5:]})
    return ",".join(cells[column] for column in ACTDB_COLUMNS) + "\n"


# Note 101: two annotators, one of them also marks OBESITY. 102: NONE against ALCOHOL.ABUSE.
# 103: three annotators, DEMENTIA by two, OBESITY by one. Rows of a note are not adjacent.
ANNOTATOR_ROWS = [
    annotator_row("101", "A", ["DEPRESSION", "OBESITY"]),
    annotator_row("102", "A", ["NONE"]),
    annotator_row("101", "B", ["DEPRESSION"], one="1.0", zero=""),
    annotator_row("103", "A", ["DEMENTIA", "OBESITY"]),
    annotator_row("102", "B", ["ALCOHOL.ABUSE"]),
    annotator_row("103", "B", ["DEMENTIA"]),
    annotator_row("103", "C", ["NONE"], one="1.0", zero="0.0"),
]
NOTE_101 = 'Admission Date: [**2151-7-16**]\nHistory: depressed, "very low" mood.\nObese.'
NOTEEVENTS = (  # MIMIC-III layout: quoted strings, TEXT spanning lines with "" for a quote
    '"ROW_ID","SUBJECT_ID","HADM_ID","CHARTDATE","CHARTTIME","STORETIME","CATEGORY","DESCRIPTION","CGID","ISERROR","TEXT"\n'
    '100,7,100001,2151-08-04,,,"Nursing/other","Report",,,"Not annotated."\n'
    '101,7,100001,2151-08-04,,,"Discharge summary","Report",,,"' + NOTE_101.replace('"', '""') + '"\n'
    '103,7,100001,2151-08-04,,,"Discharge summary","Report",,,"Progressive memory loss,\ndementia."\n'
    '102,7,100001,2151-08-05,2151-08-05 10:00:00,,"Nursing/other","Report",17,,"Drinks 6 beers a day."\n'
)


@pytest.fixture
def phenotype(tmp_path):
    (tmp_path / "ACTdb102003.csv").write_text(",".join(ACTDB_COLUMNS) + "\n" + "".join(ANNOTATOR_ROWS))
    with gzip.open(tmp_path / "NOTEEVENTS.csv.gz", "wt") as handle:
        handle.write(NOTEEVENTS)
    (tmp_path / "mimic").mkdir()
    (tmp_path / "mimic" / "NOTEEVENTS.csv").write_text(NOTEEVENTS)
    return tmp_path


@pytest.mark.parametrize(
    "combination, expected",
    [
        ("majority", {"101": ["DEPRESSION", "OBESITY"], "102": ["ALCOHOL.ABUSE"], "103": ["DEMENTIA"]}),
        ("any", {"101": ["DEPRESSION", "OBESITY"], "102": ["ALCOHOL.ABUSE"], "103": ["DEMENTIA", "OBESITY"]}),
        ("all", {"101": ["DEPRESSION"], "102": [], "103": []}),
    ],
)
def test_phenotype_combines_annotators_into_one_example_per_note(phenotype, combination, expected):
    examples, skips = read(
        task("phenotype", PHENOTYPE_LABELS, "multi_label", path=str(phenotype), label_combination=combination)
    )
    assert {e.group: e.labels for e in examples} == expected
    assert [e.id for e in examples] == [f"{phenotype}/ACTdb102003.csv#ROW_ID={n}" for n in ("101", "102", "103")]
    assert skips == {}


@pytest.mark.parametrize("notes", [None, "mimic/NOTEEVENTS.csv"])  # default .csv.gz, or data.notes
def test_phenotype_joins_multiline_note_texts_and_logs_the_combination(phenotype, notes, caplog):
    caplog.set_level(logging.INFO, logger="modeling.finetune.loaders.phenotype")
    data = {"notes": notes} if notes else {}
    examples, _ = read(task("phenotype", PHENOTYPE_LABELS, "multi_label", path=str(phenotype), **data))
    assert [e.text for e in examples] == [NOTE_101, "Drinks 6 beers a day.", "Progressive memory loss,\ndementia."]
    assert all(e.split is None for e in examples)
    assert "t: 7 annotator rows combined into 3 notes (label_combination: majority)" in caplog.messages


@pytest.mark.parametrize(
    "row, message, reason",
    [
        (
            annotator_row("104", "A", ["NONE", "DEPRESSION"]),
            r"ACTdb102003\.csv:9 \(ROW_ID 104\): NONE=1 but phenotypes set: DEPRESSION",
            "NONE=1 but phenotypes set",
        ),
        (
            annotator_row("999", "A", ["DEMENTIA"]),
            r"ACTdb102003\.csv:9 \(ROW_ID 999\): note not found in \S*NOTEEVENTS\.csv\.gz",
            "note not found in",
        ),
        (
            annotator_row("104", "A", ["DEMENTIA"], one="yes"),
            r"ACTdb102003\.csv:9 \(ROW_ID 104\): not 0, 1 or blank: DEMENTIA='yes'",
            "not 0, 1 or blank",
        ),
    ],
)
def test_phenotype_bad_rows_name_file_line_and_note_or_are_counted(phenotype, row, message, reason):
    with open(phenotype / "ACTdb102003.csv", "a") as handle:
        handle.write(row)
    with pytest.raises(DataError, match=message):
        read(task("phenotype", PHENOTYPE_LABELS, "multi_label", path=str(phenotype)))
    examples, skips = read(
        task("phenotype", PHENOTYPE_LABELS, "multi_label", path=str(phenotype), on_bad_record="skip")
    )
    assert [e.group for e in examples] == ["101", "102", "103"]
    assert len(skips) == 1
    assert next(iter(skips)).startswith(reason)
    assert sum(skips.values()) == 1


# ------------------------------------------------------------------------------ DEID

DEID_KINDS = ["age", "date", "location", "name", "other", "phone_nb"]
DEID_TEXT = """\
START_OF_RECORD=1||||1||||
Pt seen by Dr. John Smith on 04/18 at Boston General.
Age 92, call 555-1234 or mail js@x.org.
||||END_OF_RECORD
START_OF_RECORD=1||||2||||
Stable overnight. Family (Mary) visited in 1994. Code Q7.
||||END_OF_RECORD
START_OF_RECORD=2||||1||||
No events.
||||END_OF_RECORD
"""
DEID_MASKED = """\
START_OF_RECORD=1||||1||||
Pt seen by Dr. [**First Name (Titles) **] [**Last Name (Titles) **] on [**04-18**] at [**Hospital 1**].
Age [**Age over 90 **], call [**Telephone/Fax (1) 2345**] or mail [**E-mail address 3**].
||||END_OF_RECORD
START_OF_RECORD=1||||2||||
Stable overnight. Family ([**Known firstname 7**]) visited in [**1994**]. Code [**Wombat 3**].
||||END_OF_RECORD
START_OF_RECORD=2||||1||||
No events.
||||END_OF_RECORD
"""


def write_deid(folder, masked=DEID_MASKED):
    (folder / "id.text").write_text(DEID_TEXT)
    (folder / "id.res").write_text(masked)
    return folder


def test_deid_aligns_masks_with_the_original_text(tmp_path):
    examples, skips = read(task("deid", DEID_KINDS, path=str(write_deid(tmp_path))))
    assert [(e.id, e.group) for e in examples] == [
        (f"{tmp_path}/id.text#1||||1", "1||||1"),
        (f"{tmp_path}/id.text#1||||2", "1||||2"),
        (f"{tmp_path}/id.text#2||||1", "2||||1"),
    ]
    assert (
        examples[0].text
        == "Pt seen by Dr. John Smith on 04/18 at Boston General.\nAge 92, call 555-1234 or mail js@x.org.\n"
    )
    assert entities(examples[0]) == [
        ("John", "B-name"),
        ("Smith", "B-name"),
        ("04", "B-date"),
        ("/", "I-date"),
        ("18", "I-date"),
        ("Boston", "B-location"),
        ("General", "I-location"),
        ("92", "B-age"),
        ("555", "B-phone_nb"),
        ("-", "I-phone_nb"),
        ("1234", "I-phone_nb"),
        ("js", "B-other"),
        ("@", "I-other"),
        ("x", "I-other"),
        (".", "I-other"),
        ("org", "I-other"),
    ]
    assert entities(examples[1]) == [("Mary", "B-name"), ("1994", "B-date"), ("Q7", "B-other")]
    assert entities(examples[2]) == []
    assert examples[2].word_texts() == ["No", "events", "."]
    assert skips == {"unrecognised PHI mask mapped to other": 1}


def test_deid_kinds_outside_entity_types_are_counted_not_tagged(tmp_path):
    examples, skips = read(task("deid", ["date", "name"], path=str(write_deid(tmp_path))))
    assert entities(examples[1]) == [("Mary", "B-name"), ("1994", "B-date")]
    assert skips == {
        "unrecognised PHI mask mapped to other": 1,
        "PHI kind 'location' not in entity_types": 1,
        "PHI kind 'age' not in entity_types": 1,
        "PHI kind 'phone_nb' not in entity_types": 1,
        "PHI kind 'other' not in entity_types": 2,
    }


@pytest.mark.parametrize(
    "mask, kind",
    [
        ("Hospital 1", "location"),
        ("Location (un) 4", "location"),
        ("Street Address 12", "location"),
        ("Hospital Unit Name 10", "location"),
        ("State 3", "location"),
        ("1994", "date"),
        ("04-18", "date"),
        ("Date range (1) 123", "date"),
        ("Month/Year 2", "date"),
        ("Holiday 4", "date"),
        ("Age over 90 ", "age"),
        ("First Name (Titles) ", "name"),
        ("Known lastname 5", "name"),
        ("Doctor Last Name 2", "name"),
        ("Initials (NamePattern1) ", "name"),
        ("Telephone/Fax (1) 2345", "phone_nb"),
        ("Pager number 3", "phone_nb"),
        ("E-mail address 3", "other"),
        ("Company 2", "other"),
        ("Medical Record Number 8", "other"),
        ("Social Security Number 1", "other"),
        ("Wombat 3", None),
    ],
)
def test_deid_mask_kind_rules(mask, kind):
    assert phi_kind(mask) == kind


@pytest.mark.parametrize(
    "text, masked, spans",
    [
        # the text after the last mask must end the note, even where it also occurs inside the PHI
        ("At St. Elsewhere.", "At [**Hospital 2**].", [(3, 16, ["Hospital 2"])]),
        # masks with no text between them share one span
        ("Dr. JohnSmith saw", "Dr. [**First Name **][**Last Name **] saw", [(4, 13, ["First Name ", "Last Name "])]),
    ],
)
def test_deid_mask_spans(text, masked, spans):
    assert _phi_spans(text, masked) == spans


@pytest.mark.parametrize(
    "masked, message",
    [
        (DEID_MASKED.rsplit("START_OF_RECORD", 1)[0], r"id\.text has 3 records but \S*id\.res has 2"),
        (
            DEID_MASKED.replace("=1||||2||||", "=1||||3||||"),
            r"id\.res:5: record 1\|\|\|\|3 where \S*id\.text:5 has record 1\|\|\|\|2",
        ),
    ],
)
def test_deid_files_holding_different_records_are_an_error(tmp_path, masked, message):
    with pytest.raises(DataError, match=message):
        read(task("deid", DEID_KINDS, path=str(write_deid(tmp_path, masked)), on_bad_record="skip"))


def test_deid_misaligned_mask_names_file_record_and_character_or_is_counted(tmp_path):
    write_deid(tmp_path, DEID_MASKED.replace("Stable overnight", "Stable overnite"))
    with pytest.raises(DataError, match=r"id\.res:5 record 1\|\|\|\|2: does not align with id\.text: character 13:"):
        read(task("deid", DEID_KINDS, path=str(tmp_path)))
    examples, skips = read(task("deid", DEID_KINDS, path=str(tmp_path), on_bad_record="skip"))
    assert [e.group for e in examples] == ["1||||1", "2||||1"]
    assert skips == {"does not align with id.text": 1}


# ------------------------------------------------------------------------------ BRAT


def brat_entity(entity_id, kind, text, *fragments):
    """A text-bound line, each fragment the next occurrence of a phrase; covered text as BRAT writes it."""
    spans, position = [], 0
    for phrase in fragments:
        start = text.index(phrase, position)
        spans.append(f"{start} {start + len(phrase)}")
        position = start + len(phrase)
    return f"{entity_id}\t{kind} {';'.join(spans)}\t{' '.join(fragments).replace(chr(10), ' ')}\n"


COS_LABELS = ["Cos", "Ref", "Loc", "Attr", "Val"]
REPORT_1 = (
    "FINDINGS: Persistent left basilar opacity. Heart size normal.\nIMPRESSION: New right effusion and\n"
    "clear upper apex.\n"
)
REPORT_1_ANN = "".join(
    [
        brat_entity("T1", "Snippet", REPORT_1, "Persistent left basilar opacity."),
        brat_entity("T2", "Snippet", REPORT_1, "New right effusion and\nclear upper apex."),
        brat_entity("T3", "Cos", REPORT_1, "Persistent"),
        brat_entity("T4", "Loc", REPORT_1, "left basilar"),
        brat_entity("T5", "Attr", REPORT_1, "basilar opacity"),  # overlaps T4 and is longer: T4 is dropped
        brat_entity("T6", "Loc", REPORT_1, "Heart"),  # in no snippet
        brat_entity("T7", "Cos", REPORT_1, "New"),
        brat_entity("T8", "Loc", REPORT_1, "right"),
        brat_entity("T9", "Attr", REPORT_1, "effusion"),
        brat_entity("T10", "Diagnosis", REPORT_1, "effusion"),  # a type the task does not keep
        brat_entity("T11", "Attr", REPORT_1, "clear", "apex"),  # discontinuous
        "R1\tModifies Arg1:T9 Arg2:T8\n",
        "A1\tNegated T7\n",
        "#1\tAnnotatorNotes T5\tcheck\n",
    ]
)
REPORT_2 = "Stable small nodule.\n"
REPORT_2_ANN = "".join(
    [
        brat_entity("T1", "Snippet", REPORT_2, "Stable small nodule."),
        brat_entity("T2", "Cos", REPORT_2, "Stable"),
        brat_entity("T3", "Val", REPORT_2, "small"),
    ]
)


@pytest.fixture
def cos(tmp_path):
    for name, text, ann in (("report1", REPORT_1, REPORT_1_ANN), ("report2", REPORT_2, REPORT_2_ANN)):
        (tmp_path / f"{name}.txt").write_text(text)
        (tmp_path / f"{name}.ann").write_text(ann)
    (tmp_path / "annotation.conf").write_text("[entities]\nSnippet\nCos\n")
    return tmp_path


def test_brat_snippets_are_examples_with_their_entities(cos):
    examples, skips = read(task("brat", COS_LABELS, path=str(cos), unit="snippet"))
    assert [(e.id, e.group, e.text) for e in examples] == [
        (f"{cos}/report1.ann#T1", f"{cos}/report1.txt", "Persistent left basilar opacity."),
        (f"{cos}/report1.ann#T2", f"{cos}/report1.txt", "New right effusion and\nclear upper apex."),
        (f"{cos}/report2.ann#T1", f"{cos}/report2.txt", "Stable small nodule."),
    ]
    assert [entities(e) for e in examples] == [
        [("Persistent", "B-Cos"), ("basilar", "B-Attr"), ("opacity", "I-Attr")],
        [
            ("New", "B-Cos"),
            ("right", "B-Loc"),
            ("effusion", "B-Attr"),
            ("clear", "B-Attr"),
            ("upper", "I-Attr"),
            ("apex", "I-Attr"),
        ],
        [("Stable", "B-Cos"), ("small", "B-Val")],
    ]
    assert skips == {
        "overlapping entity dropped (longest kept)": 1,
        "entity outside every Snippet": 1,
        "entity type 'Diagnosis' not in entity_types": 1,
        "discontinuous entity tagged over its whole extent": 1,
        "BRAT relation line ignored": 1,
        "BRAT attribute line ignored": 1,
        "BRAT note line ignored": 1,
    }


SH_NOTE_1 = "Smokes 1 pack per day. Drinks socially.\nLives with\nwife.\n"
SH_NOTE_2 = "Denies drug use.\n"


def test_brat_files_are_examples_with_whitespace_words(tmp_path):
    (tmp_path / "note1.txt").write_text(SH_NOTE_1)
    (tmp_path / "note1.ann").write_text(
        "".join(
            [
                brat_entity("T1", "Tobacco", SH_NOTE_1, "Smokes 1 pack per day"),
                brat_entity("T2", "Amount", SH_NOTE_1, "1 pack"),  # nested in T1: dropped
                brat_entity("T3", "Frequency", SH_NOTE_1, "per day"),  # nested in T1: dropped
                brat_entity("T4", "Alcohol", SH_NOTE_1, "Drinks socially"),
                brat_entity("T5", "LivingStatus", SH_NOTE_1, "Lives with\nwife"),
            ]
        )
    )  # covered text "Lives with wife"
    (tmp_path / "note2.txt").write_text(SH_NOTE_2)
    (tmp_path / "note2.ann").write_text(brat_entity("T1", "Drug", SH_NOTE_2, "drug"))
    config = task(
        "brat",
        ["Alcohol", "Amount", "Drug", "Frequency", "LivingStatus", "Tobacco"],
        path=str(tmp_path),
        unit="file",
        word_pattern=r"\S+",
    )
    examples, skips = read(config)
    assert [(e.id, e.group, e.text) for e in examples] == [
        (f"{tmp_path}/note1.txt", f"{tmp_path}/note1.txt", SH_NOTE_1),
        (f"{tmp_path}/note2.txt", f"{tmp_path}/note2.txt", SH_NOTE_2),
    ]
    assert list(zip(examples[0].word_texts(), examples[0].tags, strict=True)) == [
        ("Smokes", "B-Tobacco"),
        ("1", "I-Tobacco"),
        ("pack", "I-Tobacco"),
        ("per", "I-Tobacco"),
        ("day.", "I-Tobacco"),
        ("Drinks", "B-Alcohol"),
        ("socially.", "I-Alcohol"),
        ("Lives", "B-LivingStatus"),
        ("with", "I-LivingStatus"),
        ("wife.", "I-LivingStatus"),
    ]
    assert examples[1].tags == ["O", "B-Drug", "O"]
    assert skips == {"overlapping entity dropped (longest kept)": 2}


@pytest.mark.parametrize(
    "line, message, reason",
    [
        (
            "T4\tCos 7 500\tsmall nodule",
            r"report2\.ann:4: span outside the text: 7 500, the \.txt has 21 characters",
            "span outside the text",
        ),
        (
            "T4\tCos 0 6\tSteady",
            r"report2\.ann:4: covered text differs from the \.txt: 'Steady' in the \.ann, 'Stable' in the \.txt",
            "covered text differs from the .txt",
        ),
    ],
)
def test_brat_bad_spans_name_file_and_line_or_are_counted(cos, line, message, reason):
    (cos / "report2.ann").write_text(REPORT_2_ANN + line + "\n")
    with pytest.raises(DataError, match=message):
        read(task("brat", COS_LABELS, path=str(cos), unit="snippet"))
    examples, skips = read(task("brat", COS_LABELS, path=str(cos), unit="snippet", on_bad_record="skip"))
    assert len(examples) == 3
    assert skips[reason] == 1


@pytest.mark.parametrize(
    "orphan, message",
    [
        ("orphan.ann", r"orphan\.ann: no orphan\.txt next to it"),
        ("lonely.txt", r"lonely\.txt: no lonely\.ann next to it"),
    ],
)
def test_brat_file_without_its_partner_is_an_error(cos, orphan, message):
    (cos / orphan).write_text("T1\tCos 0 3\tNew\n" if orphan.endswith(".ann") else "New\n")
    with pytest.raises(DataError, match=message):
        read(task("brat", COS_LABELS, path=str(cos), unit="snippet", on_bad_record="skip"))


# ------------------------------------------------------------------------------ CoNLL

CONLL_TRAIN = """\
-DOCSTART- -X- -X- O

Patient NN O
has VBZ O
diabetes NN B-Problem
mellitus NN I-Problem
. . O

Aspirin NN B-Drug
given VBN O

-DOCSTART- -X- -X- O

Stable JJ O"""


@pytest.fixture
def conll(tmp_path):
    (tmp_path / "train.conll").write_text(CONLL_TRAIN)
    (tmp_path / "dev.conll").write_text("No\tDT\tO\nfever\tNN\tB-Problem\n\n")
    (tmp_path / "test.conll").write_text("Cough   NN   I-Problem\n\n")  # IOB1-style I- at the start
    return tmp_path


CONLL_FILES = {"train": "train.conll", "validation": "dev.conll", "test": "test.conll"}


def test_conll_sentences_in_their_splits_grouped_by_document(conll):
    splits, skips = load_task_examples(task("conll", ["Problem", "Drug"], path=str(conll), files=CONLL_FILES))
    train = splits["train"]
    assert [(e.id, e.text, e.group) for e in train] == [
        (f"{conll}/train.conll:3", "Patient has diabetes mellitus .", f"{conll}/train.conll:1"),
        (f"{conll}/train.conll:9", "Aspirin given", f"{conll}/train.conll:1"),
        (f"{conll}/train.conll:14", "Stable", f"{conll}/train.conll:12"),
    ]
    assert entities(train[0]) == [("diabetes", "B-Problem"), ("mellitus", "I-Problem")]
    assert train[1].tags == ["B-Drug", "O"]
    assert [(e.word_texts(), e.tags) for e in splits["validation"]] == [(["No", "fever"], ["O", "B-Problem"])]
    assert [(e.word_texts(), e.tags) for e in splits["test"]] == [(["Cough"], ["B-Problem"])]
    assert skips.as_dict()["t"] == {"-DOCSTART- line": 2, "I- tag not continuing an entity, repaired to B-": 1}


def test_conll_line_without_a_tag_names_file_and_line_or_skips_its_sentence(conll):
    (conll / "train.conll").write_text(CONLL_TRAIN.replace("given VBN O", "given"))
    with pytest.raises(DataError, match=r"train\.conll:10: too few columns for token_column 0 and tag_column -1"):
        read(task("conll", ["Problem", "Drug"], path=str(conll), files=CONLL_FILES))
    examples, skips = read(task("conll", ["Problem", "Drug"], path=str(conll), files=CONLL_FILES, on_bad_record="skip"))
    assert [e.id for e in examples if e.split == "train"] == [f"{conll}/train.conll:3", f"{conll}/train.conll:14"]
    assert skips["too few columns for token_column 0 and tag_column -1"] == 1


# ------------------------------------------------------------------------------ registry


@pytest.mark.parametrize(
    "loader, setting",
    [
        ("conll", {"unit": "snippet"}),
        ("phenotype", {"files": {"train": "x.csv"}}),
        ("deid", {"notes": "x"}),
        ("chemprot_tsv", {"entity_types": ["x"]}),
    ],
)
def test_settings_a_loader_does_not_read_are_config_errors(loader, setting):
    with pytest.raises(ConfigError, match=re.escape(f"data.{next(iter(setting))}: not read by loader '{loader}'")):
        task(loader, ["a", "b"], path="/nowhere", **setting)
