"""Composer checkpoints of ModernBERT's training code become stock transformers ModernBERT folders: same logits,
same fill-mask answers; nothing in the pickle runs; names and shapes that do not map are refused."""

from __future__ import annotations

import json
import os

import pytest
import torch
from composer_checkpoint import composer_state, write_checkpoint, write_run_yaml
from helpers import tiny_model_config
from transformers import AutoModelForMaskedLM, AutoTokenizer, ModernBertForMaskedLM, pipeline

from modeling.common.composer import import_checkpoint
from modeling.common.errors import ConfigError, DataError
from modeling.common.safe_pickle import Inert, RefusedGlobal, load_checkpoint
from modeling.publish.composer_import import import_composer
from modeling.publish.hub import main as publish_main


def source_model(tokenizer, **rope):
    torch.manual_seed(3)
    config = tiny_model_config(tokenizer, **rope)
    model = ModernBertForMaskedLM(config).eval()
    with torch.no_grad():  # a trained-looking decoder bias and norms, not the initial zeros and ones
        for name, tensor in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                tensor.add_(torch.randn_like(tensor) * 0.1)
    return model


def batch(tokenizer):
    texts = ["the patient was given insulin and metformin twice daily", "no antibiotics"]
    return tokenizer(texts, padding=True, return_tensors="pt")


def max_logit_diff(a, b, inputs) -> float:
    with torch.no_grad():
        return (a(**inputs).logits - b(**inputs).logits).abs().max().item()


@pytest.mark.parametrize("pretrain_rope", [False, True], ids=["context-extension-yaml", "pretrain-yaml"])
def test_imported_folder_gives_the_source_models_logits(tmp_path, tiny_tokenizer, pretrain_rope, capsys):
    rope = {"global_rope_theta": 10000.0, "local_rope_theta": 10000.0} if pretrain_rope else {}
    source = source_model(tiny_tokenizer, **rope)
    ckpt = write_checkpoint(tmp_path / "ep0-ba1234-rank0.pt", composer_state(source, pretrain_rope=pretrain_rope))
    run_yaml = write_run_yaml(tmp_path / "run.yaml", source.config, pretrain_rope=pretrain_rope)
    tokenizer_dir = tmp_path / "tokenizer"
    tiny_tokenizer.save_pretrained(tokenizer_dir)
    out = tmp_path / "imported"
    argv = [
        "import-composer",
        str(ckpt),
        "--config",
        str(run_yaml),
        "--out",
        str(out),
        "--tokenizer",
        str(tokenizer_dir),
    ]
    assert publish_main(argv) == 0
    printed = capsys.readouterr().out
    assert "batch 1,234" in printed and "left behind: optimizers" in printed

    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    loaded = AutoModelForMaskedLM.from_pretrained(out).eval()
    assert type(loaded) is ModernBertForMaskedLM
    inputs = batch(tiny_tokenizer)
    assert max_logit_diff(loaded, source, inputs) <= 1e-6
    assert not torch.isnan(loaded(**inputs).logits).any()
    # the pretraining YAML's missing local base is the global one (-1 in FlexBert), never a NaN theta
    thetas = loaded.config.rope_parameters
    assert thetas["sliding_attention"]["rope_theta"] == source.config.rope_parameters["sliding_attention"]["rope_theta"]
    assert thetas["full_attention"]["rope_theta"] == source.config.rope_parameters["full_attention"]["rope_theta"]

    source_dir = tmp_path / "source"
    source.save_pretrained(source_dir)
    tiny_tokenizer.save_pretrained(source_dir)
    text = f"the patient was given {tiny_tokenizer.mask_token} twice daily"
    expected = pipeline("fill-mask", model=str(source_dir), top_k=5)(text)
    got = pipeline("fill-mask", model=str(out), tokenizer=AutoTokenizer.from_pretrained(out), top_k=5)(text)
    assert [r["token"] for r in got] == [r["token"] for r in expected]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in expected], abs=1e-6)

    record = json.loads((out / "composer_import.json").read_text())
    assert record["timestamp"] == {"epoch": 0, "batch": 1234, "sample": 1234 * 4608, "token": 1234 * 4608 * 1024}
    layers = source.config.num_hidden_layers
    assert record["tensors"] == len(source.state_dict()) - 1  # all but the tied decoder weight
    assert record["renamed"][r"bert\.encoder\.layers\.(\d+)\.attn\.(Wqkv|Wo)\.(weight|bias)"] == 2 * layers
    assert record["dropped"] == ["model.decoder.weight"]
    assert set(record["left_behind"]) == {"optimizers", "schedulers", "rng"}


def test_the_checkpoints_own_config_and_tokenizer_are_enough(tmp_path, tiny_tokenizer):
    source = source_model(tiny_tokenizer)
    ckpt = write_checkpoint(tmp_path / "latest-rank0.pt", composer_state(source, tiny_tokenizer), legacy_timestamp=True)
    out = tmp_path / "imported"
    assert publish_main(["import-composer", str(ckpt), "--out", str(out)]) == 0
    loaded = AutoModelForMaskedLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer("insulin and metformin")["input_ids"] == tiny_tokenizer("insulin and metformin")["input_ids"]
    assert max_logit_diff(loaded, source, batch(tiny_tokenizer)) <= 1e-6
    record = json.loads((out / "composer_import.json").read_text())
    assert record["timestamp"]["batch"] == 1234  # from a pickled Timestamp object, kept inert
    assert record["run_config"] is None and "the copy Composer keeps" in record["tokenizer"]


def checkpoint_with(tmp_path, tokenizer, change) -> tuple:
    source = source_model(tokenizer)
    checkpoint = composer_state(source)
    change(checkpoint["state"]["model"])
    ckpt = write_checkpoint(tmp_path / "bad.pt", checkpoint)
    return ckpt, write_run_yaml(tmp_path / "run.yaml", source.config)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("model.bert.encoder.layers.1.mlp.Wo.weight"), "missing 1 tensors"),
        (lambda m: m.update({"model.bert.final_norm.weight": torch.ones(7)}), "wrong shape"),
        (
            lambda m: m.update({"model.bert.embeddings.position_embeddings.weight": torch.zeros(4, 4)}),
            "no place in transformers' ModernBERT",
        ),
        (lambda m: m.update({"model.bert.encoder.layers.0.attn_norm.weight": torch.ones(4)}), "no place"),
    ],
    ids=["missing", "misshapen", "unknown-name", "first-prenorm"],
)
def test_names_and_shapes_that_do_not_map_are_refused(tmp_path, tiny_tokenizer, change, message):
    ckpt, run_yaml = checkpoint_with(tmp_path, tiny_tokenizer, change)
    with pytest.raises(DataError, match=message) as error:
        import_checkpoint(ckpt, run_yaml)
    assert "\n" not in str(error.value) and str(ckpt) in str(error.value)


def test_a_flexbert_variant_transformers_cannot_express_is_refused(tmp_path, tiny_tokenizer):
    import yaml

    ckpt, run_yaml = checkpoint_with(tmp_path, tiny_tokenizer, lambda m: None)
    run = yaml.safe_load(run_yaml.read_text())
    run["model"]["model_config"]["mlp_layer"] = "mlp"
    run_yaml.write_text(yaml.safe_dump(run))
    with pytest.raises(ConfigError, match="mlp_layer='mlp' has no counterpart"):
        import_checkpoint(ckpt, run_yaml)
    run_yaml.write_text("model: {name: flex_bert}\n")
    with pytest.raises(ConfigError, match="no model.model_config block"):
        import_checkpoint(ckpt, run_yaml)


class Payload:
    """What a malicious checkpoint plants: unpickling it would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_is_refused_without_running_anything(tmp_path, tiny_tokenizer):
    marker = tmp_path / "pwned"
    checkpoint = composer_state(source_model(tiny_tokenizer))
    checkpoint["state"]["callbacks"]["Evil"] = Payload(marker)
    ckpt = write_checkpoint(tmp_path / "evil.pt", checkpoint)
    with pytest.raises(RefusedGlobal, match=r"refused: the pickle asks for (posix|os)\.system") as error:
        import_checkpoint(ckpt)
    assert "\n" not in str(error.value)
    assert not marker.exists()
    assert publish_main(["import-composer", str(ckpt), "--out", str(tmp_path / "out")]) == 2
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_the_guarded_unpickler_builds_values_and_keeps_framework_objects_inert(tmp_path):
    import builtins

    torch.save({"eval": builtins.eval}, tmp_path / "eval.pt")
    with pytest.raises(RefusedGlobal, match="builtins.eval"):
        load_checkpoint(tmp_path / "eval.pt")
    ckpt = write_checkpoint(tmp_path / "old.pt", {"state": {"timestamp": {"Timestamp": {"batch": 5}}}}, True)
    timestamp = load_checkpoint(ckpt)["state"]["timestamp"]
    assert isinstance(timestamp, Inert) and timestamp.state == {"batch": 5}
    assert "composer" not in __import__("sys").modules
    torch.save({"w": torch.ones(2)}, tmp_path / "junk.pt")
    data = bytearray((tmp_path / "junk.pt").read_bytes())
    (tmp_path / "junk.pt").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DataError, match="junk.pt: not a"):
        load_checkpoint(tmp_path / "junk.pt")


def with_pickle(path, raw: bytes):
    """A real torch.save zip whose data.pkl is `raw`: what a hostile checkpoint looks like."""
    import zipfile

    torch.save({"x": 1}, path.with_suffix(".tmp"))
    with zipfile.ZipFile(path.with_suffix(".tmp")) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            content = raw if item.filename.endswith("data.pkl") else source.read(item)
            target.writestr(item, content)
    return path


def short(text: str) -> bytes:  # SHORT_BINUNICODE, then MEMOIZE
    return b"\x8c" + bytes([len(text)]) + text.encode() + b"\x94"


@pytest.mark.parametrize(
    "raw",
    [
        # protocol 4 looks up dotted names: a function of an allowed module, then its class (FunctionType)
        b"\x80\x04" + short("numpy.dtypes") + short("_add_dtype_helper.__class__") + b"\x93.",
        b"\x80\x04" + short("numpy.dtypes") + short("_add_dtype_helper") + b"\x93.",
        b"\x80\x04" + short("torch._utils") + short("_rebuild_tensor_v2.__globals__") + b"\x93.",
        b"\x80\x04" + short("torch") + short("_dynamo") + b"\x93.",
    ],
    ids=["dotted-name", "private-helper", "globals-of-an-allowed-function", "lazy-submodule"],
)
def test_names_outside_the_table_are_refused_before_anything_is_looked_up(tmp_path, raw):
    import sys

    had_dynamo = "torch._dynamo" in sys.modules
    with pytest.raises(RefusedGlobal, match="refused: the pickle asks for"):
        load_checkpoint(with_pickle(tmp_path / "hostile.pt", raw))
    assert ("torch._dynamo" in sys.modules) == had_dynamo  # nothing imported


def test_a_pickle_cannot_change_what_the_table_holds(tmp_path):
    """BUILD on an allowed class or function sets its attributes (for the whole process) unless refused."""
    version = torch.__version__
    raw = b"\x80\x02ctorch.torch_version\nTorchVersion\nN}X\x06\x00\x00\x00__ge__c__builtin__\nset\ns\x86b."
    with pytest.raises(DataError):
        load_checkpoint(with_pickle(tmp_path / "build.pt", raw))
    assert not (torch.__version__ >= "99.0") and torch.__version__ == version
    raw = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__)s\x86b."
    with pytest.raises(DataError):
        load_checkpoint(with_pickle(tmp_path / "defaults.pt", raw))
    from torch._utils import _rebuild_tensor_v2

    assert _rebuild_tensor_v2.__defaults__ == (None,)


def test_torchscript_and_legacy_files_are_refused(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(scripted, tmp_path / "scripted.pt")
    with pytest.raises(DataError, match="a TorchScript archive, whose code would run when loaded"):
        load_checkpoint(tmp_path / "scripted.pt")
    torch.save({"w": torch.ones(2)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(DataError, match="not a zip-format torch.save file"):
        load_checkpoint(tmp_path / "legacy.pt")


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/escaped_absolute", "sitecustomize"])
def test_tokenizer_file_names_from_the_checkpoint_never_become_paths(tmp_path, tiny_tokenizer, name):
    source = source_model(tiny_tokenizer)
    checkpoint = composer_state(source, tiny_tokenizer)
    entry = {"file_extension": ".py", "content": "raise SystemExit('ran')\n"}
    checkpoint["state"]["integrations"]["huggingface"]["tokenizer"][name] = entry
    ckpt = write_checkpoint(tmp_path / "named.pt", checkpoint)
    out = tmp_path / "deep" / "er" / "out"
    with pytest.raises(DataError, match="not a tokenizer file"):
        import_composer(ckpt, out)
    assert not list(tmp_path.rglob("*escaped*")) and not list(tmp_path.rglob("sitecustomize*"))
    assert not out.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"global_attn_every_n_layers": -1}, "every FlexBert layer is local"),
        ({"local_attn_rotary_emb_dim": 8}, "local_attn_rotary_emb_dim=8: transformers rotates whole heads"),
        ({"hidden_act": "swishy"}, "hidden_act='swishy' is not an activation transformers knows"),
        ({"skip_first_prenorm": False}, "skip_first_prenorm=False has no counterpart"),
    ],
)
def test_flexbert_settings_transformers_cannot_express_are_refused(tiny_tokenizer, change, message):
    from composer_checkpoint import flexbert_model_config

    from modeling.common.composer import config_from_flexbert

    block = {**flexbert_model_config(tiny_model_config(tiny_tokenizer)), **change}
    with pytest.raises(ConfigError, match=message):
        config_from_flexbert(block, "run.yaml")
    tanh = config_from_flexbert(
        {**flexbert_model_config(tiny_model_config(tiny_tokenizer)), "hidden_act": "gelu_tanh"}, "x"
    )
    assert tanh.hidden_activation == "gelu_pytorch_tanh"


def test_a_recipe_continues_from_a_composer_checkpoint(tmp_path, tiny_tokenizer):
    from helpers import write_recipe

    from modeling.pretrain.model import build_model
    from modeling.pretrain.recipe import load_recipe

    source = source_model(tiny_tokenizer)
    ckpt = write_checkpoint(tmp_path / "ep0-ba1234-rank0.pt", composer_state(source))
    run_yaml = write_run_yaml(tmp_path / "run.yaml", source.config)
    tiny_tokenizer.save_pretrained(tmp_path / "tokenizer")
    changes = {"model.config": None, "model.init": str(ckpt), "tokenizer": {"path": str(tmp_path / "tokenizer")}}
    for composer_config in (str(run_yaml), None):  # the run YAML, or the checkpoint's own copy
        recipe = load_recipe(write_recipe(tmp_path, **changes, **{"model.composer_config": composer_config}))
        model = build_model(recipe, tiny_tokenizer)
        assert model.sparse_prediction  # as every pretraining model
        weights = source.state_dict()
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, weights[name]), name

    with pytest.raises(ConfigError, match="tokenizer.path: model.init .* is a Composer checkpoint"):
        load_recipe(write_recipe(tmp_path, **{**changes, "tokenizer": {"path": None}}))
    with pytest.raises(ConfigError, match="model.composer_config: only for a Composer checkpoint"):
        load_recipe(write_recipe(tmp_path, **{"model.composer_config": str(run_yaml)}))
