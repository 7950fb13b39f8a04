"""Model cards written from what the runs recorded, never typed by hand.

Three kinds of folder, told apart by what lies beside them:
- a pretraining phase folder (`train_mlm.py` output): training_summary.json and recipe.json in its parent;
- a fine-tuned task model (`finetune.py`'s `seedN/model`): results.json in its parent;
- a LoRA adapter (`seedN/adapter`): adapter_config.json inside, results.json in its parent.

Python gathers the facts into a typed context (EncoderCard, TaskCard); the Jinja templates in model_card/
write every word of the card from it. `build_card` returns the card (a huggingface_hub ModelCard) and the
files that belong with it in the repo; modeling.publish.hub stages and uploads them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from modeling.common import run_files
from modeling.common.engines import weights_problem
from modeling.common.errors import ConfigError, DataError
from modeling.data.contamination import ContaminationReport
from modeling.finetune.config import task_from_dict
from modeling.finetune.results import (
    MetricStats,
    RunRecord,
    TaskAggregate,
    aggregate_runs,
    markdown_summary,
    mean_std,
    metric_table,
)
from modeling.finetune.run_folder import TaskResults, TaskRun
from modeling.pretrain.contamination import REPORT_NAME as CONTAMINATION_REPORT
from modeling.pretrain.recipe import COMPOSER_SUFFIXES, Recipe, recipe_from_dict
from modeling.pretrain.run_folder import PretrainingRun
from modeling.pretrain.summary import (
    PhaseSummary,
    RevisionRecord,
    SourceLosses,
    TrainingSummary,
    source_losses,
)

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "model_card"
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
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
CLINICAL_TASK_LOADERS = ("phenotype", "deid", "brat")  # tasks whose texts are patient notes


@dataclass
class Card:
    kind: str  # encoder | task_model | adapter | revision
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
    if TaskRun(folder.parent).results_json.exists():
        return "task_model"
    if PretrainingRun(folder.parent).summary_json.exists():
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
    for weights in sorted(folder.glob("*.safetensors")):  # nothing damaged reaches a repo others load
        problem = weights_problem(weights)
        if problem:
            raise DataError(f"{folder}: {problem}; publish from an intact copy of these weights")
    if (folder / RevisionRecord.FILE).exists():  # an intermediate checkpoint of a run (hub.push_every)
        return revision_card(folder, repo_id, license)
    kind = folder_kind(folder)
    if kind == "encoder":
        return encoder_card(folder, repo_id, results, revision, license)
    return task_card(folder, repo_id, kind, revision, base_model, license)


# ------------------------------------------------------------------------------------ rendering


def _count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,  # markdown, not HTML
    )
    env.filters.update(
        count=_count,  # 1.58M
        millions=lambda n: f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k",
        duration=_duration,  # 5.6 min
        thousands=lambda n: f"{n:,}",
        pct=lambda x: f"{x:.1%}",
        g=lambda x: f"{x:g}",
        fixed=lambda x, digits: f"{x:.{digits}f}",
        sci=lambda x: f"{x:.1e}",
        code=lambda text: f"`{text}`",
        tuple=tuple,
        id2label=lambda names: dict(enumerate(names)),
        mean_std=mean_std,
    )
    return env


def render(template: str, data: ModelCardData, context) -> ModelCard:
    """The card: `template` (a file in model_card/) filled from the card metadata and a typed context."""
    names = [f.name for f in dataclasses.fields(context)]
    names += [name for name, value in vars(type(context)).items() if isinstance(value, property)]
    values = {name: getattr(context, name) for name in names}
    content = _environment().get_template(template).render(card_data=data.to_yaml(), **values)
    return ModelCard(content)


# ------------------------------------------------------------------------------------ encoder


@dataclass
class SourceUse:
    name: str
    format: str
    domain: str
    tokens: int


@dataclass
class EvaluationRow:
    label: str  # task, or "task (LoRA)"
    task_type: str
    metric: str
    selected: bool  # the metric that picked the epoch
    stats: MetricStats
    baseline: MetricStats | None  # random init of the same architecture at the same budget


@dataclass
class EncoderEvaluation:
    rows: list[EvaluationRow]
    definitions: dict[str, str]


@dataclass
class EncoderCard:
    """Everything the encoder card says, for model_card/encoder.md."""

    repo_id: str
    model_name: str
    revision: str
    parameters: int
    init: str | None  # model.init of the recipe
    init_is_hub_id: bool
    recipe: Recipe
    config: dict  # the model's config.json
    mask_token: str
    phases: list[PhaseSummary]  # up to this folder's phase
    final: bool  # the recipe's last phase
    sources: list[SourceUse]
    tokens: int
    clinical_tokens: int
    domain_shares: list[tuple[str, float]]  # largest first
    evaluation: EncoderEvaluation | None
    task_type_names: dict[str, str]
    contamination: ContaminationReport | None  # the store's contamination check, where one was run
    source_losses: list[SourceLosses]  # each source's own held-out loss across the phases (empty in older runs)

    @property
    def clinical(self) -> list[SourceUse]:
        return [s for s in self.sources if s.domain == "clinical"]


def encoder_card(folder: Path, repo_id: str, results: list, revision: str, license: str | None) -> Card:
    run = PretrainingRun(folder.parent)
    summary = TrainingSummary.load(run.summary_json)
    recipe = recipe_from_dict(run_files.read_json(run.recipe_json), validate=False)
    names = [p.phase for p in summary.phases]
    if folder.name not in names:
        raise ConfigError(f"{folder}: not one of the phases in {run.summary_json} ({', '.join(names)})")
    phases = summary.phases[: names.index(folder.name) + 1]
    license = license or recipe.hub.license
    if not license:
        raise ConfigError(
            f"license: the card needs the license of the weights; set hub.license in the recipe or pass --license "
            f"(ModernBERT is apache-2.0; check what the data of {run.folder} allows)"
        )
    sources = _sources_used(recipe, phases)
    init = recipe.model.init
    base = init if init and _is_hub_id(init) else None
    own, baselines, others = _runs_of(folder, results)
    evaluation, eval_results, notes = _encoder_evaluation(folder, results, own, baselines, others)
    tags = [
        "modernbert",
        "fill-mask",
        "masked-language-modeling",
        *sorted({s.domain for s in sources} - {"other"}),
        *recipe.hub.tags,
    ]
    data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        license=license,
        language=recipe.hub.language or ["en"],
        library_name="transformers",
        pipeline_tag="fill-mask",
        base_model=base,
        tags=list(dict.fromkeys(tags)),
        datasets=recipe.hub.datasets or None,
        eval_results=eval_results or None,
    )
    tokens = sum(p.tokens for p in phases)
    by_domain: dict[str, int] = {}
    for s in sources:
        by_domain[s.domain] = by_domain.get(s.domain, 0) + s.tokens
    context = EncoderCard(
        repo_id=repo_id,
        model_name=repo_id.split("/")[-1],
        revision=revision,
        parameters=_parameter_count(folder),
        init=public_path(init),
        init_is_hub_id=base is not None,
        recipe=recipe,
        config=run_files.read_json(folder / "config.json"),
        mask_token=_mask_token(folder),
        phases=phases,
        final=len(phases) == len(recipe.phases),
        sources=sources,
        tokens=tokens,
        clinical_tokens=sum(s.tokens for s in sources if s.domain == "clinical"),
        domain_shares=[(d, n / max(tokens, 1)) for d, n in sorted(by_domain.items(), key=lambda kv: -kv[1])],
        evaluation=evaluation,
        task_type_names=TASK_TYPE_NAMES,
        contamination=_contamination(recipe),
        source_losses=source_losses(phases),
    )
    card = render("encoder.md", data, context)
    files, left_out = _model_files(folder)
    files.update({path.name: public_json(path) for path in (run.summary_json, run.recipe_json)})
    if context.contamination is not None:
        files[CONTAMINATION_REPORT] = public_json(Path(recipe.store_dir()) / CONTAMINATION_REPORT)
    if (run.folder / summary.plot).exists():
        files["training_curves.png"] = run.folder / summary.plot
    for task, aggregate in _eval_files(own):
        files.update({f"eval/{task}/{name}": _public_eval_file(path) for name, path in aggregate.items()})
    files["README.md"] = str(card).encode()
    if not base and init:
        notes.append(f"base_model left out of the metadata: model.init `{init}` is a local path, not a Hub id")
    return Card("encoder", card, files, left_out, notes, [s.name for s in context.clinical])


# ------------------------------------------------------------------------------------ revision


@dataclass
class RevisionCard:
    """An intermediate checkpoint's card, for model_card/revision.md."""

    repo_id: str
    model_name: str
    recipe_name: str
    record: RevisionRecord


def revision_card(folder: Path, repo_id: str, license: str | None = None) -> Card:
    """The card and files of a revision folder (PHASE/revisions/step-N of a run, hub.push_every)."""
    record = RevisionRecord.load(folder / RevisionRecord.FILE)
    run = PretrainingRun(folder.parent.parent.parent)
    recipe = recipe_from_dict(run_files.read_json(run.recipe_json), validate=False)
    license = license or recipe.hub.license
    if not license:
        raise ConfigError(f"license: the card of {folder} needs the license of the weights (hub.license)")
    data = ModelCardData(
        license=license,
        language=recipe.hub.language or ["en"],
        library_name="transformers",
        pipeline_tag="fill-mask",
        tags=list(dict.fromkeys(["modernbert", "fill-mask", "intermediate-checkpoint", *recipe.hub.tags])),
    )
    context = RevisionCard(repo_id, repo_id.split("/")[-1], recipe.name, record)
    card = render("revision.md", data, context)
    files, left_out = _model_files(folder)
    files[RevisionRecord.FILE] = folder / RevisionRecord.FILE
    left_out.pop(RevisionRecord.FILE, None)
    files["README.md"] = str(card).encode()
    clinical = [name for name, spec in recipe.sources.items() if spec.domain == "clinical"]
    return Card("revision", card, files, left_out, [], clinical)


def _contamination(recipe: Recipe) -> ContaminationReport | None:
    """The report of `train_mlm.py contamination` on the run's store, where the store is on this machine."""
    path = Path(recipe.store_dir()) / CONTAMINATION_REPORT
    return ContaminationReport.load(path) if path.exists() else None


def _mask_token(folder: Path) -> str:
    mask = run_files.read_json(folder / "tokenizer_config.json").get("mask_token", "[MASK]")
    return mask["content"] if isinstance(mask, dict) else mask


def _sources_used(recipe: Recipe, phases: list[PhaseSummary]) -> list[SourceUse]:
    tokens: dict[str, int] = {}
    for phase in phases:
        for name, n in phase.tokens_per_source.items():
            tokens[name] = tokens.get(name, 0) + n
    return [
        SourceUse(
            name, recipe.sources[name].format, recipe.sources[name].domain, n
        )  # domain: old recipes get its default
        for name, n in tokens.items()
    ]


def _same_model(recorded: str, folder: Path) -> bool:
    return Path(recorded).resolve() == folder.resolve() if Path(recorded).exists() else recorded == str(folder)


def _runs_of(folder: Path, results: list) -> tuple[dict, dict, int]:
    """results.json records under `results` fine-tuned from `folder`: {(task, peft): runs} for the model
    itself and {task: runs} for random-init baselines of the same architecture; and how many were others'."""
    own: dict[tuple[str, bool], list[RunRecord]] = {}
    baselines: dict[str, list[RunRecord]] = {}
    others = 0
    for root in results:
        root = Path(root)
        if not root.exists():
            raise ConfigError(f"--results {root}: no such folder")
        files = TaskResults(root).results_files()
        if not files:
            raise ConfigError(f"--results {root}: no results.json below it (finetune.py writes one per seed)")
        for path in files:
            record = RunRecord.load(path)
            if not _same_model(record.model, folder):
                others += 1
            elif record.random_init:
                baselines.setdefault(record.task, []).append(record)
            else:
                own.setdefault((record.task, bool(record.peft)), []).append(record)
    return own, baselines, others


def _encoder_evaluation(
    folder: Path, results: list, own: dict, baselines: dict, others: int
) -> tuple[EncoderEvaluation | None, list, list[str]]:
    if not results:
        return None, [], []
    notes = [f"{others} results.json under --results are of other models and were left out"] if others else []
    if not own:
        raise ConfigError(
            f"--results {', '.join(map(str, results))}: none of the results.json were fine-tuned from {folder}"
        )
    rows, eval_results = [], []
    for (task, peft), runs in sorted(own.items()):
        aggregate = aggregate_runs(runs, runs[0].selection_metric)
        base = aggregate_runs(baselines[task], runs[0].selection_metric) if task in baselines and not peft else None
        for name, stats in aggregate.test.items():
            selected = name == aggregate.selection_metric
            rows.append(
                EvaluationRow(
                    label=f"{task} (LoRA)" if peft else task,
                    task_type=aggregate.task_type,
                    metric=name,
                    selected=selected,
                    stats=stats,
                    baseline=base.test.get(name) if base else None,
                )
            )
            if not peft and selected:
                eval_results.append(_eval_result(aggregate, name, stats))
    definitions = {k: v for runs in own.values() for k, v in runs[0].metric_descriptions.items()}
    return EncoderEvaluation(rows, dict(sorted(definitions.items()))), eval_results, notes


def _eval_result(aggregate: TaskAggregate, name: str, stats: MetricStats) -> EvalResult:
    return EvalResult(
        task_type=PIPELINE_TAGS[aggregate.task_type],
        task_name=TASK_TYPE_NAMES[aggregate.task_type],
        dataset_type=aggregate.task,
        dataset_name=aggregate.task,
        dataset_split="test",
        metric_type=name,
        metric_name=f"{name} (mean of {stats.n} seeds)",
        metric_value=round(stats.mean, 4),
    )


def _eval_files(own: dict) -> list[tuple[str, dict]]:
    """aggregate.json / aggregate.md / curves.png of each task folder holding this model's runs."""
    out = []
    for (task, peft), runs in sorted(own.items()):
        for root in sorted({Path(r.config["output_dir"]) for r in runs}):
            results = TaskResults(root)
            paths = (results.aggregate_json, results.aggregate_md, results.plot_png)
            files = {path.name: path for path in paths if path.exists()}
            if files:
                out.append((f"{task}-lora" if peft else task, files))
    return out


# ------------------------------------------------------------------------------------ fine-tuned models


@dataclass
class TaskCard:
    """Everything a fine-tuned model's (or adapter's) card says, for model_card/task_model.md and adapter.md."""

    repo_id: str
    model_name: str
    revision: str
    kind: str  # task_model | adapter
    record: RunRecord  # this checkpoint's run
    aggregate: TaskAggregate  # its seeds
    encoder: str  # what it was fine-tuned from, as recorded
    base_model: str | None  # the encoder's Hub id, when known
    pipeline_tag: str
    task_type_name: str
    labels: list[str]
    tag_names: list[str]  # NER: the BIO tags (config.json's id2label)
    label_counts: dict[str, int]  # training examples (NER: entities) per label
    clinical: bool  # trained on patient notes
    adapter: dict | None  # adapter_config.json
    evaluation_table: str  # the same table as aggregate.md, with this checkpoint's column

    @property
    def config(self) -> dict:
        return self.record.config

    @property
    def training(self) -> dict:
        return self.record.config["training"]

    @property
    def selected_test(self) -> MetricStats:
        return self.aggregate.test[self.record.selection_metric]


def task_card(
    folder: Path, repo_id: str, kind: str, revision: str, base_model: str | None, license: str | None
) -> Card:
    run, results = TaskRun(folder.parent), TaskResults(folder.parent.parent)
    record = RunRecord.load(run.results_json)
    runs = [
        RunRecord.load(TaskRun(p).results_json)
        for p in sorted(results.folder.iterdir())
        if TaskRun(p).results_json.exists()
    ]

    def same(r: RunRecord):
        return r.task, r.model, r.random_init, bool(r.peft), r.lr

    runs = [r for r in runs if same(r) == same(record)] or [record]
    aggregate = aggregate_runs(runs, record.selection_metric)
    notes = []
    encoder = record.model
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
    clinical = record.config["data"].get("loader") in CLINICAL_TASK_LOADERS
    pipeline_tag = PIPELINE_TAGS[record.task_type]
    tags = ["modernbert", pipeline_tag, record.task, *(["clinical"] if clinical else [])]
    data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        license=license,
        language=["en"],
        library_name="peft" if kind == "adapter" else "transformers",
        pipeline_tag=pipeline_tag,
        base_model=base,
        tags=tags + (["lora", "peft"] if kind == "adapter" else []),
        eval_results=[_eval_result(aggregate, record.selection_metric, aggregate.test[record.selection_metric])],
    )
    adapter = run_files.read_json(folder / "adapter_config.json") if kind == "adapter" else None
    context = TaskCard(
        repo_id=repo_id,
        model_name=repo_id.split("/")[-1],
        revision=revision,
        kind=kind,
        record=record,
        aggregate=aggregate,
        encoder=public_path(encoder),
        base_model=base,
        pipeline_tag=pipeline_tag,
        task_type_name=TASK_TYPE_NAMES[record.task_type],
        labels=record.config["labels"],
        tag_names=_id2label(folder, record),
        label_counts=record.label_counts.get("train", {}),
        clinical=clinical,
        adapter=adapter,
        evaluation_table=metric_table(aggregate, checkpoint=record),
    )
    card = render("adapter.md" if kind == "adapter" else "task_model.md", data, context)
    files, left_out = _model_files(folder)
    if adapter is not None and base:
        adapter = {**adapter, "base_model_name_or_path": base}  # the local training path means nothing to downloaders
        files["adapter_config.json"] = (json.dumps(adapter, indent=2, sort_keys=True) + "\n").encode()
    files[run.results_json.name] = public_json(run.results_json)
    files.update(
        {
            f"eval/{path.name}": _public_eval_file(path)
            for path in (results.aggregate_json, results.aggregate_md)
            if path.exists()
        }
    )
    if results.plot_png.exists():
        files[results.plot_png.name] = results.plot_png
    files["README.md"] = str(card).encode()
    return Card(kind, card, files, left_out, notes)


def _id2label(folder: Path, record: RunRecord) -> list[str]:
    config_file = folder / "config.json"  # an adapter folder has none: the tags follow from the task config
    if config_file.exists():
        id2label = run_files.read_json(config_file).get("id2label", {})
        return [id2label[k] for k in sorted(id2label, key=int)]
    return task_from_dict(record.config).tag_names


def _run_license(encoder: str) -> str | None:
    """The license of the pretraining run that produced a local encoder folder, if it recorded one."""
    recipe = PretrainingRun(Path(encoder).parent).recipe_json
    if recipe.exists():
        return recipe_from_dict(run_files.read_json(recipe), validate=False).hub.license
    return None


# ------------------------------------------------------------------------------------ nothing local to the Hub


def public_path(value):
    """A local absolute path (or ~/...) as its last part: the repo keeps file names, not this machine's
    folders. Anything else (Hub ids, relative names, numbers) as it is."""
    if isinstance(value, str) and (os.path.isabs(value) or value.startswith("~")):
        return Path(value).name
    return value


def public(value):
    """`public_path` through a whole JSON document."""
    if isinstance(value, dict):
        return {key: public(item) for key, item in value.items()}
    if isinstance(value, list):
        return [public(item) for item in value]
    return public_path(value)


def public_json(path: Path) -> bytes:
    return (json.dumps(public(run_files.read_json(path)), indent=2) + "\n").encode()


def _public_eval_file(path: Path) -> Path | bytes:
    """aggregate.json with local paths dropped; aggregate.md written again from it; plots as they are."""
    if path.suffix == ".json":
        return public_json(path)
    if path.suffix == ".md" and path.with_suffix(".json").exists():
        aggregate = TaskAggregate.from_dict(public(run_files.read_json(path.with_suffix(".json"))))
        return markdown_summary(aggregate).encode()
    return path


# ------------------------------------------------------------------------------------ helpers


def _model_files(folder: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """The files of a model repo in `folder`; everything else is listed with the reason it stays behind."""
    keep, left_out = {}, {}
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            left_out[path.name + "/"] = "folder: checkpoints and other run state stay local"
        elif path.suffix in PICKLE_SUFFIXES:
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
                n = 1
                for d in f.get_slice(key).get_shape():
                    n *= d
                total += n
    return total


def _is_hub_id(name: str) -> bool:
    return (
        not Path(name).exists()
        and name.count("/") == 1
        and not name.startswith((".", "/"))
        and not name.endswith(COMPOSER_SUFFIXES)  # a Composer checkpoint file, not on this machine
    )
