"""datatrove's local executor as `train_mlm.py prepare` runs it: silent, since datatrove reports through loguru (an
INFO stream per task, and a traceback for an error that the command reports in one line) and the parts log
through `logging` instead.

Its own module so that only preparing a store imports datatrove: training reads a prepared store without it.
"""

from __future__ import annotations

import contextlib

from datatrove.executor import LocalPipelineExecutor
from loguru import logger


@contextlib.contextmanager
def quiet_datatrove():
    logger.disable("datatrove")
    try:
        yield
    finally:
        logger.enable("datatrove")


class QuietLocalExecutor(LocalPipelineExecutor):
    """Each task may run in a fresh process, so loguru is silenced there too."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        logger.disable("datatrove")
        return super()._run_for_rank(rank, local_rank, node_rank)
