//! A small blocking HTTP client for tests: every status is a response, never an error.

use serde_json::Value;
use std::io::Read;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Set when the body ended with an error (e.g. the connection was reset mid-stream).
    pub body_error: Option<String>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.body))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn convert(response: ureq::http::Response<ureq::Body>) -> Response {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut bytes = Vec::new();
    let body_error = response
        .into_body()
        .into_reader()
        .read_to_end(&mut bytes)
        .err()
        .map(|e| e.to_string());
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        body_error,
    }
}

fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Response, ureq::Error> {
    let request = ureq::http::Request::builder().method(method).uri(url);
    let request = headers.iter().fold(request, |request, (name, value)| {
        request.header(*name, *value)
    });
    let agent = agent();
    let response = match body {
        Some(body) => agent.run(request.body(body.to_string()).map_err(ureq::Error::from)?)?,
        None => agent.run(request.body(()).map_err(ureq::Error::from)?)?,
    };
    Ok(convert(response))
}

/// Any method; panics only when no HTTP response came back at all.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Response {
    send(method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

pub fn get(url: &str, headers: &[(&str, &str)]) -> Response {
    request("GET", url, headers, None)
}

/// `GET`, or `None` when the server is not answering (yet).
pub fn try_get(url: &str) -> Option<Response> {
    send("GET", url, &[], None).ok()
}

/// `POST` a JSON body with `content-type: application/json` plus `headers`.
pub fn post_json(url: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    request("POST", url, &all, Some(body))
}

/// Server-sent events of a response body: the `data:` payloads in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .flat_map(|event| event.lines())
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| data.trim_start().to_string())
        .collect()
}

/// The text an OpenAI chat stream carries: every chunk's `choices[0].delta.content`, in order.
pub fn sse_text(body: &str) -> String {
    sse_data(body)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")?
                .as_str()
                .map(String::from)
        })
        .collect()
}

/// Server-sent events as (event name, data) pairs.
pub fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| {
            let mut name = None;
            let mut data = Vec::new();
            for line in event.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = Some(n.trim().to_string());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.trim_start());
                }
            }
            (name, data.join("\n"))
        })
        .collect()
}

/// A keep-alive client for many requests to the same server (benchmarks, load).
pub struct Client {
    agent: ureq::Agent,
}

impl Default for Client {
    fn default() -> Self {
        Client { agent: agent() }
    }
}

impl Client {
    pub fn post_json(&self, url: &str, headers: &[(&str, &str)], body: &str) -> Response {
        let mut request = self
            .agent
            .post(url)
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send(body)
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        convert(response)
    }
}

/// Runs `threads` client threads at once, each with its own keep-alive [`Client`], each making
/// `per_thread` calls of `call(client, thread, i)`; returns every result.
pub fn concurrently<T: Send>(
    threads: usize,
    per_thread: usize,
    call: impl Fn(&Client, usize, usize) -> T + Sync,
) -> Vec<T> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let call = &call;
                scope.spawn(move || {
                    let client = Client::default();
                    (0..per_thread)
                        .map(|i| call(&client, t, i))
                        .collect::<Vec<T>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    })
}

/// Sends raw bytes (chunked bodies, invalid UTF-8, bytes no client library sends) and returns the raw
/// response, read until the server closes (send `connection: close`) or 10 s pass.
pub fn raw(address: &str, request: &[u8]) -> String {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(address).expect("connect to Envoy");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    stream.write_all(request).expect("send the request");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}
