"""What inference reads of a fine-tuning run's record: the windows its classifier was trained and tested on."""

from __future__ import annotations

import json

import pytest

from modeling.common.errors import DataError
from modeling.common.windows import default_stride
from modeling.inference.task_windows import recorded_windows

LABELS = ["cardiac", "renal"]


def run_record(**config) -> dict:
    return {"task_type": "multi_label", "max_length": 256, "config": {"labels": LABELS, **config}}


def test_the_runs_windows_as_it_resolved_them(tmp_path):
    model = tmp_path / "seed42" / "model"
    model.mkdir(parents=True)
    (model.parent / "results.json").write_text(json.dumps(run_record(window_stride=None, window_aggregation="max")))
    windows = recorded_windows(str(model), LABELS)
    # an unset stride is the default for the length the run resolved, as fine-tuning's TaskConfig.stride_for gives it
    assert (windows.max_length, windows.stride, windows.aggregation) == (256, default_stride(256), "max")
    assert windows.record == model.parent / "results.json"


def test_a_published_folder_holds_its_record_inside(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(run_record(window_stride=16, window_aggregation="mean")))
    assert recorded_windows(str(tmp_path), LABELS).stride == 16


def test_no_record_or_another_tools_results_json_means_no_windows(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    assert recorded_windows(str(model), LABELS) is None
    assert recorded_windows("org/some-hub-model", LABELS) is None
    (tmp_path / "results.json").write_text(json.dumps({"accuracy": 0.9}))
    assert recorded_windows(str(model), LABELS) is None


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"task_type": "ner", "max_length": 64, "config": {"labels": ["Drug"]}}, "records a ner run"),
        ({"task_type": "multi_label", "config": {"labels": LABELS}}, "records no max_length"),
    ],
)
def test_a_record_that_does_not_fit_is_one_line(tmp_path, record, message):
    (tmp_path / "results.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match=message):
        recorded_windows(str(tmp_path), LABELS)
