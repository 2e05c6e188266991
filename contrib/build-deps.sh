#!/usr/bin/env bash
# Installs only what the release build and the Debian package need, for an operator's host (no
# test rig: no nodes, no servers started, no browser). Idempotent: each step is skipped when done.
#   - Debian packages: g++ and make (C parts of ring and the bundled SQLite), pkg-config and
#     libzmq3-dev (the ZMQ subscriber links libzmq), dpkg-dev, binutils and gzip
#     (packaging/build-deb.sh: dpkg-shlibdeps, objcopy, strip, gzip).
#   - cargo-deb 3.8.0 (`cargo install`, once) for packaging/build-deb.sh.
# Needs the Rust toolchain (cargo) already. contrib/setup.sh runs this, then adds the test rig.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

pkgs=(g++ make pkg-config libzmq3-dev dpkg-dev binutils gzip)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "build-deps: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo-deb >/dev/null; then
  echo "build-deps: installing cargo-deb (cargo install, default registry)"
  cargo install cargo-deb --locked --version 3.8.0
fi
