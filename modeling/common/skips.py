"""Counting what is skipped: every lifecycle that reads records (preparing a store, fine-tuning loaders,
inference) counts what it leaves out by source and reason, warns for the first few, and reports the counts."""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger(__name__)

SKIP_WARNINGS_PER_REASON = 5
# Filters and citations without abstracts are expected: counted and reported, not warned about.
EXPECTED_SKIPS = ("filtered", "no abstract")


class SkipLog:
    """Counts documents/records that were skipped, by (source name, reason); warns for the
    first few of each reason with where they were, then counts silently."""

    def __init__(self, quiet: bool = False):
        self._counts: Counter[tuple[str, str]] = Counter()
        self.quiet = quiet  # a later pass over the same files would only repeat the same warnings

    def add(self, source: str, reason: str, where: str = "", expected: bool = False, changed: bool = False) -> None:
        """`changed`: the record was kept, repaired or mapped (the reason says how), not left out."""
        key = (source, reason)
        self._counts[key] += 1
        count = self._counts[key]
        if count > SKIP_WARNINGS_PER_REASON or self.quiet:
            return
        place = f" at {where}" if where else ""
        later = " (further ones are only counted)" if count == SKIP_WARNINGS_PER_REASON else ""
        # Filters and citations without abstracts are expected: counted and reported, not warned about.
        level = logging.DEBUG if expected or reason.startswith(EXPECTED_SKIPS) else logging.WARNING
        log.log(level, "source '%s': %s, %s%s%s", source, "changed" if changed else "skipped", reason, place, later)

    def as_dict(self) -> dict[str, dict[str, int]]:
        summary: dict[str, dict[str, int]] = {}
        for (source, reason), count in self._counts.items():
            summary.setdefault(source, {})[reason] = count
        return summary

    def total(self) -> int:
        return sum(self._counts.values())
