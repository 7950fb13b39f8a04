"""How every command ends: one line and an exit code, whatever happens on the way."""

import os
import time


def test_an_interrupt_that_is_swallowed_still_ends_the_command_as_interrupted(capsys):
    """Ctrl-C whose KeyboardInterrupt lands where it is caught (a finalizer, a library's except clause) still
    ends the command with exit code 130 and its one line, and the flag stops a Trainer at its next step."""
    import signal

    from modeling.common.cli import EXIT_INTERRUPTED, interrupted, run_command

    def command(argv):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises here
        except KeyboardInterrupt:
            pass  # swallowed on its way up
        assert interrupted()
        return 0

    assert run_command(command, [], lambda argv: "continue with: --resume") == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip() == "error: interrupted; continue with: --resume"
    assert run_command(lambda argv: 0, []) == 0 and not interrupted()  # the next command starts afresh
