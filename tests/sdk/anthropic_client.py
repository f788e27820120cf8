"""Drives condenser's `/v1/messages` front door with the official `anthropic` Python SDK.

Run by tests/sdk.rs with ANTHROPIC_BASE_URL pointing at a condenser in front of the mock
Anthropic upstream. Exits non-zero (AssertionError) when any expectation fails.
"""

import os

import anthropic

client = anthropic.Anthropic(base_url=os.environ["ANTHROPIC_BASE_URL"], api_key="sk-ant-sdk", max_retries=0)

raw = client.messages.with_raw_response.create(
    model="claude-sonnet-4-5",
    max_tokens=100,
    system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    messages=[{"role": "user", "content": "Hello"}],
    extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
)
message = raw.parse()
assert message.content[0].text == "Hello! How can I help?", message
assert message.usage.cache_read_input_tokens == 100, message.usage
assert raw.headers["x-condenser-route"] == "claude", dict(raw.headers)
print("messages ok")

with client.messages.stream(
    model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "Hello"}]
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert text == "Hello!", text
assert final.stop_reason == "end_turn" and final.usage.output_tokens == 15, final
print("stream ok")

tools = [{"name": "get_weather", "description": "Weather", "input_schema": {
    "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}]
reply = client.messages.create(
    model="claude-sonnet-4-5", max_tokens=100, tools=tools,
    messages=[{"role": "user", "content": "Weather in SF?"}],
)
use = [b for b in reply.content if b.type == "tool_use"][0]
assert use.name == "get_weather" and use.input == {"location": "San Francisco, CA", "unit": "celsius"}, use
with client.messages.stream(
    model="claude-sonnet-4-5", max_tokens=100, tools=tools,
    messages=[{"role": "user", "content": "Weather in SF?"}],
) as stream:
    final = stream.get_final_message()
use = [b for b in final.content if b.type == "tool_use"][0]
assert use.input == {"location": "San Francisco, CA"}, use
print("tools ok")

try:
    client.messages.create(model="claude-fail", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    raise AssertionError("expected RateLimitError")
except anthropic.RateLimitError as e:
    assert e.status_code == 429
try:
    with client.messages.stream(
        model="claude-overloaded", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        for _ in stream:
            pass
    raise AssertionError("expected an overloaded error")
except anthropic.APIStatusError as e:
    assert "Overloaded" in str(e), e
print("errors ok")
