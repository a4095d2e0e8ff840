#!/usr/bin/env bash
# The README's first command: install what is missing, build, and show two
# enclaves side by side with a core moved from one to the other.  Runs a
# private tesserad (its own state dir, socket and cgroup root) and removes
# everything it made when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it makes cgroups and namespaces)"; exit 1; }
scripts/install-deps.sh
scripts/build.sh >/dev/null
B=$PWD/build
D=$(mktemp -d /tmp/tessera-demo.XXXXXX)
export TESSERA_SOCKET=$D/tessera.sock
tessera() { "$B/src/tessera/tessera" "$@"; }
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }
cleanup() {
        tessera destroy viz >/dev/null 2>&1 || true
        tessera destroy sim >/dev/null 2>&1 || true
        [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
        # tesserad keeps its root group across restarts; the demo's goes with it
        rmdir /sys/fs/cgroup/*/tessera-demo-$$ /sys/fs/cgroup/tessera-demo-$$ 2>/dev/null
        rm -rf "$D"
}
trap cleanup EXIT

"$B/src/tesserad/tesserad" --state-dir "$D/state" --socket "$TESSERA_SOCKET" --cgroup-root tessera-demo-$$ \
        --host-cpus '' --host-memory 2G >"$D/tesserad.log" 2>&1 &
DPID=$!
for _ in $(seq 100); do tessera node >/dev/null 2>&1 && break; sleep 0.05; done

run tessera node
cat >"$D/sim.yaml" <<'YAML'
name: sim
cpus: 2
memory: 512M
pids: 256
namespaces: [net]
on_failure: keep
YAML
say "cat sim.yaml"; cat "$D/sim.yaml"
run tessera create "$D/sim.yaml"
run tessera release sim --cpus 1
run tessera create --name viz --cpus 1 --memory 256M
run tessera list
run tessera cpus
run tessera memory
run tessera ping viz
run tessera launch viz --wait -- sh -c 'echo "hello from $(hostname), pid $$ in its own pid namespace"'
run tessera launch sim --name ticker -- sh -c 'for i in 1 2 3; do echo tick $i; done'
run tessera wait sim ticker
run tessera logs sim ticker
run tessera apps
say "tessera create --name c --cpus 1 --memory 128M   # no core is free: refused, nothing left behind"
tessera create --name c --cpus 1 --memory 128M || true
run tessera destroy viz
run tessera assign sim --cpus 1
run tessera list
run tessera check
