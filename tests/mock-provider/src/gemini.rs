//! Google's Gemini API: `POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`, checked the way the real service checks (the key in
//! `x-goog-api-key`, roles `user` and `model`, function responses answering a function call), with
//! its own error shape `{"error":{"code","message","status"}}`.

use crate::openai::Call;
use crate::reply::{self, Api, Body};
use crate::text;
use hyper::Response;
use serde_json::{json, Value};

const MAX_STREAM_PIECES: usize = 64;

pub fn error(status: u16, message: &str) -> Response<Body> {
    reply::error(Api::Gemini, status, message)
}

/// `models/{model}:{method}` from a path under `/v1beta/`.
pub fn route(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1beta/models/")?;
    rest.split_once(':')
}

fn texts(parts: &[Value]) -> String {
    parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn generate_content(model: &str, body: &Value, stream: bool, call: &Call) -> Response<Body> {
    let Some(contents) = body.get("contents").and_then(Value::as_array) else {
        return error(
            400,
            "* GenerateContentRequest.contents: contents is not specified",
        );
    };
    if contents.is_empty() {
        return error(
            400,
            "* GenerateContentRequest.contents: contents is not specified",
        );
    }
    let mut prompt_tokens = 0;
    let mut last_user = String::new();
    let mut open_calls: Vec<String> = Vec::new();
    for (i, content) in contents.iter().enumerate() {
        let role = content
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("user");
        if !matches!(role, "user" | "model") {
            return error(
                400,
                &format!("* GenerateContentRequest.contents[{i}].role: must be user or model"),
            );
        }
        let Some(parts) = content.get("parts").and_then(Value::as_array) else {
            return error(
                400,
                &format!("* GenerateContentRequest.contents[{i}].parts: must not be empty"),
            );
        };
        for part in parts {
            if let Some(call) = part.get("functionCall") {
                open_calls.push(
                    call.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                );
            }
            if let Some(response) = part.get("functionResponse") {
                let name = response.get("name").and_then(Value::as_str).unwrap_or("");
                if !open_calls.iter().any(|c| c == name) {
                    return error(
                        400,
                        "Please ensure that function response turn comes immediately after a function call turn.",
                    );
                }
                last_user = response
                    .get("response")
                    .map(Value::to_string)
                    .unwrap_or_default();
            }
        }
        let text = texts(parts);
        prompt_tokens += text::tokens(&text);
        if role == "user" && !text.is_empty() {
            last_user = text;
        }
    }
    if let Some(system) = body
        .pointer("/systemInstruction/parts")
        .and_then(Value::as_array)
    {
        prompt_tokens += text::tokens(&texts(system));
    }
    let declared: Vec<String> = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("functionDeclarations").and_then(Value::as_array))
        .flatten()
        .filter_map(|d| d.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let max_tokens = body
        .pointer("/generationConfig/maxOutputTokens")
        .and_then(Value::as_u64);
    let (prompt, tool) = match &call.reply {
        Some(reply) => (reply.clone(), None),
        None => {
            let tool = text::tool_request(&last_user, &declared);
            (last_user, tool)
        }
    };
    let (parts, finish, output_tokens, pieces) = match tool {
        Some((name, rest)) => {
            let args = json!({ "text": rest });
            let tokens = text::tokens(&args.to_string()) + text::tokens(&name);
            let part = json!({"functionCall": {"name": name, "args": args}});
            (vec![part.clone()], "STOP", tokens, vec![vec![part]])
        }
        None => {
            let (reply_text, cut) = text::truncate_to_tokens(&prompt, max_tokens);
            let pieces = text::stream_pieces(&reply_text, MAX_STREAM_PIECES)
                .into_iter()
                .map(|piece| vec![json!({ "text": piece })])
                .collect();
            (
                vec![json!({ "text": reply_text })],
                if cut { "MAX_TOKENS" } else { "STOP" },
                text::tokens(&reply_text),
                pieces,
            )
        }
    };
    let cached = call.cached_tokens.min(prompt_tokens);
    let mut usage = json!({
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": output_tokens,
        "totalTokenCount": prompt_tokens + output_tokens,
    });
    if cached > 0 {
        usage["cachedContentTokenCount"] = json!(cached);
    }
    let response_id = format!("gemini-{}", call.id);
    if !stream {
        let mut answer = json!({
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
            "modelVersion": model,
            "responseId": response_id,
        });
        if !call.no_usage {
            answer["usageMetadata"] = usage;
        }
        return reply::json(200, &answer);
    }
    // As the real API streams: each event a GenerateContentResponse, CRLF-delimited; the last
    // carries the finish reason and the usage.
    let count = pieces.len();
    let mut events = Vec::new();
    for (i, piece) in pieces.into_iter().enumerate() {
        let mut candidate = json!({"content": {"role": "model", "parts": piece}, "index": 0});
        let mut event = json!({"modelVersion": model, "responseId": response_id});
        if i + 1 == count {
            candidate["finishReason"] = json!(finish);
            if !call.no_usage {
                event["usageMetadata"] = usage.clone();
            }
        }
        event["candidates"] = json!([candidate]);
        events.push(format!("data: {event}\r\n\r\n"));
    }
    let error_event = format!(
        "data: {}\r\n\r\n",
        json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})
    );
    reply::sse(events, error_event, call.faults)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echoes_calls_tools_and_streams() {
        let call = Call {
            id: "g1".to_string(),
            ..Call::default()
        };
        let request = json!({"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]});
        let body: Value = serde_json::from_str(
            &reply::body_text(generate_content("gemini-2.5-flash", &request, false, &call)).await,
        )
        .unwrap();
        assert_eq!(
            body["candidates"][0]["content"]["parts"][0]["text"],
            "hello there"
        );
        assert_eq!(body["candidates"][0]["finishReason"], "STOP");
        assert_eq!(
            body["usageMetadata"]["candidatesTokenCount"],
            text::tokens("hello there")
        );

        let request = json!({
            "contents": [{"role": "user", "parts": [{"text": "!tool weather in Paris"}]}],
            "tools": [{"functionDeclarations": [{"name": "weather"}]}]
        });
        let body: Value = serde_json::from_str(
            &reply::body_text(generate_content("m", &request, false, &call)).await,
        )
        .unwrap();
        assert_eq!(
            body["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
            "weather"
        );

        let request = json!({"contents": [{"role": "user", "parts": [{"text": "one two three"}]}]});
        let stream = reply::body_text(generate_content("m", &request, true, &call)).await;
        let events: Vec<Value> = stream
            .split("\r\n\r\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(events.len(), 3);
        assert_eq!(events[2]["candidates"][0]["finishReason"], "STOP");
        assert!(events[2]["usageMetadata"].is_object());

        let orphan = json!({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]});
        let response = generate_content("m", &orphan, false, &call);
        assert_eq!(response.status(), 400);
        let bad_role = json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]});
        assert_eq!(generate_content("m", &bad_role, false, &call).status(), 400);
    }
}
