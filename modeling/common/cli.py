"""The one way every command starts and ends (train_mlm.py, finetune.py, python -m modeling.publish,
python -m modeling.inference): logging set up once for the process (INFO on the main process, warnings
only on the others), and an ending in one line instead of a traceback:

- a user's mistake (UserError: ConfigError, DataError): `error: ...`, exit code 2;
- a full disk: `error: no space left on device ...` and what to run next, exit code 2;
- Ctrl-C or a kill (SIGTERM): `error: interrupted ...` and what to run next, exit code 130.
"""

from __future__ import annotations

import errno
import logging
import signal
import sys
from collections.abc import Callable

from modeling.common.errors import UserError
from modeling.common.runtime import is_main_process

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def run_command(
    command: Callable[[list[str]], int | None],
    argv: list[str] | None = None,
    next_step: Callable[[list[str]], str] | None = None,
) -> int:
    """Run `command(argv)` (default: the process's arguments) and turn its outcome into an exit code.
    `next_step(argv)` says how to continue after an interruption or a full disk (e.g. `... --resume`)."""
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    then = f"; {next_step(argv)}" if next_step else ""
    with _terminate_as_interrupt():
        try:
            return command(argv) or 0
        except UserError as error:
            print(f"error: {one_line(error)}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print(f"error: interrupted{then}", file=sys.stderr)
            return EXIT_INTERRUPTED
        except (OSError, RuntimeError) as error:  # torch and safetensors wrap a full disk in RuntimeError
            if getattr(error, "errno", None) != errno.ENOSPC and "No space left on device" not in str(error):
                raise
            where = f" writing {error.filename}" if getattr(error, "filename", None) else ""
            print(f"error: no space left on device{where}{then}", file=sys.stderr)
            return EXIT_USER_ERROR


class _terminate_as_interrupt:
    """SIGTERM (a kill, a scheduler's preemption) ends the command as Ctrl-C does, with its one line."""

    def __enter__(self):
        self.previous = None
        try:
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
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
