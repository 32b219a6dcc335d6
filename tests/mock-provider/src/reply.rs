//! Building responses: JSON, provider-shaped errors, and SSE streams with optional faults.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use std::io;
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;

pub type Body = http_body_util::combinators::BoxBody<Bytes, io::Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Anthropic,
    Gemini,
    Bedrock,
}

/// The `x-amzn-errortype` namespace of Bedrock's own exceptions.
pub const BEDROCK_NAMESPACE: &str = "http://internal.amazon.com/coral/com.amazon.bedrock/";
/// The namespace of the exceptions AWS's request framework raises before the service sees a request
/// (signature and credential checks).
pub const CORAL_NAMESPACE: &str = "http://internal.amazon.com/coral/com.amazon.coral.service/";

pub fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    set_header(&mut response, "content-type", content_type);
    response
}

pub fn json(status: u16, value: &Value) -> Response<Body> {
    full(status, "application/json", value.to_string())
}

pub fn set_header(response: &mut Response<Body>, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        response.headers_mut().insert(name, value);
    }
}

/// A 429 as real providers send it: `retry-after` and the provider's rate-limit headers.
pub fn rate_limited(api: Api, message: &str) -> Response<Body> {
    let mut response = error(api, 429, message); // with retry-after
    let headers: &[(&str, &str)] = match api {
        Api::OpenAi => &[
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1s"),
        ],
        Api::Anthropic => &[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2030-01-01T00:00:01Z"),
        ],
        Api::Gemini | Api::Bedrock => &[],
    };
    for (name, value) in headers {
        set_header(&mut response, name, value);
    }
    response
}

/// The Bedrock exception AWS answers with `status`.
pub fn bedrock_exception(status: u16) -> &'static str {
    match status {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

/// A request id shaped like AWS's (a version 4 UUID), distinct per call.
pub fn aws_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut state = nanos
        ^ NEXT
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let high = splitmix64(&mut state);
    let low = splitmix64(&mut state);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xfff,
        0x8000 | (low >> 48) & 0x3fff,
        low & 0xffff_ffff_ffff
    )
}

/// A small deterministic generator for the mock's random-looking ids and padding.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An AWS REST-JSON error: the status, `x-amzn-errortype: NAME:NAMESPACE`, `x-amzn-requestid`, and
/// `body` (`{"message": ...}` for the service's exceptions).
pub fn aws_error(status: u16, exception: &str, namespace: &str, body: &Value) -> Response<Body> {
    let mut response = json(status, body);
    set_header(
        &mut response,
        "x-amzn-errortype",
        &format!("{exception}:{namespace}"),
    );
    set_header(&mut response, "x-amzn-requestid", &aws_request_id());
    response
}

/// An error in the provider's own format: OpenAI `{"error":{...}}`, Anthropic `{"type":"error",...}`,
/// Gemini `{"error":{"code","message","status"}}`, Bedrock `{"message"}` with `x-amzn-errortype`.
pub fn error(api: Api, status: u16, message: &str) -> Response<Body> {
    let body = match api {
        // AWS sends no retry-after, even with a 429.
        Api::Bedrock => {
            return aws_error(
                status,
                bedrock_exception(status),
                BEDROCK_NAMESPACE,
                &json!({ "message": message }),
            )
        }
        Api::OpenAi => {
            let kind = match status {
                400 | 404 | 413 | 422 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                429 => "rate_limit_error",
                _ => "server_error",
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        }
        Api::Anthropic => {
            let kind = match status {
                400 | 422 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 | 503 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        // Google's: the HTTP status, a message and the gRPC code's name.
        Api::Gemini => {
            let name = match status {
                400 => "INVALID_ARGUMENT",
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                429 => "RESOURCE_EXHAUSTED",
                503 => "UNAVAILABLE",
                504 => "DEADLINE_EXCEEDED",
                _ => "INTERNAL",
            };
            json!({"error": {"code": status, "message": message, "status": name}})
        }
    };
    let mut response = json(status, &body);
    if status == 429 {
        set_header(&mut response, "retry-after", "1");
    }
    response
}

/// Faults applied to a stream, from the request's `x-mock-*` headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamFaults {
    /// Pause between events.
    pub chunk_delay: Option<Duration>,
    /// After this many events, send the API's error event and end the stream.
    pub error_after: Option<usize>,
    /// After this many events, abort the connection (the client sees a reset, not a clean end).
    pub reset_after: Option<usize>,
    /// Re-cut the whole stream into frames of this many bytes (events split anywhere, even inside a
    /// UTF-8 character), each sent after `chunk_delay`.
    pub chunk_bytes: Option<usize>,
    /// SSE comment lines (`: keep-alive`) before the first event and between events, as some
    /// providers and routers send while a model thinks.
    pub comments: bool,
}

/// An SSE response sending each event as its own body frame. `error_event` is what `error_after` sends.
pub fn sse(events: Vec<String>, error_event: String, faults: StreamFaults) -> Response<Body> {
    let events: Vec<String> = if faults.comments {
        let mut with_comments = vec![": PROCESSING\n\n".to_string()];
        with_comments.extend(events.into_iter().map(|e| format!(": keep-alive\n\n{e}")));
        with_comments
    } else {
        events
    };
    let events = events.into_iter().map(String::into_bytes).collect();
    let mut response = stream(
        events,
        error_event.into_bytes(),
        faults,
        "text/event-stream",
    );
    set_header(&mut response, "cache-control", "no-cache");
    response
}

/// A streamed response of `content_type` sending each event (text or binary) as its own body frame,
/// with the stream faults applied (all but `comments`, which only SSE has). `error_event` is what
/// `error_after` sends.
pub fn stream(
    events: Vec<Vec<u8>>,
    error_event: Vec<u8>,
    faults: StreamFaults,
    content_type: &str,
) -> Response<Body> {
    let events: Vec<Vec<u8>> = match faults.chunk_bytes.filter(|n| *n > 0) {
        Some(size) => {
            let all: Vec<u8> = events.concat();
            all.chunks(size).map(|c| c.to_vec()).collect()
        }
        None => events,
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, io::Error>>(8);
    tokio::spawn(async move {
        for (index, event) in events.into_iter().enumerate() {
            if faults.reset_after == Some(index) {
                // Let hyper flush the events already sent (it writes when the body is pending);
                // otherwise the reset discards them and the client sees no event at all.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = sender
                    .send(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "mock reset",
                    )))
                    .await;
                return;
            }
            if faults.error_after == Some(index) {
                let _ = sender
                    .send(Ok(Frame::data(Bytes::from(error_event.clone()))))
                    .await;
                return;
            }
            if index > 0 {
                if let Some(delay) = faults.chunk_delay {
                    tokio::time::sleep(delay).await;
                }
            }
            if sender
                .send(Ok(Frame::data(Bytes::from(event))))
                .await
                .is_err()
            {
                return; // the client went away
            }
        }
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(ReceiverStream::new(
        receiver,
    ))));
    set_header(&mut response, "content-type", content_type);
    response
}

/// A JSON answer re-sent as frames of `size` bytes (`x-mock-chunk-bytes` on a non-streaming
/// request), so that filters see it arrive in several body callbacks. Other answers pass unchanged.
pub async fn json_in_frames(
    response: Response<Body>,
    size: usize,
    delay: Option<Duration>,
) -> Response<Body> {
    let is_json = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(collected) = body.collect().await else {
        return Response::from_parts(parts, full(500, "text/plain", "").into_body());
    };
    let bytes = collected.to_bytes();
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, io::Error>>(8);
    tokio::spawn(async move {
        for (index, frame) in bytes.chunks(size).enumerate() {
            if index > 0 {
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
            }
            let frame = Frame::data(Bytes::copy_from_slice(frame));
            if sender.send(Ok(frame)).await.is_err() {
                return;
            }
        }
    });
    let mut parts = parts;
    parts.headers.remove("content-length");
    Response::from_parts(
        parts,
        BodyExt::boxed(StreamBody::new(ReceiverStream::new(receiver))),
    )
}

/// `data: <json>\n\n`
pub fn data_event(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// `event: <name>\ndata: <json>\n\n`, the Anthropic framing.
pub fn named_event(name: &str, value: &Value) -> String {
    format!("event: {name}\ndata: {value}\n\n")
}

/// The encoding a real provider would pick for `accept-encoding` (gzip, else deflate), if any.
pub fn negotiate_encoding(accept_encoding: &str) -> Option<&'static str> {
    let offered = |name: &str| {
        accept_encoding.split(',').any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| p.replace(' ', "") == "q=0");
            (coding.eq_ignore_ascii_case(name) || coding == "*") && !refused
        })
    };
    ["gzip", "deflate"].into_iter().find(|name| offered(name))
}

/// A JSON answer compressed with `encoding`, as real providers send it (streams are left alone).
pub async fn compressed(response: Response<Body>, encoding: &str) -> Response<Body> {
    use std::io::Write;
    let is_json = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(collected) = body.collect().await else {
        return Response::from_parts(
            parts,
            Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        );
    };
    let plain = collected.to_bytes();
    let packed = match encoding {
        "gzip" => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&plain).and_then(|_| encoder.finish())
        }
        _ => {
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&plain).and_then(|_| encoder.finish())
        }
    };
    let body = match packed {
        Ok(packed) => {
            if let Ok(value) = HeaderValue::from_str(encoding) {
                parts.headers.insert("content-encoding", value);
            }
            parts.headers.remove("content-length");
            Bytes::from(packed)
        }
        Err(_) => plain,
    };
    Response::from_parts(
        parts,
        Full::new(body).map_err(|never| match never {}).boxed(),
    )
}

/// A whole response body as text (an SSE stream to its end), for the handlers' unit tests.
#[cfg(test)]
pub async fn body_text(response: Response<Body>) -> String {
    String::from_utf8(body_bytes(response).await.to_vec()).unwrap()
}

/// A whole response body (a stream to its end), for the handlers' unit tests.
#[cfg(test)]
pub async fn body_bytes(response: Response<Body>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}
