"""Model cards written from what the runs recorded, never typed by hand.

Three kinds of folder, told apart by what lies beside them:
- a pretraining phase folder (`train_mlm.py` output): training_summary.json and recipe.json in its parent;
- a fine-tuned task model (`finetune.py`'s `seedN/model`): results.json in its parent;
- a LoRA adapter (`seedN/adapter`): adapter_config.json inside, results.json in its parent.

`build_card` returns the card (huggingface_hub ModelCard from the templates in model_card/) and the
files that belong with it in the repo; hub.py stages and uploads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from modeling.config import ConfigError
from modeling.results import aggregate_runs
from modeling.sources import SourceSpec
from modeling.tasks import task_from_dict

TEMPLATES = Path(__file__).resolve().parent.parent / "model_card"
PIPELINE_TAGS = {
    "single_label": "text-classification",
    "multi_label": "text-classification",
    "ner": "token-classification",
}
TASK_TYPE_NAMES = {
    "single_label": "single-label classification",
    "multi_label": "multi-label classification",
    "ner": "named-entity recognition",
}
# What a model repo is made of; anything else in a model folder (pickles above all) is left out, and said so.
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "adapter_config.json",
)
CLINICAL_TASK_LOADERS = ("phenotype", "deid", "brat")  # tasks whose texts are patient notes
EXAMPLE_TEXT = "The patient was admitted with chest pain and shortness of breath."


@dataclass
class Card:
    kind: str  # encoder | task_model | adapter
    card: ModelCard
    files: dict[str, Path | bytes]  # path in the repo -> local file, or generated content
    left_out: dict[str, str] = field(default_factory=dict)  # file in the model folder -> why it is not pushed
    notes: list[str] = field(default_factory=list)  # things the user should know, printed by the CLI
    clinical_sources: list[str] = field(default_factory=list)


def folder_kind(folder: Path) -> str:
    if not (folder / "config.json").exists() and not (folder / "adapter_config.json").exists():
        raise ConfigError(f"{folder}: not a model folder (no config.json or adapter_config.json)")
    if (folder / "adapter_config.json").exists():
        return "adapter"
    if (folder.parent / "results.json").exists():
        return "task_model"
    if (folder.parent / "training_summary.json").exists():
        return "encoder"
    raise ConfigError(
        f"{folder}: no training_summary.json beside it and no results.json above it; the card is written from "
        "what train_mlm.py or finetune.py recorded, so give a phase folder of a pretraining run or a "
        "fine-tuned seedN/model or seedN/adapter folder"
    )


def build_card(
    folder: str | Path,
    repo_id: str,
    *,
    results: list[str | Path] = (),
    revision: str = "main",
    base_model: str | None = None,
    license: str | None = None,
) -> Card:
    folder = Path(folder)
    kind = folder_kind(folder)
    if kind == "encoder":
        return encoder_card(folder, repo_id, results, revision, license)
    return task_card(folder, repo_id, kind, revision, base_model, license)


# ------------------------------------------------------------------------------------ encoder


def encoder_card(folder: Path, repo_id: str, results: list, revision: str, license: str | None) -> Card:
    run = folder.parent
    summary = json.loads((run / "training_summary.json").read_text())
    recipe = json.loads((run / "recipe.json").read_text())
    names = [p["phase"] for p in summary["phases"]]
    if folder.name not in names:
        raise ConfigError(f"{folder}: not one of the phases in {run / 'training_summary.json'} ({', '.join(names)})")
    phases = summary["phases"][: names.index(folder.name) + 1]
    final = len(phases) == len(recipe["phases"])
    config = json.loads((folder / "config.json").read_text())
    hub = recipe.get("hub") or {}
    license = license or hub.get("license")
    if not license:
        raise ConfigError(
            f"license: the card needs the license of the weights; set hub.license in the recipe or pass --license "
            f"(ModernBERT is apache-2.0; check what the data of {run} allows)"
        )

    sources = _sources_used(recipe, phases)
    clinical = [s for s in sources if s["domain"] == "clinical"]
    init = recipe["model"].get("init")
    base = init if init and _is_hub_id(init) else None
    own, baselines, others = _runs_of(folder, results)
    evaluation, eval_results, notes = _encoder_evaluation(folder, results, own, baselines, others)
    tags = [
        "modernbert",
        "fill-mask",
        "masked-language-modeling",
        *sorted({s["domain"] for s in sources} - {"other"}),
        *hub.get("tags", []),
    ]
    data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        license=license,
        language=hub.get("language") or ["en"],
        library_name="transformers",
        pipeline_tag="fill-mask",
        base_model=base,
        tags=list(dict.fromkeys(tags)),
        datasets=hub.get("datasets") or None,
        eval_results=eval_results or None,
    )
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    mask = tokenizer_config.get("mask_token", "[MASK]")
    mask = mask["content"] if isinstance(mask, dict) else mask
    tokens = sum(p["tokens"] for p in phases)
    start = (
        f"continued pretraining of [{init}](https://huggingface.co/{init})"
        if base
        else (
            f"continued pretraining of `{init}`"
            if init
            else "masked-language-model pretraining from random initialisation"
        )
    )
    summary_text = (
        f"A ModernBERT encoder ({_millions(_parameter_count(folder))} parameters) made by {start}, "
        f"{len(phases)} phase{'s' if len(phases) > 1 else ''} of masked language modelling on "
        f"{_count(tokens)} tokens from {', '.join('`' + s['name'] + '`' for s in sources)}"
        f" ({_share_text(sources, tokens)}). Run `{recipe['name']}`, trained with this project's `train_mlm.py`."
    )
    revision_note = (
        ""
        if final
        else (
            f"> This is the checkpoint after phase `{folder.name}` ({len(phases)} of {len(recipe['phases'])}); "
            f"the final model is the last phase's.\n"
        )
    )
    body = dict(
        repo_id=repo_id,
        model_name=repo_id.split("/")[-1],
        summary=summary_text,
        revision_note=revision_note,
        revision_arg="" if revision == "main" else f', revision="{revision}"',
        example_text=EXAMPLE_TEXT,
        mask_example=f"The patient was given {mask} for the infection.",
        hidden_size=config["hidden_size"],
        max_length=f"{recipe['max_seq_length']:,}",
        architecture=_architecture(config, recipe),
        recipe_text=_recipe_text(recipe),
        phase_table=_phase_table(phases, recipe),
        source_table=_source_table(sources, tokens),
        evaluation=evaluation,
        limitations=_encoder_limitations(sources, clinical, tokens, recipe, phases),
        citation=(TEMPLATES / "citation.bib").read_text().strip(),
    )
    card = ModelCard.from_template(data, template_path=str(TEMPLATES / "encoder.md"), **body)
    files, left_out = _model_files(folder)
    files.update({"training_summary.json": run / "training_summary.json", "recipe.json": run / "recipe.json"})
    if (run / summary.get("plot", "training_curves.png")).exists():
        files["training_curves.png"] = run / summary.get("plot", "training_curves.png")
    for task, aggregate in _eval_files(own):
        files.update({f"eval/{task}/{name}": path for name, path in aggregate.items()})
    files["README.md"] = str(card).encode()
    if not base and init:
        notes.append(f"base_model left out of the metadata: model.init `{init}` is a local folder, not a Hub id")
    return Card("encoder", card, files, left_out, notes, [s["name"] for s in clinical])


def _sources_used(recipe: dict, phases: list[dict]) -> list[dict]:
    tokens: dict[str, int] = {}
    for phase in phases:
        for name, n in phase["tokens_per_source"].items():
            tokens[name] = tokens.get(name, 0) + n
    out = []
    for name, n in tokens.items():
        spec = SourceSpec(**recipe["sources"][name])  # recipes from before `domain` get its default here too
        out.append({"name": name, "format": spec.format, "domain": spec.domain, "tokens": n})
    return out


def _architecture(config: dict, recipe: dict) -> str:
    rows = [
        ("layers", config["num_hidden_layers"]),
        ("hidden size", config["hidden_size"]),
        ("attention heads", config["num_attention_heads"]),
        ("MLP size", config["intermediate_size"]),
        ("vocabulary", f"{config['vocab_size']:,}"),
        ("max positions", f"{config['max_position_embeddings']:,}"),
        (
            "global attention every",
            f"{config.get('global_attn_every_n_layers', 3)} layers; local window "
            f"{config.get('local_attention', 128)} tokens",
        ),
        (
            "trained sequence length",
            f"{recipe['max_seq_length']:,} (documents packed, never attending across each other)",
        ),
    ]
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _recipe_text(recipe: dict) -> str:
    opt, batch = recipe["optimizer"], recipe["batch"]
    rows = batch.get("global_sequences") or (batch["global_tokens"] // recipe["max_seq_length"])
    return (
        f"Global batch {rows} rows of {recipe['max_seq_length']:,} tokens; AdamW (betas {tuple(opt['betas'])}, eps {opt['eps']:g}, "
        f"weight decay {opt['weight_decay']:g}, none on biases and norms, gradient clipping {opt['max_grad_norm']:g}); "
        f"precision {recipe['precision']}; seed {recipe['seed']}. Masking replaces 80% of the chosen tokens by "
        f"`[MASK]`, 10% by a random token and keeps 10%."
    )


def _phase_table(phases: list[dict], recipe: dict) -> str:
    lines = [
        "| phase | sources (tokens) | tokens | steps | masking (measured) | learning rate | held-out MLM loss | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for phase in phases:
        sources = ", ".join(f"`{n}` {_count(t)}" for n, t in phase["tokens_per_source"].items())
        m, lr, held = phase["masking"], phase["lr"], phase["held_out"]
        masking = f"{m['start']:.2f}" if m["start"] == m["end"] else f"{m['start']:.2f} -> {m['end']:.2f}"
        lr_text = f"peak {lr['peak']:.1e}; " + ", ".join(
            part
            for part in (
                f"warmup {lr['warmup_steps']} steps" if lr["warmup_steps"] else "",
                f"constant {lr['stable_steps']} steps" if lr["stable_steps"] else "",
                f"{lr['decay']} decay over {lr['decay_steps']} steps to {lr['min_lr_ratio']:g} x peak"
                if lr["decay_steps"]
                else "no decay",
            )
            if part
        )
        lines.append(
            f"| {phase['phase']} | {sources} | {_count(phase['tokens'])} | {phase['steps']:,} | {masking} "
            f"({m['measured']:.3f}) | {lr_text} | {held['loss_start']:.3f} -> {held['loss_end']:.3f} | "
            f"{_duration(phase['wall_time_s'])} |"
        )
    lines.append("")
    lines.append(
        "Row fill (real tokens / row capacity): "
        + ", ".join(f"{p['phase']} {p['row_fill']:.1%}" for p in phases)
        + ". Held-out loss: the same held-out documents, masked at the phase's final rate, before and after the phase."
    )
    return "\n".join(lines)


def _source_table(sources: list[dict], tokens: int) -> str:
    lines = ["| source | format | domain | tokens | share |", "|---|---|---|---|---|"]
    lines += [
        f"| `{s['name']}` | {s['format']} | {s['domain']} | {s['tokens']:,} | {s['tokens'] / max(tokens, 1):.1%} |"
        for s in sources
    ]
    return "\n".join(lines)


def _encoder_limitations(sources, clinical, tokens, recipe, phases) -> str:
    items = []
    clinical_tokens = sum(s["tokens"] for s in clinical)
    if clinical:
        shares = ", ".join(f"`{s['name']}` {s['tokens'] / clinical_tokens:.1%}" for s in clinical)
        items.append(
            f"**Clinical text.** {_count(clinical_tokens)} of the {_count(tokens)} tokens ({clinical_tokens / tokens:.1%}) are "
            f"clinical notes. Of these, by source: {shares}. The model knows the writing habits of these "
            "institutions and note types best; notes from elsewhere may be read less well."
        )
        items.append(
            "**Protected health information.** Clinical notes can contain PHI, even after de-identification, and "
            "masked language models can memorise rare strings of their training text. Check that the data use "
            "agreement of every clinical source allows sharing a model trained on it before making it public."
        )
    else:
        items.append(
            "**No clinical notes.** No source of this run is marked clinical (`domain: clinical`); the model "
            "has seen no patient records, so its knowledge of clinical language comes from the sources above."
        )
    items.append(f"**Languages.** Trained on text in: {', '.join(recipe.get('hub', {}).get('language') or ['en'])}.")
    items.append(
        f"**Context.** Trained on rows of {recipe['max_seq_length']:,} tokens; longer inputs are beyond what it was trained on."
    )
    items.append(
        "**Scale.** " + f"{_count(tokens)} tokens in {sum(p['steps'] for p in phases):,} steps. Held-out MLM loss "
        f"ended at {phases[-1]['held_out']['loss_end']:.3f}. The evaluation above is the only evidence of downstream quality."
    )
    return "\n".join(f"- {item}" for item in items)


# ------------------------------------------------------------------------------------ evaluation


def _same_model(recorded: str, folder: Path) -> bool:
    return Path(recorded).resolve() == folder.resolve() if Path(recorded).exists() else recorded == str(folder)


def _runs_of(folder: Path, results: list) -> tuple[dict, dict, int]:
    """results.json records under `results` fine-tuned from `folder`: {(task, peft): runs} for the model
    itself and {task: runs} for random-init baselines of the same architecture; and how many were others'."""
    own, baselines, others = {}, {}, 0
    for root in results:
        root = Path(root)
        if not root.exists():
            raise ConfigError(f"--results {root}: no such folder")
        files = sorted(root.rglob("results.json"))
        if not files:
            raise ConfigError(f"--results {root}: no results.json below it (finetune.py writes one per seed)")
        for path in files:
            record = json.loads(path.read_text())
            if not _same_model(record["model"], folder):
                others += 1
            elif record["random_init"]:
                baselines.setdefault(record["task"], []).append(record)
            else:
                own.setdefault((record["task"], bool(record.get("peft"))), []).append(record)
    return own, baselines, others


def _encoder_evaluation(
    folder: Path, results: list, own: dict, baselines: dict, others: int
) -> tuple[str, list, list[str]]:
    if not results:
        return (
            "Not evaluated yet. Fine-tune it with `finetune.py` and publish again with `--results` to fill this section.",
            [],
            [],
        )
    notes = [f"{others} results.json under --results are of other models and were left out"] if others else []
    if not own:
        raise ConfigError(
            f"--results {', '.join(map(str, results))}: none of the results.json were fine-tuned from {folder}"
        )
    lines = [
        "Fine-tuned per task with `finetune.py` (model selected on validation after every epoch, test scored once); "
        "mean +- std (sample) over seeds on the test split. The random-init column, where present, is the same "
        "architecture trained from scratch with the same budget.",
        "",
        "| task | type | metric | this model | seeds | random init |",
        "|---|---|---|---|---|---|",
    ]
    eval_results = []
    for (task, peft), runs in sorted(own.items()):
        agg = aggregate_runs(runs, runs[0]["selection_metric"])
        base = aggregate_runs(baselines[task], runs[0]["selection_metric"]) if task in baselines and not peft else None
        label = f"{task} (LoRA)" if peft else task
        for name, stats in agg["test"].items():
            base_text = (
                f"{base['test'][name]['mean']:.4f} +- {base['test'][name]['std']:.4f}"
                if base and name in base["test"]
                else ""
            )
            metric = f"**{name}**" if name == agg["selection_metric"] else name
            lines.append(
                f"| {label} | {TASK_TYPE_NAMES[agg['task_type']]} | {metric} | {stats['mean']:.4f} +- {stats['std']:.4f} "
                f"| {stats['n']} | {base_text} |"
            )
            if not peft and name == agg["selection_metric"]:
                eval_results.append(_eval_result(agg, name, stats))
    lines += [
        "",
        "Bold: the metric that selected the epoch. Definitions: "
        + "; ".join(
            f"`{k}` {v}"
            for k, v in sorted(
                {k: v for runs in own.values() for k, v in runs[0].get("metric_descriptions", {}).items()}.items()
            )
        )
        + ".",
        "",
        "Per-task details (every seed, learning rate, best epochs, curves) are in `eval/`.",
    ]
    return "\n".join(lines), eval_results, notes


def _eval_result(agg: dict, name: str, stats: dict) -> EvalResult:
    return EvalResult(
        task_type=PIPELINE_TAGS[agg["task_type"]],
        task_name=TASK_TYPE_NAMES[agg["task_type"]],
        dataset_type=agg["task"],
        dataset_name=agg["task"],
        dataset_split="test",
        metric_type=name,
        metric_name=f"{name} (mean of {stats['n']} seeds)",
        metric_value=round(stats["mean"], 4),
    )


def _eval_files(own: dict) -> list[tuple[str, dict]]:
    """aggregate.json / aggregate.md / curves.png of each task folder holding this model's runs."""
    out = []
    for (task, peft), runs in sorted(own.items()):
        for root in sorted({Path(r["config"]["output_dir"]) for r in runs}):
            files = {
                name: root / name for name in ("aggregate.json", "aggregate.md", "curves.png") if (root / name).exists()
            }
            if files:
                out.append((f"{task}-lora" if peft else task, files))
    return out


# ------------------------------------------------------------------------------------ fine-tuned models


def task_card(
    folder: Path, repo_id: str, kind: str, revision: str, base_model: str | None, license: str | None
) -> Card:
    record = json.loads((folder.parent / "results.json").read_text())
    config = record["config"]
    runs = [json.loads(p.read_text()) for p in sorted(folder.parent.parent.glob("*/results.json"))]
    same = lambda r: (r["task"], r["model"], r["random_init"], bool(r.get("peft")), r["lr"])  # noqa: E731
    runs = [r for r in runs if same(r) == same(record)] or [record]
    agg = aggregate_runs(runs, record["selection_metric"])
    notes = []
    encoder = record["model"]
    base = base_model or (encoder if _is_hub_id(encoder) else None)
    if kind == "adapter" and not base:
        raise ConfigError(
            f"--base_model: the adapter in {folder} was trained on the local folder {encoder}; give the Hub id "
            "that folder is published as, so the adapter's repo can name its base model"
        )
    if not base:
        notes.append(
            f"base_model left out of the metadata: the encoder {encoder} is a local folder; pass --base_model ORG/NAME "
            "if it is published"
        )
    license = license or _run_license(encoder)
    if not license:
        raise ConfigError(
            "license: the card needs the license of the weights; pass --license (the base model's, or what "
            "your fine-tuning data allows)"
        )
    task_type, labels = record["task_type"], config["labels"]
    clinical = config["data"].get("loader") in CLINICAL_TASK_LOADERS
    pipeline_tag = PIPELINE_TAGS[task_type]
    tags = ["modernbert", pipeline_tag, record["task"], *(["clinical"] if clinical else [])]
    eval_results = [_eval_result(agg, record["selection_metric"], agg["test"][record["selection_metric"]])]
    data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        license=license,
        language=["en"],
        library_name="peft" if kind == "adapter" else "transformers",
        pipeline_tag=pipeline_tag,
        base_model=base,
        tags=tags + (["lora", "peft"] if kind == "adapter" else []),
        eval_results=eval_results,
    )
    auto_class = "AutoModelForTokenClassification" if task_type == "ner" else "AutoModelForSequenceClassification"
    if task_type == "multi_label":
        decode = "labels = [model.config.id2label[i] for i, p in enumerate(logits.sigmoid()[0]) if p > 0.5]"
    elif task_type == "ner":
        decode = "tags = [model.config.id2label[i] for i in logits.argmax(-1)[0].tolist()]"
    else:
        decode = "label = model.config.id2label[logits.argmax(-1).item()]"
    decode = decode.replace("model.config", "base.config") if kind == "adapter" else decode
    seeds = agg["seeds"]
    own_test = record["metrics"]["test"][record["selection_metric"]]
    sel = agg["test"][record["selection_metric"]]
    what = "A LoRA adapter" if kind == "adapter" else "A model"
    summary = (
        f"{what} for {TASK_TYPE_NAMES[task_type]} on **{record['task']}** ({len(labels)} labels), fine-tuned from "
        f"{f'[{base}](https://huggingface.co/{base})' if base else f'`{encoder}`'} with `finetune.py`. This checkpoint "
        f"is seed {record['seed']} (best epoch {record['best_epoch']:g}): test {record['selection_metric']} "
        f"{own_test:.4f}; over seeds {seeds}: {sel['mean']:.4f} +- {sel['std']:.4f}."
    )
    body = dict(
        repo_id=repo_id,
        model_name=repo_id.split("/")[-1],
        summary=summary,
        pipeline_tag=pipeline_tag,
        revision_arg="" if revision == "main" else f', revision="{revision}"',
        example_text=EXAMPLE_TEXT,
        pipeline_options=', top_k=None, function_to_apply="sigmoid"'
        if task_type == "multi_label"
        else (', aggregation_strategy="first"' if task_type == "ner" else ""),
        auto_class=auto_class,
        decode_line=decode,
        base_model=base,
        base_options=_base_options(record, folder),
        usage_note=_usage_note(task_type, config),
        labels_text=_labels_text(record, folder),
        training_table=_training_table(record, agg),
        adapter_table=_adapter_table(folder) if kind == "adapter" else "",
        evaluation=_task_evaluation(agg, record),
        limitations=_task_limitations(record, clinical),
        citation=(TEMPLATES / "citation.bib").read_text().strip(),
    )
    card = ModelCard.from_template(
        data, template_path=str(TEMPLATES / ("adapter.md" if kind == "adapter" else "task_model.md")), **body
    )
    files, left_out = _model_files(folder)
    if kind == "adapter" and base:
        adapter_config = json.loads((folder / "adapter_config.json").read_text())
        adapter_config["base_model_name_or_path"] = base  # the local training path means nothing to downloaders
        files["adapter_config.json"] = (json.dumps(adapter_config, indent=2, sort_keys=True) + "\n").encode()
    files["results.json"] = folder.parent / "results.json"
    root = folder.parent.parent
    files.update({f"eval/{name}": root / name for name in ("aggregate.json", "aggregate.md") if (root / name).exists()})
    if (root / "curves.png").exists():
        files["curves.png"] = root / "curves.png"
    files["README.md"] = str(card).encode()
    return Card(kind, card, files, left_out, notes)


def _base_options(record: dict, folder: Path) -> str:
    """What the adapter's base model must be loaded with to match training: label names, pooling, problem type."""
    options = f", id2label={dict(enumerate(_id2label(folder, record)))}"
    if record["config"].get("classifier_pooling"):
        options += f', classifier_pooling="{record["config"]["classifier_pooling"]}"'
    if record["task_type"] == "multi_label":
        options += ', problem_type="multi_label_classification"'
    return options


def _id2label(folder: Path, record: dict) -> list[str]:
    config_file = folder / "config.json"  # an adapter folder has none: the tags follow from the task config
    if config_file.exists():
        id2label = json.loads(config_file.read_text()).get("id2label", {})
        return [id2label[k] for k in sorted(id2label, key=int)]
    return task_from_dict(record["config"]).tag_names


def _labels_text(record: dict, folder: Path) -> str:
    counts = record.get("label_counts", {}).get("train", {})
    names = record["config"]["labels"]
    text = "| label | training examples |\n|---|---|\n" + "\n".join(f"| {n} | {counts.get(n, '')} |" for n in names)
    if record["task_type"] == "ner":
        text += (
            f"\n\nTags are BIO over these entity types ({len(_id2label(folder, record))} tags); counts are entities."
        )
    return text


def _training_table(record: dict, agg: dict) -> str:
    spec = record["config"]["training"]
    rows = [
        (
            "examples (train / validation / test)",
            " / ".join(f"{record['examples'].get(s, 0):,}" for s in ("train", "validation", "test")),
        ),
        ("windows of", f"{record['max_length']} tokens, {record['config']['window_stride']} shared between windows"),
        (
            "learning rate",
            f"{record['lr']:g}"
            + (f" (chosen on validation from {sorted(map(float, agg['by_lr']))})" if agg.get("by_lr") else ""),
        ),
        ("epochs, batch, weight decay", f"{spec['epochs']}, {spec['batch_size']}, {spec['weight_decay']}"),
        ("schedule", f"{spec['lr_scheduler']}, warmup {spec['warmup_ratio']}"),
        (
            "model selection",
            f"best epoch on validation `{record['selection_metric']}` (this seed: epoch {record['best_epoch']:g})",
        ),
        ("seeds", ", ".join(map(str, agg["seeds"]))),
        ("data", f"loader `{record['config']['data'].get('loader')}`; split {_split_text(record['config'])}"),
    ]
    if record["skipped_or_repaired"]:
        rows.append(("skipped or repaired", ", ".join(f"{k}: {v}" for k, v in record["skipped_or_repaired"].items())))
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _split_text(config: dict) -> str:
    split = config.get("split") or {}
    if split.get("validation") is None and split.get("test") is None:
        return "official"
    return f"seeded (seed {split.get('seed')}), validation {split.get('validation')}, test {split.get('test')}"


def _adapter_table(folder: Path) -> str:
    spec = json.loads((folder / "adapter_config.json").read_text())
    rows = [
        ("type", spec.get("peft_type")),
        ("rank r", spec.get("r")),
        ("alpha", spec.get("lora_alpha")),
        ("dropout", spec.get("lora_dropout")),
        ("target modules", ", ".join(sorted(spec.get("target_modules") or []))),
        ("trained in full", ", ".join(spec.get("modules_to_save") or [])),
    ]
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _task_evaluation(agg: dict, record: dict) -> str:
    lines = [
        f"Mean +- std (sample) over seeds {agg['seeds']}; test scored once per seed with the epoch chosen on validation. "
        "This checkpoint's own scores are in the last column.",
        "",
        "| metric | validation | test | test min | test max | this checkpoint (test) |",
        "|---|---|---|---|---|---|",
    ]
    for name, stats in agg["test"].items():
        val = agg["validation"].get(name)
        val_text = f"{val['mean']:.4f} +- {val['std']:.4f}" if val else ""
        lines.append(
            f"| {name} | {val_text} | {stats['mean']:.4f} +- {stats['std']:.4f} "
            f"| {stats['min']:.4f} | {stats['max']:.4f} | {record['metrics']['test'].get(name, float('nan')):.4f} |"
        )
    descriptions = record.get("metric_descriptions", {})
    if descriptions:
        lines += ["", "; ".join(f"`{k}`: {v}" for k, v in descriptions.items()) + "."]
    return "\n".join(lines)


def _usage_note(task_type: str, config: dict) -> str:
    note = (
        f"Documents longer than one window ({config.get('max_length') or 'the model maximum'} tokens) were scored by "
        f"splitting them into overlapping windows and taking the {config.get('window_aggregation', 'mean')} of the window logits."
    )
    if task_type == "multi_label":
        note = "Each label is independent: a sigmoid over its logit, positive above 0.5. " + note
    if task_type == "ner":
        note = (
            "Words are tagged on their first sub-token; long documents were tagged window by window, each word from the "
            "window where it has the most context."
        )
    return note


def _task_limitations(record: dict, clinical: bool) -> str:
    items = [
        f"**Scope.** Trained and evaluated on {record['task']} only ({record['examples'].get('train', 0):,} training "
        "examples); expect lower scores on text from other sources or annotation guidelines."
    ]
    if clinical:
        items.append(
            "**Protected health information.** The training examples are clinical notes, which can contain PHI even "
            "after de-identification, and fine-tuned models can memorise rare strings. Check that the data use "
            "agreement allows sharing a model trained on them before making it public."
        )
    items.append(
        "**Not a medical device.** Predictions support research; they are not validated for clinical decisions."
    )
    return "\n".join(f"- {item}" for item in items)


def _run_license(encoder: str) -> str | None:
    """The license of the pretraining run that produced a local encoder folder, if it recorded one."""
    recipe = Path(encoder).parent / "recipe.json"
    if recipe.exists():
        return (json.loads(recipe.read_text()).get("hub") or {}).get("license")
    return None


# ------------------------------------------------------------------------------------ helpers


def _model_files(folder: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """The files of a model repo in `folder`; everything else is listed with the reason it stays behind."""
    keep, left_out = {}, {}
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            left_out[path.name + "/"] = "folder: checkpoints and other run state stay local"
        elif path.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"):
            left_out[path.name] = "pickle: only safetensors are published"
        elif any(path.match(pattern) for pattern in MODEL_FILES):
            keep[path.name] = path
        else:
            left_out[path.name] = "run state, not part of a model"
    if not any(name.endswith(".safetensors") for name in keep):
        raise ConfigError(f"{folder}: no safetensors weights to publish")
    return keep, left_out


def _parameter_count(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                shape = f.get_slice(key).get_shape()
                n = 1
                for d in shape:
                    n *= d
                total += n
    return total


def _is_hub_id(name: str) -> bool:
    return not Path(name).exists() and name.count("/") == 1 and not name.startswith((".", "/"))


def _count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _share_text(sources: list[dict], tokens: int) -> str:
    by_domain: dict[str, int] = {}
    for s in sources:
        by_domain[s["domain"]] = by_domain.get(s["domain"], 0) + s["tokens"]
    return ", ".join(
        f"{domain} {n / max(tokens, 1):.1%}" for domain, n in sorted(by_domain.items(), key=lambda kv: -kv[1])
    )
