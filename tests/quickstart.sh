#!/usr/bin/env bash
# rpcd quick start: build, give two daemons a key each (each trusting the
# other's public key), start them on loopback, serve the kv example behind one,
# call it across the daemons by peer name with rpcctl and with the typed client,
# show stats and a bench summary, and clean up after itself.
#
#   bash tests/quickstart.sh
#
# RPCD_QUICKSTART_BIN=DIR uses binaries already built in DIR (the test suite
# does this) instead of building a release.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${RPCD_QUICKSTART_BIN:-}" ]; then
  bin=$RPCD_QUICKSTART_BIN
else
  echo "==> building (release): rpcd, rpcctl and the kv example"
  cargo build --release --quiet -p rpcd -p rpcctl --bins
  cargo build --release --quiet -p rpcd-client --examples
  bin=target/release
fi
examples=$bin/examples

work=$(mktemp -d "${TMPDIR:-/tmp}/rpcd-quickstart.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# A free UDP port on loopback for each daemon (ask the kernel for one).
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)); }
port_a=$(free_port)
port_b=$(free_port)
while [ "$port_b" = "$port_a" ]; do port_b=$(free_port); done

# Show each command as it could be pasted into a shell, then run it.
run() {
  printf '$'
  for a in "$@"; do
    case $a in
      *[!A-Za-z0-9._:/=@%+,-]*) printf " '%s'" "$a" ;;
      *) printf ' %s' "$a" ;;
    esac
  done
  echo
  "$@"
}

# NAME's config: its private key, and its one peer PEER (public key, address).
write_config() { # name peer peer_public_key peer_port
  cat >"$work/$1.toml" <<EOF
[security]
private_key_file = "$work/$1.key"

[peers.$2]
public_key = "$3"
addresses = ["127.0.0.1:$4"]
EOF
}

echo "==> keys: a private key for each daemon; each trusts the other's public key as a peer"
run "$bin/rpcctl" keys generate --out "$work/a.key"
run "$bin/rpcctl" keys generate --out "$work/b.key"
write_config a b "$("$bin/rpcctl" keys public "$work/b.key")" "$port_b"
write_config b a "$("$bin/rpcctl" keys public "$work/a.key")" "$port_a"
run cat "$work/a.toml"
run cat "$work/b.toml"

start_daemon() { # name port
  "$bin/rpcd" --config "$work/$1.toml" --listen "127.0.0.1:$2" --socket "$work/$1.sock" 2>"$work/$1.log" &
  pids+=($!)
  for _ in $(seq 1 200); do
    "$bin/rpcctl" --socket "$work/$1.sock" list >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "rpcd $1 did not start; its log:" >&2
  cat "$work/$1.log" >&2
  exit 1
}

echo
echo "==> starting rpcd A on 127.0.0.1:$port_a and rpcd B on 127.0.0.1:$port_b"
start_daemon a "$port_a"
start_daemon b "$port_b"

echo "==> starting kv_server behind B"
"$examples/kv_server" --socket "$work/b.sock" >"$work/kv.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do
  "$bin/rpcctl" --socket "$work/b.sock" list 2>/dev/null | grep -q '^kv.get$' && break
  sleep 0.05
done

A="$bin/rpcctl --socket $work/a.sock"
B=b # B by its peer name in A's config

echo
echo "==> rpcctl on A calls functions served behind B, by its peer name (JSON in, MessagePack on the wire, sealed between the daemons)"
run $A ping "$B" -c 3 -i 100ms
run $A call "$B" rpcd.echo '"hello"' '{"n":[1,2,3]}'
run $A call "$B" kv.put '"greeting"' '"hello from A"'
run $A call "$B" kv.get '"greeting"'
run $A call --json "$B" kv.incr '"visits"'
run $A list "$B"

echo
echo "==> the typed client (stub generated from the Kv trait) does the same"
run "$examples/kv_client" --socket "$work/a.sock" "$B" incr visits
run "$examples/kv_client" --socket "$work/a.sock" "$B" get greeting

echo
echo "==> bench: 2000 calls of kv.incr from A, 8 at a time"
run $A bench "$B" kv.incr '"bench"' -n 2000 -c 8

echo
echo "==> stats on A (per peer: datagrams, retransmissions, RTT, calls by outcome)"
run $A stats

echo
echo "quick start done; daemons and kv_server stopped, $work removed"
