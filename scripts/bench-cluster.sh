#!/usr/bin/env bash
# Cluster mode's benchmarks (issue 13), in one run: the ceiling (`rivulet-bench nats-floor`, a
# minimal async-nats publisher of atomic batches on the same R3 cluster), then Rivulet on R3
# with 1 node and with 3 nodes (scripts/cluster.sh): PutRecords 500 x 100 B over 4 and 512
# shards (with 3 nodes, one generator per node at once), GetRecords read-back, PutRecord at 16
# connections, put→visible; and the Rivulet nodes' CPU time during each load, which is what
# predicts growth with nodes (this 2-core machine cannot show it).
# Results: JSON lines in $OUT (default target/bench/cluster.jsonl), CPU in $CPU.
set -u
cd "$(dirname "$0")/.."
mkdir -p target/bench
OUT=${OUT:-target/bench/cluster.jsonl}
CPU=${CPU:-target/bench/cluster-cpu.txt}
B=${BENCH:-target/release/rivulet-bench}
export CLUSTER_DIR=${CLUSTER_DIR:-target/bench/cluster} RIVULET=${RIVULET:-target/release/rivulet}
export NATS_PORT=14222 ROUTE_PORT=16222 MONITOR_PORT=18222 RIVULET_PORT=14567
URLS=nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224
[ -x "$RIVULET" ] && [ -x "$B" ] || cargo build --release --locked -p rivulet -p rivulet-bench
trap 'bash scripts/cluster.sh down >/dev/null 2>&1' EXIT

# CPU ticks (1/100 s) used so far by the running Rivulet nodes.
cpu() {
  local t=0 pid
  for f in "$CLUSTER_DIR"/rivulet*.pid; do
    pid=$(cat "$f")
    t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$t"
}

for nodes in 1 3; do
  rm -rf "$CLUSTER_DIR"
  RIVULET_NODES=$nodes RIVULET_ARGS="--limits off --create-stream-ms 0 --log warn" \
    bash scripts/cluster.sh up
  sleep 3
  "$B" --label "floor-r3-before-$nodes" nats-floor --nats "$URLS" --seconds 10 >>"$OUT"
  for shards in 4 512; do
    # The stream is created through node 1, then every node is loaded at once.
    "$B" --endpoint 127.0.0.1:14567 --label warm --stream "s$shards" --shards "$shards" \
      put-records --seconds 1 >/dev/null
    c0=$(cpu)
    for n in $(seq "$nodes"); do
      "$B" --endpoint "127.0.0.1:$((14566 + n))" --label "rivulet-$nodes-nodes-r3-$shards-node$n" \
        --stream "s$shards" --shards "$shards" put-records --seconds 10 >>"$OUT" &
    done
    wait
    echo "nodes=$nodes shards=$shards rivulet_cpu_ticks=$(($(cpu) - c0))" >>"$CPU"
  done
  b=("$B" --endpoint 127.0.0.1:14567 --label "rivulet-$nodes-nodes-r3-4")
  "${b[@]}" --stream s4 --shards 4 get-records --records 100000 >>"$OUT"
  # Every shard of a wide stream read at once (the dense read path).
  "$B" --endpoint 127.0.0.1:14567 --label "rivulet-$nodes-nodes-r3-512" --stream r512 --shards 512 \
    get-records --records 100000 >>"$OUT"
  c0=$(cpu)
  "${b[@]}" --stream p4 --shards 4 put-record --seconds 10 >>"$OUT"
  echo "nodes=$nodes put-record rivulet_cpu_ticks=$(($(cpu) - c0))" >>"$CPU"
  "${b[@]}" --stream v4 --shards 4 visible >>"$OUT"
  "${b[@]}" --stream e4 --shards 4 subscribe >>"$OUT"
  # The put through another node than the subscription's: each event follows a put notice.
  if [ "$nodes" -gt 1 ]; then
    "$B" --endpoint 127.0.0.1:14567 --label "rivulet-$nodes-nodes-r3-4-cross" --stream x4 \
      --shards 4 subscribe --put-endpoint 127.0.0.1:14568 >>"$OUT"
  fi
  "$B" --label "floor-r3-after-$nodes" nats-floor --nats "$URLS" --seconds 10 >>"$OUT"
  bash scripts/cluster.sh down
done
