#!/usr/bin/env bash
# Applications inside enclaves: launch with and without --wait, exit statuses
# as a shell sees them, logs, kill, wait, a cgroup leaf per application, pinning,
# files inside the enclave's root that cannot escape it, a console, tenants,
# and applications that outlive a tesserad restart.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || { skip "needs root"; finish; exit; }
ROOT=$T/root
mkdir -p "$ROOT"/{bin,proc,sys,dev,tmp,etc,data}
cp "$(command -v busybox)" "$ROOT/bin/busybox"
for a in sh echo cat sleep true false id ls yes head; do ln -s busybox "$ROOT/bin/$a"; done
echo "inside" >"$ROOT/data/hello.txt"
ln -s /etc/host-secret "$ROOT/data/link"
echo "host secret" >"$T/host-secret"
start_daemon; ok $? "tesserad starts"
check "an enclave with its own root" tessera create --name a --cpus 1 --memory 256M --root "$ROOT"

check_eq "--wait passes stdout through" "hello" "$(tessera launch a --wait -- echo hello)"
tessera launch a --wait -- true; check_eq "--wait exits 0 for true" 0 $?
tessera launch a --wait -- sh -c 'exit 3'; check_eq "--wait exits with the application's code" 3 $?
tessera launch a --wait -- sh -c 'kill -9 $$'; check_eq "--wait exits 128+signal when killed" 137 $?
check_eq "stdin passes through" "abc" "$(echo abc | tessera launch a --wait -- cat)"
check_fails "a missing command is one clear line" "no such" tessera launch a --wait -- /bin/nonexistent
check_fails "cores outside the enclave are refused" "not all cores" tessera launch a --cpus 0-63 -- true

app=$(tessera launch a --name sleeper -- sleep 30)
check_eq "launch prints the application's name" sleeper "$app"
app_field() { tessera --json apps "${3:-a}" | python3 -c '
import json, sys
for x in json.load(sys.stdin):
    if x["name"] == sys.argv[1]: print(x[sys.argv[2]])' "$1" "$2"; }
pid=$(app_field sleeper pid)
check "it runs" kill -0 "$pid"
leaf=$(app_field sleeper cgroup)
check "it has a cgroup leaf of its own ($leaf)" grep -qx "$pid" "$(cgroup_path cpuset a "$leaf/cgroup.procs")"
check_eq "alone in it" 1 "$(wc -l < "$(cgroup_path cpuset a "$leaf/cgroup.procs")")"
sup=$(enclave_field a supervisor_pid)
check_eq "it is in the enclave's pid namespace" "$(readlink /proc/$sup/ns/pid)" "$(readlink /proc/$pid/ns/pid)"
check "its pid inside is not 1" test "$(app_field sleeper ns_pid)" -gt 1
check_fails "a second application with the same name is refused" "already" tessera launch a --name sleeper -- true
check "kill it" tessera kill a sleeper --signal KILL
tessera wait a sleeper; check_eq "wait gives 128+9" 137 $?
check_eq "apps shows it exited by signal 9" 9 "$(app_field sleeper signal)"
gone() { for _ in $(seq 40); do [ ! -e "$1" ] && return 0; sleep 0.05; done; return 1; }
check "its cgroup leaf is gone (removed in the background)" gone "$(cgroup_path cpuset a "$leaf")"

tessera launch a --name talker -- sh -c 'echo out; echo err >&2' >/dev/null
tessera wait a talker >/dev/null
check_eq "logs hold stdout and stderr" "out err" "$(tessera logs a talker | tr '\n' ' ' | sed 's/ $//')"
tessera launch a --name flood -- sh -c 'yes 0123456789abcdef | head -c 12000000' >/dev/null
tessera wait a flood >/dev/null
size=$(tessera logs a flood | wc -c)
check "a flood of 12 MB keeps at most 8 MiB of log ($size bytes)" test "$size" -le 8388608 -a "$size" -gt 0

check_eq "cat reads a file inside the root" "inside" "$(tessera cat a /data/hello.txt)"
check_fails "cat cannot climb out with .." "does not exist in the enclave" tessera cat a /../../../../$T/host-secret
check_fails "an absolute symlink resolves inside the root" "does not exist in the enclave" tessera cat a /data/link
check "write puts a file inside the root" bash -c "echo written | tessera write a /data/new.txt"
check_eq "it is in the enclave's root on the host" "written" "$(cat "$ROOT/data/new.txt")"
check_fails "cat refuses what is not a regular file" "not a regular file" tessera cat a /dev/null

check_eq "a scripted console runs commands inside" "hi-from-console" \
        "$(printf 'echo hi-from-console\nexit\n' | tessera console a 2>/dev/null | tr -d '\r' | grep -x hi-from-console)"

# an enclave sharing the host's root can reach the control socket's path, but not the daemon
check "an enclave on the host's root" tessera create --name hostroot --cpus 1 --memory 128M
check_fails "root inside it is refused by tesserad" "not accepted" \
        tessera launch hostroot --wait -- "$TESSERA_BIN" --socket "$TESSERA_SOCKET" list
check "destroy it" tessera destroy hostroot

# applications outlive tesserad
tessera launch a --name survivor -- sleep 2 >/dev/null
tessera launch a --name longer -- sleep 30 >/dev/null
stop_daemon
sleep 2.5
start_daemon; ok $? "tesserad restarts"
check_eq "an application that ended while tesserad was away is recorded" 0 "$(app_field survivor exit_code)"
check_eq "a running one is still running" running "$(app_field longer state)"
check "and can be killed" tessera kill a longer
tessera wait a longer; check_eq "and waited for" 143 $?

# a user namespace: root inside is the owner outside
check "an enclave with a user namespace" tessera create --name u --cpus 1 --memory 128M --root "$ROOT" --namespaces user
check_eq "its application is root inside" 0 "$(tessera launch u --wait -- id -u)"
upid=$(tessera launch u --name usleep -- sleep 30 >/dev/null; app_field usleep pid u)
check_eq "and the owner (root here, mapped 0 -> 0) outside" "0 0" "$(awk '/^Uid:/ {print $2, $3}' /proc/$upid/status)"
check_eq "its uid map has one id" 1 "$(awk '{print $3}' /proc/$upid/uid_map)"
tessera kill u usleep --signal KILL >/dev/null; tessera wait u usleep >/dev/null
tessera launch u --name ulog -- sh -c 'echo logged-in-userns' >/dev/null; tessera wait u ulog >/dev/null
check_eq "its logs are written through the owner's log directory" "logged-in-userns" "$(tessera logs u ulog)"
check "destroy it" tessera destroy u

# tenants
chmod 755 "$T"
check "root gives an enclave to nobody" tessera create --name t --cpus 1 --memory 128M --owner nobody
as_nobody() { setpriv --reuid 65534 --regid 65534 --clear-groups "$TESSERA_BIN" "$@"; }
check_eq "the tenant's application runs as the tenant" 65534 "$(as_nobody launch t --wait -- id -u)"
check_fails "the tenant cannot launch in root's enclave" "no enclave named 'a'" as_nobody launch a --wait -- true
check_fails "the tenant cannot run as root" "run as the tenant" as_nobody launch t --user 0 --wait -- true

pid=$(tessera launch a -- sleep 60 >/dev/null; app_field "$(tessera --json apps a | python3 -c 'import json,sys; print([x["name"] for x in json.load(sys.stdin) if x["state"]=="running"][-1])')" pid)
check "destroy kills the enclave's applications" bash -c "tessera destroy a && ! kill -0 $pid 2>/dev/null"
check "the ledger agrees with the kernel" tessera check
finish
