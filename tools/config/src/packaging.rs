//! The other two packagings of a separate-modules config, as text transformations: the downstream
//! filters merged into llm_gateway, and every Wasm filter as the native module's. They work on any
//! config shaped like the generator's output (the filters in an HCM's `http_filters` at the demo's
//! indentation), so the integration tests can apply them to configs they edited.

use serde_json::Value;

const WASM_TYPE: &str = "\"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// The downstream filters llm_gateway holds, with their section names, in chain order.
pub const GATEWAY_SECTIONS: [(&str, &str); 6] = [
    ("auth", "llm_auth"),
    ("router", "llm_router"),
    ("guard", "llm_guard"),
    ("cache", "llm_cache"),
    ("pii", "llm_pii"),
    ("usage", "llm_usage"),
];

/// A Wasm HTTP filter as an `http_filters` item: `comment` (whole `#` lines) above it, `vm_extra`
/// (lines at vm_config's indentation) after its code, `json` its configuration (indented 10 after its
/// first line).
pub fn wasm_filter_item(
    comment: &str,
    name: &str,
    file: &str,
    vm_extra: &str,
    json: &str,
    policy: &str,
) -> String {
    format!(
        r#"{comment}
- name: {name}
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
      name: {name}
      root_id: {name}
      vm_config:
        vm_id: {name}
        runtime: envoy.wasm.runtime.v8
        code: {{ local: {{ filename: {file} }} }}
{vm_extra}      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: |
          {json}
      failure_policy: {policy}
      allow_on_headers_stop_iteration: true
"#
    )
}

/// Leading spaces (YAML indents with spaces only; counting bytes of ASCII keeps slicing safe).
fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Where the `configuration` value of the filter whose `root_id` is `filter` is written: the byte
/// range of `value: ...` (a single-line scalar or a `|` block) and the JSON it holds.
fn filter_config_span(config: &str, filter: &str) -> Result<(usize, usize, String), String> {
    let anchor = format!("root_id: {filter}\n");
    let start = config
        .find(&anchor)
        .ok_or_else(|| format!("no filter with root_id {filter}"))?;
    let value_at = start
        + config[start..]
            .find("value: ")
            .ok_or_else(|| format!("no configuration value for {filter}"))?;
    let line_start = config[..value_at].rfind('\n').map_or(0, |i| i + 1);
    let indent = value_at - line_start;
    let line_end = config[value_at..]
        .find('\n')
        .map_or(config.len(), |i| value_at + i + 1);
    let scalar = config[value_at + "value: ".len()..line_end].trim();
    if !scalar.starts_with(['|', '>']) {
        let json = scalar.trim_matches('\'').replace("''", "'");
        return Ok((value_at, line_end, json));
    }
    // The block runs while lines are blank or indented deeper than `value:`.
    let mut end = line_end;
    while end < config.len() {
        let next = config[end..]
            .find('\n')
            .map_or(config.len(), |i| end + i + 1);
        let line = &config[end..next];
        if !(line.trim().is_empty() || indent_of(line) > indent) {
            break;
        }
        end = next;
    }
    Ok((value_at, end, config[line_end..end].to_string()))
}

/// Sets the JSON `configuration` of the filter whose `root_id` is `filter`, replacing its `value:`
/// (a single-line scalar or a `|` block) with a single-quoted scalar.
pub fn set_filter_config(config: &str, filter: &str, json: &str) -> Result<String, String> {
    if json.contains('\'') {
        return Err("configuration JSON must not contain single quotes".into());
    }
    let (value_at, end, _) = filter_config_span(config, filter)?;
    Ok(format!(
        "{}value: '{}'\n{}",
        &config[..value_at],
        json,
        &config[end..]
    ))
}

/// The JSON `configuration` of the filter whose `root_id` is `filter`.
pub fn filter_config(config: &str, filter: &str) -> Result<Value, String> {
    let (_, _, json) = filter_config_span(config, filter)?;
    serde_json::from_str(&json).map_err(|err| format!("{filter}'s configuration: {err}"))
}

/// Every Wasm filter of `config` (downstream or upstream) as the same filter of libllm_gateway.so:
/// same name, same JSON configuration. Environment variables that a Wasm VM was given in
/// `environment_variables.key_values` are read from Envoy's own environment by the native module;
/// they become `# env NAME=value` lines at the top, for whoever starts Envoy to export.
pub fn to_native(config: &str) -> Result<String, String> {
    let lines: Vec<&str> = config.lines().collect();
    let mut out = String::new();
    let mut env = Vec::new();
    let mut host_env = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim() != WASM_TYPE {
            out.push_str(line);
            out.push('\n');
            i += 1;
            continue;
        }
        let indent = indent_of(line);
        let mut end = i + 1;
        while end < lines.len() {
            let l = lines[end];
            if !l.trim().is_empty() && indent_of(l) < indent {
                break;
            }
            end += 1;
        }
        let block = &lines[i + 1..end];
        let name = block
            .iter()
            .find_map(|l| l.trim().strip_prefix("name: "))
            .ok_or("a Wasm filter without config.name")?
            .trim();
        let value_at = block
            .iter()
            .position(|l| l.trim() == "value: |" || l.trim().starts_with("value: '"))
            .ok_or_else(|| format!("Wasm filter {name} without a configuration value"))?;
        let value_indent = indent_of(block[value_at]);
        // `value: '<json>'` (set_filter_config's form) or a `value: |` block.
        let json: Vec<&str> = match block[value_at].trim().strip_prefix("value: '") {
            Some(inline) => vec![inline.strip_suffix('\'').unwrap_or(inline)],
            None => block[value_at + 1..]
                .iter()
                .copied()
                .take_while(|l| l.trim().is_empty() || indent_of(l) > value_indent)
                .collect(),
        };
        if let Some(at) = block.iter().position(|l| l.trim() == "key_values:") {
            let kv_indent = indent_of(block[at]);
            for l in &block[at + 1..] {
                if indent_of(l) <= kv_indent {
                    break;
                }
                if let Some((k, v)) = l.trim().split_once(": ") {
                    // A single-quoted YAML scalar ('' is a quote) is the text inside the quotes.
                    let v = match v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
                        Some(inner) => inner.replace("''", "'"),
                        None => v.to_string(),
                    };
                    env.push(format!("# env {k}={v}"));
                }
            }
        }
        host_env.extend(host_env_keys(block.iter().copied()));
        let pad = " ".repeat(indent);
        out.push_str(&format!(
            "{pad}\"@type\": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter\n\
             {pad}dynamic_module_config: {{ name: llm_gateway, do_not_close: true, metrics_namespace: llm }}\n\
             {pad}filter_name: {name}\n\
             {pad}filter_config:\n\
             {pad}  \"@type\": type.googleapis.com/google.protobuf.StringValue\n\
             {pad}  value: |\n"
        ));
        let json_indent = json
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| indent_of(l))
            .min()
            .unwrap_or(0);
        for l in json {
            if l.trim().is_empty() {
                out.push('\n');
            } else {
                out.push_str(&format!("{pad}    {}\n", &l[json_indent..]));
            }
        }
        i = end;
    }
    // The merged filters' comment speaks of a Wasm VM and its failure policy.
    let out: String = out
        .split_inclusive('\n')
        .filter(|line| !line.starts_with(WASM_DIR_COMMENT))
        .map(|line| match line.trim() {
            t if t == GATEWAY_COMMENT[1] => line.replace(t, NATIVE_COMMENT[0]),
            t if t == GATEWAY_COMMENT[2] => line.replace(t, NATIVE_COMMENT[1]),
            _ => line.to_string(),
        })
        .collect();
    env.sort();
    env.dedup();
    host_env.sort();
    host_env.dedup();
    let mut header = String::from(
        "# The native dynamic module (libllm_gateway.so) in place of every Wasm filter. Envoy finds it\n\
         # through ENVOY_DYNAMIC_MODULES_SEARCH_PATH (the directory that holds it), and it reads provider\n\
         # keys from Envoy's own environment: start Envoy with these exported.\n",
    );
    for line in env {
        header.push_str(&line);
        header.push('\n');
    }
    // Keys the VMs read from Envoy's environment (host_env_keys): `# env NAME`, no value here.
    for key in host_env.iter().filter(|k| !k.is_empty()) {
        header.push_str(&format!("# env {key}\n"));
    }
    Ok(header + &out)
}

/// The bootstrap header's line about the Wasm modules' directory (meaningless natively).
pub const WASM_DIR_COMMENT: &str = "# Wasm modules from ";

/// The names of `host_env_keys: [A, B]` lines (a flow map or a block) among `lines`.
fn host_env_keys<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut keys = Vec::new();
    for line in lines {
        if line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(list) = line
            .split("host_env_keys: [")
            .nth(1)
            .and_then(|l| l.split(']').next())
        {
            keys.extend(
                list.split(',')
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty()),
            );
        }
    }
    keys
}

/// The comment above llm_gateway, and what the native module's says instead of its last two lines.
const GATEWAY_COMMENT: [&str; 3] = [
    "# llm_auth, llm_router, llm_guard, llm_cache, llm_pii and llm_usage in one module (filters/gateway/README.md):",
    "# one VM and one context per request. One failure policy for all: closed, because an",
    "# unauthenticated request or an unmasked prompt must never reach a provider.",
];
const NATIVE_COMMENT: [&str; 2] = [
    "# one context per request, natively (filters/native/README.md): no VM and no failure policy;",
    "# a panic is answered 500.",
];

/// Indents every non-empty line of `text` by `by` spaces.
pub fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.split_inclusive('\n')
        .map(|line| {
            if line.trim().is_empty() {
                line.to_string()
            } else {
                format!("{pad}{line}")
            }
        })
        .collect()
}

/// The `- name: {name}` item of a filter list: where its line starts and its dash's indentation.
fn find_item(config: &str, name: &str) -> Option<(usize, usize)> {
    let mut at = 0;
    for line in config.split_inclusive('\n') {
        if line.trim_end().trim_start() == format!("- name: {name}") {
            return Some((at, indent_of(line)));
        }
        at += line.len();
    }
    None
}

/// The downstream LLM filters of a generated config (llm_auth through llm_usage, in that order and
/// consecutive) replaced by one llm_gateway filter whose sections are their configurations.
pub fn to_single_module(config: &str) -> Result<String, String> {
    let mut sections = serde_json::Map::new();
    let mut first: Option<(usize, usize)> = None;
    let mut after = 0;
    let mut module_file = String::new();
    let mut host_env: Vec<String> = Vec::new();
    for (section, filter) in GATEWAY_SECTIONS {
        let Some((at, dash)) = find_item(config, filter) else {
            continue;
        };
        sections.insert(section.to_string(), filter_config(config, filter)?);
        first.get_or_insert((at, dash));
        after = item_end(config, at, dash);
        let item = &config[at..after];
        host_env.extend(host_env_keys(item.lines()));
        let code = "code: { local: { filename: ";
        if let Some(file) = item
            .find(code)
            .map(|i| &item[i + code.len()..])
            .and_then(|rest| rest.split(" }").next())
        {
            module_file = file.replace(&format!("{filter}.wasm"), "llm_gateway.wasm");
        }
    }
    let (first, dash) = first.ok_or("no llm_auth .. llm_usage filter in the http_filters list")?;
    // Comments just above the first filter describe the separate modules; they go with them.
    let start = comment_start(config, first);
    let mut json = String::new();
    readable_json(&Value::Object(sections), 10, dash, &mut json);
    host_env.sort();
    host_env.dedup();
    // The variables any of the merged filters reads (keys of moderation or embeddings services).
    let env = if host_env.is_empty() {
        String::new()
    } else {
        format!(
            "        environment_variables: {{ host_env_keys: [{}] }}\n",
            host_env.join(", ")
        )
    };
    let block = wasm_filter_item(
        &GATEWAY_COMMENT.join("\n"),
        "llm_gateway",
        &module_file,
        &env,
        &json,
        "FAIL_CLOSED",
    );
    // The comments of the filter after the merged ones belong to it.
    let cut = comment_start(config, after).max(first);
    Ok(format!(
        "{}{}{}",
        &config[..start],
        indent(&block, dash),
        &config[cut..]
    ))
}

/// Where the comment lines directly above byte `at` (a line start) begin.
fn comment_start(config: &str, at: usize) -> usize {
    let mut start = at;
    while let Some(line_start) = config[..start.saturating_sub(1)].rfind('\n').map(|i| i + 1) {
        if !config[line_start..start].trim_start().starts_with('#') {
            break;
        }
        start = line_start;
    }
    start
}

/// The end of the list item at `at` whose dash is indented `dash`: the first line after it indented
/// that much or less.
fn item_end(config: &str, at: usize, dash: usize) -> usize {
    let mut lines = config[at..].split_inclusive('\n');
    let mut end = at + lines.next().map_or(0, str::len);
    for line in lines {
        if !line.trim().is_empty() && indent_of(line) <= dash {
            break;
        }
        end += line.len();
    }
    end
}

/// `config` without the downstream HTTP filter `name` (its block in the `http_filters` list and
/// the comment lines just above it).
pub fn without_filter(config: &str, name: &str) -> String {
    let Some((at, dash)) = find_item(config, name) else {
        return config.to_string();
    };
    let start = comment_start(config, at);
    let end = item_end(config, at, dash);
    // The comment lines of the next filter belong to it.
    let cut = comment_start(config, end).max(at);
    format!("{}{}", &config[..start], &config[cut..])
}

/// JSON on one line, spaced as people write it (`{"a": 1, "b": [2, 3]}`).
pub fn one_line_json(value: &Value) -> String {
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(one_line_json).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let members: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), one_line_json(v)))
                .collect();
            format!("{{{}}}", members.join(", "))
        }
        scalar => scalar.to_string(),
    }
}

/// JSON as a person would write it in a config: a value that fits on one short line stays on it,
/// larger objects and arrays get a line per member, indented under `indent` spaces. `margin` is
/// where the text will sit once indented further (it counts against the line length only).
pub fn readable_json(value: &Value, indent: usize, margin: usize, out: &mut String) {
    let compact = one_line_json(value);
    if compact.len() + indent + margin <= 110 {
        out.push_str(&compact);
        return;
    }
    let pad = " ".repeat(indent + 2);
    let (open, close) = if value.is_array() {
        ('[', ']')
    } else {
        ('{', '}')
    };
    out.push(open);
    out.push('\n');
    let members: Vec<(Option<&String>, &Value)> = match value {
        Value::Array(items) => items.iter().map(|v| (None, v)).collect(),
        Value::Object(map) => map.iter().map(|(k, v)| (Some(k), v)).collect(),
        _ => Vec::new(),
    };
    for (position, (key, member)) in members.iter().enumerate() {
        out.push_str(&pad);
        if let Some(key) = key {
            out.push_str(&Value::String((*key).clone()).to_string());
            out.push_str(": ");
        }
        readable_json(member, indent + 2, margin, out);
        if position + 1 < members.len() {
            out.push(',');
        }
        out.push('\n');
    }
    out.push_str(&" ".repeat(indent));
    out.push(close);
}
