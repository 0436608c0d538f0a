"""At start, before serving: write the spools of processes that stopped into
the ledger (see `spool.py`).

For each owner whose lock can be taken (its process died, or stopped with
something not committed), its segments are read in order. A request with a
`done` record gets that row. A request with only `begun` (and `routed`)
records was in flight when its process died, and gets a row that says so:
status 499 and error_type "interrupted", with what was known of it (tenant,
key, model, deployment if one was chosen, class, stream, start time; as
latency, the time from its start to the segment's last write). Its tokens
are 0 and marked estimated: the upstream's count never arrived.

Rows go in with ON CONFLICT DO NOTHING on the request id (`commit.py`): rows
the dead process had committed are skipped, replaying the same files twice
adds nothing, and only rows really inserted are added to the rollups. The
files are deleted once written; if the database would not take them, they
stay for the next start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forebay.ledger.commit import Committer, Row
from forebay.ledger.owner_lock import LOCK_SUFFIX, claimed
from forebay.ledger.records import DONE, event_row, read_records
from forebay.ledger.spool import SEGMENT_SUFFIX, owner_of

INTERRUPTED_STATUS = 499
INTERRUPTED = "interrupted"


@dataclass(slots=True)
class Replayed:
    owners: int = 0  # spools taken over
    replayed: int = 0  # served requests whose rows were missing, now written
    interrupted: int = 0  # requests in flight when their process died
    already: int = 0  # rows the process had committed itself
    rejected: int = 0  # refused by the database, in the dead-letter file
    unreadable: int = 0  # lines that are not records (a write torn by a power loss)
    kept: int = 0  # files left for the next start: the database would not take them


def replay_spools(directory: Path, committer: Committer, *, batch_size: int = 500) -> Replayed:
    result = Replayed()
    if not directory.is_dir():
        return result
    segments: dict[str, list[Path]] = {}
    locks: set[str] = set()
    for path in sorted(directory.iterdir()):
        if path.name.endswith(SEGMENT_SUFFIX):
            segments.setdefault(owner_of(path.name), []).append(path)
        elif path.name.endswith(LOCK_SUFFIX):
            locks.add(path.name.removesuffix(LOCK_SUFFIX))
    for owner in sorted(segments.keys() | locks):
        lock = directory / f"{owner}{LOCK_SUFFIX}" if owner in locks else None
        with _claimed(lock) as mine:
            if not mine:
                continue
            result.owners += 1
            files = segments.get(owner, [])
            if _replay(files, committer, batch_size, result):
                for path in files:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                if lock is not None:
                    with contextlib.suppress(FileNotFoundError):
                        lock.unlink()  # while holding it: see _claimed
            else:
                result.kept += len(files)
    return result


@contextlib.contextmanager
def _claimed(lock: Path | None) -> Iterator[bool]:
    """True while this process holds the owner's lock (the owner is gone).
    Segments without a lock file have no owner (or were put there by hand)."""
    if lock is None:
        yield True
        return
    with claimed(lock) as mine:
        yield mine


def _replay(files: list[Path], committer: Committer, batch_size: int, result: Replayed) -> bool:
    done: dict[str, dict[str, Any]] = {}
    begun: dict[str, dict[str, Any]] = {}
    last_write = 0.0
    for path in files:
        try:
            data = path.read_bytes()
            last_write = max(last_write, path.stat().st_mtime)
        except FileNotFoundError:
            continue
        for record in read_records(data):
            if record is None:
                result.unreadable += 1
                continue
            kind, fields = record
            rid = fields["request_id"]
            last_write = max(last_write, _time_of(fields))
            if kind == DONE:
                done[rid] = fields
            else:  # begun, then routed (the last deployment tried wins)
                begun[rid] = {**begun.get(rid, {}), **fields}
    served = [event_row(f) for f in done.values()]
    cut = [interrupted_row(f, last_write) for rid, f in begun.items() if rid not in done]
    complete = True
    for rows, is_cut in ((served, False), (cut, True)):
        for i in range(0, len(rows), batch_size):
            out = committer.write(rows[i : i + batch_size], known_new=False)
            if is_cut:
                result.interrupted += out.inserted
            else:
                result.replayed += out.inserted
            result.already += out.duplicates
            result.rejected += out.rejected
            complete = complete and not out.given_up
    return complete


def _time_of(fields: dict[str, Any]) -> float:
    """When a record was written, at the latest we know of: a `done` record at its
    request's end, a `begun` at its start. (A mapped segment's mtime moves only
    when a page is first written after being flushed, so it lags.)"""
    ts, latency = fields.get("ts"), fields.get("latency_ms")
    if not isinstance(ts, int | float):
        return 0.0
    return float(ts) + (latency / 1000 if isinstance(latency, int | float) else 0.0)


def interrupted_row(begun: dict[str, Any], last_write: float) -> Row:
    ts = begun.get("ts")
    ran_s = last_write - ts if isinstance(ts, int | float) else 0.0
    return event_row(
        {
            **begun,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "tokens_estimated": True,
            "cost_usd": 0.0,
            "energy_wh": 0.0,
            "status": INTERRUPTED_STATUS,
            "error_type": INTERRUPTED,
            "ttft_ms": None,
            "latency_ms": max(0.0, ran_s) * 1000,
        }
    )
