#!/usr/bin/env bash
# Starts or stops a Rivulet cluster on loopback: 3 nats-server processes (JetStream, R3,
# sync_interval: always) and 3 Rivulet nodes on top of them. For trying cluster mode out and for
# benchmarks; the configs it writes are the documented production starting point
# (docs/cluster.md).
#
#   scripts/cluster.sh up     # prints the Kinesis endpoint(s) and the NATS URLs
#   scripts/cluster.sh down   # stops exactly what `up` started
#   scripts/cluster.sh status
#
# Settings (environment): CLUSTER_DIR (state, configs, logs, JetStream data; default
# target/cluster), NATS_PORT, ROUTE_PORT, MONITOR_PORT (the first server's client, cluster
# and monitoring ports, default 4222, 6222 and 8222; the others follow), RIVULET_PORT (first
# Kinesis port, default 4567), RIVULET (the binary; default
# target/release/rivulet, built if missing), RIVULET_NODES (Rivulet nodes, on consecutive
# ports; default 3), RIVULET_ARGS (more `rivulet serve` flags).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${CLUSTER_DIR:-target/cluster}
NATS_PORT=${NATS_PORT:-4222}
ROUTE_PORT=${ROUTE_PORT:-6222}
MONITOR_PORT=${MONITOR_PORT:-8222}
RIVULET_PORT=${RIVULET_PORT:-4567}
RIVULET=${RIVULET:-target/release/rivulet}
NODES=${RIVULET_NODES:-3}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_port() {
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1; see $DIR/*.log" >&2
  return 1
}

up() {
  mkdir -p "$DIR"
  local nats urls="" routes="" data
  data=$(cd "$DIR" && pwd)
  nats=$(bash scripts/nats-server.sh)
  [ -x "$RIVULET" ] || cargo build --release --locked -p rivulet
  for i in 1 2 3; do
    routes="$routes${routes:+, }nats-route://127.0.0.1:$((ROUTE_PORT + i - 1))"
    urls="$urls${urls:+,}nats://127.0.0.1:$((NATS_PORT + i - 1))"
  done
  for i in 1 2 3; do
    running "$DIR/n$i.pid" && { echo "n$i already runs"; continue; }
    cat >"$DIR/n$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:$((NATS_PORT + i - 1))
http: 127.0.0.1:$((MONITOR_PORT + i - 1))
# Rivulet's PutRecords of 500 records is one atomic batch; 10 MiB requests need room.
max_payload: 16MB
jetstream {
  store_dir: "$data/n$i"
  # Every acknowledged write is on disk on a quorum (never the default 2-minute interval).
  sync_interval: always
}
cluster {
  name: rivulet
  listen: 127.0.0.1:$((ROUTE_PORT + i - 1))
  routes: [ $routes ]
}
EOF
    "$nats" -c "$DIR/n$i.conf" >>"$DIR/n$i.log" 2>&1 &
    echo $! >"$DIR/n$i.pid"
  done
  for i in 1 2 3; do wait_port $((NATS_PORT + i - 1)); done
  # The cluster's key service: one key file, the same for every node (kms init keeps an
  # existing file's keys and adds the root the AWS-managed keys are derived from).
  "$RIVULET" kms --kms-keys "$DIR/kms-keys.toml" init >/dev/null
  # Rivulet waits (up to a minute) until JetStream has elected its leaders.
  for n in $(seq "$NODES"); do
    running "$DIR/rivulet$n.pid" && { echo "rivulet$n already runs"; continue; }
    local port=$((RIVULET_PORT + n - 1))
    "$RIVULET" serve --listen "127.0.0.1:$port" --cluster "$urls" --replicas 3 \
      --node-name "rivulet$n" --kms-keys "$DIR/kms-keys.toml" ${RIVULET_ARGS:-} >>"$DIR/rivulet$n.log" 2>&1 &
    echo $! >"$DIR/rivulet$n.pid"
    wait_port "$port"
    echo "Kinesis endpoint: http://127.0.0.1:$port"
  done
  echo "NATS: $urls"
}

down() {
  local pid
  for f in "$DIR"/rivulet*.pid "$DIR"/n*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
}

status() {
  for f in "$DIR"/n*.pid "$DIR"/rivulet*.pid; do
    [ -f "$f" ] || continue
    if running "$f"; then echo "$(basename "$f" .pid): running"; else echo "$(basename "$f" .pid): stopped"; fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
