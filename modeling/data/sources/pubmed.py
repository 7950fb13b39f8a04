"""`pubmed`: MEDLINE baseline XML (title + abstract, `publication_types` filter); `pmc`: PMC open-access .nxml."""

from __future__ import annotations

import zlib
from contextlib import contextmanager

from modeling.common.skips import SkipLog
from modeling.data.sources.records import call_parser, casefolded, joined, raise_as_data_error
from modeling.data.sources.spec import READ_CHUNK_BYTES, SourceSpec


def pubmed_records(spec: SourceSpec, path: str, skips: SkipLog):
    """MEDLINE citations: title + newline + abstract. No-abstract citations are counted first,
    so their count does not depend on the publication type filter."""
    import pubmed_parser

    wanted = casefolded(spec.publication_types)
    with _medline_input(path) as medline:
        citations = raise_as_data_error(path, pubmed_parser.parse_medline_xml(medline))
        for citation in citations:
            if citation.get("delete"):
                continue  # a deletion notice, not a citation
            where = f"{path}:PMID {citation.get('pmid', '?')}"
            abstract = (citation.get("abstract") or "").strip()
            if not abstract:
                skips.add(spec.name, "no abstract", where)
                continue
            if wanted and not wanted & _publication_type_names(citation):
                skips.add(spec.name, "filtered: publication type", where)
                continue
            yield where, joined([citation.get("title"), abstract], "\n")


def _publication_type_names(citation: dict) -> set[str]:
    """ "D016428:Journal Article; D002363:Case Reports" -> {"journal article", "case reports"}."""
    names = set()
    for entry in (citation.get("publication_types") or "").split(";"):
        name = entry.partition(":")[2] if ":" in entry else entry
        if name.strip():
            names.add(name.strip().casefold())
    return names


@contextmanager
def _medline_input(path: str):
    """What to hand parse_medline_xml: it always gunzips, so plain .xml is gzipped on the fly."""
    if path.lower().endswith(".gz"):
        yield path
        return
    with open(path, "rb") as plain:
        yield _GzipOnTheFly(plain)


class _GzipOnTheFly:
    """A read-only file object giving the gzip compression of another file, chunk by chunk."""

    def __init__(self, plain):
        self._plain = plain
        self._compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: gzip framing
        self._pending = b""
        self._finished = False

    def read(self, size: int = -1) -> bytes:
        while not self._finished and (size < 0 or len(self._pending) < size):
            chunk = self._plain.read(READ_CHUNK_BYTES)
            if chunk:
                self._pending += self._compressor.compress(chunk)
            else:
                self._pending += self._compressor.flush()
                self._finished = True
        if size < 0:
            size = len(self._pending)
        result, self._pending = self._pending[:size], self._pending[size:]
        return result


def pmc_records(spec: SourceSpec, path: str, skips: SkipLog):
    """A PMC open-access article: title, abstract, then body paragraphs between blank lines."""
    import pubmed_parser

    article = call_parser(path, pubmed_parser.parse_pubmed_xml)
    # all_paragraph=True: by default only paragraphs citing a reference are returned.
    paragraphs = call_parser(path, pubmed_parser.parse_pubmed_paragraph, all_paragraph=True)
    heading = joined([article.get("full_title"), article.get("abstract")], "\n")
    body = joined([paragraph.get("text") for paragraph in paragraphs], "\n\n")
    yield path, joined([heading, body], "\n\n")
