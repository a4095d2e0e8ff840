#!/usr/bin/env bash
# kill -9 of tesserad at every named step of every operation, then at random
# moments of a random workload: after each restart the store and the kernel
# must agree (tessera check), no cgroup may be stray, no core owned twice, and
# enclaves that were running must still run and answer.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || { skip "needs root (cgroups, namespaces)"; finish; exit; }
VETH=tvc$$
ip link add "$VETH" type veth peer name "${VETH}p" || { skip "cannot make a veth pair"; finish; exit; }
CLEANUP_HOOKS+=("ip link del $VETH")

invariants() { # DESCRIPTION
        local out
        out=$(tessera check 2>&1)
        ok $? "$1: tessera check ($out)"
        # every core an enclave lists is listed by no other, and `cpus` names that enclave as its owner
        local bad
        bad=$(python3 - "$(tessera --json list)" "$(tessera --json cpus)" <<'PY'
import json, sys
enclaves, cpus = json.loads(sys.argv[1]), json.loads(sys.argv[2])
owner = {c["cpu"]: c["owner"] for c in cpus}
seen, bad = {}, []
for e in enclaves:
    for c in e["cpus"]:
        if c in seen: bad.append(f"core {c} in {seen[c]} and {e['name']}")
        seen[c] = e["name"]
        if owner.get(c) != e["name"]: bad.append(f"core {c}: list says {e['name']}, cpus says {owner.get(c)}")
for c, o in owner.items():
    if o not in ("free", "host") and seen.get(c) != o: bad.append(f"core {c} owned by {o} which does not list it")
print("; ".join(bad))
PY
)
        check_eq "$1: no core owned twice, listings agree" "" "$bad"
        local e
        for e in $(tessera --json list | python3 -c 'import json,sys; [print(e["name"]) for e in json.load(sys.stdin) if e["state"]=="running"]'); do
                check "$1: running enclave '$e' answers" tessera ping "$e"
        done
}

# op_for POINT: the command that reaches that step
op_for() {
        case $1 in
        create:*) echo "tessera create --name f --cpus 1 --memory 128M --namespaces net --device $VETH" ;;
        assign:*) echo "tessera assign base --memory 128M --device $VETH" ;;
        release:*) echo "tessera release base --memory 128M" ;;
        destroy:*) echo "tessera destroy base" ;;
        esac
}

points=$("$TESSERAD_BIN" --list-fault-points)
check "tesserad lists its fault points" test -n "$points"
for p in $points; do
        start_daemon; ok $? "[$p] daemon starts"
        tessera create --name base --cpus 1 --memory 256M --namespaces net >/dev/null 2>&1
        [[ $p == release:* ]] && tessera assign base --memory 128M >/dev/null
        stop_daemon
        start_daemon --fault "$p" || { ok 1 "[$p] daemon with fault starts"; continue; }
        out=$($(op_for "$p") 2>&1); rc=$?
        sleep 0.1
        if kill -0 "$DAEMON_PID" 2>/dev/null; then
                ok 1 "[$p] the daemon died at the fault point (rc $rc: $out)"
                stop_daemon
        else
                ok 0 "[$p] the daemon died at the fault point"
                wait "$DAEMON_PID" 2>/dev/null; DAEMON_PID=
        fi
        start_daemon; ok $? "[$p] daemon restarts"
        invariants "[$p]"
        case $p in
        create:committed) check_eq "[$p] the committed enclave survives" running "$(enclave_field f state)" ;;
        create:*) check_eq "[$p] the half-made enclave is rolled back" "" "$(enclave_field f state)" ;;
        destroy:*) check_eq "[$p] the destroy was finished" "" "$(enclave_field base state)" ;;
        esac
        if [[ $p == create:* ]] || [[ $p == assign:* ]]; then
                # the interface is in exactly one place: the host or an enclave that owns it
                where=$(tessera --json devices | python3 -c "import json,sys; print([d['owner'] for d in json.load(sys.stdin) if d['id']=='$VETH'])")
                if ip link show "$VETH" >/dev/null 2>&1; then
                        check_eq "[$p] $VETH is on the host and owned by nobody" "['free']" "$where"
                else
                        check "[$p] $VETH is inside an enclave that owns it" test "$where" = "['f']" -o "$where" = "['base']"
                fi
        fi
        for e in $(tessera --json list | python3 -c 'import json,sys; [print(e["name"]) for e in json.load(sys.stdin)]'); do
                tessera destroy "$e" >/dev/null 2>&1
        done
        check "[$p] $VETH is back on the host after destroy" ip link show "$VETH"
        check_eq "[$p] no cgroup left" "" "$(cgroup_dirs)"
        stop_daemon
done

# random workload with random kills
RANDOM=42
start_daemon
for round in $(seq 1 12); do
        ( for i in $(seq 1 20); do
                case $((RANDOM % 5)) in
                0) tessera create --name "r$((RANDOM % 3))" --cpus 1 --memory 128M ;;
                1) tessera destroy "r$((RANDOM % 3))" ;;
                2) tessera assign "r$((RANDOM % 3))" --memory 128M ;;
                3) tessera release "r$((RANDOM % 3))" --memory 128M ;;
                4) tessera list ;;
                esac
        done >/dev/null 2>&1 ) &
        load=$!
        sleep "0.$((RANDOM % 9 + 1))"
        kill9_daemon
        wait $load 2>/dev/null
        start_daemon; ok $? "round $round: daemon restarts after kill -9"
        invariants "round $round"
done
finish
