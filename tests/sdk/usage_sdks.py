"""Sends requests of known size through the gateway with the official SDKs on their default settings
(their HTTP clients offer gzip, like every real client), so the caller can check the exact tokens and
cost the gateway recorded. The mock counts ceil(characters / 4) tokens and echoes the prompt.

usage: usage_sdks.py BASE_URL KEY
"""
import sys

import anthropic
import openai

from check_sdks import check


def main(base, key):
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    long, short = "a" * 400, "b" * 200  # 100 and 50 tokens each way
    for model in ["gpt-4o-mini", "claude-sonnet-4-5"]:
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": long}])
        check(reply.usage.completion_tokens == 100, f"openai sdk json {model}")
        # No stream_options: the gateway asks for usage itself and hides it from this client.
        chunks = list(
            client.chat.completions.create(model=model, stream=True, messages=[{"role": "user", "content": short}])
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        check(text == short and all(c.usage is None for c in chunks), f"openai sdk stream {model}")
    claude = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
    message = claude.messages.create(
        model="claude-sonnet-4-5", max_tokens=500, messages=[{"role": "user", "content": long}]
    )
    check(message.usage.output_tokens == 100, "anthropic sdk json")
    with claude.messages.stream(
        model="claude-sonnet-4-5", max_tokens=500, messages=[{"role": "user", "content": short}]
    ) as stream:
        check("".join(stream.text_stream) == short, "anthropic sdk stream")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
