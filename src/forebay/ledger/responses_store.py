"""Stored responses of the Responses API, per tenant, off the event loop.

`save` never waits for the database: the record goes into `pending` (so the
next request on this process can continue it at once: read-your-writes) and
onto a queue that one writer task drains in batches, in order, through a
thread. Reads look at `pending` first, then at the database (in a thread), so
another replica sees a response once its batch is committed. A deleted
response is masked until its delete is committed too.

While the database is unreachable the writer retries (pending responses stay
readable here); a batch the database refuses for good is written row by row
and the rows it still refuses are logged and counted, never retried forever.
`max_pending` bounds memory: past it a save is refused, counted and logged.
Expired rows are purged by a background task every `purge_interval_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from forebay.errors import ForebayError
from forebay.ledger.responses_table import Delete, Op, ResponsesTable, Save, StoredResponse

log = logging.getLogger("forebay.responses")

BATCH = 200
_TRANSIENT = (DisconnectionError, PoolTimeout)


@dataclass(frozen=True, slots=True)
class ItemPage:
    data: list[dict[str, Any]]
    has_more: bool


TOMBSTONE_S = 60.0  # far longer than any read of the table takes


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSIENT):
        return True
    return isinstance(exc, DBAPIError) and (exc.connection_invalidated or _is_operational(exc))


def _is_operational(exc: DBAPIError) -> bool:
    return type(exc).__name__ in ("OperationalError", "InterfaceError")


class ResponsesStore:
    def __init__(
        self,
        engine: Engine,
        *,
        retention_s: float,
        max_chain: int = 1000,
        max_pending: int = 10_000,
        purge_interval_s: float = 3600.0,
    ) -> None:
        self.table = ResponsesTable(engine)
        self.retention_s = retention_s
        self.max_chain = max_chain
        self._max_pending = max_pending
        self._purge_interval_s = purge_interval_s
        self.pending: dict[str, StoredResponse] = {}
        self._deleted: dict[str, int] = {}  # ids whose delete is queued -> deletes queued
        # Ids whose delete has committed, for a while: a read that began before the
        # commit may still return the row from its snapshot (oldest first).
        self._gone: dict[str, float] = {}
        self._queue: asyncio.Queue[Op] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.refused = 0  # saves refused: too many pending
        self.rejected = 0  # rows the database refused for good
        self.purged = 0

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._writer(), name="responses-writer"),
            asyncio.create_task(self._purger(), name="responses-purge"),
        ]

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (for at most `timeout_s`), then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.pending:
            log.warning("stopping with %d stored responses not written", len(self.pending))

    async def flush(self) -> None:
        if self._queue is not None:
            await self._queue.join()

    def expiry(self, created_at: float) -> float:
        return created_at + self.retention_s

    # ------------------------------------------------------------ request path

    def save(self, record: StoredResponse) -> bool:
        """Queue a response to be written; False (logged, counted) when it cannot be."""
        if self._queue is None:
            raise RuntimeError("ResponsesStore.start() was not called")
        if len(self.pending) >= self._max_pending:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.error(
                    "%d stored responses are waiting for the database; not storing %s "
                    "(%d refused so far): previous_response_id will not find it",
                    len(self.pending),
                    record.id,
                    self.refused,
                )
            return False
        self.pending[record.id] = record
        self._queue.put_nowait(Save(record))
        return True

    def _live(self, record: StoredResponse | None, tenant_id: str) -> StoredResponse | None:
        if record is None or record.tenant_id != tenant_id or record.expires_at <= time.time():
            return None
        return record

    async def get(self, tenant_id: str, response_id: str) -> StoredResponse | None:
        """The tenant's response, or None: another tenant's id is not found."""
        if self._is_deleted(response_id):
            return None
        found = self._live(self.pending.get(response_id), tenant_id)
        if found is not None:
            return found
        got = await asyncio.to_thread(self.table.get, tenant_id, response_id, time.time())
        return None if self._is_deleted(response_id) else got

    async def delete(self, tenant_id: str, response_id: str) -> bool:
        if await self.get(tenant_id, response_id) is None:
            return False
        assert self._queue is not None
        self.pending.pop(response_id, None)
        self._deleted[response_id] = self._deleted.get(response_id, 0) + 1
        self._queue.put_nowait(Delete(tenant_id, response_id))
        return True

    async def input_items(
        self,
        tenant_id: str,
        response_id: str,
        *,
        after: str | None = None,
        limit: int = 20,
        order: Literal["asc", "desc"] = "desc",
    ) -> ItemPage | None:
        """A page of the response's input items, as the API pages them; None
        when the response is not found. An `after` that names no item gives an
        empty page."""
        record = await self.get(tenant_id, response_id)
        if record is None:
            return None
        items = record.input if order == "asc" else record.input[::-1]
        start = 0
        if after is not None:
            at = next((i for i, it in enumerate(items) if it.get("id") == after), None)
            start = len(items) if at is None else at + 1
        page = items[start : start + limit]
        return ItemPage(page, start + limit < len(items))

    async def conversation(
        self, tenant_id: str, previous_response_id: str
    ) -> list[StoredResponse] | None:
        """The chain ending at `previous_response_id`, oldest first: each
        response's input and output make the conversation so far. None when
        that response is not found; the chain ends at the first missing
        (deleted, expired) link. Longer than `max_chain`: a 400."""
        chain: list[StoredResponse] = []
        current: str | None = previous_response_id
        while current is not None and len(chain) <= self.max_chain:
            if self._is_deleted(current):
                break
            record = self._live(self.pending.get(current), tenant_id)
            if record is None:
                # Saved before anything pending here: the rest is all in the database.
                rows = await asyncio.to_thread(
                    self.table.chain,
                    tenant_id,
                    current,
                    time.time(),
                    self.max_chain + 1 - len(chain),
                )
                for row in rows:
                    if self._is_deleted(row.id):
                        break
                    chain.append(row)
                break
            chain.append(record)
            current = record.previous_response_id
        if not chain:
            return None
        if len(chain) > self.max_chain:
            raise ForebayError(
                400,
                f"This conversation is longer than {self.max_chain} responses; start a new one "
                "(send the context as input) or raise responses.max_chain.",
                param="previous_response_id",
                code="conversation_too_long",
            )
        return chain[::-1]

    # ------------------------------------------------------------ background

    async def _writer(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            ops = [await queue.get()]
            while len(ops) < BATCH and not queue.empty():
                ops.append(queue.get_nowait())
            await self._write(ops)  # returns once written (or refused for good)
            for op in ops:
                self._settle(op)
                queue.task_done()

    def _settle(self, op: Op) -> None:
        if isinstance(op, Save):
            if self.pending.get(op.record.id) is op.record:
                del self.pending[op.record.id]
            return
        left = self._deleted.get(op.id, 0) - 1
        if left > 0:
            self._deleted[op.id] = left
            return
        self._deleted.pop(op.id, None)
        now = time.monotonic()
        gone = self._gone
        gone[op.id] = now
        while gone:
            old = next(iter(gone))
            if now - gone[old] < TOMBSTONE_S:
                break
            del gone[old]

    def _is_deleted(self, response_id: str) -> bool:
        return response_id in self._deleted or response_id in self._gone

    async def _write(self, ops: list[Op]) -> None:
        delay, failing = 0.05, False
        while True:
            try:
                await asyncio.to_thread(self.table.apply, ops)
                if failing:
                    log.warning("stored responses are being written again")
                return
            except Exception as exc:
                if not _transient(exc):
                    await self._one_by_one(ops)
                    return
                if not failing:
                    log.warning("cannot write stored responses (%s); retrying", type(exc).__name__)
                failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _one_by_one(self, ops: list[Op]) -> None:
        for op in ops:
            try:
                await asyncio.to_thread(self.table.apply, [op])
            except Exception as exc:
                self.rejected += 1
                what = op.record.id if isinstance(op, Save) else op.id
                log.error("the database refused stored response %s (%s)", what, type(exc).__name__)

    async def _purger(self) -> None:
        # The first purge a minute after start (not at once: a burst of replicas
        # restarting would all purge together), then every interval.
        failing = False
        await asyncio.sleep(min(self._purge_interval_s, 60.0))
        while True:
            try:
                gone = await asyncio.to_thread(self.table.purge, time.time())
                self.purged += gone
                failing = False
            except Exception:
                if not failing:
                    log.exception("purging expired stored responses failed; will retry")
                failing = True
            await asyncio.sleep(self._purge_interval_s)
