"""The one way every command starts and ends (train_mlm.py, finetune.py, python -m modeling.publish,
python -m modeling.inference): logging set up once for the process (INFO on the main process, warnings
only on the others), and an ending in one line instead of a traceback:

- a user's mistake (UserError: ConfigError, DataError): `error: ...`, exit code 2;
- a full disk: `error: no space left on device ...` and what to run next, exit code 2; a file that cannot be
  accessed (read-only, no permission) mid-run likewise (the folders are checked before any work: writable_folder);
- Ctrl-C or a kill (SIGTERM): `error: interrupted ...` and what to run next, exit code 130.
"""

from __future__ import annotations

import errno
import logging
import signal
import sys
from collections.abc import Callable

from modeling.common.errors import UserError
from modeling.common.launcher import end_with_launcher
from modeling.common.runtime import is_main_process

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT)  # said in one line, as a full disk is


def run_command(
    command: Callable[[list[str]], int | None],
    argv: list[str] | None = None,
    next_step: Callable[[list[str]], str] | None = None,
) -> int:
    """Run `command(argv)` (default: the process's arguments) and turn its outcome into an exit code.
    `next_step(argv)` says how to continue after an interruption or a full disk (e.g. `... --resume`)."""
    setup_logging()
    end_with_launcher()
    argv = sys.argv[1:] if argv is None else argv
    then = f"; {next_step(argv)}" if next_step else ""
    with _terminate_as_interrupt():
        try:
            code = command(argv) or 0
            if not interrupted():
                return code
            _say_mid_run(f"error: interrupted{then}")  # the interrupt was swallowed on its way up
            return EXIT_INTERRUPTED
        except UserError as error:
            print(f"error: {one_line(error)}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            _say_mid_run(f"error: interrupted{then}")
            return EXIT_INTERRUPTED
        except (OSError, RuntimeError) as error:  # torch and safetensors wrap a full disk in RuntimeError
            code = getattr(error, "errno", None)
            where = f" writing {error.filename}" if getattr(error, "filename", None) else ""
            if code in UNWRITABLE:  # a folder that turned read-only, or whose permissions changed, mid-run
                named = f": {error.filename}" if getattr(error, "filename", None) else ""
                _say_mid_run(f"error: {error.strerror}{named}{then}")
                return EXIT_USER_ERROR
            if code != errno.ENOSPC and "No space left on device" not in str(error):
                raise
            _say_mid_run(f"error: no space left on device{where}{then}")
            return EXIT_USER_ERROR


def _say_mid_run(line: str):
    """A line that may come while a progress bar holds the end of the terminal's line: it starts a line of its own."""
    print(f"\n{line}", file=sys.stderr)


_interrupted = False


def interrupted() -> bool:
    """Whether Ctrl-C or a kill reached this command. A KeyboardInterrupt raised where Python cannot pass it on
    (a finalizer, a callback that swallows it) is lost; long loops check this at safe points and stop there."""
    return _interrupted


class _terminate_as_interrupt:
    """SIGINT (Ctrl-C) and SIGTERM (a kill, a scheduler's preemption) end the command with its one line: both
    raise KeyboardInterrupt and are remembered, so an interrupt that lands where it is swallowed still ends it."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        global _interrupted
        _interrupted = False
        self.previous = {}
        for signum in self.SIGNALS:
            try:
                self.previous[signum] = signal.signal(signum, self._raise)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    @staticmethod
    def _raise(signum, frame):
        global _interrupted
        _interrupted = True
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
        return False


def setup_logging():
    logging.basicConfig(
        level=logging.INFO if is_main_process() else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def one_line(error: Exception) -> str:
    """Errors raised in dataloader workers arrive wrapped in the worker's traceback: keep the message."""
    text = str(error).strip()
    return text.splitlines()[-1].split(": ", 1)[-1] if "Traceback" in text else text
