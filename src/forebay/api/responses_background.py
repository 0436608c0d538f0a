"""Responses created with `background: true`: answered at once (status
`queued`), then run in a task the gateway owns, polled with GET, cancelled
with POST .../cancel, and, when streamed, followed again with
GET /v1/responses/{id}?stream=true&starting_after=N.

The work is the same pipeline as any request (gateway/pipeline.py detaches it
after limits and the ledger's `begin`, so a refusal is still the POST's answer
and the request still gets exactly one ledger record); only its answer goes
here instead of to the client's connection. Each state is saved to the
response store (queued, in_progress, then the final one), and the journal
(ledger/responses_journal.py) holds the response until its final state is
committed, so a process killed meanwhile leaves it `failed`, never pending.

A streamed run keeps its events (split into SSE frames, by sequence number)
while it runs and for the last `keep_done` finished runs of this process, for
followers that reconnect; another replica does not have them (it answers 400).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from forebay.errors import ForebayError
from forebay.gateway.pipeline import Run
from forebay.gateway.recorder import Exchange
from forebay.ledger.responses_journal import INTERRUPTED, Journal
from forebay.ledger.responses_store import ResponsesStore
from forebay.ledger.responses_table import StoredResponse
from forebay.protocols.openai_responses_items import Item
from forebay.protocols.openai_responses_reply import ResponseContext, response_object
from forebay.protocols.openai_responses_state import record_of

log = logging.getLogger("forebay.responses")

FINAL = frozenset({"completed", "failed", "incomplete", "cancelled"})


@dataclass(slots=True)
class BackgroundRun:
    id: str
    tenant_id: str
    context: ResponseContext
    input_items: list[Item]
    streamed: bool
    ex: Exchange
    task: asyncio.Task[None] | None = None
    events: list[tuple[int, bytes]] = field(default_factory=list)  # (sequence_number, frame)
    grew: asyncio.Event = field(default_factory=asyncio.Event)
    final: dict[str, Any] | None = None  # the Response as the pipeline answered it
    cancelled: bool = False  # by the client (POST .../cancel), not by shutdown
    done: bool = False

    def body(self, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        return response_object(
            self.context, self.context.model or "", [], status=status, usage=None, error=error
        )

    def add(self, frame: bytes) -> None:
        self.events.append((_sequence_number(frame, len(self.events)), frame))
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def _wake(self) -> None:
        grew, self.grew = self.grew, asyncio.Event()
        grew.set()


def _sequence_number(frame: bytes, default: int) -> int:
    for line in frame.split(b"\n"):
        if line.startswith(b"data: "):
            with contextlib.suppress(orjson.JSONDecodeError):
                data = orjson.loads(line[6:])
                seq = data.get("sequence_number") if isinstance(data, dict) else None
                if isinstance(seq, int):
                    return seq
    return default


def _error_of(response: Response) -> dict[str, Any]:
    """The error of a pipeline answer that is not a Response object."""
    try:
        err = orjson.loads(bytes(response.body))["error"]
        return {"code": str(err.get("code") or "server_error"), "message": str(err["message"])}
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return {"code": "server_error", "message": f"The request failed ({response.status_code})."}


class BackgroundRuns:
    def __init__(
        self, store: ResponsesStore, journal: Journal | None = None, *, keep_done: int = 256
    ) -> None:
        self._store = store
        self.journal = journal
        self._keep_done = keep_done
        self._runs: OrderedDict[str, BackgroundRun] = OrderedDict()

    @property
    def running(self) -> int:
        return sum(1 for r in self._runs.values() if not r.done)

    def get(self, tenant_id: str, response_id: str) -> BackgroundRun | None:
        run = self._runs.get(response_id)
        return run if run is not None and run.tenant_id == tenant_id else None

    def start(
        self,
        run: BackgroundRun,
        work: Run,
    ) -> Response:
        """Save the queued response, start its work, answer the POST."""
        queued = run.body("queued")
        self._save(run, queued)
        if self.journal is not None:
            try:
                self.journal.add(self._record(run, queued))
            except OSError as exc:  # a full disk: the run goes on, unjournaled
                log.error("cannot journal background response %s (%s)", run.id, exc)
        self._runs[run.id] = run
        run.task = asyncio.create_task(self._work(run, work), name=f"background-{run.id}")
        headers = {"x-request-id": run.ex.request_id, **run.ex.headers}
        if run.streamed:
            return StreamingResponse(
                self.follow(run, -1), headers=headers, media_type="text/event-stream"
            )
        return Response(orjson.dumps(queued), headers=headers, media_type="application/json")

    def kept(self, response_id: str, response: dict[str, Any]) -> None:
        """The pipeline's final Response of a run (BoundResponses' `keep`)."""
        run = self._runs.get(response_id)
        if run is not None:
            run.final = response

    async def follow(self, run: BackgroundRun, after: int) -> AsyncIterator[bytes]:
        """The run's events after sequence number `after`, as they come."""
        i = 0
        while True:
            grew = run.grew
            while i < len(run.events):
                seq, frame = run.events[i]
                i += 1
                if seq > after:
                    yield frame
            if run.done:
                return
            await grew.wait()

    async def cancel(self, run: BackgroundRun) -> dict[str, Any]:
        """Cancel a run (its slot and reservation come back as its task ends);
        a finished one answers its final Response, as a second cancel does."""
        task = run.task
        if not run.done and task is not None:
            run.cancelled = True
            if not run.ex.recorded:
                run.ex.fail(499, "cancelled")  # what the ledger says of it
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        record = await self._store.get(run.tenant_id, run.id)
        return record.body if record is not None else run.body("cancelled")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """At shutdown: let runs finish for up to `timeout_s`, then cancel the
        rest (saved failed: interrupted); then the journal is closed."""
        tasks = [r.task for r in self._runs.values() if r.task is not None and not r.done]
        if tasks:
            _, left = await asyncio.wait(tasks, timeout=timeout_s)
            for task in left:
                task.cancel()
            for task in left:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.journal is not None:
            self.journal.close()

    # ------------------------------------------------------------ the task

    async def _work(self, run: BackgroundRun, work: Run) -> None:
        final: dict[str, Any] | None = None
        try:
            self._save(run, run.body("in_progress"))
            response = await work()
            if isinstance(response, StreamingResponse):
                await self._consume(run, response)
            elif response.status_code >= 400:
                final = run.body("failed", _error_of(response))
        except asyncio.CancelledError:
            final = run.body("cancelled") if run.cancelled else run.body("failed", INTERRUPTED)
        except ForebayError as err:
            final = run.body("failed", {"code": err.code or err.type, "message": err.message})
        except Exception:
            log.exception("background response %s failed", run.id)
            final = run.body("failed", {"code": "server_error", "message": "Forebay failed."})
        if final is None:
            missing = {"code": "server_error", "message": "The upstream's reply never ended."}
            final = run.final or run.body("failed", missing)
        try:
            if await self._store.get(run.tenant_id, run.id) is not None:  # not deleted meanwhile
                self._save(run, final)
            await self._store.flush()
            if self.journal is not None:
                self.journal.remove(run.id)
        except asyncio.CancelledError:  # shutdown while the database is slow: left journaled
            pass
        finally:
            run.finish()
            self._forget_old()

    async def _consume(self, run: BackgroundRun, response: StreamingResponse) -> None:
        body = response.body_iterator
        rest = b""
        try:
            async for chunk in body:
                data = rest + (chunk if isinstance(chunk, bytes) else str(chunk).encode())
                *frames, rest = data.split(b"\n\n")
                for frame in frames:
                    if frame.strip():
                        run.add(frame + b"\n\n")
            if rest.strip():
                run.add(rest + b"\n\n")
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()  # the relay's `finally`: its lease, its ledger record

    def _record(self, run: BackgroundRun, body: dict[str, Any]) -> StoredResponse:
        expires = self._store.expiry(float(body["created_at"]))
        return record_of(
            body, tenant_id=run.tenant_id, input_items=run.input_items, expires_at=expires
        )

    def _save(self, run: BackgroundRun, body: dict[str, Any]) -> None:
        self._store.save(self._record(run, body))

    def _forget_old(self) -> None:
        done = [i for i, r in self._runs.items() if r.done]
        for response_id in done[: max(0, len(done) - self._keep_done)]:
            del self._runs[response_id]
