#!/usr/bin/env bash
# TAP suite: tesserad and the tessera shell on a kernel whose only cgroup hierarchy is cgroup2.  The
# host has cgroup v1, so this boots one QEMU guest (tests/guest/run.sh, 4 vCPUs, 1 GiB) with the three
# binaries from $TESSERA_BUILD and runs tests/guest/enclave-v2.sh in it: cpuset partitions, memory.max
# and memory.min, pids.max, the supervisor's leaf and pid namespace, the BPF device program (by what a
# process in the enclave may open), kill -9 of tesserad and re-attach, on_failure, destroy.
#
# The guest's TAP lines are passed through, renumbered so the stream stays valid if this script adds
# lines of its own (a guest that timed out, died, or broke its plan); the plan comes at the end.
#
# Environment: TESSERA_BUILD, TESSERA_SRC (set by tests/run), TESSERA_GUEST_TIMEOUT (default 100 s).
set -u

src=${TESSERA_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
build=${TESSERA_BUILD:-$src/build}
run=$src/tests/guest/run.sh
guest_script=$src/tests/guest/enclave-v2.sh
timeout_s=${TESSERA_GUEST_TIMEOUT:-100}
bins=("$build/src/tesserad/tesserad" "$build/src/tessera/tessera" "$build/src/supervisor/tessera-supervisor")

count=0 failures=0
tap() { # tap ok|"not ok" DESCRIPTION...
        local result=$1
        shift
        count=$((count + 1))
        [ "$result" = ok ] || failures=$((failures + 1))
        echo "$result $count${*:+ $*}"
}

if ! command -v qemu-system-x86_64 >/dev/null; then
        echo "ok 1 # SKIP qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
        echo "1..1"
        exit 0
fi
for b in "${bins[@]}"; do
        if [ ! -x "$b" ]; then
                echo "ok 1 # SKIP $b is not built"
                echo "1..1"
                exit 0
        fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tessera-enclaves-v2.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

guest_asserts=0 guest_failures=0 guest_plan='' bailed=''
relay() {
        local line re_tap='^(not ok|ok) [0-9]+(.*)$'
        while IFS= read -r line; do
                if [[ "$line" =~ $re_tap ]]; then
                        guest_asserts=$((guest_asserts + 1))
                        [ "${BASH_REMATCH[1]}" = ok ] || guest_failures=$((guest_failures + 1))
                        tap "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]# }"
                elif [[ "$line" =~ ^1\.\.([0-9]+) ]]; then
                        guest_plan=${BASH_REMATCH[1]}
                elif [[ "$line" == "Bail out!"* ]]; then
                        bailed=${line#Bail out! }
                        echo "# guest: $line"
                else
                        printf '%s\n' "$line"
                fi
        done
}

t0=$EPOCHREALTIME
export GUEST_FILES="${bins[*]} $guest_script" GUEST_ENV=TESSERA_BUILD TESSERA_BUILD=$build
relay < <("$run" --timeout "$timeout_s" --smp 4 --mem 1024 -- sh "$guest_script" \
        2> >(sed 's/^/# /' >&2); echo $? >"$tmp/rc")
rc=$(cat "$tmp/rc" 2>/dev/null || echo 1)
echo "# boot and guest suite took $(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $t0 }") s"

if [ "$rc" = 124 ]; then
        tap "not ok" "- the guest suite finished (timed out after $timeout_s s; raise TESSERA_GUEST_TIMEOUT)"
elif [ -n "$bailed" ]; then
        tap "not ok" "- the guest suite ran to its end (bailed out: $bailed)"
elif [ "$guest_asserts" = 0 ]; then
        tap "not ok" "- the guest suite printed assertions (run.sh exited with status $rc)"
elif [ "$guest_plan" != "$guest_asserts" ]; then
        tap "not ok" "- the guest suite's plan (${guest_plan:-none}) matches its $guest_asserts assertions (status $rc)"
elif [ "$rc" != 0 ] && [ "$guest_failures" = 0 ]; then
        tap "not ok" "- the guest suite exited with status $rc without a failed assertion"
fi
echo "1..$count"
[ "$failures" = 0 ]
