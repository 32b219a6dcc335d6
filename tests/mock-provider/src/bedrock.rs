//! Amazon Bedrock Runtime: `POST /model/{modelId}/converse` and `/converse-stream`, checked the way
//! the real service checks: SigV4 signatures re-computed with AWS's own signer (or a Bedrock API key
//! as a bearer token), the Converse request's shape and conversation rules, errors in AWS's REST-JSON
//! shape (`x-amzn-errortype`, `{"message"}`), and ConverseStream answered as AWS event-stream binary
//! frames (AWS's own encoder).

use crate::openai::Call;
use crate::reply::{self, Body, BEDROCK_NAMESPACE, CORAL_NAMESPACE};
use crate::text;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use base64::Engine;
use hyper::{HeaderMap, Response};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

const MAX_STREAM_PIECES: usize = 64;
/// The SigV4 signing name of Bedrock Runtime (its endpoint prefix is `bedrock-runtime`).
const SERVICE: &str = "bedrock";
/// How far `x-amz-date` may be from the server's clock, as AWS allows.
const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

const TOP_LEVEL: [&str; 12] = [
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "promptVariables",
    "additionalModelResponseFieldPaths",
    "requestMetadata",
    "performanceConfig",
    "serviceTier",
    "outputConfig",
];
const CONTENT_BLOCKS: [&str; 14] = [
    "text",
    "image",
    "document",
    "video",
    "audio",
    "toolUse",
    "toolResult",
    "guardContent",
    "cachePoint",
    "reasoningContent",
    "citationsContent",
    "searchResult",
    "toolAddition",
    "toolRemoval",
];
const TOOL_RESULT_BLOCKS: [&str; 6] =
    ["json", "text", "image", "document", "video", "searchResult"];
const SYSTEM_BLOCKS: [&str; 3] = ["text", "guardContent", "cachePoint"];

/// An error Bedrock itself raises: `x-amzn-errortype: NAME:http://internal.amazon.com/coral/com.amazon.bedrock/`.
pub fn error(status: u16, exception: &str, message: &str) -> Response<Body> {
    reply::aws_error(
        status,
        exception,
        BEDROCK_NAMESPACE,
        &json!({ "message": message }),
    )
}

fn invalid(message: &str) -> Response<Body> {
    error(400, "ValidationException", message)
}

/// An error AWS's request framework raises before Bedrock sees the request (authentication).
fn framework_error(status: u16, exception: &str, body: Value) -> Response<Body> {
    reply::aws_error(status, exception, CORAL_NAMESPACE, &body)
}

/// `(modelId, operation)` for `/model/{modelId}/{operation}`, the model id percent-decoded.
pub fn route(path: &str) -> Option<(String, &str)> {
    let rest = path.strip_prefix("/model/")?;
    let (model, operation) = rest.rsplit_once('/')?;
    if model.is_empty() {
        return None;
    }
    Some((percent_decode(model)?, operation))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

/// `--aws-credentials ACCESS_KEY_ID:SECRET[:SESSION_TOKEN]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl AwsCredentials {
    pub fn parse(value: &str) -> Option<AwsCredentials> {
        let mut parts = value.splitn(3, ':');
        let access_key_id = parts.next().filter(|p| !p.is_empty())?.to_string();
        let secret_access_key = parts.next().filter(|p| !p.is_empty())?.to_string();
        let session_token = match parts.next() {
            Some("") => return None,
            other => other.map(str::to_string),
        };
        Some(AwsCredentials {
            access_key_id,
            secret_access_key,
            session_token,
        })
    }
}

/// What a Bedrock request must present: SigV4 with these credentials, or this API key as a bearer
/// token. With neither configured, every request passes.
pub struct AuthConfig<'a> {
    pub credentials: Option<&'a AwsCredentials>,
    pub region: &'a str,
    pub api_key: Option<&'a str>,
}

/// The request as received, for the signature check.
pub struct Received<'a> {
    pub method: &'a str,
    /// Path and query exactly as they arrived (still percent-encoded).
    pub path_and_query: &'a str,
    /// The request's authority when it has no `host` header (HTTP/2).
    pub authority: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

fn invalid_token() -> Response<Body> {
    framework_error(
        403,
        "UnrecognizedClientException",
        json!({"message": "The security token included in the request is invalid."}),
    )
}

fn invalid_signature(message: &str) -> Response<Body> {
    framework_error(
        403,
        "InvalidSignatureException",
        json!({ "message": message }),
    )
}

fn incomplete_signature(message: &str) -> Response<Body> {
    framework_error(
        403,
        "IncompleteSignatureException",
        json!({ "message": message }),
    )
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks a Bedrock request's credentials the way AWS does; `Err` is AWS's answer.
pub fn authenticate(
    config: &AuthConfig,
    request: &Received,
    now: SystemTime,
) -> Result<(), Response<Body>> {
    if config.credentials.is_none() && config.api_key.is_none() {
        return Ok(());
    }
    let Some(authorization) = header_str(request.headers, "authorization") else {
        // What Bedrock answers a request with neither a signature nor an API key.
        return Err(framework_error(
            403,
            "AccessDeniedException",
            json!({"Message": "Authorization header is missing"}),
        ));
    };
    if let Some(token) = authorization
        .strip_prefix("Bearer ")
        .or_else(|| authorization.strip_prefix("bearer "))
    {
        let valid = config
            .api_key
            .is_some_and(|key| bool::from(key.as_bytes().ct_eq(token.trim().as_bytes())));
        return if valid {
            Ok(())
        } else {
            Err(framework_error(
                403,
                "AccessDeniedException",
                json!({"Message": "Authentication failed: Please make sure your API Key is valid."}),
            ))
        };
    }
    let Some(fields) = authorization.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Err(incomplete_signature(&format!(
            "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization={authorization}"
        )));
    };
    let Some(credentials) = config.credentials else {
        return Err(invalid_token());
    };
    verify_sigv4(credentials, config.region, fields, request, now)
}

fn verify_sigv4(
    credentials: &AwsCredentials,
    region: &str,
    fields: &str,
    request: &Received,
    now: SystemTime,
) -> Result<(), Response<Body>> {
    let mut scope = None;
    let mut signed_headers = None;
    let mut signature = None;
    for field in fields.split(',').map(str::trim) {
        match field.split_once('=') {
            Some(("Credential", value)) => scope = Some(value),
            Some(("SignedHeaders", value)) => signed_headers = Some(value),
            Some(("Signature", value)) => signature = Some(value),
            _ => {}
        }
    }
    let mut missing = String::new();
    for (name, value) in [
        ("Credential", scope.is_none()),
        ("Signature", signature.is_none()),
        ("SignedHeaders", signed_headers.is_none()),
    ] {
        if value {
            missing.push_str(&format!(
                "Authorization header requires '{name}' parameter. "
            ));
        }
    }
    let (Some(scope), Some(signed_headers), Some(signature)) = (scope, signed_headers, signature)
    else {
        return Err(incomplete_signature(&format!(
            "{missing}Authorization=AWS4-HMAC-SHA256 {fields}"
        )));
    };
    let Some(amz_date) = header_str(request.headers, "x-amz-date") else {
        return Err(incomplete_signature(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        ));
    };
    let scope_parts: Vec<&str> = scope.split('/').collect();
    let [access_key_id, date, scope_region, service, terminator] = scope_parts.as_slice() else {
        return Err(incomplete_signature(&format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{scope}'"
        )));
    };
    if *access_key_id != credentials.access_key_id {
        return Err(invalid_token());
    }
    let presented_token = header_str(request.headers, "x-amz-security-token");
    let token_ok = match (&credentials.session_token, presented_token) {
        (Some(expected), Some(presented)) => {
            bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
        }
        (None, None) => true,
        _ => false,
    };
    if !token_ok {
        return Err(invalid_token());
    }
    let Some(signed_at) = parse_amz_date(amz_date) else {
        return Err(invalid_signature(&format!(
            "Date must be in ISO-8601 'basic format'. Got '{amz_date}'. See http://en.wikipedia.org/wiki/ISO_8601"
        )));
    };
    if amz_date.get(..8) != Some(*date) {
        return Err(invalid_signature(&format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{date}' != '{}', from 'X-Amz-Date'.",
            amz_date.get(..8).unwrap_or("")
        )));
    }
    if *scope_region != region {
        return Err(invalid_signature(&format!(
            "Credential should be scoped to a valid region, not '{scope_region}'. "
        )));
    }
    if *service != SERVICE {
        return Err(invalid_signature(&format!(
            "Credential should be scoped to correct service: '{SERVICE}'. "
        )));
    }
    if *terminator != "aws4_request" {
        return Err(invalid_signature(&format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'. "
        )));
    }
    if let Ok(behind) = now.duration_since(signed_at) {
        if behind > MAX_SKEW {
            return Err(invalid_signature(&format!(
                "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
                format_amz_date(now - MAX_SKEW),
                format_amz_date(now)
            )));
        }
    } else if let Ok(ahead) = signed_at.duration_since(now) {
        if ahead > MAX_SKEW {
            return Err(invalid_signature(&format!(
                "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
                format_amz_date(now + MAX_SKEW),
                format_amz_date(now)
            )));
        }
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") {
        return Err(invalid_signature(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    let expected = resign(
        credentials,
        region,
        &names,
        request,
        signed_at,
        names.contains(&"x-amz-security-token"),
    );
    match expected {
        Some(expected) if bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) => Ok(()),
        _ => Err(invalid_signature(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        )),
    }
}

/// The signature AWS's signer computes for the request with the known secret, over exactly the
/// headers the client named (the signer adds `x-amz-date` and `x-amz-security-token` itself).
fn resign(
    credentials: &AwsCredentials,
    region: &str,
    signed_headers: &[&str],
    request: &Received,
    time: SystemTime,
    sign_token: bool,
) -> Option<String> {
    use aws_sigv4::http_request::{
        sign, SessionTokenMode, SignableBody, SignableRequest, SigningSettings,
    };
    use aws_sigv4::sign::v4;

    let mut headers: Vec<(&str, &str)> = Vec::new();
    for name in signed_headers {
        if matches!(*name, "x-amz-date" | "x-amz-security-token") {
            continue;
        }
        for value in request.headers.get_all(*name) {
            headers.push((name, value.to_str().ok()?));
        }
    }
    let host = header_str(request.headers, "host")
        .or(request.authority)
        .unwrap_or("localhost");
    let uri = format!("http://{host}{}", request.path_and_query);
    let identity = aws_credential_types::Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.clone(),
        credentials.session_token.clone(),
        None,
        "mock-provider",
    )
    .into();
    let mut settings = SigningSettings::default();
    // Only the named headers are passed, so none is to be left out.
    settings.excluded_headers = None;
    if !sign_token {
        settings.session_token_mode = SessionTokenMode::Exclude;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(settings)
        .build()
        .ok()?
        .into();
    let signable = SignableRequest::new(
        request.method,
        uri,
        headers.into_iter(),
        SignableBody::Bytes(request.body),
    )
    .ok()?;
    let output = sign(signable, &params).ok()?;
    Some(output.signature().to_string())
}

/// `20240102T030405Z` as a time.
fn parse_amz_date(value: &str) -> Option<SystemTime> {
    if value.len() != 16 || !value.is_ascii() {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> { value.get(range)?.parse().ok() };
    if value.get(8..9) != Some("T") || value.get(15..16) != Some("Z") {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year as i64, month as i64, day as i64);
    let seconds = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

fn format_amz_date(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let rest = seconds.rem_euclid(86_400);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

// ---------------------------------------------------------------------------------------------
// Converse request checks
// ---------------------------------------------------------------------------------------------

/// What the answer needs from a valid request.
#[derive(Debug, Default)]
struct Conversation {
    prompt_tokens: u64,
    last_user: String,
    declared: Vec<String>,
    max_tokens: Option<u64>,
}

fn extraneous(key: &str, at: &str) -> Response<Body> {
    let place = if at.is_empty() {
        String::new()
    } else {
        format!(" at '{at}'")
    };
    invalid(&format!(
        "Malformed input request: extraneous key [{key}] is not permitted{place}, please reformat your input and try again."
    ))
}

/// The object at `at`, with no keys outside `allowed`.
fn object<'a>(
    value: &'a Value,
    at: &str,
    allowed: &[&str],
) -> Result<&'a serde_json::Map<String, Value>, Response<Body>> {
    let Some(map) = value.as_object() else {
        return Err(invalid(&format!(
            "Malformed input request: expected type: JSONObject, found: {} at '{at}', please reformat your input and try again.",
            json_type(value)
        )));
    };
    if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(extraneous(key, at));
    }
    Ok(map)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "Null",
        Value::Bool(_) => "Boolean",
        Value::Number(_) => "Number",
        Value::String(_) => "String",
        Value::Array(_) => "JSONArray",
        Value::Object(_) => "JSONObject",
    }
}

fn wrong_type(at: &str, expected: &str, value: &Value) -> Response<Body> {
    invalid(&format!(
        "Malformed input request: expected type: {expected}, found: {} at '{at}', please reformat your input and try again.",
        json_type(value)
    ))
}

fn string<'a>(
    map: &'a serde_json::Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<&'a str, Response<Body>> {
    match map.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(wrong_type(&format!("{at}.{key}"), "String", other)),
        None => Err(null_member(&format!("{at}.{key}"))),
    }
}

fn array<'a>(value: &'a Value, at: &str) -> Result<&'a Vec<Value>, Response<Body>> {
    value
        .as_array()
        .ok_or_else(|| wrong_type(at, "JSONArray", value))
}

fn null_member(at: &str) -> Response<Body> {
    invalid(&format!(
        "1 validation error detected: Value null at '{at}' failed to satisfy constraint: Member must not be null"
    ))
}

fn enum_member(at: &str, value: &str, allowed: &[&str]) -> Result<(), Response<Body>> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(invalid(&format!(
        "1 validation error detected: Value '{value}' at '{at}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
        allowed.join(", ")
    )))
}

/// The one member set in a union (`exactly one of`), which must be among `allowed`.
fn union_member<'a>(
    value: &'a Value,
    at: &str,
    allowed: &[&str],
) -> Result<(&'a str, &'a Value), Response<Body>> {
    let map = object(value, at, allowed)?;
    let mut members = map.iter();
    match (members.next(), members.next()) {
        (Some((name, inner)), None) => Ok((name, inner)),
        _ => Err(invalid(&format!(
            "Malformed input request: {at} must set exactly one of [{}], found {}, please reformat your input and try again.",
            allowed.join(", "),
            map.len()
        ))),
    }
}

fn base64_blob(value: &Value, at: &str) -> Result<(), Response<Body>> {
    let Value::String(text) = value else {
        return Err(wrong_type(at, "String", value));
    };
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(|_| ())
        .map_err(|_| {
            invalid(&format!(
                "Invalid base64 value at '{at}'. Provide base64-encoded bytes and try again."
            ))
        })
}

fn check_image(value: &Value, at: &str) -> Result<(), Response<Body>> {
    let map = object(value, at, &["format", "source", "error"])?;
    let format = string(map, "format", at)?;
    enum_member(
        &format!("{at}.format"),
        format,
        &["png", "jpeg", "gif", "webp"],
    )?;
    let source = map
        .get("source")
        .ok_or_else(|| null_member(&format!("{at}.source")))?;
    let at = format!("{at}.source");
    match union_member(source, &at, &["bytes", "s3Location"])? {
        ("bytes", bytes) => base64_blob(bytes, &format!("{at}.bytes")),
        (_, location) => object(
            location,
            &format!("{at}.s3Location"),
            &["uri", "bucketOwner"],
        )
        .map(|_| ()),
    }
}

fn check_document(value: &Value, at: &str) -> Result<(), Response<Body>> {
    let map = object(
        value,
        at,
        &["format", "name", "source", "context", "citations"],
    )?;
    if map.contains_key("format") {
        let format = string(map, "format", at)?;
        enum_member(
            &format!("{at}.format"),
            format,
            &[
                "pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md",
            ],
        )?;
    }
    string(map, "name", at)?;
    let source = map
        .get("source")
        .ok_or_else(|| null_member(&format!("{at}.source")))?;
    let at = format!("{at}.source");
    match union_member(source, &at, &["bytes", "s3Location", "text", "content"])? {
        ("bytes", bytes) => base64_blob(bytes, &format!("{at}.bytes")),
        ("text", Value::String(_)) => Ok(()),
        ("text", other) => Err(wrong_type(&format!("{at}.text"), "String", other)),
        ("content", content) => array(content, &format!("{at}.content")).map(|_| ()),
        (_, location) => object(
            location,
            &format!("{at}.s3Location"),
            &["uri", "bucketOwner"],
        )
        .map(|_| ()),
    }
}

/// The text a block contributes to the prompt (and to the echo).
fn tool_result_text(content: &[Value]) -> String {
    content
        .iter()
        .filter_map(|block| match block {
            Value::Object(map) => map
                .get("text")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| map.get("json").map(Value::to_string)),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_request(body: &Value) -> Result<Conversation, Response<Body>> {
    let top = object(body, "", &TOP_LEVEL)?;
    let mut conversation = Conversation::default();

    let mut uses_tools = false;
    let messages = match top.get("messages") {
        Some(messages) => array(messages, "messages")?,
        None => return Err(null_member("messages")),
    };
    if messages.is_empty() {
        return Err(invalid("A conversation must start with a user message. Try again with a conversation that starts with a user message."));
    }
    let mut previous_role = "";
    let mut open_tool_uses: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages.{i}");
        let map = object(message, &at, &["role", "content"])?;
        let role = string(map, "role", &at)?;
        enum_member(
            &format!("messages.{i}.member.role"),
            role,
            &["user", "assistant"],
        )?;
        if i == 0 && role != "user" {
            return Err(invalid("A conversation must start with a user message. Try again with a conversation that starts with a user message."));
        }
        if role == previous_role {
            return Err(invalid("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again."));
        }
        previous_role = role;
        let content = match map.get("content") {
            Some(Value::Array(content)) if !content.is_empty() => content,
            Some(Value::Array(_)) | None => {
                return Err(invalid(&format!("The content field in the Message object at {at} is empty. Add a ContentBlock object to the content field and try again.")))
            }
            Some(other) => return Err(wrong_type(&format!("{at}.content"), "JSONArray", other)),
        };
        let mut texts: Vec<String> = Vec::new();
        let mut tool_uses: Vec<String> = Vec::new();
        let mut answered = 0;
        for (j, block) in content.iter().enumerate() {
            let at = format!("{at}.content.{j}");
            let (kind, inner) = union_member(block, &at, &CONTENT_BLOCKS)?;
            let inner_at = format!("{at}.{kind}");
            match kind {
                "text" => {
                    let Value::String(text) = inner else {
                        return Err(wrong_type(&inner_at, "String", inner));
                    };
                    if text.trim().is_empty() {
                        return Err(invalid(&format!("The text field in the ContentBlock object at {at} is blank. Add text to the text field, and try again.")));
                    }
                    texts.push(text.clone());
                }
                "image" => check_image(inner, &inner_at)?,
                "document" => check_document(inner, &inner_at)?,
                "toolUse" => {
                    uses_tools = true;
                    if role != "assistant" {
                        return Err(invalid(&format!("A toolUse block can only be in an assistant message, found at {at}. Move it and try again.")));
                    }
                    let tool = object(inner, &inner_at, &["toolUseId", "name", "input", "type"])?;
                    let id = string(tool, "toolUseId", &inner_at)?;
                    string(tool, "name", &inner_at)?;
                    match tool.get("input") {
                        Some(input @ Value::Object(_)) => texts.push(input.to_string()),
                        Some(_) => return Err(invalid(&format!("The format of the value at {inner_at}.input is invalid. Provide a json object for the field and try again."))),
                        None => return Err(null_member(&format!("{inner_at}.input"))),
                    }
                    tool_uses.push(id.to_string());
                }
                "toolResult" => {
                    uses_tools = true;
                    if role != "user" {
                        return Err(invalid(&format!("A toolResult block can only be in a user message, found at {at}. Move it and try again.")));
                    }
                    let result = object(
                        inner,
                        &inner_at,
                        &["toolUseId", "content", "status", "type"],
                    )?;
                    let id = string(result, "toolUseId", &inner_at)?;
                    if !open_tool_uses.iter().any(|open| open == id) {
                        return Err(invalid(&format!("The toolUseId {id} at {inner_at} does not match any toolUse block in the previous assistant message. Each toolResult block must answer a toolUse block of the previous turn.")));
                    }
                    answered += 1;
                    let blocks = match result.get("content") {
                        Some(blocks) => array(blocks, &format!("{inner_at}.content"))?,
                        None => return Err(null_member(&format!("{inner_at}.content"))),
                    };
                    for (k, block) in blocks.iter().enumerate() {
                        let at = format!("{inner_at}.content.{k}");
                        match union_member(block, &at, &TOOL_RESULT_BLOCKS)? {
                            ("text", Value::String(_)) => {}
                            ("text", other) => return Err(wrong_type(&format!("{at}.text"), "String", other)),
                            ("json", Value::Object(_)) => {}
                            ("json", _) => return Err(invalid(&format!("The format of the value at {at}.json is invalid. Provide a json object for the field and try again."))),
                            ("image", image) => check_image(image, &format!("{at}.image"))?,
                            ("document", document) => check_document(document, &format!("{at}.document"))?,
                            _ => {}
                        }
                    }
                    if result.contains_key("status") {
                        enum_member(
                            &format!("{inner_at}.status"),
                            string(result, "status", &inner_at)?,
                            &["success", "error"],
                        )?;
                    }
                    texts.push(tool_result_text(blocks));
                }
                "reasoningContent" => {
                    match union_member(inner, &inner_at, &["reasoningText", "redactedContent"])? {
                        ("reasoningText", reasoning) => {
                            let reasoning_at = format!("{inner_at}.reasoningText");
                            let map = object(reasoning, &reasoning_at, &["text", "signature"])?;
                            string(map, "text", &reasoning_at)?;
                        }
                        (_, redacted) => {
                            base64_blob(redacted, &format!("{inner_at}.redactedContent"))?
                        }
                    }
                }
                "cachePoint" => {
                    let map = object(inner, &inner_at, &["type", "ttl"])?;
                    enum_member(
                        &format!("{inner_at}.type"),
                        string(map, "type", &inner_at)?,
                        &["default"],
                    )?;
                }
                // The other blocks (video, audio, guardContent, ...) pass unchecked.
                _ if inner.is_object() => {}
                _ => return Err(wrong_type(&inner_at, "JSONObject", inner)),
            }
        }
        if answered > open_tool_uses.len() {
            return Err(invalid(&format!("The number of toolResult blocks at {at}.content exceeds the number of toolUse blocks of previous turn.")));
        }
        let joined = texts.join("\n");
        conversation.prompt_tokens += text::tokens(&joined);
        if role == "user" {
            conversation.last_user = joined;
        }
        open_tool_uses = tool_uses;
    }

    if let Some(system) = top.get("system") {
        for (i, block) in array(system, "system")?.iter().enumerate() {
            let at = format!("system.{i}");
            match union_member(block, &at, &SYSTEM_BLOCKS)? {
                ("text", Value::String(text)) if !text.is_empty() => {
                    conversation.prompt_tokens += text::tokens(text);
                }
                ("text", Value::String(_)) => {
                    return Err(invalid(&format!("1 validation error detected: Value '' at '{at}.member.text' failed to satisfy constraint: Member must have length greater than or equal to 1")))
                }
                ("text", other) => return Err(wrong_type(&format!("{at}.text"), "String", other)),
                ("cachePoint", point) => {
                    let map = object(point, &format!("{at}.cachePoint"), &["type", "ttl"])?;
                    enum_member(&format!("{at}.cachePoint.type"), string(map, "type", &at)?, &["default"])?;
                }
                _ => {}
            }
        }
    }

    if let Some(config) = top.get("inferenceConfig") {
        let at = "inferenceConfig";
        let map = object(
            config,
            at,
            &["maxTokens", "temperature", "topP", "stopSequences"],
        )?;
        if let Some(max) = map.get("maxTokens") {
            match max.as_u64() {
                Some(n) if n >= 1 => conversation.max_tokens = Some(n),
                Some(_) | None if max.is_i64() || max.is_u64() => {
                    return Err(invalid(&format!("1 validation error detected: Value '{max}' at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must have value greater than or equal to 1")))
                }
                _ => return Err(wrong_type("inferenceConfig.maxTokens", "Integer", max)),
            }
        }
        for key in ["temperature", "topP"] {
            if let Some(value) = map.get(key) {
                match value.as_f64() {
                    Some(x) if (0.0..=1.0).contains(&x) => {}
                    Some(_) => return Err(invalid(&format!("1 validation error detected: Value '{value}' at 'inferenceConfig.{key}' failed to satisfy constraint: Member must have value less than or equal to 1 and greater than or equal to 0"))),
                    None => return Err(wrong_type(&format!("{at}.{key}"), "Number", value)),
                }
            }
        }
        if let Some(stops) = map.get("stopSequences") {
            for (i, stop) in array(stops, "inferenceConfig.stopSequences")?
                .iter()
                .enumerate()
            {
                match stop {
                    Value::String(s) if !s.is_empty() => {}
                    Value::String(_) => return Err(invalid(&format!("1 validation error detected: Value '' at 'inferenceConfig.stopSequences.{i}.member' failed to satisfy constraint: Member must have length greater than or equal to 1"))),
                    other => return Err(wrong_type(&format!("inferenceConfig.stopSequences.{i}"), "String", other)),
                }
            }
        }
    }

    match top.get("toolConfig") {
        Some(config) => {
            let at = "toolConfig";
            let map = object(config, at, &["tools", "toolChoice"])?;
            let tools = match map.get("tools") {
                Some(tools) => array(tools, "toolConfig.tools")?,
                None => return Err(null_member("toolConfig.tools")),
            };
            for (i, tool) in tools.iter().enumerate() {
                let at = format!("toolConfig.tools.{i}");
                match union_member(tool, &at, &["toolSpec", "systemTool", "cachePoint"])? {
                    ("toolSpec", spec) => {
                        let at = format!("{at}.toolSpec");
                        let spec = object(spec, &at, &["name", "description", "inputSchema", "strict"])?;
                        let name = string(spec, "name", &at)?;
                        if name.is_empty()
                            || name.len() > 64
                            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                        {
                            return Err(invalid(&format!("1 validation error detected: Value '{name}' at '{at}.name' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+")));
                        }
                        if spec.contains_key("description") && string(spec, "description", &at)?.is_empty() {
                            return Err(invalid(&format!("1 validation error detected: Value '' at '{at}.description' failed to satisfy constraint: Member must have length greater than or equal to 1")));
                        }
                        let schema = spec.get("inputSchema").ok_or_else(|| null_member(&format!("{at}.inputSchema")))?;
                        match union_member(schema, &format!("{at}.inputSchema"), &["json"])? {
                            (_, Value::Object(_)) => {}
                            _ => return Err(invalid(&format!("The format of the value at {at}.inputSchema.json is invalid. Provide a json object for the field and try again."))),
                        }
                        conversation.declared.push(name.to_string());
                    }
                    ("systemTool", system) => {
                        let map = object(system, &format!("{at}.systemTool"), &["name"])?;
                        string(map, "name", &format!("{at}.systemTool"))?;
                    }
                    (_, point) => {
                        object(point, &format!("{at}.cachePoint"), &["type", "ttl"])?;
                    }
                }
            }
            if let Some(choice) = map.get("toolChoice") {
                match union_member(choice, "toolConfig.toolChoice", &["auto", "any", "tool"])? {
                    ("tool", tool) => {
                        let map = object(tool, "toolConfig.toolChoice.tool", &["name"])?;
                        string(map, "name", "toolConfig.toolChoice.tool")?;
                    }
                    (kind, inner) => {
                        object(inner, &format!("toolConfig.toolChoice.{kind}"), &[])?;
                    }
                }
            }
        }
        None if uses_tools => {
            return Err(invalid("The toolConfig field must be defined when using toolUse and toolResult content blocks."))
        }
        None => {}
    }

    if let Some(fields) = top.get("additionalModelRequestFields") {
        if !fields.is_object() {
            return Err(invalid("The format of the value at additionalModelRequestFields is invalid. Provide a json object for the field and try again."));
        }
    }
    for key in [
        "guardrailConfig",
        "performanceConfig",
        "serviceTier",
        "outputConfig",
        "promptVariables",
        "requestMetadata",
    ] {
        if let Some(value) = top.get(key) {
            if !value.is_object() {
                return Err(wrong_type(key, "JSONObject", value));
            }
        }
    }
    if let Some(paths) = top.get("additionalModelResponseFieldPaths") {
        array(paths, "additionalModelResponseFieldPaths")?;
    }
    Ok(conversation)
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

/// A seed from the call id, so ids and padding are random-looking but reproducible.
fn seed(call: &Call) -> u64 {
    call.id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

fn random_text(state: &mut u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            let index = (reply::splitmix64(state) % ALPHABET.len() as u64) as usize;
            ALPHABET.get(index).copied().map(char::from).unwrap_or('a')
        })
        .collect()
}

/// The `p` padding AWS adds to every stream event so that sizes do not leak the content: a prefix
/// of the alphabet of varying length.
fn padding(state: &mut u64) -> String {
    let len = 1 + (reply::splitmix64(state) % (ALPHABET.len() as u64 - 1)) as usize;
    ALPHABET
        .get(..len)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default()
}

/// One AWS event-stream message of `:message-type` `event`.
fn event_frame(event_type: &str, payload: &Value) -> Vec<u8> {
    encode(
        Message::new(payload.to_string().into_bytes())
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String(event_type.to_string().into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ))
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            )),
    )
}

/// One AWS event-stream message of `:message-type` `exception`.
fn exception_frame(exception_type: &str, message: &str) -> Vec<u8> {
    encode(
        Message::new(json!({ "message": message }).to_string().into_bytes())
            .add_header(Header::new(
                ":exception-type",
                HeaderValue::String(exception_type.to_string().into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ))
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("exception".into()),
            )),
    )
}

fn encode(message: Message) -> Vec<u8> {
    let mut out = Vec::new();
    if aws_smithy_eventstream::frame::write_message_to(&message, &mut out).is_err() {
        out.clear();
    }
    out
}

/// `POST /model/{modelId}/converse` (`stream` false) or `/converse-stream` (true).
pub fn converse(
    _model: &str,
    body: &Value,
    stream: bool,
    call: &Call,
    latency_ms: u64,
) -> Response<Body> {
    let conversation = match check_request(body) {
        Ok(conversation) => conversation,
        Err(response) => return response,
    };
    let mut state = seed(call);
    let (prompt, tool) = match &call.reply {
        Some(reply) => (reply.clone(), None),
        None => {
            let tool = text::tool_request(&conversation.last_user, &conversation.declared);
            (conversation.last_user.clone(), tool)
        }
    };
    let prompt_tokens = conversation.prompt_tokens;
    let cached = call.cached_tokens.min(prompt_tokens);
    // (content block, stop reason, output tokens, stream events for the block)
    let (block, stop_reason, output_tokens, block_events) = match tool {
        Some((name, rest)) => {
            let input = json!({ "text": rest });
            let tool_use_id = format!("tooluse_{}", random_text(&mut state, 22));
            let tokens = text::tokens(&input.to_string()) + text::tokens(&name);
            let mut events = vec![(
                "contentBlockStart",
                json!({"contentBlockIndex": 0, "p": padding(&mut state), "start": {"toolUse": {"name": name, "toolUseId": tool_use_id}}}),
            )];
            for piece in text::split_even(&input.to_string(), 3) {
                events.push((
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}, "p": padding(&mut state)}),
                ));
            }
            let block =
                json!({"toolUse": {"toolUseId": tool_use_id, "name": name, "input": input}});
            (block, "tool_use", tokens, events)
        }
        None => {
            let (reply_text, cut) = text::truncate_to_tokens(&prompt, conversation.max_tokens);
            let events = text::stream_pieces(&reply_text, MAX_STREAM_PIECES)
                .into_iter()
                .map(|piece| {
                    (
                        "contentBlockDelta",
                        json!({"contentBlockIndex": 0, "delta": {"text": piece}, "p": padding(&mut state)}),
                    )
                })
                .collect();
            let tokens = text::tokens(&reply_text);
            (
                json!({ "text": reply_text }),
                if cut { "max_tokens" } else { "end_turn" },
                tokens,
                events,
            )
        }
    };
    let mut usage = json!({
        "inputTokens": prompt_tokens - cached,
        "outputTokens": output_tokens,
        "totalTokens": prompt_tokens + output_tokens,
    });
    if cached > 0 {
        usage["cacheReadInputTokens"] = json!(cached);
        usage["cacheWriteInputTokens"] = json!(0);
    }
    let metrics = json!({ "latencyMs": latency_ms });
    let request_id = reply::aws_request_id();
    if !stream {
        let mut answer = json!({
            "metrics": metrics,
            "output": {"message": {"content": [block], "role": "assistant"}},
            "stopReason": stop_reason,
        });
        if !call.no_usage {
            answer["usage"] = usage;
        }
        let mut response = reply::json(200, &answer);
        reply::set_header(&mut response, "x-amzn-requestid", &request_id);
        return response;
    }
    let mut events = vec![event_frame(
        "messageStart",
        &json!({"p": padding(&mut state), "role": "assistant"}),
    )];
    for (event_type, payload) in block_events {
        events.push(event_frame(event_type, &payload));
    }
    events.push(event_frame(
        "contentBlockStop",
        &json!({"contentBlockIndex": 0, "p": padding(&mut state)}),
    ));
    events.push(event_frame(
        "messageStop",
        &json!({"p": padding(&mut state), "stopReason": stop_reason}),
    ));
    let mut metadata = json!({"metrics": metrics, "p": padding(&mut state)});
    if !call.no_usage {
        metadata["usage"] = usage;
    }
    events.push(event_frame("metadata", &metadata));
    let error_frame = exception_frame(
        "throttlingException",
        "Too many tokens, please wait before trying again.",
    );
    let mut response = reply::stream(
        events,
        error_frame,
        call.faults,
        "application/vnd.amazon.eventstream",
    );
    reply::set_header(&mut response, "x-amzn-requestid", &request_id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
    use bytes::Buf;

    fn call() -> Call {
        Call {
            id: "b1".to_string(),
            ..Call::default()
        }
    }

    async fn answer(body: Value) -> (u16, Value) {
        let response = converse("m", &body, false, &call(), 7);
        let status = response.status().as_u16();
        let text = reply::body_text(response).await;
        (status, serde_json::from_str(&text).unwrap())
    }

    /// Every frame decoded with AWS's decoder (which checks both CRCs): (headers, payload).
    fn decode(mut bytes: bytes::Bytes) -> Vec<(Vec<(String, String)>, Value)> {
        let mut decoder = MessageFrameDecoder::new();
        let mut out = Vec::new();
        while bytes.has_remaining() {
            match decoder.decode_frame(&mut bytes).unwrap() {
                DecodedFrame::Complete(message) => {
                    let headers = message
                        .headers()
                        .iter()
                        .map(|h| {
                            (
                                h.name().as_str().to_string(),
                                h.value().as_string().unwrap().as_str().to_string(),
                            )
                        })
                        .collect();
                    out.push((headers, serde_json::from_slice(message.payload()).unwrap()));
                }
                DecodedFrame::Incomplete => panic!("truncated frame"),
            }
        }
        out
    }

    fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap()
    }

    #[test]
    fn routes_decode_the_model_id() {
        assert_eq!(
            route("/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"),
            Some((
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0".to_string(),
                "converse"
            ))
        );
        assert_eq!(
            route("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/converse-stream"),
            Some(("arn:aws:bedrock:us-east-1:1:inference-profile/x".to_string(), "converse-stream"))
        );
        assert_eq!(route("/model//converse"), None);
        assert_eq!(route("/model/bad%zz/converse"), None);
        assert_eq!(route("/v1/messages"), None);
    }

    #[tokio::test]
    async fn answers_echo_tools_and_truncation() {
        let (status, body) = answer(json!({
            "messages": [{"role": "user", "content": [{"text": "hello there"}]}],
            "system": [{"text": "be brief"}],
        }))
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["output"]["message"]["role"], "assistant");
        assert_eq!(
            body["output"]["message"]["content"][0]["text"],
            "hello there"
        );
        assert_eq!(body["stopReason"], "end_turn");
        assert_eq!(
            body["usage"]["inputTokens"],
            text::tokens("hello there") + text::tokens("be brief")
        );
        assert_eq!(body["usage"]["outputTokens"], text::tokens("hello there"));
        assert_eq!(body["metrics"]["latencyMs"], 7);

        let (_, body) = answer(json!({
            "messages": [{"role": "user", "content": [{"text": "abcdefghijkl"}]}],
            "inferenceConfig": {"maxTokens": 2, "temperature": 0.5, "topP": 1, "stopSequences": ["x"]},
        }))
        .await;
        assert_eq!(body["output"]["message"]["content"][0]["text"], "abcdefgh");
        assert_eq!(body["stopReason"], "max_tokens");

        let tools = json!({"tools": [{"toolSpec": {"name": "weather", "inputSchema": {"json": {"type": "object"}}}}], "toolChoice": {"auto": {}}});
        let (status, body) = answer(json!({
            "messages": [{"role": "user", "content": [{"text": "!tool weather in Paris"}]}],
            "toolConfig": tools,
        }))
        .await;
        assert_eq!(status, 200);
        let tool_use = &body["output"]["message"]["content"][0]["toolUse"];
        assert_eq!(tool_use["name"], "weather");
        assert_eq!(tool_use["input"], json!({"text": "weather in Paris"}));
        assert!(tool_use["toolUseId"]
            .as_str()
            .unwrap()
            .starts_with("tooluse_"));
        assert_eq!(body["stopReason"], "tool_use");

        // The tool's result comes back: the reply echoes it.
        let id = tool_use["toolUseId"].clone();
        let (status, body) = answer(json!({
            "messages": [
                {"role": "user", "content": [{"text": "!tool weather in Paris"}]},
                {"role": "assistant", "content": [{"toolUse": {"toolUseId": id, "name": "weather", "input": {"text": "weather in Paris"}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": id, "content": [{"text": "sunny"}, {"json": {"c": 21}}], "status": "success"}}]},
            ],
            "toolConfig": tools,
        }))
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["output"]["message"]["content"][0]["text"],
            "sunny\n{\"c\":21}"
        );

        let scripted = Call {
            reply: Some("scripted".into()),
            no_usage: true,
            ..call()
        };
        let response = converse(
            "m",
            &json!({"messages": [{"role": "user", "content": [{"text": "!tool x"}]}]}),
            false,
            &scripted,
            1,
        );
        let body: Value = serde_json::from_str(&reply::body_text(response).await).unwrap();
        assert_eq!(body["output"]["message"]["content"][0]["text"], "scripted");
        assert!(body.get("usage").is_none());
    }

    #[tokio::test]
    async fn refuses_what_bedrock_refuses() {
        let user = |text: &str| json!({"role": "user", "content": [{"text": text}]});
        let assistant = |text: &str| json!({"role": "assistant", "content": [{"text": text}]});
        let cases = [
            (json!({}), "Value null at 'messages'"),
            (json!({"messages": []}), "must start with a user message"),
            (json!({"messages": [assistant("a")]}), "must start with a user message"),
            (json!({"messages": [user("a"), user("b")]}), "must alternate"),
            (json!({"messages": [{"role": "system", "content": [{"text": "s"}]}]}), "enum value set: [user, assistant]"),
            (json!({"messages": [{"role": "user", "content": []}]}), "content field in the Message object at messages.0 is empty"),
            (json!({"messages": [{"role": "user", "content": [{"text": "a", "image": {}}]}]}), "exactly one of"),
            (json!({"messages": [{"role": "user", "content": [{"bogus": "a"}]}]}), "extraneous key [bogus]"),
            (json!({"messages": [user("a")], "modelId": "m"}), "extraneous key [modelId]"),
            (json!({"messages": [{"role": "user", "content": [{"text": " "}]}]}), "is blank"),
            (json!({"messages": [{"role": "user", "content": [{"image": {"format": "bmp", "source": {"bytes": "AA=="}}}]}]}), "[png, jpeg, gif, webp]"),
            (json!({"messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": "***"}}}]}]}), "base64"),
            (
                json!({"messages": [user("a"), {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]}, {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "r"}]}}]}]}),
                "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
            ),
            (
                json!({"messages": [user("a"), assistant("b"), {"role": "user", "content": [{"toolResult": {"toolUseId": "t9", "content": [{"text": "r"}]}}]}], "toolConfig": {"tools": []}}),
                "does not match any toolUse",
            ),
            (json!({"messages": [user("a")], "inferenceConfig": {"maxTokens": 0}}), "greater than or equal to 1"),
            (json!({"messages": [user("a")], "inferenceConfig": {"temperature": 2}}), "less than or equal to 1"),
            (json!({"messages": [user("a")], "inferenceConfig": {"max_tokens": 2}}), "extraneous key [max_tokens]"),
            (json!({"messages": [user("a")], "system": [{"text": ""}]}), "length greater than or equal to 1"),
            (json!({"messages": [user("a")], "toolConfig": {"tools": [{"toolSpec": {"name": "bad name", "inputSchema": {"json": {}}}}]}}), "regular expression"),
            (json!({"messages": [user("a")], "toolConfig": {"tools": [{"toolSpec": {"name": "f"}}]}}), "toolConfig.tools.0.toolSpec.inputSchema"),
            (json!({"messages": [user("a")], "toolConfig": {"tools": [], "toolChoice": {"auto": {}, "any": {}}}}), "exactly one of"),
        ];
        for (request, expected) in cases {
            let response = converse("m", &request, false, &call(), 0);
            assert_eq!(response.status(), 400, "{request}");
            let kind = response.headers()["x-amzn-errortype"]
                .to_str()
                .unwrap()
                .to_string();
            assert_eq!(kind, format!("ValidationException:{BEDROCK_NAMESPACE}"));
            assert!(response.headers().contains_key("x-amzn-requestid"));
            let body: Value = serde_json::from_str(&reply::body_text(response).await).unwrap();
            let message = body["message"].as_str().unwrap();
            assert!(message.contains(expected), "{request}: {message}");
        }
    }

    #[tokio::test]
    async fn streams_event_stream_frames() {
        let request =
            json!({"messages": [{"role": "user", "content": [{"text": "one two three"}]}]});
        let response = converse("m", &request, true, &call(), 3);
        assert_eq!(
            response.headers()["content-type"],
            "application/vnd.amazon.eventstream"
        );
        let events = decode(reply::body_bytes(response).await);
        let types: Vec<&str> = events
            .iter()
            .map(|(h, _)| header_of(h, ":event-type"))
            .collect();
        assert_eq!(
            types,
            [
                "messageStart",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockStop",
                "messageStop",
                "metadata"
            ]
        );
        for (headers, payload) in &events {
            assert_eq!(header_of(headers, ":message-type"), "event");
            assert_eq!(header_of(headers, ":content-type"), "application/json");
            assert!(payload["p"].as_str().is_some_and(|p| !p.is_empty()));
        }
        let text: String = events
            .iter()
            .filter_map(|(_, p)| p.pointer("/delta/text").and_then(Value::as_str))
            .collect();
        assert_eq!(text, "one two three");
        assert_eq!(events[5].1["stopReason"], "end_turn");
        assert_eq!(
            events[6].1["usage"]["outputTokens"],
            text::tokens("one two three")
        );
        assert_eq!(events[6].1["metrics"]["latencyMs"], 3);

        // A tool call: contentBlockStart with the tool, its input in pieces of JSON text.
        let request = json!({
            "messages": [{"role": "user", "content": [{"text": "!tool:lookup x"}]}],
            "toolConfig": {"tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {}}}}]},
        });
        let events = decode(reply::body_bytes(converse("m", &request, true, &call(), 0)).await);
        assert_eq!(events[1].1["start"]["toolUse"]["name"], "lookup");
        let input: String = events
            .iter()
            .filter_map(|(_, p)| p.pointer("/delta/toolUse/input").and_then(Value::as_str))
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&input).unwrap(),
            json!({"text": "x"})
        );
        assert_eq!(events[events.len() - 2].1["stopReason"], "tool_use");

        // An exception after two events, frames re-cut into 7-byte chunks: still whole frames.
        let faulty = Call {
            faults: reply::StreamFaults {
                error_after: Some(2),
                ..Default::default()
            },
            ..call()
        };
        let request =
            json!({"messages": [{"role": "user", "content": [{"text": "one two three"}]}]});
        let events = decode(reply::body_bytes(converse("m", &request, true, &faulty, 0)).await);
        assert_eq!(events.len(), 3);
        assert_eq!(header_of(&events[2].0, ":message-type"), "exception");
        assert_eq!(
            header_of(&events[2].0, ":exception-type"),
            "throttlingException"
        );
        assert!(events[2].1["message"].is_string());
        let chunked = Call {
            faults: reply::StreamFaults {
                chunk_bytes: Some(7),
                ..Default::default()
            },
            ..call()
        };
        let events = decode(reply::body_bytes(converse("m", &request, true, &chunked, 0)).await);
        assert_eq!(events.len(), 7);
    }

    fn signed(
        credentials: &AwsCredentials,
        region: &str,
        service: &str,
        time: SystemTime,
        body: &[u8],
    ) -> HeaderMap {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let identity = aws_credential_types::Credentials::new(
            credentials.access_key_id.clone(),
            credentials.secret_access_key.clone(),
            credentials.session_token.clone(),
            None,
            "test",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers = [
            ("host", "bedrock-runtime.us-east-1.amazonaws.com"),
            ("content-type", "application/json"),
        ];
        let request = SignableRequest::new(
            "POST",
            format!("https://bedrock-runtime.us-east-1.amazonaws.com{PATH}"),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        let mut map = HeaderMap::new();
        for (name, value) in headers.into_iter().chain(instructions.headers()) {
            map.append(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    const PATH: &str = "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse";

    async fn check(
        config: &AuthConfig<'_>,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), (u16, String, String)> {
        let request = Received {
            method: "POST",
            path_and_query: PATH,
            authority: None,
            headers,
            body,
        };
        match authenticate(config, &request, now) {
            Ok(()) => Ok(()),
            Err(response) => {
                let status = response.status().as_u16();
                let kind = response.headers()["x-amzn-errortype"]
                    .to_str()
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap()
                    .to_string();
                let body: Value = serde_json::from_str(&reply::body_text(response).await).unwrap();
                let message = body
                    .get("message")
                    .or_else(|| body.get("Message"))
                    .and_then(Value::as_str)
                    .unwrap()
                    .to_string();
                Err((status, kind, message))
            }
        }
    }

    #[tokio::test]
    async fn sigv4_is_checked_as_aws_checks_it() {
        let credentials = AwsCredentials::parse("AKIDEXAMPLE:secret").unwrap();
        let config = AuthConfig {
            credentials: Some(&credentials),
            region: "us-east-1",
            api_key: Some("bk"),
        };
        let now = SystemTime::now();
        let body = br#"{"messages":[]}"#;
        let good = signed(&credentials, "us-east-1", "bedrock", now, body);
        assert_eq!(check(&config, &good, body, now).await, Ok(()));
        // The body is signed: another body does not pass.
        let (status, kind, _) = check(&config, &good, b"{}", now).await.unwrap_err();
        assert_eq!((status, kind.as_str()), (403, "InvalidSignatureException"));

        let wrong_secret = AwsCredentials {
            secret_access_key: "nope".into(),
            ..credentials.clone()
        };
        let headers = signed(&wrong_secret, "us-east-1", "bedrock", now, body);
        let (status, kind, message) = check(&config, &headers, body, now).await.unwrap_err();
        assert_eq!((status, kind.as_str()), (403, "InvalidSignatureException"));
        assert!(message.starts_with("The request signature we calculated does not match"));

        let unknown = AwsCredentials {
            access_key_id: "AKIDOTHER".into(),
            ..credentials.clone()
        };
        let headers = signed(&unknown, "us-east-1", "bedrock", now, body);
        let (_, kind, message) = check(&config, &headers, body, now).await.unwrap_err();
        assert_eq!(kind, "UnrecognizedClientException");
        assert_eq!(
            message,
            "The security token included in the request is invalid."
        );

        let stale = now - Duration::from_secs(600);
        let headers = signed(&credentials, "us-east-1", "bedrock", stale, body);
        let (_, kind, message) = check(&config, &headers, body, now).await.unwrap_err();
        assert_eq!(kind, "InvalidSignatureException");
        assert!(message.starts_with("Signature expired: "), "{message}");
        assert!(message.ends_with(" - 5 min.)"), "{message}");

        let headers = signed(&credentials, "us-west-2", "bedrock", now, body);
        let (_, kind, message) = check(&config, &headers, body, now).await.unwrap_err();
        assert_eq!(kind, "InvalidSignatureException");
        assert!(
            message.starts_with("Credential should be scoped to a valid region"),
            "{message}"
        );
        let headers = signed(&credentials, "us-east-1", "bedrock-runtime", now, body);
        let (_, _, message) = check(&config, &headers, body, now).await.unwrap_err();
        assert!(
            message.starts_with("Credential should be scoped to correct service"),
            "{message}"
        );

        // A session token: signed with it passes; without it, or another, is an unknown token.
        let temporary = AwsCredentials::parse("AKIDEXAMPLE:secret:token1").unwrap();
        let with_token = AuthConfig {
            credentials: Some(&temporary),
            region: "us-east-1",
            api_key: None,
        };
        let headers = signed(&temporary, "us-east-1", "bedrock", now, body);
        assert_eq!(check(&with_token, &headers, body, now).await, Ok(()));
        let (_, kind, _) = check(&with_token, &good, body, now).await.unwrap_err();
        assert_eq!(kind, "UnrecognizedClientException");
        let other_token = AwsCredentials {
            session_token: Some("token2".into()),
            ..temporary.clone()
        };
        let headers = signed(&other_token, "us-east-1", "bedrock", now, body);
        let (_, kind, _) = check(&with_token, &headers, body, now).await.unwrap_err();
        assert_eq!(kind, "UnrecognizedClientException");

        // Bedrock API keys, and no credentials at all.
        let mut bearer = HeaderMap::new();
        bearer.insert("authorization", "Bearer bk".parse().unwrap());
        assert_eq!(check(&config, &bearer, body, now).await, Ok(()));
        bearer.insert("authorization", "Bearer other".parse().unwrap());
        let (status, kind, message) = check(&config, &bearer, body, now).await.unwrap_err();
        assert_eq!((status, kind.as_str()), (403, "AccessDeniedException"));
        assert!(message.contains("API Key is valid"));
        let (status, _, message) = check(&config, &HeaderMap::new(), body, now)
            .await
            .unwrap_err();
        assert_eq!(
            (status, message.as_str()),
            (403, "Authorization header is missing")
        );
        let open = AuthConfig {
            credentials: None,
            region: "us-east-1",
            api_key: None,
        };
        assert_eq!(check(&open, &HeaderMap::new(), body, now).await, Ok(()));
    }

    #[test]
    fn amz_dates() {
        let time = parse_amz_date("20240229T235959Z").unwrap();
        assert_eq!(
            time.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_709_251_199
        );
        assert_eq!(format_amz_date(time), "20240229T235959Z");
        assert_eq!(parse_amz_date("2024-02-29T23:59:59Z"), None);
        assert_eq!(parse_amz_date("20241329T235959Z"), None);
    }

    #[test]
    fn credentials_option() {
        assert_eq!(
            AwsCredentials::parse("A:S:T"),
            Some(AwsCredentials {
                access_key_id: "A".into(),
                secret_access_key: "S".into(),
                session_token: Some("T".into())
            })
        );
        assert_eq!(AwsCredentials::parse("A:S").unwrap().session_token, None);
        assert_eq!(AwsCredentials::parse("A"), None);
        assert_eq!(AwsCredentials::parse("A::"), None);
    }
}
