# Sourced by the benchmark scripts once $OUT is set: makes $WORK (unless set) and the results'
# directory, and however the script ends stops every server it started (with $KILL_SIGNAL,
# default TERM) and removes $WORK. Not `kill -- -$$`: that would signal this shell too, which
# then dies before the rm, leaving gigabytes of benchmark data behind.
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$(dirname "$OUT")"
cleanup() {
  local pids
  pids=$(jobs -p)
  if [ -n "$pids" ]; then
    kill "-${KILL_SIGNAL:-TERM}" $pids 2>/dev/null || true
    # A killed server's status is not 0; under `set -e` that would end this trap before the rm.
    wait $pids 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
# A signal ends the script through `exit`, so the EXIT trap runs then too.
trap 'exit 143' TERM INT HUP

# The arguments the Rivulet benchmark scripts share, `[LABEL] [RIVULET_BINARY]`, with the load
# generator ($BENCH) and the timed run's seconds ($SECONDS_PER_WORKLOAD); builds both binaries
# when one is missing.
bench_args() {
  LABEL=${1:-rivulet}
  RIVULET=${2:-target/release/rivulet}
  BENCH=${BENCH:-target/release/rivulet-bench}
  SECS=${SECONDS_PER_WORKLOAD:-10}
  [ -x "$RIVULET" ] && [ -x "$BENCH" ] || cargo build --release --locked -p rivulet -p rivulet-bench
}
