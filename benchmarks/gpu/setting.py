"""What every part of the GPU check shares: the size it runs at, the synthetic tokenizer, documents and store,
the card's peak, and the context that keeps a part's figures on disk as it goes.

Two sizes, one code path:
  gpu   ModernBERT-base's shape (hidden 768, 22 layers, 12 heads, vocabulary 50,368, ModernBERT's special ids),
        rows of 8,192 tokens, bf16, on the GPU
  cpu   a tiny ModernBERT (same layer pattern) on rows of 256, fp32, on the CPU: the test suite runs the whole
        check so, and the varlen backend runs with its plain reference kernel in place of the CUDA one

Documents have clinical-note-like lengths (benchmarks.common.clinical_lengths: log-normal, mean about 1,500
tokens, cut at the row length), scaled to the row length in the cpu size. Token ids are random: what is timed
depends on lengths, not on what the tokens say. Nothing is downloaded, and nothing here needs datasets,
evaluate, datatrove, pubmed-parser, seqeval, deepspeed or flash-attn (absent from the GPU image).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import SHAPES, clinical_lengths
from modeling.common import run_files

BASE_ROW = 8192


@dataclass(frozen=True)
class Setting:
    mode: str  # gpu | cpu
    device: str
    model: dict  # ModernBertConfig fields of the shape
    vocab_size: int
    special_ids: dict  # token -> id, at ModernBERT's ids in the gpu size
    row_length: int
    rows_per_step: int  # per device
    warmup_steps: int
    timed_steps: int
    correctness_rows: int  # packed rows whose documents are checked one by one
    small_model: dict  # the loss-and-gradient check's shape
    small_row: int
    finetune_examples: int
    finetune_max_length: int
    inference_scale: float  # share of each of the paper's inference sets that is run
    largest_batch_cap: int  # the search for the largest batch stops here
    engine_model: dict  # the engine smoke test's model (train_mlm.py end to end)
    engine_row: int
    engine_steps: int
    dtype: str = "bfloat16"

    @property
    def on_gpu(self) -> bool:
        return self.mode == "gpu"

    def scaled(self, tokens: int) -> int:
        """A length given for 8,192-token rows, at this size's row length."""
        return max(4, round(tokens * self.row_length / BASE_ROW))

    def document_lengths(self, n: int, seed: int = 0) -> list[int]:
        """Clinical-note-like document lengths ([CLS] and [SEP] included) for this size's rows."""
        return clinical_lengths(n, seed, mean=self.scaled(1500), low=max(4, self.scaled(32)), high=self.row_length)


LAYER_PATTERN = dict(global_attn_every_n_layers=3, local_attention=128)  # ModernBERT's: global every 3rd layer
MODERNBERT_BASE = dict(SHAPES["base"], **LAYER_PATTERN)
MODERNBERT_LARGE = dict(
    MODERNBERT_BASE, hidden_size=1024, intermediate_size=2624, num_hidden_layers=28, num_attention_heads=16
)
TINY = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=2,
    global_attn_every_n_layers=3,
    local_attention=16,
)
# The layer pattern at hidden 256, 6 layers: the gradient check's and the engine smoke test's model.
SMALL = dict(MODERNBERT_BASE, hidden_size=256, intermediate_size=384, num_hidden_layers=6, num_attention_heads=4)
MODERNBERT_SPECIAL_IDS = {"[UNK]": 50280, "[CLS]": 50281, "[SEP]": 50282, "[PAD]": 50283, "[MASK]": 50284}

GPU = Setting(
    mode="gpu",
    device="cuda",
    model=MODERNBERT_BASE,
    vocab_size=50368,
    special_ids=MODERNBERT_SPECIAL_IDS,
    row_length=8192,
    rows_per_step=4,  # the base recipe's batch.per_device
    warmup_steps=2,
    timed_steps=6,
    correctness_rows=2,
    small_model=SMALL,
    small_row=2048,
    finetune_examples=768,
    finetune_max_length=512,
    inference_scale=0.125,
    largest_batch_cap=64,
    engine_model=SMALL,
    engine_row=2048,
    engine_steps=6,
)
CPU = Setting(
    mode="cpu",
    device="cpu",
    model=TINY,
    vocab_size=512,
    special_ids={"[UNK]": 500, "[CLS]": 501, "[SEP]": 502, "[PAD]": 503, "[MASK]": 504},
    row_length=256,
    rows_per_step=2,
    warmup_steps=1,
    timed_steps=2,
    correctness_rows=2,
    small_model=TINY,
    small_row=128,
    finetune_examples=48,
    finetune_max_length=64,
    inference_scale=0.002,
    largest_batch_cap=4,
    engine_model=TINY,
    engine_row=128,
    engine_steps=3,
    dtype="float32",
)


def setting(cpu: bool) -> Setting:
    return CPU if cpu else GPU


# --------------------------------------------------------------------------- tokenizer, model, documents


def synthetic_tokenizer(setting: Setting):
    """A word-level tokenizer whose vocabulary is `w<id>` for every id, with the special tokens at the setting's
    ids: the shape of ModernBERT's tokenizer (vocabulary and special ids), built offline in a second."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    by_id = {i: f"w{i}" for i in range(setting.vocab_size)}
    by_id.update({i: token for token, i in setting.special_ids.items()})
    backend = Tokenizer(models.WordLevel({token: i for i, token in by_id.items()}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_max_length=setting.row_length,
    )


def model_config(setting: Setting, shape: dict | None = None, max_positions: int | None = None, **overrides):
    from transformers import ModernBertConfig

    ids = setting.special_ids
    return ModernBertConfig(
        **(shape or setting.model),
        vocab_size=setting.vocab_size,
        max_position_embeddings=max_positions or setting.row_length,
        pad_token_id=ids["[PAD]"],
        cls_token_id=ids["[CLS]"],
        sep_token_id=ids["[SEP]"],
        bos_token_id=ids["[CLS]"],
        eos_token_id=ids["[SEP]"],
        **overrides,
    )


def random_documents(setting: Setting, lengths: list[int], seed: int = 0, wrapped: bool = True) -> list[list[int]]:
    """Documents of the given lengths ([CLS] and [SEP] counted), ids drawn from the non-special vocabulary: as
    `[CLS] ids [SEP]` (what a note is to the encoder), or the bare ids (what the row packer takes and wraps)."""
    rng = np.random.default_rng(seed)
    ids = setting.special_ids
    specials = set(ids.values())
    ordinary = np.array([i for i in range(setting.vocab_size) if i not in specials])
    bodies = [ordinary[rng.integers(0, len(ordinary), n - 2)].tolist() for n in lengths]
    return [[ids["[CLS]"], *body, ids["[SEP]"]] for body in bodies] if wrapped else bodies


def write_store(folder: Path, setting: Setting, tokenizer, documents: int):
    """A token store of random ids with the setting's document lengths (written straight to Arrow, with its
    manifest): what `train_mlm.py prepare` leaves, without reading or tokenizing anything."""
    from benchmarks.store import synthetic_store

    def lengths(n: int, seed: int) -> np.ndarray:  # the store keeps documents without [CLS]/[SEP]
        return np.asarray(setting.document_lengths(n, seed), dtype=np.int64) - 2

    return synthetic_store(folder, tokenizer, documents, lengths=lengths)


def attention_backends(ctx: PartContext, training: bool, prefix: str = "") -> list[str]:
    """The attention backends this machine runs, in the order the check takes them: varlen (what the project
    adds) first, flex_attention last (it compiles kernels before its first step). Each that cannot run is recorded
    as skipped, with why. `training`: backward is needed, which flex_attention lacks on CPUs."""
    import importlib.util

    from modeling.common.attention import FLASH, VARLEN, varlen_unavailable

    out = []
    for name in (VARLEN, "sdpa", "document_sdpa", FLASH, "flex_attention"):
        if name == VARLEN and ctx.setting.on_gpu and varlen_unavailable("cuda"):
            ctx.skip(prefix + name, varlen_unavailable("cuda"))
        elif name == FLASH and not ctx.setting.on_gpu:
            ctx.skip(prefix + name, "flash-attn runs on GPUs only")
        elif name == FLASH and importlib.util.find_spec("flash_attn") is None:
            ctx.skip(
                prefix + name, "flash-attn is not installed (it builds against CUDA; the project does not need it)"
            )
        elif name == "flex_attention" and training and not ctx.setting.on_gpu:
            ctx.skip(prefix + name, "flex_attention has no backward on CPUs")
        else:
            out.append(name)
    return out


def last_line(path: Path) -> str:
    """The last non-empty line of a log, cut to 300 characters: what a failure's one-line report quotes."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "no output"


# --------------------------------------------------------------------------- the card


# Dense bf16 peaks (TFLOP/s, without sparsity) from the vendors' datasheets, matched on the device name.
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM (HBM3): "NVIDIA H100 80GB HBM3"
    ("H200", 989.4),
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A10G", 70.0),
    ("L40S", 362.1),
    ("L4", 121.0),
    ("RTX 4090", 165.2),
)


def bf16_peak(name: str) -> float | None:
    """The card's dense bf16 peak in FLOP/s, or None when it is not in the table (MFU is then not given)."""
    for key, tflops in BF16_PEAK_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


@dataclass
class Machine:
    """What ran the check: every figure is read on it, except the peak, which is the datasheet's."""

    device: str
    capability: str | None
    memory_gb: float | None
    bf16_peak_tflops: float | None
    torch: str
    cuda: str | None
    transformers: str
    accelerate: str
    python: str
    varlen: str  # "available", or why not
    flash_attn: str | None  # its version where importable
    when: str

    @classmethod
    def here(cls, setting: Setting) -> Machine:
        import platform

        import accelerate
        import transformers

        from modeling.common.attention import varlen_unavailable

        try:
            import flash_attn

            flash = flash_attn.__version__
        except ImportError:
            flash = None
        if setting.on_gpu and torch.cuda.is_available():
            properties = torch.cuda.get_device_properties(0)
            name, memory = properties.name, properties.total_memory / 1e9
            capability = f"sm_{properties.major}{properties.minor}"
        else:
            name, memory, capability = f"CPU ({platform.machine()}, {os.cpu_count()} cores)", None, None
        peak = bf16_peak(name) if capability else None
        return cls(
            device=name,
            capability=capability,
            memory_gb=round(memory, 1) if memory else None,
            bf16_peak_tflops=peak / 1e12 if peak else None,
            torch=torch.__version__,
            cuda=torch.version.cuda,
            transformers=transformers.__version__,
            accelerate=accelerate.__version__,
            python=platform.python_version(),
            varlen=varlen_unavailable("cuda" if setting.on_gpu else "cpu") or "available",
            flash_attn=flash,
            when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        )


# --------------------------------------------------------------------------- a part's context


@dataclass
class PartContext:
    """One part's figures, written to OUT/parts/NAME.json after every row, so a part stopped at its time cap
    (or killed by a fault) still leaves what it measured."""

    name: str
    out: Path
    setting: Setting
    deadline: float  # time.time() by which the part must be done
    work: Path = Path("work")  # stores, runs and checkpoints the parts make: not under OUT, which is only figures
    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.out / "parts" / f"{self.name}.json"

    def time_left(self) -> float:
        return self.deadline - time.time()

    def add(self, row) -> None:
        self.rows.append(asdict(row) if hasattr(row, "__dataclass_fields__") else dict(row))
        self.save()

    def skip(self, what: str, why: str) -> None:
        self.skipped.append({"what": what, "why": why})
        self.save()

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.save()

    def fail(self, what: str, error: BaseException) -> None:
        self.failed.append({"what": what, "error": describe(error)})
        self.save()
        free_memory(self.setting)

    @contextlib.contextmanager
    def guard(self, what: str):
        """One side of a part: an error is recorded (named, with its message) and the part goes on with the next
        side, so one backend that breaks on a new machine costs its own figures only."""
        try:
            yield
        except Exception as error:  # whatever a kernel, a compiler or a launcher raises
            self.fail(what, error)

    def enough_time(self, what: str, needs: float) -> bool:
        """Whether `needs` seconds are left; if not, `what` is recorded as skipped for that reason."""
        if self.time_left() >= needs:
            return True
        self.skip(what, f"{self.time_left():.0f} s left of the part's cap, {needs:.0f} s needed")
        return False

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"rows": self.rows, "skipped": self.skipped, "failed": self.failed, "notes": self.notes}
        run_files.write_json(self.path, data, indent=1)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:300]


def free_memory(setting: Setting) -> None:
    import gc

    gc.collect()
    if setting.on_gpu:
        torch.cuda.empty_cache()


def kernel_context(setting: Setting):
    """On a CPU, varlen runs its layout work on the plain reference kernel in place of the CUDA one."""
    from modeling.common.attention import reference_varlen_attn, varlen_kernel

    return contextlib.nullcontext() if setting.on_gpu else varlen_kernel(reference_varlen_attn)


def synchronize(setting: Setting) -> None:
    if setting.on_gpu:
        torch.cuda.synchronize()


def peak_memory_gb(setting: Setting) -> float | None:
    return torch.cuda.max_memory_allocated() / 1e9 if setting.on_gpu else None
