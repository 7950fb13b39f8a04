"""A process torchrun (accelerate launch) started ends when its launcher is gone.

torch's elastic agent starts each worker in a session of its own, so a kill of the launcher's process group
(SIGKILL: `kill -9`, a lost node's agent) does not reach the workers: they would wait in their next collective
until distributed.timeout_minutes, holding the store's lock, memory and GPUs. A daemon thread watches the
parent and ends the worker as abruptly as the launcher ended. It starts when this module is imported (before
torch: see the end), so it imports nothing beyond the standard library.
"""

from __future__ import annotations

import os
import signal
import threading
import time

_watching = False


def end_with_launcher(poll_seconds: float = 1.0) -> bool:
    """In a torchrun worker, watch the parent from a daemon thread and end with it. True when watching (once per
    process); a worker whose launcher is already gone (its parent is init) ends at once."""
    global _watching
    if _watching or "TORCHELASTIC_RUN_ID" not in os.environ:
        return _watching
    launcher = os.getppid()
    if launcher == 1:  # orphaned before it got here
        os.kill(os.getpid(), signal.SIGKILL)

    def watch():
        while os.getppid() == launcher:
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()
    _watching = True
    return True


# Started on import, which modeling.common.cli makes before it imports torch: every command a torchrun worker runs
# imports it first, so a kill during the worker's start-up is not missed.
end_with_launcher()
