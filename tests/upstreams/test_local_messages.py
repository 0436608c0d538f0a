"""The anthropic SDK against the embedded model: /v1/messages translated to
the llama.cpp worker's Chat Completions, real tokens both ways."""

from __future__ import annotations

from pathlib import Path

import anthropic
import pytest

from tests.conftest import start_gateway

pytestmark = pytest.mark.local_model


def test_messages_on_the_embedded_model(tmp_path: Path) -> None:
    gw = start_gateway(
        "local: {ctx: 1024, parallel: 1}\nledger: {flush_interval_s: 0.05}\n", workdir=tmp_path
    )
    try:
        with anthropic.Anthropic(base_url=gw.url, api_key=gw.tenant_key, max_retries=0) as sdk:
            msg = sdk.messages.create(
                model="local",
                max_tokens=8,
                system="Answer in one word.",
                messages=[{"role": "user", "content": "Name a colour."}],
            )
            assert msg.content[0].type == "text" and msg.content[0].text
            assert msg.stop_reason in ("end_turn", "max_tokens")
            assert msg.usage.input_tokens > 5 and 0 < msg.usage.output_tokens <= 8
            with sdk.messages.stream(
                model="local", max_tokens=6, messages=[{"role": "user", "content": "Count."}]
            ) as stream:
                text = "".join(stream.text_stream)
                final = stream.get_final_message()
        assert text and final.usage.output_tokens <= 6
        row = gw.wait_rows(2)[-1]
        assert row["endpoint"] == "messages" and not row["tokens_estimated"]
    finally:
        gw.stop()
