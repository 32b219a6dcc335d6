//! The built binary as the harness, the demo and the benchmarks start it: it prints where it listens,
//! answers a chat completion there, and refuses an unknown option. (Having this file also makes
//! `cargo test` build the binary, which the integration tests then use.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prints_its_address_and_answers_there() {
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_mock-provider"))
            .args(["--listen", "127.0.0.1:0", "--name", "smoke"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start mock-provider"),
    );
    let mut banner = String::new();
    BufReader::new(child.0.stdout.take().expect("stdout"))
        .read_line(&mut banner)
        .expect("banner");
    let address = banner
        .trim()
        .strip_prefix("mock-provider smoke listening on http://")
        .unwrap_or_else(|| panic!("unexpected banner {banner:?}"))
        .to_string();

    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}"#;
    let mut stream = TcpStream::connect(&address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let json = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let answer: serde_json::Value = serde_json::from_str(json).expect("a JSON answer");
    assert_eq!(answer["object"], "chat.completion", "{answer}");
    assert!(
        answer["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0,
        "{answer}"
    );
}

#[test]
fn refuses_an_unknown_option() {
    let output = Command::new(env!("CARGO_BIN_EXE_mock-provider"))
        .arg("--no-such-option")
        .output()
        .expect("run mock-provider");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--no-such-option"));
}
