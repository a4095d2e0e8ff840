#!/usr/bin/env bash
# XEMEM: memory shared between processes of different enclaves and the host,
# against a private tesserad.  First test-xemem (every call and error of
# libxemem and libxpmem, children as nobody), whose TAP lines become this
# suite's.  Then xemem-tool across two enclaves on the host's root, an enclave
# with a root of its own (busybox, the tool and its libraries) and the host:
# every kind of buffer, XPMEM's whole-address-space form, a process-shared
# mutex, condition variable and futex; `tessera segments`; segments that end
# with their exporter or its enclave and outlive a tesserad restart; a
# hostile client that gets errors, not a broken daemon; nothing left behind.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || { skip "needs root"; finish; exit; }
TOOL=$TESSERA_BUILD/tests/xemem/xemem-tool
TESTPROG=$TESSERA_BUILD/tests/xemem/test-xemem
HOSTILE=$TESSERA_SRC/tests/xemem/hostile-client.py
if ! ninja -C "$TESSERA_BUILD" tests/xemem/test-xemem tests/xemem/xemem-tool >"$T/build.log" 2>&1 ||
        [ ! -x "$TOOL" ] || [ ! -x "$TESTPROG" ]; then
        sed 's/^/#   /' "$T/build.log" | tail -20
        ok 1 "test-xemem and xemem-tool build (libxemem needs lib/xemem/convert.c and snapshot.c)"
        finish
        exit
fi

# A destroy that fails half-way can leave a frozen process behind, which lib.sh's cleanup cannot kill:
# after it, thaw what is left of this suite's cgroups, kill it and remove them.
thaw_leftovers() {
        local f d
        for f in $(find /sys/fs/cgroup/freezer/"$CG_ROOT" -name freezer.state 2>/dev/null); do
                echo THAWED >"$f"
        done
        for _ in $(seq 40); do
                find /sys/fs/cgroup/*/"$CG_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9
                for d in $(find /sys/fs/cgroup/*/"$CG_ROOT" -depth -type d 2>/dev/null); do rmdir "$d"; done
                ls -d /sys/fs/cgroup/*/"$CG_ROOT" >/dev/null 2>&1 || return 0
                sleep 0.05
        done
} 2>/dev/null
trap 'cleanup; thaw_leftovers' EXIT

export TESSERA_XEMEM_SOCKET=$T/xemem/xemem.sock
chmod 711 "$T" # test-xemem's children become nobody and must reach the XEMEM socket
start_daemon; ok $? "tesserad starts"
check "its XEMEM socket is beside the control socket ($TESSERA_XEMEM_SOCKET)" test -S "$TESSERA_XEMEM_SOCKET"
P=xt$$ # the names of this run's segments

# run_tap PREFIX CMD...: CMD's TAP lines become this suite's, then one check that it ran to its plan
run_tap() {
        local prefix=$1 line n=0 plan= rc st re='^(not )?ok( [0-9]+)?( -)? ?(.*)$'
        shift
        "$@" >"$T/tap.out" 2>&1
        rc=$?
        while IFS= read -r line; do
                if [[ $line =~ ^ok\ [0-9]+\ \#\ SKIP\ ?(.*)$ ]]; then
                        skip "$prefix: ${BASH_REMATCH[1]}"
                        n=$((n + 1))
                elif [[ $line =~ $re ]]; then
                        st=0
                        [ -n "${BASH_REMATCH[1]}" ] && st=1
                        ok $st "$prefix: ${BASH_REMATCH[4]}"
                        n=$((n + 1))
                elif [[ $line =~ ^1\.\.([0-9]+)$ ]]; then
                        plan=${BASH_REMATCH[1]}
                elif [[ $line == \#* ]]; then
                        echo "$line"
                else
                        echo "#   $line"
                fi
        done <"$T/tap.out"
        check_eq "$prefix ran to its plan (exit $rc)" "$n" "${plan:-no plan}"
}

# ---- the API, on the host ----
run_tap test-xemem timeout 120 "$TESTPROG"

# ---- across enclaves ----
XENV=(--env "TESSERA_XEMEM_SOCKET=$TESSERA_XEMEM_SOCKET")
in_encl() { # ENCLAVE CMD...: runs CMD inside (XEMEM socket from the environment) and waits for it
        local e=$1
        shift
        tessera launch "$e" --wait "${XENV[@]}" -- "$@"
}
wait_log() { # ENCLAVE APP REGEX: up to 5 s for the application to print REGEX
        for _ in $(seq 100); do
                tessera logs "$1" "$2" 2>/dev/null | grep -q "$3" && return 0
                sleep 0.05
        done
        tessera logs "$1" "$2" 2>&1 | sed 's/^/#   /'
        return 1
}
start_in() { # ENCLAVE APP CMD...: starts CMD inside; returns once it printed its segment id
        local e=$1 app=$2
        shift 2
        tessera launch "$e" --name "$app" "${XENV[@]}" -- "$@" >/dev/null && wait_log "$e" "$app" '^segid'
}
app_field() { # ENCLAVE APP FIELD
        tessera --json apps "$1" | python3 -c '
import json, sys
for x in json.load(sys.stdin):
    if x["name"] == sys.argv[1]: print(x[sys.argv[2]])' "$2" "$3"
}
seg_field() { # NAME FIELD: from `tessera --json segments`
        tessera --json segments | python3 -c '
import json, sys
for s in json.load(sys.stdin):
    if s["name"] == sys.argv[1]:
        v = s[sys.argv[2]]
        print(json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v)' "$1" "$2"
}
seg_gone() { # NAME: no longer listed within 3 s
        for _ in $(seq 60); do
                [ -z "$(seg_field "$1" id)" ] && return 0
                sleep 0.05
        done
        tessera segments | sed 's/^/#   /'
        return 1
}
check_out() { # DESCRIPTION REGEX CMD...: CMD succeeds and prints a line matching REGEX
        local d=$1 want=$2 out rc
        shift 2
        out=$("$@" 2>&1)
        rc=$?
        if [ $rc -eq 0 ] && grep -qE "$want" <<<"$out"; then ok 0 "$d"; else
                echo "#   exit $rc, wanted output matching: $want"
                sed 's/^/#   /' <<<"$out" | head -20
                ok 1 "$d"
        fi
}

check "enclave xa, on the host's root" tessera create --name xa --cpus 1 --memory 256M
check "enclave xb, on the host's root" tessera create --name xb --cpus 1 --memory 256M

check "xa exports 64 KiB of malloc'd memory" start_in xa e-malloc "$TOOL" export "$P-malloc" 65536 0600 malloc 50
check_out "xb attaches it read-only: the pattern, a live heartbeat, mprotect refused" "check $P-malloc ro: all good" \
        in_encl xb "$TOOL" check "$P-malloc" ro
check_out "xb attaches it read-write: its byte comes back through the exporter" "echo .* came back" \
        in_encl xb "$TOOL" check "$P-malloc" rw
check "xb attaches 3000 bytes at the unaligned offset 5000" in_encl xb "$TOOL" check "$P-malloc" rw 5000 3000
check "a host process attaches it read-write" "$TOOL" check "$P-malloc" rw

tessera launch xb --name holder "${XENV[@]}" -- "$TOOL" hold "$P-malloc" rw 60 >/dev/null
check "xb keeps a read-write attachment" wait_log xb holder '^attached'
exporter=$(app_field xa e-malloc pid)
holder=$(app_field xb holder pid)
check_out "tessera segments: id, name, size, owner, mode, kind, enclave, pid, attachers" \
        "^ *[0-9]+ +$P-malloc +[0-9.]+K +root +600 +range +xa +$exporter +$holder@xb\(rw\)$" tessera segments
fields=$(for f in enclave pid owner_uid mode; do seg_field "$P-malloc" $f; done | tr '\n' ' ')
check_eq "tessera --json segments: the exporter's enclave, pid, owner, mode" "xa $exporter 0 600 " "$fields"
size=$(seg_field "$P-malloc" size)
check "its size ($size) is the buffer rounded out to pages" \
        test $((size % 4096)) -eq 0 -a "$size" -ge 65536 -a "$size" -le $((65536 + 8192))
check_eq "its attachers: the holder in xb, read-write, one attachment" "1 $holder xb True 1" \
        "$(tessera --json segments | python3 -c '
import json, sys
s = [s for s in json.load(sys.stdin) if s["name"] == sys.argv[1]][0]
a = [a for a in s["attachers"] if a["enclave"] == "xb"]
print(len(a), *(a[0][k] for k in ("pid", "enclave", "writable", "attachments")) if a else "")' "$P-malloc")"
tessera kill xb holder --signal KILL >/dev/null
tessera wait xb holder >/dev/null
attachers_gone() {
        for _ in $(seq 60); do
                [ "$(seg_field "$P-malloc" attachers)" = "[]" ] && return 0
                sleep 0.05
        done
        return 1
}
check "when the holder dies its grant goes" attachers_gone

for kind in static stack mmap; do
        check "xa exports a $kind buffer (20000 bytes, mode 0644)" \
                start_in xa "e-$kind" "$TOOL" export "$P-$kind" 20000 0644 "$kind" 30
        check "xb reads and writes the $kind buffer" in_encl xb "$TOOL" check "$P-$kind" rw
        check "xb asks the $kind exporter to stop" in_encl xb "$TOOL" stop "$P-$kind"
        tessera wait xa "e-$kind" >/dev/null
        check_eq "the $kind exporter ends with 0 (it removed its segment)" 0 $?
        check "the $kind segment is gone" in_encl xb "$TOOL" gone "$P-$kind" 3
done

check "xa exports its whole address space (XPMEM), its buffer named by $P-whole-info" \
        start_in xa e-whole "$TOOL" export "$P-whole" 100000 0600 whole 30
check_eq "tessera segments shows a whole-address-space segment of xa" "whole xa" \
        "$(tessera --json segments | python3 -c '
import json, sys
print(*[(s["kind"], s["enclave"]) for s in json.load(sys.stdin) if s["kind"] == "whole"][0])')"
check_out "xb attaches the buffer by its address through libxpmem, read-write" "via libxpmem" \
        in_encl xb "$TOOL" check "$P-whole" rw
check "xb attaches 5000 bytes at offset 1000 of it, read-only" in_encl xb "$TOOL" check "$P-whole" ro 1000 5000
check "xb stops it" in_encl xb "$TOOL" stop "$P-whole"
tessera wait xa e-whole >/dev/null
check_eq "the whole-address-space exporter ends with 0" 0 $?

check "xa: a process-shared mutex, condition variable and futex in exported memory" \
        start_in xa mx "$TOOL" mutex-export "$P-mutex" 1000 20
check_out "xb: 1000 ping-pongs through the condition variable, then FUTEX_WAKE wakes xa's waiter" \
        "FUTEX_WAKE woke 1 waiter" in_encl xb "$TOOL" mutex-attach "$P-mutex" 1000
tessera wait xa mx >/dev/null
check_eq "xa's side passed too" 0 $?
check_out "xa was woken by the other enclave's FUTEX_WAKE" "futex: woken" tessera logs xa mx

check "xa exports $P-kill" start_in xa e-kill "$TOOL" export "$P-kill" 8192 0600 mmap 60
check_eq "tessera segments lists it" "$P-kill" "$(seg_field "$P-kill" name)"
check "tessera kill the exporter" tessera kill xa e-kill --signal KILL
check "its segment leaves tessera segments" seg_gone "$P-kill"

# the control socket is reachable from an enclave on the host's root: only XEMEM requests get through
check_fails "a process in xb cannot administer through the control socket" "not accepted" \
        in_encl xb "$TESSERA_BIN" --socket "$TESSERA_SOCKET" list
check_out "but may list segments through it (an XEMEM request)" "$P-malloc" \
        in_encl xb "$TESSERA_BIN" --socket "$TESSERA_SOCKET" segments
check_fails "and nothing but XEMEM goes through the XEMEM socket" "only XEMEM requests" \
        in_encl xb "$TESSERA_BIN" --socket "$TESSERA_XEMEM_SOCKET" create --name evil --cpus 1 --memory 64M
check_fails "not even for root on the host" "only XEMEM requests" \
        "$TESSERA_BIN" --socket "$TESSERA_XEMEM_SOCKET" list
check "destroy xb" tessera destroy xb

# ---- an enclave with a root of its own ----
ROOT=$T/root
mkdir -p "$ROOT"/{bin,proc,sys,dev,tmp,etc,run} # /run: where the XEMEM directory is bound
cp "$(command -v busybox)" "$ROOT/bin/busybox"
for a in sh ls test cat sleep; do ln -s busybox "$ROOT/bin/$a"; done
copy_with_libraries() { # FILE: into ROOT at its own path, with every library ldd names and the loader
        local f
        for f in "$1" $(ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
                mkdir -p "$ROOT$(dirname "$f")" && cp -L "$f" "$ROOT$f" || return 1
        done
}
check "a root directory: busybox, xemem-tool and its libraries" copy_with_libraries "$TOOL"
check "enclave xr with that root" tessera create --name xr --cpus 1 --memory 256M --root "$ROOT"
check_eq "inside, /run/tessera holds only the XEMEM directory" "xemem" "$(tessera launch xr --wait -- ls /run/tessera)"
check "the XEMEM socket is at the library's default path inside" \
        tessera launch xr --wait -- test -S /run/tessera/xemem/xemem.sock
check "xr exports a static buffer (no socket in its environment)" \
        bash -c "tessera launch xr --name e-root -- '$TOOL' export '$P-root' 30000 0600 static 60 >/dev/null"
check "it printed its segment id" wait_log xr e-root '^segid'
check_eq "tessera segments: exported by enclave xr" xr "$(seg_field "$P-root" enclave)"
check "a host process attaches it read-write" "$TOOL" check "$P-root" rw
check "xa attaches it read-only" in_encl xa "$TOOL" check "$P-root" ro

host_export() { # NAME ARGS...: a host exporter in the background; HOST_PID
        "$TOOL" export "$@" >"$T/$1.out" 2>&1 &
        HOST_PID=$!
        CLEANUP_HOOKS+=("kill -KILL $HOST_PID")
        for _ in $(seq 100); do
                grep -q '^segid' "$T/$1.out" && return 0
                sleep 0.05
        done
        sed 's/^/#   /' "$T/$1.out"
        return 1
}
host_export "$P-host" 30000 0644 malloc 60
ok $? "a host process exports malloc'd memory"
HOST_EXPORTER=$HOST_PID
check "xr attaches the host's segment read-write" tessera launch xr --wait -- "$TOOL" check "$P-host" rw
host_export "$P-hwhole" 50000 0600 whole 30
ok $? "a host process exports its whole address space"
check_out "xr attaches the host's buffer by address through libxpmem" "via libxpmem" \
        tessera launch xr --wait -- "$TOOL" check "$P-hwhole" rw
check "xr stops it" tessera launch xr --wait -- "$TOOL" stop "$P-hwhole"
wait "$HOST_PID"
check_eq "the host's whole-address-space exporter ends with 0" 0 $?

# ---- tesserad restarts; exporters do not notice ----
stop_daemon
start_daemon
ok $? "tesserad restarts (SIGTERM) while exporters run"
check_eq "the segments are still listed" "$P-malloc $P-root $P-host" \
        "$(seg_field "$P-malloc" name) $(seg_field "$P-root" name) $(seg_field "$P-host" name)"
check "a new host attacher of xa's segment sees live data" "$TOOL" check "$P-malloc" rw
check "xr reaches the new daemon through its bound directory" \
        tessera launch xr --wait -- "$TOOL" check "$P-host" rw
kill9_daemon
kill -KILL "$HOST_EXPORTER"
wait "$HOST_EXPORTER" 2>/dev/null
start_daemon
ok $? "tesserad restarts after SIGKILL (the host exporter was killed meanwhile)"
check "the dead exporter's segment was dropped at the restart" seg_gone "$P-host"
check "a host process attaches xr's segment through the new daemon" "$TOOL" check "$P-root" rw
check "xa attaches xr's segment" in_encl xa "$TOOL" check "$P-root" rw
check "xr attaches xa's" tessera launch xr --wait -- "$TOOL" check "$P-malloc" ro
check "kill xa's exporter after the restart" tessera kill xa e-malloc --signal KILL
check "its segment goes: the new daemon watches it" seg_gone "$P-malloc"
check "destroy xr while its application exports" tessera destroy xr
check "the destroyed enclave's segment is gone" seg_gone "$P-root"

# ---- a hostile client ----
fds_before=$(ls /proc/"$DAEMON_PID"/fd | wc -l)
run_tap "hostile client" timeout 60 python3 "$HOSTILE" "$TESSERA_XEMEM_SOCKET"
check "tesserad still answers tessera node" tessera node
check_eq "it is the same daemon" "$DAEMON_PID" \
        "$(tessera --json node | python3 -c 'import json,sys; print(json.load(sys.stdin)["daemon"]["pid"])')"
fds_back() {
        for _ in $(seq 60); do
                [ "$(ls /proc/"$DAEMON_PID"/fd | wc -l)" -le "$fds_before" ] && return 0
                sleep 0.05
        done
        ls -l /proc/"$DAEMON_PID"/fd | sed 's/^/#   /'
        return 1
}
check "its descriptors are back to $fds_before: nothing the client sent was kept" fds_back

# ---- nothing left behind ----
check_eq "no segment is listed" "[]" \
        "$(tessera --json segments | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))')"
check_eq "the store holds no segment, grant or attachment" "0 0 0" "$(python3 -c '
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
print(*[db.execute("SELECT COUNT(*) FROM " + t).fetchone()[0] for t in ("segments", "grants", "attachments")])' \
        "$T/state/tessera.db")"
check_eq "the daemon holds no memfd" 0 "$(ls -l /proc/"$DAEMON_PID"/fd | grep -c memfd)"
check "destroy xa" tessera destroy xa
check "the ledger agrees with the kernel" tessera check
finish
