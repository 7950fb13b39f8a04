"""Continued MLM pretraining, phase after phase, on Hugging Face Trainer under accelerate.

Per phase: plan the steps, measure the held-out loss, train (resuming mid-phase from the last
complete checkpoint when asked), measure again, save a stock-transformers folder, record the
phase in training_summary.json and the loss/LR/masking plot, and (with hub.repo_id) push it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from modeling.attention import packed_model_inputs
from modeling.config import ConfigError, Recipe
from modeling.masking import MLMCollator
from modeling.mixture import PhaseMixture
from modeling.model import build_model, build_tokenizer, load_pretrained, set_sparse_prediction
from modeling.packing import PackedRows, count_rows, held_out_rows
from modeling.report import plot_training, write_summary
from modeling.schedules import MaskingSchedule, PhasePlan, plan_phase
from modeling.sources import resolve_files

log = logging.getLogger(__name__)
# We give transformers' warmup-stable-decay schedule its stable length explicitly; Trainer also passes the total.
warnings.filterwarnings("ignore", message="Both num_training_steps and num_stable_steps are specified")

COMPLETE_MARKER = "checkpoint_complete.json"  # written last: a checkpoint without it is incomplete
PHASE_DONE = "phase_summary.json"


class PretrainingTrainer(Trainer):
    """Trainer plus what packed MLM needs: document masks built on the device from `doc_ids`,
    counters of real tokens (per source) and masked positions, and their place in checkpoints."""

    def __init__(
        self,
        *args,
        held_out_collator,
        source_names: list[str],
        phase: str,
        carry_optimizer_from: str | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.held_out_collator, self.source_names, self.phase = held_out_collator, source_names, phase
        self.carry_optimizer_from = carry_optimizer_from
        # tokens per source, documents per source, masked positions, maskable positions
        self.counts = torch.zeros(2 * len(source_names) + 2, dtype=torch.float64)
        self._last_log = (time.monotonic(), self.counts.clone())
        self.wall_time_before, self.session_start = 0.0, time.monotonic()

    def wall_time(self) -> float:
        """Training time of the phase, across interruptions."""
        return self.wall_time_before + time.monotonic() - self.session_start

    def get_eval_dataloader(self, eval_dataset=None):
        # Held-out rows are masked from their own stream, at a fixed rate, so start and end compare.
        train_collator, self.data_collator = self.data_collator, self.held_out_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    # -- forward

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = packed_model_inputs(inputs, self.accelerator.unwrap_model(model).config, model.dtype)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def training_step(self, model, inputs, num_items_in_batch=None):
        doc_ids = inputs["doc_ids"]
        chunks = (doc_ids.max(dim=1).values + 1).sum()
        masked, maskable = (
            (inputs["labels"] != -100).sum(),
            (doc_ids >= 0).sum() - 2 * chunks,
        )  # [CLS]/[SEP] never masked
        self.counts += torch.cat(
            [
                inputs["source_tokens"].sum(0).cpu().double(),
                inputs["source_documents"].sum(0).cpu().double(),
                torch.stack([masked, maskable]).cpu().double(),
            ]
        )
        return super().training_step(model, inputs, num_items_in_batch)

    # -- optimizer carried over from the previous phase

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.carry_optimizer_from and not getattr(self, "_carried", False):
            if not os.path.isfile(os.path.join(self.carry_optimizer_from, "optimizer.pt")):
                raise ConfigError(
                    f"phase {self.phase}: the previous phase's optimizer state ({self.carry_optimizer_from}) is gone; "
                    f"restore it, or start this phase with a fresh optimizer (--phases.{self.phase}.reset_optimizer true)"
                )
            state = torch.load(
                os.path.join(self.carry_optimizer_from, "optimizer.pt"), weights_only=True, map_location="cpu"
            )
            optimizer.load_state_dict(state)
            for group in optimizer.param_groups:  # keep the moments, take this phase's hyperparameters
                group.pop("initial_lr", None)
                group.update(
                    lr=self.args.learning_rate,
                    betas=(self.args.adam_beta1, self.args.adam_beta2),
                    eps=self.args.adam_epsilon,
                )
            self._carried = True
            log.info("phase %s: optimizer state carried over from %s", self.phase, self.carry_optimizer_from)
        return optimizer

    # -- logging and checkpoints

    def global_counts(self) -> torch.Tensor:
        counts = self.counts.clone().to(self.args.device)
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        return counts.cpu()

    def log(self, logs, start_time=None):
        if "loss" in logs:
            counts, now = self.global_counts(), time.monotonic()
            then, counts_then = self._last_log
            delta = counts - counts_then
            tokens = float(counts[: len(self.source_names)].sum())
            logs.update(
                tokens_seen=tokens,
                masking_rate=float(delta[-2] / max(delta[-1], 1)),  # over the logging interval
                tokens_per_second=float(delta[: len(self.source_names)].sum()) / max(now - then, 1e-9),
            )
            self._last_log = (now, counts)
        super().log(logs, start_time)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        counts = self.global_counts()
        if self.args.should_save:
            folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            marker = {"step": self.state.global_step, "counts": counts.tolist(), "wall_time": self.wall_time()}
            (folder / COMPLETE_MARKER).write_text(json.dumps(marker))

    def restore_progress(self, checkpoint: str):
        saved = json.loads((Path(checkpoint) / COMPLETE_MARKER).read_text())
        if self.accelerator.is_main_process:  # the others start at zero: the sum stays right
            self.counts = torch.tensor(saved["counts"], dtype=torch.float64)
        self._last_log = (time.monotonic(), torch.tensor(saved["counts"], dtype=torch.float64))
        self.wall_time_before, self.session_start = saved["wall_time"], time.monotonic()


class _SaveAtPhaseEnd(TrainerCallback):
    """The last step of a phase always leaves a checkpoint: the next phase carries its optimizer over."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = True


def last_complete_checkpoint(folder: Path) -> str | None:
    """Newest checkpoint with its completion marker; incomplete ones are skipped with a warning."""
    if not folder.is_dir():
        return None
    candidates = sorted(
        (p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for path in candidates:
        if (path / COMPLETE_MARKER).exists() and (path / "model.safetensors").exists():
            return str(path)
        log.warning("checkpoint %s is incomplete (interrupted while saving?); skipping it", path)
    return None


def run(recipe: Recipe, resume: bool = False) -> dict:
    """Train every phase of the recipe; returns the training summary."""
    state = PartialState(cpu=not torch.cuda.is_available())  # joins the other processes, if launched with several
    use_every_core(state)
    output = Path(recipe.output_dir)
    holds_a_run = output.exists() and any(output.iterdir())
    state.wait_for_everyone()  # every process has looked before the main one writes
    if holds_a_run and not resume:
        raise ConfigError(
            f"output_dir={output}: already holds a run; pass --resume to continue it, or choose another output_dir"
        )
    for spec in recipe.sources.values():
        if spec.format != "hf":
            resolve_files(spec)  # a missing file stops the run now, not hours into it
    if state.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        (output / "recipe.json").write_text(json.dumps(_recipe_dict(recipe), indent=2, default=str))
    set_seed(recipe.seed)
    with state.main_process_first():  # the main process trains and caches a tokenizer; the others load it
        tokenizer = build_tokenizer(recipe)
    model = build_model(recipe, tokenizer)
    log.info(
        "model: %.2fM parameters, %s attention; tokenizer: %d tokens",
        model.num_parameters() / 1e6,
        model.config._attn_implementation,
        len(tokenizer),
    )

    phases, previous_checkpoint = [], None
    for index, phase in enumerate(recipe.phases):
        phase_dir = output / phase.name
        done = phase_dir / PHASE_DONE
        trained_now = not done.exists()
        if done.exists():
            summary = json.loads(done.read_text())
            log.info("phase %s: already complete, skipping", phase.name)
            model = _reload(phase_dir, recipe)
            previous_checkpoint = summary["final_checkpoint"]
        else:
            summary, previous_checkpoint = run_phase(recipe, index, model, tokenizer, previous_checkpoint, resume)
        phases.append(summary)
        if state.is_main_process:  # one writer: several processes renaming the same temporary file race
            write_summary(output, recipe, phases)
            plot_training(output, phases)
            if recipe.hub.repo_id and trained_now:  # the folder, card and plot are final: publish the phase
                from modeling.hub import push_phase

                push_phase(output, phase.name, recipe.hub, last=index == len(recipe.phases) - 1)
        state.wait_for_everyone()
    return json.loads((output / "training_summary.json").read_text())


def use_every_core(state: PartialState):
    """`accelerate launch` without a config or --cpu (the quickstart) sets OMP_NUM_THREADS=1, which leaves a
    single CPU process on one core (the demo's phase 1 ran 1.56x slower so). Such a run gets every core it may use."""
    launched_by_accelerate = "ACCELERATE_DYNAMO_BACKEND" in os.environ
    if (
        state.device.type != "cpu"
        or state.num_processes != 1
        or not launched_by_accelerate
        or os.environ.get("OMP_NUM_THREADS") != "1"
    ):
        return
    cores = len(os.sched_getaffinity(0))
    if cores > torch.get_num_threads():
        torch.set_num_threads(cores)
        log.info(
            "accelerate launch set OMP_NUM_THREADS=1; this single CPU process uses all %d cores "
            "(run it with `python` to keep one thread)",
            cores,
        )


def run_phase(recipe: Recipe, index: int, model, tokenizer, previous_checkpoint: str | None, resume: bool):
    phase = recipe.phases[index]
    phase_dir = Path(recipe.output_dir) / phase.name
    phase_dir.mkdir(parents=True, exist_ok=True)
    names = phase.sources if isinstance(phase.sources, list) else list(phase.sources)
    mixture = PhaseMixture(
        sources=[recipe.sources[n] for n in names],
        weights=None if isinstance(phase.sources, list) else [float(phase.sources[n]) for n in names],
        holdout_fraction=recipe.holdout.fraction,
        seed=recipe.seed,
        phase=phase.name,
        shuffle_buffer=recipe.data.shuffle_buffer,
    )
    plan = plan_phase(recipe, index, _rows_per_epoch(recipe, phase, mixture, tokenizer, phase_dir))
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

    eval_rows = held_out_rows(
        mixture, tokenizer, recipe.max_seq_length, recipe.holdout.max_documents, recipe.data.pack_open_rows
    )
    if not eval_rows:
        raise ConfigError(f"holdout: phase '{phase.name}' has no held-out documents; raise holdout.fraction")
    eval_masking = MaskingSchedule(plan.masking.end, plan.masking.end, len(eval_rows))
    train_rows = PackedRows(
        mixture,
        tokenizer,
        recipe.max_seq_length,
        recipe.batch.per_device,
        open_rows=recipe.data.pack_open_rows,
        tokenize_batch=recipe.data.tokenize_batch,
        stats_path=str(phase_dir / "stream_stats.json"),
    )
    trainer = PretrainingTrainer(
        model=model,
        args=_training_arguments(recipe, plan, phase_dir, accumulation),
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        data_collator=MLMCollator(
            tokenizer, plan.masking, recipe.seed, f"train/{phase.name}", recipe.max_seq_length, len(names)
        ),
        held_out_collator=MLMCollator(
            tokenizer, eval_masking, recipe.seed, f"held-out/{phase.name}", recipe.max_seq_length, len(names)
        ),
        processing_class=tokenizer,
        callbacks=[_SaveAtPhaseEnd()],
        source_names=names,
        phase=phase.name,
        carry_optimizer_from=None if phase.reset_optimizer else previous_checkpoint,
    )
    checkpoint = last_complete_checkpoint(phase_dir / "checkpoints") if resume else None
    state_file = phase_dir / "phase_state.json"
    if checkpoint and state_file.exists():
        state = json.loads(state_file.read_text())
        trainer.restore_progress(checkpoint)
        log.info("phase %s: resuming from %s", phase.name, checkpoint)
    else:
        if (phase_dir / "checkpoints").exists() and PartialState().is_main_process:
            shutil.rmtree(phase_dir / "checkpoints")  # a phase killed before its first checkpoint starts over
        state = {"held_out_loss_start": trainer.evaluate(metric_key_prefix="held_out")["held_out_loss"]}
        _write_json(trainer, state_file, state)
        checkpoint = None
    trainer.session_start = time.monotonic()
    trainer.train(resume_from_checkpoint=checkpoint)
    wall = trainer.wall_time()
    held_out_end = trainer.evaluate(metric_key_prefix="held_out")["held_out_loss"]

    final_checkpoint = last_complete_checkpoint(phase_dir / "checkpoints")
    save_for_transformers(trainer, tokenizer, phase_dir)
    summary = _phase_summary(recipe, plan, trainer, names, eval_rows, state["held_out_loss_start"], held_out_end, wall)
    summary.update(final_checkpoint=final_checkpoint, model_dir=str(phase_dir))
    _write_json(trainer, phase_dir / PHASE_DONE, summary)
    log.info(
        "phase %s done: held-out loss %.4f -> %.4f, %d tokens in %.0f s (%.0f tokens/s)",
        phase.name,
        state["held_out_loss_start"],
        held_out_end,
        summary["tokens"],
        wall,
        summary["tokens"] / max(wall, 1e-9),
    )
    return summary, final_checkpoint


def _phase_summary(
    recipe,
    plan: PhasePlan,
    trainer: PretrainingTrainer,
    names: list[str],
    eval_rows: list[dict],
    loss_start: float,
    loss_end: float,
    wall: float,
) -> dict:
    counts = trainer.global_counts()
    tokens_per_source = {n: int(counts[i]) for i, n in enumerate(names)}
    tokens = sum(tokens_per_source.values())
    stats_file = Path(trainer.train_dataset.stats_path)
    return {
        "phase": plan.name,
        "index": plan.index,
        "steps": plan.steps,
        "rows": plan.steps * plan.rows_per_step,
        "tokens": tokens,
        "tokens_per_source": tokens_per_source,
        "documents_trained": {n: int(counts[len(names) + i]) for i, n in enumerate(names)},
        "row_fill": tokens / (plan.steps * plan.tokens_per_step),
        "masking": {
            "start": plan.masking.start,
            "end": plan.masking.end,
            "measured": float(counts[-2] / max(counts[-1], 1)),
        },
        "lr": {
            "peak": plan.lr,
            "warmup_steps": plan.warmup_steps,
            "stable_steps": plan.stable_steps,
            "decay_steps": plan.decay_steps,
            "decay": plan.decay_type,
            "min_lr_ratio": plan.min_lr_ratio,
        },
        "reset_optimizer": recipe.phases[plan.index].reset_optimizer,
        "held_out": {
            "rows": len(eval_rows),
            "chunks": sum(len(row["doc_lengths"]) for row in eval_rows),
            "masking": plan.masking.end,
            "loss_start": loss_start,
            "loss_end": loss_end,
        },
        "wall_time_s": wall,
        "tokens_per_second": tokens / wall if wall else None,
        # per source, per pass over its files: documents, held out, skipped and why
        "sources": json.loads(stats_file.read_text()) if stats_file.exists() else {},
        "log_history": [entry for entry in trainer.state.log_history if "loss" in entry or "held_out_loss" in entry],
    }


def _rows_per_epoch(recipe, phase, mixture, tokenizer, phase_dir: Path) -> int | None:
    if "epochs" not in phase.length:
        return None
    cache = phase_dir / "epoch_rows.json"
    with PartialState().main_process_first():  # one process counts; the others read its answer
        if cache.exists():
            return json.loads(cache.read_text())["rows"]
        log.info("phase %s: counting the rows of one epoch (a pass over its sources)", phase.name)
        rows, tokens = count_rows(
            mixture, tokenizer, recipe.max_seq_length, recipe.data.pack_open_rows, recipe.data.tokenize_batch
        )
        cache.write_text(json.dumps({"rows": rows, "tokens": tokens}))
        return rows


def _training_arguments(recipe: Recipe, plan: PhasePlan, phase_dir: Path, accumulation: int) -> TrainingArguments:
    precision = recipe.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    # transformers 5 takes the TensorBoard folder from the environment only.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(phase_dir.parent / "tensorboard" / plan.name)
    return TrainingArguments(
        output_dir=str(phase_dir / "checkpoints"),
        max_steps=plan.steps,
        run_name=f"{recipe.name}/{plan.name}",
        per_device_train_batch_size=recipe.batch.per_device,
        per_device_eval_batch_size=recipe.batch.per_device,
        gradient_accumulation_steps=accumulation,
        learning_rate=plan.lr,
        warmup_steps=plan.warmup_steps,
        lr_scheduler_type="warmup_stable_decay",
        lr_scheduler_kwargs=plan.scheduler_kwargs(),
        optim="adamw_torch",
        adam_beta1=recipe.optimizer.betas[0],
        adam_beta2=recipe.optimizer.betas[1],
        adam_epsilon=recipe.optimizer.eps,
        weight_decay=recipe.optimizer.weight_decay,
        max_grad_norm=recipe.optimizer.max_grad_norm,
        use_cpu=not torch.cuda.is_available(),  # on CPU, several processes then talk over gloo
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        seed=recipe.seed,
        torch_compile=recipe.model.compile,
        logging_steps=recipe.logging.steps,
        logging_first_step=True,
        report_to=recipe.logging.report_to or "none",
        save_strategy="steps",
        save_steps=recipe.checkpoint.every_steps,
        save_total_limit=recipe.checkpoint.keep,
        eval_strategy="no",
        prediction_loss_only=True,
        remove_unused_columns=False,
        dataloader_num_workers=recipe.data.workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=False,
    )


def save_for_transformers(trainer: Trainer, tokenizer, folder: Path):
    """model.safetensors + config + tokenizer: loads with AutoModelForMaskedLM / pipeline('fill-mask')."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.config.sparse_prediction = False  # saved config: downstream users get logits for every position
    trainer.save_model(str(folder))
    model.config.sparse_prediction = True
    if trainer.args.should_save:
        tokenizer.save_pretrained(str(folder))
        for leftover in ("training_args.bin",):
            (folder / leftover).unlink(missing_ok=True)  # pickled; not part of a published model


def _reload(phase_dir: Path, recipe: Recipe):
    from transformers import AutoModelForMaskedLM

    model = load_pretrained(AutoModelForMaskedLM, str(phase_dir), attn_implementation=recipe.model.attn_implementation)
    set_sparse_prediction(model, True)
    return model


def _write_json(trainer: Trainer, path: Path, data: dict):
    if trainer.args.should_save:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str))
        os.replace(tmp, path)


def _recipe_dict(recipe: Recipe) -> dict:
    data = asdict(recipe)
    data["sources"] = {name: asdict(spec) for name, spec in recipe.sources.items()}
    return data
