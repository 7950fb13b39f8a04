"""What every task loader produces: `Example`s, and the label space a task gives them.

NER words are character spans of the text, so predictions can be reported with offsets into the
original text; the BIO helpers here turn character-span entities into word tags the same way for
every format (the longest of overlapping entities wins, and what is dropped or repaired is counted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog

TASK_TYPES = ("single_label", "multi_label", "ner")
SPLITS = ("train", "validation", "test")


@dataclass
class Example:
    """One document (classification) or one tagged text (NER), whatever format it came from.

    NER words are character spans of `text`, so predictions can be reported with offsets into the
    original text. `group` keeps examples that must not be split apart (annotator rows of one note,
    snippets of one report) in the same split; `split` is the split the files themselves define.
    """

    id: str  # where it came from: "file:line", "file#record", an id column
    text: str
    labels: list[str] | None = None  # classification: label names (single-label: exactly one)
    words: list[tuple[int, int]] | None = None  # NER: [start, end) character span of each word
    tags: list[str] | None = None  # NER: one BIO tag per word
    group: str | None = None
    split: str | None = None  # train | validation | test, when the source defines it

    def word_texts(self) -> list[str]:
        return [self.text[start:end] for start, end in self.words]


@dataclass(frozen=True)
class TaskLabels:
    """What loaders need to know of a task: its name (for skip counts), its type and its labels."""

    name: str
    type: str  # single_label | multi_label | ner
    labels: list[str]  # label names; NER: entity types, or the full BIO tag list

    @property
    def tag_names(self) -> list[str]:
        """NER: the BIO tag list (O first), from entity types or as given; else the labels."""
        if self.type != "ner":
            return list(self.labels)
        if all(x == "O" or x[:2] in ("B-", "I-") for x in self.labels):
            return ["O"] + [x for x in self.labels if x != "O"]
        return ["O"] + [f"{prefix}-{kind}" for kind in self.labels for prefix in ("B", "I")]


def word_spans(text: str, pattern: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(pattern, text)]


def bio_tags(
    words: list[tuple[int, int]], entities: list[tuple[int, int, str]], skips: SkipLog, task: str, where: str
) -> list[str]:
    """BIO tags for words from character-span entities. Overlapping entities cannot all be kept in flat
    BIO: the longest wins (then the earliest, then the type name), and each entity dropped is counted."""
    tags = ["O"] * len(words)
    taken: list[tuple[int, int]] = []
    for start, end, kind in sorted(entities, key=lambda e: (-(e[1] - e[0]), e[0], e[2])):
        covered = [i for i, (ws, we) in enumerate(words) if ws < end and we > start]
        if not covered:
            skips.add(task, "entity covers no word", f"{where} [{start}:{end}] {kind}")
            continue
        if any(s < end and e > start for s, e in taken) or any(tags[i] != "O" for i in covered):
            skips.add(task, "overlapping entity dropped (longest kept)", f"{where} [{start}:{end}] {kind}")
            continue
        taken.append((start, end))
        for n, i in enumerate(covered):
            tags[i] = ("B-" if n == 0 else "I-") + kind
    return tags


def repair_bio(tags: list[str], strict: bool, skips: SkipLog, task: str, where: str) -> list[str]:
    """An I-X that does not continue an X entity becomes B-X (counted), or is an error when strict."""
    fixed = list(tags)
    for i, tag in enumerate(tags):
        if tag.startswith("I-") and (i == 0 or fixed[i - 1][2:] != tag[2:]):
            previous = "start of text" if i == 0 else f"'{fixed[i - 1]}'"
            if strict:
                raise DataError(f"{where}: word {i}: tag '{tag}' follows {previous} (data.strict_bio is on)")
            # IOB1 starts every entity so: the tag is read as B-, nothing is lost
            skips.add(task, "I- tag not continuing an entity, repaired to B-", f"{where} word {i}", changed=True)
            fixed[i] = "B-" + tag[2:]
    return fixed


def join_words(words: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Pre-split words (CoNLL, HF NER datasets) as one text with the words' character spans."""
    spans, position = [], 0
    for word in words:
        spans.append((position, position + len(word)))
        position += len(word) + 1
    return " ".join(words), spans
