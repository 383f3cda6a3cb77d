#!/usr/bin/env bash
# The benchmarks of docs/benchmarks.md: every workload against Rivulet and, when they are
# installed, the peers, one after the other in one run on this machine, so their numbers compare.
# Results are JSON lines in $OUT (default target/bench/results.jsonl); a summary goes to stderr.
#
# Peers (optional; skipped when missing):
#   npm install --prefix "$PEERS" kinesalite kinesis-local
#   cargo install ferrokinesis --root "$PEERS/ferro"
# with PEERS defaulting to /tmp/peers. SECONDS_PER_WORKLOAD (default 10) sets each timed run;
# SERVERS (default: all, after the `sync-floor` ceiling run) picks which servers run.
set -euo pipefail
cd "$(dirname "$0")/.."

PEERS=${PEERS:-/tmp/peers}
SECS=${SECONDS_PER_WORKLOAD:-10}
OUT=${OUT:-target/bench/results.jsonl}
source scripts/bench-lib.sh
: >"$OUT"

cargo build --release --locked -p rivulet -p rivulet-bench
BENCH=target/release/rivulet-bench
# Write the build out now, so its writeback does not land in the first measurements.
sync
RIVULET=target/release/rivulet

# run LABEL PORT LOAD_RECORDS COMMAND...: start-up, then every workload, then memory.
run() {
  local label=$1 port=$2 load=$3
  shift 3
  local cmd="$*"
  local b=("$BENCH" --endpoint "127.0.0.1:$port" --label "$label")
  "${b[@]}" ready --command "$cmd" >>"$OUT"
  sh -c "exec $cmd" >"$WORK/$label.log" 2>&1 &
  local pid=$!
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  "${b[@]}" put-records --seconds "$SECS" >>"$OUT"
  "${b[@]}" put-records --record-bytes 1024 --seconds "$SECS" >>"$OUT"
  "${b[@]}" put-record --seconds "$SECS" >>"$OUT"
  "${b[@]}" --stream read get-records --records "$load" >>"$OUT"
  "${b[@]}" memory --pid "$pid" --when "after-loading-$load" >>"$OUT"
  "${b[@]}" visible --seconds "$SECS" >>"$OUT"
  # Enhanced fan-out; servers without SubscribeToShard are noted and skipped.
  "${b[@]}" subscribe --seconds "$SECS" >>"$OUT" || echo "$label: subscribe not supported" >&2
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

SERVERS=${SERVERS:-sync-floor rivulet rivulet-in-memory ferrokinesis ferrokinesis-durable kinesalite kinesis-local}
FERRO=$PEERS/ferro/bin/ferrokinesis
NODE_BIN=$PEERS/node_modules/.bin
for server in $SERVERS; do
  case $server in
    sync-floor)
      # No server: the machine's ceiling for durable single-record puts (see docs/benchmarks.md).
      "$BENCH" --label sync-floor sync-floor --seconds "$SECS" --dir "$WORK" >>"$OUT" ;;
    rivulet)
      run rivulet 4610 10000000 "$RIVULET serve --listen 127.0.0.1:4610 --data-dir $WORK/rivulet --create-stream-ms 0 --limits off" ;;
    rivulet-in-memory)
      run rivulet-in-memory 4611 1000000 "$RIVULET serve --listen 127.0.0.1:4611 --in-memory --create-stream-ms 0 --limits off" ;;
    ferrokinesis)
      [ -x "$FERRO" ] && run ferrokinesis 4612 1000000 "$FERRO serve --port 4612 --create-stream-ms 0 --shard-limit 1000" ;;
    ferrokinesis-durable)
      [ -x "$FERRO" ] && run ferrokinesis-durable 4613 100000 "$FERRO serve --port 4613 --create-stream-ms 0 --shard-limit 1000 --state-dir $WORK/ferro" ;;
    kinesalite)
      [ -x "$NODE_BIN/kinesalite" ] && run kinesalite 4614 100000 "$NODE_BIN/kinesalite --port 4614 --createStreamMs 0 --shardLimit 1000" ;;
    kinesis-local)
      # kinesis-mock reads server.json from its working directory.
      [ -x "$NODE_BIN/kinesis-local" ] && run kinesis-local 4615 20000 "env -C $PEERS/node_modules/kinesis-local KINESIS_MOCK_PLAIN_PORT=4615 KINESIS_MOCK_TLS_PORT=4616 CREATE_STREAM_DURATION=0ms LOG_LEVEL=ERROR node main.js" ;;
    *) echo "unknown server $server" >&2; exit 2 ;;
  esac || echo "$server not installed: skipped" >&2
done
# Throttling (issue 4): one shard offered 3x its record rate, limits on; server CPU alongside.
if [[ " $SERVERS " == *" rivulet "* ]]; then
  "$RIVULET" serve --listen 127.0.0.1:4617 --in-memory --create-stream-ms 0 >"$WORK/throttle.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/4617) 2>/dev/null && break; sleep 0.05; done
  before=$(awk '{print $14+$15}' "/proc/$pid/stat")
  "$BENCH" --endpoint 127.0.0.1:4617 --label rivulet-limits-aws --stream throttle --shards 1 \
    throttle --rate 3000 --seconds "$SECS" >>"$OUT"
  after=$(awk '{print $14+$15}' "/proc/$pid/stat")
  echo "{\"server\":\"rivulet-limits-aws\",\"workload\":\"throttle-server-cpu\",\"cpu_seconds\":$(( (after - before) ))e-2,\"seconds\":$SECS}" >>"$OUT"
  kill "$pid"; wait "$pid" 2>/dev/null || true
fi
# On-demand scaling (issue 16): a spike to ten times a new stream's capacity, at a twentieth of
# AWS's rates (50 records/s per shard) and AWS's pace sped up 60 times (a 15-minute step takes
# 15 s); then the same spike, short, and a rest at 7,200 times (the 30-day window takes 6 min)
# to show the way back down. `scripts/plot-on-demand.py` draws both (docs/on-demand-*.svg).
if [[ " $SERVERS " == *" rivulet "* ]]; then
  for pace in "60 90 10" "7200 20 480"; do
    read -r scale spike rest <<<"$pace"
    "$RIVULET" serve --listen 127.0.0.1:4618 --in-memory --create-stream-ms 0 \
      --update-stream-ms 500 --limits-scale 0.05 --on-demand-time-scale "$scale" \
      >"$WORK/on-demand.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/4618) 2>/dev/null && break; sleep 0.05; done
    "$BENCH" --endpoint 127.0.0.1:4618 --label "rivulet-on-demand-x$scale" --stream od \
      on-demand --start-rate 2000 --factor 1 --steps 1 --step-seconds "$spike" \
      --rest-seconds "$rest" >>"$OUT" 2>/dev/null
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
fi
# Encryption at rest (issue 5): PutRecords 500x100 B into a plain and an encrypted stream of one
# durable server, alternated twice so both see the same machine.
if [[ " $SERVERS " == *" rivulet "* ]]; then
  "$RIVULET" serve --listen 127.0.0.1:4619 --data-dir "$WORK/sse" --kms-keys "$WORK/sse-keys.toml" \
    --create-stream-ms 0 --update-stream-ms 0 --limits off >"$WORK/sse.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/4619) 2>/dev/null && break; sleep 0.05; done
  for round in 1 2; do
    "$BENCH" --endpoint 127.0.0.1:4619 --label rivulet-plain --stream plain \
      put-records --seconds "$SECS" >>"$OUT"
    "$BENCH" --endpoint 127.0.0.1:4619 --label rivulet-encrypted --stream encrypted \
      --encrypt-key alias/aws/kinesis put-records --seconds "$SECS" >>"$OUT"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
fi
echo "results: $OUT" >&2
