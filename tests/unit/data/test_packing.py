"""Tokenize + chunk + best-fit pack: nothing lost, nothing over length, rows nearly full."""

import itertools
import random
from collections import Counter

import pytest
from helpers import synthetic_documents
from torch.utils.data import DataLoader

from modeling.data.mixture import PhaseMixture
from modeling.data.packing import BestFitPacker, Chunker, PackedRow, PackedRows, collate_rows, pack, packing_efficiency
from modeling.data.sources import SourceSpec


def test_documents_are_wrapped_and_long_ones_cut_into_wrapped_chunks(tiny_tokenizer):
    long_doc = " ".join(["pneumonia"] * 300)
    chunks = list(Chunker(tiny_tokenizer, max_seq_length=64).chunks([(0, "fever"), (1, long_doc)]))
    cls, sep = tiny_tokenizer.cls_token_id, tiny_tokenizer.sep_token_id
    assert chunks[0][0] == 0 and chunks[0][1][0] == cls and chunks[0][1][-1] == sep
    body = tiny_tokenizer(long_doc, add_special_tokens=False)["input_ids"]
    long_chunks = [ids for source, ids in chunks if source == 1]
    assert len(long_chunks) == -(-len(body) // 62)
    assert all(ids[0] == cls and ids[-1] == sep and len(ids) <= 64 for ids in long_chunks)
    assert [t for ids in long_chunks for t in ids[1:-1]] == body  # every token kept, in order


def test_best_fit_keeps_every_chunk_and_respects_the_length():
    rng = random.Random(0)
    chunks = [(0, [rng.randrange(5, 100) for _ in range(rng.randint(3, 200))]) for _ in range(500)]
    rows = list(pack(chunks, 256, open_rows=8))
    assert all(len(r.input_ids) <= 256 for r in rows)
    assert all(sum(r.doc_lengths) == len(r.input_ids) for r in rows)
    packed = Counter(
        tuple(r.input_ids[o : o + n]) for r in rows for o, n in zip(_offsets(r.doc_lengths), r.doc_lengths, strict=True)
    )
    assert packed == Counter(tuple(ids) for _, ids in chunks)


def test_best_fit_picks_the_tightest_open_row():
    packer = BestFitPacker(10, open_rows=4)
    assert packer.add(0, [1] * 6) == [] and packer.add(0, [1] * 5) == []  # two rows: 4 free and 5 free
    done = packer.add(0, [2] * 4)  # fits both; the tightest is the row with 4 free, which becomes full
    assert [r.doc_lengths for r in done] == [[6, 4]]


def _offsets(lengths):
    out, o = [], 0
    for n in lengths:
        out.append(o)
        o += n
    return out


def test_efficiency_on_a_clinical_note_length_mix():
    """Long-tailed lengths (mean ~1,500 tokens, up to 8,192, cut at the row length): >= 97% of positions real."""
    rng = random.Random(1)
    lengths = [min(8192, max(20, int(rng.lognormvariate(6.9, 0.8)))) for _ in range(3000)]
    assert 1200 < sum(lengths) / len(lengths) < 1800
    body = 8190
    chunks = [(0, [7] * (min(body, n - s) + 2)) for n in lengths for s in range(0, n, body)]
    rows = list(pack(chunks, 8192))
    assert packing_efficiency(rows, 8192) >= 0.97


def test_efficiency_on_abstract_like_lengths():
    rng = random.Random(2)
    chunks = [(0, [7] * max(10, int(rng.gauss(320, 110)))) for _ in range(5000)]
    rows = list(pack(chunks, 1024))
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


def _mixture(tmp_path, n=120):
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(synthetic_documents(n, seed=5)) + "\n")
    return PhaseMixture(
        [SourceSpec("docs", str(path), "text")], None, holdout_fraction=0.05, seed=1, phase="p", shuffle_buffer=16
    )


def test_rows_do_not_depend_on_the_number_of_workers(tmp_path, tiny_tokenizer):
    dataset = PackedRows(_mixture(tmp_path), tiny_tokenizer, max_seq_length=64, batch_size=3, epochs=1)
    collate = lambda rows: rows  # noqa: E731 - keep rows as they are
    alone = [row for batch in DataLoader(dataset, batch_size=3, collate_fn=collate) for row in batch]
    workers = [row for batch in DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate) for row in batch]
    assert len(alone) > 10
    assert [r.row_index for r in alone] == list(range(len(alone)))
    assert [(r.row_index, r.input_ids) for r in workers] == [(r.row_index, r.input_ids) for r in alone]


def test_held_out_documents_never_reach_training(tmp_path, tiny_tokenizer):
    from modeling.data.mixture import StreamStats

    mixture = _mixture(tmp_path, n=400)
    held = [text for _, text in mixture.held_out_documents(1000)]
    stats = StreamStats()
    trained = [text for _, text in mixture.documents(stats, epochs=1)]
    assert held and trained and not set(held) & set(trained)
    assert len(held) + len(trained) == 400
    assert stats.sources["docs"].held_out == len(held) and stats.sources["docs"].documents == len(trained)
    assert stats.sources["docs"].complete
    assert len(held) / 400 < 0.15


def test_memory_does_not_grow_with_the_corpus(tmp_path, tiny_tokenizer):
    """Reading, shuffling, tokenizing and packing a corpus 10x larger peaks at about the same memory."""
    import tracemalloc

    peaks = {}
    for n in (3_000, 30_000):
        path = tmp_path / f"docs{n}.txt"
        path.write_text("\n".join(synthetic_documents(n, seed=n)) + "\n")
        mixture = PhaseMixture(
            [SourceSpec("docs", str(path), "text")], None, holdout_fraction=0.01, seed=1, phase="p", shuffle_buffer=500
        )
        rows = PackedRows(mixture, tiny_tokenizer, max_seq_length=256, batch_size=4, epochs=1)
        tracemalloc.start()
        count = sum(1 for _ in rows)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert count > n / 10
    print(f"peak traced memory: {peaks}")
    assert peaks[30_000] < 1.3 * peaks[3_000], peaks


def _source(tmp_path, name, n, seed):
    path = tmp_path / f"{name}.txt"
    path.write_text("\n".join(f"{name} {text}" for text in synthetic_documents(n, seed=seed)) + "\n")
    return SourceSpec(name, str(path), "text")


def test_weighted_sources_are_sampled_by_weight_and_restart(tmp_path):
    from modeling.data.mixture import StreamStats

    mixture = PhaseMixture(
        [_source(tmp_path, "big", 300, 1), _source(tmp_path, "small", 30, 2)],
        [1.0, 3.0],
        holdout_fraction=0.01,
        seed=3,
        phase="p",
        shuffle_buffer=50,
    )
    stats = StreamStats()
    picked = [source for source, _ in itertools.islice(mixture.documents(stats), 2000)]
    assert 0.72 < picked.count(1) / len(picked) < 0.78  # weight 3 of 4
    assert stats.sources["small"].passes_started > 10  # the small source starts again and again


def test_natural_proportion_reads_each_source_once_per_epoch(tmp_path):
    from modeling.data.mixture import StreamStats

    mixture = PhaseMixture(
        [_source(tmp_path, "a", 200, 1), _source(tmp_path, "b", 50, 2)],
        None,
        holdout_fraction=0.01,
        seed=3,
        phase="p",
        shuffle_buffer=50,
    )
    stats = StreamStats()
    texts = [text for _, text in mixture.documents(stats, epochs=2)]
    per_epoch = stats.sources["a"].documents + stats.sources["b"].documents
    assert len(texts) == 2 * per_epoch and sorted(texts[:per_epoch]) == sorted(texts[per_epoch:])
    assert texts[:per_epoch] != texts[per_epoch:]  # each epoch shuffled on its own


def test_natural_proportion_of_a_hub_dataset_needs_weights():
    from modeling.common.errors import DataError
    from modeling.data.mixture import StreamStats

    mixture = PhaseMixture([SourceSpec("hub", "some-org/notes", "hf")], None, holdout_fraction=0.01, seed=1, phase="p")
    with pytest.raises(DataError, match="give the phase's sources explicit weights"):
        next(mixture.epoch_documents(StreamStats(), 0))
