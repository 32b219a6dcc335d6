//! Google Vertex AI: Gemini models at Vertex's paths (`generateContent`, the Gemini translation) and
//! Anthropic's Claude models (`rawPredict`, the Messages API with Vertex's version in the body),
//! with OAuth2 access tokens got from a service-account key: an RS256-signed JWT exchanged at the
//! key's token endpoint (Google's JWT-bearer grant), refreshed before it expires.

use crate::provider::Secret;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::{json, Map, Value};
use std::fmt;

/// The scope every Vertex AI call needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The `anthropic_version` Vertex AI's Claude models take in the body.
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";
/// Google's own token endpoint (a key file names its `token_uri`).
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Tokens are refreshed this long before they expire (or at half their lifetime, if shorter).
pub const REFRESH_MARGIN_SECS: u64 = 300;
/// The longest a failed refresh waits before the next try.
pub const MAX_RETRY_SECS: u64 = 60;
/// A JWT assertion is valid this long (Google accepts at most an hour).
const ASSERTION_SECS: u64 = 3600;
/// The smallest RSA key accepted (Google's are 2048 bits).
const MIN_KEY_BYTES: usize = 128;
/// The most of a token endpoint's error text kept for logs and 503s.
const MAX_ERROR_CHARS: usize = 200;

/// A service-account key, parsed once at configuration: never printed.
#[derive(Clone)]
pub struct ServiceAccount {
    client_email: String,
    key_id: Option<String>,
    token_uri: String,
    key: SigningKey<Sha256>,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceAccount({}, <key redacted>)", self.client_email)
    }
}

impl PartialEq for ServiceAccount {
    fn eq(&self, other: &Self) -> bool {
        self.client_email == other.client_email
            && self.key_id == other.key_id
            && self.token_uri == other.token_uri
    }
}

/// The token endpoint's address, from a key's `token_uri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEndpoint {
    pub authority: String,
    pub path: String,
}

impl ServiceAccount {
    /// A service-account key file's JSON (as Google issues them). Errors say what is wrong, never
    /// what the key holds.
    pub fn parse(json: &str) -> Result<ServiceAccount, String> {
        let value: Value = serde_json::from_str(json.trim())
            .map_err(|_| "is not a service-account key file (JSON)".to_string())?;
        let field = |name: &str| value.get(name).and_then(Value::as_str);
        if let Some(kind) = field("type").filter(|t| *t != "service_account") {
            return Err(format!(
                "is a `{kind}` credential, not a service-account key (`type: service_account`)"
            ));
        }
        let client_email = field("client_email")
            .filter(|e| e.contains('@'))
            .ok_or("has no `client_email`")?
            .to_string();
        let pem = field("private_key").ok_or("has no `private_key`")?;
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .map_err(|_| "has a `private_key` that is not a PKCS#8 RSA key".to_string())?;
        // Google issues 2048-bit keys; a tiny one could not even sign the JWT.
        if rsa::traits::PublicKeyParts::size(&key) < MIN_KEY_BYTES {
            return Err("has a `private_key` shorter than 1024 bits".into());
        }
        let token_uri = field("token_uri").unwrap_or(DEFAULT_TOKEN_URI).to_string();
        endpoint(&token_uri)?;
        Ok(ServiceAccount {
            client_email,
            key_id: field("private_key_id").map(str::to_string),
            token_uri,
            key: SigningKey::<Sha256>::new(key),
        })
    }

    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// Where tokens come from (the request goes through the provider's `token_cluster`).
    pub fn token_endpoint(&self) -> TokenEndpoint {
        // Checked when the key was parsed.
        endpoint(&self.token_uri).unwrap_or(TokenEndpoint {
            authority: "oauth2.googleapis.com".into(),
            path: "/token".into(),
        })
    }

    /// The JWT the token endpoint exchanges for an access token, issued at `now` (Unix seconds).
    pub fn assertion(&self, now: u64) -> Result<String, String> {
        let mut header = Map::new();
        header.insert("alg".into(), json!("RS256"));
        header.insert("typ".into(), json!("JWT"));
        if let Some(kid) = &self.key_id {
            header.insert("kid".into(), json!(kid));
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_SECS,
        });
        let signed = format!(
            "{}.{}",
            base64url(Value::Object(header).to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        // PKCS#1 v1.5 signatures are deterministic; the message is the gateway's own claims.
        let signature = self
            .key
            .try_sign(signed.as_bytes())
            .map_err(|_| "the service account's key could not sign the token request".to_string())?
            .to_vec();
        Ok(format!("{signed}.{}", base64url(&signature)))
    }

    /// The token request's form body (the JWT-bearer grant).
    pub fn token_request_body(&self, now: u64) -> Result<String, String> {
        Ok(format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
            self.assertion(now)?
        ))
    }

    /// The key's id (part of the shared token's key: another key is another token).
    pub fn key_id(&self) -> &str {
        self.key_id.as_deref().unwrap_or("")
    }
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `https://host[:port]/path` → its authority and path.
fn endpoint(uri: &str) -> Result<TokenEndpoint, String> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
        .ok_or("has a `token_uri` that is not an http(s) URL")?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err("has a `token_uri` without a host".into());
    }
    Ok(TokenEndpoint {
        authority: authority.to_string(),
        path: path.to_string(),
    })
}

/// An access token and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub value: Secret,
    /// Unix seconds.
    pub expires_at: u64,
    /// Its lifetime when issued, in seconds.
    pub lifetime: u64,
}

impl AccessToken {
    /// Whether it is time to get the next one: within [`REFRESH_MARGIN_SECS`] of expiry, or past
    /// half its lifetime when that is shorter.
    pub fn refresh_due(&self, now: u64) -> bool {
        let margin = REFRESH_MARGIN_SECS.min(self.lifetime / 2);
        now.saturating_add(margin) >= self.expires_at
    }

    /// Whether it may still be sent.
    pub fn valid(&self, now: u64) -> bool {
        now < self.expires_at
    }

    /// As kept in shared data (one token for every worker).
    pub fn to_shared(&self) -> Vec<u8> {
        json!({"token": self.value.expose(), "expires_at": self.expires_at, "lifetime": self.lifetime})
            .to_string()
            .into_bytes()
    }

    pub fn from_shared(bytes: &[u8]) -> Option<AccessToken> {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        Some(AccessToken {
            value: Secret::new(value.get("token")?.as_str()?),
            expires_at: value.get("expires_at")?.as_u64()?,
            lifetime: value.get("lifetime")?.as_u64()?,
        })
    }
}

/// The token endpoint's answer at `now`: the token, or why there is none (the endpoint's status
/// and OAuth error, never the body's other content).
pub fn token_answer(status: u16, body: &[u8], now: u64) -> Result<AccessToken, String> {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    if status != 200 {
        let reason = value
            .as_ref()
            .map(|v| {
                let error = v.get("error").and_then(Value::as_str).unwrap_or("");
                let description = v
                    .get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                format!("{error}: {description}")
            })
            .unwrap_or_default();
        let reason: String = reason.chars().take(MAX_ERROR_CHARS).collect();
        return Err(format!("the token endpoint answered {status} {reason}")
            .trim_end_matches([' ', ':'])
            .to_string());
    }
    let value = value.ok_or("the token endpoint's answer is not JSON")?;
    let token = value
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("the token endpoint's answer has no access_token")?;
    let lifetime = value
        .get("expires_in")
        .and_then(Value::as_u64)
        .filter(|l| *l > 0)
        .ok_or("the token endpoint's answer has no expires_in")?;
    Ok(AccessToken {
        value: Secret::new(token),
        expires_at: now.saturating_add(lifetime),
        lifetime,
    })
}

/// Seconds to wait after `failures` failed refreshes in a row: 1, 2, 4, ... up to a minute.
pub fn retry_after(failures: u32) -> u64 {
    1u64.checked_shl(failures.saturating_sub(1))
        .unwrap_or(MAX_RETRY_SECS)
        .min(MAX_RETRY_SECS)
}

/// Who serves a model on Vertex AI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publisher {
    Google,
    Anthropic,
}

/// Claude models are Anthropic's; everything else is taken as Google's (Gemini).
pub fn publisher(model: &str) -> Publisher {
    if model.starts_with("claude") {
        Publisher::Anthropic
    } else {
        Publisher::Google
    }
}

/// Vertex AI's host for a location (`global` has no regional prefix).
pub fn host(location: &str) -> String {
    if location == "global" {
        "aiplatform.googleapis.com".into()
    } else {
        format!("{location}-aiplatform.googleapis.com")
    }
}

/// `/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:{method}`.
pub fn path(project: &str, location: &str, model: &str, stream: bool) -> String {
    let model: String = model
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        .collect();
    let (publisher, method) = match (publisher(&model), stream) {
        (Publisher::Google, false) => ("google", "generateContent"),
        (Publisher::Google, true) => ("google", "streamGenerateContent?alt=sse"),
        (Publisher::Anthropic, false) => ("anthropic", "rawPredict"),
        (Publisher::Anthropic, true) => ("anthropic", "streamRawPredict"),
    };
    format!(
        "/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:{method}"
    )
}

/// A Messages request as Claude on Vertex AI takes it: the model in the path, not the body, and
/// Vertex's `anthropic_version` in the body. Also whether it streams (Vertex picks
/// `streamRawPredict` for it), read in the same parse.
pub fn messages_for_vertex(body: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let mut request = crate::anthropic::json_object(body)?;
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    request.remove("model");
    request.insert("anthropic_version".into(), json!(ANTHROPIC_VERSION));
    Ok((Value::Object(request).to_string().into_bytes(), stream))
}

/// Project ids and locations as Google spells them (they go into paths).
pub fn plain_segment(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A key file for tests (a 1024-bit key, made once per test run: generating one is slow).
#[cfg(test)]
pub(crate) fn test_key_file() -> String {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    use std::sync::OnceLock;
    static FILE: OnceLock<String> = OnceLock::new();
    FILE.get_or_init(|| {
        let mut rng = rand_core::OsRng;
        let key = rsa::RsaPrivateKey::new(&mut rng, 1024).unwrap_or_else(|_| unreachable!());
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .unwrap_or_default();
        json!({
            "type": "service_account", "project_id": "p", "private_key_id": "kid1",
            "private_key": pem, "client_email": "gw@p.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token"
        })
        .to_string()
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1v15::VerifyingKey;
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    use rsa::signature::Verifier;

    /// A key made for this test (small, for speed) in a key file as Google writes them.
    fn key_file() -> (String, rsa::RsaPrivateKey) {
        let mut rng = rand_core::OsRng;
        let key = rsa::RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let file = json!({
            "type": "service_account", "project_id": "p", "private_key_id": "kid1",
            "private_key": pem, "client_email": "gw@p.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token"
        });
        (file.to_string(), key)
    }

    fn decode(part: &str) -> Value {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn the_assertion_is_an_rs256_jwt_for_the_token_endpoint() {
        let (file, key) = key_file();
        let account = ServiceAccount::parse(&file).unwrap();
        let jwt = account.assertion(1_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            decode(parts[0]),
            json!({"alg": "RS256", "typ": "JWT", "kid": "kid1"})
        );
        assert_eq!(
            decode(parts[1]),
            json!({"iss": "gw@p.iam.gserviceaccount.com", "scope": SCOPE,
                   "aud": "https://oauth2.googleapis.com/token", "iat": 1000, "exp": 4600})
        );
        use base64::Engine;
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap();
        let verifying = VerifyingKey::<Sha256>::new(key.to_public_key());
        let signature = rsa::pkcs1v15::Signature::try_from(signature.as_slice()).unwrap();
        verifying
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .unwrap();
        assert!(account.token_request_body(1_000).unwrap().starts_with(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=ey"
        ));
        assert_eq!(
            account.token_endpoint(),
            TokenEndpoint {
                authority: "oauth2.googleapis.com".into(),
                path: "/token".into()
            }
        );
        let printed = format!("{account:?}");
        assert!(!printed.contains("PRIVATE"), "{printed}");
    }

    #[test]
    fn bad_key_files_say_what_is_wrong_without_their_content() {
        let (file, _) = key_file();
        let mut value: Value = serde_json::from_str(&file).unwrap();
        for (edit, expected) in [
            (json!({"type": "authorized_user"}), "authorized_user"),
            (json!({"client_email": null}), "client_email"),
            (
                json!({"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}),
                "PKCS#8",
            ),
            (json!({"token_uri": "ftp://x"}), "token_uri"),
        ] {
            let mut broken = value.clone();
            for (k, v) in edit.as_object().unwrap() {
                broken[k] = v.clone();
            }
            let error = ServiceAccount::parse(&broken.to_string()).unwrap_err();
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("BEGIN"), "{error}");
        }
        assert!(ServiceAccount::parse("not json").is_err());
        // A key too small to sign the JWT is refused at load, not when the first token is due.
        let small = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 512).unwrap();
        let mut tiny = value.clone();
        tiny["private_key"] = json!(small.to_pkcs8_pem(LineEnding::LF).unwrap().to_string());
        let error = ServiceAccount::parse(&tiny.to_string()).unwrap_err();
        assert!(error.contains("shorter than 1024 bits"), "{error}");
        value["token_uri"] = json!("http://127.0.0.1:9/oauth/token");
        let account = ServiceAccount::parse(&value.to_string()).unwrap();
        assert_eq!(account.token_endpoint().authority, "127.0.0.1:9");
        assert_eq!(account.token_endpoint().path, "/oauth/token");
    }

    #[test]
    fn tokens_are_read_refreshed_early_and_kept_in_shared_data() {
        let token = token_answer(
            200,
            br#"{"access_token":"ya29.abc","expires_in":3599,"token_type":"Bearer"}"#,
            100,
        )
        .unwrap();
        assert_eq!(token.expires_at, 3699);
        assert!(!token.refresh_due(100));
        assert!(!token.refresh_due(3398));
        assert!(token.refresh_due(3399));
        assert!(token.valid(3698) && !token.valid(3699));
        assert_eq!(AccessToken::from_shared(&token.to_shared()), Some(token));
        // A short-lived token is refreshed at half its life.
        let short = token_answer(200, br#"{"access_token":"t","expires_in":60}"#, 0).unwrap();
        assert!(!short.refresh_due(29) && short.refresh_due(30));

        let error = token_answer(
            400,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
            0,
        )
        .unwrap_err();
        assert_eq!(
            error,
            "the token endpoint answered 400 invalid_grant: Invalid JWT Signature."
        );
        assert_eq!(
            token_answer(503, b"<html>", 0).unwrap_err(),
            "the token endpoint answered 503"
        );
        assert!(token_answer(200, br#"{"expires_in":5}"#, 0).is_err());
        assert!(token_answer(200, br#"{"access_token":"t"}"#, 0).is_err());
        assert!(format!(
            "{:?}",
            token_answer(200, br#"{"access_token":"ya29.x","expires_in":5}"#, 0)
        )
        .contains("redacted"));
        assert_eq!(
            (
                retry_after(1),
                retry_after(2),
                retry_after(7),
                retry_after(40)
            ),
            (1, 2, 60, 60)
        );
    }

    #[test]
    fn paths_hosts_and_claude_bodies() {
        assert_eq!(
            path("my-proj", "us-central1", "gemini-2.5-flash", false),
            "/v1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            path("p", "us-east5", "claude-sonnet-4-5@20250929", true),
            "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict"
        );
        assert!(path("p", "l", "gemini-2.5-pro", true).ends_with(":streamGenerateContent?alt=sse"));
        assert!(path("p", "l", "../x?y", false).contains("/models/..xy:"));
        assert_eq!(host("us-central1"), "us-central1-aiplatform.googleapis.com");
        assert_eq!(host("global"), "aiplatform.googleapis.com");
        let (body, stream) = messages_for_vertex(
            br#"{"model":"claude-sonnet-4-5","max_tokens":5,"stream":true,"messages":[]}"#,
        )
        .unwrap();
        assert!(stream);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.get("model"), None);
        assert_eq!(body["anthropic_version"], ANTHROPIC_VERSION);
        assert!(!messages_for_vertex(br#"{"stream":"yes"}"#).unwrap().1);
        assert!(plain_segment("my-project-1") && !plain_segment("a/b") && !plain_segment(""));
    }
}
