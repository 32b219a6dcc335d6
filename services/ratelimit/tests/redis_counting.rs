//! The counting script against a real Redis (Debian's redis-server, or `REDIS_SERVER`): exact under
//! concurrency from two independent clients (as two service instances are), check-only hits, and
//! windows that expire at their end.

// A test file: its helpers (outside #[test] functions) may fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
    Entry, RateLimitOverride,
};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{rate_limit::Unit, Code};
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::google::protobuf::UInt64Value;
use llm_ratelimit::counting::{self, Counter};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct RedisServer {
    child: Child,
    port: u16,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> RedisServer {
    start_redis_with(&[])
}

fn start_redis_with(extra: &[&str]) -> RedisServer {
    let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "/usr/bin/redis-server".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let child = Command::new(&binary)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{binary}: {e} (make setup installs redis-server)"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    RedisServer { child, port }
}

async fn connect(server: &RedisServer) -> redis::aio::ConnectionManager {
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", server.port)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.get_connection_manager().await {
            Ok(manager) => return manager,
            Err(err) => {
                assert!(Instant::now() < deadline, "{err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

fn request(consumer: &str, limit: u32, unit: Unit, hits: Option<u64>) -> RateLimitRequest {
    RateLimitRequest {
        domain: "llm".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![
                Entry {
                    key: "llm_limit".into(),
                    value: "requests".into(),
                },
                Entry {
                    key: "consumer".into(),
                    value: consumer.into(),
                },
            ],
            limit: Some(RateLimitOverride {
                requests_per_unit: limit,
                unit: unit as i32,
            }),
            hits_addend: hits.map(|value| UInt64Value { value }),
            is_negative_hits: false,
        }],
        hits_addend: 0,
    }
}

async fn call(
    counter: &Counter,
    redis: &mut redis::aio::ConnectionManager,
    request: &RateLimitRequest,
) -> (Code, u32, i64) {
    let hits = counting::hits_of(request).unwrap();
    let counts = counter.count(redis, hits.iter().flatten()).await.unwrap();
    let response = counting::response(&hits, &counts);
    let status = &response.statuses[0];
    (
        Code::try_from(response.overall_code).unwrap(),
        status.limit_remaining,
        status.duration_until_reset.unwrap().seconds,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clients_admit_exactly_the_limit_of_concurrent_calls() {
    let server = start_redis();
    let instances = [
        (Counter::new(), connect(&server).await),
        (Counter::new(), connect(&server).await),
    ];
    let instances = std::sync::Arc::new(instances);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let instances = instances.clone();
        tasks.push(tokio::spawn(async move {
            let (counter, redis) = &instances[i % 2];
            let mut redis = redis.clone();
            call(
                counter,
                &mut redis,
                &request("team-a", 37, Unit::Hour, None),
            )
            .await
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        if task.await.unwrap().0 == Code::Ok {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 37);
}

#[tokio::test]
async fn check_only_calls_do_not_count_and_amounts_add_up() {
    let server = start_redis();
    let counter = Counter::new();
    let mut redis = connect(&server).await;
    let check = request("tiny", 100, Unit::Minute, Some(0));
    let charge = |tokens| request("tiny", 100, Unit::Minute, Some(tokens));
    assert_eq!(call(&counter, &mut redis, &check).await.0, Code::Ok);
    assert_eq!(
        call(&counter, &mut redis, &check).await.1,
        100,
        "a check counts nothing"
    );
    let (code, remaining, reset) = call(&counter, &mut redis, &charge(60)).await;
    assert_eq!((code, remaining), (Code::Ok, 40));
    assert!((1..=60).contains(&reset), "reset {reset}");
    // Equal to the limit still passes; above it is over, for charges and checks alike.
    assert_eq!(call(&counter, &mut redis, &charge(40)).await.0, Code::Ok);
    assert_eq!(call(&counter, &mut redis, &check).await.0, Code::Ok);
    assert_eq!(
        call(&counter, &mut redis, &charge(1)).await.0,
        Code::OverLimit
    );
    assert_eq!(
        call(&counter, &mut redis, &check).await,
        (Code::OverLimit, 0, {
            call(&counter, &mut redis, &check).await.2
        })
    );
    // A refund gives back what was charged, never more than the count.
    let mut refund = charge(30);
    refund.descriptors[0].is_negative_hits = true;
    assert_eq!(call(&counter, &mut redis, &refund).await.1, 29);
    refund.descriptors[0].hits_addend = Some(UInt64Value { value: 1000 });
    assert_eq!(call(&counter, &mut redis, &refund).await.1, 100);
    assert_eq!(call(&counter, &mut redis, &charge(100)).await.0, Code::Ok);
    // Another consumer has its own count.
    assert_eq!(
        call(
            &counter,
            &mut redis,
            &request("other", 100, Unit::Minute, Some(0))
        )
        .await
        .1,
        100
    );
}

#[tokio::test]
async fn a_window_ends_on_its_boundary_and_counts_start_again() {
    let server = start_redis();
    let counter = Counter::new();
    let mut redis = connect(&server).await;
    let one = request("second", 1, Unit::Second, None);
    let (first, _, reset) = call(&counter, &mut redis, &one).await;
    assert_eq!(first, Code::Ok);
    assert_eq!(reset, 1, "a one-second window resets within a second");
    // Within 2.5 s a new window must have admitted a call again, whatever the phase.
    let deadline = Instant::now() + Duration::from_millis(2500);
    let mut over_seen = false;
    let mut admitted_again = false;
    while Instant::now() < deadline && !admitted_again {
        match call(&counter, &mut redis, &one).await.0 {
            Code::OverLimit => over_seen = true,
            _ => admitted_again = over_seen,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        over_seen && admitted_again,
        "over {over_seen}, admitted again {admitted_again}"
    );
    // Old windows do not linger: every counter key carries a TTL of at most its window.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("llm-ratelimit|*")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!((0..=1).contains(&ttl), "{key}: ttl {ttl}");
    }
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl command line.
fn certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext",
        "-out",
        "server.pem",
    ]);
}

#[tokio::test]
async fn rediss_with_a_password_and_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("llm-ratelimit-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
        .to_string();
    let server = start_redis_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &path("server.pem"),
        "--tls-key-file",
        &path("server.key"),
        "--tls-ca-cert-file",
        &path("ca.pem"),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        "s3cret",
    ]);
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let url = format!("rediss://:s3cret@127.0.0.1:{tls_port}");
    let client = llm_ratelimit::client(&url, Some(ca)).unwrap();
    let mut redis = client.get_connection_manager().await.unwrap();
    let counter = Counter::new();
    let one = request("tls", 1, Unit::Hour, None);
    assert_eq!(call(&counter, &mut redis, &one).await.0, Code::Ok);
    assert_eq!(call(&counter, &mut redis, &one).await.0, Code::OverLimit);

    // A server whose CA is not trusted is refused.
    let untrusted = llm_ratelimit::client(&url, None).unwrap();
    assert!(
        untrusted.get_multiplexed_async_connection().await.is_err(),
        "an unknown CA was trusted"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
