/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Root filesystem images against the real kernel: `root:` parsing, a busybox
 * directory, a squashfs image on a loop device with an overlay, an OCI layout
 * unpacked by umoci into the cache, an OCI bundle, and broken images.  The
 * images are built at test time by tests/data/images/build.sh into a mkdtemp
 * directory that also serves as the state directory; every check looks for
 * leftovers (mounts under it, loop devices backed by its images, directories).
 * Needs root.  Everything mounted under the temp dir is unmounted at the end.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tessera-build.h"
#include "image.h"
#include "tap.h"
#include "util.h"

static char tmpdir[PATH_MAX]; /* canonical */
static char data[PATH_MAX];   /* the built images */
static char state[PATH_MAX];  /* the state directory */
static int enclave_seq;

/* ---- helpers ---- */

static void builder_path(char *buf, size_t n)
{
        const char *src = getenv("TESSERA_SRC");
        if (src && src[0]) {
                snprintf(buf, n, "%s/tests/data/images/build.sh", src);
                return;
        }
        char file[] = __FILE__;
        const char *dir = dirname(file);
        snprintf(buf, n, "%s%s/../data/images/build.sh", dir[0] == '/' ? "" : TESSERA_BUILDDIR "/", dir);
}

static void data_file(const char *name, char *buf, size_t n)
{
        snprintf(buf, n, "%s/%s", data, name);
}

static bool exists(const char *fmt_dir, const char *name)
{
        char p[PATH_MAX * 2];
        snprintf(p, sizeof(p), "%s/%s", fmt_dir, name);
        struct stat st;
        return lstat(p, &st) == 0;
}

static bool path_exists(const char *p)
{
        struct stat st;
        return lstat(p, &st) == 0;
}

static void new_enclave(char *buf, size_t n)
{
        snprintf(buf, n, "img-%d-%d", (int)getpid(), ++enclave_seq);
}

static void roots_of(const char *enclave, char *buf, size_t n)
{
        snprintf(buf, n, "%s/roots/%s", state, enclave);
}

/* Mount points under `prefix` (canonical) in our mount namespace. */
static int mounts_under(const char *prefix)
{
        FILE *f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                return -1;
        char line[8192];
        int count = 0;
        size_t plen = strlen(prefix);
        while (fgets(line, sizeof(line), f)) {
                char mp[4096];
                if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) == 1 && strncmp(mp, prefix, plen) == 0 &&
                    (mp[plen] == '\0' || mp[plen] == '/'))
                        count++;
        }
        fclose(f);
        return count;
}

static int mounts_at_path(const char *path, const char *fstype)
{
        FILE *f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                return -1;
        char line[8192];
        int count = 0;
        while (fgets(line, sizeof(line), f)) {
                char mp[4096], *dash = strstr(line, " - ");
                char type[64] = "";
                if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) == 1 && STREQ(mp, path) && dash &&
                    sscanf(dash, " - %63s", type) == 1 && STREQ(type, fstype))
                        count++;
        }
        fclose(f);
        return count;
}

/* Loop devices whose backing file is `image`. */
static int loops_backing(const char *image)
{
        char canon[PATH_MAX];
        if (!realpath(image, canon))
                snprintf(canon, sizeof(canon), "%s", image);
        DIR *d = opendir("/sys/block");
        if (!d)
                return -1;
        int count = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strncmp(de->d_name, "loop", 4) != 0)
                        continue;
                char p[PATH_MAX], backing[PATH_MAX];
                snprintf(p, sizeof(p), "/sys/block/%s/loop/backing_file", de->d_name);
                if (read_file_at(AT_FDCWD, p, backing, sizeof(backing), NULL) > 0 && STREQ(backing, canon))
                        count++;
        }
        closedir(d);
        return count;
}

/* Autoclear runs when the last user of the loop device lets go; give the kernel a moment (bounded). */
static int loops_backing_settled(const char *image)
{
        int n = loops_backing(image);
        for (int i = 0; i < 200 && n > 0; i++) {
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
                n = loops_backing(image);
        }
        return n;
}

static bool has_busybox(const char *root)
{
        char p[PATH_MAX + 16];
        snprintf(p, sizeof(p), "%s/bin/busybox", root);
        return access(p, X_OK) == 0;
}

static bool write_text(const char *dir, const char *name, const char *text)
{
        char p[PATH_MAX * 2];
        snprintf(p, sizeof(p), "%s/%s", dir, name);
        FILE *f = fopen(p, "we");
        if (!f)
                return false;
        bool good = fputs(text, f) >= 0;
        return fclose(f) == 0 && good;
}

static bool parse(const char *json_text, struct image_ref *ref, struct tessera_error *err)
{
        json_error_t jerr;
        json_t *j = json_loads(json_text, JSON_DECODE_ANY, &jerr);
        if (!j)
                return false;
        tessera_error_clear(err);
        int r = image_ref_from_json(j, ref, err);
        json_decref(j);
        return r == 0;
}

/* A ref from a format and paths: ref_of(&r, "{\"squashfs\": \"%s\"}", path). */
__attribute__((format(printf, 2, 3))) static struct image_ref ref_of(struct tessera_error *err, const char *fmt, ...)
{
        char text[PATH_MAX * 2];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        struct image_ref r;
        if (!parse(text, &r, err))
                memset(&r, 0, sizeof(r));
        return r;
}

static void expect_error(int rc, const struct tessera_error *err, const char *needle, const char *what)
{
        ok(rc < 0 && strstr(err->msg, needle) != NULL, "%s: \"%s\" (rc %d)", what, err->msg, rc);
}

/* After a failure or a release: nothing of `enclave` is left, and no loop device holds `image`. */
static void expect_nothing_left(const char *enclave, const char *image, const char *what)
{
        char roots[PATH_MAX];
        roots_of(enclave, roots, sizeof(roots));
        ok(!path_exists(roots) && mounts_under(roots) == 0, "%s: no %s and no mount under it", what, roots);
        if (image)
                ok(loops_backing_settled(image) == 0, "%s: no loop device backed by %s", what, image);
}

/* ---- parsing ---- */

static void test_parse(void)
{
        struct tessera_error err = {0};
        struct image_ref r;
        ok(parse("\"/srv/sim\"", &r, &err) && r.kind == IMAGE_AUTO && STREQ(r.path, "/srv/sim") &&
                   r.overlay == IMAGE_OVERLAY_DEFAULT,
           "a string is a path whose kind is found later");
        ok(parse("{\"squashfs\": \"/srv/img.sqfs\", \"overlay\": \"keep\"}", &r, &err) && r.kind == IMAGE_SQUASHFS &&
                   r.overlay == IMAGE_OVERLAY_KEEP && !r.tag[0],
           "squashfs with a kept overlay");
        ok(parse("{\"oci\": \"/srv/layout\"}", &r, &err) && r.kind == IMAGE_OCI && STREQ(r.tag, "latest"),
           "oci defaults to tag latest");
        ok(parse("{\"oci\": \"/srv/layout\", \"tag\": \"v1.2_rc-3\", \"overlay\": \"discard\"}", &r, &err) &&
                   STREQ(r.tag, "v1.2_rc-3") && r.overlay == IMAGE_OVERLAY_DISCARD,
           "oci with a tag");
        ok(parse("{\"bundle\": \"/srv/b\"}", &r, &err) && r.kind == IMAGE_OCI_BUNDLE, "bundle");
        ok(parse("{\"dir\": \"/srv/d\", \"overlay\": \"discard\"}", &r, &err) && r.kind == IMAGE_DIR &&
                   r.overlay == IMAGE_OVERLAY_DISCARD,
           "dir with an overlay");

        static const char *const round[] = {
                "\"/srv/sim\"",
                "{\"squashfs\": \"/srv/img.sqfs\", \"overlay\": \"keep\"}",
                "{\"oci\": \"/srv/layout\", \"tag\": \"v2\"}",
                "{\"bundle\": \"/srv/b\"}",
                "{\"dir\": \"/srv/d\", \"overlay\": \"discard\"}",
        };
        for (size_t i = 0; i < ELEMENTSOF(round); i++) {
                struct image_ref a, b;
                json_t *in = json_loads(round[i], JSON_DECODE_ANY, NULL);
                bool good = parse(round[i], &a, &err);
                json_t *out = good ? image_ref_to_json(&a) : NULL;
                good = good && out && json_equal(in, out) && image_ref_from_json(out, &b, &err) == 0 &&
                       memcmp(&a, &b, sizeof(a)) == 0;
                char *text = out ? json_dumps(out, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
                ok(good, "round trip %s -> %s", round[i], text ? text : "(null)");
                free(text);
                json_decref(in);
                json_decref(out);
        }
        char d[256];
        parse("{\"oci\": \"/srv/layout\", \"tag\": \"v2\", \"overlay\": \"keep\"}", &r, &err);
        image_ref_describe(&r, d, sizeof(d));
        ok(STREQ(d, "oci /srv/layout:v2 (overlay: keep)"), "describe: %s", d);

        static const struct {
                const char *json, *needle;
        } bad[] = {
                {"\"srv/sim\"", "not an absolute path"},
                {"\"/srv/../etc\"", "\"..\" component"},
                {"42", "must be a path or a mapping"},
                {"{\"squashfs\": \"/a\", \"oci\": \"/b\"}", "name one image"},
                {"{\"squashfs\": \"/a\", \"tag\": \"v1\"}", "only an oci image has tags"},
                {"{\"oci\": \"/a\", \"tag\": \"-v1\"}", "is not a tag"},
                {"{\"oci\": \"/a\", \"tag\": \"a/b\"}", "is not a tag"},
                {"{\"squashfs\": \"/a\", \"overlay\": \"maybe\"}", "not an overlay policy (use discard or keep)"},
                {"{\"squashfs\": \"/a\", \"overlay\": true}", "not an overlay policy"},
                {"{\"overlay\": \"keep\"}", "no image named"},
                {"{\"dir\": \"/a\", \"size\": 1}", "size: unknown key"},
                {"{\"dir\": 7}", "dir: must be a path"},
                {"{\"squashfs\": \"img.sqfs\"}", "squashfs: \"img.sqfs\" is not an absolute path"},
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                json_t *j = json_loads(bad[i].json, JSON_DECODE_ANY, NULL);
                tessera_error_clear(&err);
                int rc = image_ref_from_json(j, &r, &err);
                json_decref(j);
                ok(rc == -EINVAL && strstr(err.msg, bad[i].needle) && STREQ(err.field, "root"), "%s is refused: %s",
                   bad[i].json, err.msg);
        }
}

/* ---- what a path holds ---- */

static void test_resolve(void)
{
        struct tessera_error err = {0};
        struct image_ref in, out;
        char p[PATH_MAX];
        static const struct {
                const char *name;
                enum image_kind kind;
        } cases[] = {
                {"rootdir", IMAGE_DIR},
                {"img.sqfs", IMAGE_SQUASHFS},
                {"layout", IMAGE_OCI_LAYOUT},
                {"bundle", IMAGE_OCI_BUNDLE},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                data_file(cases[i].name, p, sizeof(p));
                if (!path_exists(p)) {
                        skip("%s was not built (see build.sh's messages)", cases[i].name);
                        continue;
                }
                in = ref_of(&err, "\"%s\"", p);
                int rc = image_ref_resolve(&in, &out, &err);
                ok(rc == 0 && out.kind == cases[i].kind, "a plain path to %s is a %s (%s)", cases[i].name,
                   image_kind_name(cases[i].kind), rc == 0 ? image_kind_name(out.kind) : err.msg);
        }
        data_file("layout", p, sizeof(p));
        in = ref_of(&err, "\"%s\"", p);
        ok(image_ref_resolve(&in, &out, &err) == 0 && STREQ(out.tag, "latest"), "a plain layout path uses tag latest");
        data_file("bundle", p, sizeof(p));
        in = ref_of(&err, "{\"oci\": \"%s\"}", p);
        ok(image_ref_resolve(&in, &out, &err) == 0 && out.kind == IMAGE_OCI_BUNDLE, "oci: finds a bundle too");

        data_file("nonexistent", p, sizeof(p));
        in = ref_of(&err, "\"%s\"", p);
        expect_error(image_ref_resolve(&in, &out, &err), &err, "no such file or directory", "a missing path");
        data_file("rootdir", p, sizeof(p));
        in = ref_of(&err, "{\"oci\": \"%s\"}", p);
        expect_error(image_ref_resolve(&in, &out, &err), &err, "neither an OCI image layout", "oci: on a plain dir");
        in = ref_of(&err, "{\"squashfs\": \"%s\"}", p);
        expect_error(image_ref_resolve(&in, &out, &err), &err, "not a regular file", "squashfs: on a directory");
        data_file("layout", p, sizeof(p));
        in = ref_of(&err, "{\"oci\": \"%s\", \"tag\": \"nope\"}", p);
        char want[PATH_MAX + 128];
        snprintf(want, sizeof(want), "%s/index.json: no manifest tagged 'nope' (tags: latest, v2)", p);
        expect_error(image_ref_resolve(&in, &out, &err), &err, want, "a missing tag lists the tags");
        ok(STREQ(err.field, "root"), "errors point at the root field");
}

/* ---- directories and bundles in place ---- */

static void test_in_place(void)
{
        struct tessera_error err = {0};
        char e[64], root[PATH_MAX], dir[PATH_MAX], want[PATH_MAX + 16];
        new_enclave(e, sizeof(e));
        data_file("rootdir", dir, sizeof(dir));
        struct image_ref r = ref_of(&err, "\"%s\"", dir);
        int rc = image_prepare(&r, state, e, root, sizeof(root), &err);
        ok(rc == 0 && STREQ(root, dir) && has_busybox(root), "a directory is used in place (%s)",
           rc == 0 ? root : err.msg);
        ok(image_release(&r, state, e, &err) == 0 && has_busybox(dir), "its release leaves it alone");
        expect_nothing_left(e, NULL, "directory");

        data_file("bundle", dir, sizeof(dir));
        snprintf(want, sizeof(want), "%s/rootfs", dir);
        r = ref_of(&err, "{\"bundle\": \"%s\"}", dir);
        rc = image_prepare(&r, state, e, root, sizeof(root), &err);
        ok(rc == 0 && STREQ(root, want) && has_busybox(root), "a bundle's rootfs is used in place (%s)",
           rc == 0 ? root : err.msg);
        r = ref_of(&err, "\"%s\"", dir);
        rc = image_prepare(&r, state, e, root, sizeof(root), &err);
        ok(rc == 0 && STREQ(root, want), "a plain path to a bundle too");
        ok(image_release(&r, state, e, &err) == 0 && has_busybox(want), "its release leaves it alone");
        expect_nothing_left(e, NULL, "bundle");
}

/* A directory with `overlay: discard`: writes land in the upper layer, never in the directory. */
static void test_dir_overlay(void)
{
        struct tessera_error err = {0};
        char e[64], root[PATH_MAX], dir[PATH_MAX], roots[PATH_MAX];
        new_enclave(e, sizeof(e));
        roots_of(e, roots, sizeof(roots));
        data_file("rootdir", dir, sizeof(dir));
        struct image_ref r = ref_of(&err, "{\"dir\": \"%s\", \"overlay\": \"discard\"}", dir);
        int rc = image_prepare(&r, state, e, root, sizeof(root), &err);
        ok(rc == 0 && has_busybox(root) && mounts_at_path(root, "overlay") == 1, "a directory under an overlay (%s)",
           rc == 0 ? root : err.msg);
        ok(write_text(root, "written", "x") && !exists(dir, "written") && exists(roots, "upper/written"),
           "a write lands in upper/, not in the directory");
        /* a tenant's tree far deeper than the remover recurses (it flattens by renames) */
        int fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        bool deep = fd >= 0;
        for (int i = 0; deep && i < 300; i++) {
                deep = mkdirat(fd, "d", 0755) == 0;
                int next = deep ? openat(fd, "d", O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
                close(fd);
                fd = next;
                deep = deep && fd >= 0;
        }
        if (fd >= 0)
                close(fd);
        ok(deep, "the enclave made a directory chain 300 deep");
        ok(image_release(&r, state, e, &err) == 0, "release: %s", err.msg);
        expect_nothing_left(e, NULL, "directory overlay");
}

/* ---- squashfs ---- */

static void test_squashfs(void)
{
        struct tessera_error err = {0};
        char img[PATH_MAX], e[64], roots[PATH_MAX], root[PATH_MAX], again[PATH_MAX], p[PATH_MAX + 16];
        data_file("img.sqfs", img, sizeof(img));
        new_enclave(e, sizeof(e));
        roots_of(e, roots, sizeof(roots));
        struct image_ref r = ref_of(&err, "{\"squashfs\": \"%s\", \"overlay\": \"discard\"}", img);
        int rc = image_prepare(&r, state, e, root, sizeof(root), &err);
        snprintf(p, sizeof(p), "%s/merged", roots);
        ok(rc == 0 && STREQ(root, p) && has_busybox(root), "squashfs prepared at %s", rc == 0 ? root : err.msg);
        snprintf(p, sizeof(p), "%s/lower", roots);
        ok(mounts_at_path(root, "overlay") == 1 && mounts_at_path(p, "squashfs") == 1 && loops_backing(img) == 1,
           "one overlay, one squashfs, one loop device");
        ok(write_text(root, "hello", "world") && exists(roots, "upper/hello") && !exists(p, "hello"),
           "a write lands in upper/");
        ok(write_text(p, "nope", "x") == false && errno == EROFS, "the squashfs is read-only");

        rc = image_prepare(&r, state, e, again, sizeof(again), &err);
        ok(rc == 0 && STREQ(again, root) && mounts_at_path(root, "overlay") == 1 &&
                   mounts_at_path(p, "squashfs") == 1 && loops_backing(img) == 1,
           "a second prepare finds it and mounts nothing more");

        /* a reboot drops the mounts and keeps the disk: prepare mounts again over the same upper */
        ok(umount2(root, UMOUNT_NOFOLLOW) == 0 && umount2(p, UMOUNT_NOFOLLOW) == 0 && loops_backing_settled(img) == 0,
           "test unmounts both (as a reboot would)");
        rc = image_prepare(&r, state, e, again, sizeof(again), &err);
        ok(rc == 0 && exists(root, "hello") && mounts_at_path(root, "overlay") == 1 && loops_backing(img) == 1,
           "prepare after a reboot remounts and keeps the writes (%s)", rc == 0 ? "ok" : err.msg);

        /* a crash between the two mounts: lower/ is mounted, merged/ is not */
        ok(umount2(root, UMOUNT_NOFOLLOW) == 0, "test unmounts the overlay only");
        rc = image_prepare(&r, state, e, again, sizeof(again), &err);
        ok(rc == 0 && mounts_at_path(p, "squashfs") == 1 && loops_backing_settled(img) == 1 && exists(root, "hello"),
           "prepare replaces a stale lower mount rather than stacking one (%s)", rc == 0 ? "ok" : err.msg);

        rc = image_release(&r, state, e, &err);
        ok(rc == 0, "release (discard): %s", rc == 0 ? "0" : err.msg);
        expect_nothing_left(e, img, "squashfs discard");
        ok(image_release(&r, state, e, &err) == 0, "a second release finds nothing and succeeds");

        /* a plain path to the image is found to be squashfs by its magic */
        r = ref_of(&err, "\"%s\"", img);
        rc = image_prepare(&r, state, e, root, sizeof(root), &err);
        ok(rc == 0 && has_busybox(root), "a plain path to a squashfs file (%s)", rc == 0 ? root : err.msg);
        /* a shell sitting in the root does not block the destroy: the mount is detached */
        int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
        bool moved = chdir(root) == 0;
        rc = image_release(&r, state, e, &err);
        ok(moved && rc == 0 && mounts_under(roots) == 0 && !path_exists(roots),
           "release while the root is busy detaches it (%s)", rc == 0 ? "ok" : err.msg);
        ok(fchdir(cwd) == 0 && loops_backing_settled(img) == 0, "the loop device goes once the last user leaves");
        close(cwd);
}

static void test_squashfs_keep(void)
{
        struct tessera_error err = {0};
        char img[PATH_MAX], e[64], roots[PATH_MAX], root[PATH_MAX], dir[PATH_MAX];
        data_file("img.sqfs", img, sizeof(img));
        new_enclave(e, sizeof(e));
        roots_of(e, roots, sizeof(roots));
        struct image_ref keep = ref_of(&err, "{\"squashfs\": \"%s\", \"overlay\": \"keep\"}", img);
        int rc = image_prepare(&keep, state, e, root, sizeof(root), &err);
        ok(rc == 0 && write_text(root, "kept", "1"), "keep: prepared and written (%s)", rc == 0 ? root : err.msg);
        rc = image_release(&keep, state, e, &err);
        ok(rc == 1 && exists(roots, "upper/kept") && exists(roots, "work") && !exists(roots, "merged") &&
                   !exists(roots, "lower") && mounts_under(roots) == 0,
           "release (keep) returns 1 and leaves upper/ and work/ only (rc %d)", rc);
        ok(loops_backing_settled(img) == 0, "keep: no loop device left");
        char where[PATH_MAX];
        ok(image_roots_path(state, e, where, sizeof(where), &err) == 0 && STREQ(where, roots),
           "image_roots_path says where: %s", where);

        /* a directory used in place never touches STATE/roots, even under the same name */
        data_file("rootdir", dir, sizeof(dir));
        struct image_ref plain = ref_of(&err, "\"%s\"", dir);
        ok(image_release(&plain, state, e, &err) == 0 && exists(roots, "upper/kept"),
           "a release for a directory root leaves another image's kept overlay alone");

        rc = image_prepare(&keep, state, e, root, sizeof(root), &err);
        ok(rc == 0 && exists(root, "kept"), "a later prepare of that name finds the kept writes");
        struct image_ref discard = ref_of(&err, "{\"squashfs\": \"%s\"}", img);
        ok(image_release(&discard, state, e, &err) == 0, "release (discard) of it");
        expect_nothing_left(e, img, "keep then discard");
}

/* ---- OCI layouts ---- */

/* The manifest digest index.json gives `tag`, read independently of the library. */
static bool manifest_hex(const char *layout, const char *tag, char hex[65])
{
        char p[PATH_MAX + 16];
        snprintf(p, sizeof(p), "%s/index.json", layout);
        json_t *j = json_load_file(p, 0, NULL);
        size_t i;
        json_t *m;
        bool found = false;
        json_array_foreach(json_object_get(j, "manifests"), i, m)
        {
                const char *t = json_string_value(
                        json_object_get(json_object_get(m, "annotations"), "org.opencontainers.image.ref.name"));
                const char *d = json_string_value(json_object_get(m, "digest"));
                if (t && d && STREQ(t, tag) && strlen(d) == 71) {
                        snprintf(hex, 65, "%s", d + 7);
                        found = true;
                }
        }
        json_decref(j);
        return found;
}

static int count_entries(const char *dir, const char *suffix)
{
        DIR *d = opendir(dir);
        if (!d)
                return 0;
        int n = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' && (!suffix || strstr(de->d_name, suffix)))
                        n++;
        closedir(d);
        return n;
}

static void test_oci_layout(void)
{
        struct tessera_error err = {0};
        char layout[PATH_MAX], e1[64], e2[64], e3[64], root1[PATH_MAX], root2[PATH_MAX], root3[PATH_MAX];
        char hex[65], cache[PATH_MAX * 2], images[PATH_MAX];
        data_file("layout", layout, sizeof(layout));
        snprintf(images, sizeof(images), "%s/images", state);
        new_enclave(e1, sizeof(e1));
        new_enclave(e2, sizeof(e2));
        new_enclave(e3, sizeof(e3));
        if (!manifest_hex(layout, "latest", hex)) {
                ok(0, "the built layout has a manifest tagged latest");
                return;
        }
        snprintf(cache, sizeof(cache), "%s/sha256-%s/rootfs", images, hex);

        struct image_ref r = ref_of(&err, "{\"oci\": \"%s\"}", layout);
        int rc = image_prepare(&r, state, e1, root1, sizeof(root1), &err);
        ok(rc == 0 && has_busybox(root1) && exists(root1, "etc/hostname"), "OCI layout prepared (%s)",
           rc == 0 ? root1 : err.msg);
        ok(has_busybox(cache) && count_entries(images, NULL) == 1 && count_entries(images, ".partial") == 0,
           "unpacked once into %s", cache);
        ok(mounts_at_path(root1, "overlay") == 1 && mounts_under(images) == 0,
           "an overlay on top; nothing mounted in the cache");
        ok(write_text(root1, "mine", "1") && !exists(cache, "mine"), "writes never reach the cache");
        struct stat before, after;
        stat(cache, &before);

        rc = image_prepare(&r, state, e2, root2, sizeof(root2), &err);
        stat(cache, &after);
        ok(rc == 0 && has_busybox(root2) && !exists(root2, "mine") && count_entries(images, NULL) == 1 &&
                   before.st_ino == after.st_ino,
           "a second enclave shares the cache and has its own upper (%s)", rc == 0 ? root2 : err.msg);

        struct image_ref v2 = ref_of(&err, "{\"oci\": \"%s\", \"tag\": \"v2\"}", layout);
        rc = image_prepare(&v2, state, e3, root3, sizeof(root3), &err);
        ok(rc == 0 && exists(root3, "etc/v2") && !exists(root3, "etc/hostname") && has_busybox(root3) &&
                   count_entries(images, NULL) == 2,
           "tag v2: its second layer added etc/v2 and whited out etc/hostname (%s)", rc == 0 ? root3 : err.msg);

        ok(image_prepare(&r, state, e1, root2, sizeof(root2), &err) == 0 && STREQ(root1, root2) &&
                   mounts_at_path(root1, "overlay") == 1,
           "prepare again is idempotent");

        ok(image_release(&r, state, e1, &err) == 0 && image_release(&r, state, e2, &err) == 0 &&
                   image_release(&v2, state, e3, &err) == 0,
           "release all three");
        expect_nothing_left(e1, NULL, "oci e1");
        expect_nothing_left(e2, NULL, "oci e2");
        expect_nothing_left(e3, NULL, "oci e3");
        ok(has_busybox(cache), "the cache stays for the next enclave of that image");

        /* the cache is keyed by the manifest digest: once unpacked, the layers are not read again */
        char broken[PATH_MAX];
        data_file("layout-missing-blob", broken, sizeof(broken));
        r = ref_of(&err, "{\"oci\": \"%s\"}", broken);
        rc = image_prepare(&r, state, e1, root1, sizeof(root1), &err);
        ok(rc == 0 && has_busybox(root1) && count_entries(images, NULL) == 2,
           "a layout missing a layer blob still runs from the cache of its manifest (%s)", rc == 0 ? "ok" : err.msg);
        ok(image_release(&r, state, e1, &err) == 0, "release it");
        expect_nothing_left(e1, NULL, "oci from cache");

        /* digests right, content not a tar: umoci fails, its message comes back, nothing half-unpacked stays */
        data_file("layout-bad-tar", broken, sizeof(broken));
        r = ref_of(&err, "{\"oci\": \"%s\"}", broken);
        rc = image_prepare(&r, state, e1, root1, sizeof(root1), &err);
        expect_error(rc, &err, "umoci raw unpack of tag 'latest' failed (exit status 1): create rootfs:",
                     "a layer umoci cannot apply");
        ok(strstr(err.msg, "invalid tar header") && count_entries(images, NULL) == 2 &&
                   count_entries(images, ".partial") == 0,
           "umoci's own words are in the error, and no cache entry or .partial is left");
        expect_nothing_left(e1, NULL, "umoci failure");
}

/* ---- broken images ---- */

/* A copy of img.sqfs whose id index points past the end: the superblock checks pass, the kernel refuses it. */
static bool make_kernel_refused_image(const char *good, const char *bad)
{
        char cmd[PATH_MAX * 3];
        snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", good, bad);
        if (system(cmd) != 0)
                return false;
        int fd = open(bad, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return false;
        uint8_t sb[96];
        bool done = pread(fd, sb, sizeof(sb), 0) == (ssize_t)sizeof(sb);
        uint64_t id_table = 0;
        for (int i = 7; i >= 0; i--)
                id_table = id_table << 8 | sb[48 + i];
        uint8_t junk[8];
        memset(junk, 0xff, sizeof(junk));
        done = done && pwrite(fd, junk, sizeof(junk), (off_t)id_table) == (ssize_t)sizeof(junk);
        close(fd);
        return done;
}

/* ---- broken images (run while the cache is cold: a cached manifest needs no layer blobs) ---- */

static void test_broken(void)
{
        struct tessera_error err = {0};
        char e[64], root[PATH_MAX], p[PATH_MAX], want[PATH_MAX + 128], images[PATH_MAX];
        new_enclave(e, sizeof(e));
        snprintf(images, sizeof(images), "%s/images", state);
        int caches = count_entries(images, NULL);

        struct image_ref r;
        data_file("img.sqfs", p, sizeof(p));
        if (!path_exists(p)) {
                skip("no squashfs images to break: mksquashfs is missing (apt package squashfs-tools)");
                goto layouts;
        }
        data_file("truncated.sqfs", p, sizeof(p));
        r = ref_of(&err, "{\"squashfs\": \"%s\"}", p);
        snprintf(want, sizeof(want), "%s: truncated squashfs image (the superblock says", p);
        expect_error(image_prepare(&r, state, e, root, sizeof(root), &err), &err, want, "truncated squashfs");
        expect_nothing_left(e, p, "truncated squashfs");

        new_enclave(e, sizeof(e));
        data_file("bad-magic.sqfs", p, sizeof(p));
        r = ref_of(&err, "{\"squashfs\": \"%s\"}", p);
        snprintf(want, sizeof(want), "%s: not a squashfs image (bad magic)", p);
        expect_error(image_prepare(&r, state, e, root, sizeof(root), &err), &err, want, "bad magic");
        expect_nothing_left(e, p, "bad magic");
        r = ref_of(&err, "\"%s\"", p);
        expect_error(image_prepare(&r, state, e, root, sizeof(root), &err), &err, want, "bad magic, plain path");

        char good[PATH_MAX];
        data_file("img.sqfs", good, sizeof(good));
        new_enclave(e, sizeof(e));
        data_file("refused.sqfs", p, sizeof(p));
        if (make_kernel_refused_image(good, p)) {
                r = ref_of(&err, "{\"squashfs\": \"%s\"}", p);
                expect_error(image_prepare(&r, state, e, root, sizeof(root), &err), &err,
                             "the kernel refused to mount it", "a corrupt squashfs the kernel refuses");
                expect_nothing_left(e, p, "kernel refusal (the loop device was attached, then freed)");
        } else {
                ok(0, "made a corrupt copy of img.sqfs");
        }

layouts:;

        char layout[PATH_MAX];
        new_enclave(e, sizeof(e));
        data_file("layout-missing-blob", layout, sizeof(layout));
        r = ref_of(&err, "{\"oci\": \"%s\"}", layout);
        expect_error(image_prepare(&r, state, e, root, sizeof(root), &err), &err, ": missing blob", "missing blob");
        ok(strstr(err.msg, layout) && strstr(err.msg, "/blobs/sha256/"), "the error names the blob: %s", err.msg);
        expect_nothing_left(e, NULL, "missing blob");

        new_enclave(e, sizeof(e));
        data_file("layout-bad-digest", layout, sizeof(layout));
        r = ref_of(&err, "{\"oci\": \"%s\"}", layout);
        expect_error(image_prepare(&r, state, e, root, sizeof(root), &err), &err,
                     ": digest mismatch (its content hashes to sha256:", "digest mismatch");
        expect_nothing_left(e, NULL, "digest mismatch");
        ok(count_entries(images, NULL) == caches, "no cache entry and no .partial left by broken layouts");

        new_enclave(e, sizeof(e));
        data_file("layout", layout, sizeof(layout));
        r = ref_of(&err, "{\"oci\": \"%s\", \"tag\": \"nope\"}", layout);
        expect_error(image_prepare(&r, state, e, root, sizeof(root), &err), &err,
                     "index.json: no manifest tagged 'nope' (tags: latest, v2)", "missing tag");
        expect_nothing_left(e, NULL, "missing tag");
}

/*
 * The overlay mount fails after the squashfs is mounted (upper/ on another
 * file system than work/): every step this call made is undone, what was
 * there before stays.
 */
static void test_undo(void)
{
        struct tessera_error err = {0};
        char img[PATH_MAX], e[64], roots[PATH_MAX], upper[PATH_MAX + 8], root[PATH_MAX];
        data_file("img.sqfs", img, sizeof(img));
        new_enclave(e, sizeof(e));
        roots_of(e, roots, sizeof(roots));
        snprintf(upper, sizeof(upper), "%s/upper", roots);
        if (mkdir_p(upper, 0755, NULL) < 0 || mount("tmpfs", upper, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m") < 0) {
                ok(0, "test mounts a tmpfs on %s: %s", upper, strerror(errno));
                return;
        }
        struct image_ref r = ref_of(&err, "{\"squashfs\": \"%s\"}", img);
        int rc = image_prepare(&r, state, e, root, sizeof(root), &err);
        expect_error(rc, &err, "cannot mount the overlay on", "an overlay the kernel refuses");
        ok(!exists(roots, "merged") && !exists(roots, "lower") && !exists(roots, "work") && exists(roots, "upper") &&
                   mounts_under(roots) == 1,
           "undone: merged/, lower/ and work/ gone and unmounted; the upper/ found there stays");
        ok(loops_backing_settled(img) == 0, "undone: the loop device freed itself");
        ok(umount2(upper, UMOUNT_NOFOLLOW) == 0 && rmdir(upper) == 0 && rmdir(roots) == 0, "test cleans its tmpfs");
}

/* overlayfs options cannot carry ',' or ':': refused before anything is mounted. */
static void test_odd_state_dir(void)
{
        struct tessera_error err = {0};
        char odd[PATH_MAX + 16], img[PATH_MAX], e[64], root[PATH_MAX], roots[PATH_MAX * 2];
        snprintf(odd, sizeof(odd), "%s/state,odd", tmpdir);
        data_file("img.sqfs", img, sizeof(img));
        new_enclave(e, sizeof(e));
        snprintf(roots, sizeof(roots), "%s/roots/%s", odd, e);
        struct image_ref r = ref_of(&err, "{\"squashfs\": \"%s\"}", img);
        int rc = image_prepare(&r, odd, e, root, sizeof(root), &err);
        expect_error(rc, &err, "contains ',', which overlayfs options cannot carry", "a state dir with a comma");
        ok(!path_exists(roots) && mounts_under(odd) == 0 && loops_backing_settled(img) == 0,
           "nothing mounted or left for it");
        r = ref_of(&err, "\"relative\"");
        ok(image_prepare(&r, "state", e, root, sizeof(root), &err) == -EINVAL &&
                   strstr(err.msg, "state directory must be an absolute path"),
           "a relative state dir is refused: %s", err.msg);
        ok(image_prepare(&r, state, "../x", root, sizeof(root), &err) == -EINVAL &&
                   strstr(err.msg, "is not an enclave name"),
           "an enclave name with a slash is refused: %s", err.msg);
}

/* Whatever a failed check left mounted under the temp dir (all of it ours), then the tree. */
static void cleanup(void)
{
        for (int pass = 0; pass < 8 && mounts_under(tmpdir) > 0; pass++) {
                FILE *f = fopen("/proc/self/mountinfo", "re");
                char line[8192], mp[4096];
                while (f && fgets(line, sizeof(line), f))
                        if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) == 1 && strncmp(mp, tmpdir, strlen(tmpdir)) == 0)
                                (void)umount2(mp, UMOUNT_NOFOLLOW | MNT_DETACH);
                if (f)
                        fclose(f);
        }
        char cmd[PATH_MAX + 64];
        snprintf(cmd, sizeof(cmd), "rm -rf --one-file-system '%s'", tmpdir);
        ok(mounts_under(tmpdir) == 0 && system(cmd) == 0 && !path_exists(tmpdir), "temp dir unmounted and removed");
}

int main(void)
{
        test_parse();
        if (geteuid() != 0) {
                skip("image tests need root (loop devices, mounts)");
                return done_testing();
        }
        char dir[] = "/tmp/tessera-image-XXXXXX";
        if (!mkdtemp(dir) || !realpath(dir, tmpdir)) {
                ok(0, "mkdtemp: %s", strerror(errno));
                return done_testing();
        }
        snprintf(data, sizeof(data), "%s/data", tmpdir);
        snprintf(state, sizeof(state), "%s/state", tmpdir);
        char builder[PATH_MAX], cmd[PATH_MAX * 3];
        builder_path(builder, sizeof(builder));
        snprintf(cmd, sizeof(cmd), "mkdir -p '%s' '%s' && bash '%s' '%s'", data, state, builder, data);
        if (!ok(system(cmd) == 0, "images built by %s", builder)) {
                cleanup();
                return done_testing();
        }
        diag("temp dir: %s", tmpdir);

        test_resolve();
        test_in_place();
        test_dir_overlay();
        char img[PATH_MAX];
        data_file("img.sqfs", img, sizeof(img));
        if (path_exists(img)) {
                test_squashfs();
                test_squashfs_keep();
                test_undo();
                test_odd_state_dir();
        } else {
                skip("no squashfs image: mksquashfs is missing (apt package squashfs-tools)");
        }
        test_broken();
        if (access("/usr/bin/umoci", X_OK) == 0 || access("/usr/local/bin/umoci", X_OK) == 0)
                test_oci_layout();
        else
                skip("umoci is missing (apt package umoci): OCI layouts cannot be unpacked");
        cleanup();
        return done_testing();
}
