"""Task configs: every shipped config loads; unknown keys and impossible values stop with one line."""

from __future__ import annotations

import re

import pytest
import yaml

from modeling.common.errors import ConfigError
from modeling.finetune.config import EVAL_CONFIGS_DIR, load_task_config, task_from_dict

SHIPPED = sorted(p.stem for p in EVAL_CONFIGS_DIR.glob("*.yaml"))


def minimal(**changes) -> dict:
    raw = {"name": "t", "task": "single_label", "labels": ["yes", "no"], "data": {"loader": "jsonl", "path": "/x"}}
    for key, value in changes.items():
        node, *path = key.split(".")
        if path:
            raw.setdefault(node, {})[path[0]] = value
        else:
            raw[key] = value
    return raw


def test_all_five_tasks_and_two_demos_ship():
    assert {"chemprot", "phenotype", "cos", "social_history", "deid", "demo_mesh", "demo_chemicals"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name):
    config = load_task_config(name)
    assert config.name == name
    assert config.metric_for_selection in ("weighted_f1", "seqeval_f1")


def test_paper_protocol_is_the_default():
    config = load_task_config("chemprot")
    assert (config.training.lr, config.training.weight_decay, config.training.epochs, config.training.batch_size) == (
        2e-5,
        0.01,
        3,
        16,
    )
    assert config.seeds == [42, 43, 44, 45, 46]
    assert config.max_length is None
    assert config.negative_labels == ["false"]


def test_ner_tags_derived_from_entity_types():
    assert len(load_task_config("cos").tag_names) == 11
    assert len(load_task_config("deid").tag_names) == 13
    assert load_task_config("cos").tag_names[:3] == ["O", "B-Cos", "I-Cos"]
    given = task_from_dict(minimal(task="ner", labels=["O", "B-X", "I-X"]))
    assert given.tag_names == ["O", "B-X", "I-X"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"colour": 1}, "unknown key 'colour'"),
        ({"task": "regression"}, "task='regression': allowed values are single_label, multi_label, ner"),
        ({"data.loader": "excel"}, "data.loader='excel'"),
        ({"data.unit": "snippet"}, "data.unit: not read by loader 'jsonl'"),
        ({"training.lr": -1}, "training.lr=-1.0: must be a number > 0"),
        (
            {"training.batch_size": 16, "training.per_device_batch_size": 5},
            "per_device_batch_size=5: must divide batch_size",
        ),
        ({"labels": ["yes"]}, "at least 2 labels"),
        ({"labels": ["a", "a"]}, "listed twice"),
        ({"selection_metric": "seqeval_f1"}, "selection_metric='seqeval_f1'"),
        ({"negative_labels": ["maybe"]}, "negative_labels: 'maybe'"),
        ({"split.test": 0.6, "split.validation": 0.5}, "leaves nothing to train on"),
        ({"max_length": 512, "window_stride": 300}, "window_stride=300"),
        ({"seeds": "42"}, "seeds='42': give a list of integers"),
        ({"seeds": [42, "43"]}, "seeds=[42, '43']: give a list of integers"),
        ({"training.lr_grid": "1e-3"}, "training.lr_grid='1e-3': give a list of learning rates"),
        ({"max_length_grid": [512, "1k"]}, "max_length_grid=[512, '1k']: give a list of whole numbers"),
        ({"max_length_grid": []}, "max_length_grid=[]: give a list of whole numbers"),
        ({"max_length_grid": [8, 512]}, "max_length_grid=[8, 512]: each length must be >= 16, and listed once"),
        ({"max_length_grid": [64, 64]}, "max_length_grid=[64, 64]: each length must be >= 16, and listed once"),
    ],
)
def test_bad_values_stop_with_the_key(changes, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        task_from_dict(minimal(**changes))


def test_one_seed_without_brackets_is_a_list_of_one():
    assert task_from_dict(minimal(seeds=42)).seeds == [42]


def test_error_names_the_file(tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(minimal(epochs=3)))
    with pytest.raises(ConfigError, match=r"task.yaml: unknown key 'epochs'"):
        load_task_config(path)
    with pytest.raises(ConfigError, match="task config not found"):
        load_task_config(tmp_path / "missing.yaml")


def test_overrides_apply_before_validation(tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(minimal()))
    config = load_task_config(path, [("training.lr", 3e-5), ("peft", {"r": 4})])
    assert config.training.lr == 3e-05
    assert config.peft.r == 4
    assert config.peft.alpha == 16
    with pytest.raises(ConfigError, match="peft.rank"):
        load_task_config(path, [("peft", {"rank": 4})])


def test_each_length_of_a_sweep_is_the_task_in_its_own_folder_with_a_stride_that_fits(tmp_path):
    from modeling.finetune.sweep import task_at_length

    grid = [64, 256, 1024]
    task = task_from_dict(minimal(max_length=512, window_stride=128, max_length_grid=grid, output_dir=str(tmp_path)))
    short, middle, long = (task_at_length(task, n) for n in grid)
    assert (short.max_length, short.window_stride) == (64, 16)  # 128 is not below half of 64: a quarter of it
    assert (middle.max_length, middle.window_stride) == (256, 64)  # 128 is half of 256: not below it
    assert (long.max_length, long.window_stride) == (1024, 128)  # as configured
    default = task_from_dict(minimal(max_length_grid=grid, output_dir=str(tmp_path)))
    assert [task_at_length(default, n).stride_for(n) for n in grid] == [16, 64, 128]  # the default follows
    assert long.results_dir() == tmp_path / "max_length-1024"
    assert long.max_length_grid is None
    assert task.max_length == 512  # the sweep's task is left as it was


@pytest.mark.parametrize("max_length, stride", [(64, 16), (256, 64), (512, 128), (8192, 128)])
def test_window_stride_defaults_to_a_quarter_of_the_window_at_most_128(max_length, stride):
    """A short max_length is valid without naming a stride (a fixed 128 is not below half of 64 or 256)."""
    task = task_from_dict(minimal(max_length=max_length))
    assert task.window_stride is None
    assert task.stride_for(max_length) == stride
    assert task_from_dict(minimal(max_length=max_length, window_stride=5)).stride_for(max_length) == 5
    with pytest.raises(ConfigError, match=f"window_stride={max_length // 2}: must be >= 0 and below half"):
        task_from_dict(minimal(max_length=max_length, window_stride=max_length // 2))  # given, still checked


def test_runs_recorded_with_the_once_fixed_stride_are_still_reused():
    """Finished runs recorded window_stride 128 when it was the fixed default: the same settings now leave it unset,
    and such a run is still the same run (finetune.py reuses it rather than refusing its folder)."""
    import dataclasses

    from modeling.finetune.runner import _comparable

    task = task_from_dict(minimal(max_length=512))
    recorded = {**dataclasses.asdict(task), "window_stride": 128}
    del recorded["max_length_grid"]  # nor did sweeps exist
    assert _comparable(recorded) == _comparable(dataclasses.asdict(task))
    other = task_from_dict(minimal(max_length=512, window_stride=64))
    assert _comparable(recorded) != _comparable(dataclasses.asdict(other))
