"""The Trainer of one pretraining phase: Hugging Face Trainer plus what packed MLM needs.

- document masks built on the device from each batch's `doc_ids` (modeling.common.attention);
- counters of what was trained (real tokens and documents per source, masked positions), summed over
  processes, logged, and kept in each checkpoint's completion marker so a resumed phase counts on;
- at the phase's start, once the engine (DDP, FSDP2, ZeRO; modeling.common.engines) has prepared the model
  and optimizer: the previous phase's optimizer state carried over (its moments, with this phase's
  hyperparameters) and the held-out losses measured: the phase's slice, and each source's own slice (every
  source some phase trains on, trained in this phase or not), again every `holdout.every_steps` when the recipe asks;
- a checkpoint at the phase's last step (the next phase carries its optimizer from there);
- a checkpoint saved by another number of processes loads as well (a relaunch on fewer or more GPUs): under
  ZeRO through DeepSpeed's universal checkpoint, converted once (`PretrainingTrainer.train`);
- with `hub.push_every`, every N steps a checkpoint and a revision: the whole weights as a stock transformers
  folder with its step, tokens and held-out loss (`RevisionSnapshots`), handed to the Hub push.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.integrations import TensorBoardCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from modeling.common import run_files
from modeling.common.attention import packed_model_inputs
from modeling.common.cli import interrupted
from modeling.common.engines import (
    StateBytes,
    checkpoint_files_problem,
    engine_of,
    full_state_dict,
    load_optimizer_state,
    make_universal,
    save_whole,
    state_bytes,
    universal_load_settled,
    zero_partitions,
)
from modeling.common.errors import ConfigError, DataError
from modeling.common.records import Record
from modeling.common.runtime import resolve_precision, use_cpu
from modeling.data.packing import PackedRow
from modeling.pretrain.recipe import Recipe
from modeling.pretrain.run_folder import PhaseFolder
from modeling.pretrain.schedules import PhasePlan
from modeling.pretrain.summary import SOURCE_HELD_OUT_PREFIX, RevisionRecord, revision_name

log = logging.getLogger(__name__)


@dataclass
class TokenCounters:
    """What a phase has trained on. Each process counts its own batches; `flat` lays the counters out
    in one tensor so that all processes sum them in one reduction (and checkpoints keep them)."""

    tokens: torch.Tensor  # [sources] real tokens (padding excluded)
    documents: torch.Tensor  # [sources] documents begun (a document cut into several rows counts once)
    masked: torch.Tensor  # [] positions chosen for prediction
    maskable: torch.Tensor  # [] positions that could have been chosen (not [CLS], [SEP] or padding)

    @classmethod
    def zeros(cls, num_sources: int) -> TokenCounters:
        return cls.from_flat(torch.zeros(2 * num_sources + 2, dtype=torch.float64), num_sources)

    @classmethod
    def from_flat(cls, values: torch.Tensor | list[float], num_sources: int) -> TokenCounters:
        values = torch.as_tensor(values, dtype=torch.float64)
        return cls(values[:num_sources], values[num_sources : 2 * num_sources], values[-2], values[-1])

    def flat(self) -> torch.Tensor:
        return torch.cat([self.tokens, self.documents, self.masked[None], self.maskable[None]])

    def add_batch(self, inputs: dict):
        """Count a collated, masked batch (modeling.data.packing.collate_rows + MLMCollator)."""
        doc_ids = inputs["doc_ids"]
        chunks = (doc_ids.max(dim=1).values + 1).sum()
        self.tokens += inputs["source_tokens"].sum(0).cpu().double()
        self.documents += inputs["source_documents"].sum(0).cpu().double()
        # [CLS]/[SEP] are never masked; one copy to the host for both counts
        masked, maskable = torch.stack([(inputs["labels"] != -100).sum(), (doc_ids >= 0).sum() - 2 * chunks]).cpu()
        self.masked += masked.double()
        self.maskable += maskable.double()

    def since(self, earlier: TokenCounters) -> TokenCounters:
        return TokenCounters.from_flat(self.flat() - earlier.flat(), len(self.tokens))

    def total_tokens(self) -> float:
        return float(self.tokens.sum())

    def masking_rate(self) -> float:
        return float(self.masked / max(self.maskable, 1))


@dataclass
class CheckpointMarker(Record):
    """checkpoint_complete.json: written after everything else of a checkpoint, with the phase's progress."""

    step: int
    counts: list[float] = field(default_factory=list)  # TokenCounters.flat() summed over processes
    wall_time: float = 0.0  # training seconds of the phase so far, across interruptions
    engine: str = "ddp"  # modeling.common.engines: what the checkpoint's files are (older markers: DDP, the only one)
    processes: int = 0  # how many processes wrote it (0: not recorded)

    def launch_mismatch(self, engine: str, processes: int) -> str | None:
        """Why this launch cannot load the checkpoint's engine files, or None. Any number of `processes` can:
        DDP's are whole, FSDP2's are resharded on load, ZeRO's partitions are converted to DeepSpeed's universal
        checkpoint first (PretrainingTrainer.train); another engine cannot."""
        if self.engine != engine:
            return f"was saved under {self.engine} and this launch runs {engine}"
        return None


@dataclass
class PhaseState(Record):
    """phase_state.json: what a resumed phase needs from before its first step."""

    held_out_loss_start: float
    source_losses_start: dict[str, float] = field(default_factory=dict)  # source -> its own slice's loss


@dataclass
class HeldOutSlice:
    """Held-out rows and the collator that masks them (the same positions at every measurement): the phase's
    slice, or with `source` a source's own, logged as `held_out_loss` or `held_out/SOURCE_loss`."""

    rows: list[PackedRow]
    collator: Callable
    source: str | None = None

    @property
    def prefix(self) -> str:
        return "held_out" if self.source is None else SOURCE_HELD_OUT_PREFIX + self.source

    @property
    def loss_key(self) -> str:
        return f"{self.prefix}_loss"


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint is not complete, or None. Complete: our marker (written last) reads, the Trainer's own
    state is at the marker's step, and the engine's model and optimizer files are whole."""
    marker = path / PhaseFolder.CHECKPOINT_MARKER
    if not marker.exists():
        return "no completion marker: interrupted while saving?"
    try:
        saved = CheckpointMarker.load(marker)
    except DataError:
        return f"{marker.name} cannot be read"
    try:
        step = run_files.read_json(path / "trainer_state.json")["global_step"]
    except (OSError, ValueError, KeyError):
        return "trainer_state.json is missing or cannot be read"
    if step != saved.step:
        return f"trainer_state.json is at step {step}, the marker at {saved.step}"
    return checkpoint_files_problem(path, saved.engine, saved.processes)


def _processes(count: int) -> str:
    return f"{count} process" + ("" if count == 1 else "es")


def _carried_state_problem(checkpoint: Path) -> str | None:
    """Why the previous phase's last checkpoint cannot give this phase its optimizer state, or None."""
    if not checkpoint.exists():
        return "is gone"
    problem = checkpoint_problem(checkpoint)
    return f"is not whole ({problem})" if problem else None


class PretrainingTrainer(Trainer):
    """Trainer plus what packed MLM needs (see the module docstring)."""

    def __init__(
        self,
        *args,
        held_out: HeldOutSlice,
        source_held_out: list[HeldOutSlice],
        source_names: list[str],
        phase: str,
        phase_state_json: Path,
        carry_optimizer_from: str | None = None,
        curve_every: int = 0,
        **kwargs,
    ):
        super().__init__(*args, eval_dataset=held_out.rows, **kwargs)
        self.held_out, self.source_held_out = held_out, source_held_out
        self.source_names, self.phase = source_names, phase
        self.carry_optimizer_from, self.phase_state_json = carry_optimizer_from, phase_state_json
        self.engine = engine_of(self.accelerator)
        self.held_out_start: float | None = None
        self.source_losses_start: dict[str, float] = {}
        self._measuring = held_out
        self.state_bytes: StateBytes | None = None
        self.counters = TokenCounters.zeros(len(source_names))
        self._last_log = (time.monotonic(), TokenCounters.zeros(len(source_names)))
        self.wall_time_before, self.session_start = 0.0, time.monotonic()
        self.universal_from: str | None = None  # the ZeRO checkpoint train() loads through its universal copy
        self.optimizer_settings: list[dict] = []  # each parameter group's, as created
        self.add_callback(PhaseStart(self))
        if curve_every:
            self.add_callback(HeldOutCurve(self, curve_every))

    def wall_time(self) -> float:
        """Training time of the phase, across interruptions."""
        return self.wall_time_before + time.monotonic() - self.session_start

    def get_eval_dataloader(self, eval_dataset=None):
        # Held-out rows are masked from their own stream, at a fixed rate, so start and end compare.
        train_collator, self.data_collator = self.data_collator, self._measuring.collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def measure(self, held_out: HeldOutSlice) -> float:
        """The model's loss on a held-out slice, logged under the slice's prefix (every process takes part)."""
        self._measuring = held_out
        # An evaluation's data loader draws its base seed from the global generator: forked, so that measuring
        # leaves the random state training reads (dropout on CPU, say) where it was.
        try:
            with torch.random.fork_rng(devices=[]):
                return self.evaluate(held_out.rows, metric_key_prefix=held_out.prefix)[held_out.loss_key]
        finally:
            self._measuring = self.held_out

    def measure_sources(self) -> dict[str, float]:
        """The loss on each source's own slice: source -> loss."""
        return {held_out.source: self.measure(held_out) for held_out in self.source_held_out}

    def create_optimizer(self, model=None):
        # each group's settings as given, for after a universal checkpoint's load (universal_load_settled)
        optimizer = super().create_optimizer(model)
        self.optimizer_settings = [
            {k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups
        ]
        return optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        # We give transformers' warmup-stable-decay schedule its stable length explicitly; Trainer also passes
        # the total, and transformers warns that both were given.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Both num_training_steps and num_stable_steps are specified")
            return super().create_scheduler(num_training_steps, optimizer)

    # -- a checkpoint saved by another number of processes

    def train(self, resume_from_checkpoint: str | None = None, **kwargs):
        """Trainer.train. Under ZeRO, the checkpoint it loads (the one resumed, or the previous phase's whose
        optimizer state a fresh phase carries over) may have been saved by another number of processes, whose
        partitions DeepSpeed cannot load: its universal copy is made then, once, and the engine is built to load
        that (DeepSpeed's `checkpoint.load_universal`)."""
        self.universal_from = self._universal_source(resume_from_checkpoint or self.carry_optimizer_from)
        if self.universal_from is None:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        config = self.accelerator.state.deepspeed_plugin.deepspeed_config
        config.setdefault("checkpoint", {})["load_universal"] = True
        try:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        finally:  # the next phase's engine, built from the same plugin, loads partitions as saved
            config["checkpoint"].pop("load_universal", None)

    def _universal_source(self, checkpoint: str | None) -> str | None:
        """`checkpoint` when it is a ZeRO checkpoint saved by another number of processes (its universal copy then
        made, by the main process), else None. A carried-over state that is not whole is left to start_phase,
        which says so."""
        if checkpoint is None or not self.engine.startswith("zero"):
            return None
        if checkpoint == self.carry_optimizer_from and _carried_state_problem(Path(checkpoint)):
            return None
        if CheckpointMarker.load(Path(checkpoint) / PhaseFolder.CHECKPOINT_MARKER).engine != self.engine:
            return None  # refused in one line where it is loaded
        saved, processes = zero_partitions(Path(checkpoint)), self.accelerator.num_processes
        if saved == processes:
            return None
        problem, converted = None, False
        if self.accelerator.is_main_process:
            try:
                converted = make_universal(Path(checkpoint))
            except Exception as error:  # DeepSpeed's converter asserts and raises many types
                problem = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
        if processes > 1:  # every process stops, or none: the others would wait at the next collective
            problem = broadcast_object_list([problem])[0]
        if problem:
            raise DataError(
                f"{checkpoint}: saved by {_processes(saved)}, and DeepSpeed could not make the universal checkpoint "
                f"that loads into {processes} ({problem}); relaunch with {_processes(saved)}"
            )
        if self.accelerator.is_main_process:
            log.info(
                "%s: saved by %s, loaded into %d through DeepSpeed's universal checkpoint (%s)",
                checkpoint,
                _processes(saved),
                processes,
                "converted now" if converted else "converted before",
            )
        return checkpoint

    # -- forward

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        unwrapped = self.accelerator.unwrap_model(model)  # DDP and DeepSpeed wrappers have no config or dtype
        inputs = packed_model_inputs(inputs, unwrapped.config, unwrapped.dtype)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.counters.add_batch(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    # -- the phase's start, once the engine has prepared the model and optimizer

    def start_phase(self):
        """Before the first step of a phase started afresh (not resumed): the previous phase's optimizer state
        carried over, then the held-out losses (the phase's slice and each source's) measured and kept in
        phase_state.json. Both need the model and
        optimizer as the engine prepared them: FSDP2 cannot evaluate a model it has not sharded with its
        optimizer, ZeRO-2 cannot evaluate outside training, and a sharded optimizer loads sharded state only."""
        if self.carry_optimizer_from:
            problem = _carried_state_problem(Path(self.carry_optimizer_from))
            if problem:
                raise ConfigError(
                    f"phase {self.phase}: the previous phase's optimizer state ({self.carry_optimizer_from}) "
                    f"{problem}; restore it, or start this phase with a fresh optimizer "
                    f"(--phases.{self.phase}.reset_optimizer true)"
                )
            marker = CheckpointMarker.load(Path(self.carry_optimizer_from) / PhaseFolder.CHECKPOINT_MARKER)
            mismatch = marker.launch_mismatch(self.engine, self.accelerator.num_processes)
            if mismatch:
                raise ConfigError(
                    f"phase {self.phase}: the previous phase's optimizer state ({self.carry_optimizer_from}) "
                    f"{mismatch}; launch as the previous phase was launched, or start this phase with a fresh "
                    f"optimizer (--phases.{self.phase}.reset_optimizer true)"
                )
            universal = self.universal_from == self.carry_optimizer_from
            load_optimizer_state(self, self.carry_optimizer_from, self.engine, universal=universal)
            log.info("phase %s: optimizer state carried over from %s", self.phase, self.carry_optimizer_from)
        self.held_out_start = self.measure(self.held_out)
        self.source_losses_start = self.measure_sources()
        if self.args.should_save:
            state = PhaseState(self.held_out_start, self.source_losses_start)
            run_files.write_json(self.phase_state_json, state.to_dict())
        self.session_start = time.monotonic()  # the wall time of the phase is its training
        self._last_log = (self.session_start, self._last_log[1])

    def record_state_bytes(self):
        """Parameters, gradients and optimizer state of the process that holds the most (not under ZeRO: see
        state_bytes)."""
        if self.engine.startswith("zero"):
            return
        local = state_bytes(self.model_wrapped, self.optimizer)
        values = torch.tensor(local, dtype=torch.float64, device=self.args.device)
        if self.accelerator.num_processes > 1:  # the process that holds the most
            every = self.accelerator.gather(values).view(-1, 3)
            values = every[every.sum(dim=1).argmax()]
        self.state_bytes = StateBytes(self.engine, *(int(v) for v in values.tolist()))

    # -- whole models: the phase's end, and revisions on the way

    def save_transformers_folder(self, folder: Path, checkpoint: str) -> None:
        """model.safetensors + config + tokenizer: loads with AutoModelForMaskedLM / pipeline('fill-mask').
        The weights are gathered whole whatever the engine sharded (every process takes part)."""
        state_dict = full_state_dict(self, self.engine, checkpoint)
        if not self.args.should_save:
            return
        model = self.accelerator.unwrap_model(self.model)
        model.config.sparse_prediction = False  # saved config: downstream users get logits for every position
        try:
            save_whole(model, folder, state_dict)
        finally:
            model.config.sparse_prediction = True
        self.processing_class.save_pretrained(str(folder))

    def take_revision(self, revisions_dir: Path, steps_before: int, rows_per_step: int) -> RevisionRecord | None:
        """The model at this step, just checkpointed, as PHASE/revisions/step-N (every process takes part);
        returns its record on the main process."""
        step = self.state.global_step
        checkpoint = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        loss = self.measure(self.held_out)
        record = RevisionRecord(
            revision=revision_name(steps_before + step),
            phase=self.phase,
            step=step,
            run_step=steps_before + step,
            tokens_seen=self.global_counters().total_tokens(),
            held_out_loss=loss,
            rows_trained=step * rows_per_step,
        )
        target = revisions_dir / record.revision
        if self.args.should_save:
            revisions_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        with run_files.atomic_folder(target) if self.args.should_save else contextlib.nullcontext() as tmp:
            self.save_transformers_folder(tmp, str(checkpoint))
            if self.args.should_save:
                run_files.write_json(tmp / RevisionRecord.FILE, record.to_dict())
        log.info(
            "phase %s step %d: revision %s (held-out loss %.4f, %.0f tokens)",
            self.phase,
            step,
            record.revision,
            loss,
            record.tokens_seen,
        )
        return record if self.args.should_save else None

    # -- logging and checkpoints

    def global_counters(self) -> TokenCounters:
        """The counters summed over all processes."""
        flat = self.counters.flat().to(self.args.device)
        if self.accelerator.num_processes > 1:
            flat = self.accelerator.reduce(flat, reduction="sum")
        return TokenCounters.from_flat(flat.cpu(), len(self.source_names))

    def log(self, logs, start_time=None):
        if any(key.startswith("held_out") for key in logs):  # where the measurement falls on the tokens axis
            logs["tokens_seen"] = self.global_counters().total_tokens()
        if "loss" in logs:
            counters, now = self.global_counters(), time.monotonic()
            then, counters_then = self._last_log
            interval = counters.since(counters_then)
            logs.update(
                tokens_seen=counters.total_tokens(),
                masking_rate=interval.masking_rate(),  # over the logging interval
                tokens_per_second=interval.total_tokens() / max(now - then, 1e-9),
            )
            self._last_log = (now, counters)
        super().log(logs, start_time)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        counters = self.global_counters()
        if self.args.should_save:
            folder = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            marker = CheckpointMarker(
                self.state.global_step,
                counters.flat().tolist(),
                self.wall_time(),
                self.engine,
                self.accelerator.num_processes,
            )
            run_files.write_json(folder / PhaseFolder.CHECKPOINT_MARKER, marker.to_dict(), indent=None)

    def restore_progress(self, checkpoint: str):
        saved = CheckpointMarker.load(Path(checkpoint) / PhaseFolder.CHECKPOINT_MARKER)
        counters = TokenCounters.from_flat(saved.counts, len(self.source_names))
        if self.accelerator.is_main_process:  # the others start at zero: the sum stays right
            self.counters = TokenCounters.from_flat(saved.counts, len(self.source_names))
        self._last_log = (time.monotonic(), counters)
        self.wall_time_before, self.session_start = saved.wall_time, time.monotonic()


class PhaseStart(TrainerCallback):
    """Calls the trainer's start_phase once the engine has prepared the model and optimizer (a resumed phase
    has both from its checkpoint), and measures what each process holds after the first optimizer step."""

    def __init__(self, trainer: PretrainingTrainer):
        # A weak reference: a cycle trainer -> callback -> trainer would keep a finished phase's model and
        # optimizer in (GPU) memory until the cycle collector ran, while the next phase builds its own.
        self.trainer = weakref.ref(trainer)
        self.measured = False

    def on_train_begin(self, args, state, control, **kwargs):
        trainer = self.trainer()
        if state.global_step == 0:
            trainer.start_phase()
        elif trainer.universal_from:  # resumed: Trainer has just loaded the checkpoint's universal copy
            universal_load_settled(trainer.optimizer, trainer.optimizer_settings)

    def on_optimizer_step(self, args, state, control, **kwargs):
        if not self.measured:
            self.trainer().record_state_bytes()
            self.measured = True


class HeldOutCurve(TrainerCallback):
    """Every source's own held-out loss every `every` optimizer steps (the phase's start and end are measured
    anyway): a curve of what the phase teaches and makes the model forget, source by source."""

    def __init__(self, trainer: PretrainingTrainer, every: int):
        self.trainer, self.every = weakref.ref(trainer), every  # weak: see PhaseStart

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 and state.global_step < state.max_steps:
            # Measured before this step's checkpoint is saved (it then holds the point, and a resume does not
            # measure it twice). The evaluation's own log clears the flag that logs this step's training loss.
            should_log = control.should_log
            self.trainer().measure_sources()
            control.should_log = should_log


class RevisionSnapshots(TrainerCallback):
    """Every `every` optimizer steps (the phase's last excepted: the phase itself is its model): a checkpoint at
    that step, then a revision from it (PretrainingTrainer.take_revision), handed to `on_revision` on the main
    process. A step whose revision exists already (a step trained again after a resume from an older checkpoint)
    keeps it; a phase resumed at a due step whose revision a kill lost takes it first; and revisions that still
    hold their weights when a phase (re)starts, which a push removes, are handed to `on_revision` again."""

    def __init__(
        self,
        trainer: PretrainingTrainer,
        every: int,
        revisions_dir: Path,
        steps_before: int,
        rows_per_step: int,
        on_revision,
    ):
        self.trainer, self.every = weakref.ref(trainer), every  # weak: see PhaseStart
        self.revisions_dir, self.steps_before, self.rows_per_step = revisions_dir, steps_before, rows_per_step
        self.on_revision = on_revision

    def _due(self, state) -> bool:
        return state.global_step > 0 and state.global_step % self.every == 0 and state.global_step < state.max_steps

    def _taken(self, step: int) -> bool:
        """Decided by the main process for all: they must agree on whether the collectives of a revision run."""
        trainer = self.trainer()
        record = self.revisions_dir / revision_name(self.steps_before + step) / RevisionRecord.FILE
        taken = record.exists() if trainer.accelerator.is_main_process else None
        if trainer.accelerator.num_processes > 1:
            taken = broadcast_object_list([taken])[0]
        return taken

    def on_step_end(self, args, state, control, **kwargs):
        if self._due(state):
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        if self._due(state) and not self._taken(state.global_step):
            self._take()

    def on_train_begin(self, args, state, control, **kwargs):
        if self.on_revision is not None and self.trainer().accelerator.is_main_process:
            for folder in PhaseFolder(self.revisions_dir.parent).revisions():
                if any(folder.glob("*.safetensors")):
                    log.info("revision %s was not pushed: pushing it now", folder.name)
                    self.on_revision(folder, RevisionRecord.load(folder / RevisionRecord.FILE))
        if self._due(state) and not self._taken(state.global_step):
            self._take()

    def _take(self):
        record = self.trainer().take_revision(self.revisions_dir, self.steps_before, self.rows_per_step)
        if record is not None and self.on_revision is not None:
            self.on_revision(self.revisions_dir / record.revision, record)


class SaveAtPhaseEnd(TrainerCallback):
    """The last step of a phase always leaves a checkpoint: the next phase carries its optimizer over."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = True


class TensorBoardInFolder(TensorBoardCallback):
    """transformers' TensorBoard logging, written to a folder of our choosing (transformers 5 reads its
    folder from the TENSORBOARD_LOGGING_DIR environment variable only)."""

    def __init__(self, folder: Path):
        super().__init__()
        self.logging_dir = str(folder)


class StopWhenInterrupted(TrainerCallback):
    """Ctrl-C or a kill whose KeyboardInterrupt was swallowed (it landed in a finalizer, say) still stops
    training at the next step, from where it propagates."""

    def on_step_end(self, args, state, control, **kwargs):
        if interrupted():
            raise KeyboardInterrupt


def trainer_callbacks(recipe: Recipe, tensorboard_dir: Path) -> list[TrainerCallback]:
    callbacks: list[TrainerCallback] = [SaveAtPhaseEnd(), StopWhenInterrupted()]
    if "tensorboard" in recipe.logging.report_to:
        callbacks.append(TensorBoardInFolder(tensorboard_dir))
    return callbacks


def training_arguments(recipe: Recipe, plan: PhasePlan, phase: PhaseFolder, accumulation: int) -> TrainingArguments:
    precision = resolve_precision(recipe.precision)
    # TensorBoard is added as a callback writing to the run's folder (trainer_callbacks); other trackers by name.
    report_to = [tracker for tracker in recipe.logging.report_to if tracker != "tensorboard"]
    return TrainingArguments(
        output_dir=str(phase.checkpoints_dir),
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
        use_cpu=use_cpu(),
        ddp_timeout=round(recipe.distributed.timeout_minutes * 60),  # as join_processes gave the group
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        seed=recipe.seed,
        torch_compile=recipe.model.compile,
        logging_steps=recipe.logging.steps,
        logging_first_step=True,
        report_to=report_to or "none",
        save_strategy="steps",
        save_steps=recipe.checkpoint.every_steps,
        save_total_limit=recipe.checkpoint.keep,
        eval_strategy="no",
        prediction_loss_only=True,
        remove_unused_columns=False,
        train_sampling_strategy="sequential",  # the row index is already the phase's order
        dataloader_num_workers=recipe.data.workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=False,
    )
