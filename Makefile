# bistream — two commands do everything on a fresh machine: `make run`, `make test`.
CARGO ?= cargo
BIN := target/release/bistream
SHARED ?= ../shared

.PHONY: all build run test unit lint fmt bench loadtest loadtest-smoke soak soak-ci compare autobahn fuzz nginx-test dist clean

all: build

build:
	$(CARGO) build --release --workspace

## Start the server on 127.0.0.1:8000 with the demo event source.
run: build
	$(BIN) --demo

## The whole suite: unit + integration tests (with a bounded in-process fuzz run of
## both parsers, tests/fuzz_smoke.rs), conformance, load-harness smoke, nginx.
test:
	$(CARGO) test --workspace
	python3 tests/python/readme_client.py
	$(MAKE) autobahn
	$(MAKE) loadtest-smoke
	$(MAKE) nginx-test

unit:
	$(CARGO) test --workspace --lib --bins

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench --bench hot_paths

## A short default scenario against a freshly started server, printing the table.
loadtest: build
	tests/loadtest/run.sh --threads 1 -- --connections 1000 --rate 100 --publishers 4 --duration 10s

## CI: proves the harness end to end in seconds; the SLO is loose on purpose.
loadtest-smoke: build
	tests/loadtest/run.sh -- --connections 300 --channels all --locations 2 --rate 50 \
	  --publishers 2 --duration 3s --slo "p99<2s,loss=0,order=0"

## Soak (not in CI): 30 minutes of connection churn (close handshakes, resets, drops,
## aborted upgrades) under a steady publish rate against a fresh release server; RSS,
## descriptors and bistream_history_bytes every 10 s must come back to their baseline
## (docs/loadtest.md, "Soak"). Exit 1 on growth.
soak: build
	tests/loadtest/run.sh -- soak --connections 1000 --churn-rate 200 --rate 100 \
	  --warmup 2m --duration 30m --settle 30s --sample-every 10s --rss-tolerance 4MiB

## The same soak in about 2 minutes (75 s of churn, twice the churn rate), for CI;
## fails on growth.
soak-ci: build
	tests/loadtest/run.sh -- soak --connections 1000 --churn-rate 400 --rate 100 \
	  --warmup 20s --duration 75s --settle 10s --sample-every 10s --rss-tolerance 2MiB

## The performance table of issue 15 in one command: the floor and bistream, fresh
## for every run, medians of 3 (server on CPU 0, client on CPU 1). docs/loadtest.md.
compare: build
	target/release/bistream-loadtest compare --runs 3

## bistream behind the real nginx (Debian package, installed when missing), both
## upstream kinds; see docs/nginx.md. Uses the debug binary `cargo test` built.
nginx-test:
	$(CARGO) build --bin bistream
	python3 tests/nginx/run.py --bin target/debug/bistream

## A release binary for the edge (static musl when that target is installed, else
## glibc) with its systemd unit and env file: target/dist/*.tar.gz. docs/deploy.md.
dist:
	CARGO="$(CARGO)" sh dist/build.sh

## Autobahn|Testsuite cases 1-7 and 10 against /ws/echo of the release binary;
## installs wstest into AUTOBAHN_DIR (cached), report in target/autobahn/.
AUTOBAHN_DIR ?= /tmp/autobahn
autobahn:
	$(CARGO) build --release -p bistream --bin bistream
	bash tests/autobahn/run.sh $(SHARED) $(AUTOBAHN_DIR) target/autobahn

## The deep campaign: libFuzzer on the request-head parser and the client-frame
## reader, FUZZ_SECONDS each; installs cargo-fuzz when missing (stable toolchain,
## ~15 min the first time). fuzz/README.md. CI runs tests/fuzz_smoke.rs instead.
FUZZ_SECONDS ?= 30
fuzz:
	bash fuzz/run.sh $(FUZZ_SECONDS)

clean:
	$(CARGO) clean
