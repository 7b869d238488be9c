# bistream — two commands do everything on a fresh machine: `make run`, `make test`.
CARGO ?= cargo
BIN := target/release/bistream
SHARED ?= ../shared

.PHONY: all build run test unit lint fmt bench loadtest loadtest-smoke autobahn fuzz clean

all: build

build:
	$(CARGO) build --release --workspace

## Start the server on 127.0.0.1:8000 with the demo event source.
run: build
	$(BIN) --demo

## The whole suite: unit + integration tests, conformance, fuzzing, load-harness smoke.
test:
	$(CARGO) test --workspace
	python3 tests/python/readme_client.py
	$(MAKE) autobahn
	$(MAKE) fuzz
	$(MAKE) loadtest-smoke

unit:
	$(CARGO) test --workspace --lib --bins

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench --bench hot_paths

clean:
	$(CARGO) clean
