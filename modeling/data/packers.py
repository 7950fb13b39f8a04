"""Which items share a row: every packer the project has, each deciding from lengths alone.

  best_fit_rows   pretraining's row index (modeling.data.index): tens of millions of document pieces in a stream,
                  online best fit with a few rows open (numba); rows numbered in the order they close
  balanced_rows   packed fine-tuning (modeling.finetune.packing): one batch's examples, in as few rows as fit,
                  as even as possible (dense masks pay for every row's full width)
  packed_batches  inference (modeling.inference.encoder): a file of notes, longest first, first-fit decreasing
                  into batches of rows as long as each batch's longest note

The interface they share: item lengths (tokens, [CLS]/[SEP] included) and a capacity in tokens in, the items'
indices grouped into rows out, every row within the capacity; nothing but lengths is read, so each is tested
and benchmarked on lengths alone. best_fit_rows answers with each piece's row number instead of lists (a numba
kernel over arrays of millions); packed_batches' capacity is a batch's (`batch_tokens`), its rows as long as
each batch's longest note, and it answers with batches of rows. What a row
then holds, and how rows are collated into tensors, is modeling.data.packing's.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def best_fit_rows(piece_lengths: np.ndarray, capacity: int, open_rows: int, min_piece: int):
    """Online best fit: each piece goes to the open row it fills most tightly (a new row when none has room);
    a row whose free space falls below `min_piece` is closed, and when more than `open_rows` rows are open
    the fullest is closed. Rows are numbered in the order they close. Returns (row of each piece, rows)."""
    n = piece_lengths.shape[0]
    provisional = np.empty(n, np.int64)  # rows are numbered as they open, then renumbered as they close
    final = np.full(n + 1, -1, np.int64)
    slot_row = np.empty(open_rows + 1, np.int64)
    slot_free = np.empty(open_rows + 1, np.int64)
    open_count = 0
    opened = 0
    closed = 0
    for i in range(n):
        length = piece_lengths[i]
        best = -1
        for s in range(open_count):
            if slot_free[s] >= length and (best < 0 or slot_free[s] < slot_free[best]):
                best = s
        if best < 0:
            best = open_count
            slot_row[best] = opened
            slot_free[best] = capacity
            opened += 1
            open_count += 1
        provisional[i] = slot_row[best]
        slot_free[best] -= length
        if slot_free[best] < min_piece:
            final[slot_row[best]] = closed
            closed += 1
            open_count -= 1
            slot_row[best] = slot_row[open_count]
            slot_free[best] = slot_free[open_count]
        if open_count > open_rows:
            fullest = 0
            for s in range(1, open_count):
                if slot_free[s] < slot_free[fullest]:
                    fullest = s
            final[slot_row[fullest]] = closed
            closed += 1
            open_count -= 1
            slot_row[fullest] = slot_row[open_count]
            slot_free[fullest] = slot_free[open_count]
    for s in range(open_count):  # the rows still open close in the order they opened
        final[slot_row[s]] = closed
        closed += 1
    rows = np.empty(n, np.int64)
    for i in range(n):
        rows[i] = final[provisional[i]]
    return rows, closed


def balanced_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices into `lengths` in as few rows of at most `capacity` tokens as it takes, the rows as even as
    possible: every row is padded to the longest, so an even split wastes least. Longest first, each into the
    least filled row; one more row whenever that overflows. Every length must be <= capacity."""
    rows_needed = -(-sum(lengths) // capacity)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    while True:
        rows: list[list[int]] = [[] for _ in range(rows_needed)]
        filled = [0] * rows_needed
        for i in order:
            r = filled.index(min(filled))
            rows[r].append(i)
            filled[r] += lengths[i]
        if max(filled) <= capacity:
            return [row for row in rows if row]
        rows_needed += 1


def packed_batches(lengths: list[int], batch_tokens: int) -> list[list[list[int]]]:
    """Batches of rows of note indices. Notes go longest first; a batch's rows are as long as its first
    (longest) note, each later note goes into the first row it fits (first-fit decreasing), and a batch
    closes when another row would pass `batch_tokens` positions (it always holds at least one row)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, rows, free, row_length = [], [], [], 0
    for i in order:
        n = lengths[i]
        fit = next((r for r, space in enumerate(free) if space >= n), None)
        if fit is not None:
            rows[fit].append(i)
            free[fit] -= n
            continue
        if rows and (len(rows) + 1) * row_length > batch_tokens:
            batches.append(rows)
            rows, free = [], []
        if not rows:
            row_length = n
        rows.append([i])
        free.append(row_length - n)
    if rows:
        batches.append(rows)
    return batches
