#!/usr/bin/env bash
# The whole test suite: what README.md calls the test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# The cluster tests run real nats-server clusters: the pinned binary, installed once.
RIVULET_NATS_SERVER=$(bash scripts/nats-server.sh)
export RIVULET_NATS_SERVER

cargo test --workspace --locked

# boto3, the AWS CLI and the JS SDK v3 against a real server.
bash scripts/sdk-tests.sh

# Short, bounded fuzz runs of the decoders (needs cargo-fuzz). The sanitizer flags cargo-fuzz
# passes are nightly-only; RUSTC_BOOTSTRAP lets the machine's one stable toolchain accept them.
if [ -d fuzz ] && cargo fuzz --version >/dev/null 2>&1; then
  export RUSTC_BOOTSTRAP=1
  for target in $(cargo fuzz list); do
    echo "fuzzing $target for ${FUZZ_SECONDS:-20}s"
    cargo fuzz run "$target" -- -max_total_time="${FUZZ_SECONDS:-20}" -rss_limit_mb=2048
  done
else
  echo "cargo-fuzz not installed: skipping the fuzz runs (.ci/run installs it)"
fi
