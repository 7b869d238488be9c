#!/usr/bin/env bash
# Makes the Python virtual environment the test scripts run in, from pinned
# requirements, and prints its interpreter's path last.
#
#   usage: tests/setup/python-venv.sh [VENV_DIR] [REQUIREMENTS]
#          (defaults: target/venv, tests/python/requirements.txt)
#   then:  target/venv/bin/python tests/python/readme_client.py
#
# Nothing is installed outside VENV_DIR but Debian's python3 and python3-venv
# when they are missing (tests/setup/ensure-apt.sh). The venv is reused while it
# still runs and was made from the same requirements (their sha256 is kept in
# VENV_DIR/.requirements.sha256); otherwise it is made again from scratch. It
# never sees system-wide or per-user site-packages, so a test passes on what the
# requirements pin, not on what happens to be installed. `PYTHON3=/path/python3`
# picks the base interpreter (default: python3 on PATH).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${1:-target/venv}
REQS=${2:-tests/python/requirements.txt}
BASE=${PYTHON3:-python3}
[[ -f $REQS ]] || { echo "python-venv: $REQS not found" >&2; exit 1; }

want=$(sha256sum "$REQS" | cut -d' ' -f1)
stamp=$VENV/.requirements.sha256
if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  echo "$VENV/bin/python"
  exit 0
fi

# Debian ships `venv` without `ensurepip` unless python3-venv is installed.
if ! command -v "$BASE" >/dev/null 2>&1; then
  bash tests/setup/ensure-apt.sh python3:python3 python3-venv
fi
if ! "$BASE" -c 'import venv, ensurepip' 2>/dev/null; then
  bash tests/setup/ensure-apt.sh python3-venv
  "$BASE" -c 'import venv, ensurepip' 2>/dev/null || {
    echo "python-venv: $(command -v "$BASE") cannot make virtual environments (no ensurepip);" >&2
    echo "python-venv: install its venv module, or set PYTHON3 to an interpreter that has one" >&2
    exit 1
  }
fi

# VENV is replaced below: never a folder that is not a venv.
if [[ -e $VENV && ! -f $VENV/pyvenv.cfg && -n $(ls -A "$VENV" 2>/dev/null) ]]; then
  echo "python-venv: $VENV exists and is not a virtual environment: give another folder" >&2
  exit 1
fi
echo "python-venv: making $VENV from $REQS" >&2
rm -rf "$VENV"
"$BASE" -m venv "$VENV"
PIP_USER=0 "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$REQS" >&2
echo "$want" >"$stamp"
echo "$VENV/bin/python"
