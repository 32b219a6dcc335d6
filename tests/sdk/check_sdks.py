"""Drives the gateway with the official OpenAI and Anthropic Python SDKs.

usage: check_sdks.py BASE_URL GOOD_KEY
Exits non-zero (with the reason) if any SDK call does not behave as a client of the real API expects.
"""
import sys

import anthropic
import openai


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def main(base, key):
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello from the openai sdk"}]
    )
    check(reply.choices[0].message.content == "hello from the openai sdk", "openai chat completion")
    check(reply.usage.total_tokens > 0, "openai usage")
    chunks = client.chat.completions.create(
        model="fast", stream=True, messages=[{"role": "user", "content": "stream me please"}]
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(text == "stream me please", "openai streaming through an alias")
    ids = [m.id for m in client.models.list()]
    check("gpt-4o-mini" in ids and "fast" in ids, "openai models.list")
    embedding = client.embeddings.create(model="text-embedding-3-small", input="vector")
    check(len(embedding.data[0].embedding) > 0, "openai embeddings (base64 by default in the SDK)")

    # Claude through the OpenAI SDK, unchanged: llm_provider translates to and from Anthropic's format.
    claude = client.chat.completions.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hello from openai to claude"}]
    )
    check(claude.choices[0].message.content == "hello from openai to claude", "openai sdk -> claude-sonnet-4-5")
    stream = client.chat.completions.create(
        model="claude-sonnet-4-5",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "claude streams through the openai sdk"}],
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    check("".join(pieces) == "claude streams through the openai sdk", "openai sdk streaming from claude-sonnet-4-5")
    check(usage is not None and usage.completion_tokens > 0, "openai sdk stream usage from claude-sonnet-4-5")
    failover = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "fail over"}])
    check(failover.choices[0].message.content == "fail over", "openai sdk gpt-4o across the failover pool")

    try:
        openai.OpenAI(base_url=f"{base}/v1", api_key="sk-wrong", max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
        check(False, "openai wrong key raises")
    except openai.AuthenticationError as err:
        check(err.status_code == 401 and "sk-wrong" not in str(err), "openai wrong key -> AuthenticationError")
    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        check(False, "openai unknown model raises")
    except openai.NotFoundError as err:
        check(err.code == "model_not_found", "openai unknown model -> NotFoundError(model_not_found)")

    for label, sdk in [
        ("api_key", anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)),
        ("auth_token (Bearer)", anthropic.Anthropic(base_url=base, auth_token=key, max_retries=0)),
    ]:
        message = sdk.messages.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hello claude"}]
        )
        check(message.content[0].text == "hello claude", f"anthropic messages with {label}")
        with sdk.messages.stream(
            model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "stream claude"}]
        ) as stream:
            streamed = "".join(stream.text_stream)
        check(streamed == "stream claude", f"anthropic streaming with {label}")
    try:
        anthropic.Anthropic(base_url=base, api_key="sk-wrong", max_retries=0).messages.create(
            model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
        check(False, "anthropic wrong key raises")
    except anthropic.AuthenticationError as err:
        check(err.status_code == 401, "anthropic wrong key -> AuthenticationError")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
