"""The benchmarks run end to end on tiny inputs and measure what they say they measure (speed itself
is not asserted here: the figures live in benchmarks/README.md)."""

from __future__ import annotations

import pytest
import torch
from helpers import synthetic_documents
from transformers import ModernBertConfig, ModernBertModel

from benchmarks import data_pipeline, inference, pretraining, scaling
from benchmarks.common import bench_model, clinical_lengths

# End-to-end runs of training or of several processes: the fast tier (-m "not slow") leaves them out.
pytestmark = pytest.mark.slow


def test_pretraining_sides_see_the_same_documents_and_report_padding(tiny_tokenizer):
    texts = synthetic_documents(400, seed=4, min_words=3, max_words=60)
    figures = {
        f["side"]: f
        for f in pretraining.compare(
            tiny_tokenizer, texts, row_length=64, step_tokens=256, steps=2, warmup=1, shape="small", ablations=True
        )
    }
    assert set(figures) == {
        "project",
        "run_mlm",
        "group_texts",
        "group_texts+sparse",
        "ideal",
        "project, sdpa",
        "project, dense decoder",
        "project, 8192-token rows",
    }
    assert figures["project"]["padding"] < 0.05 < figures["run_mlm"]["padding"]  # packed rows vs padded-to-longest
    assert figures["group_texts"]["padding"] == figures["ideal"]["padding"] == 0
    assert figures["project"]["documents_apart"] == "yes"
    assert figures["group_texts"]["documents_apart"] == "no"
    assert figures["project"]["project_speedup"] == 1.0
    assert all(f["tokens_per_second"] > 0 for f in figures.values())


def test_inference_benchmark_checks_outputs_and_counts_padding(tiny_tokenizer):
    encoder = inference.NoteEncoder(
        ModernBertModel(bench_model(tiny_tokenizer, max_positions=512).config), tiny_tokenizer, 512
    )
    texts = synthetic_documents(40, seed=2, min_words=1, max_words=150)
    figures = inference.compare(encoder, texts, repeats=1, batch_tokens=1024, notes_per_batch=8, label="")
    sides = figures["sides"]
    assert set(sides) == {"padded", "packed", "packed, sdpa masks"}
    assert max(side["max_abs_diff"] for side in sides.values()) <= 1e-5
    assert sides["packed"]["padding"] < sides["padded"]["padding"]
    assert figures["notes"] == 40
    assert sides["packed"]["speedup"] > 0


def test_clinical_mix_is_long_tailed_around_1500_tokens():
    lengths = clinical_lengths(20000)
    mean = sum(lengths) / len(lengths)
    assert 1350 < mean < 1650
    assert max(lengths) == 8192
    assert sorted(lengths)[len(lengths) // 2] < mean


def test_flops_formula_counts_the_real_architecture():
    config = ModernBertConfig(
        vocab_size=50368, hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12
    )
    with torch.device("meta"):
        model = ModernBertModel(config)
    weights = sum(m.weight.numel() for m in model.layers.modules() if isinstance(m, torch.nn.Linear))
    no_attention_no_decoder = data_pipeline.flops_per_token(8192, masking=0.0, context=0, window=0)
    assert no_attention_no_decoder == 6 * weights
    # The decoder runs on masked positions only; global layers attend to the row, local ones to the window.
    assert data_pipeline.flops_per_token(8192) > data_pipeline.flops_per_token(1024) > no_attention_no_decoder


def test_data_pipeline_child_prepares_and_reads_a_corpus(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    data_pipeline.write_corpus(tmp_path / "c.jsonl", synthetic_documents(50, seed=3), 200)
    run = data_pipeline.run_child(tmp_path / "c.jsonl", 128, str(tmp_path / "tok"))
    assert run["documents"] == 200
    assert run["tokens"] > 200
    assert run["peak_rss_mb"] > 0
    assert run["prepare_cpu_seconds"] > 0
    assert run["read_cpu_seconds"] > 0


def test_scaling_sweeps_time_every_point(tiny_tokenizer):
    model = bench_model(tiny_tokenizer, max_positions=256)
    optimizer = torch.optim.AdamW(model.parameters())
    points = {"1": (256, 1, 1), "8": (256, 1, 8)}
    figures = scaling.sweep(
        model, optimizer, tiny_tokenizer, points, ["sdpa", "document_sdpa"], steps=1, warmup=0, label=""
    )
    assert set(figures) == {"1 sdpa", "8 sdpa", "1 document_sdpa", "8 document_sdpa"}
    assert all(f["step_seconds"] > 0 for f in figures.values())
    assert "| 8 | 32 |" in scaling.table(
        "documents", points, figures, ["sdpa"], (["tokens"], lambda name: [256 // int(name)])
    )


def test_finetuning_benchmark_runs_each_batching_and_counts_padding(tmp_path, modernbert_dir):
    from helpers import make_task

    from benchmarks import finetuning

    task = make_task(  # as the demo tasks: per-window attention, so a packed batch is one row without padding
        tmp_path,
        modernbert_dir,
        "multi_label",
        training={"lr": 5e-3, "epochs": 1, "batch_size": 8},
        attn_implementation="document_sdpa",
    )
    runs = finetuning.compare([task], seeds=[3], output_root=tmp_path / "bench")
    by_side = {r["side"]: r for r in runs}
    assert {side: r["batching"] for side, r in by_side.items()} == {s: s for s in finetuning.SIDES}
    assert by_side["packed"]["padding"] < by_side["length_grouped"]["padding"] < by_side["random"]["padding"]
    assert by_side["packed"]["score"] == pytest.approx(by_side["random"]["score"], abs=1e-3)  # the same batches
    assert all(0 < r["training_s"] and r["examples_per_second"] > 0 for r in runs)
    summary = finetuning.summarise(runs)
    assert [s["side"] for s in summary] == list(finetuning.SIDES)
    assert summary[0]["speedup"] == 1.0
    again = finetuning.compare([task], seeds=[3], output_root=tmp_path / "bench", sides=["packed"])
    assert again[0]["padding"] is None  # reused, not retrained: no padding figure is made up

    checked = finetuning.equality(task, batch_size=8)
    assert checked["loss_diff"] < 1e-05
    assert checked["max_grad_diff"] < 1e-05
    assert checked["max_logit_diff"] < 1e-05
    assert checked["max_grad"] > 1e-3  # the gradients compared are not all zero


def test_memory_figures_follow_from_the_shapes():
    from benchmarks import memory

    result = memory.figures("ModernBERT-base", ranks=8, gpu_gb=80, reserve=0.1, sequence_length=1024, masking=0.3)
    assert 149e6 < result["parameters"] < 150e6  # ModernBERT-base with its MLM head
    engines = result["engines"]
    assert engines["DDP"]["states_gb"] == 20 * result["parameters"] / 1e9
    assert engines["FSDP2"]["states_gb"] < engines["ZeRO-2"]["states_gb"] < engines["DDP"]["states_gb"]
    assert engines["DDP"]["largest_batch"] <= engines["FSDP2"]["largest_batch"]
    longer = memory.figures("ModernBERT-base", ranks=8, gpu_gb=80, reserve=0.1, sequence_length=2048, masking=0.3)
    # a fused kernel saves O(length) per layer: activations double with the length, not quadruple
    ratio = longer["activations_gb_per_sequence"] / result["activations_gb_per_sequence"]
    assert 1.9 < ratio < 2.1
    assert result["checkpointed_gb_per_sequence"] < result["activations_gb_per_sequence"]


def test_document_attention_benchmark_loads_the_earlier_kernel_which_computes_the_same(tiny_tokenizer):
    from benchmarks import document_attention
    from modeling.common.attention import DocumentSpans, document_sdpa_forward

    then = document_attention.kernel_at("61e221e")  # per-document slices, 3-d sdpa
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 2, 40, 8) for _ in range(3))
    doc_ids = torch.tensor([[0] * 25 + [1] * 15, [0] * 30 + [-1] * 10])
    layer = torch.nn.Module()
    for window in (None, 4):  # a global layer, a local one
        layer.sliding_window = window
        spans = DocumentSpans.from_doc_ids(doc_ids, window or 8)
        old, _ = then(layer, query, key, value, spans)
        new, _ = document_sdpa_forward(layer, query, key, value, spans)
        real = (doc_ids >= 0)[..., None, None].expand_as(new)
        assert torch.allclose(old[real], new[real], atol=1e-6)


def test_phase_walk_follows_the_set_up_data_then_plan_then_trainer(tmp_path):
    """The phase set-up reads as a straight line: the packing record, the phase's data in one call, the plan, the
    training rows, the Trainer; and the walk records calls at every depth (the index is built below)."""
    import json
    import subprocess
    import sys

    from helpers import ROOT

    out = tmp_path / "walk.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.phase_walk", "--json", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    walk = json.loads(out.read_text())
    data_steps = [step for step in walk["steps"] if step.startswith("modeling.data.")]
    assert data_steps == [
        "modeling.data.packing.Packing.of",
        "modeling.data.rows.build_phase_data",
        "modeling.data.rows.PhaseData.training_rows",
    ]
    order = [
        walk["steps"].index(f"modeling.{name}")
        for name in (
            "data.rows.build_phase_data",
            "pretrain.schedules.plan_phase",
            "pretrain.trainer.PretrainingTrainer.__init__",
        )
    ]
    assert order == sorted(order)
    assert walk["entries"]["modeling.data.index"] >= 1  # below build_phase_data: the depths are walked
    assert walk["descents"] == 3


def test_contamination_benchmark_finds_exactly_the_planted_runs(tmp_path, tiny_tokenizer):
    from benchmarks.contamination import evaluation_set
    from benchmarks.store import synthetic_store
    from modeling.data.contamination import scan_store

    store = synthetic_store(tmp_path / "store", tiny_tokenizer, 3000, shard_documents=1000)
    evaluation = evaluation_set(store, 500, 13)
    report = scan_store(store, evaluation, num_proc=2)
    assert report.processes == 2
    assert report.store_tokens == store.manifest.sources["synthetic"].tokens["train"]
    found = [int(d.id) for d in report.documents if d.ngrams_in_store]
    assert found  # the planted runs (every 100th document, 60 tokens of a store document)
    assert all(i % 100 == 0 for i in found)  # and nothing in random text


def test_mds_benchmark_reads_every_input_to_the_same_store(tmp_path, tiny_tokenizer):
    from helpers import synthetic_documents

    from benchmarks.mds import corpora, read_once, store_once

    documents = synthetic_documents(250, seed=5)
    specs = corpora(tmp_path, documents, tiny_tokenizer)
    assert len(specs) == 4
    stored = set()
    for spec in specs.values():
        assert read_once(spec)[1] == len(documents)
        stored.add(store_once(spec, tmp_path, tiny_tokenizer)[1])
    assert len(stored) == 1 and stored.pop() > 0


def test_fault_injection_kills_the_pipeline_and_every_kill_is_survived(tmp_path):
    """The short version of benchmarks/fault_injection.py: two seeded kills (SIGKILL or SIGTERM to the
    process group) of the whole pipeline (prepare, training, background pushes to the local Hub), resumed after
    each; it ends equal to the uninterrupted run, every file reads, no temporary is left, the Hub repo is
    complete. The module exits 1 on any failed chain."""
    import json
    import subprocess
    import sys

    from helpers import ROOT

    out = tmp_path / "faults.json"
    command = [sys.executable, "-m", "benchmarks.fault_injection", "--processes", "1", "--kills", "2"]
    command += ["--kills_per_chain", "2", "--seed", "3", "--keep", str(tmp_path / "runs"), "--json", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (report,) = json.loads(out.read_text())["results"]
    assert report["reference"]["problems"] == []
    assert report["kills"] == 2 and report["survived"] == 2  # chains go on until the kills are delivered
    for chain in report["chains"]:
        assert chain["launches"] == len(chain["kills"]) + 2  # each launch killed, or the prepare and training that end
        assert chain["max_weight_diff"] <= 1e-6
        assert all(kill["moment"] for kill in chain["kills"])
