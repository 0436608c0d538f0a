"""Worker-side safety: a worker must never outlive the gateway that started it,
even when the gateway is killed with SIGKILL and cannot clean up."""

from __future__ import annotations

import os
import signal
import threading
import time


def exit_with_parent(parent_pid: int, *, poll_s: float = 0.5) -> None:
    """Exit at once when `parent_pid` is gone (the worker is then re-parented)."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(0)
            time.sleep(poll_s)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def wait_for_termination() -> None:
    """Block the main thread until SIGTERM or SIGINT, then return."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
