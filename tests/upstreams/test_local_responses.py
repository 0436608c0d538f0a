"""The openai client's Responses API against the embedded model: translated
to the llama.cpp worker's Chat Completions, real tokens both ways, and the
stored reply continued by previous_response_id."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.conftest import start_gateway

pytestmark = pytest.mark.local_model


def test_responses_on_the_embedded_model(tmp_path: Path) -> None:
    gw = start_gateway(
        "local: {ctx: 1024, parallel: 1}\nledger: {flush_interval_s: 0.05}\n", workdir=tmp_path
    )
    try:
        with openai.OpenAI(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0) as sdk:
            first = sdk.responses.create(
                model="local",
                instructions="Answer in one word.",
                input="Name a colour.",
                max_output_tokens=16,
            )
            assert first.output_text and first.status in ("completed", "incomplete")
            assert first.usage is not None
            assert first.usage.input_tokens > 5 and 0 < first.usage.output_tokens <= 16
            with sdk.responses.stream(
                model="local",
                input="Another one.",
                previous_response_id=first.id,
                max_output_tokens=16,
            ) as stream:
                events = list(stream)
        last = events[-1]  # the SDK's get_final_response wants completed; 16 tokens may cut it
        assert last.type in ("response.completed", "response.incomplete")
        final = last.response
        assert final.output_text and final.previous_response_id == first.id
        assert [e.sequence_number for e in events] == list(range(len(events)))
        # The second prompt holds the first turn: more input tokens than the first.
        assert final.usage is not None and final.usage.input_tokens > first.usage.input_tokens
        rows = gw.wait_rows(2)
        assert [r["protocol"] for r in rows] == ["openai_responses"] * 2
        assert not any(r["tokens_estimated"] for r in rows)
    finally:
        gw.stop()
