//! The caller's API shape: which API a request speaks, and errors written in that API's format.

use serde_json::json;

/// Which public API a request speaks, decided by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFlavor {
    /// OpenAI-compatible: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/models`, ...
    OpenAi,
    /// Anthropic Messages: `/v1/messages`.
    Anthropic,
}

impl ApiFlavor {
    pub fn from_path(path: &str) -> Self {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            ApiFlavor::Anthropic
        } else {
            ApiFlavor::OpenAi
        }
    }
}

/// What went wrong, independent of the API shape it is reported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    PermissionDenied,
    NotFound,
    RequestTooLarge,
    RateLimited,
    Internal,
    BadGateway,
    Unavailable,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::RequestTooLarge => 413,
            ErrorKind::RateLimited => 429,
            ErrorKind::Internal => 500,
            ErrorKind::BadGateway => 502,
            ErrorKind::Unavailable => 503,
        }
    }

    fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::NotFound | ErrorKind::RequestTooLarge => {
                "invalid_request_error"
            }
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Internal | ErrorKind::BadGateway | ErrorKind::Unavailable => "server_error",
        }
    }

    fn anthropic_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Internal | ErrorKind::BadGateway => "api_error",
            ErrorKind::Unavailable => "overloaded_error",
        }
    }
}

/// A complete local reply: what a filter sends instead of forwarding the request (errors, and answers
/// such as `GET /v1/models`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Details of an error beyond its kind and message.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorDetail<'a> {
    /// OpenAI `code`, e.g. `model_not_found`, `invalid_api_key`.
    pub code: Option<&'a str>,
    /// OpenAI `param`: the request field at fault, e.g. `model`.
    pub param: Option<&'a str>,
}

/// Builds an error reply in the caller's API shape: OpenAI `{"error":{message,type,param,code}}` or
/// Anthropic `{"type":"error","error":{type,message}}`.
pub fn error_reply(
    flavor: ApiFlavor,
    kind: ErrorKind,
    message: &str,
    detail: ErrorDetail<'_>,
) -> LocalReply {
    let body = match flavor {
        ApiFlavor::OpenAi => json!({
            "error": {
                "message": message,
                "type": kind.openai_type(),
                "param": detail.param,
                "code": detail.code,
            }
        }),
        ApiFlavor::Anthropic => json!({
            "type": "error",
            "error": { "type": kind.anthropic_type(), "message": message }
        }),
    };
    LocalReply {
        status: kind.status(),
        headers: vec![("content-type".to_string(), "application/json".to_string())],
        body: body.to_string(),
    }
}

/// What kind of request this is, from its method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// A POST whose JSON body names a model.
    Inference(ApiFlavor),
    ListModels,
    GetModel(&'a str),
    /// Not the router's business: passes through untouched.
    Other,
}

pub fn classify<'a>(method: &str, path: &'a str) -> Endpoint<'a> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    match method {
        "POST" => match path {
            "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" | "/v1/responses" => {
                Endpoint::Inference(ApiFlavor::OpenAi)
            }
            "/v1/messages" | "/v1/messages/count_tokens" => {
                Endpoint::Inference(ApiFlavor::Anthropic)
            }
            _ => Endpoint::Other,
        },
        "GET" => match path.strip_prefix("/v1/models") {
            Some("") | Some("/") => Endpoint::ListModels,
            Some(rest) => match rest.strip_prefix('/') {
                Some(id) if !id.is_empty() => Endpoint::GetModel(id),
                _ => Endpoint::Other,
            },
            None => Endpoint::Other,
        },
        _ => Endpoint::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn flavor_follows_the_path() {
        for (path, flavor) in [
            ("/v1/messages", ApiFlavor::Anthropic),
            ("/v1/messages?beta=true", ApiFlavor::Anthropic),
            ("/v1/messages/count_tokens", ApiFlavor::Anthropic),
            ("/v1/messagesx", ApiFlavor::OpenAi),
            ("/v1/chat/completions", ApiFlavor::OpenAi),
            ("/v1/embeddings", ApiFlavor::OpenAi),
            ("", ApiFlavor::OpenAi),
        ] {
            assert_eq!(ApiFlavor::from_path(path), flavor, "{path}");
        }
    }

    #[test]
    fn openai_shape() {
        let reply = error_reply(
            ApiFlavor::OpenAi,
            ErrorKind::NotFound,
            "The model `x` does not exist.",
            ErrorDetail {
                code: Some("model_not_found"),
                param: Some("model"),
            },
        );
        assert_eq!(reply.status, 404);
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["error"]["message"], "The model `x` does not exist.");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "model_not_found");
        assert_eq!(body["error"]["param"], "model");
    }

    #[test]
    fn openai_shape_has_null_code_and_param_when_absent() {
        let reply = error_reply(
            ApiFlavor::OpenAi,
            ErrorKind::Unavailable,
            "busy",
            ErrorDetail::default(),
        );
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        assert!(body["error"]["code"].is_null());
        assert!(body["error"]["param"].is_null());
        assert_eq!(reply.status, 503);
    }

    #[test]
    fn anthropic_shape() {
        let reply = error_reply(
            ApiFlavor::Anthropic,
            ErrorKind::RateLimited,
            "slow down",
            ErrorDetail::default(),
        );
        assert_eq!(reply.status, 429);
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["message"], "slow down");
    }

    #[test]
    fn every_kind_has_a_distinct_status() {
        let kinds = [
            ErrorKind::InvalidRequest,
            ErrorKind::Authentication,
            ErrorKind::PermissionDenied,
            ErrorKind::NotFound,
            ErrorKind::RequestTooLarge,
            ErrorKind::RateLimited,
            ErrorKind::Internal,
            ErrorKind::BadGateway,
            ErrorKind::Unavailable,
        ];
        let mut statuses: Vec<u16> = kinds.iter().map(|k| k.status()).collect();
        statuses.sort_unstable();
        statuses.dedup();
        assert_eq!(statuses.len(), kinds.len());
    }
}
