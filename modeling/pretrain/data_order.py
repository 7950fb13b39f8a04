"""Which documents a step of a run trained on: `python train_mlm.py data-order RUN --phase PHASE --step K`.

A phase reads its rows in the order of its row index (a sequential sampler): optimizer step K (counted from 1,
as the Trainer and the revisions count) takes rows (K - 1) * R .. K * R - 1, R the rows of a step, whatever
the number of processes and accumulation steps. So the run's recipe, its token store and the row index (read
from the store's cache, or rebuilt from the same settings, which gives the same index) answer the question
exactly; with a revision's `rows_trained` they say everything a revision had seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modeling.common import run_files
from modeling.common.errors import ConfigError
from modeling.common.records import Record
from modeling.data.packing import Packing
from modeling.data.rows import build_phase_data
from modeling.data.store import Store
from modeling.pretrain.prepare import open_store
from modeling.pretrain.recipe import recipe_from_dict
from modeling.pretrain.run_folder import PretrainingRun
from modeling.pretrain.runner import index_cache
from modeling.pretrain.schedules import plan_phase

PREVIEW_CHARACTERS = 60


@dataclass
class StepPiece(Record):
    """One document (or the piece of one that fitted) in a row of a step."""

    row: int  # in the phase's row index
    source: str
    document: int  # in the source's training documents of the store
    shard: str  # SOURCE/SHARD#ROW: where the store keeps it
    start: int  # first token of the piece in the document
    tokens: int
    preview: str  # the piece's first words


def step_pieces(run_dir: str, phase: str, step: int) -> list[StepPiece]:
    """Every piece of every row optimizer step `step` of `phase` trained on, in row order."""
    run = PretrainingRun(run_dir)
    if not run.recipe_json.exists():
        raise ConfigError(f"{run_dir}: not a train_mlm.py run folder (no {run.recipe_json.name})")
    recipe = recipe_from_dict(run_files.read_json(run.recipe_json))
    names = [p.name for p in recipe.phases]
    if phase not in names:
        raise ConfigError(f"--phase {phase}: the run's phases are {', '.join(names)}")
    index = names.index(phase)
    spec = recipe.phases[index]
    store = open_store(recipe)
    tokenizer = store.tokenizer()
    packing = Packing.of(tokenizer, recipe.max_seq_length, recipe.data.pack_open_rows)
    data = build_phase_data(
        store,
        phase,
        spec.sources,
        recipe.seed,
        packing,
        recipe.holdout.max_documents,
        epochs=spec.length.get("epochs"),
        cache_dir=index_cache(store, run.phase(phase)),
    )
    plan = plan_phase(recipe, index, data.epoch_rows)
    if not 1 <= step <= plan.steps:
        raise ConfigError(f"--step {step}: phase {phase} has steps 1 to {plan.steps}")
    data.index.ensure_rows(plan.steps * plan.rows_per_step)  # the index training built (PhaseRows), not a shorter one
    first = (step - 1) * plan.rows_per_step
    shard_of = {name: _shard_names(store, name) for name in data.sources}
    pieces = []
    for row in range(first, first + plan.rows_per_step):
        rows, local = data.index.locate(row)
        for piece in range(rows.row_start[local], rows.row_start[local + 1]):
            source = data.sources[rows.source[piece]]
            document, start, length = int(rows.document[piece]), int(rows.start[piece]), int(rows.length[piece])
            ids = store.split(source).tokens(document, start, min(length, 32))
            pieces.append(
                StepPiece(
                    row=row,
                    source=source,
                    document=document,
                    shard=shard_of[source](document),
                    start=start,
                    tokens=length,
                    preview=" ".join(tokenizer.decode(ids.tolist()).split())[:PREVIEW_CHARACTERS],
                )
            )
    return pieces


def _shard_names(store: Store, source: str):
    """document number -> SOURCE/SHARD#ROW, by the manifest's shards in order (how contamination reports name
    documents too)."""
    shards = [part.shards["train"] for part in store.manifest.sources[source].parts]
    firsts = np.cumsum([0] + [shard.documents for shard in shards])

    def name(document: int) -> str:
        at = int(np.searchsorted(firsts, document, side="right")) - 1
        return f"{source}/{shards[at].file}#{document - firsts[at]}"

    return name


def step_table(pieces: list[StepPiece], phase: str, step: int) -> str:
    rows = sorted({p.row for p in pieces})
    lines = [
        f"phase {phase}, step {step}: rows {rows[0]:,} to {rows[-1]:,}, {len(pieces)} documents or pieces",
        f"{'row':>8}  {'document':<36}{'start':>7}{'tokens':>8}  text",
    ]
    for p in pieces:
        lines.append(f"{p.row:>8}  {p.shard:<36}{p.start:>7}{p.tokens:>8}  {p.preview}")
    return "\n".join(lines)
