//! `llm_router`: resolves the requested model to a route (the `x-llm-route` value Envoy's routes match)
//! and the model name the provider should see.

use crate::api::{classify, error_reply, ApiFlavor, Endpoint, ErrorDetail, ErrorKind, LocalReply};
use crate::config::ConfigError;
use crate::pattern::Pattern;
use crate::request::{body_error_reply, missing_model_reply, read_fields, replace_model};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;

pub const DEFAULT_MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;
/// How many model names a 404 message lists before "and N more".
const LISTED_IN_ERRORS: usize = 20;

/// The filter's configuration, as written in Envoy's `configuration` field.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// The model table. Exact names win over globs; globs are tried in order.
    #[serde(default)]
    pub models: Vec<ModelEntry>,
    /// Route for models the table does not know. Absent: such requests get 404 `model_not_found`.
    #[serde(default)]
    pub default_route: Option<String>,
    /// Larger request bodies get 413 before they are buffered whole.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Answer `GET /v1/models` and `GET /v1/models/{id}` from the table.
    #[serde(default = "default_true")]
    pub serve_models: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            models: Vec::new(),
            default_route: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            serve_models: true,
        }
    }
}

fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

fn default_true() -> bool {
    true
}

/// One row of the model table: set exactly one of `route`, `alias_of` or `targets`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The model name clients send, or a glob (`gpt-4o*`).
    pub name: String,
    /// Send to this route (`x-llm-route`).
    #[serde(default)]
    pub route: Option<String>,
    /// The provider's name for the model, written into the body. Default: the name the client sent.
    #[serde(default)]
    pub model: Option<String>,
    /// This name is another name for the exact entry given here.
    #[serde(default)]
    pub alias_of: Option<String>,
    /// Split traffic between routes by weight.
    #[serde(default)]
    pub targets: Vec<WeightedTarget>,
    /// With `targets`: requests with the same value of this header get the same target
    /// (`x-llm-consumer` makes the split sticky per consumer).
    #[serde(default)]
    pub sticky_header: Option<String>,
    /// `owned_by` in `GET /v1/models`.
    #[serde(default)]
    pub owned_by: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WeightedTarget {
    pub route: String,
    #[serde(default)]
    pub model: Option<String>,
    pub weight: u32,
}

/// The compiled, validated router.
#[derive(Debug, Clone)]
pub struct Router {
    entries: Vec<Entry>,
    exact: HashMap<String, usize>,
    globs: Vec<(Pattern, usize)>,
    default_route: Option<String>,
    max_body_bytes: u64,
    serve_models: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    owned_by: String,
    kind: EntryKind,
}

#[derive(Debug, Clone)]
enum EntryKind {
    Route {
        route: String,
        model: Option<String>,
    },
    Alias {
        target: usize,
    },
    Split {
        targets: Vec<WeightedTarget>,
        total: u64,
        sticky_header: Option<String>,
    },
}

fn check_route_name(path: &str, route: &str) -> Result<(), ConfigError> {
    let ok = !route.is_empty()
        && route.len() <= 128
        && route
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            "route names are 1-128 letters, digits, '-', '_' or '.'",
        ))
    }
}

fn check_header_name(path: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            "header names are lowercase letters, digits, '-' or '_'",
        ))
    }
}

impl Router {
    pub fn compile(config: RouterConfig) -> Result<Router, ConfigError> {
        if config.max_body_bytes == 0 {
            return Err(ConfigError::new("max_body_bytes", "must be greater than 0"));
        }
        if let Some(route) = &config.default_route {
            check_route_name("default_route", route)?;
        }
        let mut exact = HashMap::new();
        for (index, entry) in config.models.iter().enumerate() {
            let path = format!("models[{index}].name");
            if entry.name.is_empty() {
                return Err(ConfigError::new(path, "must not be empty"));
            }
            if !Pattern::new(&entry.name).is_glob()
                && exact.insert(entry.name.clone(), index).is_some()
            {
                return Err(ConfigError::new(path, "this model name is listed twice"));
            }
        }
        let mut entries = Vec::with_capacity(config.models.len());
        let mut globs = Vec::new();
        for (index, entry) in config.models.iter().enumerate() {
            let at = |field: &str| format!("models[{index}].{field}");
            let pattern = Pattern::new(&entry.name);
            let kinds_set = usize::from(entry.route.is_some())
                + usize::from(entry.alias_of.is_some())
                + usize::from(!entry.targets.is_empty());
            if kinds_set != 1 {
                return Err(ConfigError::new(
                    format!("models[{index}]"),
                    "set exactly one of `route`, `alias_of` or `targets`",
                ));
            }
            if entry.model.is_some() && entry.route.is_none() {
                return Err(ConfigError::new(at("model"), "only valid with `route`"));
            }
            if entry.sticky_header.is_some() && entry.targets.is_empty() {
                return Err(ConfigError::new(
                    at("sticky_header"),
                    "only valid with `targets`",
                ));
            }
            let kind = if let Some(route) = &entry.route {
                check_route_name(&at("route"), route)?;
                if entry.model.as_deref() == Some("") {
                    return Err(ConfigError::new(at("model"), "must not be empty"));
                }
                EntryKind::Route {
                    route: route.clone(),
                    model: entry.model.clone(),
                }
            } else if let Some(alias_of) = &entry.alias_of {
                if pattern.is_glob() {
                    return Err(ConfigError::new(
                        at("alias_of"),
                        "a glob cannot be an alias",
                    ));
                }
                let target = *exact.get(alias_of).ok_or_else(|| {
                    ConfigError::new(at("alias_of"), "names no exact model entry in `models`")
                })?;
                if config
                    .models
                    .get(target)
                    .is_some_and(|t| t.alias_of.is_some())
                {
                    return Err(ConfigError::new(
                        at("alias_of"),
                        "must name a model with a `route` or `targets`, not another alias",
                    ));
                }
                EntryKind::Alias { target }
            } else {
                let mut total: u64 = 0;
                for (t, target) in entry.targets.iter().enumerate() {
                    check_route_name(&at(&format!("targets[{t}].route")), &target.route)?;
                    if target.weight == 0 {
                        return Err(ConfigError::new(
                            at(&format!("targets[{t}].weight")),
                            "must be greater than 0",
                        ));
                    }
                    total += u64::from(target.weight);
                }
                if let Some(header) = &entry.sticky_header {
                    check_header_name(&at("sticky_header"), header)?;
                }
                EntryKind::Split {
                    targets: entry.targets.clone(),
                    total,
                    sticky_header: entry.sticky_header.clone(),
                }
            };
            if pattern.is_glob() {
                globs.push((pattern, index));
            }
            entries.push(Entry {
                name: entry.name.clone(),
                owned_by: entry
                    .owned_by
                    .clone()
                    .unwrap_or_else(|| "llm-gateway".to_string()),
                kind,
            });
        }
        Ok(Router {
            entries,
            exact,
            globs,
            default_route: config.default_route,
            max_body_bytes: config.max_body_bytes,
            serve_models: config.serve_models,
        })
    }

    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }

    /// The sticky headers the table uses, so the glue reads only those.
    pub fn sticky_headers(&self) -> Vec<&str> {
        let mut headers: Vec<&str> = self
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Split {
                    sticky_header: Some(h),
                    ..
                } => Some(h.as_str()),
                _ => None,
            })
            .collect();
        headers.sort_unstable();
        headers.dedup();
        headers
    }

    /// Every (entry label, route) pair a decision can produce, for defining metrics up front.
    pub fn decision_labels(&self) -> Vec<(String, String)> {
        let mut labels = Vec::new();
        for entry in &self.entries {
            match &entry.kind {
                EntryKind::Route { route, .. } => labels.push((entry.name.clone(), route.clone())),
                EntryKind::Split { targets, .. } => {
                    for target in targets {
                        labels.push((entry.name.clone(), target.route.clone()));
                    }
                }
                EntryKind::Alias { .. } => {}
            }
        }
        if let Some(route) = &self.default_route {
            labels.push((DEFAULT_LABEL.to_string(), route.clone()));
        }
        labels
    }

    fn find(&self, model: &str) -> Option<usize> {
        self.exact.get(model).copied().or_else(|| {
            self.globs
                .iter()
                .find(|(p, _)| p.matches(model))
                .map(|(_, i)| *i)
        })
    }

    /// Resolves `asked`. `sticky_value` gives a sticky header's value; `request_key` (the request id)
    /// spreads non-sticky splits.
    pub fn resolve<'a>(
        &'a self,
        asked: &str,
        sticky_value: &dyn Fn(&str) -> Option<String>,
        request_key: &str,
    ) -> Option<Resolution> {
        let Some(mut index) = self.find(asked) else {
            return self.default_route.as_ref().map(|route| Resolution {
                entry: DEFAULT_LABEL.to_string(),
                route: route.clone(),
                upstream_model: asked.to_string(),
            });
        };
        let mut name_for_provider = asked.to_string();
        if let Some(Entry {
            kind: EntryKind::Alias { target },
            ..
        }) = self.entries.get(index)
        {
            index = *target;
            name_for_provider = self.entries.get(index)?.name.clone();
        }
        let entry: &'a Entry = self.entries.get(index)?;
        let (route, model) = match &entry.kind {
            EntryKind::Route { route, model } => (route, model.as_ref()),
            EntryKind::Split {
                targets,
                total,
                sticky_header,
            } => {
                let key = sticky_header
                    .as_deref()
                    .and_then(sticky_value)
                    .unwrap_or_else(|| request_key.to_string());
                let target = pick_weighted(targets, *total, key.as_bytes())?;
                (&target.route, target.model.as_ref())
            }
            EntryKind::Alias { .. } => return None, // validated: aliases never chain
        };
        Some(Resolution {
            entry: entry.name.clone(),
            route: route.clone(),
            upstream_model: model.cloned().unwrap_or(name_for_provider),
        })
    }

    fn listed_names(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| !Pattern::new(&e.name).is_glob())
            .map(|e| e.name.as_str())
            .collect()
    }

    fn model_object(&self, id: &str, owned_by: &str) -> serde_json::Value {
        json!({"id": id, "object": "model", "created": 0, "owned_by": owned_by})
    }
}

/// The metric label of requests sent to `default_route`.
pub const DEFAULT_LABEL: &str = "(default)";

/// Where a model goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The table entry that matched (its name or glob), `(default)` for `default_route`: a bounded label.
    pub entry: String,
    pub route: String,
    pub upstream_model: String,
}

/// Picks a target with probability weight/total from a hash of `key`: the same key always picks the
/// same target, on every worker and after restarts, which is what makes splits sticky.
pub fn pick_weighted<'a>(
    targets: &'a [WeightedTarget],
    total: u64,
    key: &[u8],
) -> Option<&'a WeightedTarget> {
    if total == 0 {
        return None;
    }
    let mut point = stable_hash(key) % total;
    for target in targets {
        let weight = u64::from(target.weight);
        if point < weight {
            return Some(target);
        }
        point -= weight;
    }
    targets.last()
}

/// FNV-1a, then the splitmix64 finalizer so nearby keys (sequential ids) spread evenly.
fn stable_hash(key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// What to do once the request headers are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadersDecision {
    /// Pass the request on untouched.
    PassThrough,
    /// Answer now.
    Reply(LocalReply),
    /// Buffer the body, then call [`Router::on_body`].
    ReadBody(ApiFlavor),
}

/// What the headers phase needs to know about the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub content_length: Option<&'a str>,
    /// The request ends with its headers (no body).
    pub end_of_stream: bool,
}

fn is_json_media_type(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

fn invalid(flavor: ApiFlavor, message: &str, param: Option<&str>) -> LocalReply {
    error_reply(
        flavor,
        ErrorKind::InvalidRequest,
        message,
        ErrorDetail { code: None, param },
    )
}

/// The routing decision for a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The model as the client asked (`x-llm-model`).
    pub model: String,
    pub resolution: Resolution,
    pub stream: bool,
    /// The request's output limit (`x-llm-max-tokens`), for llm_usage's reservations.
    pub max_output_tokens: Option<u64>,
    /// `temperature` and `top_p` as sent (for traces).
    pub temperature: Option<String>,
    pub top_p: Option<String>,
    /// The body to send instead, when the provider's model name differs from the asked one.
    pub new_body: Option<Vec<u8>>,
}

impl Router {
    /// Local replies for `GET /v1/models` and `GET /v1/models/{id}`; everything else from the headers.
    pub fn on_headers(&self, head: &RequestHead<'_>) -> HeadersDecision {
        match classify(head.method, head.path) {
            Endpoint::Other => HeadersDecision::PassThrough,
            Endpoint::ListModels | Endpoint::GetModel(_) if !self.serve_models => {
                HeadersDecision::PassThrough
            }
            Endpoint::ListModels => HeadersDecision::Reply(self.list_models()),
            Endpoint::GetModel(id) => HeadersDecision::Reply(self.get_model(id)),
            Endpoint::Inference(flavor) => {
                if let Some(content_type) = head.content_type {
                    if !is_json_media_type(content_type) {
                        return HeadersDecision::Reply(invalid(
                            flavor,
                            "The request body must be JSON: send `Content-Type: application/json`.",
                            None,
                        ));
                    }
                }
                if let Some(length) = head
                    .content_length
                    .and_then(|l| l.trim().parse::<u64>().ok())
                {
                    if length > self.max_body_bytes {
                        return HeadersDecision::Reply(self.too_large(flavor));
                    }
                }
                if head.end_of_stream {
                    return HeadersDecision::Reply(invalid(
                        flavor,
                        "The request body is empty: send a JSON object with a `model` field.",
                        None,
                    ));
                }
                HeadersDecision::ReadBody(flavor)
            }
        }
    }

    pub fn too_large(&self, flavor: ApiFlavor) -> LocalReply {
        error_reply(
            flavor,
            ErrorKind::RequestTooLarge,
            &format!(
                "The request body is larger than this gateway accepts ({} bytes). Shorten the prompt.",
                self.max_body_bytes
            ),
            ErrorDetail::default(),
        )
    }

    /// Routes a complete body.
    pub fn on_body(
        &self,
        flavor: ApiFlavor,
        body: &[u8],
        sticky_value: &dyn Fn(&str) -> Option<String>,
        request_key: &str,
    ) -> Result<Routed, LocalReply> {
        if body.len() as u64 > self.max_body_bytes {
            return Err(self.too_large(flavor));
        }
        let fields = read_fields(body).map_err(|err| body_error_reply(flavor, &err))?;
        let Some(model) = fields.model else {
            return Err(missing_model_reply(flavor));
        };
        let Some(resolution) = self.resolve(&model, sticky_value, request_key) else {
            return Err(self.unknown_model(flavor, &model));
        };
        let new_body = match (&fields.model_span, resolution.upstream_model != model) {
            (Some(span), true) => replace_model(body, span.clone(), &resolution.upstream_model),
            _ => None,
        };
        Ok(Routed {
            model,
            resolution,
            stream: fields.stream,
            max_output_tokens: fields.max_output_tokens,
            temperature: fields.temperature,
            top_p: fields.top_p,
            new_body,
        })
    }

    fn unknown_model(&self, flavor: ApiFlavor, model: &str) -> LocalReply {
        let names = self.listed_names();
        let mut listed = names
            .iter()
            .take(LISTED_IN_ERRORS)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        if names.len() > LISTED_IN_ERRORS {
            listed.push_str(&format!(" and {} more", names.len() - LISTED_IN_ERRORS));
        }
        // The model name is the client's own input; cap it so the reply stays small.
        let shown: String = model.chars().take(100).collect();
        let message = if listed.is_empty() {
            format!("The model `{shown}` does not exist on this gateway.")
        } else {
            format!(
                "The model `{shown}` does not exist on this gateway. Available models: {listed}."
            )
        };
        error_reply(
            flavor,
            ErrorKind::NotFound,
            &message,
            ErrorDetail {
                code: Some("model_not_found"),
                param: Some("model"),
            },
        )
    }

    fn list_models(&self) -> LocalReply {
        let data: Vec<serde_json::Value> = self
            .entries
            .iter()
            .filter(|e| !Pattern::new(&e.name).is_glob())
            .map(|e| self.model_object(&e.name, &e.owned_by))
            .collect();
        ok_json(json!({"object": "list", "data": data}))
    }

    fn get_model(&self, id: &str) -> LocalReply {
        match self.find(id).and_then(|i| self.entries.get(i)) {
            Some(entry) => ok_json(self.model_object(id, &entry.owned_by)),
            None => self.unknown_model(ApiFlavor::OpenAi, id),
        }
    }
}

fn ok_json(body: serde_json::Value) -> LocalReply {
    LocalReply {
        status: 200,
        headers: vec![("content-type".to_string(), "application/json".to_string())],
        body: body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use serde_json::Value;

    fn router(json: &str) -> Router {
        Router::compile(parse::<RouterConfig>(json.as_bytes()).unwrap()).unwrap()
    }

    fn config_error(json: &str) -> ConfigError {
        Router::compile(parse::<RouterConfig>(json.as_bytes()).unwrap()).unwrap_err()
    }

    fn demo() -> Router {
        router(
            r#"{"models":[
                {"name":"gpt-4o-mini","route":"openai"},
                {"name":"fast","alias_of":"gpt-4o-mini"},
                {"name":"claude-sonnet-4-5","route":"anthropic","owned_by":"anthropic"},
                {"name":"gpt-4o","route":"gpt-4o-pool"},
                {"name":"text-embedding-3-small","route":"openai"},
                {"name":"vendor-*","route":"openai","model":"gpt-4o-mini"},
                {"name":"gpt-*","route":"openai"},
                {"name":"ab","targets":[{"route":"openai","weight":3,"model":"gpt-4o-mini"},
                                         {"route":"anthropic","weight":1,"model":"claude-sonnet-4-5"}],
                 "sticky_header":"x-llm-consumer"}
            ]}"#,
        )
    }

    fn no_sticky(_: &str) -> Option<String> {
        None
    }

    fn resolve(router: &Router, model: &str) -> Option<Resolution> {
        router.resolve(model, &no_sticky, "req-1")
    }

    #[test]
    fn exact_alias_and_glob_resolution() {
        let r = demo();
        let exact = resolve(&r, "gpt-4o-mini").unwrap();
        assert_eq!(
            (exact.route.as_str(), exact.upstream_model.as_str()),
            ("openai", "gpt-4o-mini")
        );
        let alias = resolve(&r, "fast").unwrap();
        assert_eq!(
            (alias.route.as_str(), alias.upstream_model.as_str()),
            ("openai", "gpt-4o-mini")
        );
        assert_eq!(alias.entry, "gpt-4o-mini");
        // Exact beats glob: gpt-4o matches `gpt-*` too.
        assert_eq!(resolve(&r, "gpt-4o").unwrap().route, "gpt-4o-pool");
        let glob = resolve(&r, "gpt-4.1-nano").unwrap();
        assert_eq!(
            (glob.route.as_str(), glob.upstream_model.as_str()),
            ("openai", "gpt-4.1-nano")
        );
        assert_eq!(glob.entry, "gpt-*");
        let rewritten = resolve(&r, "vendor-x").unwrap();
        assert_eq!(rewritten.upstream_model, "gpt-4o-mini");
        assert_eq!(resolve(&r, "llama"), None);
    }

    #[test]
    fn default_route_catches_unknown_models() {
        let r = router(r#"{"models":[{"name":"a","route":"x"}],"default_route":"fallback"}"#);
        let res = resolve(&r, "zzz").unwrap();
        assert_eq!(res.route, "fallback");
        assert_eq!(res.upstream_model, "zzz");
        assert_eq!(res.entry, DEFAULT_LABEL);
    }

    #[test]
    fn weighted_split_follows_weights() {
        let r = demo();
        let draws = 20_000;
        let openai = (0..draws)
            .filter(|i| {
                r.resolve("ab", &no_sticky, &format!("request-{i}"))
                    .unwrap()
                    .route
                    == "openai"
            })
            .count();
        let share = openai as f64 / draws as f64;
        assert!((share - 0.75).abs() < 0.02, "openai share {share}");
    }

    #[test]
    fn sticky_split_keeps_a_consumer_on_one_target() {
        let r = demo();
        for consumer in ["team-a", "team-b", "team-c", "x"] {
            let sticky = |h: &str| (h == "x-llm-consumer").then(|| consumer.to_string());
            let first = r.resolve("ab", &sticky, "req-0").unwrap();
            for i in 1..200 {
                assert_eq!(
                    r.resolve("ab", &sticky, &format!("req-{i}")).unwrap(),
                    first
                );
            }
        }
        // Across consumers both targets are used.
        let routes: std::collections::HashSet<String> = (0..100)
            .map(|i| {
                let sticky = move |_: &str| Some(format!("consumer-{i}"));
                r.resolve("ab", &sticky, "same-request").unwrap().route
            })
            .collect();
        assert_eq!(routes.len(), 2);
        assert_eq!(r.sticky_headers(), vec!["x-llm-consumer"]);
    }

    #[test]
    fn pick_weighted_edges() {
        let targets = vec![WeightedTarget {
            route: "only".into(),
            model: None,
            weight: 5,
        }];
        assert_eq!(pick_weighted(&targets, 5, b"k").unwrap().route, "only");
        assert!(pick_weighted(&targets, 0, b"k").is_none());
    }

    #[test]
    fn config_errors_name_the_field() {
        let cases = [
            (r#"{"models":[{"name":"a"}]}"#, "models[0]", "exactly one"),
            (
                r#"{"models":[{"name":"a","route":"x","alias_of":"b"}]}"#,
                "models[0]",
                "exactly one",
            ),
            (
                r#"{"models":[{"name":"a","route":"x"},{"name":"a","route":"y"}]}"#,
                "models[1].name",
                "twice",
            ),
            (
                r#"{"models":[{"name":"","route":"x"}]}"#,
                "models[0].name",
                "empty",
            ),
            (
                r#"{"models":[{"name":"a","route":"has space"}]}"#,
                "models[0].route",
                "route names",
            ),
            (
                r#"{"models":[{"name":"a","alias_of":"missing"}]}"#,
                "models[0].alias_of",
                "no exact",
            ),
            (
                r#"{"models":[{"name":"a","route":"x"},{"name":"b","alias_of":"a"},{"name":"c","alias_of":"b"}]}"#,
                "models[2].alias_of",
                "another alias",
            ),
            (
                r#"{"models":[{"name":"a*","route":"x"},{"name":"b","alias_of":"a*"}]}"#,
                "models[1].alias_of",
                "no exact",
            ),
            (
                r#"{"models":[{"name":"a","targets":[{"route":"x","weight":0}]}]}"#,
                "models[0].targets[0].weight",
                "greater",
            ),
            (
                r#"{"models":[{"name":"a","alias_of":"a","model":"m"}]}"#,
                "models[0].model",
                "only valid",
            ),
            (
                r#"{"models":[{"name":"a","route":"x","sticky_header":"h"}]}"#,
                "models[0].sticky_header",
                "only valid",
            ),
            (
                r#"{"models":[{"name":"a","targets":[{"route":"x","weight":1}],"sticky_header":"X-Up"}]}"#,
                "models[0].sticky_header",
                "lowercase",
            ),
            (r#"{"max_body_bytes":0}"#, "max_body_bytes", "greater"),
            (r#"{"default_route":"a b"}"#, "default_route", "route names"),
        ];
        for (json, path, message) in cases {
            let err = config_error(json);
            assert_eq!(err.path, path, "{json}: {err}");
            assert!(err.message.contains(message), "{json}: {err}");
        }
        let err = parse::<RouterConfig>(br#"{"models":[{"name":"a","rout":"x"}]}"#).unwrap_err();
        assert_eq!(err.path, "models[0].rout");
    }

    fn head<'a>(method: &'a str, path: &'a str) -> RequestHead<'a> {
        RequestHead {
            method,
            path,
            content_type: Some("application/json"),
            ..Default::default()
        }
    }

    #[test]
    fn classify_paths() {
        assert_eq!(
            classify("POST", "/v1/chat/completions?x=1"),
            Endpoint::Inference(ApiFlavor::OpenAi)
        );
        assert_eq!(
            classify("POST", "/v1/responses"),
            Endpoint::Inference(ApiFlavor::OpenAi)
        );
        assert_eq!(
            classify("POST", "/v1/messages"),
            Endpoint::Inference(ApiFlavor::Anthropic)
        );
        assert_eq!(classify("GET", "/v1/chat/completions"), Endpoint::Other);
        assert_eq!(classify("GET", "/v1/models"), Endpoint::ListModels);
        assert_eq!(
            classify("GET", "/v1/models/gpt-4o"),
            Endpoint::GetModel("gpt-4o")
        );
        assert_eq!(classify("GET", "/v1/modelsx"), Endpoint::Other);
        assert_eq!(classify("POST", "/v1/files"), Endpoint::Other);
    }

    #[test]
    fn headers_phase_decisions() {
        let r = demo();
        assert_eq!(
            r.on_headers(&head("POST", "/v1/chat/completions")),
            HeadersDecision::ReadBody(ApiFlavor::OpenAi)
        );
        assert_eq!(
            r.on_headers(&head("POST", "/v1/files")),
            HeadersDecision::PassThrough
        );
        let mut h = head("POST", "/v1/messages");
        h.content_type = Some("text/plain");
        match r.on_headers(&h) {
            HeadersDecision::Reply(reply) => {
                assert_eq!(reply.status, 400);
                let body: Value = serde_json::from_str(&reply.body).unwrap();
                assert_eq!(body["type"], "error", "Anthropic shape on /v1/messages");
            }
            other => panic!("{other:?}"),
        }
        h.content_type = Some("Application/JSON; charset=utf-8");
        assert_eq!(
            r.on_headers(&h),
            HeadersDecision::ReadBody(ApiFlavor::Anthropic)
        );
        h.content_type = None;
        assert_eq!(
            r.on_headers(&h),
            HeadersDecision::ReadBody(ApiFlavor::Anthropic)
        );
        let mut big = head("POST", "/v1/chat/completions");
        big.content_length = Some("999999999");
        assert!(matches!(
            r.on_headers(&big),
            HeadersDecision::Reply(LocalReply { status: 413, .. })
        ));
        let mut empty = head("POST", "/v1/chat/completions");
        empty.end_of_stream = true;
        assert!(matches!(
            r.on_headers(&empty),
            HeadersDecision::Reply(LocalReply { status: 400, .. })
        ));
    }

    #[test]
    fn models_endpoints() {
        let r = demo();
        let HeadersDecision::Reply(list) = r.on_headers(&head("GET", "/v1/models")) else {
            panic!()
        };
        let body: Value = serde_json::from_str(&list.body).unwrap();
        let ids: Vec<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "gpt-4o-mini",
                "fast",
                "claude-sonnet-4-5",
                "gpt-4o",
                "text-embedding-3-small",
                "ab"
            ]
        );
        assert_eq!(body["object"], "list");
        assert_eq!(body["data"][2]["owned_by"], "anthropic");
        let HeadersDecision::Reply(one) = r.on_headers(&head("GET", "/v1/models/fast")) else {
            panic!()
        };
        assert_eq!(one.status, 200);
        let HeadersDecision::Reply(missing) = r.on_headers(&head("GET", "/v1/models/llama")) else {
            panic!()
        };
        assert_eq!(missing.status, 404);
        let off = router(r#"{"serve_models":false}"#);
        assert_eq!(
            off.on_headers(&head("GET", "/v1/models")),
            HeadersDecision::PassThrough
        );
    }

    fn route_body(r: &Router, body: &str) -> Result<Routed, LocalReply> {
        r.on_body(ApiFlavor::OpenAi, body.as_bytes(), &no_sticky, "req")
    }

    #[test]
    fn body_routing_rewrites_only_when_the_name_changes() {
        let r = demo();
        let same = route_body(&r, r#"{"model":"gpt-4o-mini","messages":[]}"#).unwrap();
        assert_eq!(same.new_body, None);
        assert_eq!(same.resolution.route, "openai");
        let alias = route_body(&r, r#"{"model":"fast","stream":true,"messages":[]}"#).unwrap();
        assert_eq!(alias.model, "fast");
        assert!(alias.stream);
        assert_eq!(
            String::from_utf8(alias.new_body.unwrap()).unwrap(),
            r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#
        );
    }

    #[test]
    fn body_errors_have_the_right_status_and_shape() {
        let r = demo();
        let cases = [
            ("", 400, None),
            ("{", 400, None),
            ("[]", 400, None),
            (r#"{"messages":[]}"#, 400, Some("model")),
            (r#"{"model":7}"#, 400, Some("model")),
            (r#"{"model":"a","model":"b"}"#, 400, Some("model")),
            (r#"{"model":"llama-3"}"#, 404, Some("model")),
        ];
        for (body, status, param) in cases {
            let err = route_body(&r, body).unwrap_err();
            assert_eq!(err.status, status, "{body}");
            let json: Value = serde_json::from_str(&err.body).unwrap();
            assert_eq!(json["error"]["param"].as_str(), param, "{body}");
        }
        let unknown = route_body(&r, r#"{"model":"llama-3"}"#).unwrap_err();
        let json: Value = serde_json::from_str(&unknown.body).unwrap();
        assert_eq!(json["error"]["code"], "model_not_found");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("llama-3") && message.contains("gpt-4o-mini, fast"),
            "{message}"
        );
        let anthropic = r
            .on_body(ApiFlavor::Anthropic, b"{", &no_sticky, "r")
            .unwrap_err();
        let json: Value = serde_json::from_str(&anthropic.body).unwrap();
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert_eq!(json["type"], "error");
    }

    #[test]
    fn oversized_body_is_413() {
        let r = router(r#"{"models":[{"name":"a","route":"x"}],"max_body_bytes":10}"#);
        assert_eq!(
            route_body(&r, r#"{"model":"a","x":1}"#).unwrap_err().status,
            413
        );
    }

    #[test]
    fn unknown_model_message_is_capped() {
        let r = demo();
        let long = "m".repeat(5000);
        let err = route_body(&r, &format!(r#"{{"model":"{long}"}}"#)).unwrap_err();
        assert!(err.body.len() < 1000);
    }
}
