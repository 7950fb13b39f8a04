"""`python -m modeling.publish import-composer CKPT.pt --config RUN.yaml --out FOLDER [--tokenizer DIR]`:
a Composer checkpoint of ModernBERT's training stack as a stock transformers ModernBERT folder (safetensors,
config, tokenizer, `composer_import.json`), which AutoModel loads, `model.init` continues from and `push`
publishes. The reading and checking is modeling.common.composer; nothing from the checkpoint is run.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from modeling.common import run_files
from modeling.common.composer import FLEXBERT_TO_TRANSFORMERS, MODEL_KEY_PREFIX, import_checkpoint, imported_model
from modeling.common.errors import ConfigError
from modeling.common.loading import load_tokenizer
from modeling.common.records import Record

IMPORT_RECORD = "composer_import.json"


@dataclass
class ImportRecord(Record):
    """composer_import.json: where the weights came from and what was made of them."""

    source: str
    run_config: str | None  # the run YAML, or None: the checkpoint's own copy of its model_config
    run_name: str | None
    timestamp: dict  # the source run's batch, sample, token counts at the checkpoint
    tensors: int  # carried into the folder
    renamed: dict[str, int]  # FlexBert pattern -> tensors renamed by it and written
    dropped: list[str]  # checkpoint tensors not written (the tied decoder weight)
    left_behind: dict[str, str] = field(default_factory=dict)
    tokenizer: str | None = None  # where the folder's tokenizer came from


def import_composer(
    checkpoint: str | Path,
    out: str | Path,
    run_config: str | Path | None = None,
    tokenizer_dir: str | Path | None = None,
    max_position_embeddings: int = 8192,
) -> ImportRecord:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty folder; give a new folder")
    with tempfile.TemporaryDirectory(prefix="composer-tokenizer-") as scratch:
        tokenizer, tokenizer_source = None, None
        if tokenizer_dir is not None:
            tokenizer, tokenizer_source = load_tokenizer(str(tokenizer_dir)), str(tokenizer_dir)
        imported = import_checkpoint(checkpoint, run_config, max_position_embeddings, tokenizer)
        if tokenizer is None and imported.tokenizer_files:  # Composer keeps the run's tokenizer files
            for name, text in imported.tokenizer_files.items():  # names checked: tokenizer files only
                (Path(scratch) / name).write_text(text, encoding="utf-8")
            tokenizer, tokenizer_source = load_tokenizer(scratch), f"{checkpoint} (the copy Composer keeps)"
            imported.with_tokenizer(tokenizer, max_position_embeddings)
        if tokenizer is not None and len(tokenizer) > imported.config.vocab_size:
            raise ConfigError(
                f"--tokenizer {tokenizer_source}: {len(tokenizer)} tokens do not fit the checkpoint's vocab_size "
                f"{imported.config.vocab_size}"
            )
        model = imported_model(imported)
        out.parent.mkdir(parents=True, exist_ok=True)
        record = ImportRecord(
            source=str(checkpoint),
            run_config=str(run_config) if run_config else None,
            run_name=imported.run_name,
            timestamp=imported.timestamp,
            tensors=len(imported.weights),
            renamed=_counts([(a, b) for a, b in imported.renamed if a not in imported.dropped]),
            dropped=imported.dropped,
            left_behind=imported.left_behind,
            tokenizer=tokenizer_source,
        )
        with run_files.atomic_folder(out) as tmp:
            model.save_pretrained(tmp)  # safetensors
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            run_files.write_json(tmp / IMPORT_RECORD, record.to_dict())
    return record


def _counts(renamed: list[tuple[str, str]]) -> dict[str, int]:
    counts = {source: 0 for source, _ in FLEXBERT_TO_TRANSFORMERS}
    for name, _ in renamed:
        plain = name.removeprefix(MODEL_KEY_PREFIX)
        for source, _ in FLEXBERT_TO_TRANSFORMERS:
            if re.fullmatch(source, plain):
                counts[source] += 1
                break
    return {source: n for source, n in counts.items() if n}


def report(record: ImportRecord, out: Path) -> str:
    steps = ", ".join(f"{k} {v:,}" for k, v in record.timestamp.items()) or "not recorded"
    lines = [
        f"imported {record.source} -> {out}",
        f"  source run: {record.run_name or 'unnamed'} at {steps}",
        f"  {record.tensors} tensors carried ({', '.join(f'{n} by {p}' for p, n in record.renamed.items())})",
    ]
    lines += [f"  not written: {name} (tied to the token embeddings)" for name in record.dropped]
    lines += [f"  left behind: {part}: {why}" for part, why in record.left_behind.items()]
    lines.append(f"  tokenizer: {record.tokenizer or 'none (give --tokenizer DIR to add one)'}")
    lines.append(f"  load it with AutoModelForMaskedLM.from_pretrained({str(out)!r})")
    return "\n".join(lines)
