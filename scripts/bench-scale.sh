#!/usr/bin/env bash
# Storage at scale (issue 12), the parts that need a large data dir, in one run:
#   1. PutRecords 500 x 100 B over 4,096 shards in 8 streams of 512 (8 load generators, one
#      connection each: the same 8 requests in flight as scripts/bench-shards.sh), and the same
#      load on one 4-shard stream before it, for the ratio;
#   2. fill those streams to $FILL_GB GB (1 KiB records), then kill -9 the server;
#   3. ready after that crash (one start: the journal is replayed), then ready after a clean
#      stop (five starts), with resident memory at readiness;
#   4. idle memory with $IDLE_SHARDS open shards (streams of 2,000), after creating them and
#      after a restart.
# Usage: scripts/bench-scale.sh [LABEL] [RIVULET_BINARY]; JSON lines in $OUT (default
# target/bench/scale.jsonl). SECONDS_PER_WORKLOAD (default 10) sets each timed run.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/bench/scale.jsonl}
FILL_GB=${FILL_GB:-10}
IDLE_SHARDS=${IDLE_SHARDS:-20000}
PORT=4640
KILL_SIGNAL=KILL
source scripts/bench-lib.sh
bench_args "$@"

serve() { # DATA_DIR: starts the server in the background, sets $pid once it listens
  "$RIVULET" serve --listen "127.0.0.1:$PORT" --data-dir "$1" --create-stream-ms 0 \
    --limits off >>"$WORK/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 3000); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return; sleep 0.02; done
  echo "server did not start" >&2; exit 1
}
b=("$BENCH" --endpoint "127.0.0.1:$PORT")
# Sums the records_per_s of the last $1 lines of $2 into one result line.
sum_line() {
  tail -n "$1" "$2" | python3 -c '
import json, sys
rows = [json.loads(line) for line in sys.stdin]
print(json.dumps({"server": sys.argv[1], "workload": sys.argv[2], "streams": len(rows),
                  "records_per_s": sum(r["records_per_s"] for r in rows),
                  "failed": sum(r["failed"] for r in rows)}))' "$3" "$4"
}

# 1. Throughput: 4 shards, then 4,096 shards in 8 streams.
serve "$WORK/data"
"${b[@]}" --label "$LABEL-4-shards" --stream s4 --shards 4 put-records --seconds "$SECS" >>"$OUT"
for s in $(seq 8); do "${b[@]}" --stream "m$s" --shards 512 put-records --seconds 1 --connections 1 >/dev/null; done
for s in $(seq 8); do
  "${b[@]}" --label "$LABEL-m$s" --stream "m$s" put-records --connections 1 --seconds "$SECS" >"$WORK/m$s.jsonl" &
done
wait $(jobs -p | grep -v "^$pid$")
cat "$WORK"/m?.jsonl >"$WORK/multi.jsonl"
sum_line 8 "$WORK/multi.jsonl" "$LABEL-4096-shards-8-streams" put-records-100B >>"$OUT"

# 2. Fill to FILL_GB with 1 KiB records over the 8 streams, then kill -9.
while [ "$(du -sb "$WORK/data" | cut -f1)" -lt $((FILL_GB * 1000000000)) ]; do
  for s in $(seq 8); do
    "${b[@]}" --stream "m$s" put-records --record-bytes 1024 --connections 1 --seconds 10 >/dev/null &
  done
  wait $(jobs -p | grep -v "^$pid$")
done
stored=$(du -sb "$WORK/data" | cut -f1)
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
echo "{\"server\":\"$LABEL\",\"workload\":\"filled\",\"bytes_on_disk\":$stored,\"shards\":4100}" >>"$OUT"

# 3. Ready after the crash (one start), then after clean stops.
cmd="$RIVULET serve --listen 127.0.0.1:$PORT --data-dir $WORK/data --create-stream-ms 0 --limits off"
"${b[@]}" --label "$LABEL-after-kill-9-4100-shards" ready --command "$cmd" --starts 1 >>"$OUT"
"${b[@]}" --label "$LABEL-after-clean-stop-4100-shards" ready --command "$cmd" --starts 5 >>"$OUT"
rm -rf "$WORK/data"

# 4. Idle memory with IDLE_SHARDS open shards.
serve "$WORK/idle"
for s in $(seq $((IDLE_SHARDS / 2000))); do
  "${b[@]}" --stream "idle$s" --shards 2000 put-records --seconds 1 --connections 1 >/dev/null
done
sleep 5
"${b[@]}" --label "$LABEL-$IDLE_SHARDS-shards" memory --pid "$pid" --when idle-after-create >>"$OUT"
kill "$pid"; wait "$pid" 2>/dev/null || true
cmd="$RIVULET serve --listen 127.0.0.1:$PORT --data-dir $WORK/idle --create-stream-ms 0 --limits off"
"${b[@]}" --label "$LABEL-$IDLE_SHARDS-shards" ready --command "$cmd" --starts 3 >>"$OUT"
serve "$WORK/idle"
sleep 5
"${b[@]}" --label "$LABEL-$IDLE_SHARDS-shards" memory --pid "$pid" --when idle-after-restart >>"$OUT"
kill "$pid"; wait "$pid" 2>/dev/null || true
echo "results: $OUT" >&2
