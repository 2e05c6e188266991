#!/usr/bin/env bash
# Regtest demo: two real regtest bitcoind nodes, the pool (with rpc credentials and ZMQ), and
# the built-in CPU miner finding blocks. Everything on 127.0.0.1; stops by itself.
#   bash contrib/demo.sh [SECONDS]      (default 60)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
secs=${1:-60}
bash contrib/setup.sh
cargo build --quiet --bin ckpool
ckpool="${CARGO_TARGET_DIR:-$here/target}/debug/ckpool"
demo="$here/.regtest/demo"
rm -rf "$demo"; mkdir -p "$demo/a" "$demo/b" "$demo/pool"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
. "$here/contrib/regtest-pair.sh"
regtest_pair_start "$demo"
STRATUM=$(free_port)
cat > "$demo/pool/ckpool.conf" <<CONF
{
"btcd" : [
	{
	"url" : "127.0.0.1:$RPCA",
	"auth" : "$user",
	"pass" : "$pass",
	"notify" : true
	}
],
"btcaddress" : "$addr",
"btcsig" : "/ckpool-rs demo/",
"serverurl" : [
	"127.0.0.1:$STRATUM"
],
"mindiff" : 0.001,
"startdiff" : 0.001,
"maxdiff" : 0,
"zmqblock" : "tcp://127.0.0.1:$ZMQ",
"logdir" : "$demo/pool/logs"
}
Comments from here on are ignored.
CONF
start_height=$(cli getblockcount)
echo "demo: node at height $start_height; pool on 127.0.0.1:$STRATUM paying $addr"
"$ckpool" --log-shares --killold --config "$demo/pool/ckpool.conf" --sockdir "$demo/pool/sock" -q & pids+=($!)
for _ in $(seq 1 300); do grep -q "ckpool ready" "$demo/pool/logs/ckpool.log" 2>/dev/null && break; sleep 0.2; done
grep "ckpool ready" "$demo/pool/logs/ckpool.log"
echo "demo: mining for $secs s with 'ckpool mine -o stratum+tcp://127.0.0.1:$STRATUM -u demo.worker -t 1'"
"$ckpool" mine -o "stratum+tcp://127.0.0.1:$STRATUM" -u demo.worker -p x -t 1 --duration "$secs" &
miner=$!
tail -n 0 -F "$demo/pool/logs/ckpool.log" 2>/dev/null | grep --line-buffered -E "BLOCK FOUND|node .*: (accepted|rejected)" &
tailer=$!
wait $miner || true
kill $tailer 2>/dev/null || true
end_height=$(cli getblockcount)
found=$((end_height - start_height))
echo "demo: the node's height went from $start_height to $end_height: $found block(s) found by the pool and accepted"
echo "demo: block log: $demo/pool/logs/blocks.log; share logs under $demo/pool/logs/"
[ "$found" -gt 0 ]
