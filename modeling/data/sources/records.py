"""What every format shares: reading lines as UTF-8 with their numbers, and a bad record raised or counted
as the source's `on_bad_record` says."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.data.sources.files import open_binary
from modeling.data.sources.spec import SourceSpec


def bad_record(spec: SourceSpec, skips: SkipLog, where: str, problem: str) -> None:
    """Raise, or count and carry on, as the recipe's on_bad_record says."""
    if spec.on_bad_record == "skip":
        skips.add(spec.name, "bad record", where)
        return
    raise DataError(f"{where}: {problem}")


def undecodable(spec: SourceSpec, skips: SkipLog, where: str, error: UnicodeDecodeError) -> None:
    if spec.on_bad_record == "skip":
        skips.add(spec.name, "not UTF-8", where)
        return
    raise DataError(f"{where}: {describe_utf8_error(error)}")


def describe_utf8_error(error: UnicodeDecodeError, column: int | None = None) -> str:
    bad_byte = error.object[error.start]
    column = error.start + 1 if column is None else column
    return f"not valid UTF-8 (byte 0x{bad_byte:02x} at column {column})"


def raise_as_data_error(what: str, parsed: Iterable) -> Iterator:
    """Third-party parsers raise all kinds of exceptions on corrupt input (lxml, gzip,
    datasets ...); turn them into a DataError naming the file instead of a bare traceback."""
    try:
        yield from parsed
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{what}: cannot parse: {type(error).__name__}: {error}") from error


class DecodedLines:
    """The lines of a binary file decoded as UTF-8, counting lines as they go.

    Decoding line by line pins a bad byte to its line number. An undecodable line is
    remembered in `bad` (and passed on decoded with replacement characters) so the caller
    can raise or skip exactly that line or, for csv, the record containing it.
    """

    def __init__(self, handle):
        self._handle = handle
        self.line_number = 0
        self.bad: tuple[int, UnicodeDecodeError] | None = None

    def __iter__(self) -> Iterator[str]:
        for raw in self._handle:
            self.line_number += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                self.bad = self.bad or (self.line_number, error)
                line = raw.decode("utf-8", errors="replace")
            if self.line_number == 1:
                line = line.removeprefix("\ufeff")  # byte-order mark from Windows tools
            yield line

    def take_bad(self) -> tuple[int, UnicodeDecodeError] | None:
        bad, self.bad = self.bad, None
        return bad


def good_lines(spec: SourceSpec, path: str, skips: SkipLog) -> Iterator[tuple[int, str]]:
    """(line number, line) for every line that decodes; others raise or are counted."""
    with open_binary(path) as handle:
        lines = DecodedLines(handle)
        for line in lines:
            bad = lines.take_bad()
            if bad:
                undecodable(spec, skips, f"{path}:{bad[0]}", bad[1])
                continue
            yield lines.line_number, line


def casefolded(names: list[str] | None) -> set[str] | None:
    return {name.strip().casefold() for name in names} if names else None


def call_parser(path: str, function, **options):
    try:
        return function(path, **options)
    except Exception as error:  # lxml and friends; see raise_as_data_error
        raise DataError(f"{path}: cannot parse: {type(error).__name__}: {error}") from error


def joined(parts, separator: str) -> str:
    return separator.join(part.strip() for part in parts if part and part.strip())
