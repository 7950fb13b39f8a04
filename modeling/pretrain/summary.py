"""What a pretraining run records about itself: one typed record per phase and one for the run.

`PhaseSummary` is written when a phase ends (phase_summary.json, which also marks the phase complete);
`TrainingSummary` gathers the phases and their totals (training_summary.json). train_mlm.py prints it,
the plot draws it, and model cards (modeling.publish) are written from it. The JSON keys are the field
names, unchanged since the first runs, so summaries written by earlier versions still load.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modeling.common.engines import StateBytes
from modeling.common.records import Record
from modeling.pretrain.run_folder import REVISION_RECORD, PretrainingRun


@dataclass
class SourceReport(Record):
    """What the store holds of a source (prepared once; every pass over it finds the same)."""

    documents_per_pass: int = 0  # training documents
    held_out_per_pass: int = 0
    skipped_per_pass: dict[str, int] = field(default_factory=dict)  # reason -> documents
    first_pass_complete: bool = False
    passes_started: int = 0  # epochs of the phase that read from it


@dataclass
class MaskingRecord(Record):
    start: float
    end: float
    measured: float  # masked / maskable positions over the whole phase


@dataclass
class LearningRateRecord(Record):
    peak: float
    warmup_steps: int
    stable_steps: int
    decay_steps: int
    decay: str
    min_lr_ratio: float


@dataclass
class HeldOutRecord(Record):
    """The phase's held-out slice, masked at the phase's final rate, before and after the phase."""

    rows: int
    chunks: int
    masking: float
    loss_start: float
    loss_end: float
    # What a model that knew only token frequencies would score on the same text (modeling.data.rows.
    # unigram_entropy); the distance below it is what the model learned of context. None in older summaries.
    unigram_entropy: float | None = None

    OMITTED_WHEN_NONE = ("unigram_entropy",)


SOURCE_HELD_OUT_PREFIX = "held_out/"  # a source's own slice is logged as held_out/SOURCE_loss


def source_loss_key(source: str) -> str:
    """The key of a source's own held-out loss in the Trainer's log history."""
    return f"{SOURCE_HELD_OUT_PREFIX}{source}_loss"


@dataclass
class SourceHeldOutRecord(Record):
    """One source's own held-out slice before and after a phase: the same documents, masked at the same
    positions and rate, in every phase of the run (whether the phase trains on the source or not), so a phase
    that makes the model forget a source shows as its loss rising."""

    documents: int
    rows: int
    masking: float
    loss_start: float | None  # None: a phase resumed from a run recorded before sources were measured
    loss_end: float
    unigram_entropy: float
    trained: bool  # the phase trains on this source


@dataclass
class RevisionRecord(Record):
    """An intermediate checkpoint kept as a stock transformers folder (PHASE/revisions/REVISION/) and pushed as
    a Hub branch of that name (recipe hub.push_every): where in the run it was taken and what it had seen."""

    revision: str  # step-NNNNNNN: the optimizer step counted over the whole run, so names sort in run order
    phase: str
    step: int  # optimizer step within the phase
    run_step: int
    tokens_seen: float  # real tokens the phase had trained on
    held_out_loss: float  # the phase's held-out slice, at its final masking rate
    rows_trained: int  # the phase's rows 0 .. rows_trained - 1 of its row index: `train_mlm.py data-order`

    FILE = REVISION_RECORD


def revision_name(run_step: int) -> str:
    return f"step-{run_step:07d}"


@dataclass
class PhaseSummary(Record):
    phase: str
    index: int
    steps: int
    rows: int  # rows trained: steps x rows per step
    tokens: int  # real tokens trained (padding excluded)
    tokens_per_source: dict[str, int]
    documents_trained: dict[str, int]
    row_fill: float  # tokens / row capacity
    masking: MaskingRecord
    lr: LearningRateRecord
    reset_optimizer: bool
    held_out: HeldOutRecord
    wall_time_s: float
    tokens_per_second: float | None
    sources: dict[str, SourceReport]  # per source, per pass over its files: documents, held out, skipped and why
    log_history: list[dict] = field(default_factory=list)  # Trainer's logs: loss, learning rate, masking rate
    final_checkpoint: str | None = None  # the next phase carries its optimizer state from here
    model_dir: str | None = None
    model_states: StateBytes | None = None  # bytes of parameters, gradients and optimizer state per process
    # each source's own held-out slice, for every source the recipe trains on (None: recorded before they were)
    held_out_sources: dict[str, SourceHeldOutRecord] | None = None
    revisions: list[RevisionRecord] | None = None  # hub.push_every's intermediate checkpoints (None: none taken)

    # Runs recorded before documents were counted per source, and before per-source reading reports, lack
    # these: they read back empty.
    OLDER_FILES_LACK = {"documents_trained": dict, "sources": dict}
    OMITTED_WHEN_NONE = ("model_states", "held_out_sources", "revisions")

    def source_curve(self, source: str) -> list[tuple[float, float]]:
        """(tokens seen in the phase, loss) of every measurement of the source's own held-out slice."""
        key = source_loss_key(source)
        return [(e.get("tokens_seen", 0.0), e[key]) for e in self.log_history if key in e]


@dataclass
class RunTotals(Record):
    steps: int
    tokens: int
    tokens_per_source: dict[str, int]
    wall_time_s: float
    tokens_per_second: float | None
    documents_skipped_per_pass: dict[str, dict[str, int]]  # source -> reason -> documents


@dataclass
class TrainingSummary(Record):
    name: str
    recipe: str  # the recipe.json beside it
    max_seq_length: int
    phases: list[PhaseSummary]  # without their log_history (phase_summary.json keeps it)
    total: RunTotals
    plot: str = PretrainingRun.plot_png.name

    @classmethod
    def of_phases(cls, name: str, recipe_json: str, max_seq_length: int, phases: list[PhaseSummary], plot: str):
        tokens_per_source: dict[str, int] = {}
        skipped: dict[str, dict[str, int]] = {}
        for phase in phases:
            for source, n in phase.tokens_per_source.items():
                tokens_per_source[source] = tokens_per_source.get(source, 0) + n
            for source, report in phase.sources.items():
                skipped[source] = report.skipped_per_pass  # the same files skip the same documents in every phase
        wall = sum(p.wall_time_s for p in phases)
        tokens = sum(p.tokens for p in phases)
        totals = RunTotals(
            steps=sum(p.steps for p in phases),
            tokens=tokens,
            tokens_per_source=tokens_per_source,
            wall_time_s=wall,
            tokens_per_second=tokens / wall if wall else None,
            documents_skipped_per_pass=skipped,
        )
        return cls(name, recipe_json, max_seq_length, phases, totals, plot)

    def to_dict(self) -> dict:
        data = super().to_dict()
        for phase in data["phases"]:
            phase.pop("log_history", None)
        return data


@dataclass
class SourceLosses:
    """One source's own held-out loss across phases: before the first, then at the end of each (what the
    printed table and the model card show)."""

    source: str
    unigram_entropy: float
    masking: float
    before: float | None
    after: list[float]
    trained: list[bool]  # per phase: did it train on the source


def source_losses(phases: list[PhaseSummary]) -> list[SourceLosses]:
    """Every source measured in all of `phases` (none where a phase was recorded before sources were measured)."""
    if not phases or not all(p.held_out_sources for p in phases):
        return []
    names = [name for name in phases[0].held_out_sources if all(name in p.held_out_sources for p in phases)]
    table = []
    for name in names:
        records = [p.held_out_sources[name] for p in phases]
        table.append(
            SourceLosses(
                source=name,
                unigram_entropy=records[0].unigram_entropy,
                masking=records[0].masking,
                before=records[0].loss_start,
                after=[r.loss_end for r in records],
                trained=[r.trained for r in records],
            )
        )
    return table


def source_losses_table(phases: list[PhaseSummary]) -> str:
    """The per-source held-out losses as printed after a run ('' when none were measured)."""
    table = source_losses(phases)
    if not table:
        return ""
    lines = [
        f"held-out loss per source (each source's own documents, masked at {table[0].masking:.2f}; "
        "* the phase trained on it)",
        f"{'source':<20}{'unigram entropy':>16}{'before':>10}" + "".join(f"{p.phase:>12}" for p in phases),
    ]
    for row in table:
        before = f"{row.before:.3f}" if row.before is not None else "-"
        after = "".join(f"{loss:>11.3f}{'*' if t else ' '}" for loss, t in zip(row.after, row.trained, strict=True))
        lines.append(f"{row.source:<20}{row.unigram_entropy:>16.3f}{before:>10}{after}")
    return "\n".join(lines)
