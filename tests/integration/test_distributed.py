"""Process groups and machines, with real processes over gloo: the run's timeout reaches the process group,
a folder that is not one folder for every process stops every process with one line, and two launches that
each think they are one machine of two (127.0.0.1) train together."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest
from helpers import ROOT, SCRIPT, TWO_PROCESSES, phase_weights, script_env, train, write_recipe

CHECKS = textwrap.dedent(
    """
    import datetime, sys
    from pathlib import Path
    from accelerate import PartialState
    from modeling.common.errors import ConfigError
    from modeling.common.runtime import check_shared_folder, join_processes, process_group_timeout

    state = join_processes(timeout_minutes=7)
    assert state.num_processes == 2
    assert process_group_timeout() == datetime.timedelta(minutes=7), process_group_timeout()
    shared = Path(sys.argv[1])
    check_shared_folder(state, shared / "run", "output_dir")  # one folder: passes, and leaves no marker
    assert not list((shared / "run").iterdir())
    # The same path on another machine's own disk, simulated by a folder per process.
    try:
        check_shared_folder(state, shared / f"rank{state.process_index}", "output_dir")
        said = "no error"
    except ConfigError as error:
        said = str(error)
    (shared / f"said{state.process_index}.txt").write_text(said)  # stdout would interleave the two ranks' lines
    state.wait_for_everyone()
    state.destroy_process_group()  # both ranks leave the group together (gloo aborts a process left alone in it)
    """
)

# End-to-end runs of training or of several processes: the fast tier (-m "not slow") leaves them out.
pytestmark = pytest.mark.slow


def test_timeout_reaches_the_group_and_an_unshared_folder_stops_every_process(tmp_path):
    script = tmp_path / "checks.py"
    script.write_text(CHECKS)
    result = subprocess.run(
        [*TWO_PROCESSES, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        env=script_env(tmp_path),
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        said = (tmp_path / f"said{rank}.txt").read_text()
        assert said.startswith(f"output_dir={tmp_path / f'rank{rank}'}: not one folder for every process"), said
        assert "rank 1 on" in said
        assert "rank 0 on" not in said  # the main process wrote it; rank 1 cannot see it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_simulated_on_one(tmp_path):
    changes = {
        "phases.0.length.steps": 3,
        "phases.1.length": {"steps": 2},
        "logging.steps": 1,
        "distributed.timeout_minutes": 5,
    }
    recipe = write_recipe(tmp_path, **changes)
    train(tmp_path, "prepare", recipe, "--num_proc", 2)  # several processes never prepare: the store comes first
    port = free_port()
    machines = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "accelerate.commands.launch",
                "--config_file",  # the shipped 2-machine config, shrunk to one process per machine
                str(ROOT / "accelerate_configs" / "2x8gpu_ddp.yaml"),
                "--num_processes",
                "2",
                "--machine_rank",
                str(rank),
                "--main_process_ip",
                "127.0.0.1",
                "--main_process_port",
                str(port),
                SCRIPT,
                str(recipe),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=script_env(tmp_path),
            cwd=tmp_path,
        )
        for rank in (0, 1)
    ]
    outputs = [machine.communicate(timeout=300) for machine in machines]
    for machine, (_, stderr) in zip(machines, outputs, strict=True):
        assert machine.returncode == 0, stderr[-3000:]
    assert "2 processes x 1 accumulation" in outputs[0][1]
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert [phase["steps"] for phase in summary["phases"]] == [3, 2]
    # The global batch is split over the two machines' processes: 3 steps of 8 rows of at most 128 tokens.
    assert 0.8 * 3 * 8 * 128 < summary["phases"][0]["tokens"] <= 3 * 8 * 128
    assert not list((tmp_path / "out").glob(".shared-folder-check-*"))
    # The processes train one model: their gradients are averaged at every step (the held-out evaluation before
    # the first step once left the model out of DDP, and each process trained its own). One process taking the
    # same global batch in two micro-batches ends with the same weights.
    alone = tmp_path / "one_process"
    alone.mkdir()
    train(alone, write_recipe(alone, **changes))
    for phase in ("phase1", "phase2"):
        together, expected = phase_weights(tmp_path / "out" / phase), phase_weights(alone / "out" / phase)
        assert max((together[k] - expected[k]).abs().max().item() for k in expected) <= 1e-6
