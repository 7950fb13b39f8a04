"""The frequency-only baseline every pretraining run reports next to its held-out loss."""

import math

import pytest

from modeling.data.packing import PackedRow
from modeling.data.rows import unigram_entropy

CLS, SEP, PAD = 1, 2, 0


def _row(ids):
    return PackedRow(input_ids=[CLS, *ids, SEP], doc_lengths=[len(ids) + 2])


def test_uniform_tokens_give_log_of_their_number_and_special_tokens_are_left_out():
    rows = [_row([10, 11, 12, 13]), _row([10, 11, 12, 13, PAD, PAD])]  # padding would add a fifth symbol
    assert unigram_entropy(rows, {CLS, SEP, PAD}) == pytest.approx(math.log(4))


def test_skewed_frequencies():
    rows = [_row([5, 5, 5, 6])]
    p = (0.75, 0.25)
    assert unigram_entropy(rows, {CLS, SEP}) == pytest.approx(-sum(q * math.log(q) for q in p))
    assert unigram_entropy([_row([7, 7, 7])], {CLS, SEP}) == 0.0
