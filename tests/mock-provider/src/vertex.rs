//! Google Vertex AI: a service account's OAuth 2.0 token endpoint (the JWT-bearer grant, checked as
//! Google checks it) and the publisher model routes that take its access tokens:
//! `POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent` (and
//! `:streamGenerateContent?alt=sse`), answered by the Gemini mock, and
//! `.../publishers/anthropic/models/{m}:rawPredict` (and `:streamRawPredict`), answered by the
//! Anthropic Messages mock with Vertex's request rules (`anthropic_version` in the body, no `model`).

use crate::openai::Call;
use crate::reply::{self, Api, Body};
use crate::{anthropic, gemini};
use base64::Engine;
use hyper::Response;
use rand::rngs::OsRng;
use rand::RngCore;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::sha2::Sha256;
use rsa::signature::Verifier;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The scope Vertex AI requires of an access token.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The value Vertex requires in an Anthropic request body.
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";
const GENERATED_PROJECT: &str = "mock-project";
const GENERATED_EMAIL: &str = "llm-gateway@mock-project.iam.gserviceaccount.com";
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The audiences Google's token endpoint accepts: its own URLs, whatever the key file's
/// `token_uri` says (Google's auth libraries always sign `aud: https://oauth2.googleapis.com/token`,
/// and post to `token_uri`). The key's own `token_uri` is accepted too.
const GOOGLE_AUDIENCES: [&str; 3] = [
    GOOGLE_TOKEN_URI,
    "https://accounts.google.com/o/oauth2/token",
    "https://www.googleapis.com/oauth2/v4/token",
];
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How far `iat` may be from the server's clock.
const MAX_SKEW: u64 = 5 * 60;
/// The longest assertion Google accepts (`exp - iat`).
const MAX_ASSERTION_LIFETIME: u64 = 3600;
const TIME_MESSAGE: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values and use a clock with skew to account for clock differences between systems.";
pub const UNAUTHENTICATED: &str = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";

/// What the mock knows of its service account: enough to check the JWTs signed with its key.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    pub project_id: String,
    pub private_key_id: String,
    pub client_email: String,
    pub token_uri: String,
    pub public_key: RsaPublicKey,
}

impl ServiceAccount {
    /// The path the token endpoint is served on: that of the key's `token_uri` (`/token`).
    pub fn token_path(&self) -> &str {
        uri_path(&self.token_uri)
    }
}

fn uri_path(uri: &str) -> &str {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("/")
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buffer);
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh RSA-2048 key, as the key file Google issues for a service account (JSON text) and the
/// account it describes.
pub fn generate() -> Result<(String, ServiceAccount), String> {
    let private_key = RsaPrivateKey::new(&mut OsRng, 2048)
        .map_err(|err| format!("cannot generate an RSA key: {err}"))?;
    let pem = private_key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|err| format!("cannot encode the RSA key: {err}"))?;
    let private_key_id = random_hex(20);
    let client_id = format!("1{:020}", OsRng.next_u64());
    let key_file = json!({
        "type": "service_account",
        "project_id": GENERATED_PROJECT,
        "private_key_id": private_key_id,
        "private_key": pem.as_str(),
        "client_email": GENERATED_EMAIL,
        "client_id": client_id,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": GOOGLE_TOKEN_URI,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": format!(
            "https://www.googleapis.com/robot/v1/metadata/x509/{}",
            GENERATED_EMAIL.replace('@', "%40")
        ),
        "universe_domain": "googleapis.com",
    });
    let text = serde_json::to_string_pretty(&key_file)
        .map_err(|err| format!("cannot write the key file: {err}"))?;
    let account = ServiceAccount {
        project_id: GENERATED_PROJECT.to_string(),
        private_key_id,
        client_email: GENERATED_EMAIL.to_string(),
        token_uri: GOOGLE_TOKEN_URI.to_string(),
        public_key: RsaPublicKey::from(&private_key),
    };
    Ok((format!("{text}\n"), account))
}

/// The account of a service-account key file's text; its public key derived from `private_key`.
pub fn parse_key_file(text: &str) -> Result<ServiceAccount, String> {
    let file: Value =
        serde_json::from_str(text).map_err(|err| format!("not a JSON key file: {err}"))?;
    let field = |name: &str| {
        file.get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("the key file has no {name}"))
    };
    if field("type")? != "service_account" {
        return Err("the key file is not a service account's (type)".to_string());
    }
    let private_key = RsaPrivateKey::from_pkcs8_pem(&field("private_key")?)
        .map_err(|err| format!("private_key is not a PKCS#8 RSA key: {err}"))?;
    Ok(ServiceAccount {
        project_id: field("project_id")?,
        private_key_id: field("private_key_id")?,
        client_email: field("client_email")?,
        token_uri: field("token_uri").unwrap_or_else(|_| GOOGLE_TOKEN_URI.to_string()),
        public_key: RsaPublicKey::from(&private_key),
    })
}

/// Writes a fresh key file at `path` (readable by its owner only, as a secret should be).
pub fn generate_file(path: &str) -> Result<ServiceAccount, String> {
    use std::io::Write;
    let (text, account) = generate()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|err| format!("cannot write {path}: {err}"))?;
    Ok(account)
}

pub fn load_file(path: &str) -> Result<ServiceAccount, String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("cannot read {path}: {err}"))?;
    parse_key_file(&text).map_err(|err| format!("{path}: {err}"))
}

// ---------------------------------------------------------------------------------------------
// The token endpoint
// ---------------------------------------------------------------------------------------------

struct Issued {
    expires: SystemTime,
    cloud_platform: bool,
}

/// The access tokens this mock issued, with their expiry.
pub struct Tokens {
    lifetime: Duration,
    next: AtomicU64,
    issued: Mutex<HashMap<String, Issued>>,
}

impl Tokens {
    pub fn new(lifetime: Duration) -> Self {
        Tokens {
            lifetime,
            next: AtomicU64::new(1),
            issued: Mutex::new(HashMap::new()),
        }
    }

    fn issue(&self, cloud_platform: bool, now: SystemTime) -> String {
        let token = format!(
            "ya29.mock-{}-{}",
            self.next.fetch_add(1, Ordering::Relaxed),
            random_hex(16)
        );
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued.retain(|_, t| t.expires > now);
        issued.insert(
            token.clone(),
            Issued {
                expires: now + self.lifetime,
                cloud_platform,
            },
        );
        token
    }

    /// Checks `Authorization: Bearer TOKEN` as Google's front end does for Vertex AI.
    pub fn check(
        &self,
        authorization: Option<&str>,
        now: SystemTime,
    ) -> Result<(), Response<Body>> {
        let token = authorization.and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
        let issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        match token.and_then(|t| issued.get(t.trim())) {
            Some(t) if t.expires > now && t.cloud_platform => Ok(()),
            Some(t) if t.expires > now => Err(google_error(
                403,
                "Request had insufficient authentication scopes.",
            )),
            _ => Err(google_error(401, UNAUTHENTICATED)),
        }
    }
}

fn google_error(status: u16, message: &str) -> Response<Body> {
    reply::error(Api::Gemini, status, message)
}

/// Google's OAuth error: `{"error": CODE, "error_description": TEXT}`.
pub fn oauth_error(status: u16, error: &str, description: &str) -> Response<Body> {
    let mut response = reply::json(
        status,
        &json!({"error": error, "error_description": description}),
    );
    reply::set_header(
        &mut response,
        "cache-control",
        "no-cache, no-store, max-age=0, must-revalidate",
    );
    response
}

/// The OAuth error a test forces with `x-mock-status` on a token request.
pub fn forced_oauth_error(status: u16) -> Response<Body> {
    let error = match status {
        400 => "invalid_grant",
        401 => "invalid_client",
        403 => "access_denied",
        429 => "rate_limit_exceeded",
        503 => "temporarily_unavailable",
        500..=599 => "internal_failure",
        _ => "invalid_request",
    };
    oauth_error(
        status,
        error,
        &format!("mock error: status {status} requested by x-mock-status"),
    )
}

fn form_value(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(key)? == name)
            .then(|| form_decode(value))
            .flatten()
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn form_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn b64url(part: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()
}

fn invalid_grant(description: &str) -> Response<Body> {
    oauth_error(400, "invalid_grant", description)
}

/// `POST {token_uri path}`: trades a JWT signed with the service account's key for an access token.
pub fn token(
    account: &ServiceAccount,
    tokens: &Tokens,
    body: &[u8],
    now: SystemTime,
) -> Response<Body> {
    let body = String::from_utf8_lossy(body);
    let grant_type = form_value(&body, "grant_type");
    match grant_type.as_deref() {
        Some(JWT_BEARER) => {}
        Some(other) => {
            return oauth_error(
                400,
                "unsupported_grant_type",
                &format!("Invalid grant_type: {other}"),
            )
        }
        None => return oauth_error(400, "unsupported_grant_type", "Invalid grant_type: "),
    }
    let Some(assertion) = form_value(&body, "assertion").filter(|a| !a.is_empty()) else {
        return oauth_error(
            400,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    let mut parts = assertion.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return invalid_grant("Invalid JWT: Malformed JWT.");
    };
    let decoded = |part: &str| b64url(part).and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let (Some(header_json), Some(claims_json), Some(signature_bytes)) =
        (decoded(header), decoded(claims), b64url(signature))
    else {
        return invalid_grant("Invalid JWT: Malformed JWT.");
    };
    let text =
        |value: &Value, name: &str| value.get(name).and_then(Value::as_str).map(str::to_string);
    if text(&claims_json, "iss").as_deref() != Some(account.client_email.as_str()) {
        return invalid_grant("Invalid grant: account not found");
    }
    // Google picks the key by `kid`; an unknown key, another algorithm or a signature the key
    // did not make all fail the same way.
    let kid_ok = text(&header_json, "kid").is_none_or(|kid| kid == account.private_key_id);
    let alg_ok = text(&header_json, "alg").as_deref() == Some("RS256");
    let signed = format!("{header}.{claims}");
    let signature_ok = Signature::try_from(signature_bytes.as_slice())
        .ok()
        .is_some_and(|signature| {
            VerifyingKey::<Sha256>::new(account.public_key.clone())
                .verify(signed.as_bytes(), &signature)
                .is_ok()
        });
    if !(kid_ok && alg_ok && signature_ok) {
        return invalid_grant("Invalid JWT Signature.");
    }
    let right = |aud: &str| aud == account.token_uri || GOOGLE_AUDIENCES.contains(&aud);
    let audience_ok = match claims_json.get("aud") {
        Some(Value::String(aud)) => right(aud),
        Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(right),
        _ => false,
    };
    if !audience_ok {
        return invalid_grant(&format!(
            "Invalid JWT: Failed audience check. The right audience is {GOOGLE_TOKEN_URI}"
        ));
    }
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (Some(iat), Some(exp)) = (
        claims_json.get("iat").and_then(Value::as_u64),
        claims_json.get("exp").and_then(Value::as_u64),
    ) else {
        return invalid_grant(TIME_MESSAGE);
    };
    let timely = iat.abs_diff(now_secs) <= MAX_SKEW
        && exp > now_secs
        && exp > iat
        && exp - iat <= MAX_ASSERTION_LIFETIME;
    if !timely {
        return invalid_grant(TIME_MESSAGE);
    }
    let Some(scope) = text(&claims_json, "scope").filter(|s| !s.trim().is_empty()) else {
        return oauth_error(
            400,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        );
    };
    let cloud_platform = scope.split_whitespace().any(|s| s == CLOUD_PLATFORM);
    let access_token = tokens.issue(cloud_platform, now);
    let mut response = reply::json(
        200,
        &json!({
            "access_token": access_token,
            "expires_in": tokens.lifetime.as_secs(),
            "token_type": "Bearer",
        }),
    );
    reply::set_header(
        &mut response,
        "cache-control",
        "no-cache, no-store, max-age=0, must-revalidate",
    );
    response
}

// ---------------------------------------------------------------------------------------------
// Model routes
// ---------------------------------------------------------------------------------------------

/// A publisher model route: `/{v1|v1beta1}/projects/{p}/locations/{l}/publishers/{publisher}/models/{model}:{method}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub project: String,
    pub location: String,
    pub publisher: String,
    pub model: String,
    pub method: String,
}

pub fn route(path: &str) -> Option<Route> {
    let rest = path
        .strip_prefix("/v1/projects/")
        .or_else(|| path.strip_prefix("/v1beta1/projects/"))?;
    let mut segments = rest.split('/');
    let (Some(project), Some("locations"), Some(location), Some("publishers")) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return None;
    };
    let (Some(publisher), Some("models"), Some(model_method), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return None;
    };
    let (model, method) = model_method.rsplit_once(':')?;
    if publisher.is_empty() || model.is_empty() {
        return None;
    }
    Some(Route {
        project: project.to_string(),
        location: location.to_string(),
        publisher: publisher.to_string(),
        model: form_decode(&model.replace('+', "%2B"))?,
        method: method.to_string(),
    })
}

/// A service account works in its own project: another project's model answers 403, as Vertex
/// answers a caller without the `aiplatform.endpoints.predict` permission there.
pub fn check_project(account: &ServiceAccount, route: &Route) -> Result<(), Response<Body>> {
    if route.project == account.project_id {
        return Ok(());
    }
    Err(google_error(
        403,
        &format!(
            "Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/projects/{}/locations/{}/publishers/{}/models/{}' (or it may not exist).",
            route.project, route.location, route.publisher, route.model
        ),
    ))
}

/// Whether a path is under Vertex's project routes (for the error shape of what it answers).
pub fn is_vertex_path(path: &str) -> bool {
    path.starts_with("/v1/projects/") || path.starts_with("/v1beta1/projects/")
}

/// An Anthropic-shaped error as Vertex relays it (with a `req_vrtx_` request id).
fn anthropic_error(status: u16, message: &str) -> Response<Body> {
    let kind = match status {
        400 => "invalid_request_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    };
    reply::json(
        status,
        &json!({
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": format!("req_vrtx_{}", random_hex(12)),
        }),
    )
}

/// The error a forced status (`x-mock-status`, `--always-status`) gets on a Vertex route: Google's
/// front end answers authentication, permission, not-found and quota errors in its own shape; the
/// Anthropic publisher's other errors come from the model in Anthropic's.
pub fn forced_error(publisher: Option<&str>, status: u16, message: &str) -> Response<Body> {
    match (publisher, status) {
        (Some("anthropic"), 400 | 500 | 503 | 529) => anthropic_error(status, message),
        _ => google_error(status, message),
    }
}

/// The Gemini API mock behind `publishers/google`.
pub fn google(route: &Route, stream_sse: bool, body: &Value, call: &Call) -> Response<Body> {
    let stream = match route.method.as_str() {
        "generateContent" => false,
        "streamGenerateContent" if stream_sse => true,
        "streamGenerateContent" => return google_error(400, "this mock streams with alt=sse only"),
        other => return google_error(404, &format!("method {other} is not served")),
    };
    gemini::generate_content(&route.model, body, stream, call)
}

/// The Anthropic Messages mock behind `publishers/anthropic`, with Vertex's request rules.
pub fn anthropic(route: &Route, body: &Value, mut call: Call) -> Response<Body> {
    let streaming = match route.method.as_str() {
        "rawPredict" => false,
        "streamRawPredict" => true,
        other => {
            return google_error(
                404,
                &format!(
                    "Method {other} is not found for publisher model {}.",
                    route.model
                ),
            )
        }
    };
    match body.get("anthropic_version") {
        None => return anthropic_error(400, "anthropic_version: Field required"),
        Some(Value::String(v)) if v == ANTHROPIC_VERSION => {}
        Some(_) => {
            return anthropic_error(
                400,
                &format!("anthropic_version: Input should be '{ANTHROPIC_VERSION}'"),
            )
        }
    }
    if body.get("model").is_some() {
        return anthropic_error(400, "model: Extra inputs are not permitted");
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if streaming && !stream {
        return anthropic_error(
            400,
            "stream: streamRawPredict requires \"stream\": true in the request body",
        );
    }
    let mut request = body.clone();
    if let Some(object) = request.as_object_mut() {
        object.remove("anthropic_version");
        object.insert("model".to_string(), json!(route.model));
    }
    // Vertex's message ids read `msg_vrtx_...`.
    call.id = format!("vrtx_{}", call.id);
    anthropic::messages(&request, Some(ANTHROPIC_VERSION), &call)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rsa::pkcs1v15::SigningKey;
    use rsa::signature::{SignatureEncoding, Signer};
    use std::sync::OnceLock;

    /// One generated key file for all the tests (RSA key generation is slow in debug builds).
    pub fn key_file() -> &'static (String, ServiceAccount) {
        static KEY: OnceLock<(String, ServiceAccount)> = OnceLock::new();
        KEY.get_or_init(|| generate().unwrap())
    }

    pub fn private_key(text: &str) -> RsaPrivateKey {
        let file: Value = serde_json::from_str(text).unwrap();
        RsaPrivateKey::from_pkcs8_pem(file["private_key"].as_str().unwrap()).unwrap()
    }

    pub fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// A JWT signed with `key`, as Google's auth libraries make it.
    pub fn jwt(key: &RsaPrivateKey, kid: &str, claims: &Value) -> String {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        let input = format!(
            "{}.{}",
            engine.encode(header.to_string()),
            engine.encode(claims.to_string())
        );
        let signature = SigningKey::<Sha256>::new(key.clone()).sign(input.as_bytes());
        format!("{input}.{}", engine.encode(signature.to_bytes()))
    }

    pub fn claims(account: &ServiceAccount, iat: u64) -> Value {
        json!({
            "iss": account.client_email, "scope": CLOUD_PLATFORM,
            "aud": account.token_uri, "iat": iat, "exp": iat + 3600,
        })
    }

    pub fn form(assertion: &str) -> String {
        format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}")
    }

    async fn answer(response: Response<Body>) -> (u16, Value) {
        let status = response.status().as_u16();
        let body = reply::body_text(response).await;
        (status, serde_json::from_str(&body).unwrap())
    }

    #[test]
    fn key_file_is_googles_shape_and_parses_back() {
        let (text, account) = key_file();
        let file: Value = serde_json::from_str(text).unwrap();
        assert_eq!(file["type"], "service_account");
        assert_eq!(file["project_id"], "mock-project");
        assert_eq!(file["client_email"], GENERATED_EMAIL);
        assert_eq!(file["token_uri"], "https://oauth2.googleapis.com/token");
        let id = file["private_key_id"].as_str().unwrap();
        assert_eq!(id.len(), 40);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        let pem = file["private_key"].as_str().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.ends_with("-----END PRIVATE KEY-----\n"));
        let parsed = parse_key_file(text).unwrap();
        assert_eq!(parsed.public_key, account.public_key);
        assert_eq!(parsed.private_key_id, account.private_key_id);
        assert_eq!(parsed.token_path(), "/token");
        assert!(parse_key_file(r#"{"type":"authorized_user"}"#).is_err());
    }

    #[tokio::test]
    async fn token_endpoint_checks_the_jwt_as_google_does() {
        let (text, account) = key_file();
        let key = private_key(text);
        let tokens = Tokens::new(Duration::from_secs(3599));
        let at = SystemTime::now();
        let good = jwt(&key, &account.private_key_id, &claims(account, now()));
        let (status, body) = answer(token(account, &tokens, form(&good).as_bytes(), at)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3599);
        let access = body["access_token"].as_str().unwrap();
        assert!(access.starts_with("ya29.mock-1-"));
        let bearer = format!("Bearer {access}");
        assert!(tokens.check(Some(&bearer), at).is_ok());
        assert!(tokens
            .check(Some(&bearer), at + Duration::from_secs(3600))
            .is_err());
        assert!(tokens.check(Some("Bearer ya29.other"), at).is_err());
        assert!(tokens.check(None, at).is_err());

        // Tampered claims, a foreign key, another kid: Invalid JWT Signature.
        let (head, rest) = good.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut forged_claims = claims(account, now());
        forged_claims["scope"] = json!("https://www.googleapis.com/auth/everything");
        let tampered = format!(
            "{head}.{}.{signature}",
            engine.encode(forged_claims.to_string())
        );
        // A smaller key keeps the test fast; its signature fails all the same.
        let foreign = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        let refused = [
            tampered,
            jwt(&key, "0000", &claims(account, now())),
            jwt(&foreign, &account.private_key_id, &claims(account, now())),
        ];
        for assertion in refused {
            let (status, body) =
                answer(token(account, &tokens, form(&assertion).as_bytes(), at)).await;
            assert_eq!(status, 400);
            assert_eq!(
                body,
                json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
            );
        }

        // Times: a stale iat, an exp too far from iat, an expired assertion.
        let stale = jwt(
            &key,
            &account.private_key_id,
            &claims(account, now() - 3000),
        );
        let mut long = claims(account, now());
        long["exp"] = json!(now() + 7200);
        let long = jwt(&key, &account.private_key_id, &long);
        for assertion in [stale, long] {
            let (status, body) =
                answer(token(account, &tokens, form(&assertion).as_bytes(), at)).await;
            assert_eq!((status, &body["error"]), (400, &json!("invalid_grant")));
            assert_eq!(body["error_description"], TIME_MESSAGE);
        }

        // Another audience, an unknown issuer, no scope, another grant type.
        let mut other = claims(account, now());
        other["aud"] = json!("https://example.com/token");
        let other = jwt(&key, &account.private_key_id, &other);
        let (status, body) = answer(token(account, &tokens, form(&other).as_bytes(), at)).await;
        assert_eq!(status, 400);
        assert!(body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("Invalid JWT: Failed audience check."));
        let mut stranger = claims(account, now());
        stranger["iss"] = json!("someone@else.iam.gserviceaccount.com");
        let stranger = jwt(&key, &account.private_key_id, &stranger);
        let (status, body) = answer(token(account, &tokens, form(&stranger).as_bytes(), at)).await;
        assert_eq!((status, &body["error"]), (400, &json!("invalid_grant")));
        let mut unscoped = claims(account, now());
        unscoped.as_object_mut().unwrap().remove("scope");
        let unscoped = jwt(&key, &account.private_key_id, &unscoped);
        let (status, body) = answer(token(account, &tokens, form(&unscoped).as_bytes(), at)).await;
        assert_eq!((status, &body["error"]), (400, &json!("invalid_scope")));
        let (status, body) = answer(token(
            account,
            &tokens,
            b"grant_type=client_credentials&assertion=x",
            at,
        ))
        .await;
        assert_eq!(
            (status, &body["error"]),
            (400, &json!("unsupported_grant_type"))
        );

        // A token whose scope lacks cloud-platform is issued, but Vertex refuses it (403).
        let mut narrow = claims(account, now());
        narrow["scope"] = json!("https://www.googleapis.com/auth/devstorage.read_only");
        let narrow = jwt(&key, &account.private_key_id, &narrow);
        let (status, body) = answer(token(account, &tokens, form(&narrow).as_bytes(), at)).await;
        assert_eq!(status, 200);
        let bearer = format!("Bearer {}", body["access_token"].as_str().unwrap());
        let refused = tokens.check(Some(&bearer), at).unwrap_err();
        assert_eq!(refused.status(), 403);
    }

    #[test]
    fn routes() {
        let r = route("/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict").unwrap();
        assert_eq!(
            (r.publisher.as_str(), r.model.as_str(), r.method.as_str()),
            (
                "anthropic",
                "claude-sonnet-4-5@20250929",
                "streamRawPredict"
            )
        );
        let r = route("/v1/projects/p/locations/global/publishers/google/models/gemini-2.5-flash%40001:generateContent").unwrap();
        assert_eq!(r.model, "gemini-2.5-flash@001");
        assert!(route("/v1/projects/p/locations/l/publishers/google/models/m").is_none());
        assert!(route("/v1/projects/p/locations/l/endpoints/e:predict").is_none());
        assert!(route("/v1beta/models/m:generateContent").is_none());
    }

    #[tokio::test]
    async fn raw_predict_follows_vertex_rules() {
        let call = || Call {
            id: "v1".to_string(),
            ..Call::default()
        };
        let r = route("/v1/projects/p/locations/l/publishers/anthropic/models/claude-haiku-4-5@20251001:rawPredict").unwrap();
        let body = json!({
            "anthropic_version": ANTHROPIC_VERSION, "max_tokens": 50,
            "messages": [{"role": "user", "content": "hello vertex"}],
        });
        let (status, answer_body) = answer(anthropic(&r, &body, call())).await;
        assert_eq!(status, 200);
        assert_eq!(answer_body["model"], "claude-haiku-4-5@20251001");
        assert_eq!(answer_body["id"], "msg_vrtx_v1");
        assert_eq!(answer_body["content"][0]["text"], "hello vertex");

        let mut missing = body.clone();
        missing.as_object_mut().unwrap().remove("anthropic_version");
        let (status, refused) = answer(anthropic(&r, &missing, call())).await;
        assert_eq!(status, 400);
        assert_eq!(refused["type"], "error");
        assert_eq!(refused["error"]["type"], "invalid_request_error");
        assert_eq!(
            refused["error"]["message"],
            "anthropic_version: Field required"
        );
        let mut wrong = body.clone();
        wrong["anthropic_version"] = json!("2023-06-01");
        assert_eq!(anthropic(&r, &wrong, call()).status(), 400);
        let mut with_model = body.clone();
        with_model["model"] = json!("claude-haiku-4-5");
        let (status, refused) = answer(anthropic(&r, &with_model, call())).await;
        assert_eq!(status, 400);
        assert_eq!(
            refused["error"]["message"],
            "model: Extra inputs are not permitted"
        );

        let streaming =
            route("/v1/projects/p/locations/l/publishers/anthropic/models/c:streamRawPredict")
                .unwrap();
        assert_eq!(anthropic(&streaming, &body, call()).status(), 400);
        let mut stream_body = body.clone();
        stream_body["stream"] = json!(true);
        let response = anthropic(&streaming, &stream_body, call());
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let events = reply::body_text(response).await;
        assert!(events.starts_with("event: message_start\n"));
        assert!(events.contains(r#""model":"c""#));
        assert!(events
            .trim_end()
            .ends_with(r#"data: {"type":"message_stop"}"#));
    }
}
