#!/usr/bin/env bash
# Makes (once) the minimal Debian bookworm that tests/systemd.rs boots under `systemd-nspawn -b`,
# so that our .deb is installed and driven by a real systemd as PID 1. Cached outside target/ in
# ${CKPOOL_ROOTFS:-~/.cache/ckpool/rootfs-bookworm}; a second run finds it and downloads nothing.
# Prints the rootfs path on its last line.
#
# The mirror is the one this machine's apt already uses (first Debian archive URI in
# /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list): no host name is written here.
# Needs debootstrap (contrib/setup.sh installs it) and root.
set -euo pipefail
dir=${CKPOOL_ROOTFS:-${HOME}/.cache/ckpool/rootfs-bookworm}
# What the tests need inside besides a booting systemd: logrotate (the shipped postrotate),
# procps, the package's own dependencies (libzmq5), so that `apt-get install ./ckpool.deb`
# needs no download, and openssh-client + autossh for the guide's tunnel unit (stratssh@).
include=systemd,systemd-sysv,dbus,logrotate,procps,iproute2,ca-certificates,libzmq5,openssh-client,autossh
# What is made besides the list (bump it when that changes): 2 = /etc/hosts written.
recipe=2
stamp="$include recipe=$recipe"
# A changed list or recipe makes the rootfs anew.
if [ "$(cat "$dir/.complete" 2>/dev/null)" = "$stamp" ]; then
  echo "$dir"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "rootfs: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "rootfs: debootstrap missing (bash contrib/setup.sh)" >&2; exit 1; }

# The archive URI for suite bookworm from apt's own configuration (deb822 first, then one-line).
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  mirror=$(awk '
    /^$/ { if (uri != "" && suites ~ /(^| )bookworm( |$)/ && types ~ /deb( |$)/) { print uri; exit } uri=""; suites=""; types="" }
    /^URIs:/ { uri=$2 } /^Suites:/ { $1=""; suites=$0 } /^Types:/ { $1=""; types=$0 }
    END { if (uri != "" && suites ~ /(^| )bookworm( |$)/) print uri }' "$f" | head -1)
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "rootfs: no Debian bookworm archive in this machine's apt sources" >&2; exit 1; }

echo "rootfs: debootstrap bookworm from $mirror into $dir (once; cached)" >&2
rm -rf "$dir.tmp"
mkdir -p "$(dirname "$dir")"
debootstrap --variant=minbase --include="$include" bookworm "$dir.tmp" "$mirror" >&2
# apt inside the container installs only the local .deb and its dependencies, which the
# rootfs already holds; its sources point at the same mirror.
echo "deb $mirror bookworm main" > "$dir.tmp/etc/apt/sources.list"
# The /etc/hosts an installed Debian has (the installer writes it; debootstrap does not), so
# that "localhost" resolves inside, as the guide's ckproxy.conf ("localhost:3334") needs.
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$dir.tmp/etc/hosts"
# A machine id, so journald and systemd are content; the tests give each boot a copy.
systemd-machine-id-setup --root="$dir.tmp" >/dev/null 2>&1 || true
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "$stamp" > "$dir/.complete"
echo "$dir"
