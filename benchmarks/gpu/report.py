"""The GPU check's report: every part's table in Markdown, and the issue's goals read off the figures."""

from __future__ import annotations

import importlib

from benchmarks.common import markdown_table


def markdown(report: dict) -> str:
    from benchmarks.gpu.check import PARTS

    lines = [f"# GPU check ({report['mode']} mode)", "", machine_line(report)]
    for name, part in report["parts"].items():
        module, title = PARTS[name][0], PARTS[name][3]
        lines += ["", f"## {title}", "", f"`{name}`: {part['status']}" + _timing(part)]
        for note in part.get("notes", []):
            lines += ["", f"- {note}"]
        if part.get("rows"):
            headers, rows = importlib.import_module(module).table(part["rows"])
            lines += ["", markdown_table(headers, rows)]
        for skipped in part.get("skipped", []):
            lines += ["", f"- skipped: {skipped['what']}: {skipped['why']}"]
        for failed in part.get("failed", []):
            lines += ["", f"- **failed**: {failed['what']}: {failed['error']}"]
    if report.get("goals"):
        lines += ["", "## Goals", "", markdown_table(["goal", "measured", "met"], report["goals"])]
    return "\n".join(lines) + "\n"


def machine_line(report: dict) -> str:
    """What ran it: the card, the versions, when, and the wall time against the budget."""
    machine = {key: "?" for key in ("torch", "cuda", "transformers", "accelerate", "python", "varlen", "when")}
    machine.update(report["machine"])
    return (
        f"{machine['device']}"
        + (f" ({machine['capability']}, {machine['memory_gb']} GB)" if machine.get("capability") else "")
        + f"; torch {machine['torch']} (CUDA {machine['cuda']}), transformers {machine['transformers']}, "
        f"accelerate {machine['accelerate']}, Python {machine['python']}; flash-attn "
        f"{machine.get('flash_attn') or 'not installed'}; varlen_attn: {machine['varlen']}; {machine['when']}. "
        f"bf16 peak for MFU: {machine.get('bf16_peak_tflops') or 'unknown'} TFLOP/s (datasheet, dense). "
        f"Wall time {report.get('wall_s', 0):.0f} s of a {report['budget_s']:.0f} s budget."
    )


def users_markdown(report: dict) -> str:
    """The users' commands (users.py): one row per command, the held-out losses, the fine-tuning scores, checks."""
    lines = [f"# The users' commands ({report['mode']} mode)", "", machine_line(report), ""]
    rows = []
    for record in report.get("steps", {}).values():
        memory = "-" if record["peak_memory_gb"] is None else f"{record['peak_memory_gb']:.2f}"
        throughput = "-" if record["throughput"] is None else f"{record['throughput']:,} {record['unit']}"
        wall = "-" if record["wall_s"] is None else f"{record['wall_s']:.1f}"
        rows.append([record["name"], f"`{record['command']}`", record["status"], wall, throughput, memory])
    memory = "device memory in use, GB (nvidia-smi)" if report["mode"] == "gpu" else "resident memory, GB"
    lines += [markdown_table(["step", "command", "status", "wall s", "throughput", f"peak {memory}"], rows)]
    held = [
        [name, phase, f"{start:.4f}", f"{end:.4f}"]
        for name, record in report.get("steps", {}).items()
        for phase, (start, end) in record["details"].get("held_out", {}).items()
    ]
    if held:
        lines += ["", "## Held-out loss", "", markdown_table(["run", "phase", "before", "after"], held)]
    scores = [
        [
            name,
            record["details"].get("batching") or "-",
            record["details"]["metric"],
            f"{record['details']['test']:.4f}",
        ]
        for name, record in report.get("steps", {}).items()
        if "metric" in record["details"]
    ]
    if scores:
        lines += [
            "",
            "## Fine-tuning (seed 42, test split)",
            "",
            markdown_table(["run", "batches", "metric", "test"], scores),
        ]
    checks = [
        [c["check"], c["measured"], c["tolerance"], "yes" if c["ok"] else "**no**"] for c in report.get("checks", [])
    ]
    if checks:
        lines += ["", "## Checks", "", markdown_table(["check", "measured", "tolerance", "met"], checks)]
    return "\n".join(lines) + "\n"


def _timing(part: dict) -> str:
    return f" ({part['seconds']} s of a {part['cap_s']} s cap)" if "seconds" in part else ""


def _rows(report: dict, part: str) -> list[dict]:
    return report["parts"].get(part, {}).get("rows", [])


def goals(report: dict) -> list[list[str]]:
    """The issue's goals, each with what was measured and whether it is met ("not measured" where the part did not
    produce the figure). In cpu mode only correctness is a goal: the rest are GPU figures."""
    gpu = report["mode"] == "gpu"
    out = []

    checks = _rows(report, "correctness")
    failed = [f"{r['check']} {r['backend']} {r['dtype']}" for r in checks if not r["ok"]]
    out.append(
        [
            "packed equals alone within tolerance on every backend",
            f"{len(checks) - len(failed)} of {len(checks)} checks" + (f"; not: {', '.join(failed)}" if failed else ""),
            _met(bool(checks) and not failed, bool(checks)),
        ]
    )

    project = [r for r in _rows(report, "pretraining") if r.get("side", "").startswith("project") and r.get("mfu")]
    best = max(project, key=lambda r: r["mfu"], default=None)
    out.append(
        [
            ">= 40% MFU, ModernBERT-base at 8,192, packed",
            f"{best['mfu']:.1%} ({best['side']})" if best else "not measured",
            _met(best is not None and best["mfu"] >= 0.40, best is not None, gpu),
        ]
    )
    out.append(
        [
            "data wait < 2% of step time",
            f"{best['data_wait']:.2%} ({best['side']})" if best else "not measured",
            _met(best is not None and best["data_wait"] < 0.02, best is not None, gpu),
        ]
    )

    packed = [r for r in _rows(report, "inference") if r.get("batching") == "packed" and r.get("vs_paper")]
    worst = min(packed, key=lambda r: r["vs_paper"], default=None)
    out.append(
        [
            "inference >= 3x the paper's RTX 4090 figures (base)",
            f"{worst['vs_paper']:.2f}x at least ({worst['set']})" if worst else "not measured",
            _met(worst is not None and worst["vs_paper"] >= 3, worst is not None, gpu),
        ]
    )

    sides = {r["side"]: r for r in _rows(report, "finetuning")}
    both = "packed" in sides and "length_grouped" in sides
    ratio = sides["packed"]["examples_per_second"] / sides["length_grouped"]["examples_per_second"] if both else None
    out.append(
        [
            "packed fine-tuning >= length_grouped in examples/s",
            f"{ratio:.2f}x length_grouped" if ratio else "not measured",
            _met(ratio is not None and ratio >= 1, ratio is not None, gpu),
        ]
    )
    return out


def _met(met: bool, measured: bool, applies: bool = True) -> str:
    if not measured:
        return "not measured"
    if not applies:
        return "n/a (CPU mode)"
    return "yes" if met else "**no**"
