"""Examples -> model windows, and window outputs -> one prediction per document or per word.

A document longer than `max_length` tokens becomes overlapping windows (`stride` tokens shared).
Classification: every window carries the document's labels; at evaluation the window logits are
averaged (or max-pooled) back into one prediction per document. NER: words are tokenized pre-split,
the word's label goes on its first sub-token (the others are ignored by the loss), and each word is
predicted from the window where it has the most context on both sides. The windows and the averaging are
modeling.common.windows's, which inference applies to a fine-tuned classifier's long notes.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from modeling.common.loading import load_tokenizer
from modeling.common.windows import combine_windows, window_encoding
from modeling.finetune.config import TaskConfig
from modeling.finetune.examples import Example

IGNORE = -100


def load_task_tokenizer(path: str, task: str):
    """The model's tokenizer; for NER, byte-level BPE tokenizers (ModernBERT's) are switched to add the
    space before each pre-split word, as in running text. Without it "took aspirin" split into words
    becomes "took" + "aspirin" instead of "Ġtook" + "Ġaspirin", tokens the model rarely saw mid-sentence;
    transformers 5 stores `add_prefix_space=True` but does not pass it to the backend, so it is set there."""
    tokenizer = load_tokenizer(path, add_prefix_space=True) if task == "ner" else load_tokenizer(path)
    if task == "ner" and tokenizer.is_fast:
        state = json.loads(tokenizer.backend_tokenizer.to_str())
        if _set_prefix_space(state.get("pre_tokenizer")):
            tokenizer._tokenizer = Tokenizer.from_str(json.dumps(state))
    return tokenizer


def _set_prefix_space(node) -> bool:
    """Turn on add_prefix_space in every ByteLevel pre-tokenizer (possibly inside a Sequence)."""
    if not isinstance(node, dict):
        return False
    changed = False
    if node.get("type") == "ByteLevel" and not node.get("add_prefix_space"):
        node["add_prefix_space"] = changed = True
    for child in node.get("pretokenizers") or []:
        changed |= _set_prefix_space(child)
    return changed


@dataclass
class EncodedSplit:
    """Windows of one split, in the order the model sees them, and the way back to examples."""

    name: str
    examples: list[Example]
    features: list[dict]  # input_ids, attention_mask, labels
    window_example: list[int]  # example index of each window
    window_words: list[list[int]]  # NER: word index at each token that starts a word in this window, else -1

    def windows_per_example(self) -> float:
        return len(self.features) / max(1, len(self.examples))

    def examples_of_several_windows(self) -> int:
        """Examples longer than one window: those the maximum length cuts."""
        return sum(1 for windows in Counter(self.window_example).values() if windows > 1)


def encode_split(
    name: str, examples: list[Example], tokenizer, config: TaskConfig, max_length: int, sort_by_length: bool = False
) -> EncodedSplit:
    """Tokenize a split into windows. Evaluation splits are sorted longest first: batches then hold
    windows of similar length (less padding), and the window -> example map keeps the order recoverable."""
    labels = config.tag_names
    label_id = {name: i for i, name in enumerate(labels)}
    stride = config.stride_for(max_length)
    if config.task == "ner":
        words = [e.word_texts() for e in examples]
        encoded = window_encoding(
            tokenizer, words, max_length, stride, is_split_into_words=True, return_offsets_mapping=True
        )
    else:
        encoded = window_encoding(tokenizer, [e.text for e in examples], max_length, stride)
    features, window_example, window_words = [], [], []
    for window, example_index in enumerate(encoded["overflow_to_sample_mapping"]):
        example = examples[example_index]
        feature = {"input_ids": encoded["input_ids"][window], "attention_mask": encoded["attention_mask"][window]}
        words = []
        if config.task == "ner":
            previous = None
            for word, (start, _) in zip(encoded.word_ids(window), encoded["offset_mapping"][window], strict=True):
                # A word's first sub-token carries its label (offsets are within the word). A window that
                # starts inside a word sees only its tail: ignored there, labelled in the previous window.
                starts = word is not None and word != previous and start == 0
                words.append(word if starts else -1)
                previous = word
            feature["labels"] = [label_id[example.tags[w]] if w >= 0 else IGNORE for w in words]
        elif config.task == "single_label":
            feature["labels"] = label_id[example.labels[0]]
        else:
            feature["labels"] = [1.0 if name in example.labels else 0.0 for name in labels]
        features.append(feature)
        window_example.append(example_index)
        window_words.append(words)
    order = (
        sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
        if sort_by_length
        else range(len(features))
    )
    return EncodedSplit(
        name,
        examples,
        [features[i] for i in order],
        [window_example[i] for i in order],
        [window_words[i] for i in order],
    )


def document_logits(split: EncodedSplit, logits: np.ndarray, aggregation: str) -> np.ndarray:
    """[windows, labels] -> [examples, labels]: mean or max over each document's windows."""
    return combine_windows(logits, split.window_example, len(split.examples), aggregation)


def word_logits(split: EncodedSplit, logits: np.ndarray) -> list[np.ndarray]:
    """[windows, tokens, tags] -> per example [words, tags], each word from the window where it has the
    most context (the largest distance to the nearer window edge)."""
    best: list[dict[int, tuple[int, np.ndarray]]] = [{} for _ in split.examples]
    for window, example_index in enumerate(split.window_example):
        words = split.window_words[window]
        length = len(words)
        for position, word in enumerate(words):
            if word < 0:
                continue
            context = min(position, length - 1 - position)
            if word not in best[example_index] or context > best[example_index][word][0]:
                best[example_index][word] = (context, logits[window, position])
    out = []
    for example, chosen in zip(split.examples, best, strict=True):
        num_tags = logits.shape[-1]
        rows = np.zeros((len(example.words), num_tags), dtype=np.float32)
        for word, (_, row) in chosen.items():
            rows[word] = row
        # A word that got no token of its own (the tokenizer dropped it, e.g. a zero-width character) is "O".
        missing = [w for w in range(len(example.words)) if w not in chosen]
        rows[missing, 0] = 1.0
        out.append(rows)
    return out
