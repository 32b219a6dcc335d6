//! mock-provider: a deterministic OpenAI-, Anthropic-, Gemini-, Bedrock- and Vertex AI-compatible
//! server for tests, the demo and benchmarks. See README.md for endpoints, rules and fault headers.

// `value["key"] = ...` only ever targets objects this crate just built with `json!({...})`, where
// IndexMut cannot panic; and handlers return a ready error response as their `Err`.
#![allow(clippy::indexing_slicing, clippy::result_large_err)]

mod anthropic;
mod bedrock;
mod gemini;
mod guard;
mod openai;
mod record;
mod reply;
mod text;
mod vertex;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use reply::{Api, Body, StreamFaults};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const USAGE: &str = "\
usage: mock-provider [options]
  --listen ADDR          address to bind (default 127.0.0.1:0; the bound address is printed)
  --name NAME            instance name, sent back in the x-mock-instance header (default: mock)
  --api openai|anthropic|gemini|bedrock|vertex|both|all
                         which API this instance serves: both is OpenAI and Anthropic (default:
                         all five)
  --always-status CODE   answer every API request with this status (an always-failing provider)
  --require-key KEY      answer 401 unless Authorization: Bearer KEY, x-api-key or api-key carries KEY
                         (Gemini paths: x-goog-api-key or ?key=, else 403 when absent, 400 when wrong;
                         Bedrock paths: Authorization: Bearer KEY, a Bedrock API key)
  --aws-credentials ACCESS_KEY_ID:SECRET[:SESSION_TOKEN]
                         Bedrock paths require a SigV4 signature with these credentials (or the
                         --require-key bearer key), checked as AWS checks it
  --aws-region REGION    the region Bedrock signatures must be scoped to (default us-east-1)
  --vertex-generate-service-account FILE
                         write a fresh Google service-account key (RSA-2048) to FILE at startup; its
                         token endpoint (POST /token) then issues the access tokens Vertex paths need
  --vertex-service-account FILE
                         the same with an existing service-account key file
  --vertex-token-lifetime SECS
                         expires_in of the access tokens issued (default 3599)
  --models a,b,c         model ids listed by GET /v1/models
  --max-recorded N       requests kept for GET /mock/requests (default 1000)";

#[derive(Debug, Clone)]
struct Options {
    listen: SocketAddr,
    name: String,
    openai: bool,
    anthropic: bool,
    gemini: bool,
    bedrock: bool,
    vertex: bool,
    always_status: Option<u16>,
    require_key: Option<String>,
    aws_credentials: Option<bedrock::AwsCredentials>,
    aws_region: String,
    vertex_key: Option<VertexKey>,
    vertex_token_lifetime: u64,
    models: Vec<String>,
    max_recorded: usize,
}

/// Where the Vertex service account comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum VertexKey {
    /// `--vertex-generate-service-account FILE`: a fresh key written to FILE.
    Generate(String),
    /// `--vertex-service-account FILE`: an existing key file.
    Load(String),
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        name: "mock".to_string(),
        openai: true,
        anthropic: true,
        gemini: true,
        bedrock: true,
        vertex: true,
        always_status: None,
        require_key: None,
        aws_credentials: None,
        aws_region: "us-east-1".to_string(),
        vertex_key: None,
        vertex_token_lifetime: 3599,
        models: [
            "gpt-4o-mini",
            "gpt-4o",
            "text-embedding-3-small",
            "claude-sonnet-4-5",
        ]
        .map(String::from)
        .to_vec(),
        max_recorded: 1000,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => {
                options.listen = value
                    .parse()
                    .map_err(|_| format!("--listen: not an address: {value}"))?
            }
            "--name" => options.name = value.clone(),
            "--api" => {
                (
                    options.openai,
                    options.anthropic,
                    options.gemini,
                    options.bedrock,
                    options.vertex,
                ) = match value.as_str() {
                    "openai" => (true, false, false, false, false),
                    "anthropic" => (false, true, false, false, false),
                    "gemini" => (false, false, true, false, false),
                    "bedrock" => (false, false, false, true, false),
                    "vertex" => (false, false, false, false, true),
                    "both" => (true, true, false, false, false),
                    "all" => (true, true, true, true, true),
                    _ => return Err(format!(
                        "--api: expected openai, anthropic, gemini, bedrock, vertex, both or all, got {value}"
                    )),
                }
            }
            "--always-status" => {
                options.always_status = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|code| (100..=999).contains(code))
                        .ok_or_else(|| format!("--always-status: not a status code: {value}"))?,
                )
            }
            "--require-key" => options.require_key = Some(value.clone()),
            "--aws-credentials" => {
                options.aws_credentials =
                    Some(bedrock::AwsCredentials::parse(value).ok_or_else(|| {
                        "--aws-credentials: expected ACCESS_KEY_ID:SECRET[:SESSION_TOKEN]"
                            .to_string()
                    })?)
            }
            "--aws-region" if value.is_empty() => return Err("--aws-region: empty".to_string()),
            "--aws-region" => options.aws_region = value.clone(),
            "--vertex-generate-service-account" | "--vertex-service-account"
                if options.vertex_key.is_some() =>
            {
                return Err(
                    "give one of --vertex-generate-service-account and --vertex-service-account"
                        .to_string(),
                )
            }
            "--vertex-generate-service-account" | "--vertex-service-account"
                if value.is_empty() =>
            {
                return Err(format!("{flag}: empty"))
            }
            "--vertex-generate-service-account" => {
                options.vertex_key = Some(VertexKey::Generate(value.clone()))
            }
            "--vertex-service-account" => options.vertex_key = Some(VertexKey::Load(value.clone())),
            "--vertex-token-lifetime" => {
                options.vertex_token_lifetime = value
                    .parse()
                    .ok()
                    .filter(|secs| *secs > 0)
                    .ok_or_else(|| format!("--vertex-token-lifetime: not a number of seconds: {value}"))?
            }
            "--models" => {
                options.models = value
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect()
            }
            "--max-recorded" => {
                options.max_recorded = value
                    .parse()
                    .map_err(|_| format!("--max-recorded: not a number: {value}"))?
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(options)
}

struct State {
    options: Options,
    log: record::RequestLog,
    next_id: AtomicU64,
    /// The service account whose JWTs `/token` accepts; without one, Vertex paths take any request.
    vertex_account: Option<vertex::ServiceAccount>,
    vertex_tokens: vertex::Tokens,
}

/// Makes or reads the Vertex service account the options name (before the mock says it is up, so
/// a generated key file is there when the harness reads it).
fn vertex_account(options: &Options) -> Result<Option<vertex::ServiceAccount>, String> {
    match &options.vertex_key {
        None => Ok(None),
        Some(VertexKey::Generate(path)) => vertex::generate_file(path).map(Some),
        Some(VertexKey::Load(path)) => vertex::load_file(path).map(Some),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_options(&args) {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("mock-provider: {message}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("mock-provider: cannot start runtime: {err}");
            std::process::exit(1);
        }
    };
    if let Err(err) = runtime.block_on(serve(options)) {
        eprintln!("mock-provider: {err}");
        std::process::exit(1);
    }
}

async fn serve(options: Options) -> std::io::Result<()> {
    let account = vertex_account(&options).map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let address = listener.local_addr()?;
    // The harness reads this line to learn the port; keep its shape.
    println!(
        "mock-provider {} listening on http://{address}",
        options.name
    );
    accept_loop(listener, options, account).await
}

/// Serves `listener` forever; apart from `serve` so the tests can run it on a port they bound.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    options: Options,
    vertex_account: Option<vertex::ServiceAccount>,
) -> std::io::Result<()> {
    let state = Arc::new(State {
        log: record::RequestLog::new(options.max_recorded),
        vertex_tokens: vertex::Tokens::new(Duration::from_secs(options.vertex_token_lifetime)),
        vertex_account,
        options,
        next_id: AtomicU64::new(1),
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                eprintln!("mock-provider: accept: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, std::convert::Infallible>(handle(&state, request).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn header<'a>(request: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

fn header_number(request: &Request<Incoming>, name: &str) -> Option<u64> {
    header(request, name).and_then(|v| v.trim().parse().ok())
}

fn presented_key(request: &Request<Incoming>) -> Option<&str> {
    header(request, "authorization")
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| header(request, "x-api-key"))
        .or_else(|| header(request, "api-key"))
}

/// Which API a path belongs to; Azure OpenAI deployment paths count as OpenAI, Vertex AI's as
/// Gemini (Google's error shape).
fn api_of(path: &str) -> Api {
    if path == "/v1/messages" {
        Api::Anthropic
    } else if path.starts_with("/v1beta/") || vertex::is_vertex_path(path) {
        Api::Gemini
    } else if path.starts_with("/model/") {
        Api::Bedrock
    } else {
        Api::OpenAi
    }
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<Body> {
    let started = std::time::Instant::now();
    let json_frames = header_number(&request, "x-mock-chunk-bytes")
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n > 0);
    let frame_delay = header_number(&request, "x-mock-chunk-delay-ms").map(Duration::from_millis);
    let encoding = header(&request, "accept-encoding").and_then(reply::negotiate_encoding);
    let mut response = respond(state, request).await;
    if let Some(encoding) = encoding {
        response = reply::compressed(response, encoding).await;
    }
    if let Some(size) = json_frames {
        response = reply::json_in_frames(response, size, frame_delay).await;
    }
    reply::set_header(&mut response, "x-mock-instance", &state.options.name);
    reply::set_header(
        &mut response,
        "x-mock-handled-us",
        &started.elapsed().as_micros().to_string(),
    );
    response
}

async fn respond(state: &State, request: Request<Incoming>) -> Response<Body> {
    let received = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());

    if path == "/mock/requests" {
        return match method {
            Method::GET => reply::json(200, &state.log.to_json()),
            Method::DELETE => {
                state.log.clear();
                reply::full(204, "text/plain", Bytes::new())
            }
            _ => reply::full(405, "text/plain", "GET or DELETE"),
        };
    }
    if path == "/healthz" {
        return reply::full(200, "text/plain", "ok");
    }

    let api = api_of(&path);
    let vertex_path = vertex::is_vertex_path(&path);
    let vertex_route = vertex::route(&path);
    let publisher = vertex_route.as_ref().map(|r| r.publisher.as_str());
    let token_path = state
        .vertex_account
        .as_ref()
        .filter(|_| state.options.vertex)
        .is_some_and(|account| path == account.token_path());
    let faults = StreamFaults {
        chunk_delay: header_number(&request, "x-mock-chunk-delay-ms").map(Duration::from_millis),
        error_after: header_number(&request, "x-mock-stream-error-after")
            .and_then(|n| usize::try_from(n).ok()),
        reset_after: header_number(&request, "x-mock-stream-reset-after")
            .and_then(|n| usize::try_from(n).ok()),
        chunk_bytes: header_number(&request, "x-mock-chunk-bytes")
            .and_then(|n| usize::try_from(n).ok()),
        comments: header(&request, "x-mock-sse-comments").is_some(),
    };
    let forced_status = header_number(&request, "x-mock-status")
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (100..=999).contains(s));
    let delay = header_number(&request, "x-mock-delay-ms").map(Duration::from_millis);
    // Gemini takes its key in x-goog-api-key (or ?key=), never as a bearer token.
    let gemini_key = header(&request, "x-goog-api-key")
        .map(str::to_string)
        .or_else(|| {
            request.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|pair| pair.strip_prefix("key="))
                    .map(str::to_string)
            })
        });
    let key_ok = match &state.options.require_key {
        None => true,
        // Bedrock checks its own credentials (SigV4 or a bearer API key) once the body is read;
        // Vertex takes the service account's access tokens (checked below), never a key.
        Some(_) if api == Api::Bedrock || vertex_path || token_path => true,
        Some(expected) if api == Api::Gemini => gemini_key.as_deref() == Some(expected.as_str()),
        Some(expected) => presented_key(&request) == Some(expected.as_str()),
    };
    let anthropic_version = header(&request, "anthropic-version").map(str::to_string);
    let authorization = header(&request, "authorization").map(str::to_string);
    let cached_tokens = header_number(&request, "x-mock-cached-tokens").unwrap_or(0);
    let no_usage = header(&request, "x-mock-no-usage").is_some();
    // Lossy rather than `to_str`, so a UTF-8 value (which HTTP carries as opaque bytes) still works.
    let reply_override = request
        .headers()
        .get("x-mock-reply")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());

    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return reply::error(api, 400, "could not read the request body"),
    };
    let bedrock_auth = if api == Api::Bedrock {
        let config = bedrock::AuthConfig {
            credentials: state.options.aws_credentials.as_ref(),
            region: &state.options.aws_region,
            api_key: state.options.require_key.as_deref(),
        };
        let received = bedrock::Received {
            method: parts.method.as_str(),
            path_and_query: &path_and_query,
            authority: parts.uri.authority().map(|a| a.as_str()),
            headers: &parts.headers,
            body: &body,
        };
        bedrock::authenticate(&config, &received, SystemTime::now())
    } else {
        Ok(())
    };
    state.log.push(record::Recorded {
        method: parts.method.to_string(),
        version: format!("{:?}", parts.version),
        path: path_and_query.clone(),
        headers: parts.headers,
        body: body.clone(),
    });

    // The service account's token endpoint (`--always-status` applies to model routes only).
    if token_path {
        if method != Method::POST {
            return vertex::oauth_error(405, "invalid_request", "Method not allowed.");
        }
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if let Some(status) = forced_status {
            return vertex::forced_oauth_error(status);
        }
        if let Some(account) = &state.vertex_account {
            return vertex::token(account, &state.vertex_tokens, &body, SystemTime::now());
        }
    }
    if let Some(status) = state.options.always_status {
        let message = format!("mock instance always answers {status}");
        if vertex_path {
            return vertex::forced_error(publisher, status, &message);
        }
        return reply::error(api, status, &message);
    }
    if vertex_path && state.options.vertex && state.vertex_account.is_some() {
        if let Err(refused) = state
            .vertex_tokens
            .check(authorization.as_deref(), SystemTime::now())
        {
            return refused;
        }
        if let (Some(account), Some(route)) = (&state.vertex_account, &vertex_route) {
            if let Err(refused) = vertex::check_project(account, route) {
                return refused;
            }
        }
    }
    if let Err(refused) = bedrock_auth {
        return refused;
    }
    if !key_ok && api == Api::Gemini {
        return match gemini_key {
            None => reply::error(api, 403, "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API."),
            Some(_) => reply::error(api, 400, "API key not valid. Please pass a valid API key."),
        };
    }
    if !key_ok {
        return reply::error(
            api,
            401,
            "Incorrect API key provided. The mock provider requires its configured key.",
        );
    }
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = forced_status.filter(|_| vertex_path) {
        return vertex::forced_error(
            publisher,
            status,
            &format!("mock error: status {status} requested by x-mock-status"),
        );
    }
    if forced_status == Some(429) && api == Api::Bedrock {
        return reply::error(
            api,
            429,
            "Too many requests, please wait before trying again.",
        );
    }
    if forced_status == Some(429) {
        return reply::rate_limited(api, "mock error: rate limited (x-mock-status: 429)");
    }
    if let Some(status) = forced_status {
        return reply::error(
            api,
            status,
            &format!("mock error: status {status} requested by x-mock-status"),
        );
    }

    let call = openai::Call {
        id: format!("mock{}", state.next_id.fetch_add(1, Ordering::Relaxed)),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        faults,
        cached_tokens,
        no_usage,
        reply: reply_override,
    };
    let options = &state.options;

    // Azure OpenAI: /openai/deployments/{deployment}/<operation>?api-version=...
    let (operation, azure) = match path.strip_prefix("/openai/deployments/") {
        Some(rest) => match rest.split_once('/') {
            Some((_deployment, operation)) => (format!("/v1/{operation}"), true),
            None => (path.clone(), true),
        },
        None => (path.clone(), false),
    };
    if azure && !path_and_query.contains("api-version=") {
        return reply::error(
            Api::OpenAi,
            400,
            "Missing required query parameter: api-version",
        );
    }

    match (&method, operation.as_str()) {
        (&Method::GET, "/v1/models") if options.openai => openai::models(&options.models),
        (&Method::GET, model_path) if options.openai && model_path.starts_with("/v1/models/") => {
            openai::model(
                &options.models,
                model_path.trim_start_matches("/v1/models/"),
            )
        }
        (&Method::POST, "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings")
            if options.openai =>
        {
            let Some(json) = parse_json(&body) else {
                return reply::error(
                    Api::OpenAi,
                    400,
                    "We could not parse the JSON body of your request. The body must be a JSON object.",
                );
            };
            match operation.as_str() {
                "/v1/chat/completions" => openai::chat_completions(&json, &call),
                "/v1/completions" => openai::completions(&json, &call),
                _ => openai::embeddings(&json, &call),
            }
        }
        // Azure OpenAI has no moderations deployment operation, so only the plain path answers.
        (&Method::POST, "/v1/moderations") if options.openai && !azure => {
            let Some(json) = parse_json(&body) else {
                return reply::error(
                    Api::OpenAi,
                    400,
                    "We could not parse the JSON body of your request. The body must be a JSON object.",
                );
            };
            openai::moderations(&json, &call)
        }
        (&Method::POST, "/v1/messages") if options.anthropic && !azure => {
            let Some(json) = parse_json(&body) else {
                return reply::error(Api::Anthropic, 400, "The request body is not valid JSON.");
            };
            anthropic::messages(&json, anthropic_version.as_deref(), &call)
        }
        (&Method::POST, gemini_path) if options.gemini && gemini::route(gemini_path).is_some() => {
            let (model, method) = gemini::route(gemini_path).unwrap_or_default();
            let stream = match method {
                "generateContent" => false,
                "streamGenerateContent" if path_and_query.contains("alt=sse") => true,
                "streamGenerateContent" => {
                    return gemini::error(400, "this mock streams with alt=sse only")
                }
                _ => return gemini::error(404, &format!("method {method} is not served")),
            };
            let Some(json) = parse_json(&body) else {
                return gemini::error(400, "Invalid JSON payload received.");
            };
            gemini::generate_content(model, &json, stream, &call)
        }
        (&Method::POST, bedrock_path)
            if options.bedrock && bedrock::route(bedrock_path).is_some() =>
        {
            let (model, operation) = bedrock::route(bedrock_path).unwrap_or_default();
            let stream = match operation {
                "converse" => false,
                "converse-stream" => true,
                _ => {
                    return reply::error(
                        Api::Bedrock,
                        404,
                        &format!("mock instance {} does not serve {operation}", options.name),
                    )
                }
            };
            let Some(json) = parse_json(&body) else {
                return reply::aws_error(
                    400,
                    "SerializationException",
                    reply::CORAL_NAMESPACE,
                    &json!({"Message": "Could not parse the request body as a JSON object."}),
                );
            };
            let latency = u64::try_from(received.elapsed().as_millis()).unwrap_or(u64::MAX);
            bedrock::converse(&model, &json, stream, &call, latency)
        }
        (&Method::POST, _) if options.vertex && vertex_route.is_some() => {
            let Some(route) = vertex_route else {
                return reply::error(api, 404, "not a Vertex AI route");
            };
            let Some(json) = parse_json(&body) else {
                return match route.publisher.as_str() {
                    "anthropic" => {
                        reply::error(Api::Anthropic, 400, "The request body is not valid JSON.")
                    }
                    _ => gemini::error(400, "Invalid JSON payload received."),
                };
            };
            match route.publisher.as_str() {
                "google" => vertex::google(&route, path_and_query.contains("alt=sse"), &json, &call),
                "anthropic" => vertex::anthropic(&route, &json, call),
                other => gemini::error(
                    404,
                    &format!(
                        "Publisher Model `projects/.../publishers/{other}/models/{}` is not served by mock instance {}.",
                        route.model, options.name
                    ),
                ),
            }
        }
        (&Method::POST, "/v1/messages/count_tokens") if options.anthropic && !azure => {
            let Some(json) = parse_json(&body) else {
                return reply::error(Api::Anthropic, 400, "The request body is not valid JSON.");
            };
            anthropic::count_tokens(&json, anthropic_version.as_deref())
        }
        _ => reply::error(
            api,
            404,
            &format!(
                "mock instance {} does not serve {method} {path}",
                options.name
            ),
        ),
    }
}

fn parse_json(body: &Bytes) -> Option<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// A mock on a free port with these options, in the test's runtime.
    async fn start(options: &[&str]) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let options = parse_options(&args(options)).unwrap();
        let account = vertex_account(&options).unwrap();
        tokio::spawn(accept_loop(listener, options, account));
        address
    }

    /// One HTTP/1.1 request over a plain socket (the crate has no HTTP client); returns the status
    /// and the body, which for these JSON answers is sent whole with a content-length.
    async fn send(
        address: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, Value) {
        use std::io::{Read, Write};
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nhost: mock\r\nconnection: close\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        let raw = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut raw = String::new();
            stream.read_to_string(&mut raw).unwrap();
            raw
        })
        .await
        .unwrap();
        let status = raw.get(9..12).unwrap().parse().unwrap();
        let (_, body) = raw.split_once("\r\n\r\n").unwrap();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// A POST whose whole raw answer (status line, headers, body) is returned, for streams.
    /// The paths of the requests `mock` recorded, in order.
    async fn recorded_paths(mock: SocketAddr) -> Vec<String> {
        let (_, log) = send(mock, "GET", "/mock/requests", &[], "").await;
        log["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect()
    }

    async fn send_raw(
        address: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> String {
        use std::io::{Read, Write};
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: mock\r\nconnection: close\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut raw = String::new();
            stream.read_to_string(&mut raw).unwrap();
            raw
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn moderations_route_keys_faults_and_log() {
        let mock = start(&["--require-key", "k", "--api", "openai"]).await;
        let key = ("authorization", "Bearer k");
        let input = r#"{"input":"[flag:hate]"}"#;
        let (status, body) = send(mock, "POST", "/v1/moderations", &[], input).await;
        assert_eq!(
            (status, &body["error"]["type"]),
            (401, &json!("authentication_error"))
        );
        let (status, body) = send(mock, "POST", "/v1/moderations", &[key], input).await;
        assert_eq!(status, 200);
        assert_eq!(body["results"][0]["categories"]["hate"], true);
        let (status, _) = send(mock, "POST", "/v1/moderations", &[key], "nope").await;
        assert_eq!(status, 400);
        let faulty = [key, ("x-mock-status", "503"), ("x-mock-delay-ms", "1")];
        let (status, body) = send(mock, "POST", "/v1/moderations", &faulty, input).await;
        assert_eq!(
            (status, &body["error"]["type"]),
            (503, &json!("server_error"))
        );
        // Azure OpenAI has no moderations operation.
        let azure = "/openai/deployments/d/moderations?api-version=2024-10-21";
        let (status, _) = send(mock, "POST", azure, &[key], input).await;
        assert_eq!(status, 404);
        let paths = recorded_paths(mock).await;
        assert_eq!(paths.iter().filter(|p| **p == "/v1/moderations").count(), 4);

        let anthropic_only = start(&["--api", "anthropic"]).await;
        let (status, _) = send(anthropic_only, "POST", "/v1/moderations", &[], input).await;
        assert_eq!(status, 404);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reply_header_reaches_both_apis() {
        let mock = start(&[]).await;
        let scripted = ("x-mock-reply", "Ignore the guard, I am free");
        let (_, body) = send(
            mock,
            "POST",
            "/v1/chat/completions",
            &[scripted],
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
        assert_eq!(body["choices"][0]["message"]["content"], scripted.1);
        let (_, body) = send(
            mock,
            "POST",
            "/v1/messages",
            &[scripted, ("anthropic-version", "2023-06-01")],
            r#"{"model":"m","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
        assert_eq!(body["content"][0]["text"], scripted.1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bedrock_route_keys_and_faults() {
        let mock = start(&[
            "--api",
            "bedrock",
            "--aws-credentials",
            "AKID:secret",
            "--require-key",
            "bk",
        ])
        .await;
        let path = "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse";
        let body = r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
        let key = ("authorization", "Bearer bk");
        let (status, answer) = send(mock, "POST", path, &[key], body).await;
        assert_eq!(status, 200);
        assert_eq!(answer["output"]["message"]["content"][0]["text"], "hi");
        let (status, answer) = send(mock, "POST", path, &[], body).await;
        assert_eq!(
            (status, &answer["Message"]),
            (403, &json!("Authorization header is missing"))
        );
        let (status, answer) =
            send(mock, "POST", path, &[key, ("x-mock-status", "429")], body).await;
        assert_eq!(
            (status, &answer["message"]),
            (
                429,
                &json!("Too many requests, please wait before trying again.")
            )
        );
        let (status, _) = send(mock, "POST", path, &[key], "not json").await;
        assert_eq!(status, 400);
        let (status, _) = send(mock, "POST", "/v1/messages", &[key], body).await;
        assert_eq!(status, 404);
        let (status, answer) = send(mock, "POST", "/model/m/invoke", &[key], body).await;
        assert_eq!(status, 404);
        assert!(answer["message"].is_string());
        // Without credentials or a key configured, every request passes.
        let open = start(&["--api", "all"]).await;
        let (status, _) = send(open, "POST", path, &[], body).await;
        assert_eq!(status, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vertex_token_exchange_and_routes() {
        use vertex::tests::{claims, form, jwt, now, private_key};
        let file = std::env::temp_dir().join(format!("mock-vertex-{}.json", std::process::id()));
        let file = file.to_str().unwrap().to_string();
        let mock = start(&[
            "--api",
            "vertex",
            "--vertex-generate-service-account",
            &file,
            "--vertex-token-lifetime",
            "1",
        ])
        .await;
        let text = std::fs::read_to_string(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        let account = vertex::parse_key_file(&text).unwrap();
        let key = private_key(&text);
        let form_type = ("content-type", "application/x-www-form-urlencoded");
        let assertion = jwt(&key, &account.private_key_id, &claims(&account, now()));
        let (status, token) = send(mock, "POST", "/token", &[form_type], &form(&assertion)).await;
        assert_eq!(status, 200, "{token}");
        assert_eq!(token["expires_in"], 1);
        let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
        let auth = ("authorization", bearer.as_str());

        let gemini = "/v1/projects/mock-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent";
        let request = r#"{"contents":[{"role":"user","parts":[{"text":"hi vertex"}]}]}"#;
        let (status, answer) = send(mock, "POST", gemini, &[auth], request).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["candidates"][0]["content"]["parts"][0]["text"],
            "hi vertex"
        );
        let (status, answer) = send(mock, "POST", gemini, &[], request).await;
        assert_eq!(status, 401);
        assert_eq!(answer["error"]["status"], "UNAUTHENTICATED");
        assert_eq!(answer["error"]["message"], vertex::UNAUTHENTICATED);
        let unknown = ("authorization", "Bearer ya29.unknown");
        let (status, _) = send(mock, "POST", gemini, &[unknown], request).await;
        assert_eq!(status, 401);
        let elsewhere = gemini.replace("mock-project", "other-project");
        let (status, answer) = send(mock, "POST", &elsewhere, &[auth], request).await;
        assert_eq!(
            (status, &answer["error"]["status"]),
            (403, &json!("PERMISSION_DENIED"))
        );

        let claude = "/v1/projects/mock-project/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict";
        let stream = r#"{"anthropic_version":"vertex-2023-10-16","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let raw = send_raw(mock, claude, &[auth], stream).await;
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        assert!(raw.contains("event: message_start") && raw.contains("event: message_stop"));
        let (status, answer) = send(
            mock,
            "POST",
            claude,
            &[auth],
            &stream.replace("vertex-2023-10-16", "2023-06-01"),
        )
        .await;
        assert_eq!((status, &answer["type"]), (400, &json!("error")));
        let forced = [auth, ("x-mock-status", "529")];
        let (status, answer) = send(mock, "POST", claude, &forced, stream).await;
        assert_eq!(
            (status, &answer["error"]["type"]),
            (529, &json!("overloaded_error"))
        );

        // The token endpoint fails on demand, and an expired token is refused.
        let (status, answer) = send(
            mock,
            "POST",
            "/token",
            &[form_type, ("x-mock-status", "503")],
            &form(&assertion),
        )
        .await;
        assert_eq!(
            (status, &answer["error"]),
            (503, &json!("temporarily_unavailable"))
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (status, _) = send(mock, "POST", gemini, &[auth], request).await;
        assert_eq!(status, 401);

        let paths = recorded_paths(mock).await;
        assert_eq!(paths.iter().filter(|p| **p == "/token").count(), 2);
        assert_eq!(paths.iter().filter(|p| **p == gemini).count(), 4);
        let (status, _) = send(mock, "POST", "/v1/chat/completions", &[], "{}").await;
        assert_eq!(status, 404);

        // Without a service account, Vertex routes take any request; /token is not served.
        let open = start(&[]).await;
        let (status, _) = send(open, "POST", gemini, &[], request).await;
        assert_eq!(status, 200);
        let (status, _) = send(open, "POST", "/token", &[form_type], &form(&assertion)).await;
        assert_eq!(status, 404);
        let (status, answer) = send(
            open,
            "POST",
            &gemini.replace("google", "meta"),
            &[],
            request,
        )
        .await;
        assert_eq!(
            (status, &answer["error"]["status"]),
            (404, &json!("NOT_FOUND"))
        );
    }

    #[test]
    fn options() {
        let o = parse_options(&args(&[
            "--api",
            "anthropic",
            "--always-status",
            "503",
            "--name",
            "x",
        ]))
        .unwrap();
        assert!(!o.openai && o.anthropic);
        assert_eq!(o.always_status, Some(503));
        assert_eq!(o.name, "x");
        assert!(parse_options(&args(&["--api", "grpc"])).is_err());
        assert!(parse_options(&args(&["--always-status", "abc"])).is_err());
        assert!(parse_options(&args(&["--listen"])).is_err());
        assert!(parse_options(&args(&["--bogus", "1"])).is_err());
        let o = parse_options(&args(&[
            "--api",
            "bedrock",
            "--aws-credentials",
            "A:S:T",
            "--aws-region",
            "eu-west-1",
        ]))
        .unwrap();
        assert!(o.bedrock && !o.openai && !o.gemini);
        assert_eq!(o.aws_region, "eu-west-1");
        assert_eq!(
            o.aws_credentials.unwrap().session_token.as_deref(),
            Some("T")
        );
        assert!(parse_options(&args(&["--aws-credentials", "justakey"])).is_err());
    }
}
