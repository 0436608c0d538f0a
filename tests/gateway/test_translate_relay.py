"""The stream relays behind SseRelay's surface: a translating one (Chat
upstream, Messages client) and a pass-through one for protocols other than
Chat, which relays the bytes untouched while reading usage and the end."""

from __future__ import annotations

from forebay.gateway.metering import prompt_shape, usage_counts
from forebay.gateway.redact import Redactor
from forebay.gateway.translate import PassThroughRelay, TranslatingRelay, translation
from forebay.protocols.canonical import Usage
from forebay.upstreams.base import Endpoint, WireProtocol
from tests.protocols.test_anthropic_messages import STREAM as MESSAGES_STREAM
from tests.protocols.test_openai_chat import STREAM as CHAT_STREAM
from tests.protocols.test_openai_responses import RECORDED_BYTES as RESPONSES_STREAM

NO_SECRETS = Redactor(())


def _feed(relay: PassThroughRelay | TranslatingRelay, data: bytes, step: int) -> bytes:
    out = b"".join(relay.feed(data[i : i + step]) for i in range(0, len(data), step))
    return out + relay.tail()


def test_pass_through_relays_the_same_bytes_and_meters_them() -> None:
    relay = PassThroughRelay(WireProtocol.ANTHROPIC_MESSAGES, redactor=NO_SECRETS)
    assert _feed(relay, MESSAGES_STREAM, 11) == MESSAGES_STREAM
    assert relay.saw_done and not relay.torn and relay.upstream_error is None
    # 472 uncached + 100 read from the cache
    assert relay.usage == Usage(572, 89, cache_read_tokens=100)
    assert relay.content_events == 6  # thinking, signature, text, three argument pieces


def test_pass_through_cut_mid_event_is_torn() -> None:
    relay = PassThroughRelay(WireProtocol.ANTHROPIC_MESSAGES, redactor=NO_SECRETS)
    cut = MESSAGES_STREAM[: MESSAGES_STREAM.index(b"event: message_stop") - 30]
    out = _feed(relay, cut, 50)
    assert relay.torn and not relay.saw_done and out.endswith(b"\n\n")
    assert relay.error_event("gone", "upstream_stream_failed").startswith(b"event: error\n")


def test_translating_relay_meters_and_ends_once() -> None:
    plan = translation(
        WireProtocol.ANTHROPIC_MESSAGES, Endpoint.MESSAGES, frozenset({WireProtocol.OPENAI_CHAT})
    )
    assert plan.endpoint is Endpoint.CHAT
    relay = TranslatingRelay(plan, include_usage=False, redactor=NO_SECRETS)
    out = _feed(relay, CHAT_STREAM + b'data: {"choices":[{"delta":{"content":"late"}}]}\n\n', 9)
    assert out.startswith(b"event: message_start\n")
    assert out.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert b"late" not in out  # nothing after the end reaches the client
    assert relay.usage == Usage(20, 9, cache_read_tokens=4)
    assert relay.saw_done and not relay.torn


def test_translating_relay_cut_short_is_torn() -> None:
    plan = translation(
        WireProtocol.ANTHROPIC_MESSAGES, Endpoint.MESSAGES, frozenset({WireProtocol.OPENAI_CHAT})
    )
    relay = TranslatingRelay(plan, include_usage=False, redactor=NO_SECRETS)
    _feed(relay, CHAT_STREAM[:200], 200)
    assert relay.torn and not relay.saw_done and relay.usage is None


def test_usage_of_every_shape() -> None:
    anthropic = {"input_tokens": 5, "cache_read_input_tokens": 7, "cache_creation_input_tokens": 3}
    assert usage_counts({**anthropic, "output_tokens": 2}) == Usage(
        15, 2, cache_read_tokens=7, cache_write_tokens=3
    )
    responses = {"input_tokens": 9, "output_tokens": 4,
                 "input_tokens_details": {"cached_tokens": 6},
                 "output_tokens_details": {"reasoning_tokens": 2}}  # fmt: skip
    assert usage_counts(responses) == Usage(9, 4, cache_read_tokens=6, reasoning_tokens=2)
    assert usage_counts({"prompt_tokens": 3, "completion_tokens": 1}) == Usage(3, 1)


def test_a_messages_prompt_counts_its_system_prompt_and_tools() -> None:
    base = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    tool = {"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {}}}}
    system_text = "x" * 400
    bare = prompt_shape(base).text_bytes
    assert prompt_shape({**base, "system": system_text}).text_bytes == bare + 400
    blocks = [{"type": "text", "text": system_text, "cache_control": {"type": "ephemeral"}}]
    assert prompt_shape({**base, "system": blocks}).text_bytes == bare + 400
    assert prompt_shape({**base, "tools": [tool]}).text_bytes > bare + len("lookup")


def test_responses_pass_through_relays_untouched_reads_only_the_ends() -> None:
    """The relay reads the created and completed events (usage, the end) and only
    counts the deltas; the client gets the upstream's bytes as they came."""
    relay = PassThroughRelay(WireProtocol.OPENAI_RESPONSES, redactor=NO_SECRETS)
    assert _feed(relay, RESPONSES_STREAM, 13) == RESPONSES_STREAM
    assert relay.saw_done and not relay.torn and relay.upstream_error is None
    assert relay.usage == Usage(75, 40, cache_read_tokens=64, reasoning_tokens=20)
    assert relay.content_events == 5  # two summary, one text, two argument deltas


def test_responses_pass_through_reads_an_error_event() -> None:
    relay = PassThroughRelay(WireProtocol.OPENAI_RESPONSES, redactor=NO_SECRETS)
    cut = RESPONSES_STREAM[: RESPONSES_STREAM.index(b"event: response.completed")]
    error = (
        b'event: error\ndata: {"type":"error","code":"server_error","message":"boom",'
        b'"sequence_number":99}\n\n'
    )
    _feed(relay, cut + error, 64)
    assert relay.upstream_error is not None and "boom" in relay.upstream_error["message"]
    assert relay.usage is None


def _garble(stream: bytes, marker: bytes, data: bytes = b"{not json") -> tuple[bytes, bytes]:
    """(the stream with the event that starts at `marker` garbled, what comes before it)."""
    at = stream.index(marker)
    end = stream.index(b"\n\n", at) + 2
    name = marker.split(b"\n")[0]
    return stream[:at] + name + b"\ndata: " + data + b"\n\n" + stream[end:], stream[:at]


def test_pass_through_stops_at_a_garbled_delta() -> None:
    """Relayed up to the garbled event, nothing after it, and `torn`: the
    dispatcher ends the stream with the client's error event and a 502 row."""
    for data in (b"{not json", b"[1, 2]", b"<html>", b""):
        garbled, before = _garble(MESSAGES_STREAM, b"event: content_block_delta\n", data)
        for step in (7, 64, len(garbled)):
            relay = PassThroughRelay(WireProtocol.ANTHROPIC_MESSAGES, redactor=NO_SECRETS)
            assert _feed(relay, garbled, step) == before, (data, step)
            assert relay.torn and not relay.saw_done and relay.upstream_error is None
            assert relay.feed(b"event: ping\ndata: {}\n\n") == b""  # nothing after it


def test_pass_through_stops_at_a_garbled_event_it_decodes() -> None:
    garbled, before = _garble(MESSAGES_STREAM, b"event: content_block_stop\n")
    relay = PassThroughRelay(WireProtocol.ANTHROPIC_MESSAGES, redactor=NO_SECRETS)
    assert _feed(relay, garbled, len(garbled)) == before
    assert relay.torn and relay.upstream_error is None and relay.usage is None


def test_responses_pass_through_stops_at_a_garbled_event() -> None:
    for marker in (
        b"event: response.output_text.delta\n",  # counted only
        b"event: response.output_item.added\n",  # relayed unread
        b"event: response.completed\n",  # decoded
        b"event: response.created\n",
    ):
        garbled, before = _garble(RESPONSES_STREAM, marker)
        relay = PassThroughRelay(WireProtocol.OPENAI_RESPONSES, redactor=NO_SECRETS)
        assert _feed(relay, garbled, 97) == before, marker
        assert relay.torn and not relay.saw_done and relay.upstream_error is None


def test_the_upstreams_own_error_before_garbage_is_kept() -> None:
    cut = MESSAGES_STREAM[: MESSAGES_STREAM.index(b"event: message_delta")]
    error = b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"x"}}\n\n'
    relay = PassThroughRelay(WireProtocol.ANTHROPIC_MESSAGES, redactor=NO_SECRETS)
    out = _feed(relay, cut + error + b"event: message_stop\ndata: {garbage\n\n", 4096)
    assert out == cut + error
    assert relay.upstream_error is not None and relay.upstream_error["message"] == "x"


def test_garbage_after_the_end_is_dropped_not_torn() -> None:
    relay = PassThroughRelay(WireProtocol.ANTHROPIC_MESSAGES, redactor=NO_SECRETS)
    out = _feed(relay, MESSAGES_STREAM + b"event: content_block_delta\ndata: }{\n\n", 4096)
    assert out == MESSAGES_STREAM and relay.saw_done and not relay.torn
