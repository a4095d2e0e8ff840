#!/usr/bin/env bash
# Fetches Debian's stock kernel package once and keeps what the test guests need: vmlinuz, its
# config, the few modules the guests load (Debian builds virtio as modules), and the decompressed
# vmlinux ELF: QEMU boots that through its PVH entry point, which skips the in-guest decompression
# of the kernel, about 3 s under TCG.
#
#   tests/guest/build-image.sh [CACHE_DIR]        (default: $TESSERA_GUEST_CACHE or tests/guest/cache)
#
# Idempotent: a second run only prints the paths.  stdout is shell-quoted KEY=VALUE lines, so callers
# can `eval "$(tests/guest/build-image.sh)"`:
#   TESSERA_GUEST_KERNEL   the kernel image (bzImage)
#   TESSERA_GUEST_VMLINUX  the same kernel as an uncompressed ELF with a PVH note, or empty if the
#                          kernel lacks CONFIG_PVH (then boot TESSERA_GUEST_KERNEL)
#   TESSERA_GUEST_MODDIR   flat directory of uncompressed .ko files
#   TESSERA_GUEST_KVER     the kernel release, e.g. 6.1.0-56-amd64
#   TESSERA_GUEST_PKG      package=version that was unpacked
# Progress and errors go to stderr.
#
# Environment:
#   TESSERA_GUEST_KERNEL_PKG    kernel package to fetch (default: what linux-image-amd64 depends on)
#   TESSERA_GUEST_KERNEL_DEB    a local kernel .deb to use instead of fetching one (e.g. a newer kernel
#                               from bookworm-backports or trixie)
# The cache keeps the first kernel it got until one of these two names another package (or version).
#   TESSERA_GUEST_KEEP_MODULES  extra module names to keep, besides the default list below
# Needs: apt-get (with package lists; runs `apt-get update` once if root and the lists are empty),
# dpkg, xz (only for .ko.xz), flock.
set -euo pipefail
shopt -s inherit_errexit

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${1:-${TESSERA_GUEST_CACHE:-$here/cache}}

# Loaded at boot, in this order (each needs the ones before it).
boot_modules="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console"
# Kept for later guests (virtio net/block, 9p host directories); not loaded unless asked for.
extra_modules="failover net_failover virtio_net virtio_blk virtio_balloon virtio_mem"
extra_modules+=" fscache netfs 9pnet 9pnet_virtio 9p"
keep_modules="$boot_modules $extra_modules ${TESSERA_GUEST_KEEP_MODULES:-}"

msg() { printf 'build-image: %s\n' "$*" >&2; }
die() { msg "error: $*"; exit 1; }

print_paths() {
        local dir=$cache/$1
        printf 'TESSERA_GUEST_KERNEL=%q\n' "$dir/vmlinuz"
        if [ -f "$dir/vmlinux" ]; then
                printf 'TESSERA_GUEST_VMLINUX=%q\n' "$dir/vmlinux"
        else
                printf 'TESSERA_GUEST_VMLINUX=\n'
        fi
        printf 'TESSERA_GUEST_MODDIR=%q\n' "$dir/modules"
        printf 'TESSERA_GUEST_KVER=%q\n' "$(cat "$dir/kver")"
        printf 'TESSERA_GUEST_PKG=%q\n' "$(cat "$dir/pkg")"
}

# The cached image is usable if the pointer names a complete directory that kept every module asked for.
cached_image_ok() {
        local name m
        [ -f "$cache/current" ] || return 1
        name=$(cat "$cache/current")
        [ -n "$name" ] && [ -f "$cache/$name/complete" ] && [ -f "$cache/$name/vmlinuz" ] || return 1
        [ -f "$cache/$name/vmlinux" ] || [ -f "$cache/$name/no-vmlinux" ] || return 1
        for m in $keep_modules; do
                grep -qx "$m" "$cache/$name/modules.kept" || return 1
        done
        if [ -n "${TESSERA_GUEST_KERNEL_DEB:-}" ]; then
                [ -f "$TESSERA_GUEST_KERNEL_DEB" ] || return 1
                [ "$(cat "$cache/$name/pkg")" = "$(deb_identity "$TESSERA_GUEST_KERNEL_DEB")" ] || return 1
        elif [ -n "${TESSERA_GUEST_KERNEL_PKG:-}" ]; then
                [ "$(cut -d= -f1 "$cache/$name/pkg")" = "$TESSERA_GUEST_KERNEL_PKG" ] || return 1
        fi
        echo "$name"
}

deb_identity() {
        [ -f "$1" ] || die "TESSERA_GUEST_KERNEL_DEB=$1: no such file"
        echo "$(dpkg-deb -f "$1" Package)=$(dpkg-deb -f "$1" Version)"
}

# Prints the versioned package linux-image-amd64 depends on, or nothing if the lists do not know it.
kernel_pkg_from_apt_lists() {
        local deps
        deps=$(apt-cache depends linux-image-amd64 2>/dev/null) || return 0
        awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }' <<<"$deps"
}

resolve_kernel_pkg() {
        local pkg
        if [ -n "${TESSERA_GUEST_KERNEL_PKG:-}" ]; then
                echo "$TESSERA_GUEST_KERNEL_PKG"
                return
        fi
        pkg=$(kernel_pkg_from_apt_lists)
        if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
                msg "no package list knows linux-image-amd64; running apt-get update"
                apt-get update -qq >&2 || die "apt-get update failed"
                pkg=$(kernel_pkg_from_apt_lists)
        fi
        [ -n "$pkg" ] || die "cannot resolve linux-image-amd64 to a kernel package (run 'apt-get update' as root," \
                "or set TESSERA_GUEST_KERNEL_PKG=linux-image-6.1.0-NN-amd64)"
        echo "$pkg"
}

# Copies module $1 from the unpacked tree $2 into $3 as an uncompressed .ko (nothing if it is built in).
keep_module() {
        local name=$1 tree=$2 dest=$3 src
        src=$(find "$tree" -type f \( -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" \
                -o -name "$name.ko.gz" \) -print -quit)
        if [ -z "$src" ]; then
                grep -q "/$name\.ko" "$tree/modules.builtin" 2>/dev/null ||
                        die "module $name is neither in $tree nor in its modules.builtin"
                msg "$name is built into $(basename "$tree")"
                return 0
        fi
        case $src in
        *.xz) xz -dc "$src" >"$dest/$name.ko" ;;
        *.zst) zstd -qdc "$src" >"$dest/$name.ko" ;;
        *.gz) gzip -dc "$src" >"$dest/$name.ko" ;;
        *) cp "$src" "$dest/$name.ko" ;;
        esac
}

is_elf() {
        [ "$(head -c 4 "$1" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]
}

# Writes the ELF kernel inside bzImage $1 to $2: the payload is the first xz, zstd or gzip stream that
# decompresses to an ELF file.  Returns 1 if there is none.
extract_vmlinux() {
        local bz=$1 out=$2 magic tool off
        for magic in 'xz:\xfd7zXZ\x00' 'zstd:\x28\xb5\x2f\xfd' 'gzip:\x1f\x8b\x08'; do
                tool=${magic%%:*}
                command -v "$tool" >/dev/null || continue
                for off in $(LC_ALL=C grep -obUaP "${magic#*:}" "$bz" | head -3 | cut -d: -f1); do
                        # tail dies of SIGPIPE once the stream ends, and zstd and gzip complain about the
                        # bytes after it: only xz's status means something, the ELF check decides.
                        case $tool in
                        xz) tail -c +$((off + 1)) "$bz" | xz -dc --single-stream >"$out" 2>/dev/null ||
                                [ "${PIPESTATUS[1]}" = 0 ] || continue ;;
                        zstd) tail -c +$((off + 1)) "$bz" | zstd -qdc >"$out" 2>/dev/null || true ;;
                        gzip) tail -c +$((off + 1)) "$bz" | gzip -dc >"$out" 2>/dev/null || true ;;
                        esac
                        is_elf "$out" && return 0
                done
        done
        rm -f "$out"
        return 1
}

build_image() {
        local pkg=$1 work deb version name dir tree kver m
        work=$(mktemp -d "$cache/.work.XXXXXX")
        # shellcheck disable=SC2064 # expand now: $work is local
        trap "rm -rf '$work'" EXIT

        if [ -n "${TESSERA_GUEST_KERNEL_DEB:-}" ]; then
                deb=$work/kernel.deb
                cp "$TESSERA_GUEST_KERNEL_DEB" "$deb"
                pkg=$(dpkg-deb -f "$deb" Package)
        else
                msg "downloading $pkg"
                local apt_opts=()
                # As root apt drops to the _apt user, who cannot write into our private work dir.
                [ "$(id -u)" = 0 ] && apt_opts=(-o APT::Sandbox::User=root)
                (cd "$work" && apt-get "${apt_opts[@]}" -qq download "$pkg") >&2 || die "apt-get download $pkg failed"
                deb=$(find "$work" -maxdepth 1 -name '*.deb' -print -quit)
                [ -n "$deb" ] || die "apt-get download $pkg produced no .deb"
        fi
        version=$(dpkg-deb -f "$deb" Version)

        msg "unpacking $(basename "$deb")"
        dpkg -x "$deb" "$work/root"
        rm -f "$deb"

        tree=$(find "$work/root" -maxdepth 4 -type d -path '*/lib/modules/*' -print -quit)
        [ -n "$tree" ] || die "$pkg has no lib/modules/<release> directory"
        kver=$(basename "$tree")
        name="$pkg-$version"
        dir=$work/out
        mkdir -p "$dir/modules"
        cp "$work/root/boot/vmlinuz-$kver" "$dir/vmlinuz" || die "$pkg has no boot/vmlinuz-$kver"
        cp "$work/root/boot/config-$kver" "$dir/config" 2>/dev/null || true
        if ! grep -qx 'CONFIG_PVH=y' "$dir/config" 2>/dev/null; then
                msg "$kver has no CONFIG_PVH: guests boot the bzImage (about 3 s slower under TCG)"
                touch "$dir/no-vmlinux"
        elif ! extract_vmlinux "$dir/vmlinuz" "$dir/vmlinux"; then
                msg "found no ELF kernel inside $dir/vmlinuz: guests boot the bzImage (about 3 s slower under TCG)"
                touch "$dir/no-vmlinux"
        fi
        for m in $keep_modules; do
                keep_module "$m" "$tree" "$dir/modules"
                echo "$m" >>"$dir/modules.kept"
        done
        echo "$boot_modules" | tr ' ' '\n' >"$dir/modules.boot"
        echo "$kver" >"$dir/kver"
        echo "$pkg=$version" >"$dir/pkg"
        touch "$dir/complete"

        rm -rf "${cache:?}/$name"
        mv "$dir" "$cache/$name"
        echo "$name" >"$work/current"
        mv "$work/current" "$cache/current"
        rm -rf "$work"
        trap - EXIT
        echo "$name"
}

main() {
        local name pkg
        mkdir -p "$cache"
        cache=$(cd "$cache" && pwd)
        # Parallel test runs share the cache: one builds, the others wait and reuse.
        exec 9>"$cache/.lock"
        flock 9
        if ! name=$(cached_image_ok); then
                local t0=$SECONDS
                pkg=
                if [ -n "${TESSERA_GUEST_KERNEL_DEB:-}" ]; then
                        deb_identity "$TESSERA_GUEST_KERNEL_DEB" >/dev/null
                else
                        pkg=$(resolve_kernel_pkg)
                fi
                name=$(build_image "$pkg")
                msg "built $cache/$name in $((SECONDS - t0)) s"
        fi
        print_paths "$name"
}

main "$@"
