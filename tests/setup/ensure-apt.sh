#!/usr/bin/env bash
# Installs the Debian packages a test needs, and only those that are missing.
#
#   usage: tests/setup/ensure-apt.sh PKG[:BINARY] ...
#
#   PKG:BINARY  the package counts as present when BINARY is found (on PATH, in
#               /usr/sbin or /sbin, or as an absolute path): nginx:nginx,
#               redis-server:redis-server, haproxy:haproxy, chromium:chromium
#   PKG         no binary to look for: present when dpkg says it is installed
#               (python3-venv, libssl-dev)
#
# Examples:
#   bash tests/setup/ensure-apt.sh nginx:nginx
#   bash tests/setup/ensure-apt.sh redis-server:redis-server haproxy:haproxy
#   subprocess.run(["bash", "tests/setup/ensure-apt.sh", "nginx:nginx"], check=True)  # Python
#
# When everything is present it prints nothing and exits 0 at once, so call it
# every time, before the binary is used. Otherwise it runs `apt-get update` once,
# then `apt-get install -y -q --no-install-recommends` of the missing packages
# (noninteractive), as root or through `sudo -n`; without either it exits 1 with
# the command to run by hand. Services the packages bring (nginx, redis-server,
# haproxy) are not started by the install: the tests start their own instances
# on loopback. Exit status: 0 when every package is present afterwards, 1 if not,
# 2 on a usage error.
set -euo pipefail

if [[ $# -eq 0 ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
fi

have_binary() {
  local bin=$1
  if [[ $bin == /* ]]; then
    [[ -x $bin ]]
  else
    command -v "$bin" >/dev/null 2>&1 || [[ -x /usr/sbin/$bin || -x /sbin/$bin ]]
  fi
}

have_package() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

present() {
  local spec=$1
  if [[ $spec == *:* ]]; then have_binary "${spec#*:}"; else have_package "$spec"; fi
}

missing=()
for spec in "$@"; do
  [[ -n ${spec%%:*} ]] || { echo "ensure-apt: empty package name in '$spec'" >&2; exit 2; }
  present "$spec" || missing+=("$spec")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

packages=()
for spec in "${missing[@]}"; do packages+=("${spec%%:*}"); done

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "ensure-apt: the tests need the Debian package(s) ${packages[*]}, which are not installed," >&2
  echo "ensure-apt: and this is neither root nor a user with password-less sudo. Install them once:" >&2
  echo "    sudo apt-get install -y ${packages[*]}" >&2
  exit 1
fi
command -v apt-get >/dev/null 2>&1 || {
  echo "ensure-apt: apt-get not found: install ${packages[*]} with this system's package manager" >&2
  exit 1
}

# An install must not start a system service (a second nginx on :80, a redis
# on :6379): policy-rc.d answering 101 is Debian's way to say "do not start".
# Ours is put in place only when there is none, and removed afterwards.
policy=/usr/sbin/policy-rc.d
made_policy=
cleanup() { [[ -z $made_policy ]] || "${as_root[@]}" rm -f "$policy"; }
trap cleanup EXIT
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
  "${as_root[@]}" chmod 755 "$policy"
  made_policy=1
fi

echo "ensure-apt: installing ${packages[*]}" >&2
apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Use-Pty=0)
"${apt[@]}" update >/dev/null || { echo "ensure-apt: apt-get update failed" >&2; exit 1; }
"${apt[@]}" install -y --no-install-recommends "${packages[@]}" >/dev/null ||
  { echo "ensure-apt: apt-get install ${packages[*]} failed" >&2; exit 1; }

status=0
for spec in "${missing[@]}"; do
  present "$spec" || { echo "ensure-apt: ${spec%%:*} installed, but ${spec#*:} is still not found" >&2; status=1; }
done
exit $status
