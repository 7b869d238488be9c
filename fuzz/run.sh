#!/usr/bin/env bash
# Runs each fuzz target under libFuzzer for a bounded time; any panic fails.
#   usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]   (default: 30, head frames proxy)
# cargo-fuzz needs a few -Z flags (sanitizer coverage, AddressSanitizer): the
# stable toolchain takes them with RUSTC_BOOTSTRAP=1, so no nightly is needed.
# The corpus grows in fuzz/corpus/ (not committed) from the seeds in fuzz/seeds/;
# a crash leaves its input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-30}
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(head frames proxy)
export RUSTC_BOOTSTRAP=1
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
# Release code with debug assertions (overflow checks), as the targets are run.
cargo fuzz build -O -a
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t"
  extra=()
  [[ $t == head ]] && extra+=(-dict=http.dict)
  [[ $t == proxy ]] && extra+=(-dict=proxy.dict)
  echo "fuzz: $t for ${SECS}s"
  cargo fuzz run -O -a "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
    -print_final_stats=1 "${extra[@]}" 2>"corpus/$t.log" || {
      tail -40 "corpus/$t.log" >&2
      echo "fuzz: $t FAILED (input in fuzz/artifacts/$t/)" >&2
      exit 1
    }
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|Done [0-9]+ runs" "corpus/$t.log" | sed "s/^/fuzz: $t: /"
done
echo "fuzz: no failures"
