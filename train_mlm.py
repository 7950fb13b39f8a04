"""Continued masked-language-model pretraining of ModernBERT, phase by phase, from a token store.

    accelerate launch train_mlm.py                         # the offline demo: prepares its store, then trains
    python train_mlm.py prepare RECIPE --sources.clinical /data/NOTEEVENTS.csv.gz   # read and tokenize once
    accelerate launch --num_processes 8 train_mlm.py RECIPE --sources.clinical /data/NOTEEVENTS.csv.gz
    accelerate launch train_mlm.py RECIPE --resume         # continue a killed run
    python train_mlm.py contamination RECIPE --task eval_configs/demo_mesh.yaml   # evaluation text in the store?
    python train_mlm.py data-order out/demo --phase phase1 --step 500   # the documents step 500 trained on

Any recipe key can be overridden with --dotted.key VALUE (values are read as YAML); give training the
same overrides as prepare.
"""

from __future__ import annotations

import sys

from modeling.common.cli import run_command
from modeling.common.config import parse_overrides
from modeling.common.errors import ConfigError
from modeling.common.runtime import is_main_process
from modeling.pretrain.recipe import describe_recipe_fields, load_recipe
from modeling.pretrain.run_folder import PretrainingRun

FLAGS = """
flags:
  RECIPE                               YAML file or shipped recipe name (default: demo)
  --resume                             continue from the last complete checkpoint
prepare flags:
  --num_proc N                         processes preparing the store (default: every core; one for input
                                       under 16 MiB, where starting processes takes longer than the work)
  --rebuild                            remove the store and prepare it again
contamination flags:
  --task CONFIG                        a task config whose validation and test documents are looked for in the
                                       store's training documents (repeat for several tasks)
  --data_dir DIR                       the task's data (its data.path): once for every task, or once per --task
  --ngram N                            n-gram length in tokens (default: 13)
  --num_proc N                         processes scanning the store (default: every core)
data-order flags (python train_mlm.py data-order RUN_DIR ...):
  --phase NAME                         the phase
  --step K                             its optimizer step (from 1, as revisions count them)
  --json FILE                          also write every piece as JSON
"""


def parse_args(argv: list[str]) -> tuple[str | None, dict, list]:
    """(recipe, flags, overrides) of `[prepare] [RECIPE] [flags] [--key.path VALUE ...]`."""
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip() + "\n" + FLAGS + "\nrecipe keys:")
        print("\n".join(describe_recipe_fields()))
        sys.exit(0)
    recipe = argv[0] if argv and not argv[0].startswith("-") else None
    rest = list(argv[1:] if recipe else argv)
    flags = {"resume": "--resume" in rest, "rebuild": "--rebuild" in rest, "num_proc": None}
    rest = [a for a in rest if a not in ("--resume", "--rebuild")]
    if "--num_proc" in rest:
        at = rest.index("--num_proc")
        value = rest[at + 1] if at + 1 < len(rest) else ""
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"--num_proc {value}: give a number of processes >= 1")
        flags["num_proc"] = int(value)
        del rest[at : at + 2]
    return recipe, flags, parse_overrides(rest)


def prepare_command(argv: list[str]) -> int:
    recipe_path, flags, overrides = parse_args(argv)
    recipe = load_recipe(recipe_path, overrides)
    from modeling.finetune.dataset import evaluation_documents
    from modeling.pretrain.prepare import prepare

    store = prepare(recipe, flags["num_proc"], flags["rebuild"], evaluation_documents=evaluation_documents)
    print(f"\n{'source':<20}{'documents':>12}{'held out':>10}{'tokens':>16}  skipped")
    for name, source in store.manifest.sources.items():
        skipped = ", ".join(f"{reason}: {n:,}" for reason, n in source.skipped.items()) or "none"
        print(
            f"{name:<20}{source.documents['train']:>12,}{source.documents['held_out']:>10,}"
            f"{source.tokens['train']:>16,}  {skipped}"
        )
    print(f"\nstore: {store.folder.folder} ({store.manifest.tokens():,} training tokens)")
    return 0


def _take(rest: list[str], flag: str) -> list[str]:
    """Every value of a repeatable `flag VALUE` (removed from `rest`)."""
    values = []
    while flag in rest:
        at = rest.index(flag)
        if at + 1 >= len(rest) or rest[at + 1].startswith("--"):
            raise ConfigError(f"{flag}: give a value")
        values.append(rest[at + 1])
        del rest[at : at + 2]
    return values


def contamination_command(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        parse_args(argv)  # prints the help and exits
    rest = list(argv)
    tasks, data_dirs, ngram = _take(rest, "--task"), _take(rest, "--data_dir"), _take(rest, "--ngram")
    if not tasks:
        raise ConfigError("contamination: name at least one --task CONFIG (e.g. eval_configs/demo_mesh.yaml)")
    for flag in ("--resume", "--rebuild"):
        if flag in rest:
            raise ConfigError(f"contamination: {flag} is a flag of training or prepare, not of contamination")
    if len(ngram) > 1 or (ngram and not ngram[0].isdigit()):
        raise ConfigError(f"--ngram {' '.join(ngram)}: give one whole number of tokens")
    if len(data_dirs) not in (0, 1, len(tasks)):
        raise ConfigError(f"--data_dir given {len(data_dirs)} times for {len(tasks)} --task: give one, or one per task")
    recipe_path, flags, overrides = parse_args(rest)
    recipe = load_recipe(recipe_path, overrides)
    from modeling.data.contamination import DEFAULT_NGRAM
    from modeling.finetune.dataset import evaluation_documents
    from modeling.pretrain.contamination import check_contamination, contamination_table, save_report

    documents = []
    for i, task in enumerate(tasks):
        data_dir = data_dirs[i] if len(data_dirs) == len(tasks) else (data_dirs[0] if data_dirs else None)
        documents += evaluation_documents(task, data_dir)
    report = check_contamination(
        recipe, documents, ngram=int(ngram[0]) if ngram else DEFAULT_NGRAM, num_proc=flags["num_proc"]
    )
    print("\n" + contamination_table(report))
    print(f"\nreport: {save_report(report)}")
    return 0


def data_order_command(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        parse_args(argv)  # prints the help and exits
    rest = list(argv)
    phase, step, out = _take(rest, "--phase"), _take(rest, "--step"), _take(rest, "--json")
    if len(rest) != 1 or rest[0].startswith("-"):
        raise ConfigError("data-order: give the run folder, e.g. python train_mlm.py data-order out/demo --phase ...")
    if len(phase) != 1 or len(step) != 1 or not step[0].isdigit() or len(out) > 1:
        raise ConfigError("data-order: give --phase NAME and --step K once each (K a whole number from 1)")
    from modeling.common import run_files
    from modeling.pretrain.data_order import step_pieces, step_table

    pieces = step_pieces(rest[0], phase[0], int(step[0]))
    print(step_table(pieces, phase[0], int(step[0])))
    if out:
        run_files.write_json(out[0], [p.to_dict() for p in pieces])
        print(f"\nwritten: {out[0]}")
    return 0


def train(argv: list[str]) -> int:
    if argv and argv[0] == "data-order":
        return data_order_command(argv[1:])
    if argv and argv[0] == "prepare":
        return prepare_command(argv[1:])
    if argv and argv[0] == "contamination":
        return contamination_command(argv[1:])
    recipe_path, flags, overrides = parse_args(argv)
    resume = flags["resume"]
    recipe = load_recipe(recipe_path, overrides)
    # heavy imports only once the recipe is known to be good (and publishing only when the recipe pushes)
    from modeling.finetune.dataset import evaluation_documents
    from modeling.pretrain.runner import run
    from modeling.pretrain.summary import source_losses_table

    pusher = _pusher(recipe)
    try:
        summary = run(
            recipe,
            resume=resume,
            on_phase_end=pusher,
            evaluation_documents=evaluation_documents,
            on_revision=pusher.revision if pusher is not None else None,
        )
    finally:
        if pusher is not None:
            pusher.wait()  # a push in flight finishes before the process ends
    if is_main_process():
        # the unigram entropy is what a frequency-only model would score on the same held-out text
        print(
            f"\n{'phase':<12}{'tokens':>14}{'held-out loss':>22}{'unigram entropy':>17}{'wall (s)':>10}{'tokens/s':>10}"
        )
        for phase in summary.phases:
            held = phase.held_out
            entropy = f"{held.unigram_entropy:.3f}" if held.unigram_entropy is not None else "-"
            print(
                f"{phase.phase:<12}{phase.tokens:>14,}{held.loss_start:>11.3f} -> {held.loss_end:<7.3f}"
                f"{entropy:>17}{phase.wall_time_s:>10.0f}{phase.tokens_per_second:>10.0f}"
            )
        per_source = source_losses_table(summary.phases)
        if per_source:
            print("\n" + per_source)
        print(f"\nsummary: {recipe.output_dir}/training_summary.json   plot: {recipe.output_dir}/{summary.plot}")
        run = PretrainingRun(recipe.output_dir)
        print("models:  " + "  ".join(run.resolve(phase.model_dir) for phase in summary.phases))
    return 0


def _pusher(recipe):
    """With hub.repo_id, each phase is pushed when it ends (branch = phase; the last also to main), and each
    revision of hub.push_every when it is taken (branch = its name), in the background while training goes on."""
    if not recipe.hub.repo_id:
        return None
    from modeling.publish.hub import PhasePusher

    return PhasePusher(recipe.hub)


def next_step(argv: list[str]) -> str:
    """What to run after an interruption: prepare keeps its finished parts; training resumes."""
    if argv and argv[0] == "prepare":
        return "run the same prepare again: the parts already prepared are kept"
    if argv and argv[0] == "contamination":
        return "run the same command again: it reads the store only"
    again = " ".join(["accelerate launch train_mlm.py", *argv, *([] if "--resume" in argv else ["--resume"])])
    return f"continue with: {again}"


def main(argv: list[str] | None = None) -> int:
    return run_command(train, argv, next_step)


if __name__ == "__main__":
    sys.exit(main())
