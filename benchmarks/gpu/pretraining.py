"""Pretraining throughput through the project's own Trainer path, per attention backend, beside the stock way.

  project, BACKEND  what `train_mlm.py` runs for a phase (modeling.pretrain.runner.set_up_phase): the token store
                    (synthetic ids, clinical-like lengths), the row index packing documents best-fit into rows of
                    8,192, PhaseRows, MLMCollator masking 30%, document masks from the batch's doc_ids, the sparse
                    decoder, PretrainingTrainer in bf16 with AdamW; ModernBERT-base's shape, 4 rows per device
  stock             run_mlm.py's way: documents concatenated and cut into 8,192-token rows (attention crosses
                    documents), DataCollatorForLanguageModeling, dense decoder, sdpa, a plain Trainer

After warm-up steps, per side: real tokens per second (padding excluded), MFU, peak GPU memory, the time to the
first step, and the share of step time spent waiting for data. The clock syncs the GPU at every step end, so the
data wait is the time the GPU stood idle while the next batch was fetched: an upper bound (without the sync, the
fetch overlaps the end of the previous step). MFU = tokens/s x FLOPs per token / the card's dense bf16 peak, with
FLOPs from benchmarks.data_pipeline.flops_per_token: "useful" counts attention within documents (each token
attends to its document in global layers), "dense" the whole row (what dense masks compute).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from benchmarks.data_pipeline import flops_per_token
from benchmarks.gpu.setting import (
    PartContext,
    Setting,
    attention_backends,
    bf16_peak,
    free_memory,
    model_config,
    peak_memory_gb,
    random_documents,
    synchronize,
    synthetic_tokenizer,
    write_store,
)
from modeling.common.attention import VARLEN

MASKING = 0.3
STORE_DOCUMENTS = {"gpu": 2000, "cpu": 400}


class StepClock(TrainerCallback):
    """When each optimizer step ends (the device synced first) and how many real tokens were trained by then. No
    checkpoint is written at the end (the Trainer saves at max_steps): saving is not what is timed."""

    def __init__(self, setting: Setting, tokens_so_far):
        self.setting, self.tokens_so_far = setting, tokens_so_far
        self.begin, self.ends, self.tokens = 0.0, [], []

    def on_train_begin(self, args, state, control, **kwargs):
        synchronize(self.setting)  # after the phase's start (its held-out evaluation), where training begins
        self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize(self.setting)
        self.ends.append(time.perf_counter())
        self.tokens.append(self.tokens_so_far())
        control.should_save = False


def time_data_waits(trainer) -> list[float]:
    """Seconds spent fetching each optimizer step's batches (Trainer.get_batch_samples: next() on the loader,
    which also moves the batch to the device)."""
    waits: list[float] = []
    fetch = trainer.get_batch_samples

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fetch(*args, **kwargs)
        finally:
            waits.append(time.perf_counter() - started)

    trainer.get_batch_samples = timed
    return waits


def store_for(ctx: PartContext):
    """The part's synthetic token store (shared by the parts that train: made once, reused)."""
    from modeling.data.store import Store, StoreFolder

    setting = ctx.setting
    folder = ctx.work / f"store-{setting.mode}"
    tokenizer = synthetic_tokenizer(setting)
    if not StoreFolder(folder).is_complete():
        write_store(folder, setting, tokenizer, STORE_DOCUMENTS[setting.mode])
    return Store(folder), tokenizer


def recipe_dict(setting: Setting, store, backend: str, output_dir: Path, compile: bool = False) -> dict:
    """A one-phase recipe over the synthetic store, as YAML would give it."""
    steps = warmup_steps(setting, compile) + setting.timed_steps
    return {
        "name": "gpu-check",
        "output_dir": str(output_dir),
        "seed": 0,
        "model": {
            "config": {**setting.model, "max_position_embeddings": setting.row_length},
            "attn_implementation": backend,
            "compile": compile,
        },
        "tokenizer": {"path": str(store.folder.tokenizer_dir)},
        "max_seq_length": setting.row_length,
        "batch": {"global_sequences": setting.rows_per_step, "per_device": setting.rows_per_step},
        "optimizer": {"lr": 3e-4, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 1e-5},
        "precision": "bf16" if setting.on_gpu else "fp32",
        "sources": {"synthetic": {"path": "synthetic", "format": "text"}},
        "phases": [
            {
                "name": "phase1",
                "sources": ["synthetic"],
                "masking": MASKING,
                "length": {"steps": steps},
                "schedule": {"warmup": 0, "decay": "none"},
            }
        ],
        "holdout": {"fraction": store.manifest.holdout_fraction, "max_documents": 8},
        "store": {"path": str(store.folder.folder)},
        "logging": {"steps": 10_000},
        "checkpoint": {"every_steps": 100_000, "keep": 1},
        "data": {"workers": 1 if setting.on_gpu else 0},  # the GPU recipes' data.workers
    }


def recipe_for(setting: Setting, store, backend: str, output_dir: Path, compile: bool = False):
    from modeling.pretrain.recipe import recipe_from_dict

    return recipe_from_dict(recipe_dict(setting, store, backend, output_dir, compile))


def warmup_steps(setting: Setting, compile: bool) -> int:
    """Untimed steps first: under torch.compile one more, since the second step recompiles for the new row layout
    (other document lengths, another number of masked tokens) before shapes are taken as dynamic."""
    return setting.warmup_steps + (1 if compile else 0)


def measure_project(ctx: PartContext, store, tokenizer, backend: str, compile: bool = False) -> dict:
    """One side through set_up_phase and PretrainingTrainer.train(), as train_mlm.py runs a phase. Under
    torch.compile the held-out evaluation before the phase is left out: it would compile a graph of its own."""
    from modeling.common.runtime import join_processes
    from modeling.pretrain.model import build_model
    from modeling.pretrain.runner import set_up_phase
    from modeling.pretrain.trainer import PhaseStart, SaveAtPhaseEnd

    setting = ctx.setting
    join_processes()
    side = f"project, {backend}" + (" (reference kernel)" if backend == VARLEN and not setting.on_gpu else "")
    side += ", torch.compile" if compile else ""
    folder = ctx.work / "pretraining" / side.replace(", ", "-").replace(" ", "_")
    recipe = recipe_for(setting, store, backend, folder, compile)
    _reset_memory(setting)
    model = build_model(recipe, tokenizer)
    trainer = set_up_phase(recipe, 0, model, tokenizer, store, None).trainer
    trainer.remove_callback(SaveAtPhaseEnd)
    if compile:
        trainer.remove_callback(PhaseStart)
    clock = StepClock(setting, trainer.counters.total_tokens)
    trainer.add_callback(clock)
    waits = time_data_waits(trainer)
    started = time.perf_counter()
    trainer.train()
    rows = trainer.train_dataset
    lengths = [n for i in range(len(rows)) for n in rows[i].doc_lengths]
    context = sum(n * n for n in lengths) / sum(lengths)  # keys per token in a global layer, within documents
    figures = _figures(ctx, side, clock, waits, started, context, warmup_steps(setting, compile))
    figures["attention"] = trainer.accelerator.unwrap_model(trainer.model).config._attn_implementation
    del trainer, model
    free_memory(setting)
    return figures


def measure_stock(ctx: PartContext, tokenizer) -> dict:
    """run_mlm.py's default: group_texts rows, DataCollatorForLanguageModeling, dense decoder, sdpa, Trainer."""
    from transformers import DataCollatorForLanguageModeling, ModernBertForMaskedLM, Trainer, TrainingArguments

    setting = ctx.setting
    steps = setting.warmup_steps + setting.timed_steps
    needed = steps * setting.rows_per_step * setting.row_length
    stream: list[int] = []
    seed = 0
    while len(stream) < needed:
        for document in random_documents(setting, setting.document_lengths(500, seed=seed), seed=seed):
            stream.extend(document)
        seed += 1
    specials = set(setting.special_ids.values())
    rows = [stream[s : s + setting.row_length] for s in range(0, needed, setting.row_length)]
    examples = [{"input_ids": row, "special_tokens_mask": [int(t in specials) for t in row]} for row in rows]
    torch.manual_seed(0)
    model = ModernBertForMaskedLM._from_config(model_config(setting), attn_implementation="sdpa")
    args = TrainingArguments(
        output_dir=str(ctx.work / "pretraining" / "stock"),
        max_steps=steps,
        per_device_train_batch_size=setting.rows_per_step,
        learning_rate=3e-4,
        adam_beta2=0.98,
        adam_epsilon=1e-6,
        weight_decay=1e-5,
        bf16=setting.on_gpu,
        use_cpu=not setting.on_gpu,
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
        dataloader_num_workers=1 if setting.on_gpu else 0,
        dataloader_pin_memory=setting.on_gpu,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=examples,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=MASKING),
    )
    # every position is a real token (rows cut from the stream); global_step counts before on_step_end
    clock = StepClock(setting, lambda t=trainer: t.state.global_step * setting.rows_per_step * setting.row_length)
    trainer.add_callback(clock)
    waits = time_data_waits(trainer)
    _reset_memory(setting)
    started = time.perf_counter()
    trainer.train()
    figures = _figures(
        ctx,
        "stock (group_texts, DataCollatorForLanguageModeling, dense decoder, sdpa)",
        clock,
        waits,
        started,
        float(setting.row_length),
        setting.warmup_steps,
    )
    figures["attention"] = "sdpa, no document masks"
    del trainer, model
    free_memory(setting)
    return figures


def _figures(
    ctx: PartContext, side: str, clock: StepClock, waits: list[float], started: float, context: float, warm: int
):
    setting = ctx.setting
    timed = clock.ends[warm - 1 :]
    seconds = timed[-1] - timed[0]
    tokens = clock.tokens[-1] - clock.tokens[warm - 1]
    rate = tokens / seconds
    model = setting.model
    shape = dict(
        hidden=model["hidden_size"],
        intermediate=model["intermediate_size"],
        layers=model["num_hidden_layers"],
        global_every=model["global_attn_every_n_layers"],
        window=model["local_attention"],
        vocab=setting.vocab_size,
    )
    useful = flops_per_token(setting.row_length, MASKING, context=context, **shape)
    dense = flops_per_token(setting.row_length, MASKING, **shape)
    peak = bf16_peak(torch.cuda.get_device_name()) if setting.on_gpu else None
    return {
        "side": side,
        "tokens_per_second": rate,
        "step_seconds": statistics.median(b - a for a, b in zip(timed, timed[1:], strict=False)),
        "first_step_seconds": clock.ends[0] - clock.begin,
        "setup_seconds": clock.begin - started,
        "tokens_per_step": tokens / (len(clock.ends) - warm),
        "data_wait": sum(waits[warm:]) / seconds,
        "mean_document_context": context,
        "mfu": rate * useful / peak if peak else None,
        "mfu_dense": rate * dense / peak if peak else None,
        "peak_memory_gb": peak_memory_gb(setting),
    }


def _reset_memory(setting: Setting) -> None:
    if setting.on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# Seconds a side needs at least (model, Trainer, warm-up and timed steps; flex compiles its kernels first).
NEEDS = {"gpu": {"flex_attention": 45, "document_sdpa": 30}, "cpu": {}}


def run(ctx: PartContext) -> None:
    setting = ctx.setting
    store, tokenizer = store_for(ctx)
    if ctx.enough_time("stock", 15):
        with ctx.guard("stock"):
            ctx.add(measure_stock(ctx, tokenizer))
    for backend in attention_backends(ctx, training=True, prefix="project, "):
        if ctx.enough_time(f"project, {backend}", NEEDS[setting.mode].get(backend, 15)):
            with ctx.guard(f"project, {backend}"):
                ctx.add(measure_project(ctx, store, tokenizer, backend))


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    stock = next((r["tokens_per_second"] for r in rows if r["side"].startswith("stock")), None)
    headers = [
        "side",
        "attention run",
        "tokens/s",
        "x stock",
        "MFU (useful)",
        "MFU (dense)",
        "step s",
        "first step s",
        "data wait",
        "peak GB",
    ]
    return headers, [
        [
            r["side"],
            r["attention"],
            f"{r['tokens_per_second']:,.0f}",
            f"{r['tokens_per_second'] / stock:.2f}" if stock else "-",
            f"{r['mfu']:.1%}" if r["mfu"] is not None else "-",
            f"{r['mfu_dense']:.1%}" if r["mfu_dense"] is not None else "-",
            f"{r['step_seconds']:.3f}",
            f"{r['first_step_seconds']:.1f}",
            f"{r['data_wait']:.2%}",
            f"{r['peak_memory_gb']:.1f}" if r["peak_memory_gb"] is not None else "-",
        ]
        for r in rows
    ]
