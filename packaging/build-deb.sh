#!/usr/bin/env bash
# Builds the Debian package ckpool_<version>_<arch>.deb with dpkg-deb (no cargo-deb, no fakeroot:
# files are owned by root in the package through --root-owner-group).
#
#   packaging/build-deb.sh [BINARY] [OUTDIR]
#
# BINARY defaults to target/release/ckpool (run `cargo build --release` first); OUTDIR defaults
# to target/debian; DEB_COMPRESS (xz, gzip, none) picks the compression. Prints the path of the .deb on its last line.
#
# Contents: /usr/bin/ckpool, /usr/bin/ckproxy -> ckpool, the systemd units in /lib/systemd/system,
# /etc/logrotate.d/stratum, the example configs /etc/ckpool.conf and /etc/ckproxy.conf (conffiles:
# an operator's edits survive upgrades; mode 0640, group ckpool set by postinst as they hold the
# RPC password), docs and examples in /usr/share/doc/ckpool. postinst creates the system user
# ckpool and /var/log/stratum (root:ckpool 0770) and reloads systemd when it runs.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/target/release/ckpool}
out=${2:-$here/target/debian}
[ -x "$bin" ] || { echo "build-deb: no executable at $bin (cargo build --release first)" >&2; exit 1; }

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$here/Cargo.toml" | head -1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/ckpool_${version}_${arch}

install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/logrotate.d" \
  "$root/usr/share/doc/ckpool/examples"
install -m 0755 "$bin" "$root/usr/bin/ckpool"
ln -s ckpool "$root/usr/bin/ckproxy"
for u in ckpool.service ckproxy.service stratssh@.service; do
  install -m 0644 "$here/systemd/$u" "$root/lib/systemd/system/$u"
done
install -m 0644 "$here/etc/logrotate.d/stratum" "$root/etc/logrotate.d/stratum"
install -m 0640 "$here/etc/ckpool.conf" "$root/etc/ckpool.conf"
install -m 0640 "$here/etc/ckproxy.conf" "$root/etc/ckproxy.conf"
install -m 0644 "$here/README.md" "$root/usr/share/doc/ckpool/README.md"
install -m 0644 "$here/etc/default/p2pssh@example" "$root/usr/share/doc/ckpool/examples/p2pssh@example"
install -m 0755 "$here/contrib/firewall.sh" "$root/usr/share/doc/ckpool/examples/firewall.sh"
if [ -f "$here/docs/payout.md" ]; then
  install -m 0644 "$here/docs/payout.md" "$root/usr/share/doc/ckpool/payout.md"
fi

installed_kb=$(du -sk "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: ckpool
Version: $version
Architecture: $arch
Maintainer: ckpool-rs developers <ckpool-rs@localhost>
Installed-Size: $installed_kb
Depends: libc6, libgcc-s1, libstdc++6, passwd
Recommends: logrotate
Suggests: autossh, bitcoind
Section: net
Priority: optional
Description: stratum mining pool and proxy (ckpool/ckproxy successor)
 ckpool-rs serves stratum v1 miners from a local bitcoind: block templates,
 ZMQ block notifications, exact share validation, share logs and block
 submission. It reads ckpool's configuration files and command lines and
 ships hardened systemd units for the pool (ckpool.service), the proxy
 (ckproxy.service) and an autossh tunnel to an upstream pool
 (stratssh@.service).
EOF
printf '%s\n' /etc/ckpool.conf /etc/ckproxy.conf /etc/logrotate.d/stratum > "$root/DEBIAN/conffiles"
install -m 0755 "$here/packaging/postinst" "$root/DEBIAN/postinst"
install -m 0755 "$here/packaging/prerm" "$root/DEBIAN/prerm"
install -m 0755 "$here/packaging/postrm" "$root/DEBIAN/postrm"

mkdir -p "$out"
deb=$out/ckpool_${version}_${arch}.deb
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" --build "$root" "$deb" >&2
echo "$deb"
