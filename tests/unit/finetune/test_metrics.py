"""The local evaluate modules against values computed by hand."""

from __future__ import annotations

import pytest

from modeling.finetune.metrics import load_metric, metric_names, task_scores


def test_modules_load_offline_through_evaluate():
    import evaluate

    for name in ("seqeval_entities", "classification_f1", "multilabel_f1"):
        assert isinstance(load_metric(name), evaluate.Metric)


def test_seqeval_default_and_strict():
    gold = [["B-DRUG", "I-DRUG", "O", "B-DOSE", "O"], ["B-DRUG", "O"]]
    pred = [["B-DRUG", "I-DRUG", "O", "I-DOSE", "O"], ["O", "O"]]
    scores = task_scores("ner", pred, gold, None)
    # default (CoNLL) mode: the stray I-DOSE counts as the DOSE entity -> 2 right of 2 predicted, 3 gold
    assert scores["seqeval_precision"] == pytest.approx(1.0)
    assert scores["seqeval_recall"] == pytest.approx(2 / 3)
    assert scores["seqeval_f1"] == pytest.approx(0.8)
    # strict IOB2: an entity must start with B-, so I-DOSE is no entity -> 1 of 1 predicted, 1 of 3 gold
    assert scores["seqeval_strict_precision"] == pytest.approx(1.0)
    assert scores["seqeval_strict_recall"] == pytest.approx(1 / 3)
    assert scores["seqeval_strict_f1"] == pytest.approx(0.5)
    assert scores["token_accuracy"] == pytest.approx(5 / 7)
    assert scores["seqeval_per_type"]["DRUG"]["recall"] == pytest.approx(0.5)


def test_single_label_and_chemprot_positive_micro_f1():
    labels = ["CPR:3", "CPR:4", "false"]
    gold = [0, 0, 1, 2, 2, 2]
    pred = [0, 2, 1, 2, 0, 2]
    scores = task_scores("single_label", pred, gold, labels, negative_labels=["false"])
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["micro_f1"] == pytest.approx(4 / 6)
    # per class F1: CPR:3 p=1/2 r=1/2 -> .5; CPR:4 1.0; false p=2/3 r=2/3 -> 2/3
    assert scores["macro_f1"] == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    assert scores["weighted_f1"] == pytest.approx((2 * 0.5 + 1 * 1.0 + 3 * 2 / 3) / 6)
    # positives only: tp = 2 (one CPR:3, one CPR:4), predicted positive 3, gold positive 3
    assert scores["positive_micro_precision"] == pytest.approx(2 / 3)
    assert scores["positive_micro_recall"] == pytest.approx(2 / 3)
    assert scores["positive_micro_f1"] == pytest.approx(2 / 3)
    assert "positive_micro_f1" not in task_scores("single_label", pred, gold, labels)


def test_multi_label_thresholds_logits_at_zero():
    logits = [[2.0, -1.0, 0.5], [-0.1, 0.3, -2.0], [1.0, 1.0, 1.0]]
    gold = [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    scores = task_scores("multi_label", logits, gold, ["a", "b", "c"])
    # predicted sets: {a, c}, {b}, {a, b, c}: tp = 4 (a, b, a, c), fp = 2, fn = 0
    assert scores["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 2))
    # per label F1: a 1.0; b p=1/2 r=1 -> 2/3; c p=1/2 r=1 -> 2/3
    assert scores["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert scores["weighted_f1"] == pytest.approx((2 * 1 + 1 * 2 / 3 + 1 * 2 / 3) / 4)
    assert scores["subset_accuracy"] == pytest.approx(1 / 3)


def test_every_reported_score_is_a_named_metric():
    scores = task_scores("single_label", [0, 1], [0, 1], ["x", "y"])
    assert set(scores) == set(metric_names("single_label"))
