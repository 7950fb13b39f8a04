"""What inference (`python -m modeling.inference`) writes into `--output_dir`:

embeddings.safetensors, notes.jsonl   an encoder: one embedding per note, and where each note came from
predictions.jsonl                     a classifier: labels and per-label scores per note
"""

from __future__ import annotations

from modeling.common.run_files import File, Folder


class InferenceOutputs(Folder):
    embeddings_safetensors = File("embeddings.safetensors")
    notes_jsonl = File("notes.jsonl")
    predictions_jsonl = File("predictions.jsonl")
