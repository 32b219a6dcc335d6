//! The shipped examples agree with what is tested: the docker-compose demo runs the same Envoy version,
//! config, ports and keys as `make run`, and its Dockerfile builds the mock provider. (No Docker engine
//! here: this checks that the files parse and agree, not that containers start.)

use integration::{demo_config, repo_root, DEMO_ANTHROPIC_KEY, DEMO_OPENAI_KEY};
use yaml_rust2::{Yaml, YamlLoader};

fn strings(value: &Yaml) -> Vec<String> {
    value
        .as_vec()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn docker_compose_matches_the_demo() {
    let text =
        std::fs::read_to_string(repo_root().join("examples/docker-compose/docker-compose.yml"))
            .unwrap();
    let docs = YamlLoader::load_from_str(&text).expect("docker-compose.yml is valid YAML");
    let services = &docs[0]["services"];
    // Envoy: the tested version, the demo config, the repository mounted.
    let envoy = &services["envoy"];
    let makefile = std::fs::read_to_string(repo_root().join("Makefile")).unwrap();
    let pinned = makefile
        .lines()
        .find_map(|l| l.strip_prefix("ENVOY_VERSION := "))
        .expect("ENVOY_VERSION in the Makefile");
    assert_eq!(
        envoy["image"].as_str(),
        Some(format!("envoyproxy/envoy:v{pinned}").as_str())
    );
    let command = strings(&envoy["command"]);
    let config = &command[command.iter().position(|a| a == "-c").unwrap() + 1];
    assert!(repo_root().join(config).exists(), "{config}");
    assert!(strings(&envoy["volumes"])
        .iter()
        .any(|v| v.starts_with("../..:")));
    // Mocks: the ports and required keys envoy/demo.yaml expects.
    let demo = demo_config();
    for (service, port, key) in [
        ("mock-openai", "18080", Some(DEMO_OPENAI_KEY)),
        ("mock-anthropic", "18081", Some(DEMO_ANTHROPIC_KEY)),
        ("mock-unavailable", "18082", None),
    ] {
        let args = strings(&services[service]["command"]);
        let listen = &args[args.iter().position(|a| a == "--listen").unwrap() + 1];
        assert_eq!(listen, &format!("127.0.0.1:{port}"), "{service}");
        assert!(
            demo.contains(&format!("port_value: {port} ")),
            "{service}: port {port} not in demo.yaml"
        );
        if let Some(key) = key {
            assert!(
                args.windows(2)
                    .any(|w| w[0] == "--require-key" && w[1] == key),
                "{service}: {args:?}"
            );
            assert!(
                demo.contains(key),
                "{service}: demo.yaml does not inject {key}"
            );
        }
        assert_eq!(services[service]["network_mode"].as_str(), Some("host"));
    }
    // The mock image is built from the Dockerfile this repository ships.
    let build = &services["mock-openai"]["build"];
    let dockerfile = repo_root()
        .join("examples/docker-compose")
        .join(build["context"].as_str().unwrap())
        .join(build["dockerfile"].as_str().unwrap());
    let dockerfile =
        std::fs::read_to_string(dockerfile).expect("the compose file's Dockerfile exists");
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let keywords = [
        "FROM",
        "WORKDIR",
        "COPY",
        "RUN",
        "ENTRYPOINT",
        "CMD",
        "ENV",
        "ARG",
    ];
    for line in &instructions {
        let keyword = line.split_whitespace().next().unwrap();
        assert!(
            keywords.contains(&keyword),
            "not a Dockerfile instruction: {line}"
        );
    }
    assert!(instructions
        .iter()
        .any(|l| l.contains("cargo build --release -p mock-provider")));
    assert!(instructions
        .last()
        .unwrap()
        .starts_with("ENTRYPOINT [\"/usr/local/bin/mock-provider\"]"));
}
