"""Documents longer than a model's window: overlapping windows, and the windows' logits as one row per document.

Fine-tuning trains and tests on these windows (modeling.finetune.encoding); inference cuts a fine-tuned
classifier's long notes into the same windows and combines them the same way (modeling.inference.encoder), so a
note gets the scores the run's own test predictions gave it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_STRIDE = 128  # the most tokens consecutive windows share by default (from max_length 512 up; once fixed)
AGGREGATIONS = ("mean", "max")


def default_stride(max_length: int | None) -> int:
    """A quarter of the window, at most DEFAULT_STRIDE; DEFAULT_STRIDE where max_length is left open (the model's
    maximum: 8,192 for ModernBERT)."""
    return min(DEFAULT_STRIDE, max_length // 4) if max_length else DEFAULT_STRIDE


def window_encoding(tokenizer, inputs: list, max_length: int, stride: int, **options):
    """The tokenizer's encoding of `inputs` (texts, or word lists with is_split_into_words=True) as windows of at
    most `max_length` tokens, each wrapped as the tokenizer wraps a text ([CLS] ... [SEP]); a longer document
    becomes several, each repeating the last `stride` tokens of the one before. `overflow_to_sample_mapping`
    names the document of each window, in order."""
    return tokenizer(
        inputs, truncation=True, max_length=max_length, stride=stride, return_overflowing_tokens=True, **options
    )


def combine_windows(
    logits: np.ndarray, window_document: Sequence[int], documents: int, aggregation: str = "mean"
) -> np.ndarray:
    """[windows, labels] -> [documents, labels]: the mean (or, for "max", the max) of each document's window
    logits."""
    per_document = [[] for _ in range(documents)]
    for window, document in enumerate(window_document):
        per_document[document].append(logits[window])
    reduce = np.mean if aggregation == "mean" else np.max
    return np.stack([reduce(np.stack(rows), axis=0) for rows in per_document])
