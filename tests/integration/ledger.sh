#!/usr/bin/env bash
# The ledger's placement on a synthetic node (hwloc XML: 2 sockets, 8 NUMA
# nodes, 256 cores, 64 GiB per node): ledger-only, no kernel steps.  NUMA-aware
# best fit, the host reserve, 256 enclaves side by side, refusals.
. "$(dirname "$0")/lib.sh"

XML=$TESSERA_SRC/tests/data/topo-2s8n256c.xml
start_daemon --topology "$XML" --host-cpus 0-3 --host-memory 4G; ok $? "ledger-only tesserad starts on a 256-core topology"
node=$(tessera --json node)
check_eq "node says ledger-only" True "$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['ledger_only'])" "$node")"
check_eq "252 cores free after a 4-core host reserve" 252 "$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['cpus']['free'])" "$node")"
check_eq "host keeps 4G on each of 8 nodes" $((8 * 4 * 1024 * 1024 * 1024)) "$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['memory']['host'])" "$node")"

check "an 8-core enclave" tessera create --name big --cpus 8 --memory 4G
placement() { # NAME -> "cores-nodes|memory-nodes"
        python3 - "$1" "$(tessera --json list)" "$(tessera --json cpus)" <<'PY'
import json, sys
name, enclaves, cpus = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
numa = {c["cpu"]: c["numa"] for c in cpus}
e = [x for x in enclaves if x["name"] == name][0]
print(sorted({numa[c] for c in e["cpus"]}), "|", e["numa"])
PY
}
p=$(placement big)
check "its cores sit on one NUMA node and its memory on that node ($p)" python3 -c "
a, b = '''$p'''.split('|'); a, b = eval(a), eval(b)
assert len(a) == 1 and a == b"
check "an enclave pinned to NUMA node 5" tessera create --name five --cpus 2 --memory 1G --numa 5
check_eq "its cores and memory are on node 5" "[5] | [5]" "$(placement five)"
check_fails "asking node 5 for more cores than it has names the node" "on NUMA node 5" tessera create --name toomany --cpus 40 --numa 5 --memory 1G
check_fails "a core of the host reserve is refused" "core 1 is kept for the host" tessera create --name h --cpus 1-2 --memory 1G
tessera destroy big >/dev/null; tessera destroy five >/dev/null

t0=$(date +%s%N)
fails=0
for i in $(seq 0 251); do tessera create --name "e$i" --cpus 1 --memory 1G >/dev/null 2>&1 || fails=$((fails + 1)); done
t1=$(date +%s%N)
check_eq "252 one-core enclaves fit the 252 free cores" 0 "$fails"
diag "252 creates in $(( (t1 - t0) / 1000000 )) ms (ledger-only, including the CLI's fork+exec)"
check_eq "list shows 252 enclaves" 252 "$(tessera --json list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
check_fails "the 253rd gets no core" "0 free" tessera create --name over --cpus 1 --memory 1G
check "the ledger's invariants hold" tessera check
stop_daemon
start_daemon --topology "$XML" --host-cpus 0-3 --host-memory 4G; ok $? "and comes back"
check_eq "with all 252 enclaves" 252 "$(tessera --json list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
stop_daemon
cat >"$T/tesserad.yaml" <<YAML
topology: $XML
host_cpus: "0-3"
host_memory: 4G
YAML
"$TESSERAD_BIN" --config "$T/tesserad.yaml" --state-dir "$T/state" --socket "$TESSERA_SOCKET" >>"$T/tesserad.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 100); do tessera node >/dev/null 2>&1 && break; sleep 0.05; done
check_eq "a config file gives the same node (252 enclaves, 4 host cores)" "252 4" \
        "$(tessera --json node | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["enclaves"]["total"], d["cpus"]["host"])')"
stop_daemon
printf 'host_cpus: "0-3"\nblock_size: 100M\n' >"$T/bad.yaml"
check_fails "a bad config names file, line, column and key" "bad.yaml:2:13: block_size" \
        "$TESSERAD_BIN" --config "$T/bad.yaml" --state-dir "$T/state3" --socket "$T/x.sock"
check_fails "a changed block size is refused while enclaves hold blocks" "block_size" \
        timeout 20 "$TESSERAD_BIN" --state-dir "$T/state" --socket "$TESSERA_SOCKET" --topology "$XML" \
        --host-cpus 0-3 --host-memory 4G --block-size 256M
finish
