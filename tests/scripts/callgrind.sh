#!/bin/bash
# callgrind.sh WHICH(a|b) OUT [N] [C] [BINDIR]: user-space instructions per call of daemon A (the
# caller's side) or B (the serving side), run under callgrind while `rpcctl bench` sends N `kv.get`
# calls (default 20000) at concurrency C (default 32) through A and B to the `kv_server` example;
# the other daemon and the app run natively. Deterministic to a few per cent, whatever the load.
# Needs valgrind, and `cargo build --release -p rpcd --bins`, `-p rpcctl --bins`, `-p rpcd-client
# --examples` first (BINDIR: their directory, default target/release). Then
# `callgrind_annotate --threshold=100 --auto=no [--inclusive=yes] OUT.1` says where they go.
# Env: CG_DIR (default /tmp/ps), CG_PORT_A (47001), CG_PORT_B (47002): give each run its own;
# CG_KEYS=1: the daemons with keys that trust each other (the target is then B's peer name, "b").
# RPCD_DAEMON__BUSY_POLL_US=0 keeps the daemons' polling out of the count.
case "$1" in a|b) ;; *) echo "usage: $0 a|b OUT [N] [C] [BINDIR]" >&2; exit 2;; esac
[ -n "$2" ] || { echo "usage: $0 a|b OUT [N] [C] [BINDIR]" >&2; exit 2; }
WHICH=$1; OUT=$2; N=${3:-20000}; C=${4:-32}; R=${5:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
D=${CG_DIR:-/tmp/ps}; PA=${CG_PORT_A:-47001}; PB=${CG_PORT_B:-47002}
pkill -f "$D/" ; sleep 0.3; rm -rf $D; mkdir -p $D; rm -f $OUT $OUT.*
VA=""; VB=""; VG="valgrind --tool=callgrind --callgrind-out-file=$OUT"
[ $WHICH = a ] && VA=$VG; [ $WHICH = b ] && VB=$VG
: > $D/a.toml; : > $D/b.toml; T=127.0.0.1:$PB
if [ "${CG_KEYS:-0}" = 1 ]; then
  $R/rpcctl keys generate --out $D/a.key > $D/a.pub 2>/dev/null || exit 1
  $R/rpcctl keys generate --out $D/b.key > $D/b.pub 2>/dev/null || exit 1
  printf '[security]\nprivate_key_file = "%s"\n[peers.a]\npublic_key = "%s"\n' \
    $D/b.key "$(cat $D/a.pub)" > $D/b.toml
  printf '[security]\nprivate_key_file = "%s"\n[peers.b]\npublic_key = "%s"\naddresses = ["127.0.0.1:%s"]\n' \
    $D/a.key "$(cat $D/b.pub)" $PB > $D/a.toml
  T=b
fi
$VA $R/rpcd --config $D/a.toml --listen 127.0.0.1:$PA --socket $D/a.sock > $D/a.log 2>&1 & echo $! > $D/a.pid
$VB $R/rpcd --config $D/b.toml --listen 127.0.0.1:$PB --socket $D/b.sock > $D/b.log 2>&1 & echo $! > $D/b.pid
sleep 3
$R/examples/kv_server --socket $D/b.sock > $D/kv.log 2>&1 & echo $! > $D/kv.pid
sleep 0.5; export RPCD_SOCKET=$D/a.sock
P=$(cat $D/$WHICH.pid)
$R/rpcctl bench -n 2000 -c $C $T kv.get '"k"' > /dev/null 2>&1
callgrind_control -z $P >/dev/null 2>&1
$R/rpcctl bench -n $N -c $C $T kv.get '"k"' 2>&1 | grep -E 'throughput|failed'
callgrind_control -d $P >/dev/null 2>&1
sleep 0.5; pkill -f "$D/"; sleep 1
T=$(callgrind_annotate $OUT.1 2>/dev/null | grep 'PROGRAM TOTALS' | awk '{print $1}' | tr -d ,)
[ -n "$T" ] || { echo "no profile in $OUT.1: see $D/*.log" >&2; exit 1; }
echo "$WHICH c=$C: $((T / N)) instructions per call (profile: $OUT.1; callgrind_annotate --threshold=100 --auto=no [--inclusive=yes] $OUT.1)"
