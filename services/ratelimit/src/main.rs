//! `llm-ratelimit`: a small reference rate-limit service for the gateway's global limits.
//!
//! It speaks Envoy's `envoy.service.ratelimit.v3.RateLimitService` and counts in Redis with one Lua
//! script per call, so every descriptor of a call is counted in one atomic round trip and any number
//! of service instances sharing a Redis stay exact. It follows envoyproxy/ratelimit's semantics for
//! what the filters send: each descriptor's `limit` override is the limit (descriptors without one are
//! not limited), its `hits_addend` is what it adds (0 = check only), every hit is counted, and a
//! descriptor is over limit when the count after this request exceeds the limit. Windows are fixed and
//! aligned to the Unix epoch in Redis's own clock (a minute window starts at :00; a month is 30 days).
//!
//! Usage: `llm-ratelimit [--listen 127.0.0.1:8081] [--redis redis://127.0.0.1:6379]`
//! (`rediss://` for TLS, `--redis-ca ca.pem` for a private CA, `redis://:password@host` or
//! `redis://user:password@host` for AUTH).
//! The first line on stdout is `llm-ratelimit listening on <address>`.

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use llm_ratelimit::counting::{self, Counter};
use llm_ratelimit::redacted;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// A Redis call that takes longer than this fails the request (the filters' own timeout is shorter).
const STORAGE_TIMEOUT: Duration = Duration::from_secs(2);

struct Service {
    redis: redis::aio::ConnectionManager,
    counter: Counter,
}

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let request = request.into_inner();
        let hits = counting::hits_of(&request)?;
        let mut redis = self.redis.clone();
        let counts = if hits.iter().any(Option::is_some) {
            let call = self.counter.count(&mut redis, hits.iter().flatten());
            match tokio::time::timeout(STORAGE_TIMEOUT, call).await {
                Ok(Ok(counts)) => counts,
                Ok(Err(err)) => {
                    // Redis errors carry the reply or the I/O error, never the URL or its password.
                    eprintln!("llm-ratelimit: Redis error: {err}");
                    return Err(Status::unavailable("counter storage unavailable"));
                }
                Err(_) => {
                    eprintln!("llm-ratelimit: Redis timed out after {STORAGE_TIMEOUT:?}");
                    return Err(Status::unavailable("counter storage timed out"));
                }
            }
        } else {
            Vec::new()
        };
        Ok(Response::new(counting::response(&hits, &counts)))
    }
}

struct Args {
    listen: String,
    redis: String,
    redis_ca: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:8081".to_string(),
        redis: "redis://127.0.0.1:6379".to_string(),
        redis_ca: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => args.listen = value()?,
            "--redis" => args.redis = value()?,
            "--redis-ca" => args.redis_ca = Some(value()?),
            "--help" | "-h" => {
                return Err(
                    "usage: llm-ratelimit [--listen ADDR] [--redis redis[s]://[[user]:password@]HOST:PORT[/DB]] [--redis-ca CA.pem]"
                        .to_string(),
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
    let ca_pem = match &args.redis_ca {
        Some(path) => match std::fs::read(path) {
            Ok(pem) => Some(pem),
            Err(err) => {
                eprintln!("llm-ratelimit: --redis-ca {path}: {err}");
                std::process::exit(2);
            }
        },
        None => None,
    };
    let client = match llm_ratelimit::client(&args.redis, ca_pem) {
        Ok(client) => client,
        Err(message) => {
            eprintln!(
                "llm-ratelimit: --redis {}: {message}",
                redacted(&args.redis)
            );
            std::process::exit(2);
        }
    };
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(STORAGE_TIMEOUT))
        .set_response_timeout(Some(STORAGE_TIMEOUT))
        .set_number_of_retries(2);
    let redis = match client.get_connection_manager_with_config(config).await {
        Ok(redis) => redis,
        Err(err) => {
            eprintln!(
                "llm-ratelimit: cannot use Redis at {}: {err}",
                redacted(&args.redis)
            );
            std::process::exit(1);
        }
    };
    let service = Service {
        redis,
        counter: Counter::new(),
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
