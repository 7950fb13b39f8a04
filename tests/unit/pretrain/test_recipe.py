"""Recipes: shipped ones load, overrides reach every field, bad values stop with one line naming the key."""

import re
import subprocess
import sys

import pytest
import yaml
from helpers import ROOT, write_recipe

from modeling.common.config import parse_overrides
from modeling.common.errors import ConfigError
from modeling.pretrain.recipe import RECIPES_DIR, load_recipe

SHIPPED = ["demo", "bioclinical-modernbert-base", "bioclinical-modernbert-large", "clinical-modernbert"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_load(name):
    from modeling.pretrain.model import check_model_config

    recipe = load_recipe(name)
    check_model_config(recipe)  # every model.config key is one the config class reads
    assert recipe.name == name
    assert recipe.phases


def _phase(recipe, index):
    phase = recipe.phases[index]
    schedule = phase.schedule
    return (phase.name, phase.sources, phase.masking, phase.length, schedule.warmup, schedule.decay,
            schedule.decay_fraction, schedule.min_lr_ratio)  # fmt: skip


# What each shipped recipe promises (its comments, docs/pretraining.md's table and the papers' published configs).
BIOCLINICAL_PHASE_1 = ("phase1", ["pubmed", "pmc", "clinical", "mimic4"], 0.30, {"epochs": 3}, 0.0, "none", None, 0.0)
PROMISES = {
    "bioclinical-modernbert-base": dict(
        init="answerdotai/ModernBERT-base",
        batch=(576, 4),
        optimizer=(3e-4, [0.9, 0.98], 1e-6, 1e-5),
        phases=[
            BIOCLINICAL_PHASE_1,
            ("phase2", ["clinical", "mimic4"], 0.15, {"epochs": 3}, 0.0, "1-sqrt", None, 0.001),
        ],
    ),
    "bioclinical-modernbert-large": dict(
        init="answerdotai/ModernBERT-large",
        batch=(616, None),
        optimizer=(5e-5, [0.9, 0.98], 1e-6, 1e-6),
        phases=[
            BIOCLINICAL_PHASE_1,
            ("phase2", ["clinical", "mimic4"], 0.15, {"epochs": 3}, 0.0, "1-sqrt", 0.3333333333, 0.001),
        ],
    ),
    "clinical-modernbert": dict(
        init="answerdotai/ModernBERT-base",
        batch=(128, None),
        optimizer=(5e-4, [0.9, 0.999], None, 0.01),
        phases=[
            (
                "pretrain",
                ["pubmed", "mimic4", "codes"],
                {"start": 0.30, "end": 0.15},
                {"epochs": 1},
                0.1,
                "cosine",
                None,
                0.0,
            )
        ],  # fmt: skip
    ),
}


@pytest.mark.parametrize("name", sorted(PROMISES))
def test_shipped_gpu_recipes_keep_their_promises(name):
    recipe, promise = load_recipe(name), PROMISES[name]
    assert recipe.model.init == promise["init"]
    assert recipe.max_seq_length == 8192
    assert recipe.precision == "bf16"
    assert recipe.batch.global_sequences == promise["batch"][0]
    if promise["batch"][1] is not None:
        assert recipe.batch.per_device == promise["batch"][1]
    lr, betas, eps, weight_decay = promise["optimizer"]
    assert recipe.optimizer.lr == lr
    assert recipe.optimizer.betas == betas
    if eps is not None:
        assert recipe.optimizer.eps == eps
    assert recipe.optimizer.weight_decay == weight_decay
    assert [_phase(recipe, i) for i in range(len(recipe.phases))] == promise["phases"]
    for phase in recipe.phases:  # every source a phase names is declared, with the domain the card reports
        assert set(phase.sources) <= set(recipe.sources)
    clinical = {name for name, source in recipe.sources.items() if source.domain == "clinical"}
    assert clinical == {name for name in ("clinical", "mimic4") if name in recipe.sources}


def test_the_demo_recipe_is_what_its_docs_describe():
    recipe = load_recipe("demo")
    assert recipe.max_seq_length == 1024
    assert (recipe.batch.global_sequences, recipe.batch.per_device) == (2, 2)
    assert recipe.optimizer.lr == 2e-3
    assert recipe.tokenizer.train_vocab_size == 8192
    assert [_phase(recipe, i)[:4] for i in range(2)] == [
        ("phase1", ["pubmed"], 0.30, {"tokens": 5.0e6}),
        ("phase2", ["pubmed_clinical"], 0.15, {"epochs": 3}),
    ]
    assert recipe.phases[1].schedule.decay == "1-sqrt"
    assert recipe.sources["pubmed_clinical"].publication_types  # the clinical subset is a filter of the same files


@pytest.mark.parametrize(
    "config, refused",
    [
        ({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}, None),
        ({"global_attn_every_n_layers": 2, "global_rope_theta": 80000.0, "local_rope_theta": 1e4}, None),
        ({"hiden_size": 64}, "model.config.hiden_size: not a setting ModernBertConfig reads"),
        ({"reference_compile": True}, "model.config.reference_compile: not a setting"),  # transformers drops it
    ],
)
def test_model_config_keys_are_ones_the_config_reads(tmp_path, config, refused):
    from modeling.pretrain.model import check_model_config

    recipe = load_recipe(write_recipe(tmp_path, **{"model.config": config}))
    if refused is None:
        check_model_config(recipe)
    else:
        with pytest.raises(ConfigError, match=refused):
            check_model_config(recipe)


def test_reference_recipe_values():
    base = load_recipe("bioclinical-modernbert-base")
    p1, p2 = base.phases
    assert (p1.masking, p2.masking) == (0.30, 0.15)
    assert p1.length == {"epochs": 3}
    assert p2.length == {"epochs": 3}
    assert isinstance(p1.sources, list)
    assert p2.sources == ["clinical", "mimic4"]
    assert p2.schedule.decay == "1-sqrt"
    assert p2.schedule.min_lr_ratio == 0.001
    assert base.optimizer.lr == 0.0003
    assert base.optimizer.betas == [0.9, 0.98]
    assert base.optimizer.weight_decay == 1e-05
    assert base.batch.global_sequences == 576
    assert base.max_seq_length == 8192
    large = load_recipe("bioclinical-modernbert-large")
    assert large.optimizer.lr == 5e-05
    assert large.batch.global_sequences == 616
    assert large.optimizer.weight_decay == 1e-06
    assert large.phases[1].schedule.decay_fraction == pytest.approx(1 / 3)
    clinical = load_recipe("clinical-modernbert")
    assert clinical.phases[0].masking == {"start": 0.30, "end": 0.15}
    assert clinical.phases[0].schedule.decay == "cosine"
    assert clinical.phases[0].schedule.warmup == 0.1
    assert clinical.sources["codes"].format == "codes"


def test_overrides_reach_nested_fields_list_items_and_sources(tmp_path):
    path = write_recipe(tmp_path)
    recipe = load_recipe(
        path,
        parse_overrides(
            [
                "--optimizer.lr",
                "1e-4",
                "--phases.phase2.masking",
                "0.2",
                "--phases.0.length.steps=5",
                "--sources.notes",
                "/elsewhere/notes.txt",
                "--batch.per_device",
                "2",
                "--optimizer.betas",
                "[0.9, 0.95]",
            ]
        ),
    )
    assert recipe.optimizer.lr == 0.0001
    assert recipe.optimizer.betas == [0.9, 0.95]
    assert recipe.phases[1].masking == 0.2
    assert recipe.phases[0].length == {"steps": 5}
    assert recipe.sources["notes"].path == "/elsewhere/notes.txt"
    assert recipe.sources["notes"].format == "text"
    assert recipe.batch.per_device == 2


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            ["--optimizer.learning_rate", "1"],
            "unknown key 'optimizer.learning_rate'; allowed keys under optimizer: lr, betas",
        ),
        (["--phases.0.masking", "1.2"], "phases.0.masking (start=1.2): a masking probability must be in (0, 1)"),
        (
            ["--phases.1.masking", "{start: 0.3, end: 0}"],
            "phases.1.masking (end=0): a masking probability must be in (0, 1)",
        ),
        (["--phases.0.sources.notes", "0"], "phases.0.sources.notes=0: a sampling weight must be a number > 0"),
        (["--phases.0.sources.notes", "-1"], "phases.0.sources.notes=-1: a sampling weight must be a number > 0"),
        (["--phases.0.sources.missing", "1"], "phases.0.sources: unknown source 'missing'"),
        (["--phases.0.length", "{steps: 1, tokens: 2}"], "phases.0.length="),
        (["--precision", "fp8"], "precision='fp8': allowed values are auto, bf16, fp16, fp32"),
        (["--batch.global_tokens", "1000"], "batch: give exactly one of global_sequences or global_tokens"),
        (
            ["--phases.0.schedule.decay", "exp"],
            "phases.0.schedule.decay='exp': allowed values are none, linear, cosine, 1-sqrt",
        ),
        (["--phases.0.length", "{epochs: 1}"], "phases.0.length.epochs: epochs need natural proportion"),
        (["--max_seq_length", "many"], "max_seq_length='many': must be an integer"),
        (["--phases.nope.masking", "0.2"], "--phases.nope: no entry named 'nope'"),
        (["--distributed.timeout_minutes", "0"], "distributed.timeout_minutes"),
        (["--holdout.every_steps", "-5"], "holdout.every_steps=-5: give a whole number of steps >= 0"),
        (["--holdout.every_steps", "2.5"], "holdout.every_steps=2.5: must be an integer"),
        (["--hub.push_every", "-3"], "hub.push_every=-3: give a whole number of steps >= 0"),
        (["--hub.push_every", "true"], "hub.push_every=True: must be an integer"),
    ],
)
def test_bad_values_stop_with_the_key(tmp_path, override, expected):
    with pytest.raises(ConfigError) as error:
        load_recipe(write_recipe(tmp_path), parse_overrides(override))
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model.config.hidden_size": "32"}, "model.config.hidden_size='32': give a whole number (the default is 768)"),
        ({"model.config.norm_eps": "1e-5"}, "model.config.norm_eps='1e-5': give a number (the default is 1e-05)"),
        ({"model.config.num_attention_heads": 5}, "num_attention_heads=5: must divide hidden_size (32)"),
    ],
)
def test_model_config_values_are_checked_before_any_work(tmp_path, changes, message):
    from modeling.pretrain.model import check_model_config

    recipe = load_recipe(write_recipe(tmp_path, **changes))
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_model_config(recipe)


def test_sequence_length_above_the_models_positions(tmp_path, tiny_tokenizer):
    from modeling.pretrain.model import build_model

    recipe = load_recipe(write_recipe(tmp_path, max_seq_length=512))  # the model config has 256 positions
    with pytest.raises(ConfigError, match=r"max_seq_length=512: above the model's max_position_embeddings \(256\)"):
        build_model(recipe, tiny_tokenizer)


def test_unknown_source_option_is_named(tmp_path):
    raw = yaml.safe_load(write_recipe(tmp_path).read_text())
    raw["sources"]["notes"]["colum"] = "text"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="colum"):
        load_recipe(tmp_path / "bad.yaml")


def test_script_reports_config_errors_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train_mlm.py"), str(write_recipe(tmp_path)), "--phases.0.masking", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: phases.0.masking (start=0): a masking probability must be in (0, 1)"
    ]


def test_help_lists_every_recipe_key():
    result = subprocess.run([sys.executable, str(ROOT / "train_mlm.py"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for key in (
        "--optimizer.lr",
        "--batch.global_tokens",
        "--phases.N.masking",
        "--phases.N.schedule.decay",
        "--resume",
        "--holdout.fraction",
        "--model.attn_implementation",
    ):
        assert key in result.stdout
    assert sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")) == sorted(SHIPPED)


@pytest.mark.parametrize(
    "tasks, refused",
    [
        (["eval_configs/chemprot.yaml", {"config": "eval_configs/cos.yaml", "data_dir": "/data/cos"}], None),
        ([{"path": "eval_configs/cos.yaml"}], "store.exclude_tasks.0: a task config path, or {config: PATH"),
        ([3], "store.exclude_tasks.0: a task config path"),
        ("chemprot", "store.exclude_tasks: a list of task configs"),
        (None, "store.exclude_tasks: a list of task configs"),
    ],
)
def test_store_exclude_tasks_take_configs_with_optional_data_dirs(tasks, refused):
    if refused is None:
        recipe = load_recipe("demo", [("store.exclude_tasks", tasks)])
        assert recipe.store.excluded_tasks() == [
            ("eval_configs/chemprot.yaml", None),
            ("eval_configs/cos.yaml", "/data/cos"),
        ]
        return
    with pytest.raises(ConfigError, match=re.escape(refused)):
        load_recipe("demo", [("store.exclude_tasks", tasks)])
