//! The `llm-config` binary as a user runs it: the shipped demo configs are its output for
//! envoy/demo.gateway.yaml (so they cannot drift from it), errors name the file and the field, and
//! hash-key agrees with sha256sum.

#![allow(clippy::unwrap_used)] // helpers of the tests below

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn llm_config(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_llm-config"))
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn shipped_demo_configs_are_generated_from_gateway_yaml() {
    for (source, packaging, file) in [
        ("envoy/demo.gateway.yaml", "modules", "envoy/demo.yaml"),
        (
            "envoy/demo.gateway.yaml",
            "gateway",
            "envoy/demo-single-module.yaml",
        ),
        (
            "envoy/demo.gateway.yaml",
            "native",
            "envoy/demo-native.yaml",
        ),
        // The demo with tracing: a gateway file that `extends` the demo's.
        (
            "examples/observability/gateway.yaml",
            "modules",
            "examples/observability/envoy.yaml",
        ),
    ] {
        let (ok, yaml, stderr) = llm_config(&["generate", source, "--packaging", packaging], None);
        assert!(ok, "{stderr}");
        let shipped = std::fs::read_to_string(repo().join(file)).unwrap();
        assert!(
            shipped == yaml,
            "{file} is not `llm-config generate {source} --packaging {packaging}`: \
             run `make demo-configs`"
        );
    }
}

#[test]
fn errors_name_the_file_and_the_field() {
    let dir = tempfile_dir();
    let path = dir.join("gateway.yaml");
    let consumer = "\nconsumers: [{name: c, keys: [{sha256: 50a734ef22b610c7ad5e602d7a1aa5e39a9a39a6f6cc38aa2415f9d58b52146e}]}]\n";
    let cases = [
        (
            "providers: {openai: {url: 'http://127.0.0.1:1', format: openai}}\nmodels: [{name: m, route: nowhere}]\n",
            "field `models[0].route`: names no provider or pool",
        ),
        (
            "providers: {openai: {url: 'http://127.0.0.1:1', format: openia}}\nmodels: []\n",
            "field `providers.openai.format`",
        ),
        (
            "providers: {openai: {url: 'http://127.0.0.1:1', format: openai}}\nmodels: []\nconsumers: [{name: a, keys: [{sha256: abc}]}]\n",
            "field `consumers[0].keys[0].sha256`",
        ),
        (
            "providers: {openai: {url: 'http://127.0.0.1:1', format: openai}}\nmodels: []\npii: {entities: {email: hide}}\n",
            "field `pii.entities",
        ),
        (
            "providers: {openai: {url: 'http://127.0.0.1:1', format: openai}}\nmodels: []\nguard: {checks: {m: {type: openai_moderation, cluster: nope, model: x}}}\n",
            "field `guard.checks.m.cluster`: names no cluster",
        ),
    ];
    for (text, expected) in cases {
        let text = if text.contains("consumers:") {
            text.to_string()
        } else {
            format!("{text}{consumer}")
        };
        std::fs::write(&path, &text).unwrap();
        let (ok, _, stderr) = llm_config(&["check", path.to_str().unwrap()], None);
        assert!(!ok, "{text}");
        assert!(
            stderr.contains("gateway.yaml: ") && stderr.contains(expected),
            "{expected} not in {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn hash_key_is_sha256_of_the_key() {
    let (ok, digest, _) = llm_config(&["hash-key"], Some("sk-demo-team-a\n"));
    assert!(ok);
    assert_eq!(
        digest.trim(),
        "50a734ef22b610c7ad5e602d7a1aa5e39a9a39a6f6cc38aa2415f9d58b52146e"
    );
    let (ok, _, stderr) = llm_config(&["hash-key"], Some(""));
    assert!(!ok && stderr.contains("no key"), "{stderr}");
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("llm-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
