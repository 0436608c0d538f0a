"""The OpenAI Agents SDK with its default model class (OpenAIResponsesModel,
the Responses API) pointed at Forebay: an agent with one function tool runs to
completion through Forebay to the Chat Completions test server, whose model
`tools` calls the tool and then answers with what the tool returned."""

from __future__ import annotations

import agents
import openai
import pytest
from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool

from tests.conftest import Gateway, GatewayFactory, Upstream


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    return make_gateway(
        f"""
    key_refresh_s: 0.2
    ledger: {{flush_interval_s: 0.05}}
    models:
      tools:
        deployments: [{{name: fake-tools, base_url: "{upstream.base_url}", model: tools}}]
    """
    )


@pytest.mark.parametrize("streamed", [False, True])
async def test_an_agent_with_a_function_tool_runs_to_completion(
    gw: Gateway, upstream: Upstream, streamed: bool
) -> None:
    agents.set_tracing_disabled(True)
    called: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        called.append(city)
        return f"sunny in {city}"

    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0)
    model = OpenAIResponsesModel(model="tools", openai_client=client)
    agent = Agent(name="forecaster", instructions="Use the tool.", tools=[get_weather], model=model)
    config = RunConfig(tracing_disabled=True)
    try:
        if streamed:
            run = Runner.run_streamed(agent, "Lisbon", run_config=config)
            kinds = [event.type async for event in run.stream_events()]
            assert "raw_response_event" in kinds
            final = run.final_output
        else:
            final = (await Runner.run(agent, "Lisbon", run_config=config)).final_output
    finally:
        await client.close()
    assert called == ["Lisbon"]
    assert final == "the tool said sunny in Lisbon"
    # Two turns through Forebay, both Responses in and Chat Completions out.
    chats = [s for s in upstream.fake.seen if s.path == "/v1/chat/completions"]
    assert len(chats) == 2 and all(bool(c.body.get("stream")) is streamed for c in chats)
    assert chats[1].body["messages"][-1]["role"] == "tool"
    rows = gw.wait_rows(2)
    assert [(r["protocol"], r["status"]) for r in rows] == [("openai_responses", 200)] * 2
