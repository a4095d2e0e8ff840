/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Root filesystem images: parsing `root:`, finding out what a path holds,
 * mounting squashfs images and overlays under STATE/roots/<enclave>/, and
 * unpacking OCI layouts (digests checked here, layers applied by umoci) into
 * a cache under STATE/images/.
 *
 * Every mount is made in the caller's (tesserad's, the host's) mount
 * namespace at a path this file chose, and only mounts found at exactly those
 * paths are ever unmounted: the host runs other tools with mounts of their own.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "image.h"
#include "util.h"

#define FIELD "root"

#define SQUASHFS_MAGIC_LE   "hsqs"
#define SQUASHFS_MAGIC_BE   "sqsh"
#define SQUASHFS_SUPER_SIZE 96

#define OCI_INDEX_MAX       (4u << 20)
#define OCI_MANIFEST_MAX    (4u << 20)
#define OCI_CONFIG_MAX      (16u << 20)
#define OCI_LAYOUT_FILE_MAX 4096
#define OCI_REF_NAME        "org.opencontainers.image.ref.name"
#define OCI_MANIFEST_TYPE   "application/vnd.oci.image.manifest.v1+json"
#define OCI_INDEX_TYPE      "application/vnd.oci.image.index.v1+json"

#define UMOCI_TIMEOUT_MS (30 * 60 * 1000)
#define UMOCI_OUTPUT_MAX 2048
#define TOOL_PATH_ENV    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Directory trees deeper than this are flattened by renames rather than recursion (tenants write uppers). */
#define REMOVE_DEPTH_MAX   32
#define LOOP_ATTACH_TRIES  8
#define STACKED_MOUNTS_MAX 16

/* Every error here is about the spec's root: the daemon can point at it. */
__attribute__((format(printf, 3, 4))) static int fail(struct tessera_error *err, int code, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        int r = tessera_error_setv(err, code, fmt, ap);
        va_end(ap);
        if (err)
                snprintf(err->field, sizeof(err->field), "%s", FIELD);
        return r;
}

/* Formats into a PATH_MAX buffer; a path that does not fit is an error rather than a silent cut. */
__attribute__((format(printf, 3, 4))) static int path_join(struct tessera_error *err, char buf[PATH_MAX],
                                                           const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        int len = vsnprintf(buf, PATH_MAX, fmt, ap);
        va_end(ap);
        if (len < 0 || len >= PATH_MAX)
                return fail(err, ENAMETOOLONG, "path too long: `%s...`", buf);
        return 0;
}

/* ---- names ---- */

const char *image_kind_name(enum image_kind k)
{
        switch (k) {
        case IMAGE_AUTO: return "path";
        case IMAGE_DIR: return "dir";
        case IMAGE_SQUASHFS: return "squashfs";
        case IMAGE_OCI_LAYOUT: return "oci layout";
        case IMAGE_OCI_BUNDLE: return "oci bundle";
        case IMAGE_OCI: return "oci";
        }
        return "unknown";
}

static const char *overlay_name(enum image_overlay o)
{
        switch (o) {
        case IMAGE_OVERLAY_DEFAULT: return "default";
        case IMAGE_OVERLAY_DISCARD: return "discard";
        case IMAGE_OVERLAY_KEEP: return "keep";
        }
        return "unknown";
}

void image_ref_describe(const struct image_ref *r, char *buf, size_t n)
{
        int at = snprintf(buf, n, "%s %s", image_kind_name(r->kind), r->path);
        if (at >= 0 && (size_t)at < n && r->tag[0])
                at += snprintf(buf + at, n - (size_t)at, ":%s", r->tag);
        if (at >= 0 && (size_t)at < n && r->overlay != IMAGE_OVERLAY_DEFAULT)
                snprintf(buf + at, n - (size_t)at, " (overlay: %s)", overlay_name(r->overlay));
}

/* ---- `root:` as JSON ---- */

static bool path_has_dotdot(const char *path)
{
        for (const char *p = path; (p = strstr(p, "..")); p += 2)
                if ((p == path || p[-1] == '/') && (p[2] == '\0' || p[2] == '/'))
                        return true;
        return false;
}

static int parse_path(const char *key, json_t *v, char *buf, size_t n, struct tessera_error *err)
{
        const char *what = key ? key : "path";
        if (!json_is_string(v))
                return fail(err, EINVAL, "%s%s must be a path (use an absolute path such as /srv/sim)", key ? key : "",
                            key ? ":" : "");
        const char *path = json_string_value(v);
        if (strlen(path) != json_string_length(v))
                return fail(err, EINVAL, "%s%sthe path contains a NUL byte", key ? key : "", key ? ": " : "");
        if (path[0] != '/')
                return fail(err, EINVAL, "%s%s\"%.200s\" is not an absolute path (use e.g. /srv/sim)", key ? key : "",
                            key ? ": " : "", path);
        if (path_has_dotdot(path))
                return fail(err, EINVAL, "%s%s\"%.200s\" has a \"..\" component (use a path without \"..\")",
                            key ? key : "", key ? ": " : "", path);
        for (const char *p = path; *p; p++)
                if (iscntrl((unsigned char)*p))
                        return fail(err, EINVAL, "%s%s\"%.200s\" has a control character", key ? key : "",
                                    key ? ": " : "", path);
        if (strlen(path) >= n)
                return fail(err, ENAMETOOLONG, "%s: the path is too long (at most %zu characters)", what, n - 1);
        snprintf(buf, n, "%s", path);
        return 0;
}

/* An OCI tag as registries write them: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}. */
static bool tag_is_valid(const char *t)
{
        if (!isalnum((unsigned char)t[0]) && t[0] != '_')
                return false;
        size_t len = strlen(t);
        if (len >= IMAGE_TAG_MAX)
                return false;
        for (size_t i = 1; i < len; i++)
                if (!isalnum((unsigned char)t[i]) && !strchr("._-", t[i]))
                        return false;
        return true;
}

static int parse_tag(json_t *v, char *buf, struct tessera_error *err)
{
        if (!json_is_string(v))
                return fail(err, EINVAL, "tag: must be a string such as latest or v1.2");
        const char *t = json_string_value(v);
        if (strlen(t) != json_string_length(v) || !tag_is_valid(t))
                return fail(err, EINVAL,
                            "tag: \"%.140s\" is not a tag (use letters, digits, '_', '.' and '-', at most %d "
                            "characters, not starting with '.' or '-')",
                            t, IMAGE_TAG_MAX - 1);
        snprintf(buf, IMAGE_TAG_MAX, "%s", t);
        return 0;
}

static int parse_overlay(json_t *v, enum image_overlay *ret, struct tessera_error *err)
{
        const char *o = json_string_value(v);
        if (o && STREQ(o, "discard"))
                *ret = IMAGE_OVERLAY_DISCARD;
        else if (o && STREQ(o, "keep"))
                *ret = IMAGE_OVERLAY_KEEP;
        else
                return fail(err, EINVAL, "overlay: %s%.60s%s is not an overlay policy (use discard or keep)",
                            o ? "\"" : "", o ? o : "the value", o ? "\"" : "");
        return 0;
}

static const struct {
        const char *key;
        enum image_kind kind;
} kind_keys[] = {
        {"dir", IMAGE_DIR},
        {"squashfs", IMAGE_SQUASHFS},
        {"oci", IMAGE_OCI},
        {"bundle", IMAGE_OCI_BUNDLE},
};

static int parse_object_key(const char *key, json_t *v, struct image_ref *ret, struct tessera_error *err)
{
        for (size_t i = 0; i < ELEMENTSOF(kind_keys); i++) {
                if (!STREQ(key, kind_keys[i].key))
                        continue;
                if (ret->kind != IMAGE_AUTO)
                        return fail(err, EINVAL, "both %s and %s: name one image (dir, squashfs, oci or bundle)",
                                    image_kind_name(ret->kind), key);
                ret->kind = kind_keys[i].kind;
                return parse_path(key, v, ret->path, sizeof(ret->path), err);
        }
        if (STREQ(key, "tag"))
                return parse_tag(v, ret->tag, err);
        if (STREQ(key, "overlay"))
                return parse_overlay(v, &ret->overlay, err);
        return fail(err, EINVAL, "%.60s: unknown key (known: dir, squashfs, oci, bundle, tag, overlay)", key);
}

static int parse_object(json_t *j, struct image_ref *ret, struct tessera_error *err)
{
        const char *key;
        size_t key_len;
        json_t *v;
        json_object_keylen_foreach(j, key, key_len, v)
        {
                if (strlen(key) != key_len)
                        return fail(err, EINVAL,
                                    "a key contains a NUL byte (known: dir, squashfs, oci, bundle, "
                                    "tag, overlay)");
                int r = parse_object_key(key, v, ret, err);
                if (r < 0)
                        return r;
        }
        if (ret->kind == IMAGE_AUTO)
                return fail(err, EINVAL,
                            "no image named (use one of dir, squashfs, oci or bundle, e.g. "
                            "{squashfs: /srv/img.sqfs, overlay: discard})");
        if (ret->tag[0] && ret->kind != IMAGE_OCI)
                return fail(err, EINVAL, "tag: only an oci image has tags (use {oci: /srv/layout, tag: %s})", ret->tag);
        if (ret->kind == IMAGE_OCI && !ret->tag[0])
                snprintf(ret->tag, sizeof(ret->tag), "%s", IMAGE_DEFAULT_TAG);
        return 0;
}

int image_ref_from_json(json_t *j, struct image_ref *ret, struct tessera_error *err)
{
        memset(ret, 0, sizeof(*ret));
        int r;
        if (json_is_string(j))
                r = parse_path(NULL, j, ret->path, sizeof(ret->path), err);
        else if (json_is_object(j))
                r = parse_object(j, ret, err);
        else
                r = fail(err, EINVAL,
                         "must be a path or a mapping (use /srv/sim, or e.g. {squashfs: /srv/img.sqfs, "
                         "overlay: discard} or {oci: /srv/layout, tag: latest})");
        if (r < 0)
                memset(ret, 0, sizeof(*ret));
        return r;
}

json_t *image_ref_to_json(const struct image_ref *r)
{
        if (r->kind == IMAGE_AUTO && r->overlay == IMAGE_OVERLAY_DEFAULT)
                return json_string(r->path);
        /* a resolved layout is written back as `oci:` (which finds it again); a plain path with an overlay as `dir:` */
        const char *key = "dir";
        for (size_t i = 0; i < ELEMENTSOF(kind_keys); i++)
                if (kind_keys[i].kind == r->kind)
                        key = kind_keys[i].key;
        if (r->kind == IMAGE_OCI_LAYOUT)
                key = "oci";
        json_t *o = json_object();
        if (!o || json_object_set_new(o, key, json_string(r->path)) < 0 ||
            (r->tag[0] && json_object_set_new(o, "tag", json_string(r->tag)) < 0) ||
            (r->overlay != IMAGE_OVERLAY_DEFAULT &&
             json_object_set_new(o, "overlay", json_string(overlay_name(r->overlay))) < 0)) {
                json_decref(o);
                return NULL;
        }
        return o;
}

/* ---- small file helpers ---- */

/* Reads a whole regular file (at most `max` bytes) relative to dirfd, NUL-terminated; errors name `shown`. */
static int read_small_file(int dirfd, const char *name, const char *shown, size_t max, char **ret, size_t *ret_len,
                           struct tessera_error *err)
{
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return fail(err, errno, "%s: %s", shown, errno == ENOENT ? "missing" : strerror(errno));
        struct stat st;
        if (fstat(fd, &st) < 0)
                return fail(err, errno, "%s: cannot stat: %s", shown, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return fail(err, EINVAL, "%s: not a regular file", shown);
        if ((uint64_t)st.st_size > max)
                return fail(err, EFBIG, "%s: too large (%lld bytes, at most %zu)", shown, (long long)st.st_size, max);
        _cleanup_free_ char *buf = malloc((size_t)st.st_size + 1);
        if (!buf)
                return fail(err, ENOMEM, "out of memory");
        size_t len = 0;
        while (len < (size_t)st.st_size) {
                ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return fail(err, errno, "%s: cannot read: %s", shown, strerror(errno));
                if (n == 0)
                        break;
                len += (size_t)n;
        }
        buf[len] = '\0';
        *ret = TAKE_PTR(buf);
        if (ret_len)
                *ret_len = len;
        return 0;
}

/* The text must be one JSON object. */
static int parse_json_object(const char *text, size_t len, const char *shown, json_t **ret, struct tessera_error *err)
{
        json_error_t jerr;
        json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!j)
                return fail(err, EINVAL, "%s: not valid JSON (line %d, column %d: %s)", shown, jerr.line, jerr.column,
                            jerr.text);
        if (!json_is_object(j)) {
                json_decref(j);
                return fail(err, EINVAL, "%s: not a JSON object", shown);
        }
        *ret = j;
        return 0;
}

/* Parses a small JSON file that must hold an object. */
static int read_json_object(int dirfd, const char *name, const char *shown, size_t max, json_t **ret,
                            struct tessera_error *err)
{
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int r = read_small_file(dirfd, name, shown, max, &text, &len, err);
        if (r < 0)
                return r;
        return parse_json_object(text, len, shown, ret, err);
}

static bool exists_at(int dirfd, const char *name, mode_t type)
{
        struct stat st;
        return fstatat(dirfd, name, &st, 0) == 0 && (st.st_mode & S_IFMT) == type;
}

/* ---- SHA-256 (FIPS 180-4), for the digests of OCI blobs ---- */

struct sha256 {
        uint32_t h[8];
        uint64_t bytes;
        uint8_t block[64];
        size_t fill;
};

static const uint32_t sha256_k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t ror32(uint32_t x, unsigned n)
{
        return (x >> n) | (x << (32 - n));
}

static void sha256_init(struct sha256 *s)
{
        static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
        memcpy(s->h, h0, sizeof(h0));
        s->bytes = 0;
        s->fill = 0;
}

static void sha256_block(struct sha256 *s, const uint8_t *p)
{
        uint32_t w[64];
        for (int i = 0; i < 16; i++)
                w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
                       (uint32_t)p[4 * i + 3];
        for (int i = 16; i < 64; i++) {
                uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
                uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
                w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
        for (int i = 0; i < 64; i++) {
                uint32_t t1 =
                        h + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) + sha256_k[i] + w[i];
                uint32_t t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
                h = g;
                g = f;
                f = e;
                e = d + t1;
                d = c;
                c = b;
                b = a;
                a = t1 + t2;
        }
        s->h[0] += a;
        s->h[1] += b;
        s->h[2] += c;
        s->h[3] += d;
        s->h[4] += e;
        s->h[5] += f;
        s->h[6] += g;
        s->h[7] += h;
}

static void sha256_update(struct sha256 *s, const void *data, size_t len)
{
        const uint8_t *p = data;
        s->bytes += len;
        if (s->fill) {
                size_t take = 64 - s->fill < len ? 64 - s->fill : len;
                memcpy(s->block + s->fill, p, take);
                s->fill += take;
                p += take;
                len -= take;
                if (s->fill < 64)
                        return;
                sha256_block(s, s->block);
                s->fill = 0;
        }
        for (; len >= 64; p += 64, len -= 64)
                sha256_block(s, p);
        memcpy(s->block, p, len);
        s->fill = len;
}

/* Finishes into 64 lowercase hex digits and a NUL. */
static void sha256_hex(struct sha256 *s, char hex[65])
{
        uint64_t bits = s->bytes * 8;
        uint8_t pad[72] = {0x80};
        size_t pad_len = (s->fill < 56 ? 56 : 120) - s->fill;
        for (int i = 0; i < 8; i++)
                pad[pad_len + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
        sha256_update(s, pad, pad_len + 8);
        for (int i = 0; i < 8; i++)
                snprintf(hex + 8 * i, 9, "%08x", s->h[i]);
}

/* ---- squashfs ---- */

static uint16_t le16(const uint8_t *p)
{
        return (uint16_t)(p[0] | p[1] << 8);
}
static uint32_t le32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const uint8_t *p)
{
        return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static const char *squashfs_compressor(uint16_t id)
{
        static const char *const names[] = {NULL, "gzip", "lzma", "lzo", "xz", "lz4", "zstd"};
        return id < ELEMENTSOF(names) ? names[id] : NULL;
}

/*
 * The superblock's promises, checked before a loop device exists: the magic,
 * version 4.0, a sane block size, a known compressor, and a file at least as
 * long as the filesystem it claims (a truncated copy fails here, not in dmesg).
 */
static int squashfs_check_fd(int fd, const char *path, struct tessera_error *err)
{
        struct stat st;
        if (fstat(fd, &st) < 0)
                return fail(err, errno, "%s: cannot stat: %s", path, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return fail(err, EINVAL, "%s: not a regular file (a squashfs image is a file)", path);
        uint8_t sb[SQUASHFS_SUPER_SIZE];
        ssize_t n = pread(fd, sb, sizeof(sb), 0);
        if (n < 0)
                return fail(err, errno, "%s: cannot read: %s", path, strerror(errno));
        if (n >= 4 && memcmp(sb, SQUASHFS_MAGIC_BE, 4) == 0)
                return fail(err, EINVAL,
                            "%s: a big-endian (pre-4.0) squashfs image, which Linux cannot mount "
                            "(rebuild it with mksquashfs 4)",
                            path);
        if (n < 4 || memcmp(sb, SQUASHFS_MAGIC_LE, 4) != 0)
                return fail(err, EINVAL, "%s: not a squashfs image (bad magic)", path);
        if ((size_t)n < sizeof(sb))
                return fail(err, EINVAL, "%s: truncated squashfs image (%zd bytes, shorter than its superblock)", path,
                            n);
        uint32_t block_size = le32(sb + 12);
        uint16_t compression = le16(sb + 20), block_log = le16(sb + 22), major = le16(sb + 28), minor = le16(sb + 30);
        uint64_t bytes_used = le64(sb + 40);
        if (major != 4 || minor != 0)
                return fail(err, EINVAL, "%s: squashfs version %u.%u (Linux mounts 4.0)", path, major, minor);
        if (block_log < 12 || block_log > 20 || block_size != 1u << block_log)
                return fail(err, EINVAL, "%s: corrupt squashfs superblock (block size %u, log %u)", path, block_size,
                            block_log);
        if (!squashfs_compressor(compression))
                return fail(err, EINVAL, "%s: unknown squashfs compressor %u", path, compression);
        if (bytes_used > (uint64_t)st.st_size)
                return fail(err, EINVAL,
                            "%s: truncated squashfs image (the superblock says %llu bytes, the file has %lld)", path,
                            (unsigned long long)bytes_used, (long long)st.st_size);
        return 0;
}

static int squashfs_open_checked(const char *path, struct tessera_error *err)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return fail(err, errno, "%s: %s", path, errno == ENOENT ? "no such file" : strerror(errno));
        int r = squashfs_check_fd(fd, path, err);
        if (r < 0)
                return r;
        return TAKE_FD(fd);
}

/* ---- OCI layouts and bundles ---- */

struct oci_descriptor {
        char hex[65]; /* the sha256 digest's hex */
        uint64_t size;
        char media_type[128];
};

/* A descriptor's digest and size; only sha256 (what every registry and umoci write). */
static int oci_parse_descriptor(json_t *d, const char *where, struct oci_descriptor *ret, struct tessera_error *err)
{
        if (!json_is_object(d))
                return fail(err, EINVAL, "%s: a descriptor that is not an object", where);
        const char *digest = json_string_value(json_object_get(d, "digest"));
        json_t *size = json_object_get(d, "size");
        const char *type = json_string_value(json_object_get(d, "mediaType"));
        if (!digest)
                return fail(err, EINVAL, "%s: a descriptor without a digest", where);
        if (strncmp(digest, "sha256:", 7) != 0)
                return fail(err, EINVAL, "%s: digest \"%.100s\" is not sha256 (the only algorithm supported)", where,
                            digest);
        const char *hex = digest + 7;
        bool good = strlen(hex) == 64;
        for (size_t i = 0; good && i < 64; i++)
                good = isdigit((unsigned char)hex[i]) || (hex[i] >= 'a' && hex[i] <= 'f');
        if (!good)
                return fail(err, EINVAL, "%s: digest \"%.100s\" is not sha256: and 64 lowercase hex digits", where,
                            digest);
        if (!json_is_integer(size) || json_integer_value(size) < 0)
                return fail(err, EINVAL, "%s: descriptor of sha256:%.12s has no valid size", where, hex);
        memcpy(ret->hex, hex, 65);
        ret->size = (uint64_t)json_integer_value(size);
        snprintf(ret->media_type, sizeof(ret->media_type), "%s", type ? type : "");
        return 0;
}

/* oci-layout must say imageLayoutVersion 1.x. */
static int oci_check_layout_file(int dirfd, const char *layout, struct tessera_error *err)
{
        char shown[PATH_MAX + 16];
        snprintf(shown, sizeof(shown), "%s/oci-layout", layout);
        json_t *j = NULL;
        int r = read_json_object(dirfd, "oci-layout", shown, OCI_LAYOUT_FILE_MAX, &j, err);
        if (r < 0)
                return r;
        const char *v = json_string_value(json_object_get(j, "imageLayoutVersion"));
        if (!v || strncmp(v, "1.", 2) != 0)
                r = fail(err, EINVAL, "%s: imageLayoutVersion is %s%.20s%s (expected 1.0.0)", shown, v ? "\"" : "",
                         v ? v : "missing", v ? "\"" : "");
        json_decref(j);
        return r;
}

/* "latest, v1, v2" for a message: every tag the index knows. */
static void oci_list_tags(json_t *manifests, char *buf, size_t n)
{
        size_t i, at = 0;
        json_t *m;
        buf[0] = '\0';
        json_array_foreach(manifests, i, m)
        {
                const char *t = json_string_value(json_object_get(json_object_get(m, "annotations"), OCI_REF_NAME));
                if (!t || at >= n)
                        continue;
                int w = snprintf(buf + at, n - at, "%s%s", at ? ", " : "", t);
                at += w > 0 ? (size_t)w : 0;
        }
        if (!buf[0])
                snprintf(buf, n, "none");
}

/* The manifest descriptor index.json tags with `tag`. */
static int oci_find_manifest(int dirfd, const char *layout, const char *tag, struct oci_descriptor *ret,
                             struct tessera_error *err)
{
        char shown[PATH_MAX + 16];
        snprintf(shown, sizeof(shown), "%s/index.json", layout);
        json_t *index = NULL;
        int r = read_json_object(dirfd, "index.json", shown, OCI_INDEX_MAX, &index, err);
        if (r < 0)
                return r;
        json_t *manifests = json_object_get(index, "manifests");
        if (json_integer_value(json_object_get(index, "schemaVersion")) != 2 || !json_is_array(manifests)) {
                json_decref(index);
                return fail(err, EINVAL, "%s: not an OCI image index (schemaVersion 2 with a manifests list)", shown);
        }
        size_t i, found = 0;
        json_t *m;
        json_array_foreach(manifests, i, m)
        {
                const char *t = json_string_value(json_object_get(json_object_get(m, "annotations"), OCI_REF_NAME));
                if (!t || !STREQ(t, tag))
                        continue;
                struct oci_descriptor d;
                r = oci_parse_descriptor(m, shown, &d, err);
                if (r == 0 && found && !STREQ(d.hex, ret->hex))
                        r = fail(err, EINVAL, "%s: tag '%s' names two manifests (sha256:%.12s and sha256:%.12s)", shown,
                                 tag, ret->hex, d.hex);
                if (r < 0)
                        break;
                *ret = d;
                found++;
        }
        if (r == 0 && !found) {
                char tags[512];
                oci_list_tags(manifests, tags, sizeof(tags));
                r = fail(err, ENOENT, "%s: no manifest tagged '%s' (tags: %s)", shown, tag, tags);
        }
        if (r == 0 && STREQ(ret->media_type, OCI_INDEX_TYPE))
                r = fail(err, EOPNOTSUPP,
                         "%s: tag '%s' names an image index (a multi-platform image); tag the "
                         "platform's manifest instead",
                         shown, tag);
        if (r == 0 && ret->media_type[0] && !STREQ(ret->media_type, OCI_MANIFEST_TYPE))
                r = fail(err, EOPNOTSUPP, "%s: tag '%s' names a \"%s\", not an OCI image manifest", shown, tag,
                         ret->media_type);
        json_decref(index);
        return r;
}

/* Checks one blob's size and sha256 against its descriptor. */
static int oci_verify_blob(int dirfd, const char *layout, const struct oci_descriptor *d, struct tessera_error *err)
{
        char name[80], shown[PATH_MAX + 96];
        snprintf(name, sizeof(name), "blobs/sha256/%s", d->hex);
        snprintf(shown, sizeof(shown), "%s/%s", layout, name);
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return fail(err, errno, "%s: %s", shown, errno == ENOENT ? "missing blob" : strerror(errno));
        struct stat st;
        if (fstat(fd, &st) < 0)
                return fail(err, errno, "%s: cannot stat: %s", shown, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return fail(err, EINVAL, "%s: not a regular file", shown);
        if ((uint64_t)st.st_size != d->size)
                return fail(err, EINVAL, "%s: size mismatch (the descriptor says %llu bytes, the blob has %lld)", shown,
                            (unsigned long long)d->size, (long long)st.st_size);
        _cleanup_free_ uint8_t *buf = malloc(1 << 16);
        if (!buf)
                return fail(err, ENOMEM, "out of memory");
        struct sha256 s;
        sha256_init(&s);
        for (;;) {
                ssize_t n = read(fd, buf, 1 << 16);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return fail(err, errno, "%s: cannot read: %s", shown, strerror(errno));
                if (n == 0)
                        break;
                sha256_update(&s, buf, (size_t)n);
        }
        char hex[65];
        sha256_hex(&s, hex);
        if (!STREQ(hex, d->hex))
                return fail(err, EINVAL, "%s: digest mismatch (its content hashes to sha256:%s)", shown, hex);
        return 0;
}

/* A small JSON blob (manifest, config), read once into memory and checked there: what is parsed is what was hashed. */
static int oci_read_blob_json(int dirfd, const char *layout, const struct oci_descriptor *d, size_t max, json_t **ret,
                              struct tessera_error *err)
{
        char name[80], shown[PATH_MAX + 96];
        snprintf(name, sizeof(name), "blobs/sha256/%s", d->hex);
        snprintf(shown, sizeof(shown), "%s/%s", layout, name);
        if (d->size > max)
                return fail(err, EFBIG, "%s: too large (the descriptor says %llu bytes, at most %zu)", shown,
                            (unsigned long long)d->size, max);
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int r = read_small_file(dirfd, name, shown, max, &text, &len, err);
        if (r == -ENOENT)
                return fail(err, ENOENT, "%s: missing blob", shown);
        if (r < 0)
                return r;
        if (len != d->size)
                return fail(err, EINVAL, "%s: size mismatch (the descriptor says %llu bytes, the blob has %zu)", shown,
                            (unsigned long long)d->size, len);
        struct sha256 s;
        char hex[65];
        sha256_init(&s);
        sha256_update(&s, text, len);
        sha256_hex(&s, hex);
        if (!STREQ(hex, d->hex))
                return fail(err, EINVAL, "%s: digest mismatch (its content hashes to sha256:%s)", shown, hex);
        return parse_json_object(text, len, shown, ret, err);
}

/*
 * The manifest, its config and every layer: each present, of the size and
 * digest its descriptor gives.  umoci checks again as it reads; checking
 * first gives one clear error and leaves nothing half-unpacked.
 */
static int oci_verify_image(int dirfd, const char *layout, const struct oci_descriptor *manifest,
                            struct tessera_error *err)
{
        json_t *m = NULL;
        int r = oci_read_blob_json(dirfd, layout, manifest, OCI_MANIFEST_MAX, &m, err);
        if (r < 0)
                return r;
        char shown[PATH_MAX + 96];
        snprintf(shown, sizeof(shown), "%s/blobs/sha256/%s", layout, manifest->hex);
        json_t *layers = json_object_get(m, "layers");
        struct oci_descriptor d;
        if (json_integer_value(json_object_get(m, "schemaVersion")) != 2 || !json_is_array(layers))
                r = fail(err, EINVAL, "%s: not an OCI image manifest (schemaVersion 2 with a layers list)", shown);
        if (r == 0)
                r = oci_parse_descriptor(json_object_get(m, "config"), shown, &d, err);
        if (r == 0) {
                json_t *config = NULL;
                r = oci_read_blob_json(dirfd, layout, &d, OCI_CONFIG_MAX, &config, err);
                json_decref(config);
        }
        size_t i;
        json_t *l;
        json_array_foreach(layers, i, l)
        {
                if (r == 0)
                        r = oci_parse_descriptor(l, shown, &d, err);
                if (r == 0)
                        r = oci_verify_blob(dirfd, layout, &d, err);
        }
        json_decref(m);
        return r;
}

/* A bundle's root directory: config.json's root.path (relative to the bundle, or absolute), "rootfs" if absent. */
static int bundle_rootfs(const char *bundle, char ret[PATH_MAX], struct tessera_error *err)
{
        _cleanup_close_ int dirfd = open(bundle, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
                return fail(err, errno, "%s: cannot open the bundle: %s", bundle, strerror(errno));
        char shown[PATH_MAX + 16];
        snprintf(shown, sizeof(shown), "%s/config.json", bundle);
        json_t *config = NULL;
        int r = read_json_object(dirfd, "config.json", shown, OCI_CONFIG_MAX, &config, err);
        if (r < 0)
                return r;
        json_t *root = json_object_get(config, "root");
        const char *rel = json_string_value(json_object_get(root, "path"));
        if (root && !rel)
                r = fail(err, EINVAL, "%s: root.path is not a string", shown);
        else if (rel && (!rel[0] || path_has_dotdot(rel)))
                r = fail(err, EINVAL, "%s: root.path \"%.100s\" is empty or has a \"..\" component", shown, rel);
        if (r == 0)
                r = rel && rel[0] == '/' ? path_join(err, ret, "%s", rel)
                                         : path_join(err, ret, "%s/%s", bundle, rel ? rel : "rootfs");
        json_decref(config);
        struct stat st;
        if (r == 0 && (stat(ret, &st) < 0 || !S_ISDIR(st.st_mode)))
                r = fail(err, ENOTDIR, "%s: the bundle's root %s is not a directory", shown, ret);
        return r;
}

/* ---- resolving what a path holds ---- */

static int resolve_oci(const char *path, struct image_ref *ret, struct tessera_error *err)
{
        _cleanup_close_ int dirfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
                return fail(err, errno, "%s: %s", path,
                            errno == ENOENT    ? "no such directory"
                            : errno == ENOTDIR ? "not a directory"
                                               : strerror(errno));
        if (exists_at(dirfd, "oci-layout", S_IFREG)) {
                ret->kind = IMAGE_OCI_LAYOUT;
                if (!ret->tag[0])
                        snprintf(ret->tag, sizeof(ret->tag), "%s", IMAGE_DEFAULT_TAG);
                int r = oci_check_layout_file(dirfd, path, err);
                struct oci_descriptor d;
                return r < 0 ? r : oci_find_manifest(dirfd, path, ret->tag, &d, err);
        }
        if (exists_at(dirfd, "config.json", S_IFREG)) {
                ret->kind = IMAGE_OCI_BUNDLE;
                ret->tag[0] = '\0';
                char rootfs[PATH_MAX];
                return bundle_rootfs(path, rootfs, err);
        }
        return fail(err, EINVAL,
                    "%s: neither an OCI image layout (no oci-layout file) nor an OCI runtime bundle "
                    "(no config.json)",
                    path);
}

static int resolve_auto(const char *path, struct image_ref *ret, struct tessera_error *err)
{
        struct stat st;
        if (stat(path, &st) < 0)
                return fail(err, errno, "%s: %s", path,
                            errno == ENOENT ? "no such file or directory" : strerror(errno));
        if (S_ISDIR(st.st_mode)) {
                _cleanup_close_ int dirfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
                if (dirfd >= 0 && (exists_at(dirfd, "oci-layout", S_IFREG) ||
                                   (exists_at(dirfd, "config.json", S_IFREG) && exists_at(dirfd, "rootfs", S_IFDIR))))
                        return resolve_oci(path, ret, err);
                ret->kind = IMAGE_DIR;
                return 0;
        }
        if (!S_ISREG(st.st_mode))
                return fail(err, EINVAL, "%s: neither a directory nor a squashfs image file", path);
        ret->kind = IMAGE_SQUASHFS;
        int fd = squashfs_open_checked(path, err);
        if (fd < 0)
                return fd;
        close(fd);
        return 0;
}

int image_ref_resolve(const struct image_ref *r, struct image_ref *ret, struct tessera_error *err)
{
        struct image_ref out = *r;
        int rc = 0;
        switch (r->kind) {
        case IMAGE_AUTO: rc = resolve_auto(r->path, &out, err); break;
        case IMAGE_OCI:
        case IMAGE_OCI_LAYOUT: rc = resolve_oci(r->path, &out, err); break;
        case IMAGE_OCI_BUNDLE: {
                char rootfs[PATH_MAX];
                rc = bundle_rootfs(r->path, rootfs, err);
                break;
        }
        case IMAGE_SQUASHFS: {
                int fd = squashfs_open_checked(r->path, err);
                rc = fd < 0 ? fd : (close(fd), 0);
                break;
        }
        case IMAGE_DIR: {
                struct stat st;
                if (stat(r->path, &st) < 0)
                        rc = fail(err, errno, "%s: %s", r->path,
                                  errno == ENOENT ? "no such directory" : strerror(errno));
                else if (!S_ISDIR(st.st_mode))
                        rc = fail(err, ENOTDIR, "%s: not a directory", r->path);
                break;
        }
        }
        if (rc == 0 && r->kind == IMAGE_OCI_LAYOUT && out.kind != IMAGE_OCI_LAYOUT)
                rc = fail(err, EINVAL, "%s: not an OCI image layout (no oci-layout file)", r->path);
        if (rc < 0)
                return rc;
        *ret = out;
        return 0;
}

static bool resolved_has_overlay(const struct image_ref *r)
{
        if (r->kind == IMAGE_SQUASHFS || r->kind == IMAGE_OCI_LAYOUT)
                return true;
        return r->overlay != IMAGE_OVERLAY_DEFAULT;
}

/*
 * Whether STATE/roots/<enclave> may belong to this root, judged without
 * requiring the image to still exist (it may be gone by destroy time): only a
 * directory or bundle used in place is sure to have none.
 */
static bool ref_may_have_overlay(const struct image_ref *r)
{
        if (r->overlay != IMAGE_OVERLAY_DEFAULT)
                return true;
        if (r->kind == IMAGE_DIR || r->kind == IMAGE_OCI_BUNDLE)
                return false;
        if (r->kind == IMAGE_SQUASHFS || r->kind == IMAGE_OCI_LAYOUT)
                return true;
        struct stat st;
        _cleanup_close_ int dirfd = open(r->path, O_PATH | O_DIRECTORY | O_CLOEXEC);
        return dirfd < 0 || fstatat(dirfd, "oci-layout", &st, 0) == 0;
}

/* ---- the kernel's view: file systems, mounts, loop devices ---- */

static int require_filesystem(const char *fs, const char *why, struct tessera_error *err)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/filesystems", "re");
        if (!f)
                return fail(err, errno, "cannot read /proc/filesystems: %s", strerror(errno));
        char line[128];
        while (fgets(line, sizeof(line), f)) {
                char *name = strrchr(line, '\t');
                name = name ? name + 1 : line;
                name[strcspn(name, "\n")] = '\0';
                if (STREQ(name, fs))
                        return 0;
        }
        return fail(err, ENODEV, "this kernel has no %s file system (not in /proc/filesystems), needed for %s", fs,
                    why);
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape_octal(char *s)
{
        char *out = s;
        for (const char *p = s; *p; p++) {
                if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' &&
                    p[3] <= '7') {
                        *out++ = (char)((p[1] - '0') << 6 | (p[2] - '0') << 3 | (p[3] - '0'));
                        p += 3;
                } else {
                        *out++ = *p;
                }
        }
        *out = '\0';
}

struct mount_entry {
        char fstype[64];
};

/* How many mounts sit at exactly `path` (canonical); the topmost one's type goes to *top. */
static int mounts_at(const char *path, struct mount_entry *top, struct tessera_error *err)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                return fail(err, errno, "cannot read /proc/self/mountinfo: %s", strerror(errno));
        _cleanup_free_ char *line = NULL;
        size_t size = 0;
        int count = 0;
        while (getline(&line, &size, f) > 0) {
                /* id parent major:minor root mount-point options [optional...] - fstype source super-options */
                char *save = NULL, *field = strtok_r(line, " \n", &save);
                char *mount_point = NULL;
                for (int i = 0; field && i < 4; i++)
                        field = strtok_r(NULL, " \n", &save);
                mount_point = field;
                while (field && !STREQ(field, "-"))
                        field = strtok_r(NULL, " \n", &save);
                char *fstype = field ? strtok_r(NULL, " \n", &save) : NULL;
                if (!mount_point || !fstype)
                        continue;
                unescape_octal(mount_point);
                if (!STREQ(mount_point, path))
                        continue;
                count++;
                if (top)
                        snprintf(top->fstype, sizeof(top->fstype), "%s", fstype);
        }
        return count;
}

/*
 * Unmounts every mount of type `fstype` stacked at `path` (ours by
 * construction: nobody else mounts under STATE/roots).  A mount of another
 * type is not ours and is left alone, with an error.  A busy mount (a shell
 * sitting in it) is detached, so a destroy does not hang on it.
 */
static int unmount_ours(const char *path, const char *fstype, struct tessera_error *err)
{
        for (int i = 0; i < STACKED_MOUNTS_MAX; i++) {
                struct mount_entry top;
                int n = mounts_at(path, &top, err);
                if (n <= 0)
                        return n;
                if (!STREQ(top.fstype, fstype))
                        return fail(err, EBUSY,
                                    "%s has a %s mount tesserad did not make (expected %s); not touching it", path,
                                    top.fstype, fstype);
                if (umount2(path, UMOUNT_NOFOLLOW) == 0)
                        continue;
                if (errno == EBUSY && umount2(path, UMOUNT_NOFOLLOW | MNT_DETACH) == 0)
                        continue;
                return fail(err, errno, "cannot unmount %s: %s", path, strerror(errno));
        }
        return fail(err, EBUSY, "%s: still mounted after %d unmounts", path, STACKED_MOUNTS_MAX);
}

/*
 * A read-only loop device over the image, set to clear itself when its last
 * user goes: the returned fd holds it until the squashfs mount does.
 */
static int loop_attach(int image_fd, const char *image, char dev[32], struct tessera_error *err)
{
        _cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (ctl < 0)
                return fail(err, errno, "cannot open /dev/loop-control (needed to mount %s): %s", image,
                            strerror(errno));
        for (int attempt = 0; attempt < LOOP_ATTACH_TRIES; attempt++) {
                int nr = ioctl(ctl, LOOP_CTL_GET_FREE);
                if (nr < 0)
                        return fail(err, errno, "no free loop device for %s: %s", image, strerror(errno));
                snprintf(dev, 32, "/dev/loop%d", nr);
                _cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        return fail(err, errno, "cannot open %s for %s: %s", dev, image, strerror(errno));
                struct loop_config cfg = {.fd = (uint32_t)image_fd};
                cfg.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
                snprintf((char *)cfg.info.lo_file_name, sizeof(cfg.info.lo_file_name), "%s", image);
                if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0)
                        return TAKE_FD(fd);
                /* another tool took the device between GET_FREE and CONFIGURE: ask again */
                if (errno != EBUSY)
                        return fail(err, errno, "cannot attach %s to %s: %s", image, dev, strerror(errno));
        }
        return fail(err, EBUSY, "cannot attach %s to a loop device: every free one was taken first (%d tries)", image,
                    LOOP_ATTACH_TRIES);
}

static int mount_squashfs(const char *image, const char *target, struct tessera_error *err)
{
        _cleanup_close_ int image_fd = squashfs_open_checked(image, err);
        if (image_fd < 0)
                return image_fd;
        char dev[32];
        _cleanup_close_ int loop_fd = loop_attach(image_fd, image, dev, err);
        if (loop_fd < 0)
                return loop_fd;
        /* on failure closing loop_fd frees the device (autoclear); on success the mount holds it */
        if (mount(dev, target, "squashfs", MS_RDONLY | MS_NODEV | MS_NOSUID, NULL) < 0)
                return fail(err, errno, "%s: the kernel refused to mount it (%s via %s): %s", image, target, dev,
                            errno == EINVAL ? "a corrupt image, or a compressor the kernel lacks; see dmesg"
                                            : strerror(errno));
        return 0;
}

/* overlayfs's options split at ',' and lowerdir at ':', with '\' as escape: paths holding them are refused. */
static int check_overlay_path(const char *path, const char *role, struct tessera_error *err)
{
        const char *bad = strpbrk(path, ",:\\");
        if (bad)
                return fail(err, EINVAL,
                            "%s `%s` contains '%c', which overlayfs options cannot carry (use a path "
                            "without ',', ':' or '\\')",
                            role, path, *bad);
        return 0;
}

static int mount_overlay(const char *lower, const char *upper, const char *work, const char *merged,
                         struct tessera_error *err)
{
        char opts[3 * PATH_MAX + 64];
        int len = snprintf(opts, sizeof(opts), "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work);
        if (len < 0 || (size_t)len >= sizeof(opts) || len >= getpagesize())
                return fail(err, ENAMETOOLONG, "overlay options for %s are too long (%d bytes, at most %d)", merged,
                            len, getpagesize() - 1);
        if (mount("overlay", merged, "overlay", 0, opts) < 0)
                return fail(err, errno, "cannot mount the overlay on %s (%s): %s", merged, opts, strerror(errno));
        return 0;
}

/* ---- removing trees without crossing mounts or following links ---- */

static int remove_entries(int dirfd, int topfd, const char *shown, unsigned depth, unsigned *moved,
                          struct tessera_error *err);

/* Removes `name` (a directory) below dirfd; at the depth limit it is moved under topfd for a later pass instead. */
static int remove_dir_at(int dirfd, const char *name, int topfd, const char *shown, unsigned depth, unsigned *moved,
                         struct tessera_error *err)
{
        if (depth >= REMOVE_DEPTH_MAX) {
                /* a tenant may have made names like ours: never replace one */
                for (int tries = 0; tries < 64; tries++) {
                        char flat[48];
                        snprintf(flat, sizeof(flat), ".tessera-deep-%u", ++*moved);
                        if (renameat2(dirfd, name, topfd, flat, RENAME_NOREPLACE) == 0)
                                return 0;
                        if (errno != EEXIST)
                                break;
                }
                return fail(err, errno, "cannot remove %s: moving a deep directory up failed: %s", shown,
                            strerror(errno));
        }
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return fail(err, errno, "cannot open %s/.../%s for removal: %s", shown, name, strerror(errno));
        struct statx stx;
        if (statx(fd, "", AT_EMPTY_PATH, STATX_TYPE, &stx) == 0 && (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT))
                return fail(err, EBUSY, "%s/.../%s is a mount point: not removing what is mounted there", shown, name);
        int r = remove_entries(fd, topfd, shown, depth + 1, moved, err);
        if (r < 0)
                return r;
        if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
                return fail(err, errno, "cannot remove %s/.../%s: %s", shown, name, strerror(errno));
        return 0;
}

static int remove_entries(int dirfd, int topfd, const char *shown, unsigned depth, unsigned *moved,
                          struct tessera_error *err)
{
        /* a new open file description: a dup would share (and keep) the offset of an earlier pass */
        int own_fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (own_fd < 0)
                return fail(err, errno, "cannot read %s: %s", shown, strerror(errno));
        DIR *d = fdopendir(own_fd);
        if (!d) {
                close(own_fd);
                return fail(err, errno, "cannot read %s: %s", shown, strerror(errno));
        }
        int r = 0;
        struct dirent *de;
        while (r == 0 && (errno = 0, de = readdir(d))) {
                if (STREQ(de->d_name, ".") || STREQ(de->d_name, ".."))
                        continue;
                bool is_dir = de->d_type == DT_DIR;
                struct stat st;
                if (de->d_type == DT_UNKNOWN && fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
                        is_dir = S_ISDIR(st.st_mode);
                if (is_dir)
                        r = remove_dir_at(dirfd, de->d_name, topfd, shown, depth, moved, err);
                else if (unlinkat(dirfd, de->d_name, 0) < 0 && errno != ENOENT)
                        r = fail(err, errno, "cannot remove %s/.../%s: %s", shown, de->d_name, strerror(errno));
        }
        if (r == 0 && errno != 0)
                r = fail(err, errno, "cannot read %s: %s", shown, strerror(errno));
        closedir(d);
        return r;
}

/* rm -rf `path`, never into another mount and never through a symlink; 0 if it is not there. */
static int remove_tree(const char *path, struct tessera_error *err)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT)
                return 0;
        if (fd < 0)
                return fail(err, errno, "cannot open %s for removal: %s", path, strerror(errno));
        struct statx stx;
        if (statx(fd, "", AT_EMPTY_PATH, STATX_TYPE, &stx) == 0 && (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT))
                return fail(err, EBUSY, "%s is a mount point: not removing what is mounted there", path);
        /* trees deeper than the limit were moved to the top as .tessera-deep-N: passes go on until none is */
        unsigned moved = 0, before;
        int r;
        do {
                before = moved;
                r = remove_entries(fd, fd, path, 0, &moved, err);
        } while (r == 0 && moved != before);
        if (r == 0 && rmdir(path) < 0 && errno != ENOENT)
                r = fail(err, errno, "cannot remove %s: %s", path, strerror(errno));
        return r;
}

/* ---- the enclave's overlay under STATE/roots/<enclave> ---- */

int image_roots_path(const char *state_dir, const char *enclave, char *buf, size_t n, struct tessera_error *err)
{
        if (!state_dir || state_dir[0] != '/')
                return fail(err, EINVAL, "the state directory must be an absolute path (got `%s`)",
                            state_dir ? state_dir : "(none)");
        if (!name_is_valid(enclave))
                return fail(err, EINVAL, "\"%.80s\" is not an enclave name", enclave ? enclave : "");
        int len = snprintf(buf, n, "%s/roots/%s", state_dir, enclave);
        if (len < 0 || (size_t)len >= n)
                return fail(err, ENAMETOOLONG, "%s/roots/%s: path too long", state_dir, enclave);
        return 0;
}

struct overlay_dirs {
        char base[PATH_MAX]; /* canonical STATE/roots/<enclave> */
        char lower[PATH_MAX];
        char upper[PATH_MAX];
        char work[PATH_MAX];
        char merged[PATH_MAX];
};

static int overlay_dirs_at(const char *base, struct overlay_dirs *d, struct tessera_error *err)
{
        int r = path_join(err, d->base, "%s", base);
        if (r == 0)
                r = path_join(err, d->lower, "%s/lower", base);
        if (r == 0)
                r = path_join(err, d->upper, "%s/upper", base);
        if (r == 0)
                r = path_join(err, d->work, "%s/work", base);
        if (r == 0)
                r = path_join(err, d->merged, "%s/merged", base);
        return r;
}

/* What one prepare made, so a failure undoes exactly that and nothing found there before. */
struct overlay_undo {
        bool made_base, made_lower, made_upper, made_work, made_merged;
        bool mounted_lower; /* the overlay is the last step: nothing after it can fail */
};

static int make_dir(const char *path, mode_t mode, bool *made, struct tessera_error *err)
{
        if (mkdir(path, mode) == 0) {
                *made = true;
                return 0;
        }
        if (errno != EEXIST)
                return fail(err, errno, "cannot create %s: %s", path, strerror(errno));
        struct stat st;
        if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode))
                return fail(err, ENOTDIR, "%s exists and is not a directory (remove it)", path);
        return 0;
}

static void overlay_undo(const struct overlay_dirs *d, const struct overlay_undo *u)
{
        struct tessera_error ignored = {0};
        if (u->mounted_lower)
                (void)umount2(d->lower, UMOUNT_NOFOLLOW | MNT_DETACH);
        if (u->made_merged)
                (void)rmdir(d->merged);
        if (u->made_work)
                (void)remove_tree(d->work, &ignored); /* a failed overlay mount may have left work/work */
        if (u->made_upper)
                (void)remove_tree(d->upper, &ignored);
        if (u->made_lower)
                (void)rmdir(d->lower);
        if (u->made_base)
                (void)rmdir(d->base);
}

/* STATE/roots (0711: an enclave in a user namespace must still reach its root) and STATE/roots/<enclave>. */
static int make_base(const char *state_dir, const char *enclave, struct overlay_dirs *d, struct overlay_undo *u,
                     struct tessera_error *err)
{
        char roots[PATH_MAX], base[PATH_MAX];
        int r = path_join(err, roots, "%s/roots", state_dir);
        if (r == 0)
                r = image_roots_path(state_dir, enclave, base, sizeof(base), err);
        if (r == 0)
                r = mkdir_p(roots, 0711, err);
        if (r == 0)
                r = make_dir(base, 0711, &u->made_base, err);
        if (r < 0)
                return r;
        /* mountinfo shows canonical paths: every later check and mount uses them */
        char canon[PATH_MAX];
        if (!realpath(base, canon)) {
                r = fail(err, errno, "cannot resolve %s: %s", base, strerror(errno));
                if (u->made_base)
                        (void)rmdir(base);
                return r;
        }
        return overlay_dirs_at(canon, d, err);
}

/* The squashfs on lower/, mounted afresh: one found there without its overlay is stale (a crash between the two). */
static int prepare_lower_squashfs(const struct image_ref *r, struct overlay_dirs *d, struct overlay_undo *u,
                                  struct tessera_error *err)
{
        int rc = make_dir(d->lower, 0755, &u->made_lower, err);
        if (rc == 0)
                rc = unmount_ours(d->lower, "squashfs", err);
        if (rc == 0)
                rc = mount_squashfs(r->path, d->lower, err);
        if (rc < 0)
                return rc;
        u->mounted_lower = true;
        return 0;
}

static int prepare_overlay(const struct image_ref *r, const char *lower_dir, const char *state_dir, const char *enclave,
                           char *ret_root, size_t n, struct tessera_error *err)
{
        struct overlay_dirs d;
        struct overlay_undo u = {0};
        int rc = make_base(state_dir, enclave, &d, &u, err);
        if (rc < 0)
                return rc;
        /* refused before anything is mounted (the squashfs lower lives under the same base) */
        if (r->kind != IMAGE_SQUASHFS)
                rc = check_overlay_path(lower_dir, "the image directory", err);
        if (rc == 0)
                rc = check_overlay_path(d.base, "the state directory", err);
        if (rc == 0 && strlen(d.merged) >= n)
                rc = fail(err, ENAMETOOLONG, "%s: path too long for the caller's buffer", d.merged);
        if (rc < 0) {
                overlay_undo(&d, &u);
                return rc;
        }
        struct mount_entry top;
        rc = mounts_at(d.merged, &top, err);
        if (rc > 0 && STREQ(top.fstype, "overlay")) {
                /* already there (a second call, or tesserad restarted): the enclave keeps what it has */
                snprintf(ret_root, n, "%s", d.merged);
                return 0;
        }
        if (rc > 0)
                rc = fail(err, EBUSY, "%s has a %s mount tesserad did not make; not touching it", d.merged, top.fstype);
        if (rc == 0)
                rc = make_dir(d.upper, 0755, &u.made_upper, err);
        if (rc == 0)
                rc = make_dir(d.work, 0700, &u.made_work, err);
        if (rc == 0)
                rc = make_dir(d.merged, 0755, &u.made_merged, err);
        if (rc == 0 && r->kind == IMAGE_SQUASHFS) {
                rc = prepare_lower_squashfs(r, &d, &u, err);
                lower_dir = d.lower;
        }
        if (rc == 0)
                rc = mount_overlay(lower_dir, d.upper, d.work, d.merged, err);
        if (rc < 0) {
                overlay_undo(&d, &u);
                return rc;
        }
        snprintf(ret_root, n, "%s", d.merged);
        return 0;
}

/* ---- OCI layouts: the unpacked cache ---- */

/* umoci's output, one line: its bullets and padding dropped, lines joined with "; ", the tail kept. */
static void tidy_tool_output(const char *in, char *out, size_t n)
{
        size_t at = 0;
        out[0] = '\0';
        for (const char *line = in; *line && at + 1 < n;) {
                const char *end = strchr(line, '\n');
                size_t len = end ? (size_t)(end - line) : strlen(line);
                size_t skip = 0;
                while (skip < len && (line[skip] == ' ' || line[skip] == '\t' || (unsigned char)line[skip] >= 0x80))
                        skip++;
                while (len > skip && (line[len - 1] == ' ' || line[len - 1] == '\r'))
                        len--;
                if (len > skip) {
                        int w = snprintf(out + at, n - at, "%s%.*s", at ? "; " : "", (int)(len - skip), line + skip);
                        at += w > 0 ? (size_t)w : 0;
                }
                line += end ? (size_t)(end - line) + 1 : strlen(line);
        }
}

static int find_tool(const char *name, char ret[PATH_MAX])
{
        static const char *const dirs[] = {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                                           "/usr/bin",        "/sbin",          "/bin"};
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                snprintf(ret, PATH_MAX, "%s/%s", dirs[i], name);
                if (access(ret, X_OK) == 0)
                        return 0;
        }
        return -ENOENT;
}

/* Collects the child's output (at most UMOCI_OUTPUT_MAX bytes, the last ones) until EOF or the deadline. */
static int collect_output(int fd, char *buf, size_t size, int timeout_ms)
{
        size_t len = 0;
        uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;
        for (;;) {
                uint64_t now = now_ns();
                if (now >= deadline)
                        return -ETIMEDOUT;
                struct pollfd p = {.fd = fd, .events = POLLIN};
                int left = (int)((deadline - now) / 1000000ULL) + 1;
                int pr = poll(&p, 1, left);
                if (pr < 0 && errno == EINTR)
                        continue;
                if (pr < 0)
                        return -errno;
                if (pr == 0)
                        continue;
                char chunk[512];
                ssize_t got = read(fd, chunk, sizeof(chunk));
                if (got < 0 && errno == EINTR)
                        continue;
                if (got <= 0)
                        break;
                /* keep the tail: the error is what umoci says last */
                if (len + (size_t)got >= size) {
                        size_t drop = len + (size_t)got - (size - 1);
                        drop = drop > len ? len : drop;
                        memmove(buf, buf + drop, len - drop);
                        len -= drop;
                }
                size_t take = (size_t)got < size - 1 - len ? (size_t)got : size - 1 - len;
                memcpy(buf + len, chunk + (size_t)got - take, take);
                len += take;
        }
        buf[len] = '\0';
        return 0;
}

static int wait_child(pid_t pid, int *status)
{
        while (waitpid(pid, status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return 0;
}

/*
 * posix_spawn: the child starts from a clean slate (default signals, empty
 * mask, stdin /dev/null, stdout+stderr into our pipe, a fixed PATH, the
 * layout as working directory); every other fd of ours is CLOEXEC.
 */
static int spawn_tool(const char *bin, char *const argv[], const char *cwd, int out_fd, pid_t *ret_pid)
{
        static char *const envp[] = {TOOL_PATH_ENV, "LC_ALL=C", "HOME=/", NULL};
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        int r = posix_spawn_file_actions_init(&fa);
        if (r)
                return -r;
        r = posix_spawnattr_init(&attr);
        if (r) {
                posix_spawn_file_actions_destroy(&fa);
                return -r;
        }
        sigset_t none, all;
        sigemptyset(&none);
        sigfillset(&all);
        if (!r)
                r = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        if (!r)
                r = posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
        if (!r)
                r = posix_spawn_file_actions_adddup2(&fa, out_fd, 2);
        if (!r)
                r = posix_spawn_file_actions_addchdir_np(&fa, cwd);
        if (!r)
                r = posix_spawnattr_setsigmask(&attr, &none);
        if (!r)
                r = posix_spawnattr_setsigdefault(&attr, &all);
        if (!r)
                r = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        if (!r)
                r = posix_spawn(ret_pid, bin, &fa, &attr, argv, envp);
        posix_spawnattr_destroy(&attr);
        posix_spawn_file_actions_destroy(&fa);
        return -r;
}

/* umoci raw unpack --image .:TAG DEST, run in the layout (so the layout's path needs no quoting in the ref). */
static int run_umoci_unpack(const struct image_ref *r, const char *dest, struct tessera_error *err)
{
        char bin[PATH_MAX];
        if (find_tool("umoci", bin) < 0)
                return fail(err, ENOENT,
                            "%s: unpacking an OCI image needs umoci, which is not installed (apt "
                            "package umoci)",
                            r->path);
        char ref[IMAGE_TAG_MAX + 4];
        snprintf(ref, sizeof(ref), ".:%s", r->tag);
        char *const argv[] = {"umoci", "--log=error", "raw", "unpack", "--image", ref, (char *)dest, NULL};
        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return fail(err, errno, "cannot make a pipe for umoci: %s", strerror(errno));
        _cleanup_close_ int rd = pipefd[0];
        _cleanup_close_ int wr = pipefd[1];
        pid_t pid;
        int rc = spawn_tool(bin, argv, r->path, wr, &pid);
        if (rc < 0)
                return fail(err, -rc, "cannot run %s: %s", bin, strerror(-rc));
        close(TAKE_FD(wr));
        char raw[UMOCI_OUTPUT_MAX], said[UMOCI_OUTPUT_MAX];
        rc = collect_output(rd, raw, sizeof(raw), UMOCI_TIMEOUT_MS);
        if (rc == -ETIMEDOUT)
                (void)kill(pid, SIGKILL);
        int status = 0;
        int wr_rc = wait_child(pid, &status);
        tidy_tool_output(raw, said, sizeof(said));
        if (rc == -ETIMEDOUT)
                return fail(err, ETIMEDOUT, "%s: umoci raw unpack of tag '%s' took over %d minutes and was killed",
                            r->path, r->tag, UMOCI_TIMEOUT_MS / 60000);
        if (rc < 0 || wr_rc < 0)
                return fail(err, -(rc < 0 ? rc : wr_rc), "%s: lost track of umoci: %s", r->path,
                            strerror(-(rc < 0 ? rc : wr_rc)));
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                return 0;
        if (WIFSIGNALED(status))
                return fail(err, EIO, "%s: umoci raw unpack of tag '%s' was killed by signal %d%s%s", r->path, r->tag,
                            WTERMSIG(status), said[0] ? ": " : "", said);
        return fail(err, EIO, "%s: umoci raw unpack of tag '%s' failed (exit status %d): %s", r->path, r->tag,
                    WEXITSTATUS(status), said[0] ? said : "(no message)");
}

/*
 * STATE/images/sha256-<manifest>/rootfs: unpacked once into a .partial
 * directory and renamed into place, so an entry that exists is complete.
 */
static int oci_cache_rootfs(const struct image_ref *r, const char *state_dir, char ret[PATH_MAX],
                            struct tessera_error *err)
{
        _cleanup_close_ int dirfd = open(r->path, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
                return fail(err, errno, "%s: cannot open the layout: %s", r->path, strerror(errno));
        struct oci_descriptor manifest;
        int rc = oci_check_layout_file(dirfd, r->path, err);
        if (rc == 0)
                rc = oci_find_manifest(dirfd, r->path, r->tag, &manifest, err);
        char images[PATH_MAX], entry[PATH_MAX], partial[PATH_MAX], dest[PATH_MAX];
        if (rc == 0)
                rc = path_join(err, images, "%s/images", state_dir);
        if (rc == 0)
                rc = path_join(err, entry, "%s/sha256-%s", images, manifest.hex);
        if (rc == 0)
                rc = path_join(err, ret, "%s/rootfs", entry);
        if (rc < 0)
                return rc;
        /* the manifest blob is tiny: checking it ties the cached tree to what the tag names now */
        struct stat st;
        if (stat(ret, &st) == 0 && S_ISDIR(st.st_mode))
                return oci_verify_blob(dirfd, r->path, &manifest, err);

        rc = oci_verify_image(dirfd, r->path, &manifest, err);
        if (rc == 0)
                rc = mkdir_p(images, 0700, err);
        if (rc == 0)
                rc = path_join(err, partial, "%s.partial", entry);
        if (rc == 0)
                rc = path_join(err, dest, "%s/rootfs", partial);
        if (rc == 0)
                rc = remove_tree(partial, err); /* what a crash mid-unpack left */
        if (rc == 0 && mkdir(partial, 0700) < 0)
                rc = fail(err, errno, "cannot create %s: %s", partial, strerror(errno));
        if (rc < 0)
                return rc;
        rc = run_umoci_unpack(r, dest, err);
        if (rc == 0 && rename(partial, entry) < 0)
                rc = fail(err, errno, "cannot rename %s to %s: %s", partial, entry, strerror(errno));
        if (rc < 0) {
                struct tessera_error ignored = {0};
                (void)remove_tree(partial, &ignored);
        }
        return rc;
}

/* ---- prepare and release ---- */

static int copy_root(const char *path, char *ret_root, size_t n, struct tessera_error *err)
{
        if (strlen(path) >= n)
                return fail(err, ENAMETOOLONG, "%s: path too long for the caller's buffer", path);
        snprintf(ret_root, n, "%s", path);
        return 0;
}

/* The overlay already mounted at STATE/roots/<enclave>/merged, if there is one: 1 and its path, else 0. */
static int find_mounted_root(const char *base, char *ret_root, size_t n, struct tessera_error *err)
{
        char canon[PATH_MAX], merged[PATH_MAX];
        if (!realpath(base, canon))
                return 0;
        int rc = path_join(err, merged, "%s/merged", canon);
        struct mount_entry top;
        if (rc == 0)
                rc = mounts_at(merged, &top, err);
        if (rc <= 0 || !STREQ(top.fstype, "overlay"))
                return rc < 0 ? rc : 0;
        rc = copy_root(merged, ret_root, n, err);
        return rc < 0 ? rc : 1;
}

int image_prepare(const struct image_ref *ref, const char *state_dir, const char *enclave, char *ret_root, size_t n,
                  struct tessera_error *err)
{
        char base[PATH_MAX];
        int rc = image_roots_path(state_dir, enclave, base, sizeof(base), err);
        if (rc < 0)
                return rc;
        /* already there (a second call, or tesserad restarted): the enclave keeps what it has, even if the
         * image changed or went away since */
        if (ref_may_have_overlay(ref)) {
                rc = find_mounted_root(base, ret_root, n, err);
                if (rc != 0)
                        return rc < 0 ? rc : 0;
        }
        struct image_ref r;
        rc = image_ref_resolve(ref, &r, err);
        if (rc < 0)
                return rc;
        char lower[PATH_MAX];
        if (r.kind == IMAGE_OCI_BUNDLE)
                rc = bundle_rootfs(r.path, lower, err);
        else
                rc = path_join(err, lower, "%s", r.path);
        if (rc < 0)
                return rc;
        if (!resolved_has_overlay(&r))
                return copy_root(lower, ret_root, n, err);

        rc = require_filesystem("overlay", "a writable layer over the image", err);
        if (rc == 0 && r.kind == IMAGE_SQUASHFS)
                rc = require_filesystem("squashfs", r.path, err);
        if (rc == 0 && r.kind == IMAGE_OCI_LAYOUT)
                rc = oci_cache_rootfs(&r, state_dir, lower, err);
        if (rc < 0)
                return rc;
        return prepare_overlay(&r, lower, state_dir, enclave, ret_root, n, err);
}

int image_release(const struct image_ref *r, const char *state_dir, const char *enclave, struct tessera_error *err)
{
        char base[PATH_MAX];
        int rc = image_roots_path(state_dir, enclave, base, sizeof(base), err);
        if (rc < 0)
                return rc;
        if (!ref_may_have_overlay(r))
                return 0;
        char canon[PATH_MAX];
        if (!realpath(base, canon)) {
                if (errno == ENOENT)
                        return 0;
                return fail(err, errno, "cannot resolve %s: %s", base, strerror(errno));
        }
        struct overlay_dirs d;
        rc = overlay_dirs_at(canon, &d, err);
        if (rc == 0)
                rc = unmount_ours(d.merged, "overlay", err);
        if (rc == 0)
                rc = unmount_ours(d.lower, "squashfs", err);
        if (rc < 0)
                return tessera_error_prefix(err, rc, "releasing the root of '%s'", enclave);
        if (r->overlay != IMAGE_OVERLAY_KEEP) {
                rc = remove_tree(d.base, err);
                return rc < 0 ? tessera_error_prefix(err, rc, "releasing the root of '%s'", enclave) : 0;
        }
        /* kept: upper/ and work/ stay for the administrator (and a later enclave of that name) */
        if (rmdir(d.merged) < 0 && errno != ENOENT)
                return fail(err, errno, "cannot remove %s: %s", d.merged, strerror(errno));
        if (rmdir(d.lower) < 0 && errno != ENOENT)
                return fail(err, errno, "cannot remove %s: %s", d.lower, strerror(errno));
        struct stat st;
        return stat(d.upper, &st) == 0 ? 1 : 0;
}
