//! Full chain vs bare Envoy under load: `wrk` drives a 2 KB chat request through (a) Envoy with no
//! filters and (b) the demo chain (all five filters; without jwt_authn and the access log, which are
//! Envoy's own costs), (c) llm_gateway, (d) the native module; all on one worker, in interleaved rounds; medians are reported. Then: 200 KB
//! prompts with and without PII, time to first token of streams, and a soak with Envoy's RSS before and
//! after. Writes Markdown to stdout: the first line is `full chain / bare Envoy throughput: <ratio>`.
//! Usage: throughput [rounds] [seconds-per-run] [soak-seconds] | --print-config <mock port> [bare|single|native|chain-downstream|single-downstream]

use integration::{
    demo_config, replace_port, set_filter_config, to_native, to_single_module, Envoy, EnvoyOptions,
    MockProvider, DEMO_ADMIN_PORT, DEMO_ANTHROPIC_KEY, DEMO_ANTHROPIC_PORT, DEMO_LISTENER_PORT,
    DEMO_OPENAI_KEY, DEMO_OPENAI_PORT, DEMO_UNAVAILABLE_PORT,
};
use llm_bench::{chat_body, chat_body_with_pii, envoy_config, median, process_cpu_ns};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::process::Command;
use std::time::Instant;

const KEY: &str = "sk-bench-key";

fn remove_between(text: &str, start: &str, end: &str) -> String {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not in the demo config"));
    let to = from
        + text[from..]
            .find(end)
            .unwrap_or_else(|| panic!("{end:?} not after {start:?}"));
    format!("{}{}", &text[..from], &text[to..])
}

fn chain_config(mock_port: u16) -> String {
    // Without llm_cache: the benchmark repeats one request, which the cache would answer itself. It
    // measures the chain on the way to the provider; the cache has its own (cache-cost).
    let mut config = integration::without_filter(&demo_config(), "llm_cache");
    for (from, to) in [
        (DEMO_LISTENER_PORT, 0),
        (DEMO_ADMIN_PORT, 0),
        (DEMO_OPENAI_PORT, mock_port),
        (DEMO_ANTHROPIC_PORT, mock_port),
        (DEMO_UNAVAILABLE_PORT, mock_port),
    ] {
        config = replace_port(&config, from, to);
    }
    config = remove_between(
        &config,
        "          access_log:\n",
        "          http_filters:\n",
    );
    config = remove_between(
        &config,
        "          - name: envoy.filters.http.jwt_authn\n",
        "          # Each filter has its own vm_id",
    );
    // Auth and usage without limits: the benchmark measures cost, it must not be throttled.
    let digest = hex::encode(Sha256::digest(KEY.as_bytes()));
    config = set_filter_config(
        &config,
        "llm_auth",
        &format!(r#"{{"consumers":[{{"name":"bench","keys":[{{"sha256":"{digest}"}}]}}]}}"#),
    );
    set_filter_config(
        &config,
        "llm_usage",
        r#"{"prices":[{"model":"*","input":1,"output":1}]}"#,
    )
}

/// The chain with llm_gateway in place of the four downstream modules.
fn single_config(mock_port: u16) -> String {
    to_single_module(&chain_config(mock_port))
}

/// Every filter, llm_provider included, from the native module libllm_gateway.so.
fn native_config(mock_port: u16) -> String {
    to_native(&single_config(mock_port))
}

/// Without the upstream llm_provider (the bench mock needs no key): callgrind cannot run Envoy with
/// all five modules (see scripts/callgrind-cost.sh), so the downstream part is measured alone.
fn without_provider(config: &str) -> String {
    remove_between(
        config,
        "        # llm_provider runs once per attempt",
        "    load_assignment:\n",
    )
}

struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
}

fn millis(value: &str) -> f64 {
    let number: f64 = value
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .parse()
        .unwrap_or(f64::NAN);
    match value.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.') {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        _ => f64::NAN,
    }
}

fn wrk(envoy: &Envoy, script: &std::path::Path, seconds: u32) -> Run {
    let url = envoy.url("/v1/chat/completions");
    let cpu_before = process_cpu_ns(envoy.pid());
    let output = Command::new("wrk")
        .args(["-t2", "-c16", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(script)
        .arg(&url)
        .output()
        .expect("run wrk (make bench installs it)");
    let cpu_after = process_cpu_ns(envoy.pid());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!text.contains("Non-2xx"), "errors under load:\n{text}");
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix).map(str::trim))
    };
    let requests: f64 = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split(" requests in ")
                .next()
                .filter(|_| l.contains(" requests in "))?
                .parse()
                .ok()
        })
        .unwrap_or(f64::NAN);
    Run {
        rps: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN),
        p50_ms: field("50%").map(millis).unwrap_or(f64::NAN),
        p99_ms: field("99%").map(millis).unwrap_or(f64::NAN),
        cpu_us: (cpu_after - cpu_before) as f64 / 1000.0 / requests,
    }
}

fn wrk_script(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let script = dir.join(name);
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = [==[{body}]==]\nwrk.headers[\"content-type\"] = \"application/json\"\nwrk.headers[\"authorization\"] = \"Bearer {KEY}\"\n"
        ),
    )
    .expect("write wrk script");
    script
}

/// Microseconds from sending a streaming request to the first SSE event, on a fresh connection.
fn first_event_us(address: &str, body: &str) -> f64 {
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream.set_nodelay(true).ok();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\nauthorization: Bearer {KEY}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let started = Instant::now();
    stream.write_all(request.as_bytes()).expect("send");
    let mut seen = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let n = stream.read(&mut buffer).expect("read");
        assert!(n > 0, "stream ended before its first event");
        seen.extend_from_slice(&buffer[..n]);
        if seen.windows(6).any(|w| w == b"data: ") {
            return started.elapsed().as_secs_f64() * 1e6;
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn main() {
    // `throughput --print-config <mock port> [bare]`: the chain's (or bare) Envoy config, for profiling
    // it elsewhere (e.g. under callgrind, see bench/README.md).
    if std::env::args().nth(1).as_deref() == Some("--print-config") {
        let port = std::env::args()
            .nth(2)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        match std::env::args().nth(3).as_deref() {
            Some("bare") => print!("{}", envoy_config(None, port)),
            Some("single") => print!("{}", single_config(port)),
            Some("native") => print!("{}", native_config(port)),
            Some("chain-downstream") => print!("{}", without_provider(&chain_config(port))),
            Some("single-downstream") => print!("{}", without_provider(&single_config(port))),
            _ => print!("{}", chain_config(port)),
        }
        return;
    }
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let seconds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let soak_seconds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let _ = (DEMO_OPENAI_KEY, DEMO_ANTHROPIC_KEY);
    let mock = MockProvider::start("bench", &["--max-recorded", "0"]);
    let options = EnvoyOptions {
        concurrency: 1,
        log_level: "warning",
        ..EnvoyOptions::default()
    };
    let bare = Envoy::start(&envoy_config(None, mock.port()), &options);
    let chain = Envoy::start(&chain_config(mock.port()), &options);
    let single = Envoy::start(&single_config(mock.port()), &options);
    let native = Envoy::start(&native_config(mock.port()), &options);
    let variants = [
        ("bare Envoy", &bare),
        ("full chain", &chain),
        ("single module", &single),
        ("native module", &native),
    ];

    let dir = tempfile::tempdir().expect("temp dir");
    let script = wrk_script(dir.path(), "post.lua", &chat_body("gpt-4o-mini", 2 * 1024));
    // Warm up all (V8 compiles lazily).
    for (_, envoy) in variants {
        wrk(envoy, &script, 2);
    }
    let mut runs: [Vec<Run>; 4] = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, (_, envoy)) in variants.iter().enumerate() {
            runs[i].push(wrk(envoy, &script, seconds));
        }
    }
    let summary: Vec<[f64; 4]> = runs
        .iter()
        .map(|r| {
            let pick = |f: fn(&Run) -> f64| median(&mut r.iter().map(f).collect::<Vec<_>>());
            [
                pick(|r| r.rps),
                pick(|r| r.p50_ms),
                pick(|r| r.p99_ms),
                pick(|r| r.cpu_us),
            ]
        })
        .collect();
    let (bare_s, chain_s, single_s, native_s) = (summary[0], summary[1], summary[2], summary[3]);
    println!(
        "full chain / bare Envoy throughput: {:.2}",
        chain_s[0] / bare_s[0]
    );
    println!(
        "single module / bare Envoy throughput: {:.2}",
        single_s[0] / bare_s[0]
    );
    println!(
        "native module / bare Envoy throughput: {:.2}",
        native_s[0] / bare_s[0]
    );
    println!();
    println!("wrk -t2 -c16, {seconds} s runs, {rounds} interleaved rounds (medians), one Envoy worker, 2 KB chat request to the mock provider.");
    println!("The full chain: llm_auth, llm_router, llm_pii, llm_usage and the upstream llm_provider as in envoy/demo.yaml, without jwt_authn and the access log. The single module: the same with llm_gateway in place of the four downstream modules (envoy/demo-single-module.yaml). The native module: the same filters, llm_provider included, from libllm_gateway.so (envoy/demo-native.yaml).");
    println!();
    println!("| variant | requests/s | p50 ms | p99 ms | Envoy CPU µs/request |");
    println!("|---|---|---|---|---|");
    for ((name, _), s) in variants.iter().zip(&summary) {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.1} |",
            s[0], s[1], s[2], s[3]
        );
    }
    println!();
    println!(
        "Added Envoy CPU per request: full chain {:.0} µs, single module {:.0} µs, native module {:.0} µs; p50 latency ratio {:.2}, {:.2} and {:.2}.",
        chain_s[3] - bare_s[3],
        single_s[3] - bare_s[3],
        native_s[3] - bare_s[3],
        chain_s[1] / bare_s[1],
        single_s[1] / bare_s[1],
        native_s[1] / bare_s[1]
    );

    // 200 KB prompts, with and without PII: one run each, same machine state.
    println!();
    println!("200 KB prompts ({seconds} s each):");
    println!();
    println!("| prompt | variant | requests/s | p50 ms | p99 ms | Envoy CPU µs/request |");
    println!("|---|---|---|---|---|---|");
    for (label, body) in [
        ("200 KB clean", chat_body("gpt-4o-mini", 200 * 1024)),
        (
            "200 KB with PII",
            chat_body_with_pii("gpt-4o-mini", 200 * 1024),
        ),
    ] {
        let large = wrk_script(dir.path(), "large.lua", &body);
        for (name, envoy) in variants {
            let run = wrk(envoy, &large, seconds);
            println!(
                "| {label} | {name} | {:.0} | {:.2} | {:.2} | {:.1} |",
                run.rps, run.p50_ms, run.p99_ms, run.cpu_us
            );
        }
    }

    // Time to first event of a stream, sequential requests on fresh connections.
    let mut streaming: serde_json::Value =
        serde_json::from_str(&chat_body("gpt-4o-mini", 2 * 1024)).expect("chat body");
    streaming["stream"] = serde_json::json!(true);
    let streaming = streaming.to_string();
    let mut ttft = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, (_, envoy)) in variants.iter().enumerate() {
            for _ in 0..200 {
                ttft[i].push(first_event_us(&envoy.listener, &streaming));
            }
        }
    }
    let p = |values: &mut Vec<f64>, q: usize| {
        values.sort_by(f64::total_cmp);
        values[(values.len() * q / 100).min(values.len() - 1)]
    };
    let p50: Vec<f64> = ttft.iter_mut().map(|v| p(v, 50)).collect();
    let p99: Vec<f64> = ttft.iter_mut().map(|v| p(v, 99)).collect();
    println!();
    println!(
        "Time to first token (first SSE event, 2 KB streaming request, new connection each): bare p50 {:.0} µs / p99 {:.0} µs, full chain p50 {:.0} µs / p99 {:.0} µs: added {:+.0} µs at p50; single module p50 {:.0} µs / p99 {:.0} µs: added {:+.0} µs at p50; native module p50 {:.0} µs / p99 {:.0} µs: added {:+.0} µs at p50.",
        p50[0], p99[0], p50[1], p99[1], p50[1] - p50[0], p50[2], p99[2], p50[2] - p50[0], p50[3], p99[3], p50[3] - p50[0]
    );

    // Soak: steady load, Envoy's RSS before and after.
    println!();
    for (name, envoy) in [
        ("full chain", &chain),
        ("single module", &single),
        ("native module", &native),
    ] {
        let rss_before = rss_kib(envoy.pid());
        let soak = wrk(envoy, &script, soak_seconds);
        let rss_after = rss_kib(envoy.pid());
        println!(
            "Soak, {name}: {soak_seconds} s at {:.0} requests/s: Envoy RSS {} MiB before, {} MiB after ({:+.1}%).",
            soak.rps,
            rss_before / 1024,
            rss_after / 1024,
            (rss_after as f64 - rss_before as f64) * 100.0 / rss_before.max(1) as f64
        );
    }
}
