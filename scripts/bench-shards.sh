#!/usr/bin/env bash
# Cost against shards (issue 12): PutRecords of 500 x 100 B with random keys into streams of 4,
# 64, 512 and 4,096 shards, each on a fresh durable server (fsync on, --limits off), then a
# read-back over the 512-shard stream. Usage: scripts/bench-shards.sh [LABEL] [RIVULET_BINARY];
# results are JSON lines in $OUT (default target/bench/shards.jsonl). SECONDS_PER_WORKLOAD
# (default 10) sets each timed run; SHARDS overrides the sweep.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/bench/shards.jsonl}
SWEEP=${SHARDS:-4 64 512 4096}
source scripts/bench-lib.sh
bench_args "$@"

for shards in $SWEEP; do
  port=4630
  "$RIVULET" serve --listen "127.0.0.1:$port" --data-dir "$WORK/data-$shards" --create-stream-ms 0 \
    --limits off >"$WORK/serve-$shards.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  b=("$BENCH" --endpoint "127.0.0.1:$port" --label "$LABEL-$shards-shards" --stream "s$shards" --shards "$shards")
  "${b[@]}" put-records --seconds "$SECS" >>"$OUT"
  if [ "$shards" = 4 ] || [ "$shards" = 512 ]; then
    "${b[@]}" get-records --records 1000000 >>"$OUT"
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$WORK/data-$shards"
  sync
done
