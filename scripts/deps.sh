#!/usr/bin/env bash
# Install the Debian 12 packages stratus needs to build, run and test.
# Idempotent and silent when everything is installed; otherwise one
# `apt-get update` and one non-interactive install of what is missing.
# Runs as root (or through sudo when available).
set -euo pipefail

packages=(
    build-essential pkg-config
    libfcgi-dev libvirt-dev libjansson-dev libsqlite3-dev uuid-dev libcmocka-dev libsodium-dev
    libpq-dev postgresql
    libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
    qemu-system-x86 qemu-utils
    nginx-light sqlite3 curl jq python3 wrk procps kmod
    cppcheck clang-format ruby
    linux-image-cloud-amd64 busybox-static syslinux syslinux-common mtools cpio
)

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing=()
for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "deps: missing ${missing[*]}; run as root" >&2; exit 1; }
    sudo=(sudo -n env DEBIAN_FRONTEND=noninteractive)
fi

echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Package scripts must not try to start services (no init system here, and
# CI has none to speak of either): policy-rc.d 101 tells invoke-rc.d "no".
cleanup_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
    cleanup_policy=1
fi
trap '[ -z "$cleanup_policy" ] || "${sudo[@]}" rm -f /usr/sbin/policy-rc.d' EXIT

"${sudo[@]}" apt-get update -qq </dev/null
"${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" </dev/null

still=()
for p in "${missing[@]}"; do
    installed "$p" || still+=("$p")
done
if [ ${#still[@]} -gt 0 ]; then
    echo "deps: still missing after install: ${still[*]}" >&2
    exit 1
fi
