#!/usr/bin/env bash
# TAP suite: Tessera's cgroup unit test on a kernel whose only cgroup hierarchy is cgroup2.  The host
# has cgroup v1, so this boots a QEMU guest (tests/guest/run.sh) and runs
# $TESSERA_BUILD/tests/unit/test-cgroup in it, in the same boot as a check of the guest itself.
#
# Assertion 1 checks the guest: cgroup2 at /sys/fs/cgroup, no v1 hierarchy (not even mountable), and
# the cpuset, memory and pids controllers available.  Then come test-cgroup's own TAP lines, passed
# through unchanged except for their numbers, which continue after 1 so the stream stays valid TAP;
# its plan line is replaced by the plan of the whole suite at the end.
#
# Environment: TESSERA_BUILD, TESSERA_SRC (set by tests/run), TESSERA_GUEST_TIMEOUT (default 100 s).
set -u

src=${TESSERA_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
build=${TESSERA_BUILD:-$src/build}
test_bin=$build/tests/unit/test-cgroup
run=$src/tests/guest/run.sh
check_name="guest boots with cgroup v2 only (cpuset memory pids available)"

count=0 failures=0
tap() {         # tap ok|"not ok" DESCRIPTION...
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

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tessera-cgroup-v2.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Runs in the guest: prints what assertion 1 needs as TAP comments, then execs test-cgroup if given.
# shellcheck disable=SC2016 # expanded in the guest
guest_script='
echo "# selfcheck controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
while read -r dev dir type opts rest; do
        case $type in cgroup | cgroup2) echo "# selfcheck mount: $dir $type $opts" ;; esac
done </proc/mounts
mkdir -p /run/v1-probe
if mount -t cgroup -o memory none /run/v1-probe 2>/dev/null; then
        echo "# selfcheck v1-memory-mount: allowed"
        umount /run/v1-probe
else
        echo "# selfcheck v1-memory-mount: refused"
fi
echo "# selfcheck end"
[ $# -eq 0 ] || exec "$@"
'

controllers='' v2_at_root=0 v1_mounts='' v1_refused=0
check_guest() {
        local c why=()
        [ "$v2_at_root" = 1 ] || why+=("cgroup2 is not mounted at /sys/fs/cgroup")
        [ -z "$v1_mounts" ] || why+=("cgroup v1 hierarchies are mounted:$v1_mounts")
        [ "$v1_refused" = 1 ] || why+=("mounting a v1 memory hierarchy works, so cgroup_no_v1=all did not take")
        for c in cpuset memory pids; do
                [[ " $controllers " == *" $c "* ]] ||
                        why+=("controller $c missing from cgroup.controllers ('$controllers')")
        done
        if [ ${#why[@]} -eq 0 ]; then
                tap ok "- $check_name"
        else
                tap "not ok" "- $check_name"
                printf '# %s\n' "${why[@]}"
        fi
}

guest_asserts=0 guest_failures=0 guest_plan='' checked=0
# Reads the guest's output: evaluates the self-check, renumbers test-cgroup's TAP lines.
relay() {
        local line re_tap='^(not ok|ok) [0-9]+(.*)$'
        while IFS= read -r line; do
                case $line in
                "# selfcheck controllers: "*) controllers=${line#"# selfcheck controllers: "} ;;
                "# selfcheck mount: /sys/fs/cgroup cgroup2 "*) v2_at_root=1 ;;
                "# selfcheck mount: "*" cgroup "*) v1_mounts+=" ${line#"# selfcheck mount: "}" ;;
                "# selfcheck v1-memory-mount: refused") v1_refused=1 ;;
                "# selfcheck end") check_guest; checked=1; continue ;;
                esac
                if [[ "$line" =~ $re_tap ]]; then
                        guest_asserts=$((guest_asserts + 1))
                        [ "${BASH_REMATCH[1]}" = ok ] || guest_failures=$((guest_failures + 1))
                        tap "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]# }"
                elif [[ "$line" =~ ^1\.\.([0-9]+) ]]; then
                        guest_plan=${BASH_REMATCH[1]}
                else
                        printf '%s\n' "$line"
                fi
        done
}

guest_cmd=(sh -c "$guest_script" sh)
if [ -x "$test_bin" ]; then
        guest_cmd+=("$test_bin")
        export GUEST_FILES="$test_bin"
fi
relay < <("$run" --timeout "${TESSERA_GUEST_TIMEOUT:-100}" --mem 512 --smp 2 -- "${guest_cmd[@]}" \
        2> >(sed 's/^/# /' >&2); echo $? >"$tmp/rc")
rc=$(cat "$tmp/rc" 2>/dev/null || echo 1)

if [ "$checked" = 0 ]; then
        tap "not ok" "- $check_name"
        echo "# the guest never finished its self-check (tests/guest/run.sh exited with status $rc)"
fi
if [ ! -x "$test_bin" ]; then
        tap ok "# SKIP test-cgroup not built ($test_bin is missing)"
elif [ "$checked" = 1 ]; then
        if [ "$rc" = 77 ] && [ "$guest_asserts" = 0 ]; then
                tap ok "# SKIP test-cgroup skipped itself in the guest (exit status 77)"
        elif [ "$rc" = 124 ]; then
                tap "not ok" "- test-cgroup finished in the guest (timed out after ${TESSERA_GUEST_TIMEOUT:-100} s)"
        elif [ "$rc" != 0 ] && [ "$guest_failures" = 0 ]; then
                tap "not ok" "- test-cgroup exited with status $rc in the guest without a failed assertion"
        elif [ "$rc" = 0 ] && [ "$guest_plan" != "$guest_asserts" ]; then
                tap "not ok" "- test-cgroup's plan (${guest_plan:-none}) matches its $guest_asserts assertions"
        fi
fi
echo "1..$count"
[ "$failures" = 0 ]
