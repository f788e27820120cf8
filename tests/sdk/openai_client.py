"""Drives condenser with the official `openai` Python SDK: plain, streaming, tools, errors.

Run by tests/sdk.rs with OPENAI_BASE_URL pointing at a condenser in front of the mock upstream.
Exits non-zero (AssertionError) when any expectation fails.
"""

import os

import openai
from openai import OpenAI

LONG_DOC = "\n\n".join(
    f"Section {i}. The committee reviewed the regional budget and the railway museum plans. "
    "Farmers rotated wheat and barley across the seasons to keep the soil productive."
    for i in range(60)
) + "\n\nThe lighthouse keeper, Marguerite Okonkwo, lit the lamp on 14 March 1896."

client = OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key="sk-sdk-test", max_retries=0)

# Non-streaming, with compression visible in the response headers.
raw = client.chat.completions.with_raw_response.create(
    model="gpt-4o-mini",
    messages=[
        {"role": "system", "content": "Answer from the document."},
        {"role": "user", "content": LONG_DOC + "\n\nWhen was the lamp first lit?"},
    ],
)
completion = raw.parse()
assert completion.choices[0].message.content == "received 2 messages", completion
assert raw.headers["x-condenser-compressor"] == "extractive", dict(raw.headers)
before = int(raw.headers["x-condenser-tokens-before"])
after = int(raw.headers["x-condenser-tokens-after"])
assert after < before * 0.5, (before, after)
print(f"non-streaming ok: tokens {before} -> {after}")

# Streaming with usage.
stream = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Say hello"}],
    stream=True,
    stream_options={"include_usage": True},
)
text, usage = "", None
for chunk in stream:
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
    if chunk.usage:
        usage = chunk.usage
assert text == "Hello from the mock", text
assert usage is not None and usage.total_tokens == 14, usage
print("streaming ok")

# Tool calls, streamed and not.
tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
msg = client.chat.completions.create(
    model="tools", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=tools
).choices[0].message
assert msg.tool_calls[0].function.name == "get_weather"
assert msg.tool_calls[0].function.arguments == '{"city":"Paris"}'
args = ""
for chunk in client.chat.completions.create(
    model="tools", messages=[{"role": "user", "content": "Weather?"}], tools=tools, stream=True
):
    for call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
        args += call.function.arguments or ""
assert args == '{"city":"Paris"}', args
print("tools ok")

# Errors surface as the SDK's typed exceptions.
try:
    client.chat.completions.create(model="fail", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("expected RateLimitError")
except openai.RateLimitError as e:
    assert e.status_code == 429
try:
    client.chat.completions.create(model="gpt-4o", messages="not a list")
    raise AssertionError("expected BadRequestError")
except openai.BadRequestError as e:
    assert e.body["code"] == "invalid_request", e.body
print("errors ok")

# Another endpoint passes through.
emb = client.embeddings.create(model="text-embedding-3-small", input="hello")
assert emb.data[0].embedding == [0.1, 0.2]
print("embeddings ok")

# Claude and Gemini models behind the same OpenAI client (translated by condenser).
for model in ("claude-sonnet-4-5", "gemini-2.5-flash"):
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content, reply
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}], stream=True)
        if c.choices
    )
    assert text in ("Hello!", "The capital of France is Paris."), text
    call = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Weather?"}], tools=tools
    ).choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather", call
    args = ""
    for chunk in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Weather?"}], tools=tools, stream=True
    ):
        for c in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            args += c.function.arguments or ""
    assert args in ('{"location": "San Francisco, CA"}', '{"city":"Paris"}'), args
print("native providers ok")

# A provider error mid-stream surfaces as an exception, not as a normal end.
try:
    for _ in client.chat.completions.create(
        model="claude-overloaded", messages=[{"role": "user", "content": "Hi"}], stream=True
    ):
        pass
    raise AssertionError("expected APIError")
except openai.APIError as e:
    assert "Overloaded" in str(e), e
print("stream errors ok")
