"""How every command ends: one line and an exit code, whatever happens on the way."""

import os
import signal
import time

import pytest


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_that_is_swallowed_still_ends_the_command_as_interrupted(capsys, signum):
    """Ctrl-C or a kill whose KeyboardInterrupt lands where it is caught (a finalizer, a library's except clause)
    still ends the command with exit code 130 and its one line, and the flag stops a Trainer at its next step."""
    from modeling.common.cli import EXIT_INTERRUPTED, interrupted, run_command

    def command(argv):
        try:
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises here
        except KeyboardInterrupt:
            pass  # swallowed on its way up
        assert interrupted()
        return 0

    assert run_command(command, [], lambda argv: "continue with: --resume") == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip() == "error: interrupted; continue with: --resume"
    assert run_command(lambda argv: 0, []) == 0
    assert not interrupted()  # the next command starts afresh


def test_a_file_that_cannot_be_written_mid_run_is_one_line_and_what_to_run_next(capsys):
    """A folder turned read-only (or a full disk) after the start-up checks: one line naming the file, exit 2."""
    import errno

    from modeling.common.cli import EXIT_USER_ERROR, run_command

    def unwritable(argv):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/runs/demo/phase1/model.safetensors")

    def full(argv):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/demo/state.json")

    assert run_command(unwritable, [], lambda argv: "continue with: --resume") == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err == "error: Read-only file system: /runs/demo/phase1/model.safetensors; continue with: --resume"
    assert run_command(full, []) == EXIT_USER_ERROR
    assert capsys.readouterr().err.strip() == "error: no space left on device writing /runs/demo/state.json"
    with pytest.raises(FileNotFoundError):  # any other OSError is a bug to see whole
        run_command(lambda argv: open("/no/such/file"), [])


def test_a_torchrun_worker_ends_when_its_launcher_is_killed(tmp_path):
    """torch's elastic agent starts workers in sessions of their own, out of reach of a kill of the launcher's
    process group: each worker watches its parent and ends with it rather than wait out the collective timeout."""
    import subprocess
    import sys

    from helpers import ROOT

    pid_file = tmp_path / "worker.pid"
    worker = (
        f"import os, sys, time; sys.path.insert(0, {str(ROOT)!r})\n"
        "from modeling.common.launcher import end_with_launcher\n"
        "assert end_with_launcher(poll_seconds=0.1)\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)"
    )
    launcher = (  # as torchrun starts a worker: its own session
        "import os, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {worker!r}], start_new_session=True,"
        " env={**os.environ, 'TORCHELASTIC_RUN_ID': 'test'})\ntime.sleep(120)"
    )
    process = subprocess.Popen([sys.executable, "-c", launcher], start_new_session=True)
    deadline = time.time() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    os.killpg(process.pid, signal.SIGKILL)  # the launcher's group: the worker is not in it
    process.wait()
    deadline = time.time() + 30
    while os.path.exists(f"/proc/{pid}") and "Z" not in open(f"/proc/{pid}/stat").read().split()[2]:
        assert time.time() < deadline, "the worker outlived its launcher"
        time.sleep(0.05)
