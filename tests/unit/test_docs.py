"""README.md and docs/ cannot drift from the code: every flag, recipe or task-config key and repository path
they name exists.

The truth comes from the commands themselves: their `--help` (captured in this process) and the config
dataclasses' key lists (`describe_recipe_fields`, `describe_task_fields`). A page that names a flag, a key or a
file the code does not have fails here with the page and the name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import io
import re

import pytest
from helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# The project's commands, as a page writes them, and the name the checks know each by.
COMMANDS = {
    "train_mlm.py": "train_mlm",
    "finetune.py": "finetune",
    "-m modeling.publish": "publish",
    "-m modeling.inference": "inference",
}
COMMAND = re.compile(r"(train_mlm\.py|finetune\.py|-m modeling\.publish|-m modeling\.inference)(?![\w.])")
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w.-]*")
# Flags of other tools that pages pass on their own (accelerate's, pip's).
OTHER_TOOLS = {"--config_file", "--num_processes", "--multi_gpu", "--main_process_ip", "--machine_rank"}
OTHER_TOOLS |= {"--no-build-isolation"}
PLACEHOLDER_KEYS = {"dotted.key"}  # `--dotted.key VALUE`: any key
# A dotted name whose first part is one of these is a config key (`store.path`), unless it ends like a file.
FILE_ENDINGS = {
    "json",
    "jsonl",
    "md",
    "py",
    "yaml",
    "png",
    "safetensors",
    "bin",
    "pt",
    "pth",
    "csv",
    "gz",
    "txt",
    "tsv",
    "parquet",
}
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:recipes|eval_configs|accelerate_configs|benchmarks|modeling|tests|docs|model_card)/[\w./*-]*)"
)
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SHELL = {"bash", "sh", "shell", "console"}


# ------------------------------------------------------------------------------------ the truth, from the code


def _help(function, argv: list[str]) -> str:
    """What `function(argv)` prints for --help (it exits, as argparse does)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        function(argv)
    return out.getvalue()


def _argparse_flags(help_text: str) -> set[str]:
    """The flags in argparse's `options:` section (not the description, whose examples may quote other tools)."""
    options = re.split(r"^(?:options|optional arguments):$", help_text, flags=re.M)[-1]
    return set(FLAG.findall(options.split("\ntask-config keys:")[0]))


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_docs_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _keys(lines: list[str]) -> set[str]:
    """Dotted keys (`optimizer.lr`, `phases.N.schedule.warmup`) and sections (`optimizer`, `phases.N`) of
    describe_fields' --help lines."""
    keys = {m.group(1) for line in lines if (m := re.match(r"\s+--(\S+)", line))}
    return keys | {m.group(1) for line in lines if (m := re.match(r"\s+([\w.]+)\.\*:", line))}


@functools.cache
def truth() -> dict:
    from modeling.data.sources import SourceSpec
    from modeling.finetune.config import describe_task_fields
    from modeling.inference.cli import infer
    from modeling.pretrain.recipe import describe_recipe_fields
    from modeling.publish.hub import parse_args as publish_args

    train_mlm, finetune = _script("train_mlm"), _script("finetune")
    recipe, task = _keys(describe_recipe_fields()), _keys(describe_task_fields())
    return {
        "recipe": recipe,
        "task": task,
        "source_options": {f.name for f in dataclasses.fields(SourceSpec)},
        "flags": {
            "train_mlm": set(FLAG.findall(train_mlm.FLAGS)),
            "finetune": _argparse_flags(_help(finetune.parse_args, ["CONFIG", "--help"])),
            "publish": _argparse_flags(_help(publish_args, ["card", "--help"]))
            | _argparse_flags(_help(publish_args, ["push", "--help"]))
            | _argparse_flags(_help(publish_args, ["import-composer", "--help"])),
            "inference": _argparse_flags(_help(infer, ["--help"])),
        },
    }


def key_exists(key: str, keys: set[str]) -> bool:
    """`phases.phase2.masking` -> `phases.N.masking`; `sources.NAME[.option]` a source's option; `hub.*` a section."""
    key = re.sub(r"^phases\.[^.]+", "phases.N", key.removesuffix(".*"))
    if key in PLACEHOLDER_KEYS or key in keys:
        return True
    parts = key.split(".")
    if parts[0] == "sources" and "sources" in keys:
        return len(parts) == 2 or (len(parts) == 3 and parts[2] in truth()["source_options"])
    return False


def flag_exists(command: str, flag: str) -> bool:
    known = truth()
    if flag in known["flags"][command] or flag == "--help":
        return True
    config_keys = {"train_mlm": known["recipe"], "finetune": known["task"]}.get(command)
    return config_keys is not None and key_exists(flag[2:], config_keys)


# ------------------------------------------------------------------------------------ what the pages say


def page_text(page) -> str:
    return page.read_text(encoding="utf-8")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def inline_spans(text: str) -> list[str]:
    """Inline code outside fenced blocks, a span that wraps over lines joined into one."""
    prose = FENCE.sub("", text)
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]


def shell_commands(text: str) -> list[str]:
    """Every command line of the shell blocks (comments cut, `\\` continuations joined, `$VAR` set in the block
    expanded) and every inline span."""
    lines = []
    for language, body in code_blocks(text):
        if language in SHELL:
            body = re.sub(r"(^|\s)#.*$", "", body, flags=re.M)
            block = [" ".join(line.split()) for line in body.replace("\\\n", " ").splitlines()]
            for name, value in re.findall(r'^(\w+)="([^"]*)"$', "\n".join(block), flags=re.M):
                block = [line.replace(f"${name}", value) for line in block]
            lines += block
    return [line for line in lines if line] + inline_spans(text)


def command_flags(text: str) -> list[tuple[str, str]]:
    """(command, flag) for each flag written after one of the project's commands."""
    found = []
    for line in shell_commands(text):
        for match in COMMAND.finditer(line):
            rest = re.split(r"&&|;|\s\|\s", line[match.end() :])[0]
            found += [(COMMANDS[match.group(1)], flag) for flag in FLAG.findall(rest)]
    return found


def bare_flags(text: str) -> list[str]:
    """Inline spans that start with a flag, no command before it (`--resume`, `--pooling cls`)."""
    return [span.split()[0] for span in inline_spans(text) if FLAG.fullmatch(span.split()[0])]


def dotted_keys(text: str) -> list[str]:
    """Inline spans that are a config key, perhaps with a value: `store.path`, `model.allow_pickle: true`."""
    known = truth()
    roots = {key.split(".")[0] for key in known["recipe"] | known["task"] if "." in key}
    found = []
    for span in inline_spans(text):
        word = span.split()[0].rstrip(":").removeprefix("--")
        parts = word.split(".")
        if len(parts) > 1 and parts[0] in roots and parts[-1] not in FILE_ENDINGS:
            if re.fullmatch(r"[\w*-]+(\.[\w*-]+)+", word):
                found.append(word)
    return found


def _placeholder(path: str) -> bool:
    """`results/NAME/`, `eval_configs/TASK.yaml`: a name the reader fills in."""
    return any(re.fullmatch(r"[A-Z]+", part.split(".")[0]) and part != "README.md" for part in path.split("/"))


def _exists(path) -> bool:
    """A file or folder, or a glob that matches one (`modeling/*/README.md`)."""
    if "*" not in str(path):
        return path.exists()
    return any(ROOT.glob(str(path.resolve().relative_to(ROOT))))


def _anchors(page) -> set[str]:
    """GitHub's anchors of a page's headings."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", page_text(page)), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def broken_paths(page) -> list[str]:
    text = page_text(page)
    broken = []
    for path in REPO_PATH.findall(text):
        path = path.rstrip(".")
        if not _placeholder(path) and not _exists(ROOT / path):
            broken.append(path)
    for link in LINK.findall(text):
        if re.match(r"[a-z]+:", link):
            continue  # https:, mailto:
        target, _, anchor = link.partition("#")
        file = (page.parent / target).resolve() if target else page
        if not _exists(file):
            broken.append(link)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{link} (no heading with that anchor)")
    for module in re.findall(r"python -m ((?:modeling|benchmarks)[\w.]*)", text):
        folder = ROOT.joinpath(*module.split("."))
        if not (folder.with_suffix(".py").exists() or (folder / "__main__.py").exists()):
            broken.append(f"python -m {module}")
    return broken


# ------------------------------------------------------------------------------------ the checks


def test_pages_exist_and_the_extraction_finds_what_they_say():
    names = {page.name for page in PAGES}
    assert {"README.md", "pretraining.md", "finetuning.md", "data.md", "gpus.md"} <= names
    text = "\n".join(page_text(page) for page in PAGES)
    flags = set(command_flags(text))
    # one of each, so that an extraction gone blind cannot pass the checks below
    assert {("train_mlm", "--num_proc"), ("finetune", "--model"), ("publish", "--repo")} <= flags
    assert ("inference", "--output_dir") in flags
    assert {"--resume", "--optimizer.lr", "--pooling"} <= set(bare_flags(text))
    assert {"store.path", "optimizer.lr", "training.batching", "hub.*"} <= set(dotted_keys(text))
    assert "pip install -r requirements.txt pytest && python -m pytest -q tests" in page_text(ROOT / "README.md")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_flag_after_a_command_exists(page):
    flags = command_flags(page_text(page))
    unknown = [f"{command}: {flag}" for command, flag in flags if not flag_exists(command, flag)]
    assert not unknown, f"{page.name} names flags its commands do not have: {sorted(set(unknown))}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_flag_on_its_own_exists_for_some_command(page):
    unknown = [
        flag
        for flag in bare_flags(page_text(page))
        if flag not in OTHER_TOOLS and not any(flag_exists(command, flag) for command in COMMANDS.values())
    ]
    assert not unknown, f"{page.name} names flags no command has: {sorted(set(unknown))}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_config_key_exists(page):
    known = truth()
    unknown = [
        key
        for key in dotted_keys(page_text(page))
        if not key_exists(key, known["recipe"]) and not key_exists(key, known["task"])
    ]
    assert not unknown, f"{page.name} names keys no recipe or task config has: {sorted(set(unknown))}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_path_and_link_exists(page):
    broken = broken_paths(page)
    assert not broken, f"{page.name} names paths or links that do not exist: {broken}"
