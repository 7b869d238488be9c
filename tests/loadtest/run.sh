#!/usr/bin/env bash
# Starts a fresh release bistream on a free loopback port, runs bistream-loadtest
# against it with the given arguments, and stops the server. The harness finds the
# server through BISTREAM_LOADTEST_URL and BISTREAM_LOADTEST_SERVER_PID, so the
# arguments may start with a subcommand (`soak ...`) or be a run's flags.
#   usage: tests/loadtest/run.sh [SERVER_ARGS --] LOADTEST_ARGS...
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/release/bistream
LT=target/release/bistream-loadtest
server_args=()
if [[ " $* " == *" -- "* ]]; then
  while [[ $1 != "--" ]]; do server_args+=("$1"); shift; done
  shift
fi
log=$(mktemp)
# A clean environment for the server: an exported JWT_SECRET_KEY or BISTREAM_* would
# change what is measured.
env -u JWT_SECRET_KEY -u JWT_SECRET_KEY_PREVIOUS $(env | sed -n 's/^\(BISTREAM_[A-Z_]*\)=.*/-u \1/p') \
  "$BIN" --listen 127.0.0.1:0 "${server_args[@]}" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  addr=$(sed -n 's/.*listening on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$log" | head -1)
  [[ -n $addr ]] && break
  sleep 0.05
done
[[ -n ${addr:-} ]] || { echo "bistream did not start:"; cat "$log"; exit 1; }
echo "bistream ${server_args[*]} on $addr (pid $pid)"
BISTREAM_LOADTEST_URL="$addr" BISTREAM_LOADTEST_SERVER_PID="$pid" "$LT" "$@"
