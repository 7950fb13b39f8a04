"""Masking: 80/10/10, never special tokens or padding, a pure function of (seed, stream, row index)."""

import torch

from modeling.data.packing import PackedRow, Packing
from modeling.pretrain.masking import MLMCollator
from modeling.pretrain.schedules import MaskingSchedule


def _rows(tokenizer, n=64, length=120):
    g = torch.Generator().manual_seed(0)
    ordinary = [i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids]
    rows = []
    for r in range(n):
        body = [ordinary[i] for i in torch.randint(len(ordinary), (length - 4,), generator=g)]
        half = len(body) // 2
        ids = [
            tokenizer.cls_token_id,
            *body[:half],
            tokenizer.sep_token_id,
            tokenizer.cls_token_id,
            *body[half:],
            tokenizer.sep_token_id,
        ]
        rows.append(PackedRow(ids, doc_lengths=[half + 2, len(body) - half + 2], doc_sources=[0, 0], row_index=r))
    return rows


def _collator(tokenizer, p=0.3, end=None, total=64, seed=1, stream="train/p1"):
    schedule = MaskingSchedule(p, p if end is None else end, total)
    return MLMCollator(tokenizer, Packing.of(tokenizer, 128), schedule, seed, stream)


def test_80_10_10_and_never_special_or_padding(tiny_tokenizer):
    rows = _rows(tiny_tokenizer)
    original = torch.full((len(rows), 128), tiny_tokenizer.pad_token_id)
    for b, r in enumerate(rows):
        original[b, : len(r.input_ids)] = torch.tensor(r.input_ids)
    batch = _collator(tiny_tokenizer)(rows)
    chosen = batch["labels"] != -100
    special = torch.isin(original, torch.tensor(tiny_tokenizer.all_special_ids))
    assert not (chosen & special).any()
    assert torch.equal(batch["labels"][chosen], original[chosen])
    rate = chosen.sum() / (~special).sum()
    assert abs(rate - 0.3) < 0.02
    masked = (batch["input_ids"] == tiny_tokenizer.mask_token_id) & chosen
    unchanged = (batch["input_ids"] == original) & chosen
    randomised = chosen & ~masked & ~unchanged
    n = chosen.sum()
    assert abs(masked.sum() / n - 0.8) < 0.03
    assert abs((unchanged.sum() / n) - 0.1) < 0.03  # includes random draws that hit the same token (rare)
    assert abs(randomised.sum() / n - 0.1) < 0.03
    assert not torch.isin(batch["input_ids"][randomised], torch.tensor(tiny_tokenizer.all_special_ids)).any()
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen])


def test_masking_depends_only_on_seed_stream_and_row(tiny_tokenizer):
    rows = _rows(tiny_tokenizer, n=8)
    whole = _collator(tiny_tokenizer)(rows)
    # The same rows, collated in other groupings and in another order, mask the same way.
    parts = [_collator(tiny_tokenizer)(rows[i : i + 3]) for i in (0, 3, 6)]
    assert torch.equal(torch.cat([p["labels"] for p in parts]), whole["labels"])
    backwards = _collator(tiny_tokenizer)(rows[::-1])
    assert torch.equal(backwards["input_ids"].flip(0), whole["input_ids"])
    assert not torch.equal(_collator(tiny_tokenizer, seed=2)(rows)["labels"], whole["labels"])
    assert not torch.equal(_collator(tiny_tokenizer, stream="train/p2")(rows)["labels"], whole["labels"])


def test_ramp_follows_the_row_position(tiny_tokenizer):
    schedule = MaskingSchedule(0.3, 0.15, total_rows=101)
    assert schedule.probability(0) == 0.3
    assert abs(schedule.probability(100) - 0.15) < 1e-12
    assert abs(schedule.probability(50) - 0.225) < 1e-12
    rows = _rows(tiny_tokenizer, n=64)
    ramp = _collator(tiny_tokenizer, p=0.3, end=0.15, total=64)
    early = ramp(rows[:16])["labels"].ne(-100).float().mean()
    late = ramp(rows[48:])["labels"].ne(-100).float().mean()
    assert early > late + 0.05


def test_a_row_always_gets_a_target(tiny_tokenizer):
    row = PackedRow([tiny_tokenizer.cls_token_id, 100, tiny_tokenizer.sep_token_id], [3], doc_sources=[0], row_index=0)
    batch = _collator(tiny_tokenizer, p=0.01)([row])
    assert batch["labels"].ne(-100).sum() == 1
    assert batch["labels"][0, 1] == 100
