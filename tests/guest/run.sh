#!/usr/bin/env bash
# Runs one command inside a throw-away QEMU guest whose only cgroup hierarchy is cgroup2, and exits
# with the command's status.
#
#   tests/guest/run.sh [--mem MiB] [--smp N] [--timeout S] [--accel auto|kvm|tcg] [--verbose] [--shell] -- CMD...
#
#   --mem 512 --smp 2   guest size
#   --timeout 120       seconds for the whole boot+command; then qemu is killed and the status is 124
#   --accel auto        kvm only if a probe guest comes up under KVM within TESSERA_KVM_PROBE_TIMEOUT
#                       (default 5) seconds, else tcg; the probe result is cached until the host reboots.
#                       Default from TESSERA_ACCEL.
#   --verbose           keep kernel messages (no `quiet`) and print the guest console log on stderr
#   --shell             interactive: CMD's terminal is this terminal (e.g. `run.sh --shell -- sh`)
#
# The guest command's stdout and stderr arrive on this script's stdout, line by line as they come;
# kernel messages go to a separate serial port and are shown on stderr only when the run fails.
# Exit status: CMD's status in the guest, 124 on timeout, 1 if the guest died without reporting one.
#
# Environment:
#   GUEST_FILES   space separated host files/directories to put into the guest at the same paths, with
#                 the shared libraries they need (CMD's first word is added when it is a host path)
#   GUEST_ENV     space separated names of environment variables to pass to CMD
#   GUEST_MODULES extra kernel modules to load, dependencies first (names kept by build-image.sh,
#                 e.g. "failover net_failover virtio_net")
#   TESSERA_GUEST_CACHE, TESSERA_GUEST_APPEND (extra kernel command line), TESSERA_ACCEL,
#   TESSERA_GUEST_BOOT=bzimage (boot the compressed kernel instead of the PVH vmlinux)
set -euo pipefail
shopt -s inherit_errexit

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

msg() { printf 'run.sh: %s\n' "$*" >&2; }
die() { msg "error: $*"; exit 1; }
usage() { sed -n '5,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

mem=512 smp=2 timeout_s=120 accel=${TESSERA_ACCEL:-auto} verbose=0 shell=0
while [ $# -gt 0 ]; do
        case $1 in
        --mem) mem=$2; shift 2 ;;
        --smp) smp=$2; shift 2 ;;
        --timeout) timeout_s=$2; shift 2 ;;
        --accel) accel=$2; shift 2 ;;
        --verbose) verbose=1; shift ;;
        --shell) shell=1; shift ;;
        -h | --help) usage ;;
        --) shift; break ;;
        *) die "unknown option $1 (the command comes after --)" ;;
        esac
done
[ $# -ge 1 ] || usage
for n in "$mem" "$smp" "$timeout_s"; do
        [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "--mem, --smp and --timeout take positive integers, not '$n'"
done
case $accel in auto | kvm | tcg) ;; *) die "--accel/TESSERA_ACCEL must be auto, kvm or tcg, not '$accel'" ;; esac

command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
eval "$("$here/build-image.sh")"
cache=$(dirname "$(dirname "$TESSERA_GUEST_MODDIR")")
# The uncompressed ELF boots through PVH and skips the kernel's own decompression (~3 s under TCG).
kernel=${TESSERA_GUEST_VMLINUX:-$TESSERA_GUEST_KERNEL}
[ "${TESSERA_GUEST_BOOT:-pvh}" = bzimage ] && kernel=$TESSERA_GUEST_KERNEL

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tessera-guest.XXXXXX")
qemu_pid=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
        if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
                # timeout(1) passes the TERM on to qemu and SIGKILLs it 5 s later if need be.
                kill -TERM "$qemu_pid" 2>/dev/null || true
                wait "$qemu_pid" 2>/dev/null || true
        fi
        rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

write_test_cmd() {
        local name arg
        {
                echo '#!/bin/sh'
                for name in ${GUEST_ENV:-}; do
                        [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "GUEST_ENV: '$name' is no variable name"
                        [ -n "${!name+set}" ] && echo "export $name=$(sq "${!name}")"
                done
                echo "cd $(sq "$PWD") 2>/dev/null || cd /"
                printf 'exec'
                for arg in "$@"; do
                        printf ' %s' "$(sq "$arg")"
                done
                echo
        } >"$tmp/test-cmd"
}

# Builds the initramfs $1 holding the test-cmd $2 and the host files in the remaining arguments.
make_initramfs() {
        local out=$1 cmd=$2
        shift 2
        "$here/mkinitramfs.sh" --moddir "$TESSERA_GUEST_MODDIR" --modules "${GUEST_MODULES:-}" \
                --test-cmd "$cmd" "$out" "$@" 2>"$tmp/mkinitramfs.err" ||
                { cat "$tmp/mkinitramfs.err" >&2; die "building the initramfs failed"; }
}

qemu_base_args() {
        local acc=$1
        printf '%s\n' -nodefaults -no-user-config -display none -no-reboot -accel "$acc" \
                -m "$mem" -smp "$smp" -kernel "$kernel"
}

# Boots a guest that only runs `true` under KVM and says whether it reported back in time.
kvm_probe_boots() {
        local probe_to=${TESSERA_KVM_PROBE_TIMEOUT:-5} args
        echo true >"$tmp/probe-cmd"
        make_initramfs "$tmp/probe.cpio" "$tmp/probe-cmd"
        mapfile -t args < <(qemu_base_args kvm)
        timeout -k 2 "$probe_to" qemu-system-x86_64 "${args[@]}" -initrd "$tmp/probe.cpio" \
                -append "console=ttyS0 quiet loglevel=1 tsc=reliable panic=-1" \
                -chardev "file,id=console,path=$tmp/probe.log" -serial chardev:console \
                </dev/null >/dev/null 2>"$tmp/probe.err" || true
        grep -q 'TESSERA-GUEST-EXIT 0' "$tmp/probe.log" 2>/dev/null
}

choose_accel() {
        local key result why probe_file
        case $accel in
        tcg) echo tcg; msg "accel=tcg (asked for)"; return ;;
        kvm) echo kvm; msg "accel=kvm (asked for)"; return ;;
        esac
        if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
                echo tcg; msg "accel=tcg (no read/write access to /dev/kvm)"; return
        fi
        # A probe costs its full timeout when KVM hangs, so its answer is kept until the host reboots,
        # one file per kernel image (the vmlinux and the bzImage fare differently under KVM).
        key="$(cat /proc/sys/kernel/random/boot_id 2>/dev/null) $kernel"
        probe_file=$cache/kvm-probe.$(basename "$kernel")
        if [ -f "$probe_file" ] && [ "$(head -n1 "$probe_file")" = "$key" ]; then
                result=$(sed -n 2p "$probe_file")
                why="cached probe result in $probe_file"
        else
                if kvm_probe_boots; then result=kvm; else result=tcg; fi
                printf '%s\n%s\n' "$key" "$result" >"$tmp/kvm-probe" && mv "$tmp/kvm-probe" "$probe_file"
                why="probe guest just booted under KVM"
                [ "$result" = kvm ] ||
                        why="probe guest did not report within ${TESSERA_KVM_PROBE_TIMEOUT:-5} s under KVM"
        fi
        echo "$result"
        msg "accel=$result ($why)"
}

# Prints the test output from the fifo $1 as it comes, without the exit marker, which goes to $2.
relay_output() {
        local line
        while IFS= read -r line || [ -n "$line" ]; do
                line=${line%$'\r'}
                case $line in
                *TESSERA-GUEST-EXIT\ *)
                        # A last output line without a newline shares its line with the marker.
                        [ -z "${line%TESSERA-GUEST-EXIT *}" ] || printf '%s\n' "${line%TESSERA-GUEST-EXIT *}"
                        echo "${line##*TESSERA-GUEST-EXIT }" >"$2"
                        ;;
                *) printf '%s\n' "$line" ;;
                esac
        done <"$1"
}

show_console() {
        local lines=$1
        [ -s "$tmp/console.log" ] || return 0
        msg "last $lines lines of the guest console:"
        tail -n "$lines" "$tmp/console.log" | tr -d '\r' | sed 's/^/  | /' >&2
}

main() {
        local files=() f used_accel args append t0 rc status
        [[ "$1" == */* ]] && [ -f "$1" ] && files+=("$1")
        for f in ${GUEST_FILES:-}; do
                files+=("$f")
        done
        write_test_cmd "$@"
        make_initramfs "$tmp/initrd.cpio" "$tmp/test-cmd" "${files[@]}"
        used_accel=$(choose_accel)

        append="console=ttyS0 tsc=reliable panic=-1 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1"
        [ "$verbose" = 1 ] || append+=" quiet loglevel=1"
        append+=" tessera.out=/dev/ttyS1 ${TESSERA_GUEST_APPEND:-}"
        [ "$shell" = 1 ] && append+=" tessera.interactive=1"
        mapfile -t args < <(qemu_base_args "$used_accel")
        # shellcheck disable=SC2054 # the commas belong to qemu's option syntax
        args+=(-initrd "$tmp/initrd.cpio" -append "$append"
                -chardev "file,id=console,path=$tmp/console.log" -serial chardev:console
                -chardev stdio,id=out,signal=off -serial chardev:out)

        t0=$EPOCHREALTIME
        if [ "$shell" = 1 ]; then
                # Straight to the terminal: a line filter would hide prompts.  ^C goes to the guest.
                qemu-system-x86_64 "${args[@]}" 2>"$tmp/qemu.err" && rc=0 || rc=$?
                status=$(grep -a -o 'TESSERA-GUEST-EXIT [0-9]*' "$tmp/console.log" | tail -n1 | cut -d' ' -f2 || true)
        else
                mkfifo "$tmp/out"
                timeout -k 5 "$timeout_s" qemu-system-x86_64 "${args[@]}" \
                        </dev/null >"$tmp/out" 2>"$tmp/qemu.err" &
                qemu_pid=$!
                relay_output "$tmp/out" "$tmp/status"
                wait "$qemu_pid" && rc=0 || rc=$?
                qemu_pid=
                status=$(cat "$tmp/status" 2>/dev/null || true)
        fi
        msg "guest ($used_accel, $smp vCPU, $mem MiB) ran $(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $t0 }") s"

        [ "$verbose" = 1 ] && show_console 100000
        if [ "$rc" = 124 ]; then
                msg "timeout: the guest did not finish within $timeout_s s; killed qemu"
                [ "$verbose" = 1 ] || show_console 40
                exit 124
        fi
        if [[ ! "$status" =~ ^[0-9]+$ ]]; then
                msg "the guest ended without reporting the command's status (qemu exit status $rc)"
                [ -s "$tmp/qemu.err" ] && sed 's/^/  qemu: /' "$tmp/qemu.err" >&2
                [ "$verbose" = 1 ] || show_console 40
                exit 1
        fi
        exit "$status"
}

main "$@"
