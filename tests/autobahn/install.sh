#!/usr/bin/env bash
# Installs wstest, the client of Autobahn|Testsuite (the WebSocket conformance
# suite), into one folder, touching nothing else on the machine, and prints the
# path of DIR/wstest last.
#
#   usage: tests/autobahn/install.sh [DIR]     (default: target/autobahn-client)
#   then:  DIR/wstest -m fuzzingclient -s spec.json
#
# wstest runs only on Python 2.7, which current Debian no longer ships. So:
#   1. Python 2.7 is taken from Debian 11 (bullseye), the last release with it:
#      its .deb files are downloaded with a private apt configuration (its own
#      sources list, lists and cache under DIR/apt; the machine's apt state is
#      not touched) and unpacked under DIR/python2.7, not installed.
#   2. virtualenv, pinned to the last version able to create Python 2.7
#      environments (requirements-tool.txt), runs in a Python 3 venv, DIR/tool.
#   3. It makes DIR/py27, a Python 2.7 environment, into which pip installs
#      requirements-py27.txt: the suite and every package it imports, each
#      pinned, with --no-deps (nothing is resolved at install time).
#   4. DIR/wstest is a wrapper that points the dynamic linker at the unpacked
#      libraries (libpython2.7, libssl1.1, libffi7).
# Needs: apt-get, dpkg-deb, python3 with venv (made by tests/setup/python-venv.sh),
# a C compiler (some packages build on install), network access to a Debian
# mirror and to PyPI. Takes about two minutes the first time.
#
# Cache: DIR is reused while its wstest reports the expected version and it was
# made by this same script from these same pins (a key kept in DIR/.install-key,
# written last, so an interrupted install is never taken for a finished one).
# Otherwise DIR is emptied and made again.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=tests/autobahn
SUITE=$(sed -n "s/^autobahntestsuite==//p" "$HERE/requirements-py27.txt")
DIR=${1:-target/autobahn-client}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

key=$(cat "$HERE/install.sh" "$HERE/requirements-tool.txt" "$HERE/requirements-py27.txt" | sha256sum | cut -d' ' -f1)
if [[ -f $DIR/.install-key && $(cat "$DIR/.install-key") == "$key" ]] &&
  [[ $("$DIR/wstest" --autobahnversion 2>/dev/null) == *"$SUITE"* ]]; then
  echo "$DIR/wstest"
  exit 0
fi
say() { echo "autobahn-install: $*" >&2; }
# DIR is emptied below: never a folder this script did not make.
MARK=$DIR/.made-by-tests-autobahn-install
if [[ ! -e $MARK && -n $(ls -A "$DIR") ]]; then
  say "$DIR is not empty and was not made by this script: give an empty or new folder"
  exit 1
fi
say "installing wstest $SUITE into $DIR"
find "$DIR" -mindepth 1 -maxdepth 1 ! -name "$(basename "$MARK")" -exec rm -rf {} +
touch "$MARK"

# --- 1. Python 2.7 from bullseye, unpacked -----------------------------------
# "URI SUITE" for every source this machine's apt uses, in both file formats,
# so that the download goes to the mirror the machine already trusts.
apt_sources() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk 'BEGIN { RS = ""; FS = "\n" }
      { u = ""; s = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { u = $i; sub(/^URIs:[ \t]*/, "", u) }
          if ($i ~ /^Suites:/) { s = $i; sub(/^Suites:[ \t]*/, "", s) }
        }
        nu = split(u, us, /[ \t]+/); ns = split(s, ss, /[ \t]+/)
        for (a = 1; a <= nu; a++) for (b = 1; b <= ns; b++) print us[a], ss[b] }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    sed -n 's/^deb[ \t]\+\(\[[^]]*\][ \t]\+\)\{0,1\}\([^ \t]\+\)[ \t]\+\([^ \t]\+\).*/\2 \3/p' "$f"
  done
}
codename=$( (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true)
mirror=$(apt_sources | awk -v c="$codename" 'c != "" && $2 == c { print $1; exit }')
security=$(apt_sources | awk -v c="$codename-security" 'c != "-security" && $2 == c { print $1; exit }')

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f $KEYRING ]] || { say "no Debian archive keyring ($KEYRING): install debian-archive-keyring"; exit 1; }
mkdir -p "$DIR"/apt/{lists/partial,cache/archives/partial} "$DIR/debs"
APT=(apt-get -q
  -o "Dir::Etc::sourcelist=$DIR/apt/sources.list" -o Dir::Etc::sourceparts=/nonexistent
  -o "Dir::State::Lists=$DIR/apt/lists" -o "Dir::Cache=$DIR/apt/cache"
  -o Debug::NoLocking=1 -o Acquire::Check-Valid-Until=false -o APT::Sandbox::User=root)
[[ $(id -u) -eq 0 ]] || APT+=(-o APT::Sandbox::User="$(id -un)")
DEBS=(python2.7 python2.7-minimal libpython2.7 libpython2.7-minimal libpython2.7-stdlib
  python2.7-dev libpython2.7-dev libssl1.1 libffi7)

fetched=
# bullseye moves to archive.debian.org when its support ends: try that last.
for base in ${mirror:+"$mirror"} http://deb.debian.org/debian http://archive.debian.org/debian; do
  {
    echo "deb [signed-by=$KEYRING] $base bullseye main"
    if [[ $base == "$mirror" && -n $security ]]; then
      echo "deb [signed-by=$KEYRING] $security bullseye-security main"
    fi
  } >"$DIR/apt/sources.list"
  say "Python 2.7 from $base (bullseye)"
  rm -f "$DIR"/debs/*.deb
  if "${APT[@]}" update >"$DIR/apt/update.log" 2>&1 &&
    (cd "$DIR/debs" && "${APT[@]}" download "${DEBS[@]}" >"$DIR/apt/download.log" 2>&1); then
    fetched=1
    break
  fi
done
[[ -n $fetched ]] || { say "could not download Python 2.7 from bullseye:"; tail -5 "$DIR"/apt/*.log >&2; exit 1; }
for deb in "$DIR"/debs/*.deb; do dpkg-deb -x "$deb" "$DIR/python2.7"; done
rm -rf "$DIR/debs" "$DIR/apt/lists" "$DIR/apt/cache"   # 30 MB no longer needed
PY27=$DIR/python2.7/usr/bin/python2.7
libdir=$(dirname "$(find "$DIR/python2.7/usr/lib" -name 'libpython2.7.so.1.0' | head -1)")
[[ -x $PY27 && -d $libdir ]] || { say "the bullseye packages did not give a python2.7"; exit 1; }
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# --- 2. virtualenv, in a Python 3 venv ----------------------------------------
bash tests/setup/python-venv.sh "$DIR/tool" "$HERE/requirements-tool.txt" >/dev/null

# --- 3. the Python 2.7 environment and the suite -------------------------------
"$DIR/tool/bin/virtualenv" -q -p "$PY27" "$DIR/py27" >&2
export CFLAGS="-I$DIR/python2.7/usr/include -I$DIR/python2.7/usr/include/python2.7"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_USER=0
say "pip: requirements-py27.txt (compiles a few C extensions)"
"$DIR/py27/bin/pip" install -q --no-deps -r "$HERE/requirements-py27.txt" >"$DIR/pip.log" 2>&1 ||
  { say "pip failed:"; tail -20 "$DIR/pip.log" >&2; exit 1; }

# --- 4. the wrapper ------------------------------------------------------------
cat >"$DIR/wstest" <<WRAPPER
#!/bin/sh
# Made by tests/autobahn/install.sh: wstest with the unpacked Python 2.7 libraries.
LD_LIBRARY_PATH="$libdir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$DIR/py27/bin/wstest" "\$@"
WRAPPER
chmod +x "$DIR/wstest"
got=$("$DIR/wstest" --autobahnversion 2>&1) || { say "wstest does not run: $got"; exit 1; }
[[ $got == *"$SUITE"* ]] || { say "wstest reports '$got', expected $SUITE"; exit 1; }
echo "$key" >"$DIR/.install-key"
say "wstest $SUITE ready"
echo "$DIR/wstest"
