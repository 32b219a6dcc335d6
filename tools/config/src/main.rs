//! llm-config generate GATEWAY_FILE [--packaging modules|gateway|native] [--fragments] [-o FILE]
//! llm-config hash-key   (the API key on stdin)

use llm_config::{generate, hash_key, Output, Packaging};
use std::io::{IsTerminal, Read};
use std::process::ExitCode;

const USAGE: &str = "\
usage:
  llm-config generate GATEWAY_FILE [--packaging modules|gateway|native] [--fragments] [-o FILE]
      The Envoy configuration for the gateway file: a complete bootstrap, or with --fragments
      the pieces to merge into an existing Envoy. Packagings: one Wasm module per filter
      (modules, the default), llm_gateway.wasm (gateway), libllm_gateway.so (native).
  llm-config check GATEWAY_FILE
      Checks the gateway file (the filters' own configuration checks included).
  A gateway file may start with `extends: OTHER_FILE` (relative to it): this file's keys then
  override the other's (maps merge, lists replace, null removes).
  llm-config hash-key
      The SHA-256 digest llm_auth stores for the API key read from stdin:
        printf '%s' \"$KEY\" | llm-config hash-key";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("llm-config: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let (command, rest) = args.split_first().ok_or(USAGE)?;
    match command.as_str() {
        "generate" | "check" => {
            let mut file = None;
            let mut packaging = Packaging::Modules;
            let mut output = Output::Bootstrap;
            let mut out_path = None;
            let mut rest = rest.iter();
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "--packaging" => {
                        let name = rest.next().ok_or("--packaging needs a value")?;
                        packaging = Packaging::parse(name).ok_or_else(|| {
                            format!("--packaging {name}: choose modules, gateway or native")
                        })?;
                    }
                    "--fragments" => output = Output::Fragments,
                    "-o" | "--output" => out_path = Some(rest.next().ok_or("-o needs a file")?),
                    "-h" | "--help" => {
                        println!("{USAGE}");
                        return Ok(());
                    }
                    flag if flag.starts_with('-') => {
                        return Err(format!("unknown option {flag}\n{USAGE}"))
                    }
                    path if file.is_none() => file = Some(path.to_string()),
                    extra => return Err(format!("unexpected argument {extra}\n{USAGE}")),
                }
            }
            let file = file.ok_or(USAGE)?;
            let text = llm_config::read_gateway_file(std::path::Path::new(&file))?;
            let source = std::path::Path::new(&file)
                .file_name()
                .map_or(file.clone(), |n| n.to_string_lossy().into_owned());
            let yaml = generate(&text, &source, packaging, output)
                .map_err(|err| format!("{file}: {err}"))?;
            if command == "check" {
                eprintln!("{file}: ok");
                return Ok(());
            }
            match out_path {
                Some(path) => std::fs::write(path, yaml).map_err(|err| format!("{path}: {err}")),
                None => {
                    print!("{yaml}");
                    Ok(())
                }
            }
        }
        "hash-key" => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                // Typed at a terminal the key would be echoed and kept in scrollback.
                return Err("pipe the key in: printf '%s' \"$KEY\" | llm-config hash-key".into());
            }
            let mut key = String::new();
            stdin
                .lock()
                .read_to_string(&mut key)
                .map_err(|err| format!("reading the key: {err}"))?;
            let digest = hash_key(&key).ok_or("no key on stdin")?;
            println!("{digest}");
            Ok(())
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other}\n{USAGE}")),
    }
}
