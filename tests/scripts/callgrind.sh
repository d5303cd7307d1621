#!/bin/bash
# callgrind.sh WHICH(a|b) OUT [N] [C] [BINDIR]: user-space instructions per call of daemon A (the
# caller's side) or B (the serving side), run under callgrind while `rpcctl bench` sends N `kv.get`
# calls (default 20000) at concurrency C (default 32) through A and B to the `kv_server` example;
# the other daemon and the app run natively. Deterministic to a few per cent, whatever the load.
# Needs valgrind, and `cargo build --release -p rpcd --bins`, `-p rpcctl --bins`, `-p rpcd-client
# --examples` first (BINDIR: their directory, default target/release). Then
# `callgrind_annotate --threshold=100 --auto=no [--inclusive=yes] OUT.1` says where they go.
# Env: CG_DIR (default /tmp/ps), CG_PORT_A (47001), CG_PORT_B (47002): give each run its own.
case "$1" in a|b) ;; *) echo "usage: $0 a|b OUT [N] [C] [BINDIR]" >&2; exit 2;; esac
[ -n "$2" ] || { echo "usage: $0 a|b OUT [N] [C] [BINDIR]" >&2; exit 2; }
WHICH=$1; OUT=$2; N=${3:-20000}; C=${4:-32}; R=${5:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
D=${CG_DIR:-/tmp/ps}; PA=${CG_PORT_A:-47001}; PB=${CG_PORT_B:-47002}
pkill -f "$D/" ; sleep 0.3; rm -rf $D; mkdir -p $D; rm -f $OUT $OUT.*
VA=""; VB=""; VG="valgrind --tool=callgrind --callgrind-out-file=$OUT"
[ $WHICH = a ] && VA=$VG; [ $WHICH = b ] && VB=$VG
$VA $R/rpcd --listen 127.0.0.1:$PA --socket $D/a.sock > $D/a.log 2>&1 & echo $! > $D/a.pid
$VB $R/rpcd --listen 127.0.0.1:$PB --socket $D/b.sock > $D/b.log 2>&1 & echo $! > $D/b.pid
sleep 3
$R/examples/kv_server --socket $D/b.sock > $D/kv.log 2>&1 & echo $! > $D/kv.pid
sleep 0.5; export RPCD_SOCKET=$D/a.sock
P=$(cat $D/$WHICH.pid)
$R/rpcctl bench -n 2000 -c $C 127.0.0.1:$PB kv.get '"k"' > /dev/null 2>&1
callgrind_control -z $P >/dev/null 2>&1
$R/rpcctl bench -n $N -c $C 127.0.0.1:$PB kv.get '"k"' 2>&1 | grep -E 'throughput|failed'
callgrind_control -d $P >/dev/null 2>&1
sleep 0.5; pkill -f "$D/"; sleep 1
T=$(callgrind_annotate $OUT.1 2>/dev/null | grep 'PROGRAM TOTALS' | awk '{print $1}' | tr -d ,)
[ -n "$T" ] || { echo "no profile in $OUT.1: see $D/*.log" >&2; exit 1; }
echo "$WHICH c=$C: $((T / N)) instructions per call (profile: $OUT.1; callgrind_annotate --threshold=100 --auto=no [--inclusive=yes] $OUT.1)"
