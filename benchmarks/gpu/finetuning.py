"""Fine-tuning batches at ModernBERT-base's shape: packed vs length_grouped vs random, in examples per second.

A synthetic sequence-classification task (random ids, two labels, lengths log-normal around 200 tokens up to 512,
as abstracts and note sections are), one epoch at the paper's protocol (batch 16, lr 2e-5, bf16) on a Hugging Face
Trainer, as finetune.py trains:
  random          padded random batches (stock sdpa with a padding mask)
  length_grouped  transformers' group_by_length sampler, padded
  packed          random batches repacked inside the model (modeling.finetune.packing): one row per batch with
                  attention per example on varlen (or its fallback)
All three build the model with attn_implementation varlen: padded batches go to stock sdpa through the same name,
as they do in finetune.py. Examples per second = training examples / the Trainer's train_runtime.
"""

from __future__ import annotations

import random

import torch

from benchmarks.gpu.setting import PartContext, free_memory, model_config, random_documents, synthetic_tokenizer
from modeling.common.attention import VARLEN, known_attention
from modeling.finetune.packing import install_packing

SIDES = ("random", "length_grouped", "packed")


def examples(ctx: PartContext) -> list[dict]:
    setting = ctx.setting
    rng = random.Random(0)
    longest = setting.finetune_max_length
    lengths = [
        min(longest, max(8, round(rng.lognormvariate(5.1, 0.6) * longest / 512)))
        for _ in range(setting.finetune_examples)
    ]
    return [
        {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": rng.randrange(2)}
        for ids in random_documents(setting, lengths, seed=2)
    ]


def train(ctx: PartContext, side: str, data: list[dict]) -> dict:
    from transformers import DataCollatorWithPadding, ModernBertForSequenceClassification, Trainer, TrainingArguments

    setting = ctx.setting
    tokenizer = synthetic_tokenizer(setting)
    torch.manual_seed(42)
    config = model_config(setting, max_positions=setting.finetune_max_length, num_labels=2)
    model = ModernBertForSequenceClassification._from_config(
        config, attn_implementation=known_attention(VARLEN, setting.device)
    )
    if side == "packed":
        install_packing(model)
    args = TrainingArguments(
        output_dir=str(ctx.work / "finetuning" / side),
        num_train_epochs=1,
        per_device_train_batch_size=16,
        learning_rate=2e-5,
        weight_decay=0.01,
        bf16=setting.on_gpu,
        use_cpu=not setting.on_gpu,
        train_sampling_strategy="group_by_length" if side == "length_grouped" else "random",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        logging_steps=10_000,
        remove_unused_columns=False,
        seed=42,
        data_seed=42,
        disable_tqdm=True,
    )
    positions = {"padded": 0}

    def count(module, args, kwargs):  # positions the encoder computes (what packing saves)
        positions["padded"] += kwargs["input_ids"].numel()

    model.model.embeddings.register_forward_pre_hook(count, with_kwargs=True)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer))
    runtime = trainer.train().metrics["train_runtime"]
    real = sum(len(e["input_ids"]) for e in data)
    result = {
        "side": side,
        "attention": model.config._attn_implementation if side == "packed" else "sdpa (padding mask)",
        "examples": len(data),
        "train_seconds": runtime,
        "examples_per_second": len(data) / runtime,
        "padding": 1 - real / positions["padded"],
    }
    del trainer, model
    free_memory(setting)
    return result


def run(ctx: PartContext) -> None:
    data = examples(ctx)
    for side in SIDES:
        if ctx.enough_time(side, 12 if ctx.setting.on_gpu else 5):
            with ctx.guard(side):
                ctx.add(train(ctx, side, data))


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    random_rate = next((r["examples_per_second"] for r in rows if r["side"] == "random"), None)
    headers = ["batching", "attention", "examples", "examples/s", "x random", "padding"]
    return headers, [
        [
            r["side"],
            r["attention"],
            str(r["examples"]),
            f"{r['examples_per_second']:.1f}",
            f"{r['examples_per_second'] / random_rate:.2f}" if random_rate else "-",
            f"{r['padding']:.1%}",
        ]
        for r in rows
    ]
