"""CoNLL columns: one token per line with its tag in a column, a blank line between sentences."""

from __future__ import annotations

from pathlib import Path

from modeling.common.skips import SkipLog
from modeling.finetune.examples import Example, TaskLabels, join_words
from modeling.finetune.loaders.base import bad_record, reading, split_files, split_name
from modeling.finetune.loaders.spec import DataSpec

DOCSTART = "-DOCSTART-"


def load_conll(spec: DataSpec, task: TaskLabels, skips: SkipLog) -> list[Example]:
    """One example per sentence (id = file:first line), words joined by spaces; columns split on any
    whitespace. `-DOCSTART-` lines are counted and start a document, which becomes the group of its
    sentences. A line without the token and tag columns is a bad record; skipping it skips its sentence."""
    examples = []
    for split, path in split_files(spec).items():
        for file in sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]:
            for document, sentence in _conll_sentences(file, task.name, skips):
                short = next(
                    (
                        number
                        for number, columns in sentence
                        if not _columns_fit(len(columns), spec.token_column, spec.tag_column)
                    ),
                    None,
                )
                if short is not None:
                    bad_record(
                        spec,
                        skips,
                        task.name,
                        f"{file}:{short}",
                        f"too few columns for token_column {spec.token_column} and tag_column {spec.tag_column}",
                    )
                    continue
                text, words = join_words([columns[spec.token_column] for _, columns in sentence])
                examples.append(
                    Example(
                        id=f"{file}:{sentence[0][0]}",
                        text=text,
                        words=words,
                        group=document,
                        tags=[columns[spec.tag_column] for _, columns in sentence],
                        split=split_name(split),
                    )
                )
    return examples


def _columns_fit(count: int, token: int, tag: int) -> bool:
    """Both columns exist and are two different columns (a one-column line is not word and tag)."""
    return all(-count <= i < count for i in (token, tag)) and token % count != tag % count


def _conll_sentences(file: Path, task: str, skips: SkipLog):
    """(document, [(line number, columns), ...]) per sentence; document = file:line of its -DOCSTART-."""
    sentence, document = [], None
    with reading(file), open(file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            columns = line.split()
            if columns and columns[0] != DOCSTART:
                sentence.append((number, columns))
                continue
            if sentence:
                yield document, sentence
                sentence = []
            if columns:
                skips.add(task, f"{DOCSTART} line", f"{file}:{number}", expected=True)
                document = f"{file}:{number}"
    if sentence:
        yield document, sentence
