"""`text`: one document per line; `text_files`: one document per file."""

from __future__ import annotations

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.data.sources.files import open_binary
from modeling.data.sources.records import describe_utf8_error, good_lines
from modeling.data.sources.spec import SourceSpec


def text_records(spec: SourceSpec, path: str, skips: SkipLog):
    for line_number, line in good_lines(spec, path, skips):
        yield f"{path}:{line_number}", line.rstrip("\r\n")


def text_file_records(spec: SourceSpec, path: str, skips: SkipLog):
    with open_binary(path) as handle:
        content = handle.read()
    try:
        yield path, content.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line_number = content.count(b"\n", 0, error.start) + 1
        line_start = content.rfind(b"\n", 0, error.start) + 1
        where = f"{path}:{line_number}"
        if spec.on_bad_record == "skip":
            skips.add(spec.name, "not UTF-8", where)
            return
        column = error.start - line_start + 1
        raise DataError(f"{where}: {describe_utf8_error(error, column)}") from None
