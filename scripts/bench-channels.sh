#!/usr/bin/env bash
# Channels (issue 15): a stream taking RATE records a second (default 50,000: JSON, ~100 B, in
# 500-record PutRecords) while a channel delivers it, with DataFreshnessInSeconds at its
# minimum (300 s, run 300 times faster: 1 s). One release server per destination:
#   none          the same load without a channel (the server's CPU for taking it in), with a
#                 data dir and in memory (the S3 and REST runs are in memory)
#   bucket-local  objects (ZSTD) in a bucket folder           (the embedded default)
#   table-local   an Iceberg table (Parquet ZSTD) on the sqlite catalog of a table bucket folder
#   bucket-s3     objects (ZSTD) in SeaweedFS's S3             (--s3-endpoint)
#   table-rest    an Iceberg table through SeaweedFS's REST catalog, data on its S3
# Each line of results: delivered/s, lag percentiles, drain time after the load, and the
# server's CPU (total, and per million records delivered). Results append to OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-50000}
SECS=${SECONDS_PER_WORKLOAD:-20}
OUT=${OUT:-target/bench/channels.jsonl}
WORK=$(mktemp -d)
mkdir -p "$(dirname "$OUT")"
cargo build --release --locked -p rivulet -p rivulet-bench >&2
RIVULET=${CARGO_TARGET_DIR:-target}/release/rivulet
BENCH=${CARGO_TARGET_DIR:-target}/release/rivulet-bench
WEED=$(bash scripts/seaweedfs.sh)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done; }
SCHEMA='{"type": "object", "required": ["id", "at"], "properties": {"id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"}, "item": {"type": "string"}, "price": {"type": "number"}}}'

run() { # label, port, destination, serve flags...
  local label=$1 port=$2 destination=$3; shift 3
  "$RIVULET" serve --listen "127.0.0.1:$port" --create-stream-ms 0 --update-stream-ms 0 \
    --delete-stream-ms 0 --limits off --channel-time-scale 300 --log warn "$@" \
    >"$WORK/$label.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_port "$port"
  "$BENCH" --endpoint "127.0.0.1:$port" --label "$label" channel --destination "$destination" \
    --rate "$RATE" --seconds "$SECS" --pid "$pid" --compression ZSTD >>"$OUT"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

# The embedded default: a data dir with a bucket folder, a table bucket folder and the schema.
DATA="$WORK/data"
mkdir -p "$DATA/buckets/bench" "$DATA/table-buckets/bench-tables" "$DATA/schemas/bench"
echo "$SCHEMA" >"$DATA/schemas/bench/records.json"
run rivulet-none "$(free_port)" none --data-dir "$WORK/none"
run rivulet-none-in-memory "$(free_port)" none --in-memory
run rivulet-bucket-local "$(free_port)" bucket --data-dir "$DATA"
run rivulet-table-local "$(free_port)" table --data-dir "$DATA"

# SeaweedFS (S3, Iceberg REST catalog) as in sdk-tests/python/seaweed.py.
D="$WORK/weed"; mkdir -p "$D/data" "$D/logs"
P=(); for _ in $(seq 9); do P+=("$(free_port)"); done
ADMIN=$(python3 -c '
import socket
for _ in range(200):
    s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close()
    if p < 55000:
        try:
            t=socket.socket(); t.bind(("127.0.0.1",p+10000)); t.close(); print(p); break
        except OSError: pass')
AWS_ACCESS_KEY_ID=rivulet AWS_SECRET_ACCESS_KEY=rivulet-secret "$WEED" -logdir="$D/logs" mini \
  -dir="$D/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="${P[0]}" \
  -master.port.grpc="${P[1]}" -volume.port="${P[2]}" -volume.port.grpc="${P[3]}" \
  -filer.port="${P[4]}" -filer.port.grpc="${P[5]}" -filer.localSocket="$D/filer.sock" \
  -s3.port="${P[6]}" -s3.port.grpc="${P[7]}" -s3.port.iceberg="${P[8]}" -s3.port.lance=0 \
  -s3.localSocket="$D/s3.sock" -admin.port="$ADMIN" -admin.port.grpc=$((ADMIN + 10000)) \
  -admin.ui=false -webdav=false -master.telemetry=false -tableBucket=bench-tables \
  >"$D/out.log" 2>&1 &
PIDS+=("$!")
disown "$!"
for _ in $(seq 600); do grep -q "All enabled components are running" "$D/out.log" && break; sleep 0.1; done
S3="http://127.0.0.1:${P[6]}"
target/sdk-venv/bin/python - "$S3" <<'PY' 2>/dev/null || python3 - "$S3" <<'PY2'
import sys, boto3
boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
             aws_access_key_id="rivulet", aws_secret_access_key="rivulet-secret").create_bucket(Bucket="bench")
PY
import sys, boto3
boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
             aws_access_key_id="rivulet", aws_secret_access_key="rivulet-secret").create_bucket(Bucket="bench")
PY2
export AWS_ACCESS_KEY_ID=rivulet AWS_SECRET_ACCESS_KEY=rivulet-secret
run rivulet-bucket-s3 "$(free_port)" bucket --in-memory --s3-endpoint "$S3"
run rivulet-table-rest "$(free_port)" table --in-memory --s3-endpoint "$S3" \
  --iceberg-catalog "http://127.0.0.1:${P[8]}" --iceberg-catalog-credential rivulet:rivulet-secret \
  --schema-dir "$DATA/schemas"
echo "results: $OUT" >&2
