"""Packed fine-tuning: a packed batch gives the loss, every gradient and the predictions of the same examples
run one by one without padding, for each task type and attention backend; other encoders are left unpacked."""

from __future__ import annotations

import pytest
import torch
from helpers import synthetic_documents, tiny_model_config
from transformers import (
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    ModernBertForSequenceClassification,
    ModernBertForTokenClassification,
)

from modeling.common.attention import (
    DOCUMENT_SDPA,
    PER_DOCUMENT_BACKENDS,
    VARLEN,
    known_attention,
    reference_varlen_attn,
    varlen_kernel,
)
from modeling.data.packers import balanced_rows
from modeling.finetune.packing import PackedLayout, install_packing, right_padded_lengths

TOLERANCE = 1e-5
NUM_LABELS = 4


@pytest.fixture(autouse=True)
def _varlen_on_the_reference_kernel():
    """varlen's CUDA kernel cannot run here: its layout work runs with the plain reference kernel instead."""
    with varlen_kernel(reference_varlen_attn):
        yield


def examples(tokenizer, task: str, n: int = 9, seed: int = 5) -> list[dict]:
    # Lengths from a few tokens to near the model's window, so rows hold one to several examples.
    texts = synthetic_documents(n, seed=seed, min_words=1, max_words=70)
    generator = torch.Generator().manual_seed(seed)
    features = []
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        feature = {"input_ids": ids, "attention_mask": [1] * len(ids)}
        if task == "single_label":
            feature["labels"] = int(torch.randint(NUM_LABELS, (1,), generator=generator))
        elif task == "multi_label":
            feature["labels"] = torch.randint(2, (NUM_LABELS,), generator=generator).float().tolist()
        else:  # some tokens unlabelled, as sub-tokens after a word's first are
            labels = torch.randint(NUM_LABELS, (len(ids),), generator=generator)
            labels[torch.rand(len(ids), generator=generator) < 0.3] = -100
            feature["labels"] = labels.tolist()
        features.append(feature)
    return features


def task_model(tokenizer, task: str, pooling: str, attention: str):
    attention = known_attention(attention)
    torch.manual_seed(0)
    config = tiny_model_config(
        tokenizer,
        num_labels=NUM_LABELS,
        classifier_pooling=pooling,
        problem_type="multi_label_classification" if task == "multi_label" else None,
        max_position_embeddings=256,
    )
    auto = ModernBertForTokenClassification if task == "ner" else ModernBertForSequenceClassification
    return auto._from_config(config, attn_implementation=attention).float()


def collate(tokenizer, task: str, features: list[dict]) -> dict:
    collator = DataCollatorForTokenClassification(tokenizer) if task == "ner" else DataCollatorWithPadding(tokenizer)
    return collator([dict(f) for f in features])


def loss_and_gradients(model, batch) -> tuple[torch.Tensor, torch.Tensor, dict]:
    model.zero_grad()
    output = model(**batch)
    output.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return output.loss.detach(), output.logits.detach(), grads


def one_by_one(model, tokenizer, task: str, features: list[dict]):
    """The reference: each example alone, no padding; the batch loss as the head's reduction over the batch
    (mean over examples; NER: over labelled tokens; multi-label: over examples x labels)."""
    model.zero_grad()
    total, logits = 0.0, []
    labelled = sum(sum(label != -100 for label in f["labels"]) for f in features) if task == "ner" else len(features)
    for feature in features:
        output = model(**collate(tokenizer, task, [feature]))
        weight = sum(label != -100 for label in feature["labels"]) if task == "ner" else 1
        (output.loss * weight / labelled).backward()
        total += float(output.loss) * weight / labelled
        logits.append(output.logits.detach()[0])
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return torch.tensor(total), logits, grads


@pytest.mark.parametrize(
    "task,pooling,attention",
    [
        ("single_label", "cls", "sdpa"),
        ("single_label", "mean", "eager"),
        ("multi_label", "mean", "sdpa"),
        ("multi_label", "cls", DOCUMENT_SDPA),
        ("ner", "cls", "sdpa"),
        ("ner", "cls", DOCUMENT_SDPA),
        ("single_label", "mean", VARLEN),
        ("ner", "cls", VARLEN),
    ],
)
def test_packed_batch_equals_each_example_alone(tiny_tokenizer, task, pooling, attention):
    model = task_model(tiny_tokenizer, task, pooling, attention)
    features = examples(tiny_tokenizer, task)
    reference_loss, reference_logits, reference_grads = one_by_one(model, tiny_tokenizer, task, features)
    padded = collate(tiny_tokenizer, task, features)

    packing = install_packing(model)
    assert packing is not None
    rows, seen = [], []
    packing.encoder.register_forward_hook(lambda m, a, out: rows.append(out.last_hidden_state.shape))
    packing.encoder.embeddings.tok_embeddings.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    loss, logits, grads = loss_and_gradients(model, padded)

    lengths = padded["attention_mask"].sum(1).tolist()
    assert model.config._attn_implementation == attention
    if attention in PER_DOCUMENT_BACKENDS:  # attention per example: one row, not a position of padding
        assert seen == [(1, sum(lengths))]
    else:  # dense masks: rows no wider than the longest example, fewer rows than examples
        assert seen[0][0] == len(balanced_rows(lengths, max(lengths))) < len(features)
        assert seen[0][1] <= max(lengths)
    assert rows == [padded["input_ids"].shape + (model.config.hidden_size,)], "outputs not back in the padded layout"
    assert abs(float(loss - reference_loss)) < TOLERANCE
    assert grads.keys() == reference_grads.keys()
    assert len(grads) > 10
    worst = max(float((grads[k] - reference_grads[k]).abs().max()) for k in grads)
    assert worst < TOLERANCE, f"largest gradient difference {worst:.2e}"
    for i, alone in enumerate(reference_logits):
        if task == "ner":  # per token; padding positions carry no prediction
            assert torch.allclose(logits[i, : lengths[i]], alone, atol=TOLERANCE)
        else:
            assert torch.allclose(logits[i], alone, atol=TOLERANCE)

    packing.remove()
    unpacked_loss, _, _ = loss_and_gradients(model, padded)
    assert abs(float(unpacked_loss - loss)) < TOLERANCE


def test_tuple_outputs_and_requests_for_every_layer(tiny_tokenizer):
    """return_dict=False gets its outputs unpacked too; asking for hidden states or attentions (per position, per
    layer) runs the batch unpacked, so they come in the padded layout the caller expects."""
    model = task_model(tiny_tokenizer, "ner", "cls", "sdpa")
    padded = collate(tiny_tokenizer, "ner", examples(tiny_tokenizer, "ner"))
    reference = model(**padded).logits.detach()
    real = padded["attention_mask"].bool()  # padding positions carry no prediction
    install_packing(model)
    as_tuple = model(**padded, return_dict=False)
    assert torch.allclose(as_tuple[1][real], reference[real], atol=TOLERANCE)  # (loss, logits)
    hidden = model(**padded, output_hidden_states=True)
    assert hidden.hidden_states[-1].shape[:2] == padded["input_ids"].shape
    assert torch.allclose(hidden.logits, reference, atol=TOLERANCE)  # run unpacked: even padding agrees


def test_packing_really_changes_what_the_encoder_sees(tiny_tokenizer):
    """Without the attention confined to each example the outputs would differ: the equality is not vacuous."""
    features = examples(tiny_tokenizer, "single_label")
    model = task_model(tiny_tokenizer, "single_label", "mean", "sdpa")
    padded = collate(tiny_tokenizer, "single_label", features)
    layout = PackedLayout.from_lengths(padded["attention_mask"].sum(1).tolist(), padded["input_ids"].shape[1], "cpu")
    assert (layout.doc_ids.max(dim=1).values >= 1).any(), "some row must hold two examples"
    install_packing(model)  # passes batches with their own position_ids through, as the leaky run below
    packed_ids = layout.pack(padded["input_ids"], 0)
    leaky = model.model(
        input_ids=packed_ids, attention_mask=(layout.doc_ids >= 0).long(), position_ids=layout.position_ids
    )
    confined = model.model(**{k: padded[k] for k in ("input_ids", "attention_mask")})
    assert not torch.allclose(layout.unpack(leaky.last_hidden_state), confined.last_hidden_state, atol=1e-3)


def test_rows_and_layout():
    assert balanced_rows([5, 3, 7, 2, 1], 7) == [[2], [0, 4], [1, 3]]  # 18 tokens: 3 rows of at most 7
    assert balanced_rows([4, 4, 4, 4], 10) == [[0, 2], [1, 3]]  # two rows of 8
    assert balanced_rows([6, 5, 5], 10) == [[0], [1, 2]]  # the 6 alone, the two 5s together
    layout = PackedLayout.from_lengths([2, 3, 1], 3, "cpu")
    padded = torch.tensor([[1, 2, 0], [3, 4, 5], [6, 0, 0]])
    assert layout.pack(padded, 0).tolist() == [[3, 4, 5], [1, 2, 6]]
    assert layout.position_ids.tolist() == [[0, 1, 2], [0, 1, 0]]
    assert layout.doc_ids.tolist() == [[0, 0, 0], [0, 0, 1]]
    hidden = torch.arange(6.0).view(2, 3, 1)
    assert layout.unpack(hidden)[..., 0].tolist() == [[3, 4, 0], [0, 1, 2], [5, 0, 0]]


def test_only_plain_right_padded_masks_are_packed():
    assert right_padded_lengths(torch.tensor([[1, 1, 0], [1, 1, 1]])) == [2, 3]
    assert right_padded_lengths(torch.tensor([[0, 1, 1], [1, 1, 1]])) is None  # left padding
    assert right_padded_lengths(torch.ones(2, 1, 3, 3)) is None  # a 4-d mask
    assert right_padded_lengths({"full_attention": None}) is None
    assert right_padded_lengths(None) is None


def test_other_encoders_are_not_packed(bert_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(bert_dir, num_labels=2)
    assert install_packing(model) is None
