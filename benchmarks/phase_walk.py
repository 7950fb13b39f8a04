"""The walk through one phase's set-up: which of the project's modules its calls run in, in order.

Runs `train_mlm.py` on a tiny two-phase recipe (written to a temporary folder, its tokenizer trained there),
and records, while `set_up_phase` of the first phase runs, every call of a project function made by project
code (calls back from transformers or torch into the project are left out: they are the Trainer's, not the
walk's), with its depth below `set_up_phase`. Consecutive calls in one module are one visit. It prints:

  steps        the calls set_up_phase makes itself (depth 1), as module.function, in order, and how many go
               down into the data layer (modeling.data)
  the walk     every function called, at any depth, read once where it is first called (as a reader follows
               the code), as the sequence of modules that takes: modules, entries per module, and climbs
               (a step from a modeling.data module straight to a modeling.pretrain one: the reader went down
               into the data layer and comes back up to the lifecycle)

    python -m benchmarks.phase_walk [--root CHECKOUT] [--json FILE]

Measured the same way at any commit (it uses only `train_mlm.py` and the function's name), so a refactor's
walk before and after is `git worktree add /tmp/before REV` and `--root /tmp/before`.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml

from benchmarks.common import ROOT, arguments, markdown_table, write_json

WORDS = "patient denies chest pain fever cough dyspnea nausea history of hypertension diabetes treated with".split()


def tiny_recipe(folder: Path) -> Path:
    """Two phases over two small sources; one step each: the set-up, not the training, is what is walked."""
    rng = __import__("random").Random(0)
    notes = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 80))) for _ in range(300)]
    (folder / "notes.txt").write_text("\n".join(notes) + "\n")
    (folder / "abstracts.jsonl").write_text("\n".join(json.dumps({"text": n[::-1]}) for n in notes) + "\n")
    recipe = {
        "name": "walk",
        "output_dir": str(folder / "out"),
        "store": {"path": str(folder / "store")},
        "model": {
            "config": {
                "hidden_size": 32,
                "intermediate_size": 48,
                "num_hidden_layers": 3,
                "num_attention_heads": 2,
                "max_position_embeddings": 128,
                "local_attention": 16,
            }
        },
        "tokenizer": {"train_vocab_size": 300},
        "max_seq_length": 128,
        "batch": {"global_sequences": 4, "per_device": 4},
        "sources": {"notes": str(folder / "notes.txt"), "abstracts": str(folder / "abstracts.jsonl")},
        "phases": [
            {"name": "phase1", "sources": {"notes": 1.0, "abstracts": 1.0}, "length": {"steps": 1}},
            {"name": "phase2", "sources": ["notes"], "length": {"steps": 1}},
        ],
        "holdout": {"fraction": 0.1, "max_documents": 10},
        "checkpoint": {"every_steps": 1},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def module_of(filename: str, package: Path) -> str | None:
    path = Path(filename)
    if package not in path.parents:
        return None
    return ".".join(path.relative_to(package.parent).with_suffix("").parts)


def walk_first_phase(root: Path, recipe: Path) -> list[tuple[int, str, str]]:
    """(depth, module, function) of the project calls made during the first phase's `set_up_phase`, in order."""
    package = root / "modeling"
    calls: list[tuple[int, str, str]] = []
    inside: dict[int, int] = {}  # frames of the walk still running -> depth: set_up_phase's (0) and those below
    done = False

    def profile(frame, event, arg):
        nonlocal done
        if done or event not in ("call", "return"):
            return
        if event == "return":
            inside.pop(id(frame), None)
            if frame.f_code.co_name == "set_up_phase" and not inside:
                done = True
                sys.setprofile(None)  # the rest of the run is not walked: it runs at full speed
            return
        module = module_of(frame.f_code.co_filename, package)
        if module is None:
            return
        if frame.f_code.co_name == "set_up_phase" and not inside:
            inside[id(frame)] = 0
            return
        if frame.f_back is not None and id(frame.f_back) in inside:
            depth = inside[id(frame.f_back)] + 1
            inside[id(frame)] = depth
            calls.append((depth, module, frame.f_code.co_qualname))

    os.environ.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    sys.argv = ["train_mlm.py", str(recipe)]
    sys.path.insert(0, str(root))
    sys.setprofile(profile)
    try:
        runpy.run_path(str(root / "train_mlm.py"), run_name="__main__")
    except SystemExit as stop:
        if stop.code:
            raise
    finally:
        sys.setprofile(None)
    return calls


def visits(modules: list[str]) -> list[str]:
    return [module for i, module in enumerate(modules) if i == 0 or modules[i - 1] != module]


def summary(calls: list[tuple[int, str, str]]) -> dict:
    """The walk as a reader follows it: each function read once, where it is first called."""
    steps = [f"{module}.{function}" for depth, module, function in calls if depth == 1]
    reading = list(dict.fromkeys((module, function) for _, module, function in calls))
    walk = visits([module for module, _ in reading])
    climbs = sum(
        1
        for below, above in zip(walk, walk[1:], strict=False)
        if below.startswith("modeling.data.") and above.startswith("modeling.pretrain.")
    )
    return {
        "steps": steps,
        "descents": sum(1 for step in steps if step.startswith("modeling.data.")),
        "functions": len(reading),
        "walk": walk,
        "modules": len(set(walk)),
        "entries": dict(Counter(walk)),
        "climbs_back": climbs,
    }


def main():
    parser = arguments(__doc__)
    parser.add_argument("--root", default=str(ROOT), help="the checkout to walk (default: this one)")
    args = parser.parse_args()
    root = Path(args.root).resolve()
    with tempfile.TemporaryDirectory() as folder:
        os.environ["XDG_CACHE_HOME"] = str(Path(folder) / "cache")
        result = summary(walk_first_phase(root, tiny_recipe(Path(folder))))
    result["root"] = str(root)
    print("set_up_phase calls, in order:")
    for step in result["steps"]:
        print(f"  {step}")
    print("\nthe functions below, each read once where first called, module by module:")
    print("  " + " -> ".join(module.removeprefix("modeling.") for module in result["walk"]))
    rows = sorted(result["entries"].items(), key=lambda item: -item[1])
    print()
    print(markdown_table(["module", "entries"], [[m, n] for m, n in rows]))
    print(
        f"\nset_up_phase's calls: {len(result['steps'])}, into modeling.data: {result['descents']}; functions read: "
        f"{result['functions']}; modules: {result['modules']}; entries: {len(result['walk'])}; "
        f"climbs from modeling.data back to modeling.pretrain: {result['climbs_back']}"
    )
    write_json(args.json, result)


if __name__ == "__main__":
    main()
