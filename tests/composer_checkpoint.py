"""Composer checkpoints of ModernBERT's training code, written by the tests from a tiny stock ModernBERT.

The layout is what Composer's `State.state_dict()` and ModernBERT's FlexBert give (ModernBERT's repository,
convert_to_hf.py and src/bert_layers; Composer 0.24 core/state.py): `{"state": {"model", "optimizers",
"schedulers", "timestamp", "integrations", "metadata", ...}, "rng": [...]}`, tensors under FlexBert's names behind
Composer's `model.` prefix, the decoder weight sharing the embeddings' storage. The FlexBert names are written
here by hand, from the transformers names, independently of the mapping the project reads them with.
"""

from __future__ import annotations

import datetime
import random
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch


def flexbert_name(transformers_name: str) -> str:
    if transformers_name.startswith("model.layers."):
        return "model.bert.encoder.layers." + transformers_name[len("model.layers.") :]
    if transformers_name.startswith("model."):
        return "model.bert." + transformers_name[len("model.") :]
    return "model." + transformers_name  # head.*, decoder.*


def flexbert_model_config(config, pretrain_rope: bool = False) -> dict:
    """The run YAML's model.model_config for a ModernBertConfig, as ModernBERT's own YAMLs write it."""
    block = {
        "vocab_size": config.vocab_size,
        "init_method": "full_megatron",
        "num_hidden_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_attention_heads": config.num_attention_heads,
        "attention_layer": "rope",
        "attention_probs_dropout_prob": 0.0,
        "attn_out_bias": False,
        "attn_out_dropout_prob": 0.1,
        "attn_qkv_bias": False,
        "bert_layer": "prenorm",
        "embed_dropout_prob": 0.0,
        "embed_norm": True,
        "final_norm": True,
        "skip_first_prenorm": True,
        "embedding_layer": "sans_pos",
        "loss_function": "fa_cross_entropy",
        "loss_kwargs": {"reduction": "mean"},
        "mlp_dropout_prob": 0.0,
        "mlp_in_bias": False,
        "mlp_layer": "glu",
        "mlp_out_bias": False,
        "normalization": "layernorm",
        "norm_kwargs": {"eps": 1e-5, "bias": False},
        "hidden_act": "gelu",
        "head_pred_act": "gelu",
        "activation_function": "gelu",
        "padding": "unpadded",
        "rotary_emb_dim": None,
        "rotary_emb_base": config.rope_parameters["full_attention"]["rope_theta"],
        "rotary_emb_scale_base": None,
        "rotary_emb_interleaved": False,
        "allow_embedding_resizing": True,
        "sliding_window": config.local_attention,
        "global_attn_every_n_layers": config.global_attn_every_n_layers,
        "unpad_embeddings": True,
        "compile_model": True,
        "masked_prediction": True,
    }
    if not pretrain_rope:  # ModernBERT's pretraining YAML leaves the local base out: FlexBert reads -1
        block["local_attn_rotary_emb_base"] = config.rope_parameters["sliding_attention"]["rope_theta"]
    return block


def write_run_yaml(path: Path, config, pretrain_rope: bool = False) -> Path:
    import yaml

    run = {
        "data_local": "data/mds",
        "max_seq_len": 1024,
        "tokenizer_name": "answerdotai/ModernBERT-base",
        "mlm_probability": 0.3,
        "run_name": "modernbert-tiny-pretrain",
        "model": {
            "name": "flex_bert",
            "pretrained_model_name": "bert-base-uncased",
            "tokenizer_name": "${tokenizer_name}",
            "disable_train_metrics": True,
            "model_config": flexbert_model_config(config, pretrain_rope),
        },
    }
    path.write_text(yaml.safe_dump(run, sort_keys=False))
    return path


def composer_state(model, tokenizer=None, *, pretrain_rope: bool = False, batch: int = 1234) -> dict:
    """{"state": ..., "rng": ...} as Composer saves it (not yet written)."""
    weights = OrderedDict()
    for name, tensor in model.state_dict().items():  # decoder.weight shares the embeddings' storage
        weights[flexbert_name(name)] = tensor
    moments = {name: {"exp_avg": torch.zeros_like(t), "exp_avg_sq": torch.zeros_like(t)} for name, t in weights.items()}
    flexbert = {
        **flexbert_model_config(model.config, pretrain_rope),
        "model_type": "bert",
        "_name_or_path": "bert-base-uncased",
        "pad_token_id": 0,
        "head_class_act": "silu",
        "local_attn_rotary_emb_base": -1,
    }
    if not pretrain_rope:
        flexbert["local_attn_rotary_emb_base"] = model.config.rope_parameters["sliding_attention"]["rope_theta"]
    tokenizer_files = {}
    if tokenizer is not None:
        import json
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            tokenizer.save_pretrained(folder)
            for file in Path(folder).glob("*.json"):
                tokenizer_files[file.stem] = {"file_extension": ".json", "content": json.loads(file.read_text())}
    state = {
        "model": weights,
        "optimizers": {"StableAdamW": {"state": moments, "param_groups": [{"lr": 8e-4, "params": list(weights)}]}},
        "schedulers": {"LambdaLR": {"base_lrs": [8e-4], "last_epoch": batch, "lr_lambdas": [None]}},
        "algorithms": [],
        "callbacks": {"SpeedMonitor": {"total_eval_wct": 0.0}},
        "scaler": {},
        "timestamp": {
            "Timestamp": {
                "iteration": 0,
                "epoch": 0,
                "batch": batch,
                "sample": batch * 4608,
                "token": batch * 4608 * 1024,
                "batch_in_epoch": batch,
                "total_wct": datetime.timedelta(hours=3, seconds=7),
            }
        },
        "rank_zero_seed": 17,
        "run_name": "modernbert-tiny-pretrain",
        "dataset_state": {"train": None, "eval": {}},
        "integrations": {
            "huggingface": {
                "model": {
                    "config": {
                        "file_extension": ".json",
                        "content": flexbert,
                        "class": "src.bert_layers.model.FlexBertForMaskedLM",
                    }
                },
                "tokenizer": tokenizer_files,
            }
        },
        "metadata": {"torch_version": torch.torch_version.TorchVersion(torch.__version__), "world_size": 8},
    }
    rng = [{"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.random.get_rng_state()}]
    return {"state": state, "rng": rng}


def write_checkpoint(path: Path, checkpoint: dict, legacy_timestamp: bool = False) -> Path:
    """torch.save as Composer does; `legacy_timestamp` pickles a composer.core.time.Timestamp object, as older
    Composer releases did (a stand-in module is registered only while saving: the reader never imports it)."""
    if not legacy_timestamp:
        torch.save(checkpoint, path)
        return path
    names = ("composer", "composer.core", "composer.core.time")
    saved = {name: sys.modules.get(name) for name in names}
    module = types.ModuleType("composer.core.time")

    class Timestamp:
        def __init__(self, fields):
            self.__dict__.update(fields)

        def __getstate__(self):
            return dict(self.__dict__)

    Timestamp.__module__, Timestamp.__qualname__ = "composer.core.time", "Timestamp"
    module.Timestamp = Timestamp
    try:
        for name in names[:-1]:
            sys.modules[name] = types.ModuleType(name)
        sys.modules["composer.core.time"] = module
        state = dict(checkpoint["state"], timestamp=Timestamp(checkpoint["state"]["timestamp"]["Timestamp"]))
        torch.save({**checkpoint, "state": state}, path)
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    return path
