/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "util.h"

int write_file_at(int dirfd, const char *path, const char *value, struct tessera_error *err)
{
        _cleanup_close_ int fd = openat(dirfd, path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot open `%s` for writing: %s", path, strerror(errno));
        size_t len = strlen(value);
        ssize_t n = write(fd, value, len);
        if (n < 0)
                return tessera_error_set(err, errno, "cannot write \"%s\" to `%s`: %s", value, path, strerror(errno));
        if ((size_t)n != len)
                return tessera_error_set(err, EIO, "short write of \"%s\" to `%s`", value, path);
        return 0;
}

int read_file_at(int dirfd, const char *path, char *buf, size_t size, struct tessera_error *err)
{
        _cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot open `%s`: %s", path, strerror(errno));
        size_t off = 0;
        while (off + 1 < size) {
                ssize_t n = read(fd, buf + off, size - 1 - off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return tessera_error_set(err, errno, "cannot read `%s`: %s", path, strerror(errno));
                }
                if (n == 0)
                        break;
                off += (size_t)n;
        }
        buf[off] = '\0';
        if (off > 0 && buf[off - 1] == '\n')
                buf[--off] = '\0';
        return (int)off;
}

int parse_uint64(const char *s, uint64_t max, uint64_t *ret)
{
        if (!s || !isdigit((unsigned char)s[0]))
                return -EINVAL;
        uint64_t v = 0;
        for (const char *p = s; *p; p++) {
                if (!isdigit((unsigned char)*p))
                        return -EINVAL;
                unsigned d = (unsigned)(*p - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        if (v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

int parse_size(const char *s, uint64_t *ret)
{
        if (!s || !isdigit((unsigned char)s[0]))
                return -EINVAL;
        char digits[32];
        size_t i = 0;
        while (isdigit((unsigned char)s[i])) {
                if (i + 1 >= sizeof(digits))
                        return -ERANGE;
                digits[i] = s[i];
                i++;
        }
        digits[i] = '\0';
        uint64_t v;
        int r = parse_uint64(digits, UINT64_MAX, &v);
        if (r < 0)
                return r;
        const char *unit = s + i;
        unsigned shift = 0;
        switch (toupper((unsigned char)*unit)) {
        case '\0': break;
        case 'K': shift = 10; break;
        case 'M': shift = 20; break;
        case 'G': shift = 30; break;
        case 'T': shift = 40; break;
        case 'B':
                if (unit[1] == '\0') {
                        *ret = v;
                        return 0;
                }
                return -EINVAL;
        default: return -EINVAL;
        }
        if (shift) {
                const char *rest = unit + 1;
                if (!(rest[0] == '\0' || STREQ(rest, "B") || STREQ(rest, "iB")))
                        return -EINVAL;
                if (v > (UINT64_MAX >> shift))
                        return -ERANGE;
                v <<= shift;
        }
        *ret = v;
        return 0;
}

void format_size(uint64_t bytes, char *buf, size_t n)
{
        static const char units[] = "KMGT";
        if (bytes < 1024) {
                snprintf(buf, n, "%llu", (unsigned long long)bytes);
                return;
        }
        int u = -1;
        double v = (double)bytes;
        while (v >= 1024 && u < 3) {
                v /= 1024;
                u++;
        }
        uint64_t unit = 1ULL << (10 * (u + 1));
        if (bytes % unit == 0)
                snprintf(buf, n, "%llu%c", (unsigned long long)(bytes / unit), units[u]);
        else
                snprintf(buf, n, "%.1f%c", v, units[u]);
}

bool name_is_valid(const char *s)
{
        if (!s || !isalnum((unsigned char)s[0]))
                return false;
        size_t len = strlen(s);
        if (len > 63)
                return false;
        for (size_t i = 1; i < len; i++)
                if (!isalnum((unsigned char)s[i]) && !strchr("_.-", s[i]))
                        return false;
        return true;
}

uint64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int mkdir_p(const char *path, mode_t mode, struct tessera_error *err)
{
        char buf[4096];
        if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
                return tessera_error_set(err, ENAMETOOLONG, "path too long: `%s`", path);
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return tessera_error_set(err, errno, "cannot create `%s`: %s", buf, strerror(errno));
                *p = '/';
        }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return tessera_error_set(err, errno, "cannot create `%s`: %s", buf, strerror(errno));
        return 0;
}
