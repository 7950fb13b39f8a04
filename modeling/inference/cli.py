"""python -m modeling.inference MODEL NOTES --output_dir DIR: embed or classify a file of notes.

NOTES is any file a recipe source reads (one note per line in .txt, .jsonl with a `text` field, .csv or
.parquet with --text_column, MIMIC NOTEEVENTS ...). An encoder (a pretraining phase, any AutoModel
checkpoint) writes embeddings.safetensors and notes.jsonl; a fine-tuned sequence classifier writes
predictions.jsonl. A classifier finetune.py saved cuts a note longer than its run's max_length into the run's
overlapping windows and combines their logits as the run did (results.json beside the model folder says how).
Empty or bad records are counted and reported (--on_bad_record skip), never dropped silently. How notes are
batched: modeling.inference.encoder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from modeling.common import run_files
from modeling.common.attention import DOCUMENT_SDPA
from modeling.common.cli import run_command
from modeling.common.errors import ConfigError, DataError
from modeling.common.skips import SkipLog
from modeling.data.sources import SourceSpec, iter_records
from modeling.inference.encoder import BATCHINGS, POOLINGS, NoteEncoder, TokenizedNotes
from modeling.inference.outputs import InferenceOutputs


def read_notes(
    path: str, file_format: str = "auto", text_column: str | None = None, on_bad_record: str = "raise"
) -> tuple[list[str], list[str], SkipLog]:
    """(where, text) of every non-empty note in a notes file (any source format: text lines, jsonl,
    csv, parquet, MIMIC NOTEEVENTS ...); empty or bad records are counted in the SkipLog."""
    spec = SourceSpec(name="notes", path=path, format=file_format, text_column=text_column, on_bad_record=on_bad_record)
    skips = SkipLog()
    wheres, texts = [], []
    for where, text in iter_records(spec, skips):
        wheres.append(where)
        texts.append(text)
    return wheres, texts, skips


def write_outputs(
    output_dir: Path, encoder: NoteEncoder, wheres: list[str], outputs: torch.Tensor, notes: TokenizedNotes
) -> list[Path]:
    """Embeddings -> embeddings.safetensors + notes.jsonl; a classifier -> predictions.jsonl. Returns the files."""
    files = InferenceOutputs(output_dir)
    files.folder.mkdir(parents=True, exist_ok=True)
    tokens = notes.note_tokens()
    records = [
        {"index": i, "where": where, "tokens": tokens[i], "truncated": notes.truncated[i]}
        for i, where in enumerate(wheres)
    ]
    if encoder.windows:
        for record, windows in zip(records, notes.windows(), strict=True):
            record["windows"] = windows
    if encoder.classifier:
        names, labels, scores = encoder.label_scores(outputs)
        for record, note_labels, note_scores in zip(records, labels, scores, strict=True):
            scored = zip(names, note_scores, strict=True)
            record.update(labels=note_labels, scores={n: round(float(s), 6) for n, s in scored})
        run_files.write_text(files.predictions_jsonl, "".join(json.dumps(r) + "\n" for r in records))
        return [files.predictions_jsonl]
    save_file(
        {"embeddings": outputs.contiguous()},
        str(files.embeddings_safetensors),
        metadata={"pooling": encoder.pooling, "notes": str(len(wheres))},
    )
    run_files.write_text(files.notes_jsonl, "".join(json.dumps(r) + "\n" for r in records))
    return [files.embeddings_safetensors, files.notes_jsonl]


def whole_number(least: int):
    """An argparse type: a whole number >= `least` (argparse names the flag in its one-line error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is below {least}")
        return value

    return parse


def infer(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modeling.inference", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "model", help="folder or Hub id: an encoder (embeddings) or a sequence classifier (predictions)"
    )
    parser.add_argument(
        "notes", help="notes file(s) or glob: .txt (one note per line), .jsonl, .csv, .parquet, MIMIC NOTEEVENTS ..."
    )
    parser.add_argument(
        "--output_dir", required=True, help="where embeddings.safetensors + notes.jsonl, or predictions.jsonl, go"
    )
    parser.add_argument(
        "--format",
        default="auto",
        help="notes file format (as a recipe source's `format`; default: from the extension)",
    )
    parser.add_argument("--text_column", help="field or column holding the note text (default: text / TEXT)")
    parser.add_argument(
        "--on_bad_record",
        default="raise",
        choices=("raise", "skip"),
        help="stop at a malformed record, or count and skip it",
    )
    parser.add_argument(
        "--pooling", choices=POOLINGS, default="mean", help="embeddings: mean of the note's tokens, or its [CLS] token"
    )
    parser.add_argument(
        "--max_length",
        type=whole_number(3),  # [CLS], a token, [SEP]
        help="cut notes at this many tokens (default: the model's max positions, or a fine-tuned classifier's "
        "windows); cut notes are counted",
    )
    parser.add_argument(
        "--batching",
        choices=BATCHINGS,
        default="packed",
        help="packed: length-sorted, several notes per row (fast); padded: the usual way",
    )
    parser.add_argument("--batch_tokens", type=whole_number(1), default=16384, help="packed: positions per batch")
    parser.add_argument("--notes_per_batch", type=whole_number(1), default=16, help="padded: notes per batch")
    parser.add_argument(
        "--attn_implementation",
        default="sdpa" if torch.cuda.is_available() else DOCUMENT_SDPA,
        help="document_sdpa (default on CPUs: attention per note) | sdpa (dense masks) | varlen (attention per "
        "note on GPUs, PyTorch's own flash kernel; document_sdpa on CPUs); flash_attention_2 | flex_attention on GPUs",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="bfloat16 on GPUs")
    parser.add_argument(
        "--allow_pickle", action="store_true", help="load pickle weights (.bin) if the folder has no safetensors"
    )
    args = parser.parse_args(argv)
    run_files.writable_folder("--output_dir", Path(args.output_dir))
    wheres, texts, skips = read_notes(args.notes, args.format, args.text_column, args.on_bad_record)
    if not texts:
        raise DataError(f"{args.notes}: no notes to encode")
    try:
        encoder = NoteEncoder.from_pretrained(
            args.model,
            args.attn_implementation,
            args.allow_pickle,
            args.device,
            getattr(torch, args.dtype),
            max_length=args.max_length,
            pooling=args.pooling,
        )
    except OSError as error:  # transformers' words for a folder or Hub id it cannot read
        raise ConfigError(str(error)) from None
    start = time.perf_counter()
    outputs, notes = encoder.encode(texts, args.batching, args.batch_tokens, args.notes_per_batch, progress=True)
    seconds = time.perf_counter() - start
    written = write_outputs(Path(args.output_dir), encoder, wheres, outputs, notes)
    tokens = sum(notes.lengths())
    if encoder.windows:
        windowed = sum(windows > 1 for windows in notes.windows())
        long_notes = (
            f"{windowed:,} longer than {encoder.max_length} tokens cut into {encoder.windows.describe()} "
            f"({len(notes.ids):,} windows in all)"
        )
    else:
        long_notes = f"{sum(notes.truncated):,} cut at {encoder.max_length} tokens"
    print(
        f"{len(texts):,} notes, {tokens:,} tokens in {seconds:.1f} s "
        f"({tokens / seconds:,.0f} tokens/s, {args.batching} batches); "
        f"{long_notes}; {skips.total():,} records skipped {skips.as_dict() or ''}"
    )
    print(f"wrote {', '.join(str(path) for path in written)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(infer, argv)
