//! The shared store for many replicas: the Chroma vector database over its HTTP API (v2).
//!
//! One collection per cache namespace (cosine space). Each stored answer is one record: its id is the
//! hex of the exact key, its embedding the prompt's, its document the answer, and its metadata the
//! request context (hex), model, expiry and token counts. A lookup is one query for the nearest
//! record of the same context that has not expired; when its id is the request's own key it is an
//! exact hit (another replica stored it), otherwise a semantic one if it is similar enough.

use crate::config::ConfigError;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChromaConfig {
    /// The Envoy cluster of the Chroma server.
    pub cluster: String,
    /// The `:authority` of the calls (default: the cluster name).
    pub authority: Option<String>,
    #[serde(default = "default_tenant")]
    pub tenant: String,
    #[serde(default = "default_database")]
    pub database: String,
    /// The collection (default: `llm_cache_<namespace>`), created on first use.
    pub collection: Option<String>,
    /// The environment variable holding Chroma's token (sent as `x-chroma-token`), if it needs one.
    pub token_env: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_tenant() -> String {
    "default_tenant".into()
}
fn default_database() -> String {
    "default_database".into()
}
fn default_timeout_ms() -> u64 {
    1_000
}

#[derive(Debug, Clone)]
pub struct Chroma {
    pub cluster: String,
    pub authority: String,
    /// `/api/v2/tenants/<tenant>/databases/<database>`.
    base: String,
    pub collection: String,
    pub token: Option<String>,
    pub timeout: std::time::Duration,
}

/// A path segment Chroma accepts, and that needs no escaping in a URL.
fn valid_name(name: &str) -> bool {
    (3..=512).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// The request of one call: method, path and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChromaRequest {
    pub path: String,
    pub body: Vec<u8>,
}

/// A stored answer found in Chroma.
#[derive(Debug, Clone, PartialEq)]
pub struct ChromaHit {
    /// The hex of the exact key it was stored under.
    pub id: String,
    pub similarity: f32,
    pub answer: Vec<u8>,
    pub stored_at: u64,
    pub expires_at: u64,
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// What is stored with an answer.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub id: &'a str,
    pub vector: &'a [f32],
    pub answer: &'a str,
    pub context: u64,
    pub model: &'a str,
    pub stored_at: u64,
    pub expires_at: u64,
    pub input_tokens: u32,
    pub output_tokens: u32,
}

impl Chroma {
    pub fn compile(
        config: ChromaConfig,
        namespace: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        if config.cluster.is_empty() {
            return Err(ConfigError::new(
                "semantic.chroma.cluster",
                "must not be empty",
            ));
        }
        for (field, value) in [("tenant", &config.tenant), ("database", &config.database)] {
            if !valid_name(value) {
                return Err(ConfigError::new(
                    format!("semantic.chroma.{field}"),
                    "use 3 to 512 letters, digits, '_', '-' or '.'",
                ));
            }
        }
        let collection = config
            .collection
            .unwrap_or_else(|| format!("llm_cache_{namespace}"));
        if !valid_name(&collection) {
            return Err(ConfigError::new(
                "semantic.chroma.collection",
                "use 3 to 512 letters, digits, '_', '-' or '.'",
            ));
        }
        if !(1..=60_000).contains(&config.timeout_ms) {
            return Err(ConfigError::new(
                "semantic.chroma.timeout_ms",
                "must be between 1 and 60000",
            ));
        }
        let token = match &config.token_env {
            Some(name) => Some(env(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                ConfigError::new(
                    "semantic.chroma.token_env",
                    format!("environment variable {name} is not set"),
                )
            })?),
            None => None,
        };
        Ok(Chroma {
            authority: config.authority.unwrap_or_else(|| config.cluster.clone()),
            cluster: config.cluster,
            base: format!(
                "/api/v2/tenants/{}/databases/{}",
                config.tenant, config.database
            ),
            collection,
            token,
            timeout: std::time::Duration::from_millis(config.timeout_ms),
        })
    }

    /// Creates the collection, or gets it if it exists: the answer carries its id.
    pub fn collection_request(&self) -> ChromaRequest {
        ChromaRequest {
            path: format!("{}/collections", self.base),
            body: json!({
                "name": self.collection,
                "get_or_create": true,
                "configuration": {"hnsw": {"space": "cosine"}},
            })
            .to_string()
            .into_bytes(),
        }
    }

    /// The nearest unexpired record of `context` to `vector`.
    pub fn query_request(
        &self,
        collection_id: &str,
        vector: &[f32],
        context: u64,
        now_s: u64,
    ) -> ChromaRequest {
        ChromaRequest {
            path: format!("{}/collections/{collection_id}/query", self.base),
            body: json!({
                "query_embeddings": [vector],
                "n_results": 1,
                "where": {"$and": [
                    {"context": {"$eq": format!("{context:016x}")}},
                    {"expires_at": {"$gt": now_s}},
                ]},
                "include": ["distances", "documents", "metadatas"],
            })
            .to_string()
            .into_bytes(),
        }
    }

    /// Stores (or replaces) one answer.
    pub fn upsert_request(&self, collection_id: &str, record: &Record<'_>) -> ChromaRequest {
        ChromaRequest {
            path: format!("{}/collections/{collection_id}/upsert", self.base),
            body: json!({
                "ids": [record.id],
                "embeddings": [record.vector],
                "documents": [record.answer],
                "metadatas": [{
                    "context": format!("{:016x}", record.context),
                    "model": record.model,
                    "stored_at": record.stored_at,
                    "expires_at": record.expires_at,
                    "input_tokens": record.input_tokens,
                    "output_tokens": record.output_tokens,
                }],
            })
            .to_string()
            .into_bytes(),
        }
    }
}

/// A collection id: a UUID (checked, because it goes into request paths).
pub fn parse_collection_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Collection {
        id: String,
    }
    let id = serde_json::from_slice::<Collection>(body).ok()?.id;
    let uuid_like = id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    uuid_like.then_some(id)
}

/// The nearest record of a query answer, if there is one at or above `threshold`.
pub fn parse_query(body: &[u8], threshold: f32) -> Option<ChromaHit> {
    /// Chroma answers one list per query embedding.
    type PerQuery<T> = Option<Vec<Vec<Option<T>>>>;
    #[derive(Deserialize)]
    struct Answer {
        ids: Vec<Vec<String>>,
        distances: PerQuery<f64>,
        documents: PerQuery<String>,
        metadatas: PerQuery<serde_json::Map<String, Value>>,
    }
    let answer: Answer = serde_json::from_slice(body).ok()?;
    let id = answer.ids.first()?.first()?.clone();
    let distance = (*answer.distances?.first()?.first()?)?;
    // Cosine distance is 1 - similarity.
    #[allow(clippy::cast_possible_truncation)]
    let similarity = (1.0 - distance) as f32;
    if !similarity.is_finite() || similarity < threshold {
        return None;
    }
    let answer_text = answer.documents?.first()?.first()?.clone()?;
    let metadata = answer.metadatas?.first()?.first()?.clone()?;
    let number = |field: &str| metadata.get(field).and_then(Value::as_u64);
    let tokens = |field: &str| u32::try_from(number(field).unwrap_or(0)).unwrap_or(u32::MAX);
    Some(ChromaHit {
        id,
        similarity: similarity.min(1.0),
        answer: answer_text.into_bytes(),
        stored_at: number("stored_at")?,
        expires_at: number("expires_at")?,
        input_tokens: tokens("input_tokens"),
        output_tokens: tokens("output_tokens"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chroma() -> Chroma {
        Chroma::compile(
            serde_json::from_value(json!({"cluster": "chroma"})).unwrap(),
            "default",
            &|_| None,
        )
        .unwrap()
    }

    #[test]
    fn requests_follow_the_v2_api() {
        let c = chroma();
        let create = c.collection_request();
        assert_eq!(
            create.path,
            "/api/v2/tenants/default_tenant/databases/default_database/collections"
        );
        let body: Value = serde_json::from_slice(&create.body).unwrap();
        assert_eq!(body["name"], "llm_cache_default");
        assert_eq!(body["configuration"]["hnsw"]["space"], "cosine");
        let query = c.query_request("id-1", &[0.6, 0.8], 255, 100);
        assert!(query.path.ends_with("/collections/id-1/query"));
        let body: Value = serde_json::from_slice(&query.body).unwrap();
        assert_eq!(
            body["where"]["$and"][0]["context"]["$eq"],
            "00000000000000ff"
        );
        assert_eq!(body["where"]["$and"][1]["expires_at"]["$gt"], 100);
        let upsert = c.upsert_request(
            "id-1",
            &Record {
                id: "ab",
                vector: &[1.0],
                answer: "{}",
                context: 1,
                model: "m",
                stored_at: 5,
                expires_at: 9,
                input_tokens: 2,
                output_tokens: 3,
            },
        );
        let body: Value = serde_json::from_slice(&upsert.body).unwrap();
        assert_eq!(body["metadatas"][0]["expires_at"], 9);
        assert_eq!(body["documents"][0], "{}");
    }

    #[test]
    fn answers_are_parsed_as_chroma_sends_them() {
        let id = parse_collection_id(
            br#"{"id":"a88ea3f9-bca3-435a-9b6a-005ccd138682","name":"x","configuration_json":{}}"#,
        );
        assert_eq!(id.as_deref(), Some("a88ea3f9-bca3-435a-9b6a-005ccd138682"));
        assert_eq!(parse_collection_id(br#"{"id":"../../etc"}"#), None);
        let found = br#"{"ids":[["abc"]],"embeddings":null,"documents":[["{\"a\":1}"]],"uris":null,
            "metadatas":[[{"stored_at":5,"expires_at":9,"context":"01","model":"m","input_tokens":2,"output_tokens":3}]],
            "distances":[[0.05]],"include":["distances","documents","metadatas"]}"#;
        let hit = parse_query(found, 0.9).unwrap();
        assert_eq!(hit.id, "abc");
        assert!((hit.similarity - 0.95).abs() < 1e-6);
        assert_eq!(hit.answer, br#"{"a":1}"#);
        assert_eq!(
            (hit.stored_at, hit.expires_at, hit.output_tokens),
            (5, 9, 3)
        );
        assert_eq!(parse_query(found, 0.96), None, "below the threshold");
        let empty = br#"{"ids":[[]],"embeddings":null,"documents":[[]],"uris":null,"metadatas":[[]],"distances":[[]]}"#;
        assert_eq!(parse_query(empty, 0.5), None);
        assert_eq!(parse_query(b"{\"error\":\"x\"}", 0.5), None);
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |v: Value| {
            Chroma::compile(serde_json::from_value(v).unwrap(), "default", &|_| None)
                .unwrap_err()
                .path
        };
        assert_eq!(err(json!({"cluster": ""})), "semantic.chroma.cluster");
        assert_eq!(
            err(json!({"cluster": "c", "collection": "a/b"})),
            "semantic.chroma.collection"
        );
        assert_eq!(
            err(json!({"cluster": "c", "token_env": "NOPE"})),
            "semantic.chroma.token_env"
        );
    }
}
