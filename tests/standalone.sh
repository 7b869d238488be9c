#!/usr/bin/env bash
# The repository stands alone: no tracked file of the project may refer to the
# team's shared folder or its contract file, which a clone does not have. The
# project's own contract is docs/protocol.md, cited as `docs/protocol.md §N`.
#   usage: tests/standalone.sh      (run by `make test`; takes well under a second)
# Lists every offending line and exits 1, or prints one line and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
SELF=tests/standalone.sh   # it has to name the patterns, so it is the one file not searched
PATTERNS=(-e '../shared' -e 'PROTOCOL.md' -e '/work/shared')
PLACES=(src tests loadtest docs benches fuzz clients dist .ci Makefile README.md)

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Tracked files only (what a clone gets), in the places that exist.
  hits=$(git grep -n -I -F "${PATTERNS[@]}" -- "${PLACES[@]}" ":(exclude)$SELF" || true)
else
  # A copy without git (a release tarball): the same places, on disk.
  existing=()
  for p in "${PLACES[@]}"; do [[ -e $p ]] && existing+=("$p"); done
  hits=$(grep -r -n -I -F --exclude-dir=target "${PATTERNS[@]}" "${existing[@]}" | grep -v "^$SELF:" || true)
fi

if [[ -n $hits ]]; then
  echo "standalone: these lines refer to files outside the repository; cite docs/protocol.md §N instead:" >&2
  echo "$hits" >&2
  echo "standalone: $(echo "$hits" | cut -d: -f1 | sort -u | wc -l) file(s), $(echo "$hits" | wc -l) line(s)" >&2
  exit 1
fi
echo "standalone: no tracked file refers outside the repository"
