#!/usr/bin/env bash
# Builds Bitcoin Core's bitcoind, bitcoin-cli and bitcoin-node (regtest nodes for the tests; bitcoin-node
# is the multiprocess build with the IPC mining interface, `-ipcbind=unix`) from the source tree
# that the libbitcoinkernel-sys crate vendors (a dev-dependency through bitcoinkernel), once.
# The binaries are cached outside target/, keyed by the crate's version, so a clean target/ does not
# rebuild them and a crate upgrade does:
#   ${CKPOOL_CORE_CACHE:-$HOME/.cache/ckpool}/core-<crate version>/bin/{bitcoind,bitcoin-cli,bitcoin-node}
# Prints that bin directory on its last line. Needs cmake, a C++ compiler, libevent-dev, libboost-dev,
# capnproto and libcapnp-dev (contrib/setup.sh installs them). With bitcoin-node (IPC: libmultiprocess
# and the generated Cap'n Proto code) 3915 s measured on 2 cores shared with three other builds
# (bitcoind alone: 297 s on idle cores); instant when cached.
# A cache from before bitcoin-node was built (bitcoind and bitcoin-cli only) is rebuilt once.
# The vendored tree lacks src/zmq and src/wallet: this node has no ZMQ and no wallet.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

# Where cargo unpacked the crate (after `cargo fetch`), and its version.
read -r version src < <(cargo metadata --locked --format-version 1 2>/dev/null | python3 -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "libbitcoinkernel-sys":
        print(p["version"], os.path.join(os.path.dirname(p["manifest_path"]), "bitcoin"))
        break
')
if [ -z "${version:-}" ] || [ ! -f "$src/CMakeLists.txt" ]; then
  echo "build-core: the libbitcoinkernel-sys source was not found; run 'cargo fetch --locked' first" >&2
  exit 1
fi

cache="${CKPOOL_CORE_CACHE:-$HOME/.cache/ckpool}/core-$version"
if [ -x "$cache/bin/bitcoind" ] && [ -x "$cache/bin/bitcoin-cli" ] && [ -x "$cache/bin/bitcoin-node" ]; then
  echo "build-core: Bitcoin Core $("$cache/bin/bitcoind" -version | head -1 | sed 's/.*version //') cached" >&2
  echo "$cache/bin"
  exit 0
fi

jobs=$(nproc 2>/dev/null || echo 2)
build="$cache.build"
rm -rf "$build"
mkdir -p "$build"
echo "build-core: building bitcoind + bitcoin-cli + bitcoin-node from $src ($jobs jobs; several minutes to an hour on 2 cores, once)" >&2
start=$(date +%s)
# The vendored tree has no wallet or ZMQ sources: switch them off, and everything else we don't run.
# IPC on: bitcoin-node (the multiprocess node) serves the Cap'n Proto mining interface; bitcoind
# is built as before.
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_DAEMON=ON -DBUILD_CLI=ON -DBUILD_BITCOIN_BIN=OFF -DENABLE_EXTERNAL_SIGNER=OFF -DENABLE_WALLET=OFF -DWITH_ZMQ=OFF -DENABLE_IPC=ON \
  -DWITH_EMBEDDED_ASMAP=OFF -DBUILD_TESTS=OFF -DBUILD_BENCH=OFF -DBUILD_FUZZ_BINARY=OFF \
  -DBUILD_GUI=OFF -DBUILD_KERNEL_LIB=OFF -DBUILD_TX=OFF -DBUILD_UTIL=OFF -DBUILD_WALLET_TOOL=OFF \
  -DINSTALL_MAN=OFF -DWITH_CCACHE=OFF >"$build/cmake.log" 2>&1 || { tail -40 "$build/cmake.log" >&2; exit 1; }
cmake --build "$build" -j "$jobs" --target bitcoind bitcoin-cli bitcoin-node >"$build/build.log" 2>&1 \
  || { tail -60 "$build/build.log" >&2; exit 1; }
mkdir -p "$cache/bin"
install -m 0755 "$build/bin/bitcoind" "$build/bin/bitcoin-cli" "$build/bin/bitcoin-node" "$cache/bin/"
strip "$cache/bin/bitcoind" "$cache/bin/bitcoin-cli" "$cache/bin/bitcoin-node" 2>/dev/null || true
rm -rf "$build"
echo "build-core: built in $(( $(date +%s) - start )) s: $("$cache/bin/bitcoind" -version | head -1)" >&2
echo "$cache/bin"
