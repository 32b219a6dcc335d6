"""Every client API on every model: the official SDKs through the gateway's API translation.

usage: surfaces_sdks.py BASE_URL KEY
- OpenAI Responses (`client.responses.create` / `.stream`) on gpt-4o-mini (an OpenAI-format provider:
  Chat Completions) and claude-sonnet-4-5 (an Anthropic-format provider: Messages): a function-tool
  round trip, the streamed event sequence, and the stateless limit (`previous_response_id` is a 400).
- Anthropic Messages (`client.messages.create` / `.stream`) on gpt-4o-mini and gpt-4o (the failover
  pool: a 503 first, then the Anthropic-format mock): the same tool round trip; errors in Anthropic's
  shape.
- The OpenAI Agents SDK (OpenAIResponsesModel, one function tool) on both kinds of provider, tracing
  off: nothing may leave for any host but the gateway.
The mock provider's rules (tests/mock-provider/README.md) fix the answers: `!tool` calls the first
declared tool with `{"text": <prompt without the marker>}`, a reply echoes the last user or tool text,
streams send one word per event, tokens are ceil(chars / 4) per text.
Exits non-zero with the reason on any difference.
"""
import json
import os
import socket
import sys
import traceback
from urllib.parse import urlparse

# Before the Agents SDK is imported: its trace exporter must never start (it posts to api.openai.com).
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"

import anthropic  # noqa: E402
import openai  # noqa: E402
from agents import (  # noqa: E402
    Agent,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    ToolCallItem,
    ToolCallOutputItem,
    function_tool,
    set_tracing_disabled,
)

TIMEOUT = 30
FORECAST = "sunny, 21C"
INSTRUCTIONS = "Be brief."
# ceil(len("Be brief.") / 4): what the system prompt adds to the mock's input tokens.
INSTRUCTION_TOKENS = 3

RESPONSES_PROMPT = "!tool what is the weather in Paris"
RESPONSES_ARGS = {"text": "what is the weather in Paris"}
RESPONSES_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather for the place named in the text.",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    "strict": False,
}
MESSAGES_PROMPT = "!tool weather in Paris"
MESSAGES_ARGS = {"text": "weather in Paris"}
MESSAGES_TOOL = {
    "name": "get_weather",
    "description": "The weather for the place named in the text.",
    "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}

# The event types a real Responses stream sends, in this order (other events may come in between).
TOOL_TURN_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.completed",
]
TEXT_TURN_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def in_order(wanted, seen):
    """Whether `wanted` occurs in `seen` in this order (other items may come in between)."""
    rest = iter(seen)
    return all(any(item == want for item in rest) for want in wanted)


def parsed_json(text):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------
# No network beyond the gateway: every name resolution goes through here.

FOREIGN_HOSTS = []


def only_the_gateway(allowed):
    resolve = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in allowed:
            FOREIGN_HOSTS.append(name)
            raise OSError(f"surfaces_sdks.py: {name} is not the gateway; no other host may be contacted")
        return resolve(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


# ---------------------------------------------------------------------------------------------------
# OpenAI Responses


def check_usage(usage, what):
    check(
        usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0,
        f"{what}: usage input_tokens and output_tokens > 0",
    )
    check(
        usage.total_tokens == usage.input_tokens + usage.output_tokens,
        f"{what}: usage total_tokens = input + output ({usage.total_tokens})",
    )


def check_tool_call_response(response, label):
    check(response.id.startswith("resp_"), f"{label}: id starts with resp_ ({response.id})")
    check(response.object == "response", f"{label}: object is response ({response.object})")
    check(response.status == "completed", f"{label}: status completed ({response.status})")
    types = [item.type for item in response.output]
    check(types == ["function_call"], f"{label}: the output is one function_call item ({types})")
    call = response.output[0]
    check(call.name == "get_weather", f"{label}: function_call name get_weather ({call.name})")
    check(bool(call.call_id), f"{label}: function_call has a call_id")
    check(
        parsed_json(call.arguments) == RESPONSES_ARGS,
        f"{label}: function_call arguments are {json.dumps(RESPONSES_ARGS)} ({call.arguments!r})",
    )
    check_usage(response.usage, label)
    return call


def check_answer_response(response, label):
    check(response.id.startswith("resp_"), f"{label}: id starts with resp_ ({response.id})")
    check(response.status == "completed", f"{label}: status completed ({response.status})")
    types = [item.type for item in response.output]
    check(types == ["message"], f"{label}: the output is one message item ({types})")
    check(response.output[0].role == "assistant", f"{label}: the message's role is assistant")
    check(
        response.output_text == FORECAST,
        f"{label}: output_text is the tool's output {FORECAST!r} ({response.output_text!r})",
    )
    check_usage(response.usage, label)


def tool_result_input(call_items, call_id):
    return [
        {"role": "user", "content": RESPONSES_PROMPT},
        *call_items,
        {"type": "function_call_output", "call_id": call_id, "output": FORECAST},
    ]


def responses_create(client, model, dump_items):
    label = f"responses.create {model}"
    bare = client.responses.create(model=model, input=RESPONSES_PROMPT, tools=[RESPONSES_TOOL])
    first = client.responses.create(
        model=model, input=RESPONSES_PROMPT, instructions=INSTRUCTIONS, tools=[RESPONSES_TOOL]
    )
    call = check_tool_call_response(first, f"{label} (tool turn)")
    added = first.usage.input_tokens - bare.usage.input_tokens
    check(
        added == INSTRUCTION_TOKENS,
        f"{label}: instructions reach the model (+{INSTRUCTION_TOKENS} input tokens, got {added:+d})",
    )
    # The two ways a client sends the call back: plain dicts, or the SDK's own output objects.
    items = [item.model_dump(exclude_none=True) for item in first.output] if dump_items else list(first.output)
    second = client.responses.create(
        model=model,
        input=tool_result_input(items, call.call_id),
        instructions=INSTRUCTIONS,
        tools=[RESPONSES_TOOL],
    )
    check_answer_response(second, f"{label} (answer turn, items as {'dicts' if dump_items else 'objects'})")


def stream_events(client, model, input_items):
    with client.responses.stream(
        model=model, input=input_items, instructions=INSTRUCTIONS, tools=[RESPONSES_TOOL]
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    return events, final


def check_stream_frame(events, final, wanted, label):
    types = [event.type for event in events]
    check(
        bool(types) and types[0] == "response.created" and types[-1] == "response.completed",
        f"{label}: starts with response.created and ends with response.completed ({types[:1]}..{types[-1:]})",
    )
    check(in_order(wanted, types), f"{label}: event sequence {wanted} (got {types})")
    numbers = [event.sequence_number for event in events]
    check(
        numbers[0] == 0 and all(a < b for a, b in zip(numbers, numbers[1:])),
        f"{label}: sequence_number strictly increasing from 0 ({numbers})",
    )
    created = events[0].response
    check(created.id.startswith("resp_") and created.id == final.id, f"{label}: one resp_ id throughout")
    check(final.status == "completed", f"{label}: final status completed ({final.status})")
    check_usage(final.usage, f"{label}: final response")


def responses_stream(client, model):
    label = f"responses.stream {model}"
    events, final = stream_events(client, model, RESPONSES_PROMPT)
    tool_label = f"{label} (tool turn)"
    check_stream_frame(events, final, TOOL_TURN_EVENTS, tool_label)
    added = [e.item for e in events if e.type == "response.output_item.added"]
    check(
        len(added) == 1 and added[0].type == "function_call" and added[0].name == "get_weather",
        f"{tool_label}: one output_item.added, a function_call to get_weather",
    )
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    check(len(done) == 1, f"{tool_label}: one function_call_arguments.done")
    check(
        "".join(deltas) == done[0].arguments and parsed_json(done[0].arguments) == RESPONSES_ARGS,
        f"{tool_label}: the argument deltas join to the done arguments {json.dumps(RESPONSES_ARGS)} "
        f"({deltas} / {done[0].arguments!r})",
    )
    finished = [e.item for e in events if e.type == "response.output_item.done"]
    check(
        len(finished) == 1 and finished[0].type == "function_call" and finished[0].arguments == done[0].arguments,
        f"{tool_label}: output_item.done carries the whole function_call",
    )
    call = check_tool_call_response(final, f"{tool_label}: get_final_response()")
    check(
        call.call_id == added[0].call_id == finished[0].call_id,
        f"{tool_label}: one call_id in output_item.added, output_item.done and the final response",
    )

    events, final = stream_events(
        client, model, tool_result_input([item.model_dump(exclude_none=True) for item in final.output], call.call_id)
    )
    text_label = f"{label} (answer turn)"
    check_stream_frame(events, final, TEXT_TURN_EVENTS, text_label)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    check(len(deltas) >= 2, f"{text_label}: the text arrives in pieces, as the provider streamed it ({deltas})")
    done = [e.text for e in events if e.type == "response.output_text.done"]
    check(
        "".join(deltas) == FORECAST and done == [FORECAST],
        f"{text_label}: the text deltas join to output_text.done's text {FORECAST!r} ({deltas} / {done})",
    )
    check(
        final.output_text == "".join(deltas),
        f"{text_label}: get_final_response().output_text equals the joined deltas ({final.output_text!r})",
    )
    check_answer_response(final, f"{text_label}: get_final_response()")


def responses_stateless(client, model):
    label = f"responses {model}: previous_response_id"
    try:
        client.responses.create(model=model, input="hi", previous_response_id="resp_123")
        check(False, f"{label} raises (the gateway keeps no responses)")
    except openai.BadRequestError as err:
        body = err.body if isinstance(err.body, dict) else {}
        check(err.status_code == 400, f"{label} -> BadRequestError, 400")
        check(
            "previous_response_id" in str(body.get("message", "")),
            f"{label}: the error message names previous_response_id ({body.get('message')!r})",
        )


def responses_provider_error(client, model):
    label = f"responses {model}: a provider 429"
    try:
        client.responses.create(model=model, input="rate me", extra_headers={"x-mock-status": "429"})
        check(False, f"{label} raises")
    except openai.RateLimitError as err:
        whole = parsed_json(err.response.text)
        error = whole.get("error") if isinstance(whole, dict) else None
        check(err.status_code == 429, f"{label} -> RateLimitError, 429")
        check(
            isinstance(error, dict) and list(whole) == ["error"] and isinstance(error.get("message"), str),
            f"{label}: the error in OpenAI's shape {{\"error\": {{\"message\", ...}}}} ({err.response.text[:200]})",
        )


def responses_cases(base, key):
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=TIMEOUT)
    for model, dump_items in [("gpt-4o-mini", True), ("claude-sonnet-4-5", False)]:
        responses_create(client, model, dump_items)
        responses_stream(client, model)
        responses_stateless(client, model)
        responses_provider_error(client, model)


# ---------------------------------------------------------------------------------------------------
# Anthropic Messages


def check_tool_use_message(message, label):
    check(message.id.startswith("msg_"), f"{label}: id starts with msg_ ({message.id})")
    check(message.role == "assistant", f"{label}: role assistant")
    check(message.stop_reason == "tool_use", f"{label}: stop_reason tool_use ({message.stop_reason})")
    blocks = [block for block in message.content if block.type == "tool_use"]
    check(len(blocks) == 1, f"{label}: one tool_use block ({[b.type for b in message.content]})")
    block = blocks[0]
    check(block.name == "get_weather" and bool(block.id), f"{label}: tool_use get_weather with an id")
    check(block.input == MESSAGES_ARGS, f"{label}: tool_use input {MESSAGES_ARGS} ({block.input})")
    check(
        message.usage.input_tokens > 0 and message.usage.output_tokens > 0,
        f"{label}: usage input_tokens and output_tokens > 0",
    )
    return block


def check_text_message(message, label):
    check(message.stop_reason == "end_turn", f"{label}: stop_reason end_turn ({message.stop_reason})")
    texts = [block.text for block in message.content if block.type == "text"]
    check(texts == [FORECAST], f"{label}: one text block, the tool result {FORECAST!r} ({texts})")
    check(
        message.usage.input_tokens > 0 and message.usage.output_tokens > 0,
        f"{label}: usage input_tokens and output_tokens > 0",
    )


def answer_turn(assistant_content, tool_use_id):
    return [
        {"role": "user", "content": MESSAGES_PROMPT},
        {"role": "assistant", "content": assistant_content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use_id, "content": FORECAST}]},
    ]


def messages_create(client, model):
    label = f"messages.create {model}"
    request = {"model": model, "max_tokens": 200, "tools": [MESSAGES_TOOL]}
    bare = client.messages.create(**request, messages=[{"role": "user", "content": MESSAGES_PROMPT}])
    first = client.messages.create(
        **request, system=INSTRUCTIONS, messages=[{"role": "user", "content": MESSAGES_PROMPT}]
    )
    block = check_tool_use_message(first, f"{label} (tool turn)")
    added = first.usage.input_tokens - bare.usage.input_tokens
    check(
        added == INSTRUCTION_TOKENS,
        f"{label}: system reaches the model (+{INSTRUCTION_TOKENS} input tokens, got {added:+d})",
    )
    # The assistant turn sent back as the SDK's own content objects, as Anthropic's docs do.
    second = client.messages.create(**request, system=INSTRUCTIONS, messages=answer_turn(first.content, block.id))
    check_text_message(second, f"{label} (answer turn)")


def messages_stream(client, model):
    label = f"messages.stream {model}"
    request = {"model": model, "max_tokens": 200, "system": INSTRUCTIONS, "tools": [MESSAGES_TOOL]}
    with client.messages.stream(**request, messages=[{"role": "user", "content": MESSAGES_PROMPT}]) as stream:
        events = list(stream)
        first = stream.get_final_message()
    tool_label = f"{label} (tool turn)"
    types = [event.type for event in events]
    check(
        bool(types) and types[0] == "message_start" and types[-1] == "message_stop",
        f"{tool_label}: starts with message_start and ends with message_stop",
    )
    starts = [e.content_block for e in events if e.type == "content_block_start" and e.content_block.type == "tool_use"]
    check(
        len(starts) == 1 and starts[0].input == {},
        f"{tool_label}: one tool_use content_block_start, its input empty until the deltas "
        f"({[s.input for s in starts]})",
    )
    partials = [e.partial_json for e in events if e.type == "input_json"]
    check(
        len(partials) >= 1 and parsed_json("".join(partials)) == MESSAGES_ARGS,
        f"{tool_label}: the input_json_delta pieces join to {json.dumps(MESSAGES_ARGS)} ({partials})",
    )
    block = check_tool_use_message(first, f"{tool_label}: get_final_message()")
    check(block.id == starts[0].id, f"{tool_label}: the tool_use id of content_block_start")

    assistant = [{"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}]
    with client.messages.stream(**request, messages=answer_turn(assistant, block.id)) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    text_label = f"{label} (answer turn)"
    check(len(pieces) >= 2, f"{text_label}: the text arrives in pieces, as the provider streamed it ({pieces})")
    texts = [b.text for b in final.content if b.type == "text"]
    check(
        "".join(pieces) == "".join(texts),
        f"{text_label}: text_stream joined equals the final message's text ({pieces} / {texts})",
    )
    check_text_message(final, f"{text_label}: get_final_message()")


def anthropic_errors(client):
    try:
        client.messages.create(
            model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
        check(False, "anthropic unknown model raises")
    except anthropic.NotFoundError as err:
        body = err.body if isinstance(err.body, dict) else {}
        check(
            err.status_code == 404 and body.get("type") == "error"
            and (body.get("error") or {}).get("type") == "not_found_error",
            f"anthropic unknown model -> NotFoundError, 404, not_found_error in Anthropic's shape ({err.body})",
        )
    label = "messages.create gpt-4o-mini: a provider 429 (OpenAI-format)"
    try:
        client.messages.create(
            model="gpt-4o-mini",
            max_tokens=8,
            messages=[{"role": "user", "content": "rate me"}],
            extra_headers={"x-mock-status": "429"},
        )
        check(False, f"{label} raises")
    except anthropic.RateLimitError as err:
        body = err.body if isinstance(err.body, dict) else {}
        error = body.get("error") or {}
        check(err.status_code == 429, f"{label} -> RateLimitError, 429")
        check(
            body.get("type") == "error" and error.get("type") == "rate_limit_error"
            and isinstance(error.get("message"), str),
            f"{label}: the error in Anthropic's shape, rate_limit_error ({err.body})",
        )


def anthropic_cases(base, key):
    # `no-store` keeps llm_cache out: a repeated request must be translated again, not replayed.
    client = anthropic.Anthropic(
        base_url=base,
        api_key=key,
        max_retries=0,
        timeout=TIMEOUT,
        default_headers={"cache-control": "no-store"},
    )
    for model in ["gpt-4o-mini", "gpt-4o"]:
        messages_create(client, model)
        messages_stream(client, model)
    anthropic_errors(client)


# ---------------------------------------------------------------------------------------------------
# OpenAI Agents SDK


def agent_case(base, key, model):
    label = f"agents SDK {model}"
    received = []

    # The mock calls the first declared tool with {"text": ...}: the tool's one parameter is `text`.
    @function_tool
    def get_weather(text: str) -> str:
        """The weather for the place named in the text."""
        received.append(text)
        return FORECAST

    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=TIMEOUT)
    agent = Agent(
        name="weather",
        instructions=INSTRUCTIONS,
        tools=[get_weather],
        model=OpenAIResponsesModel(model=model, openai_client=client),
    )
    result = Runner.run_sync(
        agent, MESSAGES_PROMPT, max_turns=4, run_config=RunConfig(tracing_disabled=True)
    )
    check(
        received == [MESSAGES_ARGS["text"]],
        f"{label}: the tool ran once with text={MESSAGES_ARGS['text']!r} ({received})",
    )
    calls = [item for item in result.new_items if isinstance(item, ToolCallItem)]
    outputs = [item for item in result.new_items if isinstance(item, ToolCallOutputItem)]
    check(len(calls) == 1, f"{label}: one ToolCallItem ({[type(i).__name__ for i in result.new_items]})")
    check(
        len(outputs) == 1 and outputs[0].output == FORECAST,
        f"{label}: one ToolCallOutputItem with {FORECAST!r}",
    )
    check(
        isinstance(result.final_output, str) and FORECAST in result.final_output,
        f"{label}: final_output contains {FORECAST!r} ({result.final_output!r})",
    )
    usage = result.context_wrapper.usage
    check(
        usage.requests == 2 and usage.input_tokens > 0 and usage.output_tokens > 0,
        f"{label}: two model requests with usage ({usage.requests}, {usage.input_tokens}, {usage.output_tokens})",
    )


def agents_cases(base, key):
    set_tracing_disabled(True)
    for model in ["gpt-4o-mini", "claude-sonnet-4-5"]:
        agent_case(base, key, model)
    check(not FOREIGN_HOSTS, f"nothing tried a host other than the gateway ({sorted(set(FOREIGN_HOSTS))})")


def run(label, case, base, key):
    try:
        case(base, key)
    except Exception as err:  # an SDK that cannot parse what it got is a failure too, with its reason
        traceback.print_exc()
        sys.exit(f"FAILED: {label} raised {type(err).__name__}: {err}")


if __name__ == "__main__":
    base_url, api_key = sys.argv[1].rstrip("/"), sys.argv[2]
    only_the_gateway({urlparse(base_url).hostname})
    run("openai responses", responses_cases, base_url, api_key)
    run("anthropic messages", anthropic_cases, base_url, api_key)
    run("openai agents", agents_cases, base_url, api_key)
