"""The one pass over a request's raw headers (gateway/request_headers.py) gives
what each reader's own walk gave: the first value of a header read by name,
the last of a passed one (passed_headers.passable: named, and not too long)."""

from __future__ import annotations

from starlette.requests import Request

from forebay.gateway.request_headers import RequestHeaders, request_headers, scan
from forebay.upstreams.passed_headers import MAX_VALUE

RAW = [
    (b"host", b"gw"),
    (b"authorization", b"Bearer sk-one"),
    (b"authorization", b"Bearer sk-two"),  # a second one: the first counts
    (b"x-api-key", b"sk-ant"),
    (b"api-key", b"sk-az"),
    (b"content-length", b"42"),
    (b"x-forebay-class", b"Batch"),
    (b"anthropic-version", b"2023-06-01"),
    (b"openai-beta", b"first"),
    (b"openai-beta", b"second"),
    (b"idempotency-key", b"k" * (MAX_VALUE + 1)),  # too long to pass on
    (b"user-agent", b"sdk/1.0 \xe9"),
]


def test_one_pass_reads_every_header_the_request_path_needs() -> None:
    assert scan(RAW) == RequestHeaders(
        authorization="Bearer sk-one",
        x_api_key="sk-ant",
        api_key="sk-az",
        content_length="42",
        traffic_class="Batch",  # resolve_class lower-cases it
        anthropic_version="2023-06-01",
        passed={"anthropic-version": "2023-06-01", "openai-beta": "second"},
    )


def test_a_request_without_them_has_none() -> None:
    assert scan([(b"host", b"gw"), (b"accept", b"*/*")]) == RequestHeaders()
    assert scan([]).passed is None


def test_scanned_once_per_request() -> None:
    request = Request({"type": "http", "method": "POST", "path": "/", "headers": RAW})
    first = request_headers(request)
    assert first.authorization == "Bearer sk-one"
    # Another Request over the same scope (as each route builds its own) reads the same.
    assert request_headers(Request(request.scope)) is first
