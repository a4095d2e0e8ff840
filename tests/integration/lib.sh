# Shared helpers for the integration suites: TAP output, a private tesserad
# (its own state dir, socket and cgroup root), and cleanup of everything a
# suite made, even when it fails half-way.  Sourced, not run.
set -u
: "${TESSERA_BUILD:?set TESSERA_BUILD to the build directory}"
: "${TESSERA_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
TESSERA_BIN=$TESSERA_BUILD/src/tessera/tessera
TESSERAD_BIN=$TESSERA_BUILD/src/tesserad/tesserad
T=$(mktemp -d /tmp/tessera-it.XXXXXX)
export TESSERA_SOCKET=$T/tessera.sock
CG_ROOT=tessera-it-$$
DAEMON_PID=
TAP_N=0
TAP_FAILED=0
CLEANUP_HOOKS=()

tessera() { "$TESSERA_BIN" "$@"; }
export TESSERA_BIN
export -f tessera # for `bash -c` checks

ok() { # ok COND_STATUS DESCRIPTION
        TAP_N=$((TAP_N + 1))
        if [ "$1" -eq 0 ]; then echo "ok $TAP_N - $2"; else echo "not ok $TAP_N - $2"; TAP_FAILED=$((TAP_FAILED + 1)); fi
}
skip() { TAP_N=$((TAP_N + 1)); echo "ok $TAP_N # SKIP $1"; }
diag() { echo "# $*"; }

# check DESCRIPTION CMD...: passes when CMD succeeds
check() {
        local d=$1; shift
        local out
        out=$("$@" 2>&1); local rc=$?
        [ $rc -ne 0 ] && printf '%s\n' "$out" | sed 's/^/#   /' | head -20
        ok $rc "$d"
}
# check_fails DESCRIPTION EXPECTED_SUBSTRING CMD...: passes when CMD fails and says EXPECTED
check_fails() {
        local d=$1 want=$2; shift 2
        local out rc
        out=$("$@" 2>&1); rc=$?
        if [ $rc -ne 0 ] && [[ "$out" == *"$want"* ]]; then ok 0 "$d"; else
                echo "#   exit $rc, wanted a failure saying: $want"; printf '%s\n' "$out" | sed 's/^/#   /' | head -10
                ok 1 "$d"; fi
}
# check_eq DESCRIPTION EXPECTED ACTUAL
check_eq() {
        if [ "$2" == "$3" ]; then ok 0 "$1"; else echo "#   expected: $2"; echo "#   actual:   $3"; ok 1 "$1"; fi
}

# JSON field of the enclave NAME from `tessera --json list` (jq-free: python3 is on the machine)
enclave_field() { # NAME FIELD
        tessera --json list | python3 -c '
import json, sys
name, field = sys.argv[1], sys.argv[2]
for e in json.load(sys.stdin):
    if e["name"] == name:
        v = e[field]
        print(json.dumps(v) if isinstance(v, (list, dict)) else v)' "$1" "$2"
}

# Not through `check`: that runs its command in a subshell, and DAEMON_PID must stay here.
start_daemon() { # extra tesserad flags
        "$TESSERAD_BIN" --state-dir "$T/state" --socket "$TESSERA_SOCKET" --cgroup-root "$CG_ROOT" \
                --host-cpus '' --host-memory 2G "$@" >>"$T/tesserad.log" 2>&1 &
        DAEMON_PID=$!
        for _ in $(seq 1 200); do
                tessera node >/dev/null 2>&1 && return 0
                kill -0 "$DAEMON_PID" 2>/dev/null || break
                sleep 0.05
        done
        echo "# tesserad did not come up:"; sed 's/^/#   /' "$T/tesserad.log" | tail -20
        kill -KILL "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null; DAEMON_PID=
        return 1
}
stop_daemon() {
        [ -n "$DAEMON_PID" ] || return 0
        kill -TERM "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null; DAEMON_PID=
}
kill9_daemon() {
        [ -n "$DAEMON_PID" ] || return 0
        kill -KILL "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null; DAEMON_PID=
}

# Every cgroup directory of this suite's root, in every v1 controller or in v2.
cgroup_dirs() {
        local base
        for base in /sys/fs/cgroup/*/"$CG_ROOT" /sys/fs/cgroup/"$CG_ROOT"; do
                [ -d "$base" ] && find "$base" -mindepth 1 -maxdepth 1 -type d
        done
}
cgroup_path() { # CONTROLLER ENCLAVE [FILE]
        if [ -d "/sys/fs/cgroup/$1/$CG_ROOT" ]; then echo "/sys/fs/cgroup/$1/$CG_ROOT/$2${3:+/$3}"
        else echo "/sys/fs/cgroup/$CG_ROOT/$2${3:+/$3}"; fi
}

cleanup() {
        local h
        for h in "${CLEANUP_HOOKS[@]}"; do eval "$h" >/dev/null 2>&1; done
        # a daemon only to clean up after one this suite ran
        if [ -n "$DAEMON_PID" ] || { [ -d "$T/state" ] && start_daemon >/dev/null 2>&1; }; then
                for e in $(tessera --json list 2>/dev/null | python3 -c 'import json,sys; [print(e["name"]) for e in json.load(sys.stdin)]' 2>/dev/null); do
                        tessera destroy "$e" >/dev/null 2>&1
                done
                stop_daemon
        fi
        # whatever is still there (a suite that broke the daemon): kill and remove by hand
        local d
        for d in $(cgroup_dirs | sort -r) /sys/fs/cgroup/*/"$CG_ROOT" /sys/fs/cgroup/"$CG_ROOT"; do
                [ -d "$d" ] || continue
                find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null
                find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
        done
        rm -rf "$T"
}
trap cleanup EXIT

finish() {
        echo "1..$TAP_N"
        [ "$TAP_FAILED" -eq 0 ]
}
