//! Reading the few fields a filter needs from an LLM request body without building a JSON DOM.
//!
//! serde_json still validates the whole body, but fields other than those named here are skipped without
//! allocation, and `model` comes back with its byte span so it can be replaced in place: the rest of the
//! body is never re-serialized.

use crate::api::{error_reply, ApiFlavor, ErrorDetail, ErrorKind, LocalReply};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::ops::Range;

/// The fields of an OpenAI or Anthropic request body that routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFields {
    /// `model`, unescaped; `None` when absent.
    pub model: Option<String>,
    /// Where the `model` JSON value (with its quotes) sits in the body.
    pub model_span: Option<Range<usize>>,
    /// `stream: true`.
    pub stream: bool,
    /// The most output tokens the request allows (`max_tokens`, `max_completion_tokens` or
    /// `max_output_tokens`, the smallest when several are sent); `None` when it sets no number.
    pub max_output_tokens: Option<u64>,
    /// `temperature` and `top_p` as written, when finite numbers (for traces).
    pub temperature: Option<String>,
    pub top_p: Option<String>,
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    Empty,
    /// Not JSON; the text is serde's description of where (no input is echoed).
    Syntax(String),
    NotAnObject,
    DuplicateModel,
    /// An output-limit field given twice (parsers would read different limits).
    DuplicateField(&'static str),
    ModelNotAString,
}

/// The request fields that cap a request's output, by API: Chat Completions (both spellings),
/// Completions and Messages (`max_tokens`), Responses (`max_output_tokens`).
const OUTPUT_LIMIT_FIELDS: [&str; 3] = ["max_tokens", "max_completion_tokens", "max_output_tokens"];

/// The largest output limit taken from a request (4 Gi tokens).
pub const MAX_OUTPUT_TOKENS: u64 = u32::MAX as u64;

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_output_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    temperature: Option<&'a RawValue>,
    #[serde(borrow, default)]
    top_p: Option<&'a RawValue>,
}

pub fn read_fields(body: &[u8]) -> Result<RequestFields, BodyError> {
    // JSON is UTF-8; serde skips the fields it ignores without checking their bytes, so check here
    // rather than forward invalid text to a provider.
    if let Err(err) = std::str::from_utf8(body) {
        return Err(BodyError::Syntax(format!(
            "invalid UTF-8 at byte {}",
            err.valid_up_to()
        )));
    }
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(BodyError::Empty),
        // serde's derived visitor would also accept an array (positional fields): only objects count.
        Some(b'{') => {}
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
                return Err(BodyError::NotAnObject);
            }
        }
        Some(_) => {}
    }
    let probe: Probe<'_> = serde_json::from_slice(body).map_err(|err| {
        if err.is_syntax() || err.is_eof() {
            BodyError::Syntax(err.to_string())
        } else if err.to_string().starts_with("duplicate field `model`") {
            // Two `model` keys: different parsers would pick different ones, so refuse.
            BodyError::DuplicateModel
        } else if let Some(field) = OUTPUT_LIMIT_FIELDS.into_iter().find(|f| {
            err.to_string()
                .starts_with(&format!("duplicate field `{f}`"))
        }) {
            BodyError::DuplicateField(field)
        } else {
            BodyError::NotAnObject
        }
    })?;
    let (model, model_span) = match probe.model {
        None => (None, None),
        Some(raw) if raw.get() == "null" => (None, None),
        Some(raw) => {
            let text = raw.get();
            let model: String =
                serde_json::from_str(text).map_err(|_| BodyError::ModelNotAString)?;
            (Some(model), span_within(body, text.as_bytes()))
        }
    };
    let max_output_tokens = [
        probe.max_tokens,
        probe.max_completion_tokens,
        probe.max_output_tokens,
    ]
    .into_iter()
    .flatten()
    .filter_map(|raw| raw.get().parse::<u64>().ok())
    .min()
    // No model writes more than this; a client's 2^64-1 must not overflow a reservation.
    .map(|max| max.min(MAX_OUTPUT_TOKENS));
    Ok(RequestFields {
        model,
        model_span,
        stream: probe.stream.is_some_and(|raw| raw.get() == "true"),
        max_output_tokens,
        temperature: probe
            .temperature
            .and_then(|raw| crate::genai::sampling_number(raw.get())),
        top_p: probe
            .top_p
            .and_then(|raw| crate::genai::sampling_number(raw.get())),
    })
}

/// The range `inner` occupies in `outer`; `inner` must borrow from `outer`.
fn span_within(outer: &[u8], inner: &[u8]) -> Option<Range<usize>> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let end = start.checked_add(inner.len())?;
    (end <= outer.len()).then_some(start..end)
}

/// `body` with the value at `span` replaced by `model` as a JSON string.
pub fn replace_model(body: &[u8], span: Range<usize>, model: &str) -> Option<Vec<u8>> {
    let encoded = serde_json::to_string(model).ok()?;
    let mut out = Vec::with_capacity(body.len() + encoded.len());
    out.extend_from_slice(body.get(..span.start)?);
    out.extend_from_slice(encoded.as_bytes());
    out.extend_from_slice(body.get(span.end..)?);
    Some(out)
}

/// The 400 reply for a body that could not be read, in the caller's API shape.
pub fn body_error_reply(flavor: ApiFlavor, err: &BodyError) -> LocalReply {
    let (message, param) = match err {
        BodyError::Empty => (
            "The request body is empty: send a JSON object with a `model` field.".to_string(),
            None,
        ),
        BodyError::Syntax(detail) => (
            format!("The request body is not valid JSON ({detail})."),
            None,
        ),
        BodyError::NotAnObject => ("The request body must be a JSON object.".to_string(), None),
        BodyError::DuplicateModel => (
            "The request body has more than one `model` field; send exactly one.".to_string(),
            Some("model"),
        ),
        BodyError::DuplicateField(field) => (
            format!("The request body has more than one `{field}` field; send exactly one."),
            Some(*field),
        ),
        BodyError::ModelNotAString => (
            "`model` must be a string, e.g. \"gpt-4o-mini\".".to_string(),
            Some("model"),
        ),
    };
    error_reply(
        flavor,
        ErrorKind::InvalidRequest,
        &message,
        ErrorDetail { code: None, param },
    )
}

/// The 400 reply for a body without `model`.
pub fn missing_model_reply(flavor: ApiFlavor) -> LocalReply {
    error_reply(
        flavor,
        ErrorKind::InvalidRequest,
        "You must provide a model parameter: add `\"model\"` to the request body.",
        ErrorDetail {
            code: None,
            param: Some("model"),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_and_stream() {
        let body = br#"{"messages":[{"role":"user","content":"x","model":"inner"}],"model":"gpt-4o","stream":true}"#;
        let fields = read_fields(body).unwrap();
        assert_eq!(fields.model.as_deref(), Some("gpt-4o"));
        assert!(fields.stream);
        let span = fields.model_span.unwrap();
        assert_eq!(&body[span], br#""gpt-4o""#);
    }

    #[test]
    fn reads_the_output_limit_of_every_api() {
        let limit = |body: &str| read_fields(body.as_bytes()).map(|f| f.max_output_tokens);
        assert_eq!(limit(r#"{"model":"m","max_tokens":300}"#), Ok(Some(300)));
        assert_eq!(
            limit(r#"{"model":"m","max_completion_tokens":70}"#),
            Ok(Some(70))
        );
        assert_eq!(limit(r#"{"model":"m","max_output_tokens":9}"#), Ok(Some(9)));
        assert_eq!(
            limit(r#"{"model":"m","max_tokens":500,"max_completion_tokens":40}"#),
            Ok(Some(40)),
            "the provider stops at the smaller"
        );
        for none in [
            r#"{"model":"m"}"#,
            r#"{"model":"m","max_tokens":null}"#,
            r#"{"model":"m","max_tokens":"500"}"#,
            r#"{"model":"m","max_tokens":-1}"#,
            r#"{"model":"m","max_tokens":1.5}"#,
        ] {
            assert_eq!(limit(none), Ok(None), "{none}");
        }
        assert_eq!(
            limit(r#"{"model":"m","max_tokens":18446744073709551615}"#),
            Ok(Some(MAX_OUTPUT_TOKENS))
        );
        assert_eq!(
            limit(r#"{"model":"m","max_tokens":1,"max_tokens":100000}"#),
            Err(BodyError::DuplicateField("max_tokens"))
        );
    }

    #[test]
    fn escaped_model_is_unescaped_and_spanned_whole() {
        let body = br#"{"model":"gpt\u002d4o","stream":"true"}"#;
        let fields = read_fields(body).unwrap();
        assert_eq!(fields.model.as_deref(), Some("gpt-4o"));
        assert!(!fields.stream, "only the boolean true means streaming");
        assert_eq!(&body[fields.model_span.unwrap()], br#""gpt\u002d4o""#);
    }

    #[test]
    fn errors() {
        assert_eq!(read_fields(b""), Err(BodyError::Empty));
        assert_eq!(read_fields(b" \n"), Err(BodyError::Empty));
        assert!(matches!(
            read_fields(b"{\"model\":"),
            Err(BodyError::Syntax(_))
        ));
        assert!(matches!(read_fields(b"{nope}"), Err(BodyError::Syntax(_))));
        assert!(matches!(
            read_fields(b"{\"a\":1} trailing"),
            Err(BodyError::Syntax(_))
        ));
        // Invalid UTF-8 outside `model` too (found by fuzzing: serde skips ignored fields unchecked).
        assert_eq!(
            read_fields(b"{\"model\":\"m\",\"messages\":[{\"\xff\xffrole\":\"user\"}]}"),
            Err(BodyError::Syntax("invalid UTF-8 at byte 27".into()))
        );
        assert_eq!(read_fields(b"[1,2]"), Err(BodyError::NotAnObject));
        assert_eq!(read_fields(b"\"str\""), Err(BodyError::NotAnObject));
        assert_eq!(
            read_fields(br#"{"model":1}"#),
            Err(BodyError::ModelNotAString)
        );
        assert_eq!(
            read_fields(br#"{"model":["a"]}"#),
            Err(BodyError::ModelNotAString)
        );
        assert_eq!(
            read_fields(br#"{"model":"a","model":"b"}"#),
            Err(BodyError::DuplicateModel)
        );
        assert!(matches!(
            read_fields(b"\xff\xfe"),
            Err(BodyError::Syntax(_))
        ));
    }

    #[test]
    fn missing_or_null_model() {
        assert_eq!(read_fields(b"{}").unwrap().model, None);
        assert_eq!(read_fields(br#"{"model":null}"#).unwrap().model, None);
    }

    #[test]
    fn replace_keeps_everything_else_byte_for_byte() {
        let body = br#"{ "model" : "fast" ,"x":[1,2,{"model":"keep"}],"t":"\u00e9"}"#;
        let fields = read_fields(body).unwrap();
        let out = replace_model(body, fields.model_span.unwrap(), "gpt-4o-mini\"q").unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{ "model" : "gpt-4o-mini\"q" ,"x":[1,2,{"model":"keep"}],"t":"\u00e9"}"#
        );
        assert_eq!(
            read_fields(&out).unwrap().model.as_deref(),
            Some("gpt-4o-mini\"q")
        );
    }
}
