#!/bin/bash
# busy_poll_sweep.sh US... : for each value of daemon.busy_poll_us (0: off), start two plaintext
# daemons and the `kv_server` example behind daemon B (as tests/tests/perf/setups.rs does), run
# `rpcctl bench` through both at 1 caller (10,000 calls) and at 32 (60,000), and print p50, p99,
# calls/s and each process's CPU microseconds per call (/proc/PID/stat, 10 ms ticks). Give the
# values twice or more (e.g. `0 100 200 0 100 200`): the machine drifts between runs, so compare
# neighbours. Needs `cargo build --release -p rpcd --bins -p rpcctl --bins && cargo build
# --release -p rpcd-client --examples` first.
# Env: BINDIR (default target/release), SWEEP_DIR (/tmp/rpcd-sweep), SWEEP_PORT_A (47011),
# SWEEP_PORT_B (47012).
[ $# -gt 0 ] || { echo "usage: $0 US [US...]" >&2; exit 2; }
R=${BINDIR:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
D=${SWEEP_DIR:-/tmp/rpcd-sweep}; PA=${SWEEP_PORT_A:-47011}; PB=${SWEEP_PORT_B:-47012}
PIDS=()
stop() { [ ${#PIDS[@]} -gt 0 ] && kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; PIDS=(); }
trap stop EXIT
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
per_call() { echo "scale=1; ($1) * 10000 / $2" | bc; }
for us in "$@"; do
  stop; rm -rf "$D"; mkdir -p "$D"
  export RPCD_DAEMON__BUSY_POLL_US=$us
  "$R/rpcd" --listen 127.0.0.1:$PA --socket "$D/a.sock" > "$D/a.log" 2>&1 & A=$!
  "$R/rpcd" --listen 127.0.0.1:$PB --socket "$D/b.sock" > "$D/b.log" 2>&1 & B=$!
  PIDS=($A $B); sleep 0.5
  "$R/examples/kv_server" --socket "$D/b.sock" > "$D/kv.log" 2>&1 & K=$!
  PIDS+=($K); sleep 0.3
  "$R/rpcctl" --socket "$D/a.sock" bench -n 2000 127.0.0.1:$PB kv.get '"k"' > /dev/null || exit 1
  for c in 1 32; do
    n=$([ $c = 1 ] && echo 10000 || echo 60000)
    a=$(cpu $A); b=$(cpu $B); k=$(cpu $K)
    out=$("$R/rpcctl" --socket "$D/a.sock" bench -n $n -c $c 127.0.0.1:$PB kv.get '"k"') || exit 1
    echo "busy_poll_us=$us callers=$c p50 $(echo "$out" | awk '/p50/{print $2}') µs," \
      "p99 $(echo "$out" | awk '/p99 /{print $2}') µs," \
      "$(echo "$out" | awk '/throughput/{print $2}') calls/s, CPU µs per call:" \
      "A $(per_call "$(cpu $A)-$a" $n) B $(per_call "$(cpu $B)-$b" $n) kv_server $(per_call "$(cpu $K)-$k" $n)"
  done
done
