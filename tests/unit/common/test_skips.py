"""SkipLog: what readers leave out is counted by source and reason; only the first few of each are warned about."""

from __future__ import annotations

import logging

from modeling.common.skips import SkipLog


def test_skip_log_counts_everything_but_warns_only_for_the_first_five(caplog):
    skips = SkipLog()
    with caplog.at_level(logging.WARNING, logger="modeling.common.skips"):
        for line in range(1, 8):
            skips.add("notes", "empty document", f"notes.txt:{line}")
        skips.add("notes", "bad record", "notes.txt:9")
        skips.add("codes", "bad record")
    assert skips.as_dict() == {
        "notes": {"empty document": 7, "bad record": 1},
        "codes": {"bad record": 1},
    }
    assert skips.total() == 9
    assert len(caplog.records) == 7
    assert "notes.txt:5" in caplog.records[4].getMessage()
