//! `llm_cache`: answers repeated requests from a cache in Envoy's shared data, as JSON or as a
//! synthesised stream, and stores complete answers on the way back.
//!
//! Thin glue: keys, the store and replay live in `llm_core::caching`. See README.md.

use llm_core::cache::{self, Cache, CacheConfig, CacheRequest, Directive, Scope};
use llm_core::caching::chroma::{self, Chroma, ChromaRequest};
use llm_core::caching::key::{CacheApi, KeyParts};
use llm_core::caching::replay::{self, Assembler, Complete};
use llm_core::caching::semantic::{self, VectorStore};
use llm_core::caching::store::{Entry, Lookup, SharedData, WriteError};
use llm_core::config::ConfigError;
use llm_core::contract::{self, state};
use llm_core::metrics::labeled_name;
use llm_host::host::{HttpAnswer, HttpCall, SharedWriteError};
use llm_host::{
    request_body, request_trailers, set_filter_state, Action, BodyBuffer, Counter, Filter, Gauge,
    Headers, HoldsRequestBody, HttpFilter,
};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

// Without `module` (as in llm_gateway, which links this filter with the others) no entry point.
#[cfg(feature = "module")]
llm_host::wasm_module!(CacheFilter);

/// The response header that tells the client what the cache did.
pub const CACHE_HEADER: &str = "x-llm-cache";
/// On a semantic hit: the cosine similarity of the prompt to the stored one.
pub const SIMILARITY_HEADER: &str = "x-llm-cache-similarity";

/// Shared data through the host.
struct HostShared;

impl SharedData for HostShared {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String> {
        llm_host::current().shared_get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), WriteError> {
        llm_host::current()
            .shared_set(key, value, cas)
            .map_err(|err| match err {
                SharedWriteError::CasMismatch => WriteError::CasMismatch,
                SharedWriteError::Failed(why) => WriteError::Failed(why),
            })
    }
}

/// The label a model's series carry: configured models by name, every other model as `other`
/// (client input never makes a label).
const OTHER_MODEL: &str = "other";

/// Counters of one model.
#[derive(Debug, Default, Clone, Copy)]
struct ModelCounters {
    lookups: Option<Counter>,
    hits: Option<Counter>,
    semantic_hits: Option<Counter>,
    misses: Option<Counter>,
    stores: Option<Counter>,
    saved_input: Option<Counter>,
    saved_output: Option<Counter>,
}

impl ModelCounters {
    fn define(model: &str) -> Self {
        let counter = |base: &str, extra: &[(&str, &str)]| {
            let mut labels = vec![("model", model)];
            labels.extend_from_slice(extra);
            Counter::define(&labeled_name(base, &labels))
        };
        ModelCounters {
            lookups: counter("llm_cache_lookups_total", &[]),
            hits: counter("llm_cache_hits_total", &[("kind", "exact")]),
            semantic_hits: counter("llm_cache_hits_total", &[("kind", "semantic")]),
            misses: counter("llm_cache_misses_total", &[]),
            stores: counter("llm_cache_stores_total", &[]),
            saved_input: counter("llm_cache_saved_tokens_total", &[("kind", "input")]),
            saved_output: counter("llm_cache_saved_tokens_total", &[("kind", "output")]),
        }
    }
}

fn bump(counter: Option<Counter>, by: u64) {
    if let Some(counter) = counter {
        counter.increment(by);
    }
}

/// Why a request was not looked up, or an answer not stored (the `reason` label).
const BYPASS_REASONS: [&str; 4] = ["no_store", "disabled", "not_deterministic", "invalid_body"];
const NOT_STORED_REASONS: [&str; 4] = ["status", "incomplete", "too_large", "encoded"];

pub struct CacheFilter {
    cache: Cache,
    models: HashMap<String, ModelCounters>,
    other: ModelCounters,
    bypassed: HashMap<&'static str, Option<Counter>>,
    not_stored: HashMap<&'static str, Option<Counter>>,
    evictions: Option<Counter>,
    store_errors: Option<Counter>,
    /// What the local exact store holds, set after each store.
    entries: Option<Gauge>,
    bytes: Option<Gauge>,
    embedding_errors: Option<Counter>,
    /// Whether the embeddings service failed last time (this worker): one log line per outage.
    embeddings_down: Cell<bool>,
    chroma_errors: Option<Counter>,
    chroma_down: Cell<bool>,
    /// Chroma's id of the collection, learnt on this worker's first lookup.
    collection_id: RefCell<Option<String>>,
    /// Answers to store in Chroma, sent from the root context (a stream's calls end with it).
    upserts: RefCell<Vec<ChromaRequest>>,
}

impl CacheFilter {
    fn counters(&self, model: &str) -> ModelCounters {
        self.models.get(model).copied().unwrap_or(self.other)
    }

    /// An embeddings call failed: counted each time, logged once until it works again.
    fn embeddings_failed(&self, why: &str) {
        bump(self.embedding_errors, 1);
        if !self.embeddings_down.replace(true) {
            log::warn!(
                "llm_cache: embeddings service failing ({why}); semantic lookups are misses until it answers again"
            );
        }
    }

    /// A Chroma call failed: counted each time, logged once until Chroma answers again.
    fn chroma_failed(&self, why: &str) {
        bump(self.chroma_errors, 1);
        if !self.chroma_down.replace(true) {
            log::warn!(
                "llm_cache: Chroma failing ({why}); its lookups are misses and its stores are dropped until it answers again"
            );
        }
    }

    fn chroma_answered(&self) {
        if self.chroma_down.replace(false) {
            log::info!("llm_cache: Chroma answers again");
        }
    }

    fn chroma(&self) -> Option<&Chroma> {
        self.cache.semantic()?.chroma.as_ref()
    }

    /// Sends a call to Chroma; the token, or the failure counted.
    fn call_chroma(&self, request: &ChromaRequest) -> Option<u32> {
        let chroma = self.chroma()?;
        let mut headers = vec![("content-type", "application/json")];
        if let Some(token) = &chroma.token {
            headers.push(("x-chroma-token", token));
        }
        let call = HttpCall {
            cluster: &chroma.cluster,
            authority: &chroma.authority,
            method: "POST",
            path: &request.path,
            headers: &headers,
            body: &request.body,
            timeout: chroma.timeout,
        };
        match llm_host::current().http_call(&call) {
            Ok(token) => Some(token),
            Err(why) => {
                self.chroma_failed(&why);
                None
            }
        }
    }

    fn embeddings_answered(&self) {
        if self.embeddings_down.replace(false) {
            log::info!("llm_cache: embeddings service answers again");
        }
    }
}

impl Filter for CacheFilter {
    const NAME: &'static str = "llm_cache";
    type Config = CacheConfig;

    fn from_config(config: CacheConfig) -> Result<Self, ConfigError> {
        let cache = Cache::compile(config, &|name| std::env::var(name).ok())?;
        cache.store().ensure(&HostShared);
        for store in cache.vector_stores() {
            store.ensure(&HostShared);
        }
        let models = cache
            .configured_models()
            .map(|model| (model.to_string(), ModelCounters::define(model)))
            .collect();
        let reasons = |base: &str, reasons: &[&'static str]| {
            reasons
                .iter()
                .map(|reason| {
                    (
                        *reason,
                        Counter::define(&labeled_name(base, &[("reason", reason)])),
                    )
                })
                .collect()
        };
        Ok(CacheFilter {
            models,
            other: ModelCounters::define(OTHER_MODEL),
            bypassed: reasons("llm_cache_bypass_total", &BYPASS_REASONS),
            not_stored: reasons("llm_cache_not_stored_total", &NOT_STORED_REASONS),
            evictions: Counter::define("llm_cache_evictions_total"),
            store_errors: Counter::define("llm_cache_store_errors_total"),
            entries: Gauge::define("llm_cache_entries"),
            bytes: Gauge::define("llm_cache_bytes"),
            embedding_errors: Counter::define(&labeled_name(
                "llm_cache_callout_errors_total",
                &[("kind", "embeddings")],
            )),
            embeddings_down: Cell::new(false),
            chroma_errors: Counter::define(&labeled_name(
                "llm_cache_callout_errors_total",
                &[("kind", "chroma")],
            )),
            chroma_down: Cell::new(false),
            collection_id: RefCell::new(None),
            upserts: RefCell::new(Vec::new()),
            cache,
        })
    }

    /// Stores to Chroma go out from the root context, whose calls outlive the request.
    fn tick_period(&self) -> Option<Duration> {
        self.chroma().map(|_| Duration::from_millis(100))
    }

    fn on_tick(&self) {
        let upserts = std::mem::take(&mut *self.upserts.borrow_mut());
        for upsert in &upserts {
            let _ = self.call_chroma(upsert);
        }
    }

    fn on_root_http_response(&self, _token: u32, answer: Option<&HttpAnswer>) {
        // Only upserts are sent from the root context.
        match answer {
            Some(answer) if answer.status == 200 => self.chroma_answered(),
            Some(answer) => self.chroma_failed(&format!("upsert status {}", answer.status)),
            None => self.chroma_failed("upsert got no answer"),
        }
    }

    fn http_filter(self: &Rc<Self>) -> Box<dyn HttpFilter> {
        Box::new(CacheStream {
            filter: Rc::clone(self),
            api: CacheApi::ChatCompletions,
            directive: Directive::Normal,
            consumer: String::new(),
            route: String::new(),
            body: BodyBuffer::default(),
            status: None,
            pending: None,
            semantic: None,
            response: Response::Pass,
        })
    }
}

/// What the cache tells the client (`x-llm-cache`) and the access log (`llm_cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Hit,
    Miss,
    Bypass,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Hit => "hit",
            Status::Miss => "miss",
            Status::Bypass => "bypass",
        }
    }
}

/// A request whose answer is to be stored.
struct Pending {
    request: CacheRequest,
    model: String,
    ttl_seconds: u64,
}

/// The semantic tier's part of a request: its embedding call, then its vector (stored with the answer).
struct SemanticLookup {
    store: VectorStore,
    context: u64,
    /// The threshold to search with; `None` when only storing (`cache-control: no-cache`).
    threshold: Option<f32>,
    /// The call in flight: the embedding, Chroma's collection, or Chroma's query.
    token: Option<u32>,
    stage: Stage,
    vector: Option<Vec<f32>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Embedding,
    Collection,
    Query,
}

enum Response {
    /// Not stored: passes untouched.
    Pass,
    Json(Vec<u8>),
    Stream(Box<Assembler>),
}

struct CacheStream {
    filter: Rc<CacheFilter>,
    api: CacheApi,
    directive: Directive,
    consumer: String,
    route: String,
    body: BodyBuffer,
    status: Option<Status>,
    pending: Option<Pending>,
    semantic: Option<SemanticLookup>,
    response: Response,
}

impl CacheStream {
    fn bypass(&mut self, reason: &'static str) -> Action {
        if let Some(counter) = self.filter.bypassed.get(reason) {
            bump(*counter, 1);
        }
        self.status = Some(Status::Bypass);
        set_filter_state(state::CACHE, Status::Bypass.as_str());
        Action::Continue
    }

    fn not_stored(&mut self, reason: &'static str) {
        if let Some(counter) = self.filter.not_stored.get(reason) {
            bump(*counter, 1);
        }
        self.pending = None;
        self.response = Response::Pass;
    }

    fn on_body(&mut self, size: usize) -> Action {
        let body = llm_host::read_request_body(size);
        let filter = Rc::clone(&self.filter);
        let Some(parsed) = cache::parse_body(&body) else {
            return self.bypass("invalid_body");
        };
        // The model the provider will be asked for: llm_router has already resolved aliases and
        // splits into the body.
        let model = parsed.model().to_string();
        let policy = filter.cache.policy(&model, &self.consumer);
        if !policy.enabled {
            return self.bypass("disabled");
        }
        let scope = match policy.scope {
            Scope::Consumer => self.consumer.clone(),
            Scope::Shared => String::new(),
        };
        let route = self.route.clone();
        let parts = KeyParts {
            api: self.api,
            route: &route,
            model: &model,
            scope: &scope,
        };
        let request = parsed.request(&parts);
        if policy.only_deterministic && !request.deterministic {
            return self.bypass("not_deterministic");
        }
        let counters = filter.counters(&model);
        let now_ns = llm_host::now_unix_nanos();
        let now_s = now_ns / 1_000_000_000;
        if self.directive == Directive::Normal {
            bump(counters.lookups, 1);
            match filter
                .cache
                .store()
                .lookup(&HostShared, &request.digest, now_s)
            {
                Lookup::Hit(entry) => {
                    if self.reply_from(&request, &entry, now_ns, None) {
                        bump(counters.hits, 1);
                        bump(counters.saved_input, u64::from(entry.input_tokens));
                        bump(counters.saved_output, u64::from(entry.output_tokens));
                        return Action::Pause;
                    }
                }
                Lookup::Miss | Lookup::Expired => {}
                Lookup::Failed(why) => {
                    log::warn!("llm_cache: cannot read the cache: {why}");
                    bump(filter.store_errors, 1);
                }
            }
            self.status = Some(Status::Miss);
        } else {
            self.status = Some(Status::Bypass);
        }
        set_filter_state(state::CACHE, self.status.unwrap_or(Status::Miss).as_str());
        // The answer is parsed to be stored: it must come back uncompressed.
        llm_host::set_request_header("accept-encoding", None);
        let semantic = match (policy.semantic_threshold, filter.cache.semantic()) {
            (Some(threshold), Some(semantic)) => semantic
                .prompt_text(self.api, parsed.fields())
                .map(|text| (threshold, semantic, text)),
            _ => None,
        };
        self.pending = Some(Pending {
            request,
            model: model.clone(),
            ttl_seconds: policy.ttl_seconds,
        });
        let Some((threshold, semantic, text)) = semantic else {
            if self.directive == Directive::Normal {
                bump(counters.misses, 1);
            }
            return Action::Continue;
        };
        let Some(store) = filter.cache.vector_store(&model) else {
            return Action::Continue;
        };
        let e = &semantic.embeddings;
        let mut headers = vec![("content-type", "application/json")];
        if let Some(authorization) = &e.authorization {
            headers.push(("authorization", authorization));
        }
        let body = semantic.request_body(&text);
        let call = HttpCall {
            cluster: &e.cluster,
            authority: &e.authority,
            method: "POST",
            path: &e.path,
            headers: &headers,
            body: &body,
            timeout: e.timeout,
        };
        let token = match llm_host::current().http_call(&call) {
            Ok(token) => token,
            Err(why) => {
                filter.embeddings_failed(&why);
                if self.directive == Directive::Normal {
                    bump(counters.misses, 1);
                }
                return Action::Continue;
            }
        };
        self.semantic = Some(SemanticLookup {
            store,
            context: semantic::context(&parts, parsed.fields()),
            threshold: (self.directive == Directive::Normal).then_some(threshold),
            token: Some(token),
            stage: Stage::Embedding,
            vector: None,
        });
        // Held until the embedding is back: a semantic hit answers instead of the provider.
        Action::Pause
    }

    /// The embedding of the prompt is back (or the call failed): search, then answer or go on.
    fn on_embedding(&mut self, answer: Option<&HttpAnswer>) {
        let filter = Rc::clone(&self.filter);
        let vector = match answer {
            Some(answer) if answer.status == 200 => semantic::parse_embedding(&answer.body),
            _ => None,
        };
        let Some(vector) = vector else {
            let why = match answer {
                Some(answer) if answer.status == 200 => {
                    "an answer without an embedding".to_string()
                }
                Some(answer) => format!("status {}", answer.status),
                None => "no answer (timeout, reset or no healthy host)".to_string(),
            };
            filter.embeddings_failed(&why);
            self.semantic = None;
            self.go_on_after_miss();
            return;
        };
        filter.embeddings_answered();
        if filter.chroma().is_some() {
            let searching = self
                .semantic
                .as_ref()
                .is_some_and(|l| l.threshold.is_some());
            if let Some(lookup) = &mut self.semantic {
                lookup.vector = Some(vector);
            }
            if searching {
                self.query_chroma();
            } else {
                self.go_on_after_miss();
            }
            return;
        }
        let now_ns = llm_host::now_unix_nanos();
        let now_s = now_ns / 1_000_000_000;
        let found = self.semantic.as_ref().and_then(|lookup| {
            let threshold = lookup.threshold?;
            match lookup
                .store
                .search(&HostShared, lookup.context, &vector, now_s, threshold)
            {
                Ok(found) => found,
                Err(why) => {
                    log::warn!("llm_cache: cannot read the vector store: {why}");
                    bump(filter.store_errors, 1);
                    None
                }
            }
        });
        if let Some(nearest) = found {
            if let Lookup::Hit(entry) =
                filter
                    .cache
                    .store()
                    .lookup(&HostShared, &nearest.digest, now_s)
            {
                let served = match &self.pending {
                    Some(pending) => {
                        let request = pending.request.clone();
                        let counters = filter.counters(&pending.model);
                        let served =
                            self.reply_from(&request, &entry, now_ns, Some(nearest.similarity));
                        if served {
                            bump(counters.semantic_hits, 1);
                            bump(counters.saved_input, u64::from(entry.input_tokens));
                            bump(counters.saved_output, u64::from(entry.output_tokens));
                        }
                        served
                    }
                    None => false,
                };
                if served {
                    self.pending = None;
                    self.semantic = None;
                    return;
                }
            }
        }
        if let Some(lookup) = &mut self.semantic {
            lookup.vector = Some(vector);
        }
        self.go_on_after_miss();
    }

    /// Asks Chroma for the nearest stored prompt (learning the collection's id first, once per
    /// worker); the request waits for the answer.
    fn query_chroma(&mut self) {
        let filter = Rc::clone(&self.filter);
        let known = filter.collection_id.borrow().clone();
        let (request, stage) = match (known, filter.chroma(), &self.semantic) {
            (Some(id), Some(chroma), Some(lookup)) => {
                let now_s = llm_host::now_unix_nanos() / 1_000_000_000;
                let vector = lookup.vector.as_deref().unwrap_or_default();
                (
                    chroma.query_request(&id, vector, lookup.context, now_s),
                    Stage::Query,
                )
            }
            (None, Some(chroma), Some(_)) => (chroma.collection_request(), Stage::Collection),
            _ => return self.go_on_after_miss(),
        };
        match filter.call_chroma(&request) {
            Some(token) => {
                if let Some(lookup) = &mut self.semantic {
                    lookup.token = Some(token);
                    lookup.stage = stage;
                }
            }
            None => self.go_on_after_miss(),
        }
    }

    fn on_collection(&mut self, answer: Option<&HttpAnswer>) {
        let filter = Rc::clone(&self.filter);
        let id = answer
            .filter(|a| a.status == 200)
            .and_then(|a| chroma::parse_collection_id(&a.body));
        match id {
            Some(id) => {
                filter.chroma_answered();
                *filter.collection_id.borrow_mut() = Some(id);
                self.query_chroma();
            }
            None => {
                filter.chroma_failed(&describe(answer, "a collection without an id"));
                self.go_on_after_miss();
            }
        }
    }

    fn on_query(&mut self, answer: Option<&HttpAnswer>) {
        let filter = Rc::clone(&self.filter);
        let Some(answer) = answer.filter(|a| a.status == 200) else {
            filter.chroma_failed(&describe(answer, ""));
            return self.go_on_after_miss();
        };
        filter.chroma_answered();
        let threshold = self
            .semantic
            .as_ref()
            .and_then(|l| l.threshold)
            .unwrap_or(1.0);
        let Some(hit) = chroma::parse_query(&answer.body, threshold) else {
            return self.go_on_after_miss();
        };
        let Some(pending) = &self.pending else {
            return self.go_on_after_miss();
        };
        let request = pending.request.clone();
        let counters = filter.counters(&pending.model);
        let exact = hit.id == hex_of(&request.digest);
        let entry = Entry {
            stored_at: hit.stored_at,
            expires_at: hit.expires_at,
            input_tokens: hit.input_tokens,
            output_tokens: hit.output_tokens,
            answer: hit.answer,
        };
        let now_ns = llm_host::now_unix_nanos();
        let similarity = (!exact).then_some(hit.similarity);
        if !self.reply_from(&request, &entry, now_ns, similarity) {
            return self.go_on_after_miss();
        }
        bump(
            if exact {
                counters.hits
            } else {
                counters.semantic_hits
            },
            1,
        );
        bump(counters.saved_input, u64::from(entry.input_tokens));
        bump(counters.saved_output, u64::from(entry.output_tokens));
        if exact {
            // Another replica's answer: kept here too, so the next identical request stays local.
            if let Err(why) = filter
                .cache
                .store()
                .insert(&HostShared, &request.digest, &entry)
            {
                log::debug!("llm_cache: cannot keep Chroma's answer locally: {why}");
            }
        }
        self.pending = None;
        self.semantic = None;
    }

    /// A miss after the semantic lookup: counted, and the request goes on to the provider.
    fn go_on_after_miss(&mut self) {
        if self.directive == Directive::Normal {
            if let Some(pending) = &self.pending {
                bump(self.filter.counters(&pending.model).misses, 1);
            }
        }
        llm_host::resume_request();
    }

    /// Answers from `entry`; false when the stored answer cannot be replayed (then it is a miss).
    fn reply_from(
        &mut self,
        request: &CacheRequest,
        entry: &Entry,
        now_ns: u64,
        similarity: Option<f32>,
    ) -> bool {
        let now_s = now_ns / 1_000_000_000;
        let id = cache::fresh_id(request.api, &request.digest, now_ns);
        let (body, content_type) = if request.stream {
            (
                replay::replay_stream(
                    request.api,
                    &entry.answer,
                    &id,
                    now_s,
                    request.include_usage,
                ),
                "text/event-stream",
            )
        } else {
            (
                replay::replay_json(request.api, &entry.answer, &id, now_s),
                "application/json",
            )
        };
        let Some(body) = body else {
            return false;
        };
        let age = now_s.saturating_sub(entry.stored_at).to_string();
        let mut headers: Vec<(String, String)> = vec![
            ("content-type".into(), content_type.into()),
            (CACHE_HEADER.into(), Status::Hit.as_str().into()),
            ("age".into(), age),
            ("cache-control".into(), "no-cache".into()),
        ];
        if let Some(similarity) = similarity {
            headers.push((SIMILARITY_HEADER.into(), format!("{similarity:.4}")));
        }
        let reply = llm_core::api::LocalReply {
            status: 200,
            headers,
            body: String::from_utf8(body).unwrap_or_default(),
        };
        self.status = Some(Status::Hit);
        set_filter_state(state::CACHE, Status::Hit.as_str());
        llm_host::send_local_reply(&reply);
        true
    }

    fn store(&mut self, complete: Complete) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let filter = Rc::clone(&self.filter);
        if complete.answer.len() > filter.cache.max_entry_bytes() {
            self.not_stored("too_large");
            return;
        }
        let now_s = llm_host::now_unix_nanos() / 1_000_000_000;
        let entry = Entry {
            stored_at: now_s,
            expires_at: now_s.saturating_add(pending.ttl_seconds),
            input_tokens: u32::try_from(complete.input_tokens).unwrap_or(u32::MAX),
            output_tokens: u32::try_from(complete.output_tokens).unwrap_or(u32::MAX),
            answer: complete.answer,
        };
        match filter
            .cache
            .store()
            .insert(&HostShared, &pending.request.digest, &entry)
        {
            Ok(stored) => {
                bump(filter.counters(&pending.model).stores, 1);
                let (entries, bytes) = filter.cache.store().size(&HostShared);
                if let (Some(gauge), Some(bytes_gauge)) = (filter.entries, filter.bytes) {
                    gauge.set(entries);
                    bytes_gauge.set(bytes);
                }
                bump(
                    filter.evictions,
                    u64::from(stored.evicted) + u64::from(stored.replaced),
                );
                if let Some(SemanticLookup {
                    store,
                    context,
                    vector: Some(vector),
                    ..
                }) = self.semantic.take()
                {
                    let digest = &pending.request.digest;
                    if let Some(chroma) = filter.chroma() {
                        let collection = filter.collection_id.borrow().clone();
                        match (collection, std::str::from_utf8(&entry.answer)) {
                            (Some(collection), Ok(answer)) => {
                                let id = hex_of(digest);
                                let record = chroma::Record {
                                    id: &id,
                                    vector: &vector,
                                    answer,
                                    context,
                                    model: &pending.model,
                                    stored_at: entry.stored_at,
                                    expires_at: entry.expires_at,
                                    input_tokens: entry.input_tokens,
                                    output_tokens: entry.output_tokens,
                                };
                                let upsert = chroma.upsert_request(&collection, &record);
                                filter.upserts.borrow_mut().push(upsert);
                            }
                            // No collection yet (Chroma was down at lookup): this one stays local.
                            _ => bump(filter.chroma_errors, 1),
                        }
                    } else if let Err(why) = store.insert(
                        &HostShared,
                        context,
                        digest,
                        &vector,
                        entry.expires_at,
                        now_s,
                    ) {
                        log::warn!("llm_cache: cannot store a vector: {why}");
                        bump(filter.store_errors, 1);
                    }
                }
            }
            Err(why) => {
                log::warn!("llm_cache: cannot store an answer: {why}");
                bump(filter.store_errors, 1);
            }
        }
    }

    /// The response is complete: store what was collected.
    fn finish_response(&mut self) {
        match std::mem::replace(&mut self.response, Response::Pass) {
            Response::Pass => {}
            Response::Json(body) => match self
                .pending
                .as_ref()
                .and_then(|p| replay::complete_json(p.request.api, &body))
            {
                Some(complete) => self.store(complete),
                None => self.not_stored("incomplete"),
            },
            Response::Stream(assembler) => {
                let too_large = assembler.failed();
                match assembler.finish() {
                    Some(complete) => self.store(complete),
                    None if too_large => self.not_stored("too_large"),
                    None => self.not_stored("incomplete"),
                }
            }
        }
    }
}

/// Why a call failed, for the log (never the answer's body).
fn describe(answer: Option<&HttpAnswer>, when_ok: &str) -> String {
    match answer {
        Some(answer) if answer.status == 200 => when_ok.to_string(),
        Some(answer) => format!("status {}", answer.status),
        None => "no answer (timeout, reset or no healthy host)".to_string(),
    }
}

fn hex_of(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl HttpFilter for CacheStream {
    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        let headers = Headers::request();
        let path = headers.get(":path").unwrap_or_default();
        let Some(api) = CacheApi::from_path(path) else {
            return Action::Continue;
        };
        if headers.get(":method") != Some("POST") || end_of_stream {
            return Action::Continue;
        }
        self.api = api;
        self.directive = cache::directive(headers.get("cache-control"));
        if self.directive == Directive::Skip {
            return self.bypass("no_store");
        }
        self.consumer = headers
            .get(contract::CONSUMER)
            .unwrap_or_default()
            .to_string();
        self.route = headers.get(contract::ROUTE).unwrap_or_default().to_string();
        // Nothing is forwarded before the lookup (needs allow_on_headers_stop_iteration).
        self.body.start();
        Action::Pause
    }

    fn on_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        request_body(self, size, end_of_stream)
    }

    fn on_request_trailers(&mut self) -> Action {
        request_trailers(self)
    }

    fn on_response_headers(&mut self, end_of_stream: bool) -> Action {
        if let Some(status) = self.status {
            if status != Status::Hit {
                llm_host::set_response_header(CACHE_HEADER, Some(status.as_str()));
            }
        }
        if self.pending.is_none() {
            return Action::Continue;
        }
        let headers = Headers::response();
        if headers.get(":status") != Some("200") || end_of_stream {
            self.not_stored("status");
            return Action::Continue;
        }
        if headers
            .get("content-encoding")
            .is_some_and(|e| !e.eq_ignore_ascii_case("identity"))
        {
            self.not_stored("encoded");
            return Action::Continue;
        }
        let content_type = headers.get("content-type").unwrap_or_default();
        let api = self.pending.as_ref().map_or(self.api, |p| p.request.api);
        self.response = if content_type.starts_with("text/event-stream") {
            Response::Stream(Box::new(Assembler::new(
                api,
                self.filter.cache.max_entry_bytes() * 4,
            )))
        } else {
            Response::Json(Vec::new())
        };
        Action::Continue
    }

    fn on_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        let max = self.filter.cache.max_entry_bytes();
        match &mut self.response {
            Response::Pass => return Action::Continue,
            Response::Json(collected) => {
                let chunk = llm_host::read_response_body(size);
                if collected.len() + chunk.len() > max {
                    self.not_stored("too_large");
                    return Action::Continue;
                }
                collected.extend_from_slice(&chunk);
            }
            Response::Stream(assembler) => {
                assembler.push(&llm_host::read_response_body(size));
                if assembler.failed() {
                    self.not_stored("too_large");
                    return Action::Continue;
                }
            }
        }
        if end_of_stream {
            self.finish_response();
        }
        Action::Continue
    }

    fn on_response_trailers(&mut self) -> Action {
        self.finish_response();
        Action::Continue
    }

    fn on_http_response(&mut self, token: u32, answer: Option<&HttpAnswer>) {
        let ours = self
            .semantic
            .as_ref()
            .is_some_and(|lookup| lookup.token == Some(token));
        if !ours {
            return;
        }
        let stage = self.semantic.as_mut().map(|lookup| {
            lookup.token = None;
            lookup.stage
        });
        match stage {
            Some(Stage::Embedding) => self.on_embedding(answer),
            Some(Stage::Collection) => self.on_collection(answer),
            Some(Stage::Query) => self.on_query(answer),
            None => {}
        }
    }
}

impl HoldsRequestBody for CacheStream {
    fn body_buffer(&mut self) -> &mut BodyBuffer {
        &mut self.body
    }

    fn on_complete_body(&mut self, size: usize) -> Action {
        self.on_body(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_host::fake::{self, Stream};
    use serde_json::{json, Value};

    const CONFIG: &str = r#"{
      "defaults": {"enabled": false},
      "models": {"gpt-4o-mini": {"enabled": true, "ttl_seconds": 300}},
      "consumers": {"team-c": {"scope": "shared"}}
    }"#;

    const ANSWER: &str = r#"{"id":"chatcmpl-up","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Paris is the capital."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":5,"total_tokens":13}}"#;

    fn configure() {
        configure_with(CONFIG);
    }

    fn configure_with(config: &str) {
        fake::reset();
        CONFIG_LOADED.with(|loaded| {
            *loaded.borrow_mut() =
                Some(llm_host::configure::<CacheFilter>(config.as_bytes()).expect("config"));
        });
    }

    thread_local! {
        static CONFIG_LOADED: std::cell::RefCell<Option<llm_host::Loaded<CacheFilter>>> =
            const { std::cell::RefCell::new(None) };
    }

    /// A new stream through the configured filter (the fake's per-stream state cleared, its shared
    /// data, metrics and clock kept).
    fn stream() -> Stream {
        fake::with(|s| {
            s.replies.clear();
            s.request_body.clear();
            s.response_body.clear();
            s.response_headers.clear();
            s.filter_state.clear();
        });
        CONFIG_LOADED
            .with(|loaded| Stream::new(loaded.borrow().as_ref().expect("configured").new_stream()))
    }

    fn headers<'a>(consumer: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut h = vec![
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            ("content-type", "application/json"),
            ("accept-encoding", "gzip"),
            ("x-llm-consumer", consumer),
            ("x-llm-route", "openai"),
        ];
        h.extend_from_slice(extra);
        h
    }

    fn body(extra: Value) -> Vec<u8> {
        let mut b = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Capital of France?"}]});
        if let (Some(b), Some(extra)) = (b.as_object_mut(), extra.as_object()) {
            b.extend(extra.clone());
        }
        b.to_string().into_bytes()
    }

    /// Sends a request through a new stream; when it reaches the upstream, answers `ANSWER`.
    fn exchange(consumer: &str, extra_headers: &[(&str, &str)], extra: Value) -> Stream {
        let mut s = stream();
        let action = s.request(&headers(consumer, extra_headers), &[&body(extra)]);
        if action == Action::Continue {
            s.response(
                &[(":status", "200"), ("content-type", "application/json")],
                &[ANSWER.as_bytes()],
            );
        }
        s
    }

    #[test]
    fn the_second_identical_request_is_answered_from_the_cache() {
        configure();
        let first = exchange("team-a", &[], json!({}));
        assert!(first.request_forwarded());
        assert!(first.reply().is_none());
        assert_eq!(fake::response_header(CACHE_HEADER).as_deref(), Some("miss"));
        assert_eq!(
            fake::request_header("accept-encoding"),
            None,
            "answer must come back plain"
        );
        assert_eq!(
            first.client_body(),
            ANSWER.as_bytes(),
            "the answer passes untouched"
        );

        fake::with(|s| s.now_unix_nanos += 7_000_000_000);
        let second = exchange("team-a", &[], json!({"user": "u-1"}));
        let reply = second.reply().expect("served from the cache");
        assert_eq!(reply.status, 200);
        let header = |name: &str| {
            reply
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header(CACHE_HEADER).as_deref(), Some("hit"));
        assert_eq!(header("age").as_deref(), Some("7"));
        let served = reply.json();
        let original: Value = serde_json::from_str(ANSWER).unwrap();
        assert_eq!(served["choices"], original["choices"]);
        assert_ne!(served["id"], original["id"]);
        assert_eq!(
            fake::with(|s| s.filter_state.get(state::CACHE).cloned()).as_deref(),
            Some("hit")
        );
        let model = |base: &str| fake::counter(&labeled_name(base, &[("model", "gpt-4o-mini")]));
        assert_eq!(fake::gauge("llm_cache_entries"), 1);
        assert!(fake::gauge("llm_cache_bytes") > ANSWER.len() as u64);
        assert_eq!(model("llm_cache_lookups_total"), 2);
        assert_eq!(model("llm_cache_misses_total"), 1);
        assert_eq!(model("llm_cache_stores_total"), 1);
        assert_eq!(
            fake::counter(&labeled_name(
                "llm_cache_hits_total",
                &[("model", "gpt-4o-mini"), ("kind", "exact")]
            )),
            1
        );
        assert_eq!(
            fake::counter(&labeled_name(
                "llm_cache_saved_tokens_total",
                &[("model", "gpt-4o-mini"), ("kind", "output")]
            )),
            5
        );
    }

    #[test]
    fn a_stored_json_answer_serves_a_streaming_request() {
        configure();
        exchange("team-a", &[], json!({}));
        let s = exchange(
            "team-a",
            &[],
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        );
        let reply = s.reply().expect("hit");
        assert!(reply
            .headers
            .contains(&("content-type".into(), "text/event-stream".into())));
        assert!(reply.body.contains("\"content\":\"Paris is the capital.\""));
        assert!(reply.body.contains("\"total_tokens\":13"));
        assert!(reply.body.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn a_streamed_answer_is_stored_and_served_as_json() {
        configure();
        let mut s = stream();
        s.request(&headers("team-a", &[]), &[&body(json!({"stream": true}))]);
        let sse =
            replay::replay_stream(CacheApi::ChatCompletions, ANSWER.as_bytes(), "c-1", 5, true)
                .unwrap();
        let (a, b) = sse.split_at(sse.len() / 3);
        s.response_headers(
            &[(":status", "200"), ("content-type", "text/event-stream")],
            false,
        );
        s.response_body(a, false);
        s.response_body(b, true);
        assert_eq!(s.client_body(), sse.as_slice());
        let hit = exchange("team-a", &[], json!({}));
        let reply = hit.reply().expect("hit");
        assert_eq!(
            reply.json()["choices"][0]["message"]["content"],
            "Paris is the capital."
        );
        assert_eq!(reply.json()["usage"]["completion_tokens"], 5);
    }

    #[test]
    fn scope_model_and_parameters_separate_entries() {
        configure();
        exchange("team-a", &[], json!({}));
        assert!(
            exchange("team-b", &[], json!({})).reply().is_none(),
            "another consumer"
        );
        assert!(exchange("team-a", &[], json!({"temperature": 0.3}))
            .reply()
            .is_none());
        // Shared scope: team-c stores, and the entry is nobody's own.
        exchange("team-c", &[], json!({"seed": 1}));
        assert!(exchange("team-c", &[], json!({"seed": 1}))
            .reply()
            .is_some());
        // A model the cache is not enabled for passes (bypass).
        let mut s = stream();
        let other = json!({"model": "gpt-4o", "messages": []}).to_string();
        assert_eq!(
            s.request(&headers("team-a", &[]), &[other.as_bytes()]),
            Action::Continue
        );
        assert_eq!(
            fake::counter(&labeled_name(
                "llm_cache_bypass_total",
                &[("reason", "disabled")]
            )),
            1
        );
        assert_eq!(
            fake::request_header("accept-encoding").as_deref(),
            Some("gzip")
        );
    }

    #[test]
    fn cache_control_no_cache_refreshes_and_no_store_bypasses() {
        configure();
        let s = exchange("team-a", &[("cache-control", "no-store")], json!({}));
        assert!(s.request_forwarded());
        assert_eq!(
            fake::response_header(CACHE_HEADER).as_deref(),
            Some("bypass")
        );
        assert!(
            exchange("team-a", &[], json!({})).reply().is_none(),
            "no-store stored nothing"
        );
        assert!(exchange("team-a", &[], json!({})).reply().is_some());
        let refreshed = exchange("team-a", &[("cache-control", "no-cache")], json!({}));
        assert!(
            refreshed.reply().is_none(),
            "no-cache never answers from the cache"
        );
        assert_eq!(
            fake::response_header(CACHE_HEADER).as_deref(),
            Some("bypass")
        );
        assert_eq!(
            fake::counter(&labeled_name(
                "llm_cache_stores_total",
                &[("model", "gpt-4o-mini")]
            )),
            2,
            "but stores the fresh answer"
        );
    }

    #[test]
    fn errors_truncated_streams_and_expired_entries_are_never_served() {
        configure();
        let mut s = stream();
        s.request(&headers("team-a", &[]), &[&body(json!({}))]);
        s.response(
            &[(":status", "429"), ("content-type", "application/json")],
            &[br#"{"error":{"message":"slow down"}}"#],
        );
        let mut s = stream();
        s.request(&headers("team-a", &[]), &[&body(json!({"stream": true}))]);
        s.response_headers(
            &[(":status", "200"), ("content-type", "text/event-stream")],
            false,
        );
        s.response_body(
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Par\"}}]}\n\n",
            false,
        );
        s.log(); // reset mid-stream: no end_of_stream
        let mut s = stream();
        s.request(&headers("team-a", &[]), &[&body(json!({}))]);
        s.response(
            &[(":status", "200"), ("content-type", "application/json")],
            &[b"{\"trunc"],
        );
        assert!(exchange("team-a", &[], json!({})).reply().is_none());
        assert_eq!(
            fake::counter(&labeled_name(
                "llm_cache_not_stored_total",
                &[("reason", "status")]
            )),
            1
        );
        assert_eq!(
            fake::counter(&labeled_name(
                "llm_cache_not_stored_total",
                &[("reason", "incomplete")]
            )),
            1
        );
        // That exchange stored the answer; past its TTL it is a miss again.
        assert!(exchange("team-a", &[], json!({})).reply().is_some());
        fake::with(|s| s.now_unix_nanos += 301_000_000_000);
        assert!(exchange("team-a", &[], json!({})).reply().is_none());
    }

    #[test]
    fn other_paths_and_bodies_pass_untouched() {
        configure();
        let mut s = stream();
        let h = [(":method", "POST"), (":path", "/v1/embeddings")];
        assert_eq!(s.request(&h, &[b"{}"]), Action::Continue);
        let mut s = stream();
        assert_eq!(
            s.request(&headers("team-a", &[]), &[b"not json"]),
            Action::Continue
        );
        assert_eq!(s.upstream_body(), b"not json");
        assert_eq!(
            fake::counter(&labeled_name(
                "llm_cache_bypass_total",
                &[("reason", "invalid_body")]
            )),
            1
        );
    }

    #[test]
    fn a_bad_config_names_the_field() {
        fake::reset();
        let err = llm_host::configure::<CacheFilter>(br#"{"models": {"m": {"ttl_seconds": 0}}}"#)
            .err()
            .unwrap();
        assert!(err.contains("models.m.ttl_seconds"), "{err}");
    }

    const SEMANTIC: &str = r#"{
      "defaults": {"enabled": false},
      "models": {"gpt-4o-mini": {"enabled": true, "semantic_threshold": 0.9}},
      "semantic": {"embeddings": {"cluster": "embedder", "model": "text-embedding-3-small",
                                  "timeout_ms": 500}}
    }"#;

    fn embedding(v: &[f32]) -> Vec<u8> {
        json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": v}]})
            .to_string()
            .into_bytes()
    }

    /// A request whose exact lookup misses: it waits for its embedding (returned: its call's token).
    fn semantic_request(s: &mut Stream, text: &str) -> u32 {
        let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
            .to_string();
        assert_eq!(
            s.request(&headers("team-a", &[]), &[body.as_bytes()]),
            Action::Pause
        );
        let call = fake::with(|s| s.http_calls.last().cloned()).expect("an embeddings call");
        assert_eq!(
            (call.cluster.as_str(), call.path.as_str()),
            ("embedder", "/v1/embeddings")
        );
        let sent: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(sent["input"], text);
        assert_eq!(sent["model"], "text-embedding-3-small");
        call.token
    }

    #[test]
    fn a_paraphrase_is_served_from_the_semantic_tier_and_an_unrelated_prompt_is_not() {
        configure_with(SEMANTIC);
        let mut first = stream();
        let token = semantic_request(&mut first, "What is the capital of France?");
        first.http_response(token, Some((200, &embedding(&[1.0, 0.0, 0.0]))));
        assert!(first.request_forwarded(), "a miss goes on to the provider");
        first.response(
            &[(":status", "200"), ("content-type", "application/json")],
            &[ANSWER.as_bytes()],
        );

        let blob = fake::shared("llm_cache.default.vectors.0").unwrap_or_default();
        assert!(blob.len() > 11, "the prompt's vector was stored");
        let mut paraphrase = stream();
        let token = semantic_request(&mut paraphrase, "Tell me the capital of France");
        paraphrase.http_response(token, Some((200, &embedding(&[0.98, 0.2, 0.0]))));
        let reply = paraphrase.reply().expect("a semantic hit");
        assert!(!paraphrase.request_forwarded());
        assert_eq!(
            reply.json()["choices"][0]["message"]["content"],
            "Paris is the capital."
        );
        let similarity = reply
            .headers
            .iter()
            .find(|(n, _)| n == SIMILARITY_HEADER)
            .map(|(_, v)| v.parse::<f32>().unwrap())
            .unwrap();
        assert!((0.97..=0.99).contains(&similarity), "{similarity}");

        let mut unrelated = stream();
        let token = semantic_request(&mut unrelated, "How do I bake bread?");
        unrelated.http_response(token, Some((200, &embedding(&[0.0, 1.0, 0.0]))));
        assert!(unrelated.reply().is_none());
        assert!(unrelated.request_forwarded());
        let model = |base: &str, kind: &str| {
            fake::counter(&labeled_name(
                base,
                &[("model", "gpt-4o-mini"), ("kind", kind)],
            ))
        };
        assert_eq!(model("llm_cache_hits_total", "semantic"), 1);
        assert_eq!(model("llm_cache_hits_total", "exact"), 0);
        assert_eq!(
            fake::counter(&labeled_name(
                "llm_cache_misses_total",
                &[("model", "gpt-4o-mini")]
            )),
            2
        );
    }

    #[test]
    fn a_failing_embeddings_service_makes_misses_never_errors() {
        configure_with(SEMANTIC);
        let errors = || {
            fake::counter(&labeled_name(
                "llm_cache_callout_errors_total",
                &[("kind", "embeddings")],
            ))
        };
        for answer in [None, Some((503u16, &b"busy"[..])), Some((200, &b"{}"[..]))] {
            let mut s = stream();
            let token = semantic_request(&mut s, "anything");
            s.http_response(token, answer);
            assert!(s.request_forwarded(), "{answer:?}: fails open");
            assert!(s.reply().is_none());
        }
        assert_eq!(errors(), 3);
        // A call Envoy refuses outright (unknown cluster) goes on at once.
        fake::with(|s| s.http_unavailable = true);
        let mut s = stream();
        let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
            .to_string();
        assert_eq!(
            s.request(&headers("team-a", &[]), &[body.as_bytes()]),
            Action::Continue
        );
        assert_eq!(errors(), 4);
        // Another stream's answer (an unknown token) is not this stream's business.
        let mut s = stream();
        fake::with(|s| s.http_unavailable = false);
        let token = semantic_request(&mut s, "mine");
        s.http_response(token + 1, Some((200, &embedding(&[1.0]))));
        assert!(!s.request_forwarded());
    }

    const CHROMA: &str = r#"{
      "defaults": {"enabled": false},
      "models": {"gpt-4o-mini": {"enabled": true, "semantic_threshold": 0.9}},
      "semantic": {"embeddings": {"cluster": "embedder", "model": "text-embedding-3-small"},
                   "chroma": {"cluster": "chroma"}}
    }"#;

    const COLLECTION: &str = "a88ea3f9-bca3-435a-9b6a-005ccd138682";

    fn last_call() -> fake::HttpCall {
        fake::with(|s| s.http_calls.last().cloned()).expect("a call")
    }

    #[test]
    fn with_chroma_answers_are_shared_through_it() {
        configure_with(CHROMA);
        let mut first = stream();
        let token = semantic_request(&mut first, "What is the capital of France?");
        first.http_response(token, Some((200, &embedding(&[1.0, 0.0]))));
        // The worker's first lookup learns the collection.
        let create = last_call();
        assert_eq!(create.cluster, "chroma");
        assert!(create
            .path
            .ends_with("/databases/default_database/collections"));
        let answer = format!(r#"{{"id":"{COLLECTION}","name":"llm_cache_default"}}"#);
        first.http_response(create.token, Some((200, answer.as_bytes())));
        let query = last_call();
        assert_eq!(query.path, format!("/api/v2/tenants/default_tenant/databases/default_database/collections/{COLLECTION}/query"));
        let empty = br#"{"ids":[[]],"distances":[[]],"documents":[[]],"metadatas":[[]]}"#;
        first.http_response(query.token, Some((200, empty)));
        assert!(first.request_forwarded(), "nothing near: a miss");
        first.response(
            &[(":status", "200"), ("content-type", "application/json")],
            &[ANSWER.as_bytes()],
        );
        // The store goes out from the root context (calls made there outlive the stream).
        let loaded_tick = || {
            CONFIG_LOADED.with(|l| l.borrow().as_ref().unwrap().filter.on_tick());
        };
        loaded_tick();
        let upsert = last_call();
        assert!(upsert.path.ends_with("/upsert"), "{}", upsert.path);
        let record: Value = serde_json::from_slice(&upsert.body).unwrap();
        assert_eq!(record["documents"][0].as_str().unwrap(), ANSWER);
        assert_eq!(record["metadatas"][0]["model"], "gpt-4o-mini");
        let stored_id = record["ids"][0].as_str().unwrap().to_string();

        // Another replica asks the same: Chroma returns the record under the request's own key.
        configure_with(CHROMA);
        let mut other = stream();
        let token = semantic_request(&mut other, "What is the capital of France?");
        other.http_response(token, Some((200, &embedding(&[1.0, 0.0]))));
        let create = last_call();
        other.http_response(create.token, Some((200, answer.as_bytes())));
        let query = last_call();
        let found = json!({
            "ids": [[stored_id]], "distances": [[0.0]], "documents": [[ANSWER]],
            "metadatas": [[{"stored_at": 1_767_225_600u64, "expires_at": 1_767_225_900u64,
                            "context": "x", "model": "gpt-4o-mini",
                            "input_tokens": 8, "output_tokens": 5}]]
        })
        .to_string();
        other.http_response(query.token, Some((200, found.as_bytes())));
        let reply = other.reply().expect("served from Chroma");
        assert_eq!(
            reply.json()["choices"][0]["message"]["content"],
            "Paris is the capital."
        );
        assert!(
            !reply.headers.iter().any(|(n, _)| n == SIMILARITY_HEADER),
            "its own key: an exact hit"
        );
        assert_eq!(
            fake::counter(&labeled_name(
                "llm_cache_hits_total",
                &[("model", "gpt-4o-mini"), ("kind", "exact")]
            )),
            1
        );
        // And kept locally: the next identical request needs no call at all.
        let calls = fake::with(|s| s.http_calls.len());
        let mut third = stream();
        let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is the capital of France?"}]}).to_string();
        s_request_hits(&mut third, &body);
        assert_eq!(fake::with(|s| s.http_calls.len()), calls);
    }

    fn s_request_hits(s: &mut Stream, body: &str) {
        assert_eq!(
            s.request(&headers("team-a", &[]), &[body.as_bytes()]),
            Action::Pause
        );
        assert!(s.reply().is_some());
    }

    #[test]
    fn a_dead_chroma_makes_misses() {
        configure_with(CHROMA);
        for answer in [None, Some((503u16, &b"down"[..]))] {
            let mut s = stream();
            let token = semantic_request(&mut s, "anything at all");
            s.http_response(token, Some((200, &embedding(&[1.0, 0.0]))));
            let create = last_call();
            s.http_response(create.token, answer);
            assert!(s.request_forwarded(), "fails open");
        }
        assert_eq!(
            fake::counter(&labeled_name(
                "llm_cache_callout_errors_total",
                &[("kind", "chroma")]
            )),
            2
        );
    }
}
