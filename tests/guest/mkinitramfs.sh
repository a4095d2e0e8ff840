#!/usr/bin/env bash
# Builds the initramfs of a Tessera test guest: static busybox with its applet links, an /init that
# mounts a cgroup-v2-only system and runs /test-cmd, the virtio modules, and the host files named on
# the command line at their own absolute paths together with every shared library they need, so
# programs from a build directory run in the guest unchanged.
#
#   tests/guest/mkinitramfs.sh [--test-cmd SCRIPT] [--moddir DIR] [--modules "NAME..."] OUT FILE...
#
#   OUT         the archive; compressed with gzip if it ends in .gz, else a plain newc cpio
#   FILE...     host files or directories (copied recursively) to put at the same absolute path
#   --test-cmd  shell script that becomes /test-cmd (default: none; /init then reports status 127)
#   --moddir    directory of .ko files (default: from build-image.sh, with its modules.boot order)
#   --modules   extra module names to load after the virtio boot modules, in this order
#
# The /init contract (see README.md): the guest command's stdout+stderr go to the device named by
# `tessera.out=` on the kernel command line (default /dev/console), stdin is /dev/null unless
# `tessera.interactive=1`, and the last line on both that device and the console is
# "TESSERA-GUEST-EXIT <status>".  Then the guest powers off.
set -euo pipefail
shopt -s inherit_errexit

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

msg() { printf 'mkinitramfs: %s\n' "$*" >&2; }
die() { msg "error: $*"; exit 1; }
usage() { sed -n '7,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

test_cmd='' moddir='' extra_modules=''
while [ $# -gt 0 ]; do
        case $1 in
        --test-cmd) test_cmd=$2; shift 2 ;;
        --moddir) moddir=$2; shift 2 ;;
        --modules) extra_modules=$2; shift 2 ;;
        -h | --help) usage ;;
        --) shift; break ;;
        -*) die "unknown option $1" ;;
        *) break ;;
        esac
done
[ $# -ge 1 ] || usage
out=$1
shift

if [ -z "$moddir" ]; then
        eval "$("$here/build-image.sh")"
        moddir=$TESSERA_GUEST_MODDIR
fi
[ -f "$moddir/../modules.boot" ] || die "$moddir/../modules.boot is missing: is $moddir from build-image.sh?"
[ -z "$test_cmd" ] || [ -f "$test_cmd" ] || die "--test-cmd $test_cmd: no such file"

root=$(mktemp -d "${TMPDIR:-/tmp}/tessera-initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT

# Paths already copied, so a library shared by several programs is copied and scanned once.
declare -A copied=()

# Copies host path $1 to the same path under $root, following symlinks (the guest sees plain files).
copy_file() {
        local path=$1
        [ -n "${copied[$path]:-}" ] && return 0
        copied[$path]=1
        mkdir -p "$root$(dirname "$path")"
        cp -L --remove-destination --preserve=mode "$path" "$root$path"
}

# Prints the libraries (and the dynamic loader) that ELF file $1 needs, one absolute path a line.
needed_libs() {
        local file=$1 deps
        # ldd fails on static binaries and scripts: they need nothing.
        deps=$(LC_ALL=C ldd "$file" 2>/dev/null) || return 0
        if grep -q '=> not found' <<<"$deps"; then
                die "$file needs libraries the host cannot find: $(grep '=> not found' <<<"$deps" | tr -s ' \t' ' ')"
        fi
        awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }' <<<"$deps"
}

# Copies host file $1 and, recursively through ldd, everything it links against.
copy_with_libs() {
        local path=$1 lib libs
        [ -n "${copied[$path]:-}" ] && return 0
        copy_file "$path"
        [ -x "$path" ] || [[ "$path" == *.so* ]] || return 0
        # Not inline in the for: a missing library must stop the build, not vanish in a subshell.
        libs=$(needed_libs "$path")
        for lib in $libs; do
                copy_with_libs "$lib"
        done
}

add_host_path() {
        local path f lib libs
        path=$(realpath -s "$1")
        [ -e "$path" ] || die "$1: no such file or directory"
        if [ -d "$path" ]; then
                mkdir -p "$root$path"
                cp -a "$path/." "$root$path/"
                while IFS= read -r -d '' f; do
                        copied[$f]=1
                        libs=$(needed_libs "$f")
                        for lib in $libs; do
                                copy_with_libs "$lib"
                        done
                done < <(find "$path" -type f -perm -u+x -print0)
        else
                copy_with_libs "$path"
        fi
}

install_busybox() {
        local bb lib libs
        bb=$(command -v busybox) || die "busybox not found (apt-get install busybox-static)"
        mkdir -p "$root/bin"
        cp -L "$bb" "$root/bin/busybox"
        # busybox-static needs nothing; a dynamic busybox brings its libraries.
        libs=$(needed_libs "$bb")
        for lib in $libs; do
                copy_with_libs "$lib"
        done
        # The other applet links are made by /init (busybox --install -s), far faster than ln here.
        ln -s busybox "$root/bin/sh"
}

install_modules() {
        local m
        mkdir -p "$root/lib/modules/tessera"
        for m in $(cat "$moddir/../modules.boot") $extra_modules; do
                if [ -f "$moddir/$m.ko" ]; then
                        cp "$moddir/$m.ko" "$root/lib/modules/tessera/"
                        echo "$m" >>"$root/etc/tessera-guest/modules"
                else
                        # build-image.sh keeps nothing for built-in modules; anything else is a typo.
                        grep -qx "$m" "$moddir/../modules.kept" ||
                                die "module $m is not in $moddir (add it to TESSERA_GUEST_KEEP_MODULES)"
                fi
        done
}

install_etc() {
        mkdir -p "$root/etc/tessera-guest" "$root/root" "$root/proc" "$root/sys" "$root/dev" "$root/tmp" \
                "$root/sbin" "$root/usr/bin" "$root/usr/sbin" \
                "$root/run" "$root/mnt" "$root/var"
        ln -s /run "$root/var/run"
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
                >"$root/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
        echo tessera-guest >"$root/etc/hostname"
        : >"$root/etc/tessera-guest/modules"
}

install_init() {
        cat >"$root/init" <<'EOF'
#!/bin/sh
# /init of a Tessera test guest, written by tests/guest/mkinitramfs.sh.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
warn() { echo "guest-init: $*" >/dev/console; }

/bin/busybox mount -t proc proc /proc
# Applet links where none exists yet: host files copied into the image keep their paths.
/bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# Host files copied under /tmp or /run (a build dir in /tmp, say) must stay visible: the root file
# system is a writable tmpfs already, so only empty directories get a fresh tmpfs.
[ -n "$(ls -A /tmp)" ] && chmod 1777 /tmp || mount -t tmpfs -o mode=1777 tmpfs /tmp
[ -n "$(ls -A /run)" ] || mount -t tmpfs -o mode=0755 tmpfs /run
# Only cgroup2: the kernel command line carries cgroup_no_v1=all.
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup 2>/dev/null ||
        mount -t cgroup2 cgroup2 /sys/fs/cgroup || warn "cannot mount cgroup2 on /sys/fs/cgroup"

for m in $(cat /etc/tessera-guest/modules); do
        insmod "/lib/modules/tessera/$m.ko" || warn "insmod $m failed"
done
ip link set lo up || warn "cannot bring lo up"
hostname -F /etc/hostname

out=/dev/console interactive=0
for arg in $(cat /proc/cmdline); do
        case $arg in
        tessera.out=*) out=${arg#tessera.out=} ;;
        tessera.interactive=1) interactive=1 ;;
        esac
done
[ -c "$out" ] || { warn "tessera.out=$out is no character device, using /dev/console"; out=/dev/console; }

export TESSERA_GUEST=1
if [ ! -f /test-cmd ]; then
        warn "no /test-cmd in this initramfs"
        status=127
elif [ "$interactive" = 1 ]; then
        # A controlling terminal, so ^C reaches the command and not init.
        setsid -c sh /test-cmd <"$out" >"$out" 2>&1
        status=$?
else
        [ "$out" = /dev/console ] || stty -F "$out" -onlcr -echo 2>/dev/null
        sh /test-cmd </dev/null >"$out" 2>&1
        status=$?
fi

echo "TESSERA-GUEST-EXIT $status" >"$out"
[ "$out" = /dev/console ] || echo "TESSERA-GUEST-EXIT $status" >/dev/console
# stty sets attributes with TCSADRAIN: it returns once the UARTs sent everything, so no output is
# lost to the power-off below.
stty -F "$out" -echo 2>/dev/null
stty -F /dev/console -echo 2>/dev/null
sync
poweroff -f
echo o >/proc/sysrq-trigger
EOF
        chmod 755 "$root/init"
        if [ -n "$test_cmd" ]; then
                cp "$test_cmd" "$root/test-cmd"
                chmod 755 "$root/test-cmd"
        fi
}

write_archive() {
        local tmp_out="$out.tmp.$$"
        # Sorted names and root ownership: the same inputs give the same archive.
        (cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
                cpio --null --create --format=newc --owner=0:0 --quiet) >"$tmp_out.cpio"
        case $out in
        *.gz) gzip -1 -n <"$tmp_out.cpio" >"$tmp_out" && rm -f "$tmp_out.cpio" ;;
        *) mv "$tmp_out.cpio" "$tmp_out" ;;
        esac
        mv "$tmp_out" "$out"
}

install_etc
install_busybox
install_modules
for f in "$@"; do
        add_host_path "$f"
done
install_init
write_archive
msg "wrote $out ($(du -k "$out" | cut -f1) KiB, $(find "$root" -mindepth 1 | wc -l) entries)"
