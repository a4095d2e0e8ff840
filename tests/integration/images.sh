#!/usr/bin/env bash
# Enclaves whose root is an image: a squashfs with a writable overlay thrown
# away or kept, an OCI image layout unpacked once and shared, an OCI bundle;
# a malformed image is refused before anything is made.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || { skip "needs root"; finish; exit; }
command -v mksquashfs >/dev/null || { skip "mksquashfs missing (squashfs-tools)"; finish; exit; }
command -v umoci >/dev/null || { skip "umoci missing"; finish; exit; }
IMG=$T/images
mkdir -p "$IMG"
"$TESSERA_SRC/tests/data/images/build.sh" "$IMG" >/dev/null 2>&1 || { ok 1 "images build"; finish; exit; }
chmod 711 "$T"
start_daemon; ok $? "tesserad starts"
root_of() { echo "/proc/$(enclave_field "$1" supervisor_pid)/root"; }

check "a squashfs root" tessera create --name sq --cpus 1 --memory 128M --root "$IMG/img.sqfs"
check "its root has busybox" test -x "$(root_of sq)/bin/busybox"
check "it is mounted from a loop device" grep -q "$T/state/roots/sq" /proc/self/mountinfo
check "its root is writable (an overlay)" bash -c "echo hi > $(root_of sq)/tmp-file"
check "the squashfs file is unchanged" bash -c "unsquashfs -l $IMG/img.sqfs | grep -vq tmp-file"
check "destroy" tessera destroy sq
check_eq "nothing of it is mounted" "" "$(grep "$T/state/roots" /proc/self/mountinfo)"
check "its overlay is thrown away" test ! -e "$T/state/roots/sq"

cat >"$T/keep.yaml" <<YAML
name: kept
cpus: 1
memory: 128M
root: {squashfs: $IMG/img.sqfs, overlay: keep}
YAML
check "a squashfs root whose overlay is kept (YAML)" tessera create "$T/keep.yaml"
check "write into it" bash -c "echo data > $(root_of kept)/kept-file"
check "destroy" tessera destroy kept
check "the overlay's upper layer stays for the admin" test -f "$T/state/roots/kept/upper/kept-file"
check_eq "but nothing is mounted" "" "$(grep "$T/state/roots" /proc/self/mountinfo)"

cat >"$T/oci.yaml" <<YAML
name: o1
cpus: 1
memory: 128M
root: {oci: $IMG/layout, tag: v2}
YAML
check "an OCI layout root (tag v2)" tessera create "$T/oci.yaml"
check "its second layer is applied" test -e "$(root_of o1)/etc/v2"
check "its whiteout removed /etc/hostname" test ! -e "$(root_of o1)/etc/hostname"
check_eq "the layout is unpacked once into the cache" 1 "$(ls -d "$T"/state/images/sha256-* | wc -l)"
check "destroy" tessera destroy o1

check "an OCI bundle root" tessera create --name b1 --cpus 1 --memory 128M --root "$IMG/bundle"
check "its rootfs is the root" test -x "$(root_of b1)/bin/busybox"
check "destroy" tessera destroy b1

check_fails "a squashfs with a bad magic is refused" "not a squashfs image" \
        tessera create --name bad --cpus 1 --memory 128M --root "$IMG/bad-magic.sqfs"
check_fails "a missing tag names the tags there are" "no manifest tagged 'nope'" \
        bash -c "sed 's/tag: v2/tag: nope/; s/name: o1/name: bad/' $T/oci.yaml > $T/bad.yaml; tessera create $T/bad.yaml"
check_fails "a layer whose digest does not match is refused" "digest mismatch" \
        bash -c "sed 's|$IMG/layout|$IMG/layout-bad-digest|; s/tag: v2/tag: latest/; s/name: o1/name: bad/' $T/oci.yaml > $T/bad2.yaml; tessera create $T/bad2.yaml"
check_eq "the refusals left no enclave" "" "$(enclave_field bad state)"
check_eq "and nothing mounted" "" "$(grep "$T/state/roots" /proc/self/mountinfo)"
check "the ledger agrees with the kernel" tessera check
finish
