"""The `responses` table through SQLAlchemy Core: synchronous, called from a
thread by responses_store.py, never on the event loop.

Every read and delete names the tenant: another tenant's id is simply not
there. Rows past `expires_at` are not returned even before the purge drops them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, delete, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite

from forebay.db.schema import responses

PURGE_BATCH = 1000
PENDING = ("queued", "in_progress")  # a background response still running
_UPDATED = ("expires_at", "model", "status", "output", "usage", "body")


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One stored response. `input` and `output` are its items as JSON objects,
    each with an "id" (protocols/openai_responses_state.py writes and reads them);
    `body` is the Response object the client got."""

    id: str
    tenant_id: str
    created_at: float
    expires_at: float
    model: str
    status: str
    previous_response_id: str | None
    input: list[dict[str, Any]]
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None
    body: dict[str, Any]


def _row(r: StoredResponse) -> dict[str, Any]:
    return {
        "id": r.id,
        "tenant_id": r.tenant_id,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "model": _fit(r.model, 200),
        "status": _fit(r.status, 20),
        "previous_response_id": r.previous_response_id,
        "input": orjson.dumps(r.input).decode(),
        "output": orjson.dumps(r.output).decode(),
        "usage": orjson.dumps(r.usage).decode() if r.usage is not None else None,
        "body": orjson.dumps(r.body).decode(),
    }


def _fit(text: str, size: int) -> str:
    """A client's string fitted to its column (PostgreSQL refuses NUL in text)."""
    return text.replace("\x00", "")[:size]


def _record(row: Any) -> StoredResponse:
    return StoredResponse(
        id=row.id,
        tenant_id=row.tenant_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        model=row.model,
        status=row.status,
        previous_response_id=row.previous_response_id,
        input=orjson.loads(row.input),
        output=orjson.loads(row.output),
        usage=orjson.loads(row.usage) if row.usage is not None else None,
        body=orjson.loads(row.body),
    )


@dataclass(frozen=True, slots=True)
class Save:
    record: StoredResponse


@dataclass(frozen=True, slots=True)
class Delete:
    tenant_id: str
    id: str


Op = Save | Delete


class ResponsesTable:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def apply(self, ops: list[Op]) -> None:
        """Saves and deletes in order, in one transaction. A save whose id is
        already there replaces that row (a background response's final state
        over its queued one; a batch retried after its commit did succeed
        writes the same row again), only ever the same tenant's."""
        with self._engine.begin() as conn:
            run: list[dict[str, Any]] = []
            for op in ops:
                if isinstance(op, Save):
                    run.append(_row(op.record))
                    continue
                self._insert(conn, run)
                run = []
                conn.execute(
                    delete(responses).where(
                        responses.c.id == op.id, responses.c.tenant_id == op.tenant_id
                    )
                )
            self._insert(conn, run)

    @staticmethod
    def _insert(
        conn: Connection, rows: list[dict[str, Any]], *, only_pending: bool = False
    ) -> None:
        if not rows:
            return
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(responses)
        where = responses.c.tenant_id == stmt.excluded.tenant_id
        if only_pending:
            where = where & responses.c.status.in_(PENDING)
        upsert = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={name: stmt.excluded[name] for name in _UPDATED},
            where=where,
        )
        conn.execute(upsert, rows)

    def interrupt(self, records: list[StoredResponse]) -> None:
        """Write `records` (background responses a dead process was running)
        unless their row has reached a final state meanwhile."""
        with self._engine.begin() as conn:
            self._insert(conn, [_row(r) for r in records], only_pending=True)

    def get(self, tenant_id: str, response_id: str, now: float) -> StoredResponse | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(responses).where(
                    responses.c.id == response_id,
                    responses.c.tenant_id == tenant_id,
                    responses.c.expires_at > now,
                )
            ).first()
        return _record(row) if row is not None else None

    def chain(
        self, tenant_id: str, response_id: str, now: float, limit: int
    ) -> list[StoredResponse]:
        """The response and its previous ones, newest first, at most `limit`;
        the walk ends at a link that is missing, expired or another tenant's."""
        live = (responses.c.tenant_id == tenant_id) & (responses.c.expires_at > now)
        start = (
            select(
                responses.c.id, responses.c.previous_response_id, literal_column("0").label("depth")
            )
            .where(responses.c.id == response_id, live)
            .cte("chain", recursive=True)
        )
        step = (
            select(responses.c.id, responses.c.previous_response_id, (start.c.depth + 1))
            .join(start, responses.c.id == start.c.previous_response_id)
            .where(live, start.c.depth < limit - 1)
        )
        chain = start.union_all(step)
        query = (
            select(responses)
            .join(chain, responses.c.id == chain.c.id)
            .order_by(chain.c.depth)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [_record(r) for r in conn.execute(query)]

    def purge(self, now: float) -> int:
        """Delete expired rows, a batch per transaction (short locks); how many."""
        total = 0
        while True:
            with self._engine.begin() as conn:
                ids = (
                    select(responses.c.id)
                    .where(responses.c.expires_at <= now)
                    .limit(PURGE_BATCH)
                    .scalar_subquery()
                )
                gone = conn.execute(delete(responses).where(responses.c.id.in_(ids))).rowcount
            total += gone
            if gone < PURGE_BATCH:
                return total
