#!/usr/bin/env bash
# Autobahn|Testsuite conformance run against /ws/echo (issue 3; docs/protocol.md §1, §6).
#   usage: tests/autobahn/run.sh [CLIENT_DIR] [REPORT_DIR]
#          (defaults: target/autobahn-client, target/autobahn; `make autobahn`)
# Installs wstest with tests/autobahn/install.sh (cached in CLIENT_DIR), starts
# the release binary on a free loopback port with the echo route, runs the
# fuzzing client on cases 1-7 and 10, and gates on the report with check.py
# (run by $PYTHON, default python3: it needs only the standard library). The
# server is stopped whatever happens.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLIENT_DIR=${1:-target/autobahn-client}
OUT=${2:-target/autobahn}
PYTHON=${PYTHON:-python3}
BIN=target/release/bistream
[[ -x $BIN ]] || { echo "autobahn: $BIN missing (make build first)" >&2; exit 1; }

WSTEST=$(bash tests/autobahn/install.sh "$CLIENT_DIR" | tail -1)
rm -rf "$OUT" && mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

server_pid=
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

# Port 0: the banner says which port the kernel picked, so no port can clash.
RUST_LOG=warn,bistream=info "$BIN" --listen 127.0.0.1:0 --enable-echo \
  --max-message-size 16777216 --max-queue-bytes 64MiB \
  --handshake-timeout 30s --heartbeat-interval 60s >"$OUT/server.log" 2>&1 &
server_pid=$!
addr=
for _ in $(seq 100); do
  addr=$(sed -n 's/.*listening on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$OUT/server.log" | head -1)
  [[ -n $addr ]] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$OUT/server.log" >&2; exit 1; }
  sleep 0.1
done
[[ -n $addr ]] || { echo "autobahn: the server printed no address" >&2; cat "$OUT/server.log" >&2; exit 1; }
echo "autobahn: bistream on $addr, report in $OUT"

cat >"$OUT/fuzzingclient.json" <<JSON
{
  "outdir": "$OUT/reports",
  "servers": [{"agent": "bistream", "url": "ws://$addr/ws/echo"}],
  "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
start=$(date +%s)
(cd "$OUT" && "$WSTEST" -m fuzzingclient -s "$OUT/fuzzingclient.json" >"$OUT/wstest.log" 2>&1) || {
  echo "autobahn: wstest failed" >&2; tail -20 "$OUT/wstest.log" >&2; exit 1; }
echo "autobahn: wstest ran in $(( $(date +%s) - start )) s"
kill -0 "$server_pid" 2>/dev/null || { echo "autobahn: the server died during the run" >&2; tail -20 "$OUT/server.log" >&2; exit 1; }
"$PYTHON" tests/autobahn/check.py "$OUT/reports/index.json"
