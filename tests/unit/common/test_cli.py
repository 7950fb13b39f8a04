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
