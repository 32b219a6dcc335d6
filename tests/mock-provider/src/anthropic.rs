//! Anthropic Messages API: `POST /v1/messages`, JSON and the real SSE event sequence.

use crate::openai::Call;
use crate::reply::{self, named_event, Api, Body};
use crate::text;
use hyper::Response;
use serde_json::{json, Value};

const MAX_STREAM_PIECES: usize = 64;

fn bad_request(message: &str) -> Response<Body> {
    reply::error(Api::Anthropic, 400, message)
}

fn declared_tools(body: &Value) -> Vec<String> {
    body.get("tools")
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `anthropic_version` is the request's `anthropic-version` header, which the real API requires.
/// `/v1/messages/count_tokens`: the prompt's tokens under the token rule, as `messages` counts them.
pub fn count_tokens(body: &Value, anthropic_version: Option<&str>) -> Response<Body> {
    if anthropic_version.is_none() {
        return bad_request("anthropic-version: header is required");
    }
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return bad_request("messages: Field required");
    };
    reply::json(
        200,
        &json!({"input_tokens": text::prompt_tokens(messages, body.get("system"))}),
    )
}

pub fn messages(body: &Value, anthropic_version: Option<&str>, call: &Call) -> Response<Body> {
    if anthropic_version.is_none() {
        return bad_request("anthropic-version: header is required");
    }
    let Some(model) = body.get("model").and_then(Value::as_str) else {
        return bad_request("model: Field required");
    };
    let Some(max_tokens) = body.get("max_tokens").and_then(Value::as_u64) else {
        return bad_request("max_tokens: Field required");
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return bad_request("messages: Field required");
    };
    if messages.is_empty() {
        return bad_request("messages: at least one message is required");
    }
    if messages.iter().any(|m| {
        !matches!(
            m.get("role").and_then(Value::as_str),
            Some("user" | "assistant")
        )
    }) {
        return bad_request(
            "messages: roles must be `user` or `assistant` (system goes in `system`)",
        );
    }

    let input_tokens = text::prompt_tokens(messages, body.get("system"));
    let cache_read = call.cached_tokens.min(input_tokens);
    // Anthropic's input_tokens exclude cached tokens.
    let uncached_input = input_tokens - cache_read;
    // The test's `x-mock-reply` replaces the echo and any tool call the prompt's markers ask for.
    let (prompt, tool) = match &call.reply {
        Some(text) => (text.clone(), None),
        None => {
            let prompt = text::last_user_text(messages);
            let tool = text::tool_request(&prompt, &declared_tools(body));
            (prompt, tool)
        }
    };
    let tool_id = format!("toolu_{}", call.id);
    let message_id = format!("msg_{}", call.id);

    let (block, stop_reason, output_tokens, stream_deltas) = match tool {
        Some((name, rest)) => {
            let input = json!({ "text": rest });
            let arguments = input.to_string();
            let tokens = text::tokens(&arguments) + text::tokens(&name);
            let deltas: Vec<Value> = text::split_even(&arguments, 3)
                .into_iter()
                .map(|piece| json!({"type": "input_json_delta", "partial_json": piece}))
                .collect();
            (
                json!({"type": "tool_use", "id": tool_id, "name": name, "input": input}),
                "tool_use",
                tokens,
                deltas,
            )
        }
        None => {
            let (reply_text, cut) = text::truncate_to_tokens(&prompt, Some(max_tokens));
            let deltas: Vec<Value> = text::stream_pieces(&reply_text, MAX_STREAM_PIECES)
                .into_iter()
                .map(|piece| json!({"type": "text_delta", "text": piece}))
                .collect();
            (
                json!({"type": "text", "text": reply_text}),
                if cut { "max_tokens" } else { "end_turn" },
                text::tokens(&reply_text),
                deltas,
            )
        }
    };
    let usage = json!({
        "input_tokens": uncached_input,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output_tokens,
    });

    if !body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let mut response = json!({
            "id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop_reason, "stop_sequence": null,
        });
        if !call.no_usage {
            response["usage"] = usage;
        }
        return reply::json(200, &response);
    }

    let empty_block = match block.get("type").and_then(Value::as_str) {
        Some("tool_use") => json!({"type": "tool_use", "id": tool_id,
                                   "name": block.get("name"), "input": {}}),
        _ => json!({"type": "text", "text": ""}),
    };
    let mut start = json!({
        "id": message_id, "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null,
    });
    let mut delta_usage = json!({"output_tokens": output_tokens});
    if !call.no_usage {
        start["usage"] = json!({
            "input_tokens": uncached_input,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cache_read,
            "output_tokens": 1,
        });
    } else {
        delta_usage = Value::Null;
    }
    let mut events = vec![
        named_event(
            "message_start",
            &json!({"type": "message_start", "message": start}),
        ),
        named_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": empty_block}),
        ),
        named_event("ping", &json!({"type": "ping"})),
    ];
    for delta in stream_deltas {
        events.push(named_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ));
    }
    events.push(named_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    let mut message_delta = json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
    });
    if !delta_usage.is_null() {
        message_delta["usage"] = delta_usage;
    }
    events.push(named_event("message_delta", &message_delta));
    events.push(named_event(
        "message_stop",
        &json!({"type": "message_stop"}),
    ));
    let error_event = named_event(
        "error",
        &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    );
    reply::sse(events, error_event, call.faults)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reply_header_replaces_the_echo() {
        let said = "the model says this";
        let call = Call {
            id: "t1".to_string(),
            reply: Some(said.to_string()),
            ..Call::default()
        };
        let mut request = json!({
            "model": "claude-sonnet-4-5", "max_tokens": 100,
            "messages": [{"role": "user", "content": "!tool echo me"}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        });
        let response = messages(&request, Some("2023-06-01"), &call);
        let body: Value = serde_json::from_str(&reply::body_text(response).await).unwrap();
        assert_eq!(body["content"], json!([{"type": "text", "text": said}]));
        assert_eq!(body["stop_reason"], "end_turn");
        assert_eq!(body["usage"]["output_tokens"], text::tokens(said));

        request["stream"] = json!(true);
        let response = messages(&request, Some("2023-06-01"), &call);
        let stream = reply::body_text(response).await;
        let deltas: Vec<String> = stream
            .split("\n\n")
            .filter_map(|event| event.split_once("data: "))
            .filter_map(|(_, data)| serde_json::from_str::<Value>(data).ok())
            .filter_map(|e| {
                e.pointer("/delta/text")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .collect();
        assert_eq!(deltas.len(), 4);
        assert_eq!(deltas.concat(), said);
    }
}
