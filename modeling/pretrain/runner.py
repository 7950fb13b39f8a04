"""Continued MLM pretraining, phase after phase, on Hugging Face Trainer under accelerate.

Per phase: plan the steps, measure the held-out loss, train (resuming mid-phase from the last
complete checkpoint when asked), measure again, save a stock-transformers folder, record the phase
(phase_summary.json, training_summary.json, the plot) and hand the finished phase to `on_phase_end`
(train_mlm.py pushes it to the Hub there when the recipe names a repo).
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from transformers import set_seed

from modeling.common import run_files
from modeling.common.engines import weights_problem
from modeling.common.errors import ConfigError, DataError
from modeling.common.runtime import check_shared_folder, join_processes, processes_without
from modeling.data.index import PhaseIndex
from modeling.data.packing import PackedRow, Packing
from modeling.data.rows import build_phase_data, source_held_out_rows, unigram_entropy
from modeling.data.store import Store, StoreFolder
from modeling.pretrain.masking import MLMCollator
from modeling.pretrain.model import build_model, check_model_config, reload_phase_model
from modeling.pretrain.plot import plot_training
from modeling.pretrain.prepare import EvaluationReader, open_store, prepare
from modeling.pretrain.recipe import Recipe, recipe_from_dict
from modeling.pretrain.run_folder import PhaseFolder, PretrainingRun
from modeling.pretrain.schedules import MaskingSchedule, PhasePlan, held_out_masking, plan_phase
from modeling.pretrain.summary import (
    HeldOutRecord,
    LearningRateRecord,
    MaskingRecord,
    PhaseSummary,
    RevisionRecord,
    SourceHeldOutRecord,
    SourceReport,
    TrainingSummary,
)
from modeling.pretrain.trainer import (
    CheckpointMarker,
    HeldOutSlice,
    PhaseState,
    PretrainingTrainer,
    RevisionSnapshots,
    checkpoint_problem,
    trainer_callbacks,
    training_arguments,
)

log = logging.getLogger(__name__)

# Called on the main process for each finished phase, once it is recorded: (run folder, phase name, is the last,
# trained by this launch). A phase a resume finds finished is handed over again: what a killed launch left undone
# for it (a push) is the hook's to finish.
PhaseEndHook = Callable[[Path, str, bool, bool], None]
# Called on the main process when a revision has been written (hub.push_every): (its folder, its record).
RevisionHook = Callable[[Path, RevisionRecord], None]


def run(
    recipe: Recipe,
    resume: bool = False,
    on_phase_end: PhaseEndHook | None = None,
    evaluation_documents: EvaluationReader | None = None,
    on_revision: RevisionHook | None = None,
) -> TrainingSummary:
    """Train every phase of the recipe; returns the training summary. `evaluation_documents` reads the tasks a
    store the run prepares itself leaves out (store.exclude_tasks)."""
    state = join_processes(recipe.distributed.timeout_minutes)
    check_model_config(recipe)  # before minutes of preparing a store
    run_files.writable_folder("output_dir", Path(recipe.output_dir))
    run_files.not_a_file("store.path", recipe.store_dir())
    run_folder = PretrainingRun(recipe.output_dir)
    lock = run_files.RunLock(run_folder.folder)
    problem = _start_problem(recipe, resume, run_folder, lock) if state.is_main_process else None
    problem = broadcast_object_list([problem])[0] if state.num_processes > 1 else problem
    if problem:
        raise ConfigError(problem)
    try:
        check_shared_folder(state, run_folder.folder, "output_dir")
        return _run(recipe, resume, on_phase_end, state, run_folder, evaluation_documents, on_revision)
    finally:
        if state.is_main_process:
            lock.release()


def _start_problem(recipe: Recipe, resume: bool, run_folder: PretrainingRun, lock) -> str | None:
    """Why this run may not start (None: it may; the lock is then held): another run's folder without
    --resume, a recipe that is not the run's, or another process training into the folder."""
    if run_folder.has_progress() and not resume:
        return (
            f"output_dir={run_folder.folder}: already holds a run; pass --resume to continue it, "
            "or choose another output_dir"
        )
    if resume and run_folder.recipe_json.exists():
        recorded = recipe_from_dict(run_files.read_json(run_folder.recipe_json), validate=False)
        changed = recipe_differences(recorded, recipe)
        if changed:
            return (
                f"--resume: the recipe differs from the run's ({run_folder.recipe_json}) in "
                f"{', '.join(changed)}; resume with the run's settings, or start a new run in another output_dir"
            )
    return lock.acquire()


def _run(
    recipe: Recipe,
    resume: bool,
    on_phase_end,
    state: PartialState,
    run_folder: PretrainingRun,
    evaluation_documents: EvaluationReader | None,
    on_revision: RevisionHook | None = None,
):
    store = _store(recipe, state, evaluation_documents)
    set_seed(recipe.seed)
    tokenizer = store.tokenizer()
    model = build_model(recipe, tokenizer)  # a config error found here leaves nothing behind
    log.info(
        "model: %.2fM parameters, %s attention; tokenizer: %d tokens",
        model.num_parameters() / 1e6,
        model.config._attn_implementation,
        len(tokenizer),
    )
    if state.is_main_process and not (resume and run_folder.recipe_json.exists()):
        run_folder.folder.mkdir(parents=True, exist_ok=True)
        run_files.write_json(run_folder.recipe_json, recipe.to_dict())  # a resume never rewrites the record
    state.wait_for_everyone()

    phases: list[PhaseSummary] = []
    previous_checkpoint = None
    for index, phase in enumerate(recipe.phases):
        folder = run_folder.phase(phase.name)
        trained_now = not folder.is_done()
        if folder.is_done():
            summary = PhaseSummary.load(folder.summary_json)
            log.info("phase %s: already complete, skipping", phase.name)
            problem = weights_problem(folder.folder / "model.safetensors")
            if problem:
                raise DataError(
                    f"{folder.folder}: phase '{phase.name}' is marked complete but its {problem}; restore the "
                    f"folder, or remove {folder.summary_json.name} there to train the phase again from its checkpoints"
                )
        else:
            if index > 0:  # a fresh model from the previous phase's folder: the engine prepares each phase's own
                model = reload_phase_model(run_folder.phase(recipe.phases[index - 1].name).folder, recipe)
            steps_before = sum(p.steps for p in phases)
            summary = run_phase(
                recipe, index, model, tokenizer, store, previous_checkpoint, resume, steps_before, on_revision
            )
            model = None  # the finished phase's model and optimizer go before the next phase builds its own
            gc.collect()
        previous_checkpoint = run_folder.resolve(summary.final_checkpoint)
        phases.append(summary)
        if state.is_main_process:  # one writer: several processes renaming the same temporary file race
            training = TrainingSummary.of_phases(
                recipe.name, run_folder.recipe_json.name, recipe.max_seq_length, phases, run_folder.plot_png.name
            )
            run_files.write_json(run_folder.summary_json, training.to_dict())
            plot_training(run_folder.plot_png, phases)
            if on_phase_end:  # the folder, summary and plot are final
                on_phase_end(run_folder.folder, phase.name, index == len(recipe.phases) - 1, trained_now)
        state.wait_for_everyone()
    return TrainingSummary.load(run_folder.summary_json)


# Settings a resume may change: they change how a run is watched or kept, not what it computes.
RESUMABLE_CHANGES = (
    "output_dir",
    "logging.",
    "checkpoint.keep",
    "holdout.every_steps",
    "hub.",
    "data.workers",
    "store.path",
    "sources.*.path",
    "distributed.",
)


def recipe_differences(recorded: Recipe, current: Recipe) -> list[str]:
    """Dotted keys whose values differ between two recipes, less the ones a resume may change."""
    old, new = _flatten(recorded.to_dict()), _flatten(current.to_dict())
    changed = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        generic = ".".join(
            "*" if i == 1 and key.startswith("sources.") else part for i, part in enumerate(key.split("."))
        )
        if any(key.startswith(p) or generic.startswith(p) for p in RESUMABLE_CHANGES):
            continue
        changed.append(f"{key} ({old.get(key)!r} -> {new.get(key)!r})")
    return changed


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    if isinstance(value, list) and value and all(isinstance(item, dict) and "name" in item for item in value):
        out = {}
        for item in value:  # phases, by name
            out.update(_flatten(item, f"{prefix}{item['name']}."))
        return out
    return {prefix[:-1]: value}


def _store(recipe: Recipe, state: PartialState, evaluation_documents: EvaluationReader | None) -> Store:
    """The recipe's token store. A single process prepares it when it is missing (the demo's first run);
    several processes never do: one would work for minutes while the others wait."""
    complete = StoreFolder(recipe.store_dir()).is_complete()
    if state.num_processes > 1:  # every process decides alike, or one stops while the others wait for it
        blind = processes_without(state, complete)
        if 0 < len(blind) < state.num_processes:
            raise ConfigError(
                f"store.path={recipe.store_dir()}: the token store is there for some processes but not for "
                f"{', '.join(blind)}; runs on several machines need store.path on a filesystem they all mount "
                "(or a copy on each)"
            )
        complete = not blind
    if complete:
        return open_store(recipe)
    if state.num_processes > 1:
        raise ConfigError(
            f"store.path={recipe.store_dir()}: no token store there; prepare it first with "
            f"`python train_mlm.py prepare RECIPE` (the same recipe and overrides), then launch the training"
        )
    log.info("store %s: missing; preparing it now (once)", recipe.store_dir())
    return prepare(recipe, evaluation_documents=evaluation_documents)


@dataclass
class PhaseSetup:
    """Everything a phase trains with, before it trains."""

    trainer: PretrainingTrainer
    plan: PhasePlan
    rows: PhaseIndex
    eval_rows: list[PackedRow]
    folder: PhaseFolder


def run_phase(
    recipe: Recipe,
    index: int,
    model,
    tokenizer,
    store: Store,
    previous_checkpoint: str | None,
    resume: bool,
    steps_before: int = 0,
    on_revision: RevisionHook | None = None,
) -> PhaseSummary:
    setup = set_up_phase(recipe, index, model, tokenizer, store, previous_checkpoint)
    trainer, plan, rows, eval_rows, folder = setup.trainer, setup.plan, setup.rows, setup.eval_rows, setup.folder
    phase, names = recipe.phases[index], recipe.phases[index].source_names()
    if recipe.hub.push_every:
        trainer.add_callback(
            RevisionSnapshots(
                trainer, recipe.hub.push_every, folder.revisions_dir, steps_before, plan.rows_per_step, on_revision
            )
        )

    processes = trainer.accelerator.num_processes
    log.info(
        "phase %s: engine %s, %d process%s (%s), %s attention",
        phase.name,
        trainer.engine,
        processes,
        "" if processes == 1 else "es",
        trainer.accelerator.distributed_type.value,
        trainer.accelerator.unwrap_model(trainer.model).config._attn_implementation,
    )
    checkpoint = last_complete_checkpoint(folder, trainer.engine, processes) if resume else None
    if checkpoint and folder.state_json.exists():
        state = PhaseState.load(folder.state_json)
        held_out_start, sources_start = state.held_out_loss_start, state.source_losses_start
        trainer.restore_progress(checkpoint)
        log.info("phase %s: resuming from %s", phase.name, checkpoint)
    else:
        if folder.checkpoints_dir.exists() and PartialState().is_main_process:
            shutil.rmtree(folder.checkpoints_dir)  # a phase killed before its first checkpoint starts over
        checkpoint, held_out_start, sources_start = None, None, {}
    trainer.session_start = time.monotonic()
    trainer.train(resume_from_checkpoint=checkpoint)  # a fresh phase measures its held-out losses first
    if held_out_start is None:
        held_out_start, sources_start = trainer.held_out_start, trainer.source_losses_start
    wall = trainer.wall_time()
    held_out_end = trainer.measure(trainer.held_out)
    sources_end = trainer.measure_sources()

    # decided once, by the main process: under ZeRO it says where the weights are read from, and every process
    # must take the same path through the collectives that follow
    main = trainer.accelerator.is_main_process
    final_checkpoint = last_complete_checkpoint(folder, trainer.engine, processes) if main else None
    final_checkpoint = broadcast_object_list([final_checkpoint])[0] if processes > 1 else final_checkpoint
    if final_checkpoint is None or not final_checkpoint.endswith(f"-{trainer.state.global_step}"):
        raise DataError(
            f"{folder.checkpoints_dir}: the checkpoint of the phase's last step ({trainer.state.global_step}) is "
            f"missing or incomplete (newest complete: {final_checkpoint}); the next phase starts from its state"
        )
    trainer.save_transformers_folder(folder.folder, final_checkpoint)
    reports = _source_reports(store, names, rows, plan.steps * plan.rows_per_step)
    summary = _phase_summary(recipe, plan, trainer, reports, eval_rows, held_out_start, held_out_end, wall)
    summary.held_out_sources = _source_held_out(trainer, names, sources_start, sources_end)
    summary.revisions = _revisions(folder) if recipe.hub.push_every else None
    run_folder = PretrainingRun(recipe.output_dir)  # recorded relative to it: a moved run still resumes
    summary.final_checkpoint, summary.model_dir = (
        run_folder.relative(final_checkpoint),
        run_folder.relative(folder.folder),
    )
    if trainer.args.should_save:
        run_files.write_json(folder.summary_json, summary.to_dict())
    log.info(
        "phase %s done: held-out loss %.4f -> %.4f (a frequency-only model: %.4f), %d tokens in %.0f s (%.0f tokens/s)",
        phase.name,
        held_out_start,
        held_out_end,
        summary.held_out.unigram_entropy,
        summary.tokens,
        wall,
        summary.tokens / max(wall, 1e-9),
    )
    return summary


def set_up_phase(
    recipe: Recipe, index: int, model, tokenizer, store: Store, previous_checkpoint: str | None
) -> PhaseSetup:
    """The phase's plan, rows and Trainer (tests read the Trainer's data loader from here)."""
    phase = recipe.phases[index]
    folder = PretrainingRun(recipe.output_dir).phase(phase.name)
    folder.folder.mkdir(parents=True, exist_ok=True)
    cache_dir = index_cache(store, folder)
    packing = Packing.of(tokenizer, recipe.max_seq_length, recipe.data.pack_open_rows)
    data = build_phase_data(
        store,
        phase.name,
        phase.sources,
        recipe.seed,
        packing,
        recipe.holdout.max_documents,
        epochs=phase.length.get("epochs"),
        cache_dir=cache_dir,
    )
    plan = plan_phase(recipe, index, data.epoch_rows)
    num_processes = PartialState().num_processes
    accumulation = recipe.batch.accumulation_steps(recipe.max_seq_length, num_processes)
    log.info(
        "phase %s: %d steps of %d rows x %d tokens (%d per device x %d processes x %d accumulation); "
        "lr %.2e, warmup %d / stable %d / decay %d (%s); masking %.2f -> %.2f",
        phase.name,
        plan.steps,
        plan.rows_per_step,
        recipe.max_seq_length,
        recipe.batch.per_device,
        num_processes,
        accumulation,
        plan.lr,
        plan.warmup_steps,
        plan.stable_steps,
        plan.decay_steps,
        plan.decay_type,
        plan.masking.start,
        plan.masking.end,
    )
    names, eval_rows = data.sources, data.held_out
    eval_masking = held_out_masking(plan, len(eval_rows))
    train_rows = data.training_rows(plan.steps * plan.rows_per_step)
    trainer = PretrainingTrainer(
        model=model,
        args=training_arguments(recipe, plan, folder, accumulation),
        train_dataset=train_rows,
        data_collator=MLMCollator(tokenizer, packing, plan.masking, recipe.seed, f"train/{phase.name}", len(names)),
        held_out=HeldOutSlice(
            eval_rows,
            MLMCollator(tokenizer, packing, eval_masking, recipe.seed, f"held-out/{phase.name}", len(names)),
        ),
        source_held_out=source_slices(recipe, store, tokenizer, packing),
        processing_class=tokenizer,
        callbacks=trainer_callbacks(recipe, PretrainingRun(recipe.output_dir).tensorboard_dir(phase.name)),
        source_names=names,
        phase=phase.name,
        phase_state_json=folder.state_json,
        carry_optimizer_from=None if phase.reset_optimizer else previous_checkpoint,
        curve_every=recipe.holdout.every_steps,
    )
    return PhaseSetup(trainer, plan, data.index, eval_rows, folder)


def source_slices(recipe: Recipe, store: Store, tokenizer, packing: Packing) -> list[HeldOutSlice]:
    """Each source's own held-out slice, for every source some phase of the recipe trains on, whichever phase this
    is: the same documents, masked at the same positions and at one rate (the last phase's final rate), in every
    phase, so the losses of one source compare across the whole run. A source with no held-out document has no
    slice (logged)."""
    masking = recipe.phases[-1].masking_range()[1]
    slices = []
    for name in [spec.name for spec in recipe.used_sources()]:
        rows = source_held_out_rows(store, name, recipe.seed, recipe.holdout.max_documents, packing)
        if not rows:
            log.warning("source %s: no held-out documents, so no loss of its own (raise holdout.fraction)", name)
            continue
        collator = MLMCollator(
            tokenizer, packing, MaskingSchedule(masking, masking, len(rows)), recipe.seed, f"held-out/source/{name}"
        )
        slices.append(HeldOutSlice(rows, collator, source=name))
    return slices


def index_cache(store: Store, folder: PhaseFolder) -> Path:
    """Where the phase's row indexes are kept: in the store, so every run on it with the same settings shares them
    (their names say what they were built from); in the phase folder where the store is read-only."""
    if os.access(store.folder.folder, os.W_OK):
        return store.folder.row_indexes_dir
    log.info("store %s is read-only: row indexes are kept in %s", store.folder.folder, folder.index_dir)
    return folder.index_dir


def last_complete_checkpoint(folder: PhaseFolder, engine: str, processes: int = 1) -> str | None:
    """Newest checkpoint whose completion marker, Trainer state and engine files read back; others (cut off
    while saving, or damaged since) are skipped with a warning naming what is wrong. A complete checkpoint
    written under another engine stops the run: its files cannot be loaded, and skipping it would lose it."""
    for path in folder.checkpoints():
        problem = checkpoint_problem(path)
        if problem is None:
            mismatch = CheckpointMarker.load(path / PhaseFolder.CHECKPOINT_MARKER).launch_mismatch(engine, processes)
            if mismatch:
                raise ConfigError(f"--resume: {path} {mismatch}; resume the run as it was launched")
            return str(path)
        log.warning("checkpoint %s is incomplete (%s); skipping it", path, problem)
    return None


def _phase_summary(
    recipe: Recipe,
    plan: PhasePlan,
    trainer: PretrainingTrainer,
    reports: dict[str, SourceReport],
    eval_rows: list[PackedRow],
    loss_start: float,
    loss_end: float,
    wall: float,
) -> PhaseSummary:
    counters = trainer.global_counters()
    names = trainer.source_names
    tokens_per_source = {n: int(counters.tokens[i]) for i, n in enumerate(names)}
    tokens = sum(tokens_per_source.values())
    return PhaseSummary(
        phase=plan.name,
        index=plan.index,
        steps=plan.steps,
        rows=plan.steps * plan.rows_per_step,
        tokens=tokens,
        tokens_per_source=tokens_per_source,
        documents_trained={n: int(counters.documents[i]) for i, n in enumerate(names)},
        row_fill=tokens / (plan.steps * plan.tokens_per_step),
        masking=MaskingRecord(plan.masking.start, plan.masking.end, counters.masking_rate()),
        lr=LearningRateRecord(
            peak=plan.lr,
            warmup_steps=plan.warmup_steps,
            stable_steps=plan.stable_steps,
            decay_steps=plan.decay_steps,
            decay=plan.decay_type,
            min_lr_ratio=plan.min_lr_ratio,
        ),
        reset_optimizer=recipe.phases[plan.index].reset_optimizer,
        held_out=HeldOutRecord(
            rows=len(eval_rows),
            chunks=sum(len(row.doc_lengths) for row in eval_rows),
            masking=plan.masking.end,
            loss_start=loss_start,
            loss_end=loss_end,
            unigram_entropy=unigram_entropy(eval_rows, trainer.processing_class.all_special_ids),
        ),
        wall_time_s=wall,
        tokens_per_second=tokens / wall if wall else None,
        sources=reports,
        log_history=[e for e in trainer.state.log_history if "loss" in e or any(k.startswith("held_out") for k in e)],
        model_states=trainer.state_bytes,
    )


def _source_held_out(
    trainer: PretrainingTrainer, trained: list[str], start: dict[str, float], end: dict[str, float]
) -> dict[str, SourceHeldOutRecord]:
    records = {}
    for held_out in trainer.source_held_out:
        name = held_out.source
        if name not in start:  # a phase resumed from a run recorded before sources were measured
            log.warning("phase %s: no held-out loss of source %s from the phase's start", trainer.phase, name)
        records[name] = SourceHeldOutRecord(
            documents=sum(sum(row.doc_starts) for row in held_out.rows),
            rows=len(held_out.rows),
            masking=held_out.collator.schedule.end,
            loss_start=start.get(name),
            loss_end=end[name],
            unigram_entropy=unigram_entropy(held_out.rows, trainer.processing_class.all_special_ids),
            trained=name in trained,
        )
    return records


def _revisions(folder: PhaseFolder) -> list[RevisionRecord]:
    """The phase's revisions, in step order (their weights may be gone once pushed; the records stay)."""
    return sorted((RevisionRecord.load(p / RevisionRecord.FILE) for p in folder.revisions()), key=lambda r: r.step)


def _source_reports(store: Store, names: list[str], rows: PhaseIndex, trained_rows: int) -> dict[str, SourceReport]:
    """What the store holds of each of the phase's sources, and how many passes over it the phase started."""
    reports = {}
    for source, name in enumerate(names):
        recorded = store.manifest.sources[name]
        reports[name] = SourceReport(
            documents_per_pass=recorded.documents["train"],
            held_out_per_pass=recorded.documents["held_out"],
            skipped_per_pass=recorded.skipped,
            first_pass_complete=True,
            passes_started=rows.passes_started(source, trained_rows),
        )
    return reports
