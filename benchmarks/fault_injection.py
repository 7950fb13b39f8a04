"""Kill the pipeline anywhere: a tiny two-phase run, from its sources to the Hub, killed at seeded random moments
and resumed after each, must end as the run that was never interrupted.

The pipeline is what a user runs: `train_mlm.py prepare RECIPE`, then the training (`train_mlm.py RECIPE`, under
`accelerate launch` with two processes over gloo for --processes 2) with `hub.repo_id` set, so each phase is pushed
at its hand-over and the last to main, in the background, to the tests' Hub server on 127.0.0.1. A chain is one
such pipeline killed `--kills_per_chain` times: the kill moments are drawn uniformly over the uninterrupted
pipeline's life (so they land in proportion to how long each stage takes: start-up, prepare, the row index, steps,
checkpoint writes, the hand-over, the push), each kill SIGKILL to the whole process group (a node lost) or SIGTERM
to it (a scheduler's preemption), and after each the pipeline is launched again (prepare until the store is
complete, then the training with --resume) until it ends. What the run was doing when killed is read from what it
left: an incomplete store, a temporary file (what was being written), a checkpoint without its marker, a finished
phase whose successor has not started, a phase folder not yet on the Hub, else the steps.

A chain survives when, after its last relaunch ends (exit 0): the phase folders' weights equal the uninterrupted
run's (max abs difference <= 1e-6; on a CPU in fp32 they are equal), every safetensors and JSON file in the run
and the store reads, the store verifies against its checksums, no temporary file is left, no process of the
pipeline outlives it (a worker the kill did not reach), and the Hub repo holds phase1, phase2 and main with the
phase folders' weights. Every kill of a chain counts as survived or not with it.

    python -m benchmarks.fault_injection [--kills 30] [--processes 1 2] [--kills_per_chain 3] [--seed 0] [--json F]
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common import ROOT, arguments, markdown_table, write_json

sys.path.insert(0, str(ROOT / "tests"))  # the recipe, environment and Hub server the tests use

REPO, TOKEN = "faults/tiny", "hf_FaultInjection0123456789"
BRANCHES = {"phase1": "phase1", "phase2": "phase2", "main": "phase2"}  # Hub branch -> the phase folder it holds
TOLERANCE = 1e-6
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM}


@dataclass
class Kill:
    chain: int
    command: str  # prepare | train
    after_s: float  # into the launch
    signal: str
    moment: str  # what the pipeline was doing, read from what it left


@dataclass
class Chain:
    number: int
    processes: int
    kills: list[Kill] = field(default_factory=list)
    launches: int = 0
    seconds: float = 0.0
    max_weight_diff: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def survived(self) -> bool:
        return not self.problems


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_pipeline(folder: Path) -> Path:
    from helpers import write_recipe

    settings = {"hub.repo_id": REPO, "hub.license": "apache-2.0", "checkpoint.keep": 20}
    return write_recipe(folder, **settings)


def command(folder: Path, stage: str, processes: int) -> list[str]:
    script, recipe = str(ROOT / "train_mlm.py"), str(folder / "recipe.yaml")
    if stage == "prepare":
        return [sys.executable, script, "prepare", recipe]
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
        launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        launcher += ["--main_process_port", str(free_port())]
    return [*launcher, script, recipe, "--resume"]  # --resume on a run not yet started starts it


def environment(folder: Path, hub_url: str) -> dict:
    from helpers import script_env

    return {**script_env(folder), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub_url, "HF_TOKEN": TOKEN}


def launch(folder: Path, stage: str, processes: int, env: dict, kill_after: float | None, how: str, log) -> bool:
    """Run one stage; kill its process group after `kill_after` seconds if it still runs. True if killed."""
    process = subprocess.Popen(
        command(folder, stage, processes),
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        process.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, SIGNALS[how])
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:  # SIGTERM not obeyed: a fault of its own, still stopped
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise RuntimeError(f"{stage} did not stop within 120 s of {how}") from None
        _reap_group(process.pid)
        return True
    if process.returncode != 0:
        raise RuntimeError(f"{stage} ended with exit code {process.returncode} (see its log)")
    return False


def _reap_group(group: int) -> None:
    """The kill reaches every process of the group; wait until none is left (a worker still writing would race
    the relaunch)."""
    for _ in range(600):
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def moment(folder: Path, hub, stage: str) -> str:
    """What the pipeline was doing when killed, from what it left."""
    store, out = folder / "stores" / "tiny", folder / "out"
    temporaries = [*store.rglob("*.tmp"), *out.rglob("*.tmp")]
    if stage == "prepare" or not (store / "manifest.json").exists():
        if temporaries:
            return "prepare: writing " + _kind(temporaries[0])
        if not store.exists():
            return "prepare: start-up (imports)"
        if not (store / "tokenizer").exists():
            return "prepare: training the tokenizer"
        return f"prepare: the parts ({len(list(store.glob('*/part-*.json')))} written)"
    if temporaries:
        return "writing " + _kind(temporaries[0])
    for phase in ("phase1", "phase2"):
        for checkpoint in sorted((out / phase / "checkpoints").glob("checkpoint-*")):
            if not (checkpoint / "checkpoint_complete.json").exists():
                return f"{phase}: a checkpoint write ({checkpoint.name}, no marker yet)"
    pushed = set(hub.repos.get(REPO, {}).get("branches", {}))
    if (out / "phase1" / "phase_summary.json").exists() and not (out / "phase2" / "checkpoints").exists():
        return "the phase hand-over" + ("" if "phase1" in pushed else " (phase1 not on the Hub yet)")
    for phase in ("phase1", "phase2"):
        if (out / phase / "phase_summary.json").exists() and phase not in pushed:
            return f"the Hub push of {phase}"
    if not (out / "recipe.json").exists():
        return "start-up (imports, model)"
    for phase in ("phase2", "phase1"):
        done = sorted((out / phase / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        if done:
            return f"{phase}: steps after {done[-1].name}"
    return "phase1: the row index, the first steps"


def _kind(path: Path) -> str:
    parts = path.parts
    for name, what in (
        ("row_indexes", "the row index"),
        ("checkpoints", "a checkpoint"),
        ("revisions", "a revision"),
        ("tokenizer", "the tokenizer"),
    ):
        if any(name in part for part in parts):
            return what
    if path.name.startswith(("train-", "held_out-", "part-")):
        return "a store shard"
    return path.name.rsplit(".", 2)[0]


def run_chain(folder: Path, number: int, processes: int, kills: int, life: tuple[float, float], rng, hub) -> Chain:
    """The pipeline in `folder`, killed up to `kills` times, then run to its end. Each kill comes after a delay
    drawn uniformly over the launch's uninterrupted duration (`life`: prepare's, training's seconds), so moments
    land in proportion to what takes time; the first lands in prepare in proportion to prepare's share."""
    chain, started = Chain(number, processes), time.monotonic()
    env = environment(folder, hub.url)
    prepare_s, train_s = life
    spare_prepare = rng.random() >= prepare_s / (prepare_s + train_s)  # the first kill comes in the training
    with open(folder / "pipeline.log", "a") as log:
        while True:
            stage = "train" if (folder / "stores" / "tiny" / "manifest.json").exists() else "prepare"
            delay, how = None, rng.choice(list(SIGNALS))
            if len(chain.kills) < kills and not (stage == "prepare" and spare_prepare):
                delay = rng.uniform(0.5, prepare_s if stage == "prepare" else train_s)
            chain.launches += 1
            log.write(f"\n===== launch {chain.launches}: {stage}, kill after {delay} s by {how}\n")
            log.flush()
            try:
                killed = launch(folder, stage, processes, env, delay, how, log)
            except RuntimeError as error:
                chain.problems.append(str(error))
                break
            if killed:
                chain.kills.append(Kill(number, stage, round(delay, 1), how, moment(folder, hub, stage)))
            elif stage == "train":
                break
    chain.seconds = time.monotonic() - started
    return chain


def check_chain(chain: Chain, folder: Path, reference: Path, hub) -> None:
    """What a survived chain must show (the module's docstring)."""
    from safetensors.torch import load_file

    from modeling.data.store import Store

    lingering = _processes_of(folder)
    if lingering:  # a worker the kill did not reach, still holding the store's lock, memory, a GPU
        chain.problems.append(f"{len(lingering)} processes of the pipeline outlived it (pids {lingering[:4]})")
        for pid in lingering:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if chain.problems:
        return
    out, diff = folder / "out", 0.0
    for phase in ("phase1", "phase2"):
        try:
            ours, theirs = (
                load_file(out / phase / "model.safetensors"),
                load_file(reference / phase / "model.safetensors"),
            )
        except Exception as error:  # noqa: BLE001 - any failure to read is the finding
            chain.problems.append(f"{phase}/model.safetensors: {type(error).__name__}: {error}")
            continue
        if ours.keys() != theirs.keys():
            chain.problems.append(f"{phase}: other tensors than the uninterrupted run's")
            continue
        diff = max(diff, max((ours[k].float() - theirs[k].float()).abs().max().item() for k in ours))
    chain.max_weight_diff = diff
    if diff > TOLERANCE:
        chain.problems.append(f"weights differ from the uninterrupted run's by {diff:.2e}")
    for path in list(out.rglob("*.safetensors")) + list((folder / "stores").rglob("*.safetensors")):
        try:
            load_file(path)
        except Exception as error:  # noqa: BLE001
            chain.problems.append(f"{path.relative_to(folder)}: unreadable ({type(error).__name__})")
    for path in list(out.rglob("*.json")) + list((folder / "stores").rglob("*.json")):
        try:
            json.loads(path.read_text())
        except (OSError, ValueError) as error:
            chain.problems.append(f"{path.relative_to(folder)}: unreadable JSON ({error})")
    left = [*out.rglob("*.tmp"), *(folder / "stores").rglob("*.tmp")]
    if left:
        chain.problems.append(f"temporary files left: {', '.join(str(p.relative_to(folder)) for p in left[:3])}")
    try:
        Store(folder / "stores" / "tiny").verify()
    except Exception as error:  # noqa: BLE001
        chain.problems.append(f"store: {error}")
    branches = set(hub.repos.get(REPO, {}).get("branches", {}))
    for branch, phase in BRANCHES.items():
        if branch not in branches:
            chain.problems.append(f"the Hub repo has no branch {branch}")
            continue
        arrived = hub.files(REPO, branch).get("model.safetensors")
        if arrived != (out / phase / "model.safetensors").read_bytes():
            chain.problems.append(f"the Hub's {branch} does not hold {phase}'s weights")


def _processes_of(folder: Path) -> list[int]:
    """Processes still running whose command line names the chain's folder (its recipe)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(folder / "recipe.yaml") in command and state != "Z":
            found.append(int(entry.name))
    return found


def pipeline_seconds(folder: Path, processes: int, hub) -> tuple[float, float]:
    """The uninterrupted pipeline in `folder` (the reference): its prepare's and its training's seconds."""
    env, times = environment(folder, hub.url), []
    with open(folder / "pipeline.log", "w") as log:
        for stage in ("prepare", "train"):
            begun = time.monotonic()
            launch(folder, stage, processes, env, None, "SIGKILL", log)
            times.append(time.monotonic() - begun)
    return times[0], times[1]


def run(processes: int, kills: int, per_chain: int, seed: int, work: Path) -> dict:
    from fake_hub import FakeHub

    rng = random.Random(f"{seed}-{processes}")
    reference = work / f"reference-{processes}"
    reference.mkdir(parents=True)
    write_pipeline(reference)
    with FakeHub(TOKEN) as hub:
        prepare_s, train_s = pipeline_seconds(reference, processes, hub)
        reference_problems = Chain(0, processes)
        check_chain(reference_problems, reference, reference / "out", hub)
    print(f"{processes} process(es): uninterrupted pipeline {prepare_s:.0f} s prepare + {train_s:.0f} s training")
    chains: list[Chain] = []
    while sum(len(c.kills) for c in chains) < kills:  # a launch may end before its kill: chains go on until N
        number = len(chains) + 1
        folder = work / f"chain-{processes}-{number}"
        folder.mkdir()
        write_pipeline(folder)
        left = kills - sum(len(c.kills) for c in chains)
        with FakeHub(TOKEN) as hub:
            chain = run_chain(folder, number, processes, min(per_chain, left), (prepare_s, train_s), rng, hub)
            check_chain(chain, folder, reference / "out", hub)
        chains.append(chain)
        said = "survived" if chain.survived else "FAILED: " + "; ".join(chain.problems)
        print(f"  chain {number}: {len(chain.kills)} kills ({', '.join(k.moment for k in chain.kills)}) -> {said}")
        if not chain.kills and chain.problems:
            break  # the pipeline fails without any kill: more chains would only repeat it
    delivered = [k for c in chains for k in c.kills]
    survived = [k for c in chains if c.survived for k in c.kills]
    return {
        "processes": processes,
        "reference": {
            "prepare_s": round(prepare_s, 1),
            "train_s": round(train_s, 1),
            "problems": reference_problems.problems,
        },
        "kills": len(delivered),
        "survived": len(survived),
        "chains": [{**asdict(c), "survived": c.survived} for c in chains],
    }


def main():
    parser = arguments(__doc__)
    parser.add_argument("--kills", type=int, default=30, help="kill moments per process count (default: 30)")
    parser.add_argument("--kills_per_chain", type=int, default=3, help="kills in one pipeline before it ends")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="training processes (gloo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="keep the runs in this folder (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="faults-"))
    results = []
    try:
        for processes in args.processes:
            results.append(run(processes, args.kills, args.kills_per_chain, args.seed, work / f"p{processes}"))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    rows = [[r["processes"], r["kills"], f"{r['survived']} / {r['kills']}", len(r["chains"])] for r in results]
    print(markdown_table(["processes", "kills delivered", "survived", "chains"], rows))
    print()
    moments = [
        [
            r["processes"],
            k["chain"],
            k["command"],
            k["after_s"],
            k["signal"],
            k["moment"],
            "yes" if c["survived"] else "no",
        ]
        for r in results
        for c in r["chains"]
        for k in c["kills"]
    ]
    print(markdown_table(["processes", "chain", "stage", "after (s)", "signal", "moment", "survived"], moments))
    write_json(args.json, {"seed": args.seed, "tolerance": TOLERANCE, "results": results})
    failed = [c for r in results for c in r["chains"] if not c["survived"]]
    sys.exit(1 if failed or any(r["reference"]["problems"] for r in results) else 0)


if __name__ == "__main__":
    main()
