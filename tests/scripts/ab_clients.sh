#!/bin/bash
# ab_clients.sh BASE NEW [ROUNDS]: an A/B of the client library, whose changes the daemons do not
# see: `rpcctl bench` and the `kv_server` example built into directory BASE against those built
# into NEW, alternated ROUNDS times (default 6) on the same two daemons (NEW's `rpcd`). Each turn
# starts that build's `kv_server` on daemon B, makes 1,000 calls of warm-up, then prints the p50
# of 10,000 calls from 1 caller and the calls/s of 30,000 from 32, then stops it; the means of
# each side come last. Build each side with `cargo build --release -p rpcd --bins`, `-p rpcctl
# --bins`, `-p rpcd-client --examples` (the base in its own worktree with its own
# CARGO_TARGET_DIR); BASE and NEW are the `release` directories.
# Env: AB_DIR (default /tmp/ab), AB_PORT_A (47011), AB_PORT_B (47012): give each run its own.
[ -n "$2" ] || { echo "usage: $0 BASE NEW [ROUNDS]" >&2; exit 2; }
BASE=$1; NEW=$2; ROUNDS=${3:-6}
D=${AB_DIR:-/tmp/ab}; PA=${AB_PORT_A:-47011}; PB=${AB_PORT_B:-47012}
for bin in rpcd rpcctl examples/kv_server; do
    for side in "$BASE" "$NEW"; do
        [ -x "$side/$bin" ] || { echo "$side/$bin: not built" >&2; exit 2; }
    done
done
pkill -f "$D/" ; sleep 0.3; rm -rf "$D"; mkdir -p "$D"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null' EXIT
"$NEW/rpcd" --listen 127.0.0.1:$PA --socket "$D/a.sock" > "$D/a.log" 2>&1 & PIDS+=($!)
"$NEW/rpcd" --listen 127.0.0.1:$PB --socket "$D/b.sock" > "$D/b.log" 2>&1 & PIDS+=($!)
sleep 0.5; export RPCD_SOCKET=$D/a.sock
for _ in $(seq 1 "$ROUNDS"); do
    for side in base new; do
        R=$BASE; [ $side = new ] && R=$NEW
        "$R/examples/kv_server" --socket "$D/b.sock" > "$D/kv.log" 2>&1 & KV=$!
        sleep 0.3
        "$R/rpcctl" bench -n 1000 127.0.0.1:$PB kv.get '"k"' > /dev/null 2>&1
        p50=$("$R/rpcctl" bench -n 10000 127.0.0.1:$PB kv.get '"k"' 2>&1 | awk '/p50/{print $2}')
        rate=$("$R/rpcctl" bench -n 30000 -c 32 127.0.0.1:$PB kv.get '"k"' 2>&1 |
            awk '/throughput/{print $2}')
        kill $KV; wait $KV 2>/dev/null
        [ -n "$p50" ] && [ -n "$rate" ] || { echo "$side: bench failed: see $D/*.log" >&2; exit 1; }
        echo "$side 1-caller p50 $p50 µs, 32 callers $rate calls/s" | tee -a "$D/rows"
    done
done
awk '{p[$1] += $4; r[$1] += $8; n[$1]++}
     END {for (s in n) printf "%s: mean 1-caller p50 %.1f µs, mean 32 callers %.0f calls/s\n",
          s, p[s] / n[s], r[s] / n[s]}' "$D/rows" | sort
