"""The distributed engine a Trainer runs under, and what differs between engines for this project.

accelerate picks the engine from its launch config (`accelerate_configs/`); the Trainer then prepares the model
and optimizer for it. Three things the project does at a phase boundary depend on the engine:

- which files a checkpoint holds, and so how a checkpoint is judged complete (`checkpoint_files_problem`);
- how a saved optimizer state is loaded into an optimizer the engine has prepared (`load_optimizer_state`), also
  by another number of processes than saved it: DDP's is whole, FSDP2's is resharded as it loads, ZeRO's
  partitions are converted once to DeepSpeed's universal checkpoint (`make_universal`);
- how full weights are gathered for a stock-transformers folder (`full_state_dict`).

Engines, by name: `ddp` (one process, or DDP: every process holds the whole model), `fsdp2` (parameters,
gradients and optimizer state sharded; sharded checkpoints), `zero2` and `zero3` (DeepSpeed ZeRO).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import glob
import io
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from modeling.common import run_files
from modeling.common.errors import ConfigError
from modeling.common.records import Record

# The files transformers' Trainer writes into a checkpoint, by engine (besides trainer_state.json,
# scheduler.pt and rng_state*.pth, which every engine writes).
FSDP_MODEL_FOLDER = "pytorch_model_fsdp_0"
FSDP_OPTIMIZER_FOLDER = "optimizer_0"


def engine_of(accelerator) -> str:
    """The engine name of a Trainer's accelerator. FSDP1 and FSDP2 with full state dicts are refused: their
    checkpoints gather the whole model and optimizer on one process, which FSDP is chosen to avoid."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        stage = accelerator.state.deepspeed_plugin.zero_stage
        if stage not in (2, 3):
            raise ConfigError(
                f"accelerate config: DeepSpeed ZeRO stage {stage}; this project runs ZeRO-2 and ZeRO-3 "
                "(accelerate_configs/8gpu_zero2.yaml, 8gpu_zero3.yaml); for less sharding than ZeRO-2, DDP"
            )
        return f"zero{stage}"
    if accelerator.distributed_type == DistributedType.FSDP:
        plugin = accelerator.state.fsdp_plugin
        if plugin.fsdp_version != 2:
            raise ConfigError(
                f"accelerate config: fsdp_version {plugin.fsdp_version}; this project runs FSDP2 "
                "(fsdp_version: 2, as in accelerate_configs/8gpu_fsdp2.yaml)"
            )
        if "SHARDED_STATE_DICT" not in str(plugin.state_dict_type):
            raise ConfigError(
                f"accelerate config: fsdp_state_dict_type {plugin.state_dict_type}; checkpoints must stay sharded "
                "(SHARDED_STATE_DICT): the phase folders get full safetensors weights either way"
            )
        if plugin.cpu_ram_efficient_loading:
            # transformers then loads weights on the main process only and leaves the others' empty; accelerate's
            # hand-over of the optimizer to the sharded parameters goes by data pointer, and empty tensors share one
            raise ConfigError(
                "accelerate config: fsdp_cpu_ram_efficient_loading true (accelerate's default); set it false, as "
                "accelerate_configs/8gpu_fsdp2.yaml does: every process then reads the weights itself"
            )
        return "fsdp2"
    return "ddp"


def sharded_launch() -> bool:
    """Whether this launch asks accelerate for FSDP or DeepSpeed (its launcher sets these variables from the
    config): known before a Trainer, whose arguments depend on it, exists."""
    return any(
        os.environ.get(name, "false").lower() == "true" for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")
    )


# ---------------------------------------------------------------- checkpoint files


def checkpoint_files_problem(path: Path, engine: str, processes: int = 0) -> str | None:
    """Why a checkpoint written under `engine` (by `processes`, 0: not known) lacks the model or optimizer state
    it needs, or None."""
    if engine == "ddp":
        if not (path / "optimizer.pt").exists():
            return "no optimizer.pt"
        return weights_problem(path / "model.safetensors") or torch_files_problem(path)
    if engine == "fsdp2":
        problem = dcp_problem(path / FSDP_MODEL_FOLDER) or dcp_problem(path / FSDP_OPTIMIZER_FOLDER)
        return problem or torch_files_problem(path)
    if engine.startswith("zero"):
        return deepspeed_problem(path, processes) or torch_files_problem(path)
    return f"written under an unknown engine '{engine}'"


def torch_files_problem(folder: Path) -> str | None:
    """Why one of the torch.save files a resume loads (optimizer.pt, scheduler.pt, rng_state*.pth, ZeRO's
    states) cannot be, or None: each zip's directory must read and every record match its checksum (one read
    of each file: cut short or damaged files are found here, not as a RuntimeError halfway into loading)."""
    for path in sorted(p for pattern in ("*.pt", "*.pth") for p in folder.glob(pattern)):
        try:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            return f"{path.name} cannot be read ({type(error).__name__}: {' '.join(str(error).split())[:80]})"
        if damaged is not None:
            return f"{path.name} is damaged (its record {damaged} fails its checksum)"
    return None


def weights_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be used (missing, cut short, not safetensors), or None."""
    from safetensors import safe_open

    if not path.exists():
        return f"no {path.name}"
    try:
        with safe_open(str(path), framework="pt") as weights:
            names = list(weights.keys())
            if names:
                weights.get_slice(names[-1])[...]  # the last tensor lies at the end of the file
    except Exception as error:  # safetensors raises its own error types for a damaged file
        return f"{path.name} cannot be read ({type(error).__name__}: {str(error).splitlines()[0]})"
    return None


def dcp_problem(folder: Path) -> str | None:
    """Why a torch.distributed.checkpoint folder (what FSDP2 saves) is not whole: its metadata must read, and
    every byte range it points to must be there."""
    from torch.distributed.checkpoint import FileSystemReader

    if not (folder / ".metadata").exists():
        return f"no {folder.name}/.metadata"
    try:
        metadata = FileSystemReader(str(folder)).read_metadata()
    except Exception as error:  # a truncated or foreign file: pickle and torch raise many types
        return f"{folder.name}/.metadata cannot be read ({type(error).__name__})"
    for item in (metadata.storage_data or {}).values():
        shard = folder / item.relative_path
        if not shard.exists() or shard.stat().st_size < item.offset + item.length:
            return f"{folder.name}/{item.relative_path} is missing or cut short"
    return None


def deepspeed_problem(path: Path, processes: int = 0) -> str | None:
    """Why a DeepSpeed checkpoint (`latest` naming a folder of model and optimizer states, one optimizer
    partition per process) is not whole."""
    latest = path / "latest"
    if not latest.exists():
        return "no DeepSpeed 'latest' file"
    tag = latest.read_text().strip()
    states = path / tag
    if not glob.glob(str(states / "*model_states.pt")):
        return f"no model states in {tag}/"
    partitions = zero_partitions(path)
    if not partitions or (processes and partitions != processes):
        return f"{partitions} optimizer partitions in {tag}/" + (f", not {processes}" if processes else "")
    problem = torch_files_problem(states)
    return f"{tag}/{problem}" if problem else None


def zero_partitions(path: Path) -> int:
    """How many optimizer partitions a ZeRO checkpoint holds: the number of processes that saved it."""
    tag = (path / "latest").read_text().strip()
    return len(glob.glob(str(path / tag / "*optim_states.pt")))


# ---------------------------------------------------------------- ZeRO into another number of processes

UNIVERSAL_LATEST = "latest_universal"  # DeepSpeed's name for the file naming a checkpoint's universal folder


def universal_problem(path: Path) -> str | None:
    """Why a ZeRO checkpoint has no whole universal copy, or None. `latest_universal` is written last, once the
    folder it names is in place."""
    latest = path / UNIVERSAL_LATEST
    if not latest.exists():
        return f"no {UNIVERSAL_LATEST}"
    folder = path / latest.read_text().strip()
    if not (folder / "zero" / "optimizer_state.pt").exists():
        return f"{folder.name}/zero/optimizer_state.pt is missing"
    return None


def make_universal(path: Path) -> bool:
    """Give a ZeRO checkpoint DeepSpeed's universal copy, which loads into any number of processes: per parameter,
    its fp32 weights and optimizer moments whole (`global_stepN_universal/`, named by `latest_universal`, beside
    the partitions). DeepSpeed's own converter (deepspeed.checkpoint.ds_to_universal), on one process; returns
    False when the copy is there already. An interrupted conversion leaves a temporary folder, redone next time."""
    if universal_problem(path) is None:
        return False
    from deepspeed.checkpoint import ds_to_universal

    tag = (path / "latest").read_text().strip()
    target, work = path / f"{tag}_universal", path / "universal.tmp"
    shutil.rmtree(work, ignore_errors=True)  # left by a conversion that was killed
    try:
        arguments = argparse.Namespace(
            input_folder=str(path / tag),
            # inside a folder of its own: the converter writes its `latest_universal` beside its output
            output_folder=str(work / target.name),
            num_extract_workers=1,  # no worker processes forked from a training process
            num_merge_workers=1,
            keep_temp_folder=False,
            strict=True,
            inject_missing_state=True,  # the Trainer's checkpoints lack the (empty, for a plain model) info it wants
        )
        with contextlib.redirect_stdout(io.StringIO()):  # its progress prints
            ds_to_universal.main(arguments)
        shutil.rmtree(target, ignore_errors=True)  # left by a conversion killed between this rename and `latest`
        (work / target.name).rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    run_files.write_text(path / UNIVERSAL_LATEST, target.name)
    return True


def universal_load_settled(optimizer, settings: list[dict]) -> None:
    """Undo what DeepSpeed's ZeRO-3 loader of a universal checkpoint (0.19) gets wrong, so that training goes on
    exactly: it gives every parameter group one shared step tensor, which each group's update then advances (the
    step count, and with it Adam's bias correction, runs ahead), and group 0's hyperparameters (its weight decay
    on the groups that have none). `settings`: each group's own, as the optimizer was created; the learning rate
    stays the scheduler's. Harmless where the loader got them right (ZeRO-2's)."""
    base = base_optimizer(optimizer)
    own_step_counts(base)
    for group, given in zip(base.param_groups, settings, strict=True):
        group.update({key: value for key, value in given.items() if key not in ("params", "lr", "initial_lr")})


def own_step_counts(optimizer) -> None:
    """Give every parameter's optimizer state a step tensor of its own (see universal_load_settled)."""
    seen = set()
    for state in base_optimizer(optimizer).state.values():
        step = state.get("step")
        if isinstance(step, torch.Tensor):
            if id(step) in seen:
                state["step"] = step.clone()
            seen.add(id(step))


def base_optimizer(optimizer):
    """The torch optimizer inside accelerate's and DeepSpeed's wrappers (each keeps the one it wraps as
    `.optimizer`)."""
    while not isinstance(optimizer, torch.optim.Optimizer) and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


# ---------------------------------------------------------------- optimizer state carried over


def load_optimizer_state(trainer, checkpoint: str, engine: str, universal: bool = False) -> None:
    """Load a checkpoint's optimizer state (its moments and step counts) into the Trainer's prepared optimizer,
    through the engine's own loader; the optimizer keeps its current hyperparameters (learning rate as the
    scheduler set it, betas, eps, weight decay). `universal`: a ZeRO engine built to load the checkpoint's
    universal copy (make_universal), saved by another number of processes."""
    optimizer = trainer.optimizer
    current = [{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]
    if engine == "fsdp2":
        from accelerate.utils import load_fsdp_optimizer

        load_fsdp_optimizer(
            trainer.accelerator.state.fsdp_plugin, trainer.accelerator, optimizer, trainer.model, checkpoint
        )
    elif engine.startswith("zero"):
        # DeepSpeed loads module and optimizer together; the module's weights there are the ones this phase
        # starts from (the previous phase's last step), so loading them again changes nothing.
        trainer.model_wrapped.load_checkpoint(
            checkpoint, load_optimizer_states=True, load_lr_scheduler_states=False, load_module_strict=True
        )
    else:
        state = torch.load(os.path.join(checkpoint, "optimizer.pt"), weights_only=True, map_location="cpu")
        optimizer.load_state_dict(state)
    for group, settings in zip(optimizer.param_groups, current, strict=True):
        group.update(settings)
    if universal:
        own_step_counts(optimizer)


# ---------------------------------------------------------------- full weights


def full_state_dict(trainer, engine: str, checkpoint: str | None = None) -> dict[str, torch.Tensor] | None:
    """The model's full weights for a stock-transformers folder where an engine sharded them, on the main
    process; None on the others, and under DDP, whose module holds them whole (save_whole saves its own).
    A collective under FSDP2 and ZeRO: every process must call it. Under ZeRO, `checkpoint` (the one the model
    now holds) gives the fp32 weights, which ZeRO keeps in its optimizer: they are consolidated from there with
    DeepSpeed's own tool; without one, the engine gathers its module's weights (16-bit under bf16)."""
    main = trainer.accelerator.is_main_process
    if engine.startswith("zero"):
        if checkpoint is None:
            state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
            return state if main else None
        trainer.accelerator.wait_for_everyone()
        if not main:
            return None
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(checkpoint)
    if engine == "fsdp2":
        # torch's API, as accelerate's get_state_dict calls it for FSDP2: gathered shard by shard onto the
        # main process's CPU memory
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(trainer.model_wrapped, options=options)
        if not main:
            return None
        # The gathered copies no longer share storage, so save_pretrained cannot see which are tied (the
        # decoder is the input embeddings): keep each shared parameter under its first name, as it would.
        model = trainer.accelerator.unwrap_model(trainer.model)
        first_names = {name for name, _ in model.named_parameters()}
        aliases = {name for name, _ in model.named_parameters(remove_duplicate=False)} - first_names
        return {name: tensor for name, tensor in state.items() if name not in aliases}
    return None


def save_whole(model, folder: Path, state_dict: dict[str, torch.Tensor] | None) -> None:
    """save_pretrained with weights gathered by full_state_dict (None: the module's own). The config records
    the dtype of the weights written, not the module's: ZeRO under bf16 casts the module to bf16 while the
    weights consolidated from its checkpoint are fp32, and transformers loads a folder in its config's dtype."""
    model.save_pretrained(str(folder), state_dict=state_dict)
    floating = {t.dtype for t in (state_dict or {}).values() if t.is_floating_point()}
    if len(floating) == 1 and (written := floating.pop()) != model.dtype:
        config = copy.deepcopy(model.config)
        config.dtype = written
        config.save_pretrained(str(folder))


# ---------------------------------------------------------------- what each process holds


@dataclass
class StateBytes(Record):
    """Bytes of model state held by the process that holds the most: its parameter shards, gradients and
    optimizer state, measured on the tensors themselves after an optimizer step."""

    engine: str
    parameters: int
    gradients: int
    optimizer: int


def _local_bytes(tensor) -> int:
    if not isinstance(tensor, torch.Tensor):  # no gradient yet, or an optimizer's non-tensor state
        return 0
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor  # a DTensor's shard on this process
    return local.numel() * local.element_size()


def state_bytes(model, optimizer) -> tuple[int, int, int]:
    """(parameters, gradients, optimizer state) bytes held by this process, under DDP or FSDP2. (ZeRO keeps
    its gradients and fp32 weights in flat partitions of its own, which these tensors do not show.)"""
    params = list(model.parameters())
    return (
        sum(_local_bytes(p) for p in params),
        sum(_local_bytes(p.grad) for p in params),
        sum(_local_bytes(value) for state in optimizer.state.values() for value in state.values()),
    )
