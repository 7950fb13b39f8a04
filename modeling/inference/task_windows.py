"""The windows a fine-tuned classifier was trained and tested on, read from its run's record.

finetune.py keeps a run's settings in results.json: beside the model folder it saved (`seedN/results.json` next
to `seedN/model`), or inside the folder in a repository `python -m modeling.publish` staged. Its `max_length` is
the window length the run resolved, `config.window_stride` the tokens consecutive windows share (unset: the
default for that length) and `config.window_aggregation` how the windows' logits were combined per document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from modeling.common.errors import ConfigError, DataError
from modeling.common.windows import AGGREGATIONS, default_stride

# modeling.finetune.run_folder.TaskRun.results_json, which inference may not import (tests/import_graph.py)
RUN_RECORD = "results.json"
CLASSIFICATION_TASKS = ("single_label", "multi_label")


@dataclass(frozen=True)
class TaskWindows:
    """How a fine-tuning run cut documents longer than `max_length` tokens and combined their windows."""

    max_length: int
    stride: int  # tokens consecutive windows share
    aggregation: str  # of the window logits per label: mean or max
    record: Path  # the results.json they were read from

    def describe(self) -> str:
        return f"windows of {self.max_length} tokens, {self.stride} shared, the {self.aggregation} of their logits"

    def check_max_length(self, max_length: int | None) -> None:
        """A maximum length asked for (--max_length) must be the run's: other windows give other scores."""
        if max_length is not None and max_length != self.max_length:
            raise ConfigError(
                f"--max_length {max_length}: {self.record} records that this classifier was fine-tuned and tested "
                f"on windows of {self.max_length} tokens; leave --max_length out to classify as it did"
            )


def recorded_windows(model: str, labels: list[str]) -> TaskWindows | None:
    """The windows of the fine-tuning run that saved the classifier in the local folder `model` (whose labels are
    `labels`), or None where no run record is beside or inside it."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return None
    for path in (folder / RUN_RECORD, folder.parent / RUN_RECORD):
        if path.is_file():
            return _read_windows(path, labels)
    return None


def _read_windows(path: Path, labels: list[str]) -> TaskWindows | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict) or "task_type" not in record:
        return None  # some other tool's results.json, not a fine-tuning run's
    config = record["config"]
    if record["task_type"] not in CLASSIFICATION_TASKS or config.get("labels") != labels:
        raise DataError(
            f"{path}: records a {record['task_type']} run with labels {config.get('labels')}, not a run of this "
            f"classifier (labels {labels}); the windows it was fine-tuned on are unknown"
        )
    max_length = record.get("max_length") or config.get("max_length")
    aggregation = config.get("window_aggregation", "mean")
    if not isinstance(max_length, int) or aggregation not in AGGREGATIONS:
        raise DataError(f"{path}: records no max_length or window_aggregation its windows can be rebuilt from")
    stride = config.get("window_stride")
    return TaskWindows(max_length, default_stride(max_length) if stride is None else stride, aggregation, path)
