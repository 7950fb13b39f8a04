"""Where a pretraining run (`train_mlm.py`) keeps its files, under `output_dir/` (each written atomically with
modeling.common.run_files):

recipe.json                     the recipe as run, overrides applied
training_summary.json           per phase and in total: tokens, steps, held-out loss, wall time, skips
training_curves.png             loss, learning rate and masking rate over tokens seen
tensorboard/PHASE/              TensorBoard events (when logging.report_to names tensorboard)
PHASE/                          the phase's model: a stock transformers folder (safetensors)
PHASE/phase_state.json          held-out loss measured before the phase's first step (a resume reads it)
PHASE/index/                    the phase's row indexes (epoch-NNNNN-KEY.npz, weighted-ROWS-KEY.npz; KEY: the settings
                                and documents they were built from), only where the store is read-only: they are
                                kept in the store (STORE/row_indexes/), shared by runs; rebuilt if missing
PHASE/phase_summary.json        written when the phase is done; its presence marks the phase complete
PHASE/revisions/step-NNNNNNN/   intermediate checkpoints as stock transformers folders, with revision.json (recipe
                                hub.push_every; NNNNNNN: the step over the whole run); pushed ones keep revision.json
PHASE/checkpoints/checkpoint-N/ resumable Trainer checkpoint; complete once checkpoint_complete.json is in it
                                and the Trainer's state and the engine's files read back (DDP: model.safetensors,
                                optimizer.pt; FSDP2: pytorch_model_fsdp_0/, optimizer_0/; ZeRO: latest,
                                global_stepN/; modeling/common/engines.py). A ZeRO checkpoint resumed by another
                                number of processes also gets its universal copy: latest_universal,
                                global_stepN_universal/
"""

from __future__ import annotations

import os
from pathlib import Path

from modeling.common.run_files import File, Folder


class PretrainingRun(Folder):
    """The files of one `train_mlm.py` run (see the module docstring)."""

    recipe_json = File("recipe.json")
    summary_json = File("training_summary.json")
    plot_png = File("training_curves.png")

    def tensorboard_dir(self, phase: str) -> Path:
        return self.folder / "tensorboard" / phase

    def phase(self, name: str) -> PhaseFolder:
        return PhaseFolder(self.folder / name)

    def has_progress(self) -> bool:
        """A run started training here: a summary, or a phase that measured its held-out loss or saved a
        checkpoint. (A folder with only recipe.json is a run that stopped before training, on a mistake
        found late: a corrected rerun may start over.)"""
        if not self.folder.is_dir():
            return False
        if self.summary_json.exists():
            return True
        return any(
            (d / PhaseFolder.state_json.name).exists() or (d / PhaseFolder.checkpoints_dir.name).exists()
            for d in self.folder.iterdir()
            if d.is_dir()
        )

    def relative(self, path: Path | str | None) -> str | None:
        """A path inside the run as recorded: relative to the run folder, so a moved run still finds it."""
        if path is None:
            return None
        return os.path.relpath(Path(path).absolute(), self.folder.absolute())

    def resolve(self, recorded: str | None) -> str | None:
        """A recorded path back to a path here. Runs recorded before paths were relative hold absolute ones:
        used where they exist, else looked up by their last parts inside this run (a moved run)."""
        if recorded is None:
            return None
        path = Path(recorded)
        if not path.is_absolute():
            return str(self.folder / path)
        if path.exists():
            return str(path)
        for depth in range(1, len(path.parts)):
            candidate = self.folder.joinpath(*path.parts[-depth:])
            if candidate.exists():
                return str(candidate)
        return str(path)


REVISION_RECORD = "revision.json"  # summary.RevisionRecord.FILE (summary imports this module)


class PhaseFolder(Folder):
    """One phase: the model it ends with, its state files and its checkpoints."""

    CHECKPOINT_MARKER = "checkpoint_complete.json"  # written last: a checkpoint without it is incomplete
    state_json = File("phase_state.json")
    index_dir = File("index")
    summary_json = File("phase_summary.json")
    checkpoints_dir = File("checkpoints")
    revisions_dir = File("revisions")

    def checkpoints(self) -> list[Path]:
        """checkpoint-N folders (the Trainer names them so), newest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [p for p in self.checkpoints_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True)

    def revisions(self) -> list[Path]:
        """Finished revision folders (step-NNNNNNN with revision.json; not an interrupted write's *.tmp), in
        step order."""
        found = [p for p in self.revisions_dir.glob("step-*") if p.name.split("-")[1].isdigit()]
        return sorted(p for p in found if (p / REVISION_RECORD).exists())

    def is_done(self) -> bool:
        return self.summary_json.exists()
