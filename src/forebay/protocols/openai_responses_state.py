"""Responses as Forebay stores them (ledger/responses_store.py): this request's
input items and the reply's output items as canonical JSON, each with its id,
and the Response object as the client got it. The POST handler builds the
record here; `history` turns a stored chain back into items for the next
request, whatever protocol its upstream speaks."""

from __future__ import annotations

from typing import Any

from forebay.errors import ForebayError
from forebay.ledger.responses_table import StoredResponse
from forebay.protocols.canonical_json import parts_from_json, parts_to_json
from forebay.protocols.openai_responses_items import (
    ROLES,
    Item,
    decode_input,
    encode_item,
    with_ids,
)


def item_to_json(item: Item) -> dict[str, Any]:
    return {"id": item.id, "role": item.role, "parts": parts_to_json(item.parts)}


def item_from_json(data: Any) -> Item:
    if not isinstance(data, dict) or data.get("role") not in (*ROLES, "tool"):
        raise ValueError("a stored item must be an object with a role")
    return Item(data["role"], parts_from_json(data.get("parts")), data.get("id"))


def _unreadable(response_id: str, err: Exception) -> ForebayError:
    return ForebayError(
        500,
        f"The stored response {response_id} could not be read ({err}); it may have been "
        "written by a newer Forebay.",
        type="server_error",
        code="stored_response_unreadable",
    )


def history(chain: list[StoredResponse]) -> list[Item]:
    """The conversation so far: each response's input, then its output, oldest first."""
    items: list[Item] = []
    for record in chain:
        try:
            items += [item_from_json(d) for d in (*record.input, *record.output)]
        except ValueError as err:
            raise _unreadable(record.id, err) from None
    return items


def listed(record_id: str, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored input items as GET /v1/responses/{id}/input_items lists them."""
    try:
        return [encode_item(item_from_json(d), listed=True) for d in data]
    except ValueError as err:
        raise _unreadable(record_id, err) from None


def record_of(
    body: dict[str, Any],
    *,
    tenant_id: str,
    input_items: list[Item],
    expires_at: float,
) -> StoredResponse:
    """What to store of a Response `body` (as sent to the client) answering
    `input_items`: its output items keep the ids the client saw."""
    output = with_ids(decode_input(body.get("output") or [], "output"))
    usage = body.get("usage")
    previous = body.get("previous_response_id")
    return StoredResponse(
        id=body["id"],
        tenant_id=tenant_id,
        created_at=float(body["created_at"]),
        expires_at=expires_at,
        model=str(body.get("model") or ""),
        status=str(body.get("status") or "completed"),
        previous_response_id=previous if isinstance(previous, str) else None,
        input=[item_to_json(i) for i in with_ids(input_items)],
        output=[item_to_json(i) for i in output],
        usage=usage if isinstance(usage, dict) else None,
        body=body,
    )
