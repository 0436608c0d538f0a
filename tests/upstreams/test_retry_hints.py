"""Every provider's way of saying how long to wait, read as whole seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from forebay.upstreams.retry_hints import MAX_HINT_S, anthropic_reset, openai_reset, retry_after

NOW = 1_800_000_000.0


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=seconds)


def test_retry_after_in_its_forms() -> None:
    assert retry_after({"retry-after": "7"}) == "7"
    assert retry_after({"retry-after": "1.2"}) == "2"
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == "2"  # ms first
    assert retry_after({"retry-after": format_datetime(_at(42), usegmt=True)}, now=NOW) == "42"
    assert retry_after({"retry-after": "999999999"}) == str(MAX_HINT_S)  # bounded
    assert retry_after({"retry-after": "-5"}) == "0"
    for junk in ("soon", "nan", "inf", ""):
        assert retry_after({"retry-after": junk}) is None
    assert retry_after({}) is None


def test_anthropic_reset_of_the_spent_limits() -> None:
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": _at(10).isoformat(),
        "anthropic-ratelimit-output-tokens-remaining": "0",
        "anthropic-ratelimit-output-tokens-reset": _at(25.5).isoformat(),
        "anthropic-ratelimit-tokens-remaining": "100",  # not spent: its reset does not count
        "anthropic-ratelimit-tokens-reset": _at(500).isoformat(),
    }
    assert anthropic_reset(headers, now=NOW) == "26"
    assert anthropic_reset({"anthropic-ratelimit-requests-remaining": "0"}, now=NOW) is None
    bad = {"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": "x"}
    assert anthropic_reset(bad, now=NOW) is None


def test_openai_reset_durations() -> None:
    spent = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-remaining-requests": "0"}
    assert openai_reset({**spent, "x-ratelimit-reset-tokens": "6m0s"}) == "360"
    assert openai_reset({**spent, "x-ratelimit-reset-requests": "20ms"}) == "1"
    both = {**spent, "x-ratelimit-reset-tokens": "1h2m3.5s", "x-ratelimit-reset-requests": "2s"}
    assert openai_reset(both) == str(MAX_HINT_S)  # 3724 s, bounded
    assert openai_reset({**spent, "x-ratelimit-reset-tokens": "6 minutes"}) is None
    assert (
        openai_reset({"x-ratelimit-remaining-tokens": "5", "x-ratelimit-reset-tokens": "1s"})
        is None
    )
