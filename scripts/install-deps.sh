#!/usr/bin/env bash
# Installs what Tessera needs to build, test and benchmark, from Debian's registry only.
set -euo pipefail
pkgs=(
        meson ninja-build pkg-config gcc libc6-dev
        libhwloc-dev hwloc-nox libsqlite3-dev libjansson-dev libfyaml-dev libseccomp-dev
        iproute2 util-linux procps python3 psmisc clang-format git
        cgroup-tools crun busybox-static squashfs-tools umoci
        qemu-system-x86 cpio xz-utils
)
missing=()
for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
