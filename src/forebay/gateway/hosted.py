"""Stage 5, before a policy picks: what only a native deployment can serve.

A request may carry what only an upstream of the caller's own protocol can act
on, as its inbound codec marked in `GenRequest.extras`:

* `native_only`: Messages' container and mcp_servers, a stored prompt, and a
  hosted tool the caller forced (a tool_choice naming it, or `required` /
  `any` with no function of its own to call);
* `droppable`: a hosted tool offered but not forced (Responses' web_search,
  file_search, code_interpreter, mcp, ...; Anthropic's server tools such as
  web_search_20250305). Codex offers web_search with every request.

If the alias has a deployment that speaks the caller's protocol natively, the
request goes only to those (`Ticket.native`): whatever the policy, a retry
stays among them, and the route reason names each one skipped and why. If it
has none, a `native_only` item is a 400 naming the alias and what needs a
native deployment, and an unforced hosted tool is dropped (the alias's, or the
global, `hosted_tools: drop`, the default): the model answers without it,
which the response header `x-forebay-dropped-tools`, the route reason (ledger)
and the log say; with `hosted_tools: refuse` it is a 400 too.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from forebay.config.settings import ModelAlias
from forebay.errors import bad_request
from forebay.gateway.admission import Pool
from forebay.gateway.recorder import Exchange
from forebay.gateway.validate import ParsedRequest
from forebay.upstreams.base import WireProtocol

log = logging.getLogger("forebay")

DROPPED_HEADER = "x-forebay-dropped-tools"
MAX_LISTED = 3  # items named in a route note or a message; the rest are counted
MAX_DROPPED_NAMED = 16  # tool names in the header
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:\[\]() -]")  # what a client's tool type may show
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.:-]")


@dataclass(frozen=True, slots=True)
class Native:
    """The request may go only to deployments that speak `protocol` natively."""

    protocol: WireProtocol
    needed_for: str  # e.g. "tools[3] (web_search tool)", for notes and messages


def route_native(req: ParsedRequest, alias: ModelAlias, pool: Pool, ex: Exchange) -> Native | None:
    """Where the request may go, or None for anywhere; drops what may be
    dropped (mutating its extras) or raises the 400 for what may not."""
    canonical = req.canonical
    if canonical is None or not canonical.extras:
        return None
    hard: list[str] = []
    soft: list[dict[str, str]] = []
    for extra in canonical.extras.values():
        hard.extend(extra.get("native_only", ()))
        soft.extend(extra.get("droppable", ()))
    if not hard and not soft:
        return None
    protocol = req.protocol
    if any(protocol in s.upstream.wire for s in pool.states):
        return Native(protocol, _listed([*hard, *(d["where"] for d in soft)]))
    if hard or alias.hosted_tools == "refuse":
        refused = hard or [d["where"] for d in soft]
        setting = "" if hard else ", and its hosted_tools setting is refuse"
        raise bad_request(
            f"Model '{alias.name}' has no deployment that speaks {protocol} natively, which "
            f"{_listed(refused)} needs{setting}: remove "
            f"{'it' if len(refused) == 1 else 'them'}, or use a model that has one.",
            param=refused[0].split(" (", 1)[0],
            code="not_translatable",
        )
    for extra in canonical.extras.values():
        extra.pop("droppable", None)
    names = _names(soft)
    ex.headers[DROPPED_HEADER] = names
    ex.route_notes.append(f"dropped hosted tools {names}: no deployment speaks {protocol} natively")
    log.info(
        "request %s: dropped hosted tools %s (no deployment of '%s' speaks %s natively)",
        ex.request_id,
        names,
        alias.name,
        protocol,
    )
    return None


def _listed(items: list[str]) -> str:
    """The first few items, made safe for a header (a client names its tool types)."""
    shown = ", ".join(_UNSAFE.sub("?", i[:80]) for i in items[:MAX_LISTED])
    more = len(items) - MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _names(tools: list[dict[str, str]]) -> str:
    names = list(dict.fromkeys(_UNSAFE_NAME.sub("_", d["name"][:64]) for d in tools))
    more = len(names) - MAX_DROPPED_NAMED
    return ", ".join(names[:MAX_DROPPED_NAMED]) + (f", +{more} more" if more > 0 else "")
