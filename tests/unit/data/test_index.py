"""Row indexes: pieces cut as training always cut documents, best-fit packing over lengths alone, the
orders documents are drawn in, and collation."""

import random

import numpy as np
from helpers import synthetic_documents

from modeling.data.index import (
    PhaseDocuments,
    epoch_order,
    pack_documents,
    pack_pieces,
    pieces,
    weighted_order,
)
from modeling.data.packers import best_fit_rows
from modeling.data.packing import PackedRow, Packing, collate_rows, packing_efficiency
from modeling.data.rows import pack_token_lists


def test_documents_are_wrapped_and_long_ones_cut_into_wrapped_pieces(tiny_tokenizer):
    long_doc = " ".join(["pneumonia"] * 300)
    ids = [tiny_tokenizer(text, add_special_tokens=False)["input_ids"] for text in ("fever", long_doc)]
    cls, sep = tiny_tokenizer.cls_token_id, tiny_tokenizer.sep_token_id
    rows = pack_token_lists(ids, Packing(64, cls, sep))
    seen = []
    for row in rows:
        for offset, length in zip(_offsets(row.doc_lengths), row.doc_lengths, strict=True):
            chunk = list(row.input_ids[offset : offset + length])
            assert chunk[0] == cls
            assert chunk[-1] == sep
            assert length <= 64
            seen.append(tuple(chunk[1:-1]))
    expected = [tuple(ids[0])] + [tuple(ids[1][s : s + 62]) for s in range(0, len(ids[1]), 62)]
    assert sorted(seen) == sorted(expected)  # every token once, cut every 62 tokens
    assert sum(row.doc_starts.count(True) for row in rows) == 2  # one first piece per document


def test_pieces_cover_each_document_once():
    lengths = np.array([0, 5, 62, 63, 200])
    source, document, start, length = pieces(np.zeros(5, np.int16), np.arange(5), lengths, body=62)
    assert document.tolist() == [0, 1, 2, 3, 3, 4, 4, 4, 4]
    assert start.tolist() == [0, 0, 0, 0, 62, 0, 62, 124, 186]
    assert length.tolist() == [0, 5, 62, 62, 1, 62, 62, 62, 14]


def test_best_fit_keeps_every_piece_and_respects_the_length():
    rng = random.Random(0)
    lengths = np.array([rng.randint(3, 200) for _ in range(500)])
    index = pack_pieces(
        np.zeros(500, np.int16), np.arange(500), np.zeros(500, np.int64), lengths - 2, Packing(256, 0, 0, 8)
    )
    per_row = np.add.reduceat(index.length + 2, index.row_start[:-1])
    assert (per_row <= 256).all()
    assert sorted(index.document.tolist()) == list(range(500))


def test_best_fit_picks_the_tightest_open_row():
    # Two rows open with 4 and 5 free; a piece of 4 fits both and goes to the tighter, which closes first.
    rows, count = best_fit_rows(np.array([6, 5, 4]), 10, 4, 3)
    assert rows.tolist() == [0, 1, 0]
    assert count == 2


def test_efficiency_on_a_clinical_note_length_mix():
    """Long-tailed lengths (mean ~1,500 tokens, up to 8,192, cut at the row length): >= 97% of positions real."""
    rng = random.Random(1)
    lengths = np.array([min(8192, max(20, int(rng.lognormvariate(6.9, 0.8)))) for _ in range(3000)])
    assert 1200 < lengths.mean() < 1800
    index = pack_documents(np.zeros(3000, np.int16), np.arange(3000), lengths, Packing(8192, 0, 0))
    assert index.tokens() / (len(index) * 8192) >= 0.97


def test_efficiency_on_abstract_like_lengths():
    rng = random.Random(2)
    lengths = np.array([max(10, int(rng.gauss(320, 110))) for _ in range(5000)])  # with [CLS] and [SEP]
    index = pack_documents(np.zeros(5000, np.int16), np.arange(5000), lengths - 2, Packing(1024, 0, 0))
    rows = [PackedRow(np.zeros(int(n)), []) for n in np.add.reduceat(index.length + 2, index.row_start[:-1])]
    assert packing_efficiency(rows, 1024) >= 0.97


def test_collate_numbers_documents_and_restarts_positions():
    rows = [
        PackedRow(input_ids=[1, 5, 2, 1, 6, 7, 2], doc_lengths=[3, 4], doc_sources=[0, 1]),
        PackedRow(input_ids=[1, 8, 2], doc_lengths=[3], doc_sources=[1]),
    ]
    batch = collate_rows(rows, pad_id=0, max_seq_length=8, num_sources=2)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["doc_ids"][0].tolist() == [0, 0, 0, 1, 1, 1, 1, -1]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 0, 1, 2, 3, 0]
    assert batch["input_ids"][1].tolist() == [1, 8, 2, 0, 0, 0, 0, 0]
    assert batch["source_tokens"].tolist() == [[3, 4], [0, 3]]


def _Documents(counts):
    return PhaseDocuments.of_lengths({f"s{i}": np.full(n, 10) for i, n in enumerate(counts)})


def test_natural_proportion_draws_every_document_once_per_epoch_in_a_new_order():
    documents = _Documents([200, 50])
    first, second = (epoch_order(documents, seed=3, phase="p", epoch=e) for e in (0, 1))
    for source, document in (first, second):
        assert sorted(zip(source.tolist(), document.tolist(), strict=True)) == [(0, d) for d in range(200)] + [
            (1, d) for d in range(50)
        ]
    assert first[1].tolist() != second[1].tolist()
    again = epoch_order(documents, seed=3, phase="p", epoch=0)
    assert again[1].tolist() == first[1].tolist(), "the same (seed, phase, epoch) gives the same order"
    # the sources are interleaved across the whole epoch, not read one after the other
    assert 0.1 < (first[0][:125] == 1).mean() < 0.3
    assert 0.1 < (first[0][125:] == 1).mean() < 0.3


def test_weighted_sources_are_drawn_by_weight_and_start_again():
    source, document = weighted_order(_Documents([300, 30]), [1.0, 3.0], seed=3, phase="p", count=2000)
    assert 0.72 < (source == 1).mean() < 0.78  # weight 3 of 4
    small = document[source == 1]
    assert len(small) > 10 * 30
    assert sorted(small[:30].tolist()) == list(range(30))  # whole passes, restarted


def test_synthetic_documents_make_rows(tiny_tokenizer):
    ids = [tiny_tokenizer(t, add_special_tokens=False)["input_ids"] for t in synthetic_documents(60, seed=1)]
    rows = pack_token_lists(ids, Packing.of(tiny_tokenizer, 128))
    assert [r.row_index for r in rows] == list(range(len(rows)))
    assert sum(r.doc_starts.count(True) for r in rows) == 60
    assert packing_efficiency(rows, 128) > 0.9


def _offsets(lengths):
    out, o = [], 0
    for n in lengths:
        out.append(o)
        o += n
    return out
