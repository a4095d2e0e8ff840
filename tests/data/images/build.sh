#!/usr/bin/env bash
# Builds the root filesystem images the image tests use, into OUT (made by the caller, e.g. with mktemp -d):
#   rootdir/                  a busybox-static root (bin/busybox, bin/sh, etc/hostname, empty mount points)
#   img.sqfs                  rootdir as squashfs                       (needs mksquashfs: squashfs-tools)
#   bad-magic.sqfs            img.sqfs with its magic overwritten
#   truncated.sqfs            the first 4 KiB of img.sqfs
#   layout/                   an OCI image layout written by hand: tag "latest" = one gzip layer (rootdir),
#                             tag "v2" = that layer plus a second one adding /etc/v2 and whiting out /etc/hostname
#   layout-missing-blob/      layout without the base layer's blob
#   layout-bad-digest/        layout whose base layer has one byte changed (same size, other digest)
#   layout-bad-tar/           a layout whose digests are right but whose one layer is gzip'd text, not a tar
#   bundle/                   an OCI runtime bundle: config.json and rootfs/
# Nothing here is committed as a binary: every file is made from the host's busybox at test time.
#   tests/data/images/build.sh OUT
set -euo pipefail
out=${1:?usage: build.sh OUT}
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "build.sh: $busybox not found (apt package busybox-static)" >&2; exit 1; }

sha256() { sha256sum "$1" | cut -d' ' -f1; }
oci=application/vnd.oci.image
size() { stat -c %s "$1"; }

make_rootdir() {
        local r=$out/rootdir
        mkdir -p "$r"/{bin,etc,proc,sys,dev,tmp,root}
        cp "$busybox" "$r/bin/busybox"
        ln -sf busybox "$r/bin/sh"
        echo image-test >"$r/etc/hostname"
        chmod 0755 "$r"
        chmod 1777 "$r/tmp"
}

make_squashfs() {
        command -v mksquashfs >/dev/null || { echo "build.sh: no mksquashfs, squashfs images skipped" >&2; return 0; }
        mksquashfs "$out/rootdir" "$out/img.sqfs" -noappend -quiet -no-progress -all-root >/dev/null
        cp "$out/img.sqfs" "$out/bad-magic.sqfs"
        printf 'XXXX' | dd of="$out/bad-magic.sqfs" bs=1 count=4 conv=notrunc status=none
        head -c 4096 "$out/img.sqfs" >"$out/truncated.sqfs"
}

lay=$out/layout # the layout blob(), layer() and image() write into

# blob FILE -> moves FILE into the layout's blobs under its digest, prints "DIGEST SIZE"
blob() {
        local f=$1 d s
        d=$(sha256 "$f")
        s=$(size "$f")
        mv "$f" "$lay/blobs/sha256/$d"
        echo "$d $s"
}

# layer DIR -> a gzip tar layer of DIR's content; prints "DIGEST SIZE DIFF_ID"
layer() {
        local dir=$1 tmp=$lay/tmp-layer
        tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$dir" -cf "$tmp.tar" .
        local diff_id
        diff_id=$(sha256 "$tmp.tar")
        gzip -n -c "$tmp.tar" >"$tmp.tar.gz"
        rm -f "$tmp.tar"
        echo "$(blob "$tmp.tar.gz") $diff_id"
}

# image LAYER... (each "DIGEST SIZE DIFF_ID") -> writes config and manifest blobs; prints "DIGEST SIZE"
image() {
        local layers="" diff_ids="" sep=""
        local l digest size diff_id
        for l in "$@"; do
                read -r digest size diff_id <<<"$l"
                layers+=$(printf '%s{"mediaType":"%s","digest":"sha256:%s","size":%s}' \
                        "$sep" "$oci.layer.v1.tar+gzip" "$digest" "$size")
                diff_ids+="$sep\"sha256:$diff_id\""
                sep=","
        done
        local cfg=$lay/tmp-config man=$lay/tmp-manifest
        printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},%s}' \
                "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diff_ids]}" >"$cfg"
        read -r digest size <<<"$(blob "$cfg")"
        printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"%s","digest":"sha256:%s","size":%s},%s}' \
                "$oci.manifest.v1+json" "$oci.config.v1+json" "$digest" "$size" "\"layers\":[$layers]" >"$man"
        blob "$man"
}

# new_layout DIR: an empty layout that blob() and friends write into
new_layout() {
        lay=$1
        mkdir -p "$lay/blobs/sha256"
        printf '{"imageLayoutVersion":"1.0.0"}' >"$lay/oci-layout"
}

# tagged TAG "DIGEST SIZE" -> one index.json entry
tagged() {
        local digest size
        read -r digest size <<<"$2"
        printf '{"mediaType":"%s","digest":"sha256:%s","size":%s,"annotations":{"%s":"%s"}}' \
                "$oci.manifest.v1+json" "$digest" "$size" "org.opencontainers.image.ref.name" "$1"
}

make_layout() {
        local l=$out/layout
        new_layout "$l"
        local base top
        base=$(layer "$out/rootdir")
        local extra=$out/layer2
        mkdir -p "$extra/etc"
        echo v2 >"$extra/etc/v2"
        : >"$extra/etc/.wh.hostname"
        top=$(layer "$extra")
        rm -rf "$extra"
        local latest v2
        latest=$(image "$base")
        v2=$(image "$base" "$top")
        printf '{"schemaVersion":2,"manifests":[%s,%s]}' "$(tagged latest "$latest")" "$(tagged v2 "$v2")" \
                >"$l/index.json"

        # the broken copies: the base layer is the first blob both manifests name
        local base_digest
        read -r base_digest _ <<<"$base"
        cp -a "$l" "$out/layout-missing-blob"
        rm "$out/layout-missing-blob/blobs/sha256/$base_digest"
        cp -a "$l" "$out/layout-bad-digest"
        local victim=$out/layout-bad-digest/blobs/sha256/$base_digest
        # flip the last byte (gzip's length trailer): same size, another digest
        local last
        last=$(tail -c 1 "$victim" | od -An -tu1 | tr -d ' ')
        # shellcheck disable=SC2059 # the format is the one octal escape that writes the byte
        printf "\\$(printf '%03o' $(((last + 1) % 256)))" | dd of="$victim" bs=1 seek=$(($(size "$victim") - 1)) \
                conv=notrunc status=none
}

make_bad_tar_layout() {
        new_layout "$out/layout-bad-tar"
        local text=$lay/tmp-text
        head -c 3000 /dev/zero | tr '\0' 'x' >"$text"
        local diff_id
        diff_id=$(sha256 "$text")
        gzip -n -c "$text" >"$text.gz"
        rm -f "$text"
        local manifest
        manifest=$(image "$(blob "$text.gz") $diff_id")
        printf '{"schemaVersion":2,"manifests":[%s]}' "$(tagged latest "$manifest")" >"$lay/index.json"
}

make_bundle() {
        mkdir -p "$out/bundle"
        cp -a "$out/rootdir" "$out/bundle/rootfs"
        printf '{"ociVersion":"1.0.2","root":{"path":"rootfs","readonly":false},%s}' \
                '"process":{"args":["/bin/sh"],"cwd":"/"}' >"$out/bundle/config.json"
}

make_rootdir
make_squashfs
make_layout
make_bad_tar_layout
make_bundle
