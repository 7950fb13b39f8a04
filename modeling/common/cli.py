"""The one way every command starts and ends (train_mlm.py, finetune.py, python -m modeling.publish,
python -m modeling.inference): logging set up once for the process (INFO on the main process, warnings
only on the others), and a user's mistake (UserError: ConfigError, DataError) printed as one line,
`error: ...`, with exit code 2 instead of a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from modeling.common.errors import UserError
from modeling.common.runtime import is_main_process

EXIT_USER_ERROR = 2


def run_command(command: Callable[[list[str]], int | None], argv: list[str] | None = None) -> int:
    """Run `command(argv)` (default: the process's arguments) and turn its outcome into an exit code."""
    setup_logging()
    try:
        return command(sys.argv[1:] if argv is None else argv) or 0
    except UserError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return EXIT_USER_ERROR


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
