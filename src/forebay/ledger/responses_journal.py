"""Background responses in flight, on local disk, so that a process killed
(SIGKILL, the OOM killer) while running one leaves it `failed`, never
`in_progress` for ever.

The response store's rows are written by a batching writer (responses_store.py),
so a queued row may not be in the database yet when the process dies; the
journal holds the queued Response itself. Each process owns a directory
`<data dir>/background/<owner>/` and an exclusive `flock` on
`<owner>.lock` for as long as it lives (ledger/owner_lock.py, as for the
usage spool). A background response
gets a file there before its work starts, removed once its final state is
committed. At start, `recover` takes over the directories of every owner whose
lock it can take: their responses are written as failed ("interrupted"), but
only over rows still queued or in progress (one that did finish stays as it is).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import orjson

from forebay.ledger.owner_lock import LOCK_SUFFIX, claimed, hold, lock_path
from forebay.ledger.responses_table import StoredResponse

log = logging.getLogger("forebay.responses")

INTERRUPTED = {
    "code": "interrupted",
    "message": "The Forebay process running this background response stopped before it "
    "finished (it was killed or crashed); create the response again.",
}


def interrupted(record: StoredResponse) -> StoredResponse:
    """The record as it is left by a process that died running it."""
    body = {**record.body, "status": "failed", "error": INTERRUPTED}
    return replace(record, status="failed", body=body)


class Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.owner = uuid.uuid4().hex[:16]
        self._mine = directory / self.owner
        self._lock_fd = -1

    def open(self) -> None:
        self._mine.mkdir(parents=True, exist_ok=True)
        self._lock_fd = hold(self.directory, self.owner)

    def add(self, record: StoredResponse) -> None:
        """Written whole (a temporary file renamed) or not at all."""
        path = self._mine / f"{record.id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(asdict(record)))
        tmp.replace(path)

    def remove(self, response_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._mine / f"{response_id}.json").unlink()

    def close(self) -> None:
        """A clean stop: nothing is left running, so nothing is left behind."""
        if self._lock_fd < 0:
            return
        left = list(self._mine.glob("*.json"))
        if not left:
            shutil.rmtree(self._mine, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                lock_path(self.directory, self.owner).unlink()
        os.close(self._lock_fd)  # a dead owner from now on: the next start recovers it
        self._lock_fd = -1


def recover(directory: Path, write: Callable[[list[StoredResponse]], None]) -> int:
    """Mark the background responses of stopped owners as interrupted (`write`
    takes their records); how many. An owner is left for the next start if
    `write` fails."""
    if not directory.is_dir():
        return 0
    total = 0
    for lock in sorted(directory.glob(f"*{LOCK_SUFFIX}")):
        owner = lock.name.removesuffix(LOCK_SUFFIX)
        with claimed(lock) as mine:
            if not mine:  # alive, or recovered by another process
                continue
            records = []
            for path in sorted((directory / owner).glob("*.json")):
                try:
                    records.append(interrupted(StoredResponse(**orjson.loads(path.read_bytes()))))
                except (ValueError, TypeError) as exc:
                    log.error("unreadable background journal file %s (%s)", path, exc)
            try:
                if records:
                    write(records)
            except Exception:
                log.exception("recovering %d background responses failed", len(records))
                continue
            total += len(records)
            shutil.rmtree(directory / owner, ignore_errors=True)
            lock.unlink()  # while holding it
    return total
