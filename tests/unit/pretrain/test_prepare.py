"""A store is used only by the recipe it was prepared for; where the raw files are gone it is trusted alone."""

from __future__ import annotations

import shutil

import pytest
from helpers import write_recipe

from modeling.common.config import parse_overrides
from modeling.common.errors import ConfigError, DataError
from modeling.pretrain.prepare import open_store, prepare
from modeling.pretrain.recipe import load_recipe


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # stores/NAME is relative to the working directory
    path = write_recipe(tmp_path)
    store = prepare(load_recipe(path), num_proc=1)
    return path, store


def _recipe(path, *overrides):
    return load_recipe(path, parse_overrides(list(overrides)))


def test_a_prepared_store_is_found_again_and_reused(prepared):
    path, store = prepared
    again = prepare(_recipe(path), num_proc=1)
    assert again.manifest == store.manifest
    assert store.manifest.sources["notes"].documents["train"] > 300
    assert store.manifest.tokens() > 10000


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (["--holdout.fraction", "0.1"], ConfigError, "holds out 0.05 of the documents, the recipe 0.1"),
        (
            ["--sources.abstracts", "{path: corpus/abstracts.jsonl, text_column: body}"],
            ConfigError,
            "source 'abstracts' was prepared with other text_column",
        ),
        (["--tokenizer.train_vocab_size", "500"], ConfigError, "its tokenizer was trained with"),
    ],
)
def test_a_store_made_for_something_else_is_refused_with_one_line(prepared, overrides, error, message):
    path, _ = prepared
    with pytest.raises(error, match=message) as raised:
        open_store(_recipe(path, *overrides))
    assert "\n" not in str(raised.value)
    assert "--rebuild" in str(raised.value)


def test_changed_files_are_refused_and_missing_ones_trust_the_store(prepared, tmp_path):
    path, store = prepared
    notes = tmp_path / "corpus" / "notes.txt"
    notes.write_text(notes.read_text() + "one more note\n")
    with pytest.raises(DataError, match="the files of source 'notes' changed since it was prepared"):
        open_store(_recipe(path))
    shutil.rmtree(tmp_path / "corpus")  # the raw corpus is not on this machine: the store alone trains
    assert open_store(_recipe(path)).manifest == store.manifest


def test_rebuild_prepares_the_store_again(prepared):
    path, store = prepared
    shard = store.folder.shard("notes", "train", 0)
    shard.write_bytes(b"damaged")
    rebuilt = prepare(_recipe(path), num_proc=1, rebuild=True)
    assert rebuilt.manifest == store.manifest
    assert shard.stat().st_size == store.manifest.sources["notes"].parts[0].shards["train"].bytes


def test_a_recipe_still_setting_retired_keys_is_told_why(tmp_path):
    with pytest.raises(ConfigError, match="data.shuffle_buffer: no longer a setting .* permutation of the whole"):
        load_recipe(write_recipe(tmp_path), parse_overrides(["--data.shuffle_buffer", "100"]))


def test_parts_run_by_another_executor_are_found_by_prepare(tmp_path, monkeypatch):
    """The multi-machine path: the pipeline runs on a datatrove executor (here its local one with two
    workers, standing in for Slurm or Ray); prepare then finds every part done and writes the manifest."""
    from datatrove.executor import LocalPipelineExecutor

    from modeling.pretrain.prepare import store_pipeline

    monkeypatch.chdir(tmp_path)
    recipe = _recipe(write_recipe(tmp_path))
    pipeline, tasks = store_pipeline(recipe)
    assert tasks == 2  # one part per source at this size
    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=2, logging_dir=str(tmp_path / "logs")).run()
    parts = sorted(p.name for p in (tmp_path / "stores" / "tiny").rglob("part-*.json"))
    assert parts == ["part-00000.json", "part-00000.json"]
    assert not (tmp_path / "stores/tiny/manifest.json").exists()
    store = prepare(recipe, num_proc=1)
    assert store.manifest.sources["notes"].documents["train"] > 300
