"""Loading a saved model runs the code the project built it with: no Hub kernels swapped in, and no dependence on
the `kernels` package (the GPU image lacks it, and transformers then refuses every load); a local path that is not
there is named as a missing folder."""

from __future__ import annotations

import re

import pytest
from transformers import AutoModel, AutoModelForMaskedLM, ModernBertConfig, ModernBertModel

from modeling.common.loading import load_pretrained


def test_a_loaded_model_keeps_the_projects_own_layers(tmp_path):
    ids = dict(pad_token_id=0, cls_token_id=1, sep_token_id=2, bos_token_id=1, eos_token_id=2)
    config = ModernBertConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, **ids
    )
    ModernBertModel(config).save_pretrained(tmp_path)
    assert load_pretrained(AutoModel, str(tmp_path)).use_kernels is False


@pytest.mark.parametrize("path", ["/data/models/bioclinical", "./out/demo/phase9", "out/demo/phase9", "~/no/such"])
def test_a_missing_local_folder_is_named_as_one(path):
    from modeling.common.errors import ConfigError
    from modeling.common.loading import load_config, load_pretrained, load_tokenizer

    for load in (load_config, load_tokenizer, lambda p: load_pretrained(AutoModelForMaskedLM, p)):
        with pytest.raises(ConfigError, match=rf"^{re.escape(path)}: no such folder \(a local path"):
            load(path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_weights_that_hold_code_are_one_line_even_when_pickles_are_allowed(tmp_path):
    import torch

    from modeling.common.errors import ConfigError

    ids = dict(pad_token_id=0, cls_token_id=1, sep_token_id=2, bos_token_id=1, eos_token_id=2)
    config = ModernBertConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, **ids)
    config.num_attention_heads = 2
    config.save_pretrained(tmp_path)
    marker = tmp_path / "ran"
    torch.save({"model.embeddings.tok_embeddings.weight": _Payload(marker)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="its pickle weights hold more than weights, refused unread") as error:
        load_pretrained(AutoModelForMaskedLM, str(tmp_path), allow_pickle=True)
    assert "\n" not in str(error.value) and not marker.exists()
