//! Remote checks: the OpenAI moderation API and Llama Guard-style classifiers behind any
//! OpenAI-compatible chat endpoint. Building their requests and reading their answers; the filter
//! makes the calls.

use super::guard::{Role, Segment};
use crate::config::ConfigError;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// What a check does when its service fails (timeout, error status, unreadable answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Fail open: the request goes on.
    Allow,
    /// Fail closed: the request is refused.
    Deny,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// `openai_moderation` or `llama_guard`.
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// The Envoy cluster of the service.
    pub cluster: String,
    /// The calls' `:authority` (default: the cluster name).
    pub authority: Option<String>,
    /// Default: `/v1/moderations` or `/v1/chat/completions`.
    pub path: Option<String>,
    /// The model to ask for (moderation: optional; classifier: required).
    pub model: Option<String>,
    /// The environment variable holding the service's key (sent as a bearer token).
    pub api_key_env: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_on_error")]
    pub on_error: OnError,
    /// Whose text is sent (default: user; the classifier also gets the conversation).
    pub roles: Option<Vec<Role>>,
    /// Moderation: the least score that flags a category (others: the service's own flag).
    #[serde(default)]
    pub thresholds: BTreeMap<String, f64>,
    /// The categories that may flag (default: all).
    pub categories: Option<Vec<String>>,
    /// Classifier: its category codes and names (default: Llama Guard 3's S1..S14).
    pub category_names: Option<BTreeMap<String, String>>,
    /// Classifier: `conversation` (the server's chat template builds the task, as vLLM and
    /// Ollama do for Llama Guard) or `prompt` (the gateway builds the task prompt).
    #[serde(default = "default_format")]
    pub format: ClassifierFormat,
}

fn default_timeout_ms() -> u64 {
    2_000
}
fn default_on_error() -> OnError {
    OnError::Allow
}
fn default_format() -> ClassifierFormat {
    ClassifierFormat::Conversation
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    OpenaiModeration,
    LlamaGuard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierFormat {
    Conversation,
    Prompt,
}

/// Llama Guard 3's hazard categories (the MLCommons taxonomy).
pub const LLAMA_GUARD_3: [(&str, &str); 14] = [
    ("S1", "violent_crimes"),
    ("S2", "non_violent_crimes"),
    ("S3", "sex_related_crimes"),
    ("S4", "child_sexual_exploitation"),
    ("S5", "defamation"),
    ("S6", "specialized_advice"),
    ("S7", "privacy"),
    ("S8", "intellectual_property"),
    ("S9", "indiscriminate_weapons"),
    ("S10", "hate"),
    ("S11", "suicide_self_harm"),
    ("S12", "sexual_content"),
    ("S13", "elections"),
    ("S14", "code_interpreter_abuse"),
];

/// The OpenAI moderation categories.
pub const MODERATION_CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// A compiled remote check.
#[derive(Clone)]
pub struct Check {
    pub name: String,
    pub kind: CheckKind,
    pub cluster: String,
    pub authority: String,
    pub path: String,
    model: Option<String>,
    /// `Bearer <key>`, read from the environment at configure time.
    pub authorization: Option<String>,
    pub timeout: Duration,
    pub on_error: OnError,
    pub roles: Vec<Role>,
    thresholds: BTreeMap<String, f64>,
    categories: Option<Vec<String>>,
    names: BTreeMap<String, String>,
    format: ClassifierFormat,
}

/// Without the credential.
impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("cluster", &self.cluster)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The most text sent to a check per call: services cap their input, and a guard must stay cheap.
const MAX_CHECK_CHARS: usize = 32_000;

/// A check's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Flagged, with the category (a moderation category or a classifier's category name).
    Flagged(String),
    /// The service failed or answered something unreadable (the text is for logs: no content).
    Failed(String),
}

impl Check {
    pub fn compile(
        name: &str,
        config: CheckConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Check, ConfigError> {
        if config.cluster.is_empty() {
            return Err(ConfigError::new("cluster", "must name an Envoy cluster"));
        }
        if !(10..=60_000).contains(&config.timeout_ms) {
            return Err(ConfigError::new(
                "timeout_ms",
                "must be between 10 and 60000",
            ));
        }
        let authorization = match &config.api_key_env {
            Some(var) => Some(format!(
                "Bearer {}",
                env(var).filter(|k| !k.is_empty()).ok_or_else(|| ConfigError::new(
                    "api_key_env",
                    format!("the environment variable {var} is not set (add it to the VM's environment_variables.host_env_keys)")
                ))?
            )),
            None => None,
        };
        let default_path = match config.kind {
            CheckKind::OpenaiModeration => "/v1/moderations",
            CheckKind::LlamaGuard => "/v1/chat/completions",
        };
        if config.kind == CheckKind::LlamaGuard && config.model.is_none() {
            return Err(ConfigError::new(
                "model",
                "a classifier check needs the model to ask (e.g. llama-guard3:8b)",
            ));
        }
        if config.kind == CheckKind::LlamaGuard && !config.thresholds.is_empty() {
            return Err(ConfigError::new(
                "thresholds",
                "a classifier answers categories, not scores: use `categories` to choose which block",
            ));
        }
        for (category, threshold) in &config.thresholds {
            if !(0.0..=1.0).contains(threshold) {
                return Err(ConfigError::new(
                    format!("thresholds.{category}"),
                    "must be between 0 and 1",
                ));
            }
            if config.kind == CheckKind::OpenaiModeration
                && !MODERATION_CATEGORIES.contains(&category.as_str())
            {
                return Err(ConfigError::new(
                    format!("thresholds.{category}"),
                    "not an OpenAI moderation category",
                ));
            }
        }
        let names: BTreeMap<String, String> = config.category_names.unwrap_or_else(|| {
            LLAMA_GUARD_3
                .iter()
                .map(|(code, name)| ((*code).to_string(), (*name).to_string()))
                .collect()
        });
        // A misspelt category would never flag: refuse it.
        for (i, category) in config.categories.iter().flatten().enumerate() {
            let known = match config.kind {
                CheckKind::OpenaiModeration => MODERATION_CATEGORIES.contains(&category.as_str()),
                CheckKind::LlamaGuard => {
                    names.values().any(|n| n == category) || category == "other"
                }
            };
            if !known {
                return Err(ConfigError::new(
                    format!("categories[{i}]"),
                    "not a category this check answers",
                ));
            }
        }
        Ok(Check {
            name: name.to_string(),
            kind: config.kind,
            authority: config.authority.unwrap_or_else(|| config.cluster.clone()),
            cluster: config.cluster,
            path: config.path.unwrap_or_else(|| default_path.to_string()),
            model: config.model,
            authorization,
            timeout: Duration::from_millis(config.timeout_ms),
            on_error: config.on_error,
            // Every role by default: a client writes all of them, system prompts included.
            roles: config
                .roles
                .unwrap_or_else(|| super::guard::ALL_ROLES.to_vec()),
            thresholds: config.thresholds,
            categories: config.categories,
            names,
            format: config.format,
        })
    }

    /// The body of the call checking a request; `None` when the request has no text for it.
    pub fn request_body(&self, segments: &[Segment]) -> Option<Vec<u8>> {
        match self.kind {
            CheckKind::OpenaiModeration => {
                let texts = capped(
                    segments
                        .iter()
                        .filter(|s| self.roles.contains(&s.role))
                        .map(|s| s.text.as_str()),
                );
                self.moderation_body(texts)
            }
            CheckKind::LlamaGuard => {
                // System and tool text join the user's turns (Llama Guard knows two speakers).
                let turns: Vec<(Role, &str)> = segments
                    .iter()
                    .filter(|s| self.roles.contains(&s.role) || s.role == Role::Assistant)
                    .map(|s| (s.role, s.text.as_str()))
                    .collect();
                self.classifier_body(&turns, Role::User)
            }
        }
    }

    /// The body of the call checking an answer (with the request's last user text as context
    /// for a classifier).
    pub fn answer_body(&self, context: Option<&str>, answer: &str) -> Option<Vec<u8>> {
        match self.kind {
            CheckKind::OpenaiModeration => self.moderation_body(capped([answer].into_iter())),
            CheckKind::LlamaGuard => {
                let turns = vec![
                    (Role::User, context.unwrap_or("")),
                    (Role::Assistant, answer),
                ];
                self.classifier_body(&turns, Role::Assistant)
            }
        }
    }

    fn moderation_body(&self, texts: Vec<String>) -> Option<Vec<u8>> {
        if texts.is_empty() {
            return None;
        }
        let body = match &self.model {
            Some(model) => json!({ "model": model, "input": texts }),
            None => json!({ "input": texts }),
        };
        serde_json::to_vec(&body).ok()
    }

    /// A classifier call: the conversation (user and agent turns alternating, starting with the
    /// user, as Llama Guard's template needs) or the task prompt built here.
    fn classifier_body(&self, turns: &[(Role, &str)], judged: Role) -> Option<Vec<u8>> {
        // The last turns matter most: keep the newest text within the cap (pieces collected newest
        // first, then joined once per turn: linear however many parts a message has).
        let mut pieces: Vec<(&str, Vec<&str>)> = Vec::new();
        let mut budget = MAX_CHECK_CHARS;
        for (role, text) in turns.iter().rev() {
            if budget == 0 {
                break;
            }
            let wire = if *role == Role::Assistant {
                "assistant"
            } else {
                "user"
            };
            let text = tail_chars(text, budget);
            budget = budget.saturating_sub(text.chars().count());
            match pieces.last_mut() {
                Some((last, parts)) if *last == wire => parts.push(text),
                _ => pieces.push((wire, vec![text])),
            }
        }
        let mut merged: Vec<(&str, String)> = pieces
            .into_iter()
            .rev()
            .map(|(role, mut parts)| {
                parts.reverse();
                (role, parts.join("\n\n"))
            })
            .collect();
        while merged.first().is_some_and(|(role, _)| *role == "assistant") {
            merged.remove(0);
        }
        if merged.iter().all(|(_, text)| text.trim().is_empty()) {
            return None;
        }
        let messages: Vec<Value> = match self.format {
            ClassifierFormat::Conversation => merged
                .iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
            ClassifierFormat::Prompt => {
                vec![json!({"role": "user", "content": self.task_prompt(&merged, judged)})]
            }
        };
        let body = json!({
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": 20,
            "stream": false,
        });
        serde_json::to_vec(&body).ok()
    }

    /// Llama Guard's task prompt, with this check's categories.
    fn task_prompt(&self, turns: &[(&str, String)], judged: Role) -> String {
        let who = if judged == Role::Assistant {
            "Agent"
        } else {
            "User"
        };
        let mut prompt = format!(
            "Task: Check if there is unsafe content in '{who}' messages in conversations according our safety policy with the below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n"
        );
        let mut codes: Vec<(&String, &String)> = self.names.iter().collect();
        codes.sort_by_key(|(code, _)| {
            code.trim_start_matches('S')
                .parse::<u32>()
                .unwrap_or(u32::MAX)
        });
        for (code, name) in codes {
            prompt.push_str(&format!("{code}: {}.\n", name.replace('_', " ")));
        }
        prompt.push_str("<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n");
        for (role, content) in turns {
            let speaker = if *role == "assistant" {
                "Agent"
            } else {
                "User"
            };
            prompt.push_str(&format!("{speaker}: {content}\n\n"));
        }
        prompt.push_str(&format!(
            "<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST {who} message in the above conversation:\n - First line must read 'safe' or 'unsafe'.\n - If unsafe, a second line must include a comma-separated list of violated categories."
        ));
        prompt
    }

    /// Reads the service's answer.
    pub fn outcome(&self, status: Option<u16>, body: &[u8]) -> Outcome {
        match status {
            None => return Outcome::Failed("no answer (timeout, reset or no healthy host)".into()),
            Some(200) => {}
            Some(status) => return Outcome::Failed(format!("status {status}")),
        }
        let Ok(answer) = serde_json::from_slice::<Value>(body) else {
            return Outcome::Failed("answer is not JSON".into());
        };
        match self.kind {
            CheckKind::OpenaiModeration => self.moderation_outcome(&answer),
            CheckKind::LlamaGuard => self.classifier_outcome(&answer),
        }
    }

    fn may_flag(&self, category: &str) -> bool {
        self.categories
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|c| c == category))
    }

    fn moderation_outcome(&self, answer: &Value) -> Outcome {
        let Some(results) = answer.get("results").and_then(Value::as_array) else {
            return Outcome::Failed("answer has no results".into());
        };
        for result in results {
            let categories = result.get("categories").and_then(Value::as_object);
            let scores = result.get("category_scores").and_then(Value::as_object);
            let (Some(categories), Some(scores)) = (categories, scores) else {
                return Outcome::Failed("a result lacks categories or scores".into());
            };
            // The highest-scoring flagged category names the block.
            let mut worst: Option<(&str, f64)> = None;
            for (category, flagged) in categories {
                if !self.may_flag(category) {
                    continue;
                }
                let score = scores.get(category).and_then(Value::as_f64).unwrap_or(0.0);
                let hit = match self.thresholds.get(category) {
                    Some(threshold) => score >= *threshold,
                    None => flagged.as_bool() == Some(true),
                };
                if hit && worst.is_none_or(|(_, s)| score > s) {
                    worst = Some((category, score));
                }
            }
            if let Some((category, _)) = worst {
                // The service's keys become labels: only the API's own categories.
                let known = MODERATION_CATEGORIES.iter().find(|c| **c == category);
                return Outcome::Flagged(known.map_or("other", |c| *c).to_string());
            }
        }
        Outcome::Pass
    }

    fn classifier_outcome(&self, answer: &Value) -> Outcome {
        let Some(content) = answer
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
        else {
            return Outcome::Failed("answer has no message content".into());
        };
        let mut lines = content.trim().lines();
        match lines.next().map(str::trim) {
            Some(first) if first.eq_ignore_ascii_case("safe") => Outcome::Pass,
            Some(first) if first.eq_ignore_ascii_case("unsafe") => {
                let codes: Vec<&str> = lines
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect();
                let names: Vec<String> = codes
                    .iter()
                    .map(|code| {
                        self.names
                            .get(*code)
                            .cloned()
                            .unwrap_or_else(|| "other".to_string())
                    })
                    .collect();
                match names.iter().find(|name| self.may_flag(name)) {
                    Some(name) => Outcome::Flagged(name.clone()),
                    None if names.is_empty() => Outcome::Flagged("unsafe".into()),
                    None => Outcome::Pass,
                }
            }
            _ => Outcome::Failed("the classifier answered neither safe nor unsafe".into()),
        }
    }

    /// The categories this check can name (for metric labels).
    pub fn category_labels(&self) -> Vec<String> {
        match self.kind {
            CheckKind::OpenaiModeration => MODERATION_CATEGORIES
                .iter()
                .map(|c| c.to_string())
                .collect(),
            CheckKind::LlamaGuard => {
                let mut names: Vec<String> = self.names.values().cloned().collect();
                names.push("other".into());
                names.push("unsafe".into());
                names
            }
        }
    }
}

/// Texts within [`MAX_CHECK_CHARS`], newest kept.
fn capped<'a>(texts: impl DoubleEndedIterator<Item = &'a str>) -> Vec<String> {
    let mut budget = MAX_CHECK_CHARS;
    let mut out: Vec<String> = Vec::new();
    for text in texts.rev() {
        if budget == 0 {
            break;
        }
        let kept = tail_chars(text, budget);
        budget = budget.saturating_sub(kept.chars().count());
        if !kept.trim().is_empty() {
            out.push(kept.to_string());
        }
    }
    out.reverse();
    out
}

/// The last `n` characters of `text`.
fn tail_chars(text: &str, n: usize) -> &str {
    let count = text.chars().count();
    if count <= n {
        return text;
    }
    let skip = count - n;
    text.char_indices()
        .nth(skip)
        .and_then(|(at, _)| text.get(at..))
        .unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(config: Value) -> Check {
        let config: CheckConfig = serde_json::from_value(config).expect("config");
        Check::compile("c", config, &|_| Some("sk-test".into())).expect("compile")
    }

    fn segment(role: Role, text: &str) -> Segment {
        Segment {
            role,
            text: text.into(),
            chars: text.chars().count(),
        }
    }

    #[test]
    fn moderation_requests_and_answers() {
        let c = check(
            json!({"type": "openai_moderation", "cluster": "openai", "api_key_env": "K",
            "thresholds": {"violence": 0.3}}),
        );
        assert_eq!(c.authorization.as_deref(), Some("Bearer sk-test"));
        let body: Value = serde_json::from_slice(
            &c.request_body(&[segment(Role::System, "sys"), segment(Role::User, "hi")])
                .expect("body"),
        )
        .expect("json");
        // Every role by default: a client writes the system prompt too.
        assert_eq!(body, json!({"input": ["sys", "hi"]}));
        let answer = |flag: bool, score: f64| {
            json!({"results": [{"flagged": flag,
                "categories": {"violence": flag, "hate": false},
                "category_scores": {"violence": score, "hate": 0.9}}]})
            .to_string()
        };
        // The threshold wins over the service's flag; unthresholded categories use the flag.
        assert_eq!(
            c.outcome(Some(200), answer(false, 0.4).as_bytes()),
            Outcome::Flagged("violence".into())
        );
        assert_eq!(
            c.outcome(Some(200), answer(true, 0.1).as_bytes()),
            Outcome::Pass
        );
        assert!(matches!(c.outcome(Some(500), b""), Outcome::Failed(_)));
        assert!(matches!(c.outcome(None, b""), Outcome::Failed(_)));
        assert!(matches!(c.outcome(Some(200), b"{}"), Outcome::Failed(_)));
    }

    #[test]
    fn classifier_conversation_and_verdicts() {
        let c = check(json!({"type": "llama_guard", "cluster": "vllm", "model": "llama-guard-3"}));
        let body: Value = serde_json::from_slice(
            &c.request_body(&[
                segment(Role::System, "sys"),
                segment(Role::Assistant, "earlier answer"),
                segment(Role::User, "a"),
                segment(Role::Tool, "b"),
            ])
            .expect("body"),
        )
        .expect("json");
        // System and tool text join the user's turns; turns alternate as the template needs.
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": "sys"},
                {"role": "assistant", "content": "earlier answer"},
                {"role": "user", "content": "a\n\nb"}
            ])
        );
        let say =
            |content: &str| json!({"choices": [{"message": {"content": content}}]}).to_string();
        assert_eq!(c.outcome(Some(200), say("safe").as_bytes()), Outcome::Pass);
        assert_eq!(
            c.outcome(Some(200), say("\nunsafe\nS10,S1").as_bytes()),
            Outcome::Flagged("hate".into())
        );
        assert_eq!(
            c.outcome(Some(200), say("unsafe\nS99").as_bytes()),
            Outcome::Flagged("other".into())
        );
        assert!(matches!(
            c.outcome(Some(200), say("maybe").as_bytes()),
            Outcome::Failed(_)
        ));
        let prompt = check(
            json!({"type": "llama_guard", "cluster": "vllm", "model": "m", "format": "prompt"}),
        );
        let body: Value =
            serde_json::from_slice(&prompt.answer_body(Some("q"), "an answer").expect("body"))
                .expect("json");
        let text = body["messages"][0]["content"].as_str().unwrap_or_default();
        assert!(text.contains("S10: hate."));
        assert!(text.contains("User: q\n\nAgent: an answer"));
        assert!(text.contains("ONLY THE LAST Agent message"));
    }

    #[test]
    fn settings_a_check_cannot_honour_are_refused() {
        for (config, path) in [
            (
                json!({"type": "llama_guard", "cluster": "x", "model": "m", "thresholds": {"S1": 0.5}}),
                "thresholds",
            ),
            (
                json!({"type": "openai_moderation", "cluster": "x", "categories": ["violent"]}),
                "categories[0]",
            ),
            (
                json!({"type": "llama_guard", "cluster": "x", "model": "m", "categories": ["S1"]}),
                "categories[0]",
            ),
        ] {
            let config: CheckConfig = serde_json::from_value(config).expect("config");
            assert_eq!(
                Check::compile("c", config, &|_| None)
                    .expect_err("refused")
                    .path,
                path
            );
        }
    }

    #[test]
    fn a_missing_key_variable_is_a_config_error() {
        let config: CheckConfig = serde_json::from_value(
            json!({"type": "openai_moderation", "cluster": "x", "api_key_env": "NOPE"}),
        )
        .expect("config");
        assert_eq!(
            Check::compile("c", config, &|_| None)
                .expect_err("err")
                .path,
            "api_key_env"
        );
    }

    #[test]
    fn long_text_is_capped_newest_first() {
        let long = "x".repeat(MAX_CHECK_CHARS + 10);
        let texts = capped(["old", long.as_str()].into_iter());
        assert_eq!(texts.len(), 1);
        assert_eq!(texts[0].len(), MAX_CHECK_CHARS);
    }
}
