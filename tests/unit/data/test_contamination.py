"""The contamination scan: planted copies and n-gram runs are found, disjoint text and held-out documents are not,
and every count equals a brute-force Python reference over the store's training documents."""

from __future__ import annotations

import random

import numpy as np
import pytest
from helpers import WORDS

from modeling.common.errors import DataError
from modeling.data.contamination import EvalDocument, EvalNgrams, ngram_keys, scan_store
from modeling.data.packing import plain_backend
from modeling.data.sources import SourceSpec
from modeling.data.store import Store, is_held_out, prepare_store

FRACTION = 0.1
N = 8


OTHER_WORDS = "zebra quartz violin harbor meadow lantern copper orchid glacier saddle".split()


def _random_text(rng, low=30, high=80, words=WORDS) -> str:
    """Words in random order (a few words may form a run another text has; a long run rarely)."""
    return " ".join(rng.choice(words) for _ in range(rng.randint(low, high))) + "."


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_tokenizer):
    tmp = tmp_path_factory.mktemp("contamination")
    rng = random.Random(5)
    corpus = [[_random_text(rng) for _ in range(150)] for _ in range(2)]
    for f, docs in enumerate(corpus):
        (tmp / f"notes{f}.txt").write_text("\n".join(docs) + "\n")
    tiny_tokenizer.save_pretrained(tmp / "store" / "tokenizer")
    with pytest.MonkeyPatch.context() as patch:  # shards of several record batches: rows are numbered across them
        patch.setattr("modeling.data.store.WRITE_BATCH", 16)
        prepare_store(tmp / "store", [SourceSpec("notes", str(tmp / "notes*.txt"), "text")], FRACTION, part_bytes=6000)
    train = [d for docs in corpus for d in docs if not is_held_out(d, FRACTION)]
    held_out = [d for docs in corpus for d in docs if is_held_out(d, FRACTION)]
    words = train[7].split()
    documents = [
        EvalDocument("t", "test", "copy", train[11]),
        EvalDocument("t", "test", "whole-0", train[3].upper()),  # re-cased: other tokens, the same text key
        EvalDocument("t", "test", "whole-1", train[40].replace(" ", "\n  ", 5)),  # re-wrapped
        EvalDocument("t", "test", "run", _random_text(rng, 10, 12) + " " + " ".join(words[5:25]) + " the end"),
        EvalDocument("t", "validation", "held-out", held_out[0]),
        *(EvalDocument("t", "validation", f"disjoint-{i}", _random_text(rng, words=OTHER_WORDS)) for i in range(5)),
        EvalDocument("t", "validation", "short", "fever"),
    ]
    return Store(tmp / "store"), EvalNgrams.tokenized(documents, tiny_tokenizer, n=N), tiny_tokenizer, train


def _reference(store: Store, evaluation: EvalNgrams, tokenizer, train_texts: list[str]) -> dict:
    """Brute force: every training n-gram of the store as a tuple in a set, every training text folded; each
    evaluation document's counts."""
    split = store.split("notes", "train")
    stored = {tuple(split.tokens(d)[i : i + N]) for d in range(len(split)) for i in range(len(split.tokens(d)) - N + 1)}
    whole = {" ".join(text.casefold().split()) for text in train_texts}
    backend = plain_backend(tokenizer)
    answers = {}
    for document in evaluation.documents:
        ids = backend.encode(document.text, add_special_tokens=False).ids
        grams = [tuple(ids[i : i + N]) for i in range(len(ids) - N + 1)]
        hits = [g in stored for g in grams]
        covered = np.zeros(len(ids), bool)
        for i, hit in enumerate(hits):
            covered[i : i + N] |= hit
        answers[document.id] = {
            "ngrams": len(grams),
            "ngrams_in_store": sum(hits),
            "covered": float(covered.mean()) if ids else 0.0,
            "whole": " ".join(document.text.casefold().split()) in whole,
        }
    return answers


def test_the_scan_finds_what_was_planted_and_nothing_else(planted):
    store, evaluation, _, _ = planted
    report = scan_store(store, evaluation, num_proc=1)
    by_id = {d.id: d for d in report.documents}
    assert by_id["copy"].whole
    assert by_id["copy"].covered == 1.0
    assert by_id["copy"].ngrams_in_store == by_id["copy"].ngrams
    assert by_id["copy"].store_documents[0].startswith("notes/train-")
    assert by_id["whole-0"].whole
    assert by_id["whole-0"].ngrams_in_store == 0  # upper case tokenizes apart: the text key finds it
    assert by_id["whole-1"].whole
    assert not by_id["run"].whole
    assert 0.3 < by_id["run"].covered < 1.0
    assert not any(d.startswith("disjoint") or d == "short" for d in by_id)  # other words, too short: no match
    assert "held-out" not in by_id or not by_id["held-out"].whole  # held-out documents are not trained on
    assert [d.id for d in report.documents][:3] == ["copy", "whole-1", "whole-0"]  # whole first, most covered first
    assert all(d.covered < 1.0 for d in report.documents if not d.whole)
    assert report.text_keys
    assert report.store_documents == store.manifest.sources["notes"].documents["train"]
    assert report.store_tokens == store.manifest.sources["notes"].tokens["train"]
    splits = {s.split: s for s in report.splits}
    assert (splits["test"].documents, splits["test"].whole) == (4, 3)
    assert splits["test"].with_ngram == sum(1 for d in report.documents if d.split == "test" and d.ngrams_in_store)
    assert (splits["validation"].documents, splits["validation"].whole) == (7, 0)


def test_the_scan_counts_what_a_brute_force_reference_counts(planted):
    store, evaluation, tokenizer, train = planted
    report = scan_store(store, evaluation, num_proc=1)
    found = {d.id: d for d in report.documents}
    reference = _reference(store, evaluation, tokenizer, train)
    for document in evaluation.documents:
        expected = reference[document.id]
        if document.id not in found:
            assert expected["ngrams_in_store"] == 0, document.id
            assert not expected["whole"], document.id
            continue
        got = found[document.id]
        assert got.ngrams == expected["ngrams"], document.id
        assert got.ngrams_in_store == expected["ngrams_in_store"], document.id
        assert got.covered == pytest.approx(expected["covered"]), document.id
        assert got.whole == expected["whole"], document.id


def test_the_store_documents_named_hold_what_they_are_named_for(planted):
    from modeling.data.ngrams import text_key
    from modeling.data.store import StoreSplit

    store, evaluation, tokenizer, _ = planted
    assert len(store.split("notes").values) > 2  # several record batches
    report = scan_store(store, evaluation, num_proc=1)
    backend = plain_backend(tokenizer)
    texts = {d.id: d.text for d in evaluation.documents}
    checked = 0
    for document in report.documents:
        ids = backend.encode(texts[document.id], add_special_tokens=False).ids
        grams = {tuple(ids[i : i + N]) for i in range(len(ids) - N + 1)}
        for k, name in enumerate(document.store_documents):
            shard, row = name.split("#")
            path = store.folder.folder / shard
            if k == 0 and document.whole:
                assert StoreSplit([path]).text_keys()[int(row)] == text_key(texts[document.id]), name
                continue
            held = StoreSplit([path]).tokens(int(row)).tolist()
            assert any(tuple(held[i : i + N]) in grams for i in range(len(held) - N + 1)), name
            checked += 1
    assert checked >= 2


def test_two_processes_report_what_one_does(planted):
    store, evaluation, _, _ = planted
    one, two = scan_store(store, evaluation, num_proc=1), scan_store(store, evaluation, num_proc=2)
    assert two.processes == 2
    assert [d.to_dict() for d in two.documents] == [d.to_dict() for d in one.documents]
    assert [s.to_dict() for s in two.splits] == [s.to_dict() for s in one.splits]


def test_ngram_keys_roll_as_they_would_be_computed_from_scratch():
    tokens = np.array([5, 9, 2, 2, 7, 0, 65535, 3, 9, 2, 2, 7], dtype=np.int64)
    rolled = ngram_keys(tokens, 4)
    from_scratch = np.array([ngram_keys(tokens[i : i + 4], 4)[0] for i in range(len(tokens) - 3)])
    assert np.array_equal(rolled, from_scratch)
    assert rolled[1] == rolled[8]  # the same 4 ids, the same key
    assert len(set(rolled.tolist())) == len(rolled) - 1
    assert len(ngram_keys(tokens[:3], 4)) == 0


def test_a_clean_store_leaves_out_exactly_the_documents_sharing_a_run_with_the_evaluation(tmp_path, tiny_tokenizer):
    from modeling.data.ngrams import text_key
    from modeling.data.store import StoreSplit

    rng = random.Random(9)
    corpus = [_random_text(rng) for _ in range(200)]
    (tmp_path / "notes.txt").write_text("\n".join(corpus) + "\n")
    documents = [
        EvalDocument("t", "test", "copy", corpus[5].upper()),
        EvalDocument(
            "t", "test", "run", _random_text(rng, words=OTHER_WORDS) + " " + " ".join(corpus[50].split()[3:23])
        ),
        EvalDocument("t", "test", "other", _random_text(rng, words=OTHER_WORDS)),
    ]
    evaluation = EvalNgrams.tokenized(documents, tiny_tokenizer, n=N)
    tiny_tokenizer.save_pretrained(tmp_path / "store" / "tokenizer")
    spec = SourceSpec("notes", str(tmp_path / "notes.txt"), "text")
    manifest = prepare_store(
        tmp_path / "store", [spec], FRACTION, exclusion=evaluation.exclusion(), exclusion_tasks=[("t.yaml", None)]
    )
    # brute force: the documents whose folded text is an evaluation document's, or that share a run of N ids
    backend = plain_backend(tiny_tokenizer)
    grams = {tuple(ids[i : i + N]) for ids in evaluation.tokens for i in range(len(ids) - N + 1)}
    folded = {" ".join(d.text.casefold().split()) for d in documents}
    expected = set()
    for i, text in enumerate(corpus):
        ids = backend.encode(text, add_special_tokens=False).ids
        if " ".join(text.casefold().split()) in folded or any(
            tuple(ids[j : j + N]) in grams for j in range(len(ids) - N + 1)
        ):
            expected.add(i)
    assert {5, 50} <= expected
    kept = set()
    for part in manifest.sources["notes"].parts:
        for shard in part.shards.values():
            kept |= set(StoreSplit([tmp_path / "store" / "notes" / shard.file]).text_keys().tolist())
    left_out = {i for i, text in enumerate(corpus) if text_key(text) not in kept}
    assert left_out == expected
    skipped = manifest.sources["notes"].skipped
    assert skipped["an evaluation document"] == 1
    assert skipped[f"shares a {N}-token run with an evaluation document"] == len(expected) - 1
    assert manifest.exclusion.tasks == ["t.yaml"]
    assert manifest.exclusion.documents == 3
    assert Store(tmp_path / "store").manifest.exclusion.fingerprint == evaluation.exclusion().fingerprint()
    # a killed prepare continued with other evaluation sets left out is refused before any work
    (tmp_path / "store" / "manifest.json").unlink()
    other = EvalNgrams.tokenized(documents[:1], tiny_tokenizer, n=N).exclusion()
    with pytest.raises(DataError, match="prepared leaving out other evaluation documents"):
        prepare_store(tmp_path / "store", [spec], FRACTION, exclusion=other, exclusion_tasks=[("t.yaml", None)])
