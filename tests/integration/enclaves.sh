#!/usr/bin/env bash
# Native enclaves end to end on this machine's real cgroups and namespaces:
# create from flags and from YAML, limits in the kernel, run-time changes,
# refusals that leave nothing behind, destroy.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || { skip "needs root (cgroups, namespaces)"; finish; exit; }
start_daemon; ok $? "tesserad starts"
ncpu=$(tessera --json cpus | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
check_eq "tessera cpus lists every core" "$(nproc --all)" "$ncpu"

check "create 'a' from flags" tessera create --name a --cpus 1 --memory 256M --pids 64
check_eq "'a' is running" running "$(enclave_field a state)"
cpus_a=$(enclave_field a cpus)
check_eq "'a' owns one core" 1 "$(python3 -c "print(len($cpus_a))")"
core_a=$(python3 -c "print($cpus_a[0])")
check_eq "'a' holds 256 MiB" 268435456 "$(enclave_field a memory)"
check_eq "cpuset.cpus of 'a' is its core" "$core_a" "$(cat "$(cgroup_path cpuset a cpuset.cpus)")"
if [ -f "$(cgroup_path memory a memory.limit_in_bytes)" ]; then
        check_eq "memory limit of 'a' is 256 MiB" 268435456 "$(cat "$(cgroup_path memory a memory.limit_in_bytes)")"
else
        check_eq "memory.max of 'a' is 256 MiB" 268435456 "$(cat "$(cgroup_path memory a memory.max)")"
fi
check_eq "pids.max of 'a' is 64" 64 "$(cat "$(cgroup_path pids a pids.max)")"
sup=$(enclave_field a supervisor_pid)
check "supervisor of 'a' is alive" kill -0 "$sup"
check_eq "supervisor is PID 1 of its own pid namespace" 1 "$(awk '/^NSpid:/ {print $NF}' /proc/$sup/status)"
check "supervisor has its own mount namespace" test "$(readlink /proc/$sup/ns/mnt)" != "$(readlink /proc/self/ns/mnt)"
check "supervisor is in the cgroup of 'a'" grep -q "$CG_ROOT/a/" /proc/$sup/cgroup
check "ping 'a'" tessera ping a

cat >"$T/b.yaml" <<YAML
name: b
cpus: 1
memory: 128M
namespaces: [net]
on_failure: keep
YAML
check "create 'b' from YAML" tessera create "$T/b.yaml"
check_fails "a third enclave gets no core" "cores asked" tessera create --name c --cpus 1 --memory 128M
check "the refused enclave left no cgroup" test ! -e "$(cgroup_path cpuset c)"
check_eq "the refused enclave left no record" "a b" "$(tessera --json list | python3 -c 'import json,sys; print(" ".join(e["name"] for e in json.load(sys.stdin)))')"
check_fails "a taken core names its owner" "owned by enclave 'a'" tessera create --name c --cpus "$core_a-$core_a" --memory 128M
check_fails "more memory than is free says how much is free" "free" tessera create --name c --cpus 1 --memory 100T
check_fails "the last core cannot be released" "at least one core" tessera release a --cpus 1

cat >"$T/bad.yaml" <<'YAML'
name: bad
cpus: 1
memory: 4X
YAML
check_fails "a bad size names file, line, column and field" "bad.yaml:3:9: memory" tessera create "$T/bad.yaml"

check "destroy 'b'" tessera destroy b
check "the cgroup of 'b' is gone" test ! -e "$(cgroup_path cpuset b)"
check "assign a second core to 'a'" tessera assign a --cpus 1
check_eq "'a' has both cores in the kernel" "0-1" "$(cat "$(cgroup_path cpuset a cpuset.cpus)")"
check "release core $core_a from 'a' by list" tessera release a --cpus "$core_a-$core_a"
check "assign 128M more to 'a'" tessera assign a --memory 128M
check_eq "'a' holds 384 MiB" 402653184 "$(enclave_field a memory)"
check "release 256M from 'a'" tessera release a --memory 256M
check_eq "'a' holds 128 MiB" 134217728 "$(enclave_field a memory)"
check_fails "releasing more than it has is refused" "the enclave has" tessera release a --memory 1G
check "the ledger agrees with the kernel" tessera check

# the Hobbes shell's names
check "list_enclaves lists 'a'" bash -c "tessera list_enclaves | grep -q '^a '"
check "assign_cpus a 1 adds a core" tessera assign_cpus a 1
check_eq "'a' has two cores" "[0, 1]" "$(enclave_field a cpus)"
check "release the core again" tessera release a --cpus 1
check "assign_memory a 128M" tessera assign_memory a 128M
check_eq "'a' holds 256 MiB" 268435456 "$(enclave_field a memory)"
check "list_cpus and list_memory answer" bash -c "tessera list_cpus >/dev/null && tessera list_memory >/dev/null && tessera list_pci >/dev/null"
check "ping_enclave a" tessera ping_enclave a
check "create_enclave and destroy_enclave" bash -c "tessera release a --memory 128M >/dev/null && tessera destroy a && tessera create_enclave --name a --cpus 1 --memory 128M >/dev/null"
sup=$(enclave_field a supervisor_pid)

check "destroy 'a'" tessera destroy a
check "the supervisor of 'a' is gone" bash -c "! kill -0 $sup 2>/dev/null"
check_eq "no cgroup is left under the root" "" "$(cgroup_dirs)"
check_fails "destroying it again says it does not exist" "no enclave named 'a'" tessera destroy a
check_eq "every core is free again" "$ncpu" "$(tessera --json cpus | python3 -c 'import json,sys; print(sum(c["owner"]=="free" for c in json.load(sys.stdin)))')"
finish
