#!/bin/sh
# Native enclaves end to end on a cgroup2-only kernel: runs INSIDE a tests/guest/run.sh guest (busybox
# ash, no bash or python) and prints TAP.  tesserad and the tessera shell do the work; every assertion
# reads the kernel's own state under /sys/fs/cgroup/<root>/<enclave>/ or /proc.
#
#   enclave-v2.sh [TESSERAD TESSERA SUPERVISOR]     (default: the binaries under $TESSERA_BUILD)
#
# The guest must have 4 CPUs: core 0 stays the host's (--host-cpus 0), enclave 'a' takes core 1 (and
# for a while 2), 'b' the other two of the pool 1-3, and a third finds no free core.  The device
# check is by behaviour (the guest has no bpftool): a shell moved into <enclave>/apps/<leaf> must get
# EPERM opening /dev/kmsg until the enclave is assigned that node.
# tests/integration/enclaves-v2.slow.sh boots the guest and relays this TAP.  Exit status: 0 when
# every assertion passed.
set -u

build=${TESSERA_BUILD:-}
TESSERAD=${1:-$build/src/tesserad/tesserad}
TESSERA=${2:-$build/src/tessera/tessera}
SUPERVISOR=${3:-$build/src/supervisor/tessera-supervisor}

N=0 FAILED=0
ok() { # STATUS DESCRIPTION
        N=$((N + 1))
        if [ "$1" -eq 0 ]; then
                echo "ok $N - $2"
        else
                echo "not ok $N - $2"
                FAILED=$((FAILED + 1))
        fi
}
diag() { printf '%s\n' "$*" | sed 's/^/#   /'; }
check() { # DESCRIPTION CMD...: passes when CMD succeeds
        _d=$1
        shift
        _out=$("$@" 2>&1)
        _rc=$?
        [ "$_rc" -eq 0 ] || diag "$(printf '%s\n' "$_out" | head -n 20)"
        ok "$_rc" "$_d"
}
check_eq() { # DESCRIPTION EXPECTED ACTUAL
        if [ "$2" = "$3" ]; then
                ok 0 "$1"
        else
                diag "expected: '$2'" "actual:   '$3'"
                ok 1 "$1"
        fi
}
check_fails() { # DESCRIPTION EXPECTED_SUBSTRING CMD...: passes when CMD fails saying EXPECTED
        _d=$1 _want=$2
        shift 2
        _out=$("$@" 2>&1)
        _rc=$?
        case $_out in
        *"$_want"*) [ "$_rc" -ne 0 ] && { ok 0 "$_d"; return; } ;;
        esac
        diag "exit $_rc, wanted a failure saying: $_want" "$(printf '%s\n' "$_out" | head -n 10)"
        ok 1 "$_d"
}
bail() { # REASON: the rest cannot run
        echo "Bail out! $*"
        exit 1
}

# Refuse to run anywhere but a throw-away cgroup2-only system: this script makes partitions and nodes.
if [ "${TESSERA_GUEST:-}" != 1 ] ||
        ! awk '$2 == "/sys/fs/cgroup" && $3 == "cgroup2" {f = 1} END {exit !f}' /proc/mounts; then
        echo "1..0 # SKIP runs only inside a tests/guest/run.sh guest with cgroup2 at /sys/fs/cgroup"
        exit 0
fi
for f in "$TESSERAD" "$TESSERA" "$SUPERVISOR"; do
        [ -x "$f" ] || bail "$f is not an executable (set TESSERA_BUILD or pass the three binaries)"
done

T=$(mktemp -d /tmp/enclave-v2.XXXXXX) || bail "mktemp failed"
SOCK=$T/tessera.sock
ROOT=tessera-v2-$$
CG=/sys/fs/cgroup/$ROOT
DAEMON_PID=

tessera() { "$TESSERA" --socket "$SOCK" "$@"; }

start_daemon() {
        "$TESSERAD" --state-dir "$T/state" --socket "$SOCK" --cgroup-root "$ROOT" --supervisor "$SUPERVISOR" \
                --host-cpus 0 --host-memory 256M --block-size 32M >>"$T/tesserad.log" 2>&1 &
        DAEMON_PID=$!
        # hwloc's topology load alone takes ~1.5 s under TCG; allow for a loaded host.
        _i=0
        while [ "$_i" -lt 600 ]; do
                tessera node >/dev/null 2>&1 && return 0
                kill -0 "$DAEMON_PID" 2>/dev/null || break
                sleep 0.1
                _i=$((_i + 1))
        done
        diag "tesserad did not come up:" "$(tail -n 20 "$T/tesserad.log")"
        return 1
}

cleanup() {
        if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
                for e in $(enclave_names); do tessera destroy "$e" >/dev/null 2>&1; done
                kill -TERM "$DAEMON_PID" 2>/dev/null
                wait "$DAEMON_PID" 2>/dev/null
        fi
        # Whatever is left (a broken daemon): kill it and remove the groups, deepest first.
        if [ -d "$CG" ]; then
                find "$CG" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r p; do
                        kill -9 "$p" 2>/dev/null
                done
                find "$CG" -depth -type d -exec rmdir {} + 2>/dev/null
        fi
        rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- reading `tessera --json` output with awk (JSON_INDENT(2): one key or array item a line) ----

# FIELD of enclave NAME in `tessera --json list`; an array prints as its items separated by spaces.
enclave_field() { # NAME FIELD
        tessera --json list | awk -v want="$1" -v field="$2" '
                function value(s) {
                        sub(/^[^:]*: */, "", s); sub(/,$/, "", s); sub(/^"/, "", s); sub(/"$/, "", s)
                        return s
                }
                inarr && /^ *\]/ { print out; exit }
                inarr { s = $0; gsub(/^ +|,$/, "", s); gsub(/"/, "", s); out = out (out == "" ? "" : " ") s; next }
                /^    "name": / { cur = value($0) }
                cur == want && index($0, "    \"" field "\": ") == 1 {
                        v = value($0)
                        if (v == "[") { inarr = 1; out = ""; next }
                        if (v == "[]") v = ""
                        print v
                        exit
                }'
}
enclave_names() {
        tessera --json list 2>/dev/null | sed -n 's/^    "name": "\(.*\)",*$/\1/p'
}
# Key of the top-level object of `tessera --json node`.
node_field() { # FIELD
        tessera --json node | sed -n "s/^  \"$1\": \"*\([^\",]*\)\"*,*\$/\1/p"
}

# ---- kernel state ----

cg_read() { # ENCLAVE FILE (ENCLAVE "" for the root group)
        cat "$CG${1:+/$1}/$2" 2>&1
}
# A partition root the kernel accepted: "root" or "isolated", without "invalid".
partition_ok() { # ENCLAVE
        _state=$(cg_read "$1" cpuset.cpus.partition)
        case $_state in
        root | isolated) return 0 ;;
        esac
        echo "$CG/$1/cpuset.cpus.partition reads \"$_state\""
        return 1
}
wait_for() { # SECONDS CMD...: polls CMD every 0.1 s
        _n=$(($1 * 10))
        shift
        while [ "$_n" -gt 0 ]; do
                "$@" && return 0
                sleep 0.1
                _n=$((_n - 1))
        done
        "$@"
}
state_is() { [ "$(enclave_field "$1" state)" = "$2" ]; }
cause_has() { # NAME SUBSTRING
        _cause=$(enclave_field "$1" cause)
        case $_cause in *"$2"*) return 0 ;; esac
        echo "cause of '$1': \"$_cause\""
        return 1
}
# A pid that is gone or only a zombie waiting for its parent runs no more.
pid_dead() {
        case $(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) in
        "" | Z | X) return 0 ;;
        *) return 1 ;;
        esac
}
# Runs sh -c SCRIPT as an application of ENCLAVE: in a leaf below <enclave>/apps, so the enclave's
# device program, cpuset and limits apply to it.
in_enclave() { # ENCLAVE SCRIPT
        _leaf=$CG/$1/apps/probe-$$
        mkdir -p "$_leaf" || return 1
        sh -c 'echo $$ >"$1/cgroup.procs" || exit 99; exec sh -c "$2"' sh "$_leaf" "$2"
        _rc=$?
        rmdir "$_leaf" 2>/dev/null
        return "$_rc"
}

# ---- the guest ----

mounts=$(awk '$3 == "cgroup" || $3 == "cgroup2" {print $2 " " $3}' /proc/mounts)
check_eq "the guest has cgroup2 at /sys/fs/cgroup and no v1 hierarchy" "/sys/fs/cgroup cgroup2" "$mounts"
check_eq "the guest has 4 CPUs (core 0 for the host, 1-3 for enclaves)" 4 "$(nproc)"

# ---- tesserad on v2 ----

start_daemon
ok $? "tesserad starts (--host-cpus 0 --host-memory 256M --block-size 32M)"
[ -d "$CG" ] || bail "tesserad made no root group $CG"
check_eq "tessera node reports cgroup v2" v2 "$(node_field cgroup)"
check_eq "tessera node reports the 32M block size" 33554432 "$(node_field block_size)"
check_eq "the root group is a cpuset partition root" root "$(cg_read "" cpuset.cpus.partition)"
check_eq "the root group holds the enclave pool 1-3" 1-3 "$(cg_read "" cpuset.cpus)"
for c in cpuset memory pids; do
        check "the root group passes $c down" grep -qw "$c" "$CG/cgroup.subtree_control"
done

# ---- one enclave ----

check "create 'a' (1 core, 64M, 64 pids)" tessera create --name a --cpus 1 --memory 64M --pids 64
check_eq "'a' is running" running "$(enclave_field a state)"
check_eq "'a' owns the pool's first core" 1 "$(enclave_field a cpus)"
check "'a' is an isolated (or root) partition" partition_ok a
check_eq "cpuset.cpus of 'a' is its core" 1 "$(cg_read a cpuset.cpus)"
check_eq "cpuset.cpus.effective of 'a' is its core" 1 "$(cg_read a cpuset.cpus.effective)"
check_eq "the root group's effective cpus leave out the core of 'a'" 2-3 "$(cg_read "" cpuset.cpus.effective)"
check_eq "memory.max of 'a' is 64M" 67108864 "$(cg_read a memory.max)"
check_eq "memory.min of 'a' is 64M" 67108864 "$(cg_read a memory.min)"
check_eq "pids.max of 'a' is 64" 64 "$(cg_read a pids.max)"
sup_a=$(enclave_field a supervisor_pid)
check "the supervisor of 'a' ($sup_a) is alive" kill -0 "$sup_a"
check_eq "the supervisor is in <root>/a/supervisor" "0::/$ROOT/a/supervisor" "$(cat "/proc/$sup_a/cgroup" 2>&1)"
check_eq "<root>/a/supervisor holds only the supervisor" "$sup_a" "$(cg_read a/supervisor cgroup.procs)"
check_eq "the supervisor is PID 1 of its own pid namespace" 1 "$(awk '/^NSpid:/ {print $NF}' "/proc/$sup_a/status")"
check_eq "the supervisor may run on core 1 only" 1 "$(awk '/^Cpus_allowed_list:/ {print $2}' "/proc/$sup_a/status")"
check "ping 'a'" tessera ping a

# ---- cores and memory at run time ----

check "assign a second core to 'a'" tessera assign a --cpus 1
check_eq "'a' owns cores 1 and 2" "1 2" "$(enclave_field a cpus)"
check_eq "cpuset.cpus of 'a' is 1-2" 1-2 "$(cg_read a cpuset.cpus)"
check_eq "cpuset.cpus.effective of 'a' is 1-2" 1-2 "$(cg_read a cpuset.cpus.effective)"
check "'a' is still a valid partition" partition_ok a
check_eq "the supervisor may run on cores 1-2" 1-2 "$(awk '/^Cpus_allowed_list:/ {print $2}' "/proc/$sup_a/status")"
# Linux 6.1 will not let a partition that holds tasks take its parent's last CPU (the partition turns
# "invalid (Parent unable to distribute cpu downstream)"); a new, still empty one may.  tesserad must
# then refuse and leave both the ledger and the kernel as they were.  Later kernels may allow it.
if out=$(tessera assign a --cpus 3-3 2>&1); then
        diag "this kernel let a populated partition take the pool's last core"
        check_eq "'a' owns cores 1-3" 1-3 "$(cg_read a cpuset.cpus.effective)"
        check "release core 3 again" tessera release a --cpus 3-3
else
        diag "$out"
        case $out in
        *"would break its exclusive partition"*) ok 0 "taking the pool's last core is refused (Linux 6.1 partitions)" ;;
        *) ok 1 "taking the pool's last core is refused (Linux 6.1 partitions)" ;;
        esac
        check_eq "the refusal left the ledger alone" "1 2" "$(enclave_field a cpus)"
fi
check_eq "cpuset.cpus of 'a' is 1-2 after that" 1-2 "$(cg_read a cpuset.cpus)"
check "'a' is a valid partition after that" partition_ok a
check "release core 2 from 'a'" tessera release a --cpus 2-2
check_eq "cpuset.cpus of 'a' is 1 again" 1 "$(cg_read a cpuset.cpus)"
check_eq "cpuset.cpus.effective of 'a' is 1 again" 1 "$(cg_read a cpuset.cpus.effective)"
check_eq "the root group's effective cpus are 2-3 again" 2-3 "$(cg_read "" cpuset.cpus.effective)"
check_fails "the last core cannot be released" "at least one core" tessera release a --cpus 1
check "assign 64M more to 'a'" tessera assign a --memory 64M
check_eq "memory.max of 'a' is 128M" 134217728 "$(cg_read a memory.max)"
check_eq "memory.min of 'a' is 128M" 134217728 "$(cg_read a memory.min)"
check "release 64M from 'a'" tessera release a --memory 64M
check_eq "memory.max of 'a' is 64M again" 67108864 "$(cg_read a memory.max)"
check_eq "memory.min of 'a' is 64M again" 67108864 "$(cg_read a memory.min)"

# ---- devices: the BPF device program, by what it lets a process in the enclave open ----

# /dev/kmsg (c 1:11) is in no enclave's standard set; /dev/null (c 1:3) is in every one.
DEV=/dev/kmsg
check "outside any enclave $DEV opens" sh -c ": <$DEV"
check "inside 'a' /dev/null opens (standard rule)" in_enclave a ": </dev/null"
check_fails "inside 'a' $DEV is refused (EPERM)" "Operation not permitted" in_enclave a ": <$DEV"
check "assign $DEV to 'a'" tessera assign a --device "$DEV"
check "inside 'a' $DEV now opens" in_enclave a ": <$DEV"
check "release $DEV from 'a'" tessera release a --device "$DEV"
check_fails "inside 'a' $DEV is refused again" "Operation not permitted" in_enclave a ": <$DEV"

# ---- a second and a third enclave ----

check "create 'b' (2 cores, 64M)" tessera create --name b --cpus 2 --memory 64M
check_eq "'b' gets the other cores" "2 3" "$(enclave_field b cpus)"
check "'b' is an isolated (or root) partition" partition_ok b
check_eq "cpuset.cpus.effective of 'b' is 2-3" 2-3 "$(cg_read b cpuset.cpus.effective)"
check_eq "'a' kept core 1" 1 "$(cg_read a cpuset.cpus.effective)"
check_fails "a third enclave is refused: no free core" "0 free" tessera create --name c --cpus 1 --memory 64M
check "the refused enclave left no cgroup" test ! -e "$CG/c"
check_eq "the refused enclave left no record" "a b" "$(enclave_names | tr '\n' ' ' | sed 's/ $//')"
check_eq "tessera check: the ledger agrees with the kernel" ok "$(tessera check 2>&1)"

# ---- kill -9 of tesserad: the enclaves are re-attached ----

sup_b=$(enclave_field b supervisor_pid)
kill -KILL "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null
DAEMON_PID=
check "the supervisors outlive tesserad" kill -0 "$sup_a" "$sup_b"
start_daemon
ok $? "tesserad restarts after kill -9"
check_eq "'a' is running after the restart" running "$(enclave_field a state)"
check_eq "'b' is running after the restart" running "$(enclave_field b state)"
check_eq "'a' kept its supervisor" "$sup_a" "$(enclave_field a supervisor_pid)"
check_eq "'b' kept its supervisor" "$sup_b" "$(enclave_field b supervisor_pid)"
check "ping 'a' after the restart" tessera ping a
check "ping 'b' after the restart" tessera ping b
check_eq "tessera check after the restart" ok "$(tessera check 2>&1)"
check_eq "the root group is still a partition root after the restart" root "$(cg_read "" cpuset.cpus.partition)"
check_eq "the root group still holds the pool 1-3" 1-3 "$(cg_read "" cpuset.cpus)"
check "'a' is still a valid partition after the restart" partition_ok a
check "'b' is still a valid partition after the restart" partition_ok b
check_eq "cpuset.cpus.effective of 'a' survived the restart" 1 "$(cg_read a cpuset.cpus.effective)"
check_eq "cpuset.cpus.effective of 'b' survived the restart" 2-3 "$(cg_read b cpuset.cpus.effective)"
check_eq "memory.max of 'a' survived the restart" 67108864 "$(cg_read a memory.max)"
check_eq "pids.max of 'a' survived the restart" 64 "$(cg_read a pids.max)"
check_fails "inside 'a' $DEV is still refused after the restart" "Operation not permitted" in_enclave a ": <$DEV"

# ---- on_failure ----

# 'b' was started by the first tesserad: the new one is not its parent and cannot learn the signal.
kill -KILL "$sup_b"
check "'b' is listed failed once its (re-attached) supervisor is killed" wait_for 20 state_is b failed
check "the cause names the supervisor" cause_has b "supervisor (pid $sup_b)"
check "[keep] the cgroup of 'b' is kept for inspection" test -d "$CG/b"
check_fails "ping 'b' says it failed" failed tessera ping b
check_eq "'a' never noticed" running "$(enclave_field a state)"
check_eq "tessera check with a failed enclave" ok "$(tessera check 2>&1)"
check "destroy the failed 'b'" tessera destroy b
check "the cgroup of 'b' is gone" test ! -e "$CG/b"

check "[keep] create 'k' under this tesserad" tessera create --name k --cpus 1 --memory 64M --on-failure keep
kill -KILL "$(enclave_field k supervisor_pid)"
check "[keep] 'k' is listed failed" wait_for 20 state_is k failed
check "[keep] the cause names signal 9" cause_has k "killed by signal 9"
check "[keep] destroy 'k'" tessera destroy k

check "[restart] create 'r'" tessera create --name r --cpus 1 --memory 64M --on-failure restart
old=$(enclave_field r supervisor_pid)
kill -KILL "$old"
restarted() { _p=$(enclave_field r supervisor_pid); [ "$_p" != "$old" ] && state_is r running; }
check "[restart] 'r' runs again with a new supervisor" wait_for 20 restarted
new=$(enclave_field r supervisor_pid)
check_eq "[restart] the new supervisor is in <root>/r/supervisor" "$new" "$(cg_read r/supervisor cgroup.procs)"
check_eq "[restart] it is PID 1 of its own pid namespace" 1 "$(awk '/^NSpid:/ {print $NF}' "/proc/$new/status")"
check "[restart] 'r' answers" tessera ping r
check "[restart] 'r' is still a valid partition" partition_ok r

# ---- destroy ----

sup_r=$new
check "destroy 'a'" tessera destroy a
check "the cgroup of 'a' is gone" test ! -e "$CG/a"
check "the supervisor of 'a' is dead" wait_for 5 pid_dead "$sup_a"
check "destroy 'r'" tessera destroy r
check "the supervisor of 'r' is dead" wait_for 5 pid_dead "$sup_r"
check_eq "no group is left below the root group" "" "$(find "$CG" -mindepth 1 -type d)"
check_eq "the root group has the whole pool back" 1-3 "$(cg_read "" cpuset.cpus.effective)"
check_eq "tessera check after destroy" ok "$(tessera check 2>&1)"
check_eq "tessera list is empty" "" "$(enclave_names)"

# ---- huge pages: the node's 2 MiB pool grows by the enclave's blocks and shrinks back ----

POOL=/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages
if [ -w "$POOL" ]; then
        before=$(cat "$POOL")
        check "create 'h' with huge pages (64M)" tessera create --name h --cpus 1 --memory 64M --hugepages
        check_eq "node 0's pool grew by 32 pages" $((before + 32)) "$(cat "$POOL")"
        check_eq "hugetlb.2MB.max of 'h' is its memory" 67108864 "$(cg_read h hugetlb.2MB.max)"
        check "assign 32M more to 'h'" tessera assign h --memory 32M
        check_eq "the pool follows (48 pages)" $((before + 48)) "$(cat "$POOL")"
        check "destroy 'h'" tessera destroy h
        check_eq "the pool is back to what it was" "$before" "$(cat "$POOL")"
else
        ok 0 "# SKIP no writable 2 MiB pool on node 0"
fi

echo "1..$N"
[ "$FAILED" -eq 0 ]
