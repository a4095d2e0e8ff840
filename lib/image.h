/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Root filesystem images for enclaves: what a spec's `root:` names, and the
 * directory tesserad hands to the sandbox as the enclave's root.
 *
 *   root: /srv/sim                       a directory used in place; a regular file is a squashfs
 *                                        image, a directory with oci-layout an OCI layout (tag
 *                                        latest), one with config.json and rootfs/ an OCI bundle
 *   root: {dir: /srv/sim}                a directory, used in place
 *   root: {dir: /srv/sim, overlay: discard}   ... with a writable overlay on top
 *   root: {squashfs: /srv/img.sqfs, overlay: discard|keep}
 *   root: {oci: /srv/layout, tag: v1, overlay: discard|keep}    an OCI image layout or bundle
 *   root: {bundle: /srv/bundle}          an OCI runtime bundle: its rootfs (config.json root.path), in place
 *
 * Images with an overlay (squashfs, OCI layouts, and directories that ask for
 * one) are mounted in tesserad's mount namespace, all under
 * STATE/roots/<enclave>/:
 *   lower/    the squashfs, mounted read-only from a loop device that frees itself
 *   upper/    the enclave's writes  } kept across daemon and enclave restarts;
 *   work/     overlayfs's scratch   } at release removed, unless `overlay: keep`
 *   merged/   the overlay: the enclave's root
 * An OCI layout is unpacked once (by umoci, after checking every digest) into
 * STATE/images/sha256-<manifest digest>/rootfs, a cache shared by every enclave
 * of that image and never written to: it is the overlay's lower layer.  Only
 * mounts at those exact paths are ever unmounted.
 */
#ifndef TESSERA_IMAGE_H
#define TESSERA_IMAGE_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "tessera/tessera.h"

#define IMAGE_TAG_MAX     128
#define IMAGE_DEFAULT_TAG "latest"

enum image_kind {
        IMAGE_AUTO, /* a plain path: its kind is found on disk at prepare time (image_ref_resolve) */
        IMAGE_DIR,
        IMAGE_SQUASHFS,
        IMAGE_OCI_LAYOUT,
        IMAGE_OCI_BUNDLE,
        IMAGE_OCI, /* `oci:` before resolving: a layout or a bundle */
};

enum image_overlay {
        IMAGE_OVERLAY_DEFAULT, /* none for a directory or a bundle, discard for the others */
        IMAGE_OVERLAY_DISCARD, /* removed at release */
        IMAGE_OVERLAY_KEEP,    /* left for the administrator at release */
};

struct image_ref {
        enum image_kind kind;
        char path[PATH_MAX];
        char tag[IMAGE_TAG_MAX]; /* OCI layouts: "latest" unless given; "" otherwise */
        enum image_overlay overlay;
};

/*
 * The spec's `root:` value: a string (an absolute path, kind IMAGE_AUTO) or an
 * object with exactly one of dir/squashfs/oci/bundle plus tag/overlay.  Only
 * the syntax is checked (no file is looked at).  Messages name the value, not
 * the field (the spec parser puts "root: " in front), and err->field is "root".
 */
int image_ref_from_json(json_t *root_field, struct image_ref *ret, struct tessera_error *err);
/* The same value back (a string for IMAGE_AUTO, else an object); NULL when out of memory. */
json_t *image_ref_to_json(const struct image_ref *r);
/* "squashfs /srv/img.sqfs (overlay: keep)", for messages and listings. */
void image_ref_describe(const struct image_ref *r, char *buf, size_t n);
const char *image_kind_name(enum image_kind k);

/*
 * Looks at the disk: IMAGE_AUTO and IMAGE_OCI become a concrete kind, and the
 * image is checked enough to give one clear error before anything is made
 * (squashfs superblock, layout's oci-layout and index.json and tag, bundle's
 * config.json and rootfs).  Blob digests are checked by image_prepare.
 */
int image_ref_resolve(const struct image_ref *r, struct image_ref *ret, struct tessera_error *err);

/*
 * Makes the enclave's root directory (mounted on the host, in tesserad's mount
 * namespace) and writes its path to ret_root.  Idempotent: called again, after
 * a daemon restart, or after a reboot that dropped the mounts, it finds what is
 * there, mounts what is missing and keeps the upper layer.  An overlay
 * already mounted is returned as it is, without looking at the image again
 * (it may have changed or gone).  An upper layer left by a kept overlay of an
 * earlier enclave of the same name is reused.  On failure everything this call
 * made is undone in reverse and nothing else is touched.
 * `enclave` must be a valid name (name_is_valid); state_dir an absolute path.
 */
int image_prepare(const struct image_ref *r, const char *state_dir, const char *enclave, char *ret_root, size_t n,
                  struct tessera_error *err);

/*
 * Unmounts and removes what image_prepare made.  Idempotent: 0 when nothing is
 * there (a directory used in place has nothing).  With `overlay: keep` the
 * upper and work directories stay and it returns 1 (image_roots_path() says
 * where).  Busy mounts are detached rather than failing the destroy.
 */
int image_release(const struct image_ref *r, const char *state_dir, const char *enclave, struct tessera_error *err);

/* STATE/roots/<enclave>: where an enclave's overlay lives (and stays, when kept). */
int image_roots_path(const char *state_dir, const char *enclave, char *buf, size_t n, struct tessera_error *err);

#endif
