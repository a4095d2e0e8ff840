#!/usr/bin/env bash
# SO_PEERCRED: root administers; a tenant sees and manages only what it owns.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || { skip "needs root to act as two users"; finish; exit; }
command -v setpriv >/dev/null || { skip "setpriv (util-linux) missing"; finish; exit; }
chmod 755 "$T"
as_nobody() { setpriv --reuid 65534 --regid 65534 --clear-groups "$TESSERA_BIN" "$@"; }

start_daemon; ok $? "tesserad starts"
check "root creates an enclave for nobody" tessera create --name mine --cpus 1 --memory 128M --owner nobody
check "root creates its own enclave" tessera create --name roots --cpus 1 --memory 128M
check_eq "the tenant lists only its own enclave" "mine" \
        "$(as_nobody --json list | python3 -c 'import json,sys; print(" ".join(e["name"] for e in json.load(sys.stdin)))')"
check_eq "the owner is recorded" nobody "$(enclave_field mine owner)"
check_eq "the tenant sees root's core as 'other'" "1" \
        "$(as_nobody --json cpus | python3 -c 'import json,sys; print(sum(c["owner"]=="other" for c in json.load(sys.stdin)))')"
check "the tenant pings its enclave" as_nobody ping mine
check_fails "the tenant cannot see root's enclave" "no enclave named 'roots'" as_nobody ping roots
check_fails "the tenant cannot destroy root's enclave" "no enclave named 'roots'" as_nobody destroy roots
check_fails "the tenant cannot create enclaves" "only root" as_nobody create --name t2 --cpus 1 --memory 128M
check_fails "the tenant cannot take node resources" "only root" as_nobody assign mine --memory 128M
check_fails "the tenant cannot run the ledger check" "only root" as_nobody check
check "the tenant destroys its own enclave" as_nobody destroy mine
check_eq "root's enclave is untouched" running "$(enclave_field roots state)"
finish
