#!/usr/bin/env bash
# Devices given at run time: a network interface moves into the enclave's net
# namespace and back; a block device node appears inside an enclave with its
# own root and the devices cgroup allows it, and both go away on release.
# Only devices this suite makes are used (a veth pair, a loop device).
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || { skip "needs root"; finish; exit; }
VETH=tvd$$
ip link add "$VETH" type veth peer name "${VETH}p" || { skip "cannot make a veth pair"; finish; exit; }
CLEANUP_HOOKS+=("ip link del $VETH")
start_daemon; ok $? "tesserad starts"

in_netns() { nsenter -t "$(enclave_field "$1" supervisor_pid)" -n ip -br link; }
check "an enclave with a net namespace" tessera create --name n1 --cpus 1 --memory 128M --namespaces net
check_fails "the host's default-route interface is never given" "default route" \
        tessera assign n1 --device "$(ip route show default | awk '{print $5; exit}')"
rootdev=$(findmnt -no SOURCE /)
if [ -b "$rootdev" ]; then
        check_fails "the disk holding / is never given" "never given away" tessera assign n1 --device "$rootdev"
else
        skip "the root filesystem is not on a block device here ($rootdev)"
fi
check "assign the veth" tessera assign n1 --device "$VETH"
check "the veth left the host" bash -c "! ip link show $VETH >/dev/null 2>&1"
check "the veth is inside the enclave" bash -c "nsenter -t $(enclave_field n1 supervisor_pid) -n ip link show $VETH"
check_eq "the enclave lists it" '["'$VETH'"]' "$(enclave_field n1 devices)"
check_eq "devices shows the owner" "n1" "$(tessera --json devices | python3 -c "import json,sys; print([d['owner'] for d in json.load(sys.stdin) if d['id']=='$VETH'][0])")"
check "create a second enclave" tessera create --name n2 --cpus 1 --memory 128M --namespaces net
check_fails "an owned interface is refused to another enclave" "owned by enclave 'n1'" tessera assign n2 --device "$VETH"
check "release it" tessera release n1 --device "$VETH"
check "the veth is back on the host" ip link show "$VETH"
check_fails "an enclave without a net namespace cannot take an interface" "no net namespace" \
        bash -c "tessera destroy n2 >/dev/null && tessera create --name plain --cpus 1 --memory 128M >/dev/null && tessera assign plain --device $VETH"
check "assign to n1 again, then destroy n1" bash -c "tessera assign n1 --device $VETH && tessera destroy n1"
check "destroy gives the interface back to the host" ip link show "$VETH"
tessera destroy plain >/dev/null 2>&1

# a loop device inside an enclave with its own root
ROOT=$T/root
mkdir -p "$ROOT"/{bin,proc,sys,dev,tmp,etc}
cp "$(command -v busybox)" "$ROOT/bin/busybox"
IMG=$T/disk.img
truncate -s 8M "$IMG"
LOOP=$(losetup -f --show "$IMG") || { skip "no loop device"; finish; exit; }
CLEANUP_HOOKS+=("losetup -d $LOOP")
majmin=$(printf '%d:%d' "0x$(stat -c %t "$LOOP")" "0x$(stat -c %T "$LOOP")")
check "an enclave with its own root" tessera create --name r1 --cpus 1 --memory 128M --root "$ROOT"
sup=$(enclave_field r1 supervisor_pid)
check "the enclave's /dev has no $LOOP yet" test ! -e "/proc/$sup/root$LOOP"
check "assign $LOOP" tessera assign r1 --device "$LOOP"
check "the node appears in the enclave's /dev" test -b "/proc/$sup/root$LOOP"
devlist=$(cat "$(cgroup_path devices r1 devices.list)" 2>/dev/null)
check "the devices cgroup allows b $majmin" grep -q "b $majmin rwm" <<<"$devlist"
check_fails "a file that is not a device node is refused" "not a" tessera assign r1 --device /etc/passwd
check "release $LOOP" tessera release r1 --device "$LOOP"
check "the node is gone from the enclave's /dev" test ! -e "/proc/$sup/root$LOOP"
check "the devices cgroup no longer allows it" bash -c "! grep -q 'b $majmin' $(cgroup_path devices r1 devices.list)"
check "destroy" tessera destroy r1
check "the ledger agrees with the kernel" tessera check
finish
