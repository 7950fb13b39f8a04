"""Attention never crosses documents: every document of a packed batch gives the logits it gives alone."""

import pytest
import torch
from helpers import synthetic_documents, tiny_model_config
from transformers import ModernBertForMaskedLM

from modeling.common import attention
from modeling.common.attention import packed_attention_kwargs
from modeling.data.packing import collate_rows
from modeling.data.rows import pack_token_lists


@pytest.fixture(autouse=True)
def _document_sdpa_known():
    attention.register_document_sdpa()  # what model builders do before asking for it


def _packed_batch(tokenizer, max_len=96):
    # Documents longer than the sliding window (16 tokens -> window 8) so the window matters too.
    texts = synthetic_documents(12, seed=3, min_words=3, max_words=40)
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    rows = pack_token_lists(ids, max_len, tokenizer.cls_token_id, tokenizer.sep_token_id, open_rows=4)
    assert any(len(r.doc_lengths) > 1 for r in rows), "the fixture must put several documents in a row"
    assert any(len(r.input_ids) < max_len for r in rows), "and leave padding somewhere"
    return rows, collate_rows(rows, tokenizer.pad_token_id, max_len)


def _each_document_alone(model, rows):
    for b, row in enumerate(rows):
        offset = 0
        for length in row.doc_lengths:
            ids = torch.as_tensor(row.input_ids[offset : offset + length])[None]
            yield b, offset, length, model(input_ids=ids).logits[0]
            offset += length


@pytest.mark.parametrize(
    "implementation", ["sdpa", "eager", "flex_attention", "document_sdpa"]
)  # flex: forward only on CPU
def test_packed_logits_equal_documents_alone(tiny_tokenizer, implementation):
    torch.manual_seed(0)
    model = ModernBertForMaskedLM._from_config(
        tiny_model_config(tiny_tokenizer), attn_implementation=implementation
    ).eval()
    rows, batch = _packed_batch(tiny_tokenizer)
    kwargs = packed_attention_kwargs(batch["doc_ids"], implementation, model.config.sliding_window)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], **kwargs).logits
        if implementation == "flex_attention":  # flex compiles a kernel per length: the documents alone run on sdpa
            model.set_attn_implementation("sdpa")
        worst = max(
            (alone - packed[b, o : o + n]).abs().max().item() for b, o, n, alone in _each_document_alone(model, rows)
        )
    print(f"packed vs alone, {implementation}: max abs logit difference {worst:.2e}")
    assert worst <= 1e-5, f"{implementation}: a packed document differs from itself alone by {worst}"


def test_without_document_masks_documents_leak(tiny_tokenizer):
    """The check above can fail: with only position_ids (what ModernBERT 5.x uses for RoPE alone),
    documents attend to each other and the logits change."""
    torch.manual_seed(0)
    model = ModernBertForMaskedLM._from_config(tiny_model_config(tiny_tokenizer), attn_implementation="sdpa").eval()
    rows, batch = _packed_batch(tiny_tokenizer)
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            attention_mask=(batch["doc_ids"] >= 0).long(),
        ).logits
        worst = max(
            (alone - packed[b, o : o + n]).abs().max().item() for b, o, n, alone in _each_document_alone(model, rows)
        )
    assert worst > 1e-4


def test_eager_gets_additive_masks_and_sdpa_boolean(tiny_tokenizer):
    doc_ids = torch.tensor([[0, 0, 1, 1, 1, -1]])
    sdpa = packed_attention_kwargs(doc_ids, "sdpa", sliding_window=1)["attention_mask"]
    eager = packed_attention_kwargs(doc_ids, "eager", sliding_window=1)["attention_mask"]
    assert sdpa["full_attention"].dtype == torch.bool and eager["full_attention"].is_floating_point()
    full = sdpa["full_attention"][0, 0]
    assert full[0, 1] and not full[1, 2] and full[2, 4] and not full[5, 4] and full[5, 5]
    sliding = sdpa["sliding_attention"][0, 0]
    assert sliding[2, 3] and not sliding[2, 4]  # same document, outside the window
    assert torch.equal(eager["full_attention"] == 0, sdpa["full_attention"])


def test_flash_segments_cover_documents_and_padding():
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, -1], [0, 1, 1, 1, 1, 1]])
    kwargs = packed_attention_kwargs(doc_ids, "flash_attention_2", sliding_window=4)
    assert kwargs["cu_seq_lens_q"].tolist() == [0, 3, 5, 6, 7, 12]
    assert kwargs["max_length_q"] == 5


@pytest.mark.parametrize("local_block", [512, 8])  # 8: documents longer than a block go through several
def test_document_sdpa_trains_exactly_as_dense_masks(tiny_tokenizer, monkeypatch, local_block):
    """Same loss and gradients as sdpa with dense document masks, local layers included."""
    monkeypatch.setattr(attention, "LOCAL_BLOCK", local_block)
    rows, batch = _packed_batch(tiny_tokenizer)
    chosen = torch.rand(batch["input_ids"].shape, generator=torch.Generator().manual_seed(0)) < 0.3
    labels = torch.where(chosen & (batch["doc_ids"] >= 0), batch["input_ids"], -100)  # padding is never a target
    results = {}
    for implementation in ("sdpa", "document_sdpa"):
        torch.manual_seed(0)
        model = ModernBertForMaskedLM._from_config(
            tiny_model_config(tiny_tokenizer), attn_implementation=implementation
        )
        kwargs = packed_attention_kwargs(batch["doc_ids"], implementation, model.config.sliding_window)
        loss = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=labels, **kwargs).loss
        loss.backward()
        results[implementation] = (
            loss.item(),
            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
        )
    (dense_loss, dense_grads), (doc_loss, doc_grads) = results["sdpa"], results["document_sdpa"]
    assert abs(dense_loss - doc_loss) < 1e-5
    assert dense_grads.keys() == doc_grads.keys()
    assert max((dense_grads[n] - doc_grads[n]).abs().max().item() for n in dense_grads) < 1e-5


def test_document_sdpa_model_takes_padded_batches_and_saves_stock(tiny_tokenizer, tmp_path):
    torch.manual_seed(0)
    model = ModernBertForMaskedLM._from_config(
        tiny_model_config(tiny_tokenizer), attn_implementation="document_sdpa"
    ).eval()
    encoded = tiny_tokenizer(
        ["fever and cough", "patient denies chest pain fever cough dyspnea"], padding=True, return_tensors="pt"
    )
    model.save_pretrained(tmp_path)
    assert "document_sdpa" not in (tmp_path / "config.json").read_text()
    stock = ModernBertForMaskedLM.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    with torch.no_grad():
        assert (model(**encoded).logits - stock(**encoded).logits).abs().max() < 1e-5
