//! The native module's hand-written ABI declarations against the Envoy binary the tests run:
//! every callback filters/native/src/abi.rs declares is exported by Envoy, and every hook Envoy
//! requires of an HTTP filter module is exported by libllm_gateway.so.

use integration::repo_root;
use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// The `envoy` executable itself (the venv's `envoy` is a launcher script).
fn envoy_executable() -> Option<PathBuf> {
    let lib = repo_root().join(".venv/lib");
    fs::read_dir(lib).ok()?.flatten().find_map(|python| {
        let candidate = python.path().join("site-packages/envoy/_bin/envoy");
        candidate.is_file().then_some(candidate)
    })
}

fn defined_symbols(binary: &PathBuf) -> HashSet<String> {
    let output = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(binary)
        .output()
        .expect("nm (binutils)");
    assert!(output.status.success(), "nm {}", binary.display());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().last().map(str::to_string))
        .collect()
}

/// `fn <prefix>...(` names in a Rust source file.
fn declared(source: &str, prefix: &str) -> Vec<String> {
    source
        .split("fn ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .map(str::trim)
        .filter(|name| name.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_declared_callback_is_exported_by_envoy() {
    let Some(envoy) = envoy_executable() else {
        eprintln!("skipped: no Envoy wheel in .venv (make setup)");
        return;
    };
    let exported = defined_symbols(&envoy);
    let abi = fs::read_to_string(repo_root().join("filters/native/src/abi.rs")).unwrap();
    let callbacks = declared(&abi, "envoy_dynamic_module_callback_");
    assert!(callbacks.len() > 20, "found {callbacks:?}");
    let missing: Vec<&String> = callbacks
        .iter()
        .filter(|c| !exported.contains(*c))
        .collect();
    assert!(
        missing.is_empty(),
        "not exported by {}: {missing:?}",
        envoy.display()
    );
}

#[test]
fn the_module_exports_every_hook_envoy_requires() {
    // The module the other tests load (see `LLM_NATIVE_DIR` in the harness).
    let dir = std::env::var("LLM_NATIVE_DIR").unwrap_or_else(|_| "target/native".into());
    let module = repo_root().join(dir).join("libllm_gateway.so");
    if !module.is_file() {
        panic!("{} is missing: run `make build-native`", module.display());
    }
    let exported = defined_symbols(&module);
    // Resolved by Envoy 1.40 when it loads an HTTP filter module; a missing one refuses the config.
    let required = [
        "envoy_dynamic_module_on_program_init",
        "envoy_dynamic_module_on_http_filter_config_new",
        "envoy_dynamic_module_on_http_filter_config_destroy",
        "envoy_dynamic_module_on_http_filter_new",
        "envoy_dynamic_module_on_http_filter_request_headers",
        "envoy_dynamic_module_on_http_filter_request_body",
        "envoy_dynamic_module_on_http_filter_request_trailers",
        "envoy_dynamic_module_on_http_filter_response_headers",
        "envoy_dynamic_module_on_http_filter_response_body",
        "envoy_dynamic_module_on_http_filter_response_trailers",
        "envoy_dynamic_module_on_http_filter_stream_complete",
        "envoy_dynamic_module_on_http_filter_destroy",
        "envoy_dynamic_module_on_http_filter_http_callout_done",
        "envoy_dynamic_module_on_http_filter_http_stream_headers",
        "envoy_dynamic_module_on_http_filter_http_stream_data",
        "envoy_dynamic_module_on_http_filter_http_stream_trailers",
        "envoy_dynamic_module_on_http_filter_http_stream_complete",
        "envoy_dynamic_module_on_http_filter_http_stream_reset",
        "envoy_dynamic_module_on_http_filter_scheduled",
        "envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark",
        "envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark",
    ];
    let missing: Vec<&&str> = required
        .iter()
        .filter(|h| !exported.contains(**h))
        .collect();
    assert!(missing.is_empty(), "libllm_gateway.so lacks {missing:?}");
    // And Envoy knows every hook the module exports (a typo would be silently unused).
    if let Some(envoy) = envoy_executable() {
        let strings = Command::new("strings")
            .arg(&envoy)
            .output()
            .expect("strings");
        let text = String::from_utf8_lossy(&strings.stdout);
        for hook in exported
            .iter()
            .filter(|s| s.starts_with("envoy_dynamic_module_on_"))
        {
            assert!(text.contains(hook.as_str()), "Envoy never looks up {hook}");
        }
    }
}

/// Bad configuration of the native module makes Envoy refuse it with one line naming the field
/// (never echoing the value), as with the Wasm modules; an unknown `filter_name` is named too.
#[test]
fn the_native_module_refuses_bad_config_naming_the_field() {
    integration::require_envoy!();
    let demo = fs::read_to_string(repo_root().join("envoy/demo-native.yaml")).unwrap();
    let cases = [
        (
            demo.replacen(
                "\"router\": {",
                "\"router\": {\"bogus_field\": \"sk-secret-value-123\",",
                1,
            ),
            "llm_gateway: invalid configuration: field `router.bogus_field`",
        ),
        (
            demo.replacen("filter_name: llm_provider", "filter_name: llm_bogus", 1),
            "unknown filter_name \"llm_bogus\"",
        ),
    ];
    for (config, expected) in cases {
        assert_ne!(config, demo, "the edit applies");
        let exit = integration::Envoy::start_expecting_exit(
            &config,
            &integration::EnvoyOptions::default(),
        );
        assert!(!exit.status.success(), "Envoy accepted: {expected}");
        let lines: Vec<&str> = exit.log.lines().filter(|l| l.contains(expected)).collect();
        assert_eq!(lines.len(), 1, "{expected} in:\n{}", exit.log);
        assert!(
            !exit.log.contains("sk-secret-value-123"),
            "the value leaked"
        );
    }
}
