//! The request log behind `GET /mock/requests`: what really reached the provider.

use base64::Engine;
use bytes::Bytes;
use hyper::HeaderMap;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::sync::Mutex;

pub struct Recorded {
    pub method: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Bounded so a benchmark run cannot grow the mock without limit: the oldest requests drop first.
pub struct RequestLog {
    capacity: usize,
    entries: Mutex<VecDeque<Recorded>>,
}

impl RequestLog {
    pub fn new(capacity: usize) -> Self {
        RequestLog {
            capacity,
            entries: Mutex::new(VecDeque::new()),
        }
    }

    pub fn push(&self, entry: Recorded) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        while entries.len() >= self.capacity {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// `{"requests":[{method, version, path, headers:{name: value}, body, json}]}`. Repeated headers are joined
    /// with `,`; `body` is the text (or `body_base64` when it is not UTF-8); `json` is the parsed body
    /// when it parses, for convenience.
    pub fn to_json(&self) -> Value {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let requests: Vec<Value> = entries.iter().map(entry_json).collect();
        json!({ "requests": requests })
    }
}

fn entry_json(entry: &Recorded) -> Value {
    let mut headers = Map::new();
    for (name, value) in &entry.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    let mut out = json!({"method": entry.method, "version": entry.version, "path": entry.path, "headers": headers});
    match std::str::from_utf8(&entry.body) {
        Ok(text) => {
            out["body"] = json!(text);
            if let Ok(parsed) = serde_json::from_str::<Value>(text) {
                out["json"] = parsed;
            }
        }
        Err(_) => {
            out["body_base64"] =
                json!(base64::engine::general_purpose::STANDARD.encode(&entry.body));
        }
    }
    out
}
