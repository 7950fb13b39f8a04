"""A store is used only by the recipe it was prepared for; where the raw files are gone it is trusted alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT, write_recipe

from modeling.common.config import parse_overrides
from modeling.common.errors import ConfigError, DataError
from modeling.data.store import Store
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


def test_changed_files_are_refused_copied_ones_accepted_and_missing_ones_trust_the_store(prepared, tmp_path, caplog):
    path, store = prepared
    notes = tmp_path / "corpus" / "notes.txt"
    text = notes.read_text()
    shutil.copy(notes, tmp_path / "notes.copy")
    notes.write_text(text + "one more note\n")
    with pytest.raises(
        DataError, match=r"corpus/notes\.txt holds [\d,]+ bytes, [\d,]+ when prepared; prepare it again"
    ):
        open_store(_recipe(path))
    notes.write_text(text.replace("a", "e", 1))  # as many bytes, other contents, a later modification time
    with pytest.raises(DataError, match=r"notes\.txt changed since it was prepared \(modified later; its contents"):
        open_store(_recipe(path))
    shutil.copy(tmp_path / "notes.copy", notes)  # a copy of the very file: a new time, the same contents
    with caplog.at_level("INFO"):
        assert open_store(_recipe(path)).manifest == store.manifest
    assert "1 files of source 'notes' have other modification times than when prepared (copied?)" in caplog.text
    shutil.rmtree(tmp_path / "corpus")  # the raw corpus is not on this machine: the store alone trains
    assert open_store(_recipe(path)).manifest == store.manifest


def test_a_copied_store_and_one_reached_through_a_symlink_train_and_rebuild(prepared, tmp_path):
    path, store = prepared
    copy = tmp_path / "copied"
    shutil.copytree(store.folder.folder, copy)  # new modification times everywhere
    assert open_store(_recipe(path, "--store.path", str(copy))).manifest == store.manifest
    link = tmp_path / "linked"
    link.symlink_to(copy)
    shard = copy / "notes" / "train-00000.arrow"
    shard.write_bytes(b"damaged")
    rebuilt = prepare(_recipe(path, "--store.path", str(link)), num_proc=1, rebuild=True)
    assert rebuilt.manifest == store.manifest
    assert link.is_symlink() and shard.stat().st_size == store.manifest.sources["notes"].parts[0].shards["train"].bytes


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


def _holding(folder, how: str) -> subprocess.Popen:
    """Another process holding `folder`'s lock: reading it (`read`) or preparing it (`write`), until killed."""
    take = "read_lock(folder)" if how == "read" else "WriteLock(folder).__enter__()"
    code = (
        f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); sys.argv = ['train_mlm.py', 'other.yaml']\n"
        f"from modeling.data.store_lock import WriteLock, read_lock\nfolder = {str(folder)!r}\n{take}\n"
        "print('ready', flush=True); time.sleep(120)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    return process


def test_a_rebuild_never_changes_a_store_a_run_reads_and_a_run_never_reads_one_being_prepared(prepared):
    path, store = prepared
    folder = store.folder.folder
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.arrow")}
    reader = _holding(folder, "read")
    try:
        with pytest.raises(
            DataError, match=rf"process {reader.pid} \(`train_mlm.py other.yaml`, since .*\) is reading"
        ):
            prepare(_recipe(path), num_proc=1, rebuild=True)
        assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.arrow")} == before, "nothing was changed"
    finally:
        reader.kill()
        reader.wait()
    writer = _holding(folder, "write")  # as a prepare does, while it writes
    try:
        with pytest.raises(DataError, match=rf"process {writer.pid} \(`.*`, since .*\) is preparing this store"):
            Store(folder)
    finally:
        writer.kill()
        writer.wait()
    rebuilt = prepare(_recipe(path), num_proc=1, rebuild=True)  # the killed reader's lock went with it
    assert rebuilt.manifest == store.manifest
    assert not list((folder / ".readers").glob(f"*-{reader.pid}.json")), "the killed reader's note is gone"


def test_a_run_reading_the_store_holds_its_lock(prepared):
    """Store() takes the lock: a prepare in another process cannot take the store from under it."""
    _, store = prepared
    Store(store.folder.folder)
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\nfrom modeling.data.store_lock import WriteLock\n"
        f"try:\n    WriteLock({str(store.folder.folder)!r}).__enter__()\nexcept Exception as error:\n    print(error)"
    )
    said = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert f"process {os.getpid()} (`" in said and "is reading this store; stop it before the store changes" in said
