"""A source as a recipe declares it: files (or a Hugging Face dataset id), a format and its options."""

from __future__ import annotations

from dataclasses import dataclass, fields

from modeling.common.errors import DataError

FORMATS = (
    "auto",
    "text",
    "text_files",
    "jsonl",
    "csv",
    "parquet",
    "hf",
    "pubmed",
    "pmc",
    "mimic3",
    "mimic4",
    "codes",
    "mds",
)
BAD_RECORD_POLICIES = ("raise", "skip")
# What kind of text a source is, for the model card; "clinical" = patient records, which can contain PHI.
DOMAINS = ("clinical", "biomedical", "general", "other")
DOMAIN_BY_FORMAT = {"mimic3": "clinical", "mimic4": "clinical", "pubmed": "biomedical", "pmc": "biomedical"}

# Used by format "auto"; the extension is read after stripping ".gz".
FORMAT_BY_EXTENSION = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".nxml": "pmc",
    ".xml": "pubmed",
    ".txt": "text",
}
MIMIC3_FILE_NAMES = ("noteevents.csv", "noteevents.csv.gz")

PACKAGE_PREFIX = "package:"
PARQUET_BATCH_ROWS = 1024
READ_CHUNK_BYTES = 1 << 16
# MIMIC notes are far longer than csv's default 128 KiB field limit.
CSV_FIELD_SIZE_LIMIT = 2**31 - 1


@dataclass
class SourceSpec:
    name: str
    path: str | list[str]
    format: str = "auto"
    text_column: str | None = None
    categories: list[str] | None = None
    publication_types: list[str] | None = None
    code_system: str = "ICD 10"
    code_column: str = "code"
    description_column: str = "description"
    subset: str | None = None
    split: str = "train"
    on_bad_record: str = "raise"
    domain: str | None = None  # default: DOMAIN_BY_FORMAT, else "other"

    @classmethod
    def from_config(cls, name: str, value) -> SourceSpec:
        """Build a spec from a recipe entry: a bare path, or a mapping of the fields above."""
        if isinstance(value, str):
            return cls(name=name, path=value)
        if not isinstance(value, dict):
            raise DataError(f"source '{name}': expected a path or a mapping of options, got {type(value).__name__}")
        allowed = [field.name for field in fields(cls) if field.name != "name"]
        unknown = [str(key) for key in value if key not in allowed]
        if unknown:
            keys = "key" if len(unknown) == 1 else "keys"
            raise DataError(
                f"source '{name}': unknown {keys} {', '.join(map(repr, unknown))}; allowed keys: {', '.join(allowed)}"
            )
        if "path" not in value:
            raise DataError(f"source '{name}': missing 'path'")
        return cls(name=name, **value)

    def __post_init__(self):
        # Checked here too, not only in from_config, so that specs built in code fail early.
        self.path = self._checked_path()
        self._require_choice("format", FORMATS)
        self._require_choice("on_bad_record", BAD_RECORD_POLICIES)
        if self.domain is None:
            self.domain = DOMAIN_BY_FORMAT.get(self.format, "other")
        self._require_choice("domain", DOMAINS)
        for option in ("code_system", "code_column", "description_column", "split"):
            self._require_string(option, optional=False)
        for option in ("text_column", "subset"):
            self._require_string(option, optional=True)
        self.categories = self._string_list("categories")
        self.publication_types = self._string_list("publication_types")
        if self.format == "hf" and not isinstance(self.path, str):
            raise DataError(f"source '{self.name}': format 'hf' takes one dataset id as 'path'")

    def _checked_path(self) -> str | list[str]:
        path = self.path
        if isinstance(path, str) and path.strip():
            return path
        if isinstance(path, list) and path and all(isinstance(p, str) and p.strip() for p in path):
            return list(path)
        raise DataError(f"source '{self.name}': 'path' must be a path or a non-empty list of paths")

    def _require_choice(self, option: str, allowed: tuple[str, ...]) -> None:
        value = getattr(self, option)
        if value not in allowed:
            raise DataError(f"source '{self.name}': {option} {value!r} is not one of: {', '.join(allowed)}")

    def _require_string(self, option: str, optional: bool) -> None:
        value = getattr(self, option)
        if isinstance(value, str) or (optional and value is None):
            return
        raise DataError(f"source '{self.name}': {option} must be a string, got {value!r}")

    def _string_list(self, option: str) -> list[str] | None:
        value = getattr(self, option)
        if value is None:
            return None
        if isinstance(value, str):  # a YAML scalar where a one-item list was meant
            return [value]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(value)
        raise DataError(f"source '{self.name}': {option} must be a list of strings, got {value!r}")
