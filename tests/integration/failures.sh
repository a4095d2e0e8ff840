#!/usr/bin/env bash
# A supervisor that dies: the enclave is listed failed with the cause, and its
# spec's on_failure decides what becomes of it (keep, reclaim, restart).
# Another enclave never notices.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || { skip "needs root"; finish; exit; }
start_daemon; ok $? "tesserad starts"
wait_state() { # NAME STATE: up to 5 s
        for _ in $(seq 1 100); do [ "$(enclave_field "$1" state)" = "$2" ] && return 0; sleep 0.05; done
        return 1
}
check "a bystander enclave" tessera create --name bystander --cpus 1 --memory 128M

check "[keep] create" tessera create --name keep --cpus 1 --memory 128M --on-failure keep
kill -9 "$(enclave_field keep supervisor_pid)"
check "[keep] the enclave is listed failed" wait_state keep failed
check "[keep] the cause names the signal" bash -c "tessera --json list | grep -q 'killed by signal 9'"
check_eq "[keep] it keeps its core" 1 "$(enclave_field keep cpus | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
check "[keep] its cgroup is kept for inspection" test -d "$(cgroup_path cpuset keep)"
check_fails "[keep] ping says why" "failed" tessera ping keep
check "[keep] destroy frees it" tessera destroy keep

check "[restart] create" tessera create --name restart --cpus 1 --memory 128M --on-failure restart
old=$(enclave_field restart supervisor_pid)
kill -9 "$old"
new=$old
for _ in $(seq 1 100); do
        new=$(enclave_field restart supervisor_pid)
        [ "$new" != "$old" ] && [ "$(enclave_field restart state)" = running ] && break
        sleep 0.05
done
check "[restart] a new supervisor runs" bash -c "[ '$new' != '$old' ] && kill -0 $new"
check_eq "[restart] the restart is counted" 1 "$(enclave_field restart restarts)"
check "[restart] it answers" tessera ping restart
check "[restart] destroy" tessera destroy restart

check "[reclaim] create" tessera create --name reclaim --cpus 1 --memory 128M --on-failure reclaim
kill -9 "$(enclave_field reclaim supervisor_pid)"
check "[reclaim] listed failed" wait_state reclaim failed
check_eq "[reclaim] its core went back" "[]" "$(enclave_field reclaim cpus)"
check_eq "[reclaim] its memory went back" 0 "$(enclave_field reclaim memory)"
check "[reclaim] its cgroup is gone" test ! -e "$(cgroup_path cpuset reclaim)"
check "[reclaim] the record goes with destroy" tessera destroy reclaim
check_eq "the bystander never noticed" running "$(enclave_field bystander state)"
check "the bystander answers" tessera ping bystander

# a supervisor that dies while the daemon is away
sup=$(enclave_field bystander supervisor_pid)
stop_daemon
kill -9 "$sup"
start_daemon; ok $? "tesserad restarts"
check_eq "a supervisor that died while tesserad was away is found failed" failed "$(enclave_field bystander state)"
check_eq "with the cause" "supervisor died while tesserad was away" "$(enclave_field bystander cause)"
check "the ledger agrees with the kernel" tessera check
finish
