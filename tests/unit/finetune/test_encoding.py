"""Windows for long documents, first-sub-token labels, and merging windows back to documents and words."""

from __future__ import annotations

import numpy as np
import pytest

from modeling.finetune.config import task_from_dict
from modeling.finetune.encoding import IGNORE, document_logits, encode_split, load_task_tokenizer, word_logits
from modeling.finetune.examples import Example, join_words


def ner_task(**extra):
    return task_from_dict(
        {
            "name": "t",
            "task": "ner",
            "labels": ["Drug"],
            "data": {"loader": "jsonl", "path": "/x"},
            "window_stride": 4,
            **extra,
        }
    )


def ner_example(words, tags, id="doc"):
    text, spans = join_words(words)
    return Example(id=id, text=text, words=spans, tags=tags)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("tok")
    tiny_tokenizer.save_pretrained(folder)
    return str(folder)


def test_ner_tokenizer_puts_a_space_before_each_word(tokenizer_dir):
    plain = load_task_tokenizer(tokenizer_dir, "single_label")
    ner = load_task_tokenizer(tokenizer_dir, "ner")
    words = ["patient", "denies", "fever"]
    glued = plain.convert_ids_to_tokens(plain(words, is_split_into_words=True)["input_ids"])
    encoded = ner(words, is_split_into_words=True)
    spaced = ner.convert_ids_to_tokens(encoded["input_ids"])
    # the same tokens as the words in running text, and every word's first sub-token carries the space
    assert spaced[1:-1] == ner.convert_ids_to_tokens(
        ner(" patient denies fever", add_special_tokens=False)["input_ids"]
    )
    word_ids = encoded.word_ids()
    firsts = [t for i, t in enumerate(spaced) if word_ids[i] is not None and word_ids[i] != word_ids[i - 1]]
    assert len(firsts) == 3
    assert all(t.startswith("Ġ") for t in firsts)
    assert glued != spaced


def test_long_ner_document_is_windowed_and_each_word_labelled_once(tokenizer_dir):
    tokenizer = load_task_tokenizer(tokenizer_dir, "ner")
    words = ("patient took insulin and metformin for diabetes " * 12).split()
    tags = ["B-Drug" if w in ("insulin", "metformin") else "O" for w in words]
    split = encode_split("test", [ner_example(words, tags)], tokenizer, ner_task(), max_length=32)
    assert len(split.features) > 3
    assert all(len(f["input_ids"]) <= 32 for f in split.features)
    label_ids = ["O", "B-Drug", "I-Drug"]
    labelled = {}
    for feature, window_words in zip(split.features, split.window_words, strict=True):
        for label, word in zip(feature["labels"], window_words, strict=True):
            assert (label == IGNORE) == (word < 0)
            if word >= 0:
                assert label_ids[label] == tags[word]
                labelled.setdefault(word, 0)
                labelled[word] += 1
    assert set(labelled) == set(range(len(words)))  # every word is labelled in some window (the overlap twice)

    # Merge: logits that say "B-Drug" exactly where the word is a drug give back the gold tags, one per word.
    logits = np.zeros((len(split.features), 32, 3), dtype=np.float32)
    for w, feature_words in enumerate(split.window_words):
        for position, word in enumerate(feature_words):
            if word >= 0:
                logits[w, position, label_ids.index(tags[word])] = 5.0
    (merged,) = word_logits(split, logits)
    assert [label_ids[i] for i in merged.argmax(-1)] == tags


def test_word_prediction_comes_from_the_window_with_most_context(tokenizer_dir):
    tokenizer = load_task_tokenizer(tokenizer_dir, "ner")
    words = ("blood pressure heart rate normal " * 8).split()
    split = encode_split(
        "test", [ner_example(words, ["O"] * len(words))], tokenizer, ner_task(window_stride=8), max_length=24
    )
    shared = [w for w in range(len(words)) if sum(w in ww for ww in split.window_words) > 1]
    assert shared, "windows must overlap"
    logits = np.zeros((len(split.features), 24, 3), dtype=np.float32)
    for window, feature_words in enumerate(split.window_words):
        for position, word in enumerate(feature_words):
            if word >= 0:
                logits[window, position, 0] = min(position, len(feature_words) - 1 - position)  # context as the score
    (merged,) = word_logits(split, logits)
    for word in shared:
        contexts = [min(p, len(ww) - 1 - p) for ww in split.window_words for p, x in enumerate(ww) if x == word]
        assert merged[word, 0] == max(contexts)


def test_classification_windows_carry_the_document_label_and_are_aggregated(tokenizer_dir):
    tokenizer = load_task_tokenizer(tokenizer_dir, "single_label")
    task = task_from_dict(
        {
            "name": "t",
            "task": "single_label",
            "labels": ["neg", "pos"],
            "window_stride": 4,
            "data": {"loader": "jsonl", "path": "/x"},
        }
    )
    long = Example(id="a", text="patient denies chest pain fever cough " * 20, labels=["pos"])
    short = Example(id="b", text="discharged home stable", labels=["neg"])
    split = encode_split("validation", [long, short], tokenizer, task, max_length=32, sort_by_length=True)
    windows_of_long = [i for i, e in enumerate(split.window_example) if e == 0]
    assert len(windows_of_long) > 2
    assert all(split.features[i]["labels"] == 1 for i in windows_of_long)
    assert split.window_example[-1] == 1  # sorted longest first: the short document's single window comes last
    logits = np.array([[float(i), -float(i)] for i in range(len(split.features))])
    mean = document_logits(split, logits, "mean")
    maximum = document_logits(split, logits, "max")
    assert mean[0, 0] == pytest.approx(np.mean([logits[i, 0] for i in windows_of_long]))
    assert maximum[0, 1] == pytest.approx(max(logits[i, 1] for i in windows_of_long))
    assert mean.shape == (2, 2)
