#!/usr/bin/env bash
# PutRecord against the machine's ceiling (issue 12): `sync-floor` journal, journal-zeroed and
# http-journal, and Rivulet's PutRecord (16 connections, 100 B) on a fresh durable server and
# on one that has run a while (PutRecords for $WARM_SECONDS first, so its journal reuses
# retired files as a running server's does), alternated $ROUNDS times.
# Usage: scripts/bench-putrecord.sh [LABEL] [RIVULET_BINARY]; JSON lines in $OUT (default
# target/bench/putrecord.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."

WARM=${WARM_SECONDS:-4}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-target/bench/putrecord.jsonl}
PORT=4636
source scripts/bench-lib.sh
bench_args "$@"

# LABEL_SUFFIX WARM_SECONDS: one PutRecord run on a fresh server, after the warm-up if any.
rivulet() {
  "$RIVULET" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --create-stream-ms 0 \
    --limits off >"$WORK/serve.log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  local b=("$BENCH" --endpoint "127.0.0.1:$PORT")
  if [ "$2" != 0 ]; then
    "${b[@]}" --stream warm --shards 4 put-records --seconds "$2" >/dev/null
    sleep 2
  fi
  "${b[@]}" --label "$LABEL-$1" --stream pr --shards 4 put-record --seconds "$SECS" >>"$OUT"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$WORK/data"
}
for _ in $(seq "$ROUNDS"); do
  for design in journal journal-zeroed http-journal; do
    "$BENCH" --label sync-floor sync-floor --design "$design" --seconds "$SECS" --dir "$WORK" >>"$OUT"
  done
  rivulet fresh 0
  rivulet running "$WARM"
done
echo "results: $OUT" >&2
