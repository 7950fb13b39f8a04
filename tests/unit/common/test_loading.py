"""Loading a saved model runs the code the project built it with: no Hub kernels swapped in, and no dependence on
the `kernels` package (the GPU image lacks it, and transformers then refuses every load)."""

from __future__ import annotations

from transformers import AutoModel, ModernBertConfig, ModernBertModel

from modeling.common.loading import load_pretrained


def test_a_loaded_model_keeps_the_projects_own_layers(tmp_path):
    ids = dict(pad_token_id=0, cls_token_id=1, sep_token_id=2, bos_token_id=1, eos_token_id=2)
    config = ModernBertConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, **ids
    )
    ModernBertModel(config).save_pretrained(tmp_path)
    assert load_pretrained(AutoModel, str(tmp_path)).use_kernels is False
