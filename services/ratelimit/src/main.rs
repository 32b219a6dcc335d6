//! `llm-ratelimit`: a small reference rate-limit service for the gateway's global limits.
//!
//! It speaks Envoy's `envoy.service.ratelimit.v3.RateLimitService` and counts with Limitador (Redis
//! storage). It follows envoyproxy/ratelimit's semantics for what the
//! filters send: each descriptor's `limit` override is the limit (descriptors without one are not
//! limited), its `hits_addend` is what it adds (0 = check only), every hit is counted, and a
//! descriptor is over limit when the count after this request exceeds the limit. Windows are fixed:
//! they start with a counter's first hit and last one unit (a month is 30 days).
//!
//! Usage: `llm-ratelimit [--listen 127.0.0.1:8081] [--redis redis://127.0.0.1:6379]`.
//! The first line on stdout is `llm-ratelimit listening on <address>`.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit::Unit, Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use limitador::limit::{Context, Expression, Limit};
use limitador::storage::redis::AsyncRedisStorage;
use limitador::storage::AsyncCounterStorage;
use limitador::AsyncRateLimiter;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

/// A storage call that takes longer than this fails the request (the filters' own timeout is shorter).
const STORAGE_TIMEOUT: Duration = Duration::from_secs(2);

struct Service {
    limiter: AsyncRateLimiter,
    /// Limitador's Redis storage checks and then increments in two steps; one request at a time keeps
    /// a limit exact for every Envoy that shares this service (not across several service replicas).
    serial: Mutex<()>,
}

fn unit_seconds(unit: i32) -> Option<u64> {
    Some(match Unit::try_from(unit).ok()? {
        Unit::Second => 1,
        Unit::Minute => 60,
        Unit::Hour => 3_600,
        Unit::Day => 86_400,
        Unit::Week => 7 * 86_400,
        Unit::Month => 30 * 86_400,
        Unit::Year => 365 * 86_400,
        Unit::Unknown => return None,
    })
}

/// The Limitador limit and context of one descriptor: entries become variables `d0`, `d1`, ...
/// holding `key=value` (descriptor keys need not be valid CEL names), and the namespace holds
/// everything that tells limits apart, so each namespace has exactly one limit.
fn limit_for(
    domain: &str,
    descriptor: &RateLimitDescriptor,
    max: u64,
    seconds: u64,
) -> Result<(Limit, Context<'static>), Status> {
    let mut values = HashMap::new();
    let mut variables = Vec::new();
    for (i, entry) in descriptor.entries.iter().enumerate() {
        let name = format!("d{i}");
        variables
            .push(Expression::parse(&name).map_err(|_| Status::internal("descriptor variable"))?);
        values.insert(name, format!("{}={}", entry.key, entry.value));
    }
    let namespace = format!("{domain}|{}|{max}|{seconds}", descriptor.entries.len());
    let limit = Limit::new(namespace.as_str(), max, seconds, [], variables);
    Ok((limit, Context::from(values)))
}

async fn storage<T>(
    call: impl std::future::Future<Output = Result<T, limitador::errors::LimitadorError>>,
) -> Result<T, Status> {
    match tokio::time::timeout(STORAGE_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(Status::unavailable(format!("counter storage: {err}"))),
        Err(_) => Err(Status::unavailable("counter storage timed out")),
    }
}

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let request = request.into_inner();
        if request.domain.is_empty() {
            return Err(Status::invalid_argument("domain must not be empty"));
        }
        if request.descriptors.is_empty() {
            return Err(Status::invalid_argument("no descriptors"));
        }
        let default_hits = u64::from(request.hits_addend.max(1));
        let _serial = self.serial.lock().await;
        let mut statuses = Vec::with_capacity(request.descriptors.len());
        for descriptor in &request.descriptors {
            let Some(limit_override) = descriptor.limit else {
                // No limit for this descriptor: this service only counts the filters' overrides.
                statuses.push(DescriptorStatus {
                    code: Code::Ok as i32,
                    ..Default::default()
                });
                continue;
            };
            let seconds = unit_seconds(limit_override.unit)
                .ok_or_else(|| Status::invalid_argument("limit override without a time unit"))?;
            let max = u64::from(limit_override.requests_per_unit);
            let hits = descriptor
                .hits_addend
                .map_or(default_hits, |wrapped| wrapped.value);
            let (limit, ctx) = limit_for(&request.domain, descriptor, max, seconds)?;
            let namespace = limit.namespace().clone();
            self.limiter.add_limit(limit);
            let check = storage(self.limiter.is_rate_limited(&namespace, &ctx, hits)).await?;
            if hits > 0 {
                storage(self.limiter.update_counters(&namespace, &ctx, hits)).await?;
            }
            let counter = check.counters.first();
            let used_before = counter
                .and_then(|c| c.remaining())
                .map_or(0, |remaining| max.saturating_sub(remaining));
            let remaining = max.saturating_sub(used_before.saturating_add(hits));
            let reset = counter
                .and_then(|c| c.expires_in())
                .unwrap_or(Duration::from_secs(seconds));
            statuses.push(DescriptorStatus {
                code: if check.limited {
                    Code::OverLimit as i32
                } else {
                    Code::Ok as i32
                },
                current_limit: Some(RateLimit {
                    name: String::new(),
                    requests_per_unit: limit_override.requests_per_unit,
                    unit: limit_override.unit,
                }),
                limit_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                duration_until_reset: Some(ProtoDuration {
                    seconds: i64::try_from(reset.as_secs()).unwrap_or(i64::MAX),
                    nanos: i32::try_from(reset.subsec_nanos()).unwrap_or(0),
                }),
                ..Default::default()
            });
        }
        let over = statuses.iter().any(|s| s.code == Code::OverLimit as i32);
        Ok(Response::new(RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            ..Default::default()
        }))
    }
}

struct Args {
    listen: String,
    redis: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:8081".to_string(),
        redis: "redis://127.0.0.1:6379".to_string(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => args.listen = value()?,
            "--redis" => args.redis = value()?,
            "--help" | "-h" => {
                return Err(
                    "usage: llm-ratelimit [--listen ADDR] [--redis redis://HOST:PORT]".to_string(),
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let storage: Box<dyn AsyncCounterStorage> = match AsyncRedisStorage::new(&args.redis).await {
        Ok(storage) => Box::new(storage),
        Err(err) => {
            eprintln!("llm-ratelimit: cannot use Redis at {}: {err}", args.redis);
            std::process::exit(1);
        }
    };
    let service = Service {
        limiter: AsyncRateLimiter::new_with_storage(storage),
        serial: Mutex::new(()),
    };
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("llm-ratelimit: cannot listen on {}: {err}", args.listen);
            std::process::exit(1);
        }
    };
    let address = listener
        .local_addr()
        .map_or(args.listen.clone(), |a| a.to_string());
    println!("llm-ratelimit listening on {address}");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(err) = tonic::transport::Server::builder()
        .add_service(RateLimitServiceServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
    {
        eprintln!("llm-ratelimit: {err}");
        std::process::exit(1);
    }
}
