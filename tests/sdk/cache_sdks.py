"""Streams answers that llm_cache stored as JSON, through the official OpenAI and Anthropic SDKs.

usage: cache_sdks.py BASE_URL KEY
Each case asks once without streaming (a miss: the provider answers and the cache stores the JSON),
then the same request streamed: served from the cache as a synthesised event stream, which the SDK
must parse into the same text or tool call. Exits non-zero with the reason on any difference.
"""
import json
import sys

import anthropic
import openai


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
    },
}


def openai_cases(base, key):
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    messages = [{"role": "user", "content": "cached answers stream too"}]
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    check(first.headers.get("x-llm-cache") == "miss", "openai: first request is a miss")
    stored = first.parse().choices[0].message.content
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    check(raw.headers.get("x-llm-cache") == "hit", "openai: the streamed repeat is a hit")
    text, usage, finish = [], None, None
    for chunk in raw.parse():
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    check("".join(text) == stored, "openai: streamed text equals the stored answer")
    check(finish == "stop", "openai: finish_reason")
    check(usage is not None and usage.completion_tokens > 0, "openai: usage chunk when asked for")

    tool_messages = [{"role": "user", "content": "!tool weather in Paris"}]
    first = client.chat.completions.create(model="gpt-4o-mini", messages=tool_messages, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=tool_messages, tools=[WEATHER], stream=True
    )
    check(raw.headers.get("x-llm-cache") == "hit", "openai: streamed tool call is a hit")
    calls, finish = {}, None
    for chunk in raw.parse():
        if not chunk.choices:
            continue
        finish = chunk.choices[0].finish_reason or finish
        for delta in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = delta.id or entry["id"]
            if delta.function:
                entry["name"] += delta.function.name or ""
                entry["arguments"] += delta.function.arguments or ""
    got = calls.get(0, {})
    check(got.get("id") == call.id and got.get("name") == call.function.name, "openai: tool call id and name")
    check(json.loads(got.get("arguments") or "null") == json.loads(call.function.arguments), "openai: tool arguments")
    check(finish == "tool_calls", "openai: tool_calls finish_reason")


def anthropic_cases(base, key):
    client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
    messages = [{"role": "user", "content": "claude answers are cached as well"}]
    first = client.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=200, messages=messages)
    check(first.headers.get("x-llm-cache") == "miss", "anthropic: first request is a miss")
    stored = first.parse()
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=200, messages=messages) as stream:
        final = stream.get_final_message()
        header = stream.response.headers.get("x-llm-cache")
    check(header == "hit", "anthropic: the streamed repeat is a hit")
    check(final.content[0].text == stored.content[0].text, "anthropic: streamed text equals the stored answer")
    check(final.stop_reason == stored.stop_reason, "anthropic: stop_reason")
    check(final.usage.output_tokens == stored.usage.output_tokens, "anthropic: usage")

    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}]
    tool_messages = [{"role": "user", "content": "!tool weather in Rome"}]
    first = client.messages.create(model="claude-sonnet-4-5", max_tokens=200, messages=tool_messages, tools=tools)
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=200, messages=tool_messages, tools=tools
    ) as stream:
        final = stream.get_final_message()
    stored_tool = [b for b in first.content if b.type == "tool_use"][0]
    got_tool = [b for b in final.content if b.type == "tool_use"]
    check(len(got_tool) == 1, "anthropic: one tool_use block")
    check(
        (got_tool[0].id, got_tool[0].name, got_tool[0].input) == (stored_tool.id, stored_tool.name, stored_tool.input),
        "anthropic: tool_use id, name and input",
    )
    check(final.stop_reason == "tool_use", "anthropic: tool_use stop_reason")


if __name__ == "__main__":
    openai_cases(sys.argv[1], sys.argv[2])
    anthropic_cases(sys.argv[1], sys.argv[2])
