"""How long a rate-limited or overloaded upstream asks to be left alone, as the
whole seconds `UpstreamFailure.retry_after` carries (the pool cools the
deployment down for that long, and a client may be told to wait as much).

Providers say it differently: `retry-after` in seconds or as an HTTP date (every
provider), `retry-after-ms` (Azure, and OpenAI's SDKs read it), Anthropic's
`anthropic-ratelimit-*-reset` timestamps and OpenAI's `x-ratelimit-reset-*`
durations ("6m0s") for whichever limit is exhausted. A hint is capped at
`MAX_HINT_S`: an upstream must not be able to bench a deployment for a year."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime

# A spent quota (a month's budget, an unpaid bill) does not come back in
# seconds; this is how long a deployment rests when its upstream says so
# without a retry-after.
QUOTA_COOLDOWN_S = 3600
MAX_HINT_S = QUOTA_COOLDOWN_S
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> str | None:
    """`retry-after-ms`, else `retry-after` (seconds, fractional or not, or a date)."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None:
        return _whole(ms / 1000)
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    seconds = _number(value)
    if seconds is not None:
        return _whole(seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return _whole(when.timestamp() - (time.time() if now is None else now))


def anthropic_reset(headers: Mapping[str, str], *, now: float | None = None) -> str | None:
    """The latest reset (RFC 3339) among the Anthropic limits at zero."""
    waits = []
    for limit in ("requests", "tokens", "input-tokens", "output-tokens"):
        if (headers.get(f"anthropic-ratelimit-{limit}-remaining") or "").strip() != "0":
            continue
        try:
            when = datetime.fromisoformat(headers.get(f"anthropic-ratelimit-{limit}-reset", ""))
        except ValueError:
            continue
        if when.tzinfo is not None:
            waits.append(when.timestamp() - (time.time() if now is None else now))
    return _whole(max(waits)) if waits else None


def openai_reset(headers: Mapping[str, str]) -> str | None:
    """The longest `x-ratelimit-reset-*` duration among the OpenAI limits at zero."""
    waits = []
    for limit in ("requests", "tokens"):
        if (headers.get(f"x-ratelimit-remaining-{limit}") or "").strip() != "0":
            continue
        seconds = _duration(headers.get(f"x-ratelimit-reset-{limit}") or "")
        if seconds is not None:
            waits.append(seconds)
    return _whole(max(waits)) if waits else None


def _duration(text: str) -> float | None:
    """Go's duration format as OpenAI writes it: "20ms", "1s", "6m0s", "1h2m3.5s"."""
    text = text.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def _number(value: str | None) -> float | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _whole(seconds: float) -> str:
    return str(min(MAX_HINT_S, max(0, math.ceil(seconds))))
