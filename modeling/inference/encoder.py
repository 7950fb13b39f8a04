"""Embed or classify many notes of very different lengths, fast and with the outputs of one-by-one runs.

Notes are tokenized once (`[CLS] ... [SEP]`, cut at `max_length` and counted when cut), sorted
longest first, and packed into rows: each batch's rows are as long as its longest note and shorter
notes share a row, their attention confined to themselves by the same document masks training uses
(modeling.common.attention) and positions restarting in each note. So almost no position is padding, and
each note's output equals the note run alone. Backends that attend per note (document_sdpa, varlen,
flash_attention_2) take each batch as one row, with no padding at all. `batching="padded"` is the usual way
(notes in file order, batches padded to their longest): kept as the reference the packed outputs are checked
against.

An encoder (a pretraining phase folder, AutoModel) gives one embedding per note; a fine-tuned
sequence classifier gives labels and scores. A classifier that finetune.py saved classifies a note longer than
its run's max_length as the run did: cut into the run's overlapping windows, their logits combined per note
(modeling.common.windows, modeling.inference.task_windows), so the scores are those of its test predictions.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoModelForSequenceClassification

from modeling.common.attention import PER_DOCUMENT_BACKENDS, known_attention, packed_attention_kwargs
from modeling.common.errors import ConfigError
from modeling.common.loading import load_config, load_pretrained, load_tokenizer
from modeling.common.windows import combine_windows, window_encoding
from modeling.data.packers import packed_batches
from modeling.data.packing import PackedRow, collate_rows, plain_backend
from modeling.inference.task_windows import TaskWindows, recorded_windows

log = logging.getLogger(__name__)

POOLINGS = ("mean", "cls")
BATCHINGS = ("packed", "padded")


@dataclass
class TokenizedNotes:
    ids: list[list[int]]  # per note, [CLS] ... [SEP], at most max_length; windowed notes: per window
    truncated: list[bool]  # per note: cut at max_length (a windowed note never is)
    window_note: list[int] | None = None  # windowed notes: the note of each entry of `ids`
    repeated: int = 0  # windowed notes: positions a window repeats of the one before (shared tokens, [CLS], [SEP])

    def lengths(self) -> list[int]:
        """Tokens of each sequence the model runs: a note, or a window of one."""
        return [len(ids) for ids in self.ids]

    def windows(self) -> list[int]:
        """Windows of each note (1 where notes are not windowed)."""
        if self.window_note is None:
            return [1] * len(self.ids)
        counts = Counter(self.window_note)
        return [counts[i] for i in range(len(self.truncated))]

    def note_tokens(self) -> list[int]:
        """Tokens of each note, [CLS] and [SEP] included, each token once."""
        if self.window_note is None:
            return self.lengths()
        tokens = [self.repeated] * len(self.truncated)  # a note's first window repeats nothing
        for ids, note in zip(self.ids, self.window_note, strict=True):
            tokens[note] += len(ids) - self.repeated
        return tokens


def tokenize_notes(tokenizer, texts: list[str], max_length: int, batch_size: int = 1024) -> TokenizedNotes:
    """`[CLS] tokens [SEP]` per note, as training wraps documents; a note longer than max_length keeps
    its first max_length - 2 tokens (and is marked cut)."""
    backend = plain_backend(tokenizer)
    cls, sep, body = tokenizer.cls_token_id, tokenizer.sep_token_id, max_length - 2
    ids, truncated = [], []
    for start in range(0, len(texts), batch_size):
        for encoded in backend.encode_batch(texts[start : start + batch_size], add_special_tokens=False):
            ids.append([cls, *encoded.ids[:body], sep])
            truncated.append(len(encoded.ids) > body)
    return TokenizedNotes(ids, truncated)


def window_notes(tokenizer, texts: list[str], windows: TaskWindows, batch_size: int = 1024) -> TokenizedNotes:
    """Each note as the windows its classifier's fine-tuning run cut documents into (modeling.common.windows): one
    for a note of at most max_length tokens, several overlapping ones for a longer note, nothing cut."""
    ids, window_note = [], []
    for start in range(0, len(texts), batch_size):
        encoded = window_encoding(tokenizer, texts[start : start + batch_size], windows.max_length, windows.stride)
        ids += encoded["input_ids"]
        window_note += [start + note for note in encoded["overflow_to_sample_mapping"]]
    repeated = windows.stride + tokenizer.num_special_tokens_to_add()
    return TokenizedNotes(ids, [False] * len(texts), window_note, repeated)


# --------------------------------------------------------------------------- batching


def padded_batches(lengths: list[int], notes_per_batch: int) -> list[list[list[int]]]:
    """The usual way: notes in file order, `notes_per_batch` at a time, one note per row."""
    return [
        [[i] for i in range(s, min(s + notes_per_batch, len(lengths)))] for s in range(0, len(lengths), notes_per_batch)
    ]


# --------------------------------------------------------------------------- model


class NoteEncoder:
    """A ModernBERT encoder (AutoModel) or sequence classifier, run over batches of notes.

    `encode` returns per note either the pooled embedding [hidden] or, for a classifier, its logits; with
    `windows` (a classifier's fine-tuning run's), a longer note's logits combine those of its windows."""

    def __init__(
        self,
        model,
        tokenizer,
        max_length: int | None = None,
        pooling: str | None = None,
        windows: TaskWindows | None = None,
    ):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.classifier = hasattr(model, "classifier")
        self.encoder = model.model if self.classifier else model
        config = model.config
        self.windows = windows if self.classifier else None
        if self.windows:
            self.windows.check_max_length(max_length)
            max_length = self.windows.max_length
        self.max_length = min(max_length or config.max_position_embeddings, config.max_position_embeddings)
        # A classifier pools as it was trained to; an embedding pools as asked.
        self.pooling = config.classifier_pooling if self.classifier else (pooling or "mean")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling '{self.pooling}': choose one of {', '.join(POOLINGS)}")
        self.device = next(model.parameters()).device

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        attn_implementation: str = "sdpa",
        allow_pickle: bool = False,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        **kwargs,
    ) -> NoteEncoder:
        """A sequence classifier when the folder's config says so, else the bare encoder (AutoModel;
        an MLM checkpoint such as a pretraining phase loads as one). A classifier finetune.py saved gets its run's
        windows (results.json beside or inside the folder)."""
        config = load_config(path)
        classifier = any("SequenceClassification" in a for a in config.architectures or [])
        windows = None
        if classifier:  # read, and checked against max_length, before the weights load
            windows = recorded_windows(path, [config.id2label[i] for i in range(config.num_labels)])
            if windows:
                windows.check_max_length(kwargs.get("max_length"))
                log.info("%s: fine-tuned on %s; notes are classified the same way", windows.record, windows.describe())
            else:
                log.info(
                    "%s: no results.json of a fine-tuning run beside or inside it, so no windows: notes longer than "
                    "the maximum length are cut",
                    path,
                )
        auto = AutoModelForSequenceClassification if classifier else AutoModel
        attn_implementation = known_attention(attn_implementation, device)  # varlen falls back where it cannot run
        model = load_pretrained(
            auto, path, allow_pickle, flag="--allow_pickle", attn_implementation=attn_implementation, dtype=dtype
        )
        return cls(model.to(device), load_tokenizer(path), windows=windows, **kwargs)

    @torch.inference_mode()
    def encode(
        self,
        texts: list[str],
        batching: str = "packed",
        batch_tokens: int = 16384,
        notes_per_batch: int = 16,
        progress: bool = False,
    ) -> tuple[torch.Tensor, TokenizedNotes]:
        """Outputs in the order of `texts` ([notes, hidden] embeddings or [notes, labels] logits) and
        the tokenized notes (lengths, which were cut or windowed)."""
        notes = (
            window_notes(self.tokenizer, texts, self.windows)
            if self.windows
            else tokenize_notes(self.tokenizer, texts, self.max_length)
        )
        return self.encode_tokenized(notes, batching, batch_tokens, notes_per_batch, progress), notes

    @torch.inference_mode()
    def encode_tokenized(
        self,
        notes: TokenizedNotes,
        batching: str = "packed",
        batch_tokens: int = 16384,
        notes_per_batch: int = 16,
        progress: bool = False,
    ) -> torch.Tensor:
        """Outputs per note; windowed notes' window logits combined as their fine-tuning run combined them."""
        if batching == "packed":
            batches = packed_batches(notes.lengths(), batch_tokens)
        elif batching == "padded":
            batches = padded_batches(notes.lengths(), notes_per_batch)
        else:
            raise ConfigError(f"batching '{batching}': choose one of {', '.join(BATCHINGS)}")
        outputs: list[torch.Tensor | None] = [None] * len(notes.ids)
        unit = "notes" if notes.window_note is None else "windows"
        with tqdm(total=len(notes.ids), desc=unit, unit=f" {unit}", disable=not progress) as bar:
            for rows in batches:
                if batching == "packed":
                    rows = self.layout(rows)
                for i, output in zip(
                    (i for row in rows for i in row), self._run(rows, notes, packed=batching == "packed"), strict=True
                ):
                    outputs[i] = output
                bar.update(sum(len(row) for row in rows))
        width = self.model.config.num_labels if self.classifier else self.model.config.hidden_size
        if not outputs:
            return torch.zeros((0, width))
        if notes.window_note is None:
            return torch.stack(outputs)
        per_window = torch.stack(outputs).numpy()
        aggregation = self.windows.aggregation
        return torch.from_numpy(combine_windows(per_window, notes.window_note, len(notes.truncated), aggregation))

    def layout(self, rows: list[list[int]]) -> list[list[int]]:
        """A packed batch's rows as the encoder runs them: one row of all its notes on a backend that attends
        per note (its cost follows the notes, and a row's padded tail would be work for nothing), else as given."""
        if self.encoder.config._attn_implementation in PER_DOCUMENT_BACKENDS:
            return [[i for row in rows for i in row]]
        return rows

    def _run(self, rows: list[list[int]], notes: TokenizedNotes, packed: bool) -> Iterator[torch.Tensor]:
        packed_rows = [
            PackedRow(input_ids=[t for i in row for t in notes.ids[i]], doc_lengths=[len(notes.ids[i]) for i in row])
            for row in rows
        ]
        width = max(len(row.input_ids) for row in packed_rows)
        batch = {k: v.to(self.device) for k, v in collate_rows(packed_rows, self.tokenizer.pad_token_id, width).items()}
        doc_ids = batch["doc_ids"]
        config = self.encoder.config
        if packed:
            masks = packed_attention_kwargs(
                doc_ids, config._attn_implementation, config.sliding_window, self.encoder.dtype
            )
            hidden = self.encoder(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"], **masks
            ).last_hidden_state
        else:
            hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=(doc_ids >= 0).long()).last_hidden_state
        pooled = []
        for r, row in enumerate(rows):
            offset = 0
            for i in row:
                n = len(notes.ids[i])
                span = hidden[r, offset : offset + n]
                pooled.append(span[0] if self.pooling == "cls" else span.mean(dim=0))
                offset += n
        pooled = torch.stack(pooled)
        if self.classifier:
            pooled = self.model.classifier(self.model.drop(self.model.head(pooled)))
        return iter(pooled.float().cpu())

    def label_scores(self, logits: torch.Tensor) -> tuple[list[str], list[list[str]], torch.Tensor]:
        """The label names, and per note the predicted labels and per-label scores (sigmoid for multi-label, else
        softmax)."""
        names = [self.model.config.id2label[i] for i in range(logits.shape[1])]
        if self.model.config.problem_type == "multi_label_classification":
            scores = torch.sigmoid(logits)
            labels = [[names[j] for j in torch.nonzero(row >= 0.5).flatten().tolist()] for row in scores]
        else:
            scores = torch.softmax(logits, dim=-1)
            labels = [[names[int(row.argmax())]] for row in scores]
        return names, labels, scores
