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
