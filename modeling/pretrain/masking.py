"""MLM masking: a collator whose output is a pure function of (seed, stream, row index).

Unlike transformers' DataCollatorForLanguageModeling (whose RNG is not checkpointed and whose
probability, changed from a callback, lags behind prefetching and never reaches worker processes),
every row here is masked with its own generator seeded from its position in the data stream, and
with the probability the phase's MaskingSchedule gives for that position. A resumed run, a run with
dataloader workers, and an uninterrupted run therefore mask identically.
"""

from __future__ import annotations

import hashlib

import torch

from modeling.data.packing import PackedRow, Packing, collate_rows
from modeling.pretrain.schedules import MaskingSchedule


def row_seed(seed: int, stream: str, row_index: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{stream}/{row_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


class MLMCollator:
    """Pads packed rows into a batch of the packing's row length and masks them: of the chosen positions 80%
    become [MASK], 10% a random non-special token, 10% stay (BERT's shares); special tokens and padding are never
    chosen. `stream` names the data stream the rows come from (e.g. "train/phase1"): its rows are masked apart
    from another stream's rows of the same index."""

    MASK_SHARE = 0.8
    RANDOM_SHARE = 0.1

    def __init__(
        self, tokenizer, packing: Packing, schedule: MaskingSchedule, seed: int, stream: str, num_sources: int = 1
    ):
        self.packing, self.schedule, self.seed, self.stream = packing, schedule, seed, stream
        self.num_sources = num_sources
        self.mask_id, self.pad_id = tokenizer.mask_token_id, tokenizer.pad_token_id
        special = set(tokenizer.all_special_ids)
        self.special_ids = torch.tensor(sorted(special), dtype=torch.long)
        self.random_ids = torch.tensor([i for i in range(len(tokenizer)) if i not in special], dtype=torch.long)

    def __call__(self, rows: list[PackedRow]) -> dict:
        batch = collate_rows(rows, self.pad_id, self.packing.row_length, self.num_sources)
        input_ids = batch["input_ids"]
        labels = torch.full_like(input_ids, -100)
        for b, row in enumerate(rows):
            self._mask_row(input_ids[b], labels[b], row.row_index)
        batch["labels"] = labels
        return batch

    def _mask_row(self, ids: torch.Tensor, labels: torch.Tensor, row_index: int):
        generator = torch.Generator().manual_seed(row_seed(self.seed, self.stream, row_index))
        p = self.schedule.probability(row_index)
        maskable = ~torch.isin(ids, self.special_ids)
        chosen = (torch.rand(ids.shape, generator=generator) < p) & maskable
        if not chosen.any() and maskable.any():
            # A row with no target would give an empty sparse batch; always predict at least one token.
            candidates = maskable.nonzero().flatten()
            chosen[candidates[torch.randint(len(candidates), (1,), generator=generator)]] = True
        labels[chosen] = ids[chosen]
        action = torch.rand(ids.shape, generator=generator)
        to_mask = chosen & (action < self.MASK_SHARE)
        to_random = chosen & (action >= self.MASK_SHARE) & (action < self.MASK_SHARE + self.RANDOM_SHARE)
        random_tokens = self.random_ids[torch.randint(len(self.random_ids), ids.shape, generator=generator)]
        ids[to_mask] = self.mask_id
        ids[to_random] = random_tokens[to_random]
