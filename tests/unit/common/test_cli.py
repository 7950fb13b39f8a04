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
