"""The pretraining path of benchmarks.gpu.pretraining under torch.compile (recipe `model.compile: true`, which
the Trainer applies): varlen, and dense document masks (sdpa), the two whose shapes compile cleanly. The first
step includes the compilation; later row layouts with other documents may recompile (counted)."""

from __future__ import annotations

from benchmarks.gpu.pretraining import measure_project, store_for
from benchmarks.gpu.pretraining import table as pretraining_table
from benchmarks.gpu.setting import PartContext
from modeling.common.attention import VARLEN, varlen_unavailable

NEEDS = {"gpu": 45, "cpu": 20}  # seconds: compiling the model (twice: the second layout), then the steps


def run(ctx: PartContext) -> None:
    import torch._dynamo

    store, tokenizer = store_for(ctx)
    for backend in (VARLEN, "sdpa"):
        if backend == VARLEN and ctx.setting.on_gpu and varlen_unavailable("cuda"):
            ctx.skip(f"project, {backend}, torch.compile", varlen_unavailable("cuda"))
            continue
        if backend == VARLEN and not ctx.setting.on_gpu:
            ctx.skip(
                f"project, {backend}, torch.compile",
                "the CPU reference kernel loops over segments in Python and compiles anew for every row layout "
                "(minutes on a CPU); the CUDA kernel is one custom op",
            )
            continue
        if not ctx.enough_time(f"project, {backend}, torch.compile", NEEDS[ctx.setting.mode]):
            continue
        torch._dynamo.reset()
        _clear_counters()  # reset() keeps dynamo's counters: each side counts its own graphs
        with ctx.guard(f"project, {backend}, torch.compile"):
            figures = measure_project(ctx, store, tokenizer, backend, compile=True)
            figures["graphs_compiled"] = _graphs_compiled()
            ctx.add(figures)


def _clear_counters() -> None:
    try:
        from torch._dynamo.utils import counters

        counters.clear()
    except ImportError:
        pass


def _graphs_compiled() -> int | None:
    """Graphs dynamo compiled (a recompilation for a new row layout adds one); None where torch does not say."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except (ImportError, KeyError, TypeError):
        return None


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers, cells = pretraining_table(rows)
    return headers + ["graphs compiled"], [
        c + [str(r.get("graphs_compiled"))] for c, r in zip(cells, rows, strict=True)
    ]
