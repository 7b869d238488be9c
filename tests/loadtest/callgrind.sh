#!/usr/bin/env bash
# Instructions per delivery, counted by valgrind's callgrind: repeatable on a
# noisy machine where timings are not (docs/performance.md).
#
#   usage: tests/loadtest/callgrind.sh [--bin PATH] [--threads N] [--conns N]
#          [--rate N] [--secs N] [-- extra bistream args]
#
# Runs the server twice under callgrind with the same subscribers: once with
# publishing and once without. The difference in instructions, divided by the
# deliveries the server counted, is what one delivery costs (accept, handshake
# and idle work cancel out). Prints one line:
#   instructions_per_delivery=<n> deliveries=<n> loaded=<n> idle=<n>
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/release/bistream
LT=target/release/bistream-loadtest
THREADS=1 CONNS=200 RATE=20 SECS=5
EXTRA=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --bin) BIN=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "callgrind.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || bash tests/setup/ensure-apt.sh valgrind:valgrind
[[ -x $BIN && -x $LT ]] || { echo "callgrind.sh: build first (make build)" >&2; exit 1; }
# CALLGRIND_KEEP=DIR keeps the callgrind files (for callgrind_annotate).
if [[ -n ${CALLGRIND_KEEP:-} ]]; then
  OUT=$CALLGRIND_KEEP
  mkdir -p "$OUT"
else
  OUT=$(mktemp -d)
  trap 'rm -rf "$OUT"' EXIT
fi

# One server run under callgrind: subscribers, then `rate` events/s for `secs`
# (rate 0: the subscribers only). Echoes "instructions deliveries".
run() {
  local rate=$1 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$rate" ${CALLGRIND_ARGS:-} -q \
    "$BIN" --listen "127.0.0.1:$port" --threads "$THREADS" --handshake-timeout 60s \
    --heartbeat-interval 10m "${EXTRA[@]}" 2>"$OUT/server.$rate.log" &
  local pid=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local mode=(--rate "$rate")
  [[ $rate == 0 ]] && mode=(--idle)
  "$LT" --url "127.0.0.1:$port" -c "$CONNS" --connect-rate 200 --connect-timeout 60s \
    "${mode[@]}" --duration "${SECS}s" --warmup 0s --settle 1s --drain 3s >"$OUT/lt.$rate.log" 2>&1 || true
  local delivered
  delivered=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^bistream_messages_delivered_total /{print $2}')
  kill -INT "$pid"
  wait "$pid" || true
  local ir
  ir=$(callgrind_annotate "$OUT/cg.$rate" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",","",$1); print $1; done=1}')
  echo "$ir ${delivered:-0}"
}

read -r loaded deliveries < <(run "$RATE")
read -r idle _ < <(run 0)
if [[ -z $loaded || -z $idle || ${deliveries%.*} -eq 0 ]]; then
  echo "callgrind.sh: a run failed (see the logs)" >&2
  cat "$OUT"/lt.*.log >&2
  exit 1
fi
per=$(python3 -c "print(round(($loaded - $idle) / ${deliveries}))")
echo "instructions_per_delivery=$per deliveries=${deliveries%.*} loaded=$loaded idle=$idle"
