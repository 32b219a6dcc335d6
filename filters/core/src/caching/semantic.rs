//! The semantic tier: on an exact miss, the prompt is embedded (an OpenAI-compatible `/v1/embeddings`
//! call) and compared with the prompts of stored answers that share everything else about the
//! request (API, route, model, scope and every parameter: the *context*). The nearest one at or above
//! the configured cosine similarity is served.
//!
//! The local store keeps the vectors in Envoy's shared data, one bounded blob per configured model,
//! quantized to 8 bits per dimension with a per-vector scale: a 256-dimension vector takes 308 bytes
//! with its record, and the similarity it yields differs from the exact cosine by less than 0.01 (see
//! the test). Search is brute force over the blob.

use super::key::{CacheApi, Digest32, KeyParts};
use super::store::{SharedData, WriteError};
use crate::config::ConfigError;
use serde::Deserialize;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticConfig {
    /// The embeddings service.
    pub embeddings: EmbeddingsConfig,
    /// Which text is embedded.
    #[serde(default)]
    pub input: PromptInput,
    /// At most this many characters are embedded (the end of the text is kept: the latest turns
    /// say most about what is asked).
    #[serde(default = "default_max_chars")]
    pub max_chars: usize,
    /// Vectors kept per model in the local store; the oldest go first.
    #[serde(default = "default_max_vectors")]
    pub max_vectors: u32,
    /// Chroma instead of the local vector store: answers shared by every replica.
    pub chroma: Option<super::chroma::ChromaConfig>,
}

fn default_max_chars() -> usize {
    2_000
}
fn default_max_vectors() -> u32 {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsConfig {
    /// The Envoy cluster of the embeddings service.
    pub cluster: String,
    /// The `:authority` of the calls (default: the cluster name).
    pub authority: Option<String>,
    #[serde(default = "default_embeddings_path")]
    pub path: String,
    /// The embedding model, e.g. `text-embedding-3-small`.
    pub model: String,
    /// OpenAI's `dimensions` (shorter vectors: a smaller store and a faster search).
    pub dimensions: Option<u32>,
    /// The environment variable holding the service's API key (sent as a bearer token).
    pub api_key_env: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_embeddings_path() -> String {
    "/v1/embeddings".into()
}
fn default_timeout_ms() -> u64 {
    1_000
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptInput {
    /// The text of the last user message (Anthropic: of the last user turn's text blocks).
    #[default]
    LastUserMessage,
    /// Every message's text (system included), in order, up to `max_chars` from the end.
    Conversation,
}

/// The embeddings service, checked.
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub model: String,
    pub dimensions: Option<u32>,
    /// `Bearer <key>`, read from the environment at configure time.
    pub authorization: Option<String>,
    pub timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct Semantic {
    pub embeddings: Embeddings,
    pub chroma: Option<super::chroma::Chroma>,
    pub input: PromptInput,
    pub max_chars: usize,
    pub max_vectors: u32,
}

impl Semantic {
    pub fn compile(
        config: SemanticConfig,
        namespace: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let chroma = config
            .chroma
            .map(|chroma| super::chroma::Chroma::compile(chroma, namespace, env))
            .transpose()?;
        let e = config.embeddings;
        if e.cluster.is_empty() {
            return Err(ConfigError::new(
                "semantic.embeddings.cluster",
                "must not be empty",
            ));
        }
        if e.model.is_empty() {
            return Err(ConfigError::new(
                "semantic.embeddings.model",
                "must not be empty",
            ));
        }
        if !e.path.starts_with('/') {
            return Err(ConfigError::new(
                "semantic.embeddings.path",
                "must start with '/'",
            ));
        }
        if !(1..=60_000).contains(&e.timeout_ms) {
            return Err(ConfigError::new(
                "semantic.embeddings.timeout_ms",
                "must be between 1 and 60000",
            ));
        }
        if e.dimensions
            .is_some_and(|d| !(1..=MAX_DIMENSIONS).contains(&d))
        {
            return Err(ConfigError::new(
                "semantic.embeddings.dimensions",
                format!("must be between 1 and {MAX_DIMENSIONS}"),
            ));
        }
        let authorization = match &e.api_key_env {
            Some(name) => match env(name).filter(|v| !v.is_empty()) {
                Some(key) => Some(format!("Bearer {key}")),
                None => {
                    return Err(ConfigError::new(
                        "semantic.embeddings.api_key_env",
                        format!("environment variable {name} is not set"),
                    ))
                }
            },
            None => None,
        };
        if !(1..=100_000).contains(&config.max_chars) {
            return Err(ConfigError::new(
                "semantic.max_chars",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=100_000).contains(&config.max_vectors) {
            return Err(ConfigError::new(
                "semantic.max_vectors",
                "must be between 1 and 100000",
            ));
        }
        Ok(Semantic {
            embeddings: Embeddings {
                authority: e.authority.unwrap_or_else(|| e.cluster.clone()),
                cluster: e.cluster,
                path: e.path,
                model: e.model,
                dimensions: e.dimensions,
                authorization,
                timeout: std::time::Duration::from_millis(e.timeout_ms),
            },
            chroma,
            input: config.input,
            max_chars: config.max_chars,
            max_vectors: config.max_vectors,
        })
    }

    /// The body of the embeddings call for `text`.
    pub fn request_body(&self, text: &str) -> Vec<u8> {
        let mut body = json!({
            "model": self.embeddings.model,
            "input": text,
            "encoding_format": "float",
        });
        if let (Some(dimensions), Some(object)) = (self.embeddings.dimensions, body.as_object_mut())
        {
            object.insert("dimensions".into(), json!(dimensions));
        }
        body.to_string().into_bytes()
    }

    /// The text of the request to embed; `None` when it has none.
    pub fn prompt_text(&self, api: CacheApi, body: &Map<String, Value>) -> Option<String> {
        let messages = body.get("messages")?.as_array()?;
        let mut parts: Vec<String> = Vec::new();
        match self.input {
            PromptInput::LastUserMessage => {
                let last = messages
                    .iter()
                    .rev()
                    .find(|m| m.get("role").unwrap_or(&Value::Null) == "user")?;
                parts.push(text_of(last.get("content").unwrap_or(&Value::Null)));
            }
            PromptInput::Conversation => {
                if api == CacheApi::Messages {
                    if let Some(system) = body.get("system") {
                        parts.push(text_of(system));
                    }
                }
                for message in messages {
                    parts.push(text_of(message.get("content").unwrap_or(&Value::Null)));
                }
            }
        }
        let text = parts
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        if text.trim().is_empty() {
            return None;
        }
        // Keep the end: the latest turn says most about what is asked.
        let count = text.chars().count();
        Some(if count > self.max_chars {
            text.chars().skip(count - self.max_chars).collect()
        } else {
            text
        })
    }
}

/// The text of a message's `content`: a string, or the `text` of its text parts/blocks.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").unwrap_or(&Value::Null).as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The prompt fields that the semantic tier compares by meaning instead of by value.
const PROMPT_FIELDS: [&str; 2] = ["messages", "system"];

/// What must be equal for a semantic match: the exact key of the body without its prompt fields.
pub fn context(parts: &KeyParts<'_>, body: &Map<String, Value>) -> u64 {
    let mut rest = body.clone();
    for field in PROMPT_FIELDS {
        rest.remove(field);
    }
    let digest = super::key::digest(parts, &rest);
    let mut first = [0u8; 8];
    first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(first)
}

pub const MAX_DIMENSIONS: u32 = 8_192;

/// The first embedding of an OpenAI-compatible embeddings answer, normalised to unit length.
pub fn parse_embedding(body: &[u8]) -> Option<Vec<f32>> {
    #[derive(Deserialize)]
    struct Answer {
        data: Vec<Item>,
    }
    #[derive(Deserialize)]
    struct Item {
        embedding: Vec<f32>,
    }
    let answer: Answer = serde_json::from_slice(body).ok()?;
    let vector = answer.data.into_iter().next()?.embedding;
    if vector.is_empty() || vector.len() > MAX_DIMENSIONS as usize {
        return None;
    }
    normalized(vector)
}

fn normalized(mut vector: Vec<f32>) -> Option<Vec<f32>> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return None;
    }
    for x in &mut vector {
        *x /= norm;
    }
    Some(vector)
}

/// A unit vector in 8 bits per dimension: `value ≈ q * scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub scale: f32,
    pub values: Vec<i8>,
}

impl Quantized {
    pub fn of(unit: &[f32]) -> Quantized {
        let max = unit.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        #[allow(clippy::cast_possible_truncation)]
        let values = unit
            .iter()
            .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
            .collect();
        Quantized { scale, values }
    }

    /// The cosine similarity with another quantized unit vector, stored as bytes.
    pub fn similarity(&self, other: &[u8], other_scale: f32) -> f32 {
        let dot = dot(&self.values, other);
        #[allow(clippy::cast_precision_loss)]
        let dot = dot as f32;
        dot * self.scale * other_scale
    }
}

/// The dot product of 8-bit vectors: the search's inner loop (10,000 records of 256 dimensions
/// are 2.56 million products). A plain loop: at opt-level 3 (the native module) the compiler
/// vectorizes it; unrolled or laned variants were slower in the size-optimized build the Wasm
/// modules come from (measured in bench/).
fn dot(a: &[i8], b: &[u8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(p, q)| i32::from(*p) * i32::from(i8::from_ne_bytes([*q])))
        .sum()
}

const MAGIC: &[u8; 4] = b"LLMV";
const VERSION: u8 = 1;
/// magic, version, dimensions, count.
const HEADER: usize = 4 + 1 + 2 + 4;
/// context, digest, expires_at, scale (then the values).
const RECORD_HEAD: usize = 8 + 32 + 8 + 4;

/// The nearest stored prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Nearest {
    pub digest: Digest32,
    pub similarity: f32,
}

/// One model's vectors in shared data: a blob of fixed-size records, oldest first.
#[derive(Debug, Clone)]
pub struct VectorStore {
    key: String,
    capacity: u32,
}

const CAS_ATTEMPTS: usize = 16;

impl VectorStore {
    /// The store named `name` (a configured model's position, or `default`) of `namespace`.
    pub fn new(namespace: &str, name: &str, capacity: u32) -> Self {
        VectorStore {
            key: format!("llm_cache.{namespace}.vectors.{name}"),
            capacity: capacity.max(1),
        }
    }

    /// Creates the blob before traffic (Envoy does not compare-and-swap a key's first write).
    pub fn ensure(&self, shared: &dyn SharedData) {
        if let Ok((None, _)) = shared.get(&self.key) {
            let _ = shared.set(&self.key, &empty_blob(0), None);
        }
    }

    /// The nearest unexpired vector of `context` to `query`, if any is at least `threshold`.
    pub fn search(
        &self,
        shared: &dyn SharedData,
        context: u64,
        query: &[f32],
        now_s: u64,
        threshold: f32,
    ) -> Result<Option<Nearest>, String> {
        let (bytes, _) = shared.get(&self.key)?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        Ok(search_blob(
            &bytes,
            context,
            &Quantized::of(query),
            now_s,
            threshold,
        ))
    }

    /// Adds a vector for the entry `digest`; drops expired records and, past capacity, the oldest.
    pub fn insert(
        &self,
        shared: &dyn SharedData,
        context: u64,
        digest: &Digest32,
        vector: &[f32],
        expires_at: u64,
        now_s: u64,
    ) -> Result<(), String> {
        let dims = u16::try_from(vector.len()).map_err(|_| "vector too long".to_string())?;
        let quantized = Quantized::of(vector);
        for _ in 0..CAS_ATTEMPTS {
            let (bytes, cas) = shared.get(&self.key)?;
            let next = add_to_blob(
                bytes.as_deref(),
                dims,
                self.capacity,
                context,
                digest,
                &quantized,
                expires_at,
                now_s,
            );
            match shared.set(&self.key, &next, cas) {
                Ok(()) => return Ok(()),
                Err(WriteError::CasMismatch) => continue,
                Err(WriteError::Failed(why)) => return Err(why),
            }
        }
        Err("vector store stayed contended".into())
    }
}

fn empty_blob(dims: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&dims.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// The blob's dimensions and records, if it is a whole blob.
fn records(bytes: &[u8]) -> Option<(u16, std::slice::ChunksExact<'_, u8>)> {
    let head = bytes.get(..HEADER)?;
    if head.get(..4)? != MAGIC || head.get(4)? != &VERSION {
        return None;
    }
    let dims = u16::from_le_bytes(head.get(5..7)?.try_into().ok()?);
    let count = usize::try_from(u32::from_le_bytes(head.get(7..11)?.try_into().ok()?)).ok()?;
    let size = RECORD_HEAD + usize::from(dims);
    let body = bytes.get(HEADER..)?;
    if body.len() != count.checked_mul(size)? {
        return None;
    }
    Some((dims, body.chunks_exact(size)))
}

struct Record<'a> {
    context: u64,
    digest: &'a [u8],
    expires_at: u64,
    scale: f32,
    values: &'a [u8],
}

fn record(chunk: &[u8]) -> Option<Record<'_>> {
    Some(Record {
        context: u64::from_le_bytes(chunk.get(0..8)?.try_into().ok()?),
        digest: chunk.get(8..40)?,
        expires_at: u64::from_le_bytes(chunk.get(40..48)?.try_into().ok()?),
        scale: f32::from_le_bytes(chunk.get(48..52)?.try_into().ok()?),
        values: chunk.get(52..)?,
    })
}

fn search_blob(
    bytes: &[u8],
    context: u64,
    query: &Quantized,
    now_s: u64,
    threshold: f32,
) -> Option<Nearest> {
    let (dims, chunks) = records(bytes)?;
    if usize::from(dims) != query.values.len() {
        return None; // another embedding model wrote this store: nothing comparable
    }
    let mut best: Option<(f32, &[u8])> = None;
    for chunk in chunks {
        let Some(r) = record(chunk) else { continue };
        if r.context != context || r.expires_at <= now_s {
            continue;
        }
        let similarity = query.similarity(r.values, r.scale);
        if similarity >= threshold && best.is_none_or(|(b, _)| similarity > b) {
            best = Some((similarity, r.digest));
        }
    }
    let (similarity, digest) = best?;
    Some(Nearest {
        digest: digest.try_into().ok()?,
        similarity: similarity.min(1.0),
    })
}

#[allow(clippy::too_many_arguments)]
fn add_to_blob(
    existing: Option<&[u8]>,
    dims: u16,
    capacity: u32,
    context: u64,
    digest: &Digest32,
    vector: &Quantized,
    expires_at: u64,
    now_s: u64,
) -> Vec<u8> {
    let size = RECORD_HEAD + usize::from(dims);
    // Records of another dimension (the embedding model changed) are dropped.
    let kept: Vec<&[u8]> = existing
        .and_then(records)
        .filter(|(d, _)| *d == dims)
        .map(|(_, chunks)| {
            chunks
                .filter(|c| {
                    record(c).is_some_and(|r| r.expires_at > now_s && r.digest != digest.as_slice())
                })
                .collect()
        })
        .unwrap_or_default();
    let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
    let skip = (kept.len() + 1).saturating_sub(capacity);
    let kept = kept.get(skip..).unwrap_or_default();
    let mut out = empty_blob(dims);
    out.reserve((kept.len() + 1) * size);
    for chunk in kept {
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&context.to_le_bytes());
    out.extend_from_slice(digest);
    out.extend_from_slice(&expires_at.to_le_bytes());
    out.extend_from_slice(&vector.scale.to_le_bytes());
    out.extend(vector.values.iter().map(|v| v.to_le_bytes()[0]));
    let count = u32::try_from(kept.len() + 1).unwrap_or(u32::MAX);
    if let Some(slot) = out.get_mut(7..11) {
        slot.copy_from_slice(&count.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caching::store::MemoryShared;

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
        // A deterministic pseudo-random vector (xorshift), normalised.
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..dims)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        normalized(v).unwrap()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn quantized_similarity_is_within_a_hundredth_of_the_cosine() {
        for seed in 0..200 {
            let a = unit(seed, 256);
            // Mix a with another vector: similarities across the whole range.
            let other = unit(seed + 1000, 256);
            let w = (seed % 10) as f32 / 10.0;
            let b = normalized(
                a.iter()
                    .zip(&other)
                    .map(|(x, y)| w * x + (1.0 - w) * y)
                    .collect(),
            )
            .unwrap();
            let exact = cosine(&a, &b);
            let qb = Quantized::of(&b);
            let bytes: Vec<u8> = qb.values.iter().map(|v| v.to_le_bytes()[0]).collect();
            let approx = Quantized::of(&a).similarity(&bytes, qb.scale);
            assert!((exact - approx).abs() < 0.01, "{exact} vs {approx}");
        }
    }

    #[test]
    fn search_finds_the_nearest_of_the_same_context_above_the_threshold() {
        let shared = MemoryShared::default();
        let store = VectorStore::new("t", "0", 100);
        store.ensure(&shared);
        let stored = unit(1, 64);
        store.insert(&shared, 7, &[1; 32], &stored, 100, 0).unwrap();
        store
            .insert(&shared, 7, &[2; 32], &unit(2, 64), 100, 0)
            .unwrap();
        store.insert(&shared, 8, &[3; 32], &stored, 100, 0).unwrap();
        let near = store.search(&shared, 7, &stored, 50, 0.9).unwrap().unwrap();
        assert_eq!(near.digest, [1; 32]);
        assert!(near.similarity > 0.99);
        // Unrelated vector: below the threshold.
        assert_eq!(
            store.search(&shared, 7, &unit(9, 64), 50, 0.9).unwrap(),
            None
        );
        // Another context never matches; expired entries neither.
        assert_eq!(store.search(&shared, 9, &stored, 50, 0.9).unwrap(), None);
        assert_eq!(store.search(&shared, 7, &stored, 100, 0.9).unwrap(), None);
        // Another dimension: nothing comparable.
        assert_eq!(
            store.search(&shared, 7, &unit(1, 32), 50, 0.1).unwrap(),
            None
        );
    }

    #[test]
    fn the_store_keeps_at_most_its_capacity_oldest_out_first() {
        let shared = MemoryShared::default();
        let store = VectorStore::new("t", "0", 3);
        for n in 0..5u8 {
            store
                .insert(&shared, 1, &[n; 32], &unit(u64::from(n), 16), 100, 0)
                .unwrap();
        }
        let bytes = shared.get("llm_cache.t.vectors.0").unwrap().0.unwrap();
        let (_, chunks) = records(&bytes).unwrap();
        let digests: Vec<u8> = chunks.map(|c| c[8]).collect();
        assert_eq!(digests, [2, 3, 4]);
        // Re-storing a digest replaces its record instead of adding one.
        store
            .insert(&shared, 1, &[3; 32], &unit(3, 16), 100, 0)
            .unwrap();
        let bytes = shared.get("llm_cache.t.vectors.0").unwrap().0.unwrap();
        let (_, chunks) = records(&bytes).unwrap();
        assert_eq!(chunks.map(|c| c[8]).collect::<Vec<_>>(), [2, 4, 3]);
        // A damaged blob reads as empty and is rebuilt on the next insert.
        shared
            .set("llm_cache.t.vectors.0", b"LLMV\x01junk", None)
            .unwrap();
        assert_eq!(
            store.search(&shared, 1, &unit(3, 16), 0, 0.5).unwrap(),
            None
        );
        store
            .insert(&shared, 1, &[5; 32], &unit(5, 16), 100, 0)
            .unwrap();
        assert!(store
            .search(&shared, 1, &unit(5, 16), 0, 0.9)
            .unwrap()
            .is_some());
    }

    #[test]
    fn prompt_text_and_embeddings_parsing() {
        let semantic = Semantic::compile(
            serde_json::from_value(json!({
                "embeddings": {"cluster": "c", "model": "m"}, "max_chars": 10
            }))
            .unwrap(),
            "default",
            &|_| None,
        )
        .unwrap();
        let body = json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": [{"type": "text", "text": "the last question"}]}
        ]});
        let text = semantic
            .prompt_text(CacheApi::ChatCompletions, body.as_object().unwrap())
            .unwrap();
        assert_eq!(text, "t question", "the end of the text, max_chars long");
        assert!(semantic
            .prompt_text(
                CacheApi::ChatCompletions,
                json!({"messages": []}).as_object().unwrap()
            )
            .is_none());
        let v = parse_embedding(br#"{"data":[{"embedding":[3.0,4.0]}]}"#).unwrap();
        assert_eq!(v, [0.6, 0.8]);
        assert!(parse_embedding(br#"{"data":[{"embedding":[0.0,0.0]}]}"#).is_none());
        assert!(parse_embedding(br#"{"data":[]}"#).is_none());
        assert!(parse_embedding(b"oops").is_none());
        let err = Semantic::compile(
            serde_json::from_value(json!({
                "embeddings": {"cluster": "c", "model": "m", "api_key_env": "NOPE"}
            }))
            .unwrap(),
            "default",
            &|_| None,
        )
        .unwrap_err();
        assert_eq!(err.path, "semantic.embeddings.api_key_env");
    }

    #[test]
    fn the_context_ignores_the_prompt_but_not_the_parameters() {
        let parts = KeyParts {
            api: CacheApi::ChatCompletions,
            route: "r",
            model: "m",
            scope: "s",
        };
        let a = json!({"messages": [{"role": "user", "content": "a"}], "temperature": 0.2});
        let b = json!({"messages": [{"role": "user", "content": "b"}], "temperature": 0.2});
        let c = json!({"messages": [{"role": "user", "content": "a"}], "temperature": 0.3});
        let ctx = |v: &Value| context(&parts, v.as_object().unwrap());
        assert_eq!(ctx(&a), ctx(&b));
        assert_ne!(ctx(&a), ctx(&c));
    }
}
