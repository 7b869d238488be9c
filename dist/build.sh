#!/bin/sh
# `make dist`: a release binary for the edge, packed with its systemd unit, the
# example environment file and the deployment guide, as
#   target/dist/bistream-<version>-<target>.tar.gz  (+ .sha256)
#
# Static musl when the Rust target is installed (`rustup target add
# x86_64-unknown-linux-musl`; needs the network once), otherwise the host's
# glibc build. DIST_TARGET=<triple> forces a target. Steps: docs/deploy.md.
set -eu
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
ARCH=$(uname -m)
MUSL="$ARCH-unknown-linux-musl"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

if [ -z "${DIST_TARGET:-}" ]; then
    if rustup target list --installed 2>/dev/null | grep -qx "$MUSL"; then
        DIST_TARGET=$MUSL
    else
        DIST_TARGET=host
        echo "dist: the $MUSL target is not installed (rustup target add $MUSL):" \
            "building for this host's glibc instead" >&2
    fi
fi

if [ "$DIST_TARGET" = host ]; then
    # The same build as `make build`: nothing is compiled twice.
    $CARGO build --release --locked -p bistream --bin bistream
    BIN=target/release/bistream
    DIST_TARGET=$(rustc -vV | sed -n 's/^host: //p')
else
    $CARGO build --release --locked -p bistream --bin bistream --target "$DIST_TARGET"
    BIN=target/$DIST_TARGET/release/bistream
fi

NAME="bistream-$VERSION-$DIST_TARGET"
STAGE="target/dist/$NAME"
rm -rf "$STAGE"
mkdir -p "$STAGE"
cp "$BIN" "$STAGE/bistream"
# The release profile keeps line tables for profiling; the edge does not need them.
if command -v strip >/dev/null 2>&1; then
    strip "$STAGE/bistream"
fi
cp dist/bistream.service dist/bistream.socket dist/bistream-socket.conf dist/bistream.env docs/deploy.md docs/nginx.md "$STAGE/"

# It runs, it is what it claims to be, and the example environment file is valid.
"$STAGE/bistream" --version
secret=$(mktemp)
trap 'rm -f "$secret"' EXIT
printf '%s\n' "dist-check-secret-0123456789abcdef-0123456789" >"$secret"
env -i $(grep -v '^#' dist/bistream.env) "$STAGE/bistream" --check-config \
    --jwt-secret-file "$secret" >/dev/null
case "$DIST_TARGET" in
*musl*)
    if command -v ldd >/dev/null 2>&1 && ldd "$STAGE/bistream" 2>&1 | grep -q '=>'; then
        echo "dist: $STAGE/bistream is not static" >&2
        exit 1
    fi
    ;;
esac

tar -C target/dist -czf "target/dist/$NAME.tar.gz" "$NAME"
(cd target/dist && sha256sum "$NAME.tar.gz" >"$NAME.tar.gz.sha256")
echo "dist: target/dist/$NAME.tar.gz ($(du -k "target/dist/$NAME.tar.gz" | cut -f1) KiB;" \
    "binary $(du -k "$STAGE/bistream" | cut -f1) KiB, $(file -b "$STAGE/bistream" 2>/dev/null | cut -d, -f1-2 || echo "?"))"
