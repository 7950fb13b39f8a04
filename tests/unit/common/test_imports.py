"""The layout holds: no import circles, dependencies point one way, and importing changes nothing global."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import import_graph
from helpers import ROOT

# What each package may import from the others: lifecycles use data and common; publish reads what
# pretraining and fine-tuning record; common imports nothing of the project.
ALLOWED = {
    "common": set(),
    "data": {"common"},
    "pretrain": {"common", "data"},
    "finetune": {"common", "data"},
    "inference": {"common", "data"},
    "publish": {"common", "data", "pretrain", "finetune"},
    "modeling": set(),
}


THIRD_PARTY = [
    "torch",
    "transformers",
    "datasets",
    "accelerate",
    "sklearn",
    "seqeval",
    "peft",
    "evaluate",
    "matplotlib",
]


def test_no_import_circles_between_modules_or_packages():
    graph = import_graph.module_graph()
    assert len(graph) > 40, "the graph was read"
    assert graph["modeling.pretrain.runner"], "the graph was read"
    assert import_graph.circles(graph) == []
    assert import_graph.circles(import_graph.package_graph(graph)) == []


def test_circles_are_found():
    """The detector itself: a two-module loop is reported, a chain is not."""
    assert import_graph.circles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert import_graph.circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_dependencies_point_one_way():
    packages = import_graph.package_graph(import_graph.module_graph())
    assert set(packages) == set(ALLOWED)
    for package, targets in packages.items():
        assert targets <= ALLOWED[package], f"{package} imports {sorted(targets - ALLOWED[package])}"


def test_importing_every_module_changes_nothing_global():
    """No environment variable set, no warnings filter installed, no attention backend registered at import:
    document_sdpa exists only once a model builder registers it."""
    code = """
import importlib, json, os, pkgutil, warnings
# third-party libraries set variables of their own on import (scikit-learn KMP_*, peft TORCHINDUCTOR_*)
for library in THIRD_PARTY:
    importlib.import_module(library)
import modeling
from transformers import AttentionInterface
env, filters = dict(os.environ), list(warnings.filters)
for info in pkgutil.walk_packages(modeling.__path__, "modeling."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
changed = sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k))
registered = "document_sdpa" in AttentionInterface._global_mapping
from modeling.common.attention import register_document_sdpa
register_document_sdpa()
print(json.dumps({"env": changed, "filters": len(warnings.filters) - len(filters), "registered": registered,
                  "after_builder": "document_sdpa" in AttentionInterface._global_mapping}))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = f"THIRD_PARTY = {THIRD_PARTY!r}\n" + code
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {"env": [], "filters": 0, "registered": False, "after_builder": True}


def test_building_training_arguments_leaves_the_environment_alone(tmp_path, monkeypatch):
    from helpers import write_recipe

    from modeling.pretrain.recipe import load_recipe
    from modeling.pretrain.run_folder import PretrainingRun
    from modeling.pretrain.schedules import plan_phase
    from modeling.pretrain.trainer import TensorBoardInFolder, trainer_callbacks, training_arguments

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    recipe = load_recipe(write_recipe(tmp_path, **{"logging.report_to": ["tensorboard"]}))
    run = PretrainingRun(recipe.output_dir)
    before = dict(os.environ)
    args = training_arguments(recipe, plan_phase(recipe, 0), run.phase("phase1"), accumulation=1)
    callbacks = trainer_callbacks(recipe, run.tensorboard_dir("phase1"))
    assert dict(os.environ) == before
    # TensorBoard still logs, to the run's folder, through its callback rather than the environment
    assert "tensorboard" not in (args.report_to or [])
    (board,) = [c for c in callbacks if isinstance(c, TensorBoardInFolder)]
    assert board.logging_dir == str(run.tensorboard_dir("phase1"))
