"""Attention never crosses documents: every document of a packed batch gives the logits it gives alone."""

import pytest
import torch
from helpers import synthetic_documents, tiny_model_config
from transformers import ModernBertForMaskedLM

from modeling.common import attention
from modeling.common.attention import packed_attention_kwargs
from modeling.data.packing import Packing, collate_rows
from modeling.data.rows import pack_token_lists


@pytest.fixture(autouse=True)
def _document_sdpa_known():
    attention.register_document_sdpa()  # what model builders do before asking for it


def _packed_batch(tokenizer, max_len=96):
    # Documents longer than the sliding window (16 tokens -> window 8) so the window matters too.
    texts = synthetic_documents(12, seed=3, min_words=3, max_words=40)
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    rows = pack_token_lists(ids, Packing.of(tokenizer, max_len, open_rows=4))
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
    assert sdpa["full_attention"].dtype == torch.bool
    assert eager["full_attention"].is_floating_point()
    full = sdpa["full_attention"][0, 0]
    assert full[0, 1]
    assert not full[1, 2]
    assert full[2, 4]
    assert not full[5, 4]
    assert full[5, 5]
    sliding = sdpa["sliding_attention"][0, 0]
    assert sliding[2, 3]
    assert not sliding[2, 4]  # same document, outside the window
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


# --------------------------------------------------------------------------- varlen (PyTorch's varlen kernel)
# No CUDA here: the backend's own code (segments, flattening and its inverse, the window arguments) runs with
# reference_varlen_attn in place of torch.nn.attention.varlen.varlen_attn. The GPU check runs the real kernel.


def test_varlen_segments_are_flash_attentions():
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, -1], [0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]])
    segments = attention.DocumentSegments.from_doc_ids(doc_ids, window=4)
    flash = packed_attention_kwargs(doc_ids, "flash_attention_2", sliding_window=4)
    # a row that starts with the document the previous row ended on is a segment of its own
    assert segments.cu_seq_lens.tolist() == flash["cu_seq_lens_q"].tolist() == [0, 3, 5, 6, 7, 12, 18]
    assert segments.cu_seq_lens.dtype == torch.int32
    assert segments.max_length == flash["max_length_q"] == 6
    assert segments.window == 4


@pytest.mark.parametrize("window", [(-1, -1), (2, 2), (1, 3), (0, 0)])
def test_reference_kernel_follows_flash_windows(window):
    """Query i sees keys i - left .. i + right of its own segment (flash-attn's convention, inclusive). With equal
    scores, each output row is the mean of the value rows it sees: one-hot values show which those are."""
    cu = torch.tensor([0, 7, 10], dtype=torch.int32)
    value = torch.eye(10)[:, None, :]  # [tokens, 1 head, 10]: token j's value is the j-th unit vector
    query = key = torch.zeros(10, 1, 10)
    out = attention.reference_varlen_attn(query, key, value, cu, cu, 7, 7, window_size=window)[:, 0]
    left, right = (n if n >= 0 else 10 for n in window)
    for start, end in ((0, 7), (7, 10)):
        for i in range(start, end):
            seen = set(torch.nonzero(out[i]).flatten().tolist())
            assert seen == set(range(max(start, i - left), min(end, i + right + 1))), (i, seen)


def _varlen_model(tokenizer, implementation):
    torch.manual_seed(0)
    return ModernBertForMaskedLM._from_config(
        tiny_model_config(tokenizer), attn_implementation=attention.known_attention(implementation)
    )


def test_varlen_trains_exactly_as_document_sdpa(tiny_tokenizer):
    """Logits, loss and every gradient of a packed batch (several documents per row, padding, documents longer
    than the window) equal document_sdpa's: the flattening, the segments and the windows are right."""
    rows, batch = _packed_batch(tiny_tokenizer)
    assert max(n for r in rows for n in r.doc_lengths) > 2 * 8 + 1  # longer than a local layer's window
    chosen = torch.rand(batch["input_ids"].shape, generator=torch.Generator().manual_seed(0)) < 0.3
    labels = torch.where(chosen & (batch["doc_ids"] >= 0), batch["input_ids"], -100)
    results = {}
    with attention.varlen_kernel(attention.reference_varlen_attn):
        for implementation in ("document_sdpa", "varlen"):
            model = _varlen_model(tiny_tokenizer, implementation)
            assert model.config._attn_implementation == implementation
            kwargs = packed_attention_kwargs(batch["doc_ids"], implementation, model.config.sliding_window)
            inputs = dict(input_ids=batch["input_ids"], position_ids=batch["position_ids"], **kwargs)
            output = model(**inputs, labels=labels)
            output.loss.backward()
            real = batch["doc_ids"] >= 0
            results[implementation] = (
                output.loss.item(),
                model(**inputs).logits[real].detach(),
                {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
            )
    (doc_loss, doc_logits, doc_grads), (loss, logits, grads) = results["document_sdpa"], results["varlen"]
    assert abs(doc_loss - loss) < 1e-5
    assert (doc_logits - logits).abs().max() < 1e-5
    assert doc_grads.keys() == grads.keys()
    assert len(grads) > 10
    assert max((doc_grads[n] - grads[n]).abs().max().item() for n in grads) < 1e-5


def test_varlen_hands_the_kernel_the_flattened_batch_and_each_layers_window(tiny_tokenizer):
    """What reaches the kernel: [B*T, heads, head_dim] tensors, the batch's segments, and window_size (w, w) with
    w = config.sliding_window = local_attention // 2 in local layers, (-1, -1) (no window) in global ones."""
    calls = []

    def recording(query, key, value, cu_q, cu_k, max_q, max_k, **kwargs):
        calls.append((query.shape, cu_q.tolist(), cu_k.tolist(), max_q, max_k, kwargs["window_size"], kwargs["scale"]))
        return attention.reference_varlen_attn(query, key, value, cu_q, cu_k, max_q, max_k, **kwargs)

    with attention.varlen_kernel(recording):
        model = _varlen_model(tiny_tokenizer, "varlen").eval()
        config = model.config
        _, batch = _packed_batch(tiny_tokenizer)
        kwargs = packed_attention_kwargs(batch["doc_ids"], "varlen", config.sliding_window)
        with torch.no_grad():
            model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], **kwargs)
    assert config.local_attention == 16
    assert config.sliding_window == 8
    head_dim = config.hidden_size // config.num_attention_heads
    segments = attention.DocumentSegments.from_doc_ids(batch["doc_ids"], 8)
    assert len(calls) == config.num_hidden_layers
    for layer, (shape, cu_q, cu_k, max_q, max_k, window, scale) in enumerate(calls):
        assert shape == (batch["input_ids"].numel(), config.num_attention_heads, head_dim)
        assert cu_q == cu_k == segments.cu_seq_lens.tolist()
        assert max_q == max_k == segments.max_length
        assert window == ((-1, -1) if config.layer_types[layer] == "full_attention" else (8, 8))
        assert scale == head_dim**-0.5


def test_varlen_runs_the_kernel_at_half_precision():
    """The CUDA kernel takes fp16/bf16 only: fp32 inputs go in at the autocast dtype, or bf16 without autocast."""
    query = torch.zeros(1, 2, 4, 8)
    assert attention._kernel_dtype(query) == torch.bfloat16
    assert attention._kernel_dtype(query.half()) == torch.float16
    with torch.autocast("cpu", dtype=torch.float16):
        assert attention._kernel_dtype(query) == torch.float16


def test_varlen_refuses_attention_dropout():
    layer = torch.nn.Module()
    segments = attention.DocumentSegments.from_doc_ids(torch.zeros(1, 4, dtype=torch.long), 2)
    q = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ValueError, match="attention dropout"):
        attention.varlen_forward(layer, q, q, q, segments, dropout=0.1)


def test_varlen_falls_back_to_document_sdpa_on_cpu_with_one_log_line(tiny_tokenizer, caplog):
    with caplog.at_level("INFO", logger="modeling.common.attention"):
        model = _varlen_model(tiny_tokenizer, "varlen")
    assert model.config._attn_implementation == "document_sdpa"
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "attn_implementation varlen: varlen_attn runs on CUDA GPUs, not on cpu; running document_sdpa instead"
    ]
    assert attention.resolve_attention("sdpa", "cpu") == "sdpa"


def test_varlen_falls_back_to_flex_on_a_gpu_without_the_kernel(monkeypatch):
    """On a GPU the fallback is flex_attention: older cards (before sm_80), and torch builds whose varlen_attn has
    no window_size (2.10) or that have none at all."""
    import torch.nn.attention.varlen as varlen_module

    monkeypatch.setattr(torch.backends.cuda, "is_flash_attention_available", lambda: True)  # as a CUDA build says
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert "sm_75" in attention.varlen_unavailable("cuda")
    assert attention.resolve_attention("varlen", "cuda") == "flex_attention"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert attention.varlen_unavailable("cuda") is None
    monkeypatch.setattr(torch.backends.cuda, "is_flash_attention_available", lambda: False)
    assert "without its FlashAttention" in attention.varlen_unavailable("cuda")
    monkeypatch.setattr(torch.backends.cuda, "is_flash_attention_available", lambda: True)

    def without_window(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None):
        raise AssertionError("never called")

    monkeypatch.setattr(varlen_module, "varlen_attn", without_window)
    assert "window_size" in attention.varlen_unavailable("cuda")
    assert attention.resolve_attention("varlen", "cuda") == "flex_attention"


def test_varlen_model_takes_padded_batches_and_saves_stock(tiny_tokenizer, tmp_path):
    with attention.varlen_kernel(attention.reference_varlen_attn):
        model = _varlen_model(tiny_tokenizer, "varlen").eval()
    assert model.config._attn_implementation == "varlen"
    encoded = tiny_tokenizer(
        ["fever and cough", "patient denies chest pain fever cough dyspnea"], padding=True, return_tensors="pt"
    )
    model.save_pretrained(tmp_path)
    assert "varlen" not in (tmp_path / "config.json").read_text()
    stock = ModernBertForMaskedLM.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    with torch.no_grad():  # a plain padded batch goes to stock sdpa, with no kernel at all
        assert (model(**encoded).logits - stock(**encoded).logits).abs().max() < 1e-5
