# bistream — two commands do everything on a fresh machine: `make run`, `make test`.
CARGO ?= cargo
BIN := target/release/bistream
# Every Python test script runs in this venv, made from the pinned
# tests/python/requirements.txt by tests/setup/python-venv.sh (`make venv`).
VENV := target/venv
PYTHON := $(VENV)/bin/python

.PHONY: all build run test unit lint fmt bench loadtest loadtest-smoke soak soak-ci compare engines autobahn fuzz nginx-test proxy-test dist clean venv standalone js-test console console-check

all: build

build:
	$(CARGO) build --release --workspace

## Start the server on 127.0.0.1:8000 with the demo event source and the console
## (http://127.0.0.1:8000/console).
run: build
	$(BIN) --demo --console

## The whole suite: the stand-alone check, unit + integration tests (with a bounded
## in-process fuzz run of the parsers, tests/fuzz_smoke.rs), the README's client,
## the JS client and console (Node, Chromium), conformance, load-harness smoke and
## soak, nginx, HAProxy/nginx-stream PROXY protocol. Installs what it needs when missing:
## the venv, the Autobahn client, Debian packages (tests/setup/).
test: standalone venv
	$(CARGO) test --workspace
	$(PYTHON) tests/python/readme_client.py
	$(MAKE) js-test
	$(MAKE) autobahn
	$(MAKE) loadtest-smoke
	$(MAKE) soak-ci
	$(MAKE) nginx-test
	$(MAKE) proxy-test

## The Python venv of the test scripts; quick when it is already up to date.
venv:
	@bash tests/setup/python-venv.sh $(VENV) tests/python/requirements.txt >/dev/null

## Fails when a tracked file refers to something outside the repository.
standalone:
	bash tests/standalone.sh

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

## The memory engine against the Redis engine (its own redis-server, installed
## when missing), alternately, medians of 3 (docs/performance.md). Not in CI.
engines: build
	bash tests/setup/ensure-apt.sh redis-server:redis-server redis-tools:redis-cli
	python3 tests/loadtest/engines.py --runs 3

## bistream behind the real nginx (Debian package, installed when missing), both
## upstream kinds (docs/nginx.md); then two nodes on one Redis (redis-server,
## installed when missing) behind nginx (docs/cluster.md). Uses the debug binary.
nginx-test: venv
	$(CARGO) build --bin bistream
	$(PYTHON) tests/nginx/run.py --bin target/debug/bistream
	$(PYTHON) tests/nginx/cluster.py --bin target/debug/bistream

## bistream behind the real HAProxy (send-proxy-v2, health checks with a header) and
## nginx's stream module (proxy_protocol on), Debian packages installed when missing;
## docs/protocol.md §11, docs/deploy.md. A few seconds; uses the debug binary.
proxy-test: venv
	$(CARGO) build --bin bistream
	$(PYTHON) tests/proxy/run.py --bin target/debug/bistream

## A release binary for the edge (static musl when that target is installed, else
## glibc) with its systemd unit and env file: target/dist/*.tar.gz. docs/deploy.md.
dist:
	CARGO="$(CARGO)" sh dist/build.sh

## Autobahn|Testsuite cases 1-7 and 10 against /ws/echo of the release binary;
## tests/autobahn/install.sh installs wstest into AUTOBAHN_CLIENT_DIR (cached),
## report in target/autobahn/. Builds like `build` (the whole workspace): a
## `-p bistream` build resolves features differently, and `loadtest-smoke` would
## then compile the shared dependencies a second time.
AUTOBAHN_CLIENT_DIR ?= target/autobahn-client
autobahn: venv build
	PYTHON=$(PYTHON) bash tests/autobahn/run.sh $(AUTOBAHN_CLIENT_DIR) target/autobahn

## The deep campaign: libFuzzer on the request-head parser, the client-frame
## reader and the PROXY header parser, FUZZ_SECONDS each; installs cargo-fuzz when missing (stable toolchain,
## ~15 min the first time). fuzz/README.md. CI runs tests/fuzz_smoke.rs instead.
FUZZ_SECONDS ?= 30
fuzz:
	bash fuzz/run.sh $(FUZZ_SECONDS)

## bistream-client (clients/js) and the console, about a minute: npm ci from the
## lock file, the client's tests against the real server (node --test), the check
## that the committed console in src/console/ is a fresh build, and the console in
## Debian's Chromium (installed by the test when missing). Screenshot: target/console.png.
JS := clients/js
js-test:
	@command -v node >/dev/null && node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)' \
	  || { echo "js-test needs Node.js >= 20 and npm" >&2; exit 1; }
	$(CARGO) build --bin bistream
	cd $(JS) && npm ci --no-audit --no-fund
	cd $(JS) && npm test
	cd $(JS) && npm run --silent console:check
	cd $(JS) && npm run test:browser

## Rebuild the console page into src/console/ after changing clients/console or
## clients/js; commit the result (`make run` embeds it and needs only Rust).
console:
	cd $(JS) && npm ci --no-audit --no-fund && npm run --silent console:build

## Fails when src/console/ is not what a fresh build of the console gives.
console-check:
	cd $(JS) && { [ -d node_modules/esbuild ] || npm ci --no-audit --no-fund; } && npm run --silent console:check

clean:
	$(CARGO) clean
