/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Output of "log" applications: a pipe whose read end the loop polls, copied
 * into <app>.log in the directory tesserad passed (a host directory the
 * enclave cannot see), rotated to <app>.log.1 before it would pass 4 MiB, so
 * an application never holds more than 8 MiB of logs.  Reads are
 * non-blocking and bounded per loop turn, so a chatty application cannot
 * starve the control socket; when the file cannot be written the data is
 * dropped (and counted) rather than left to block the application.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "supervisor.h"
#include "util.h"

#define LOG_ROTATE_BYTES (4ULL << 20)
#define LOG_CHUNK        (64 * 1024) /* per loop turn and application */
#define LOG_DRAIN_MAX    (1 << 20)   /* once an application ended: what its pipe still holds, at most this */

static int log_open_file(int dir_fd, const char *app, uint64_t *ret_size, struct tessera_error *err)
{
        char name[80];
        snprintf(name, sizeof(name), "%s.log", app);
        _cleanup_close_ int fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0640);
        if (fd < 0)
                return tessera_error_field(err, errno, "stdio", "cannot open the log file %s: %s", name,
                                           strerror(errno));
        struct stat st;
        if (fstat(fd, &st) < 0)
                return tessera_error_field(err, errno, "stdio", "cannot stat the log file %s: %s", name,
                                           strerror(errno));
        if (!S_ISREG(st.st_mode))
                return tessera_error_field(err, EINVAL, "stdio", "the log file %s is not a regular file", name);
        *ret_size = (uint64_t)st.st_size;
        return TAKE_FD(fd);
}

int log_open(struct log_relay *l, int dir_fd, const char *app, int *ret_write_end, struct tessera_error *err)
{
        struct stat st;
        if (fstat(dir_fd, &st) < 0 || !S_ISDIR(st.st_mode))
                return tessera_error_field(err, ENOTDIR, "stdio",
                                           "stdio \"log\": the descriptor that came with it is not a directory");
        _cleanup_close_ int dir = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
        if (dir < 0)
                return tessera_error_field(err, errno, "stdio", "cannot keep the log directory: %s", strerror(errno));
        uint64_t size = 0;
        _cleanup_close_ int file = log_open_file(dir, app, &size, err);
        if (file < 0)
                return file;
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return tessera_error_field(err, errno, "stdio", "cannot create the log pipe: %s", strerror(errno));
        /* only our end is non-blocking: the application blocks as usual when we fall behind */
        if (fcntl(p[0], F_SETFL, O_NONBLOCK) < 0) {
                int saved = errno;
                close(p[0]);
                close(p[1]);
                return tessera_error_field(err, saved, "stdio", "cannot set up the log pipe: %s", strerror(saved));
        }
        l->pipe_fd = p[0];
        l->dir_fd = TAKE_FD(dir);
        l->file_fd = TAKE_FD(file);
        l->size = size;
        l->dropped = 0;
        *ret_write_end = p[1];
        return 0;
}

/* <app>.log becomes <app>.log.1 (replacing the older one) and a new <app>.log starts. */
static void log_rotate(struct log_relay *l, const char *app)
{
        char name[80], old[80];
        snprintf(name, sizeof(name), "%s.log", app);
        snprintf(old, sizeof(old), "%s.log.1", app);
        if (renameat(l->dir_fd, name, l->dir_fd, old) < 0)
                say("cannot rotate the log of application '%s': %s", app, strerror(errno));
        if (l->file_fd >= 0)
                close(l->file_fd);
        struct tessera_error err = {0};
        l->file_fd = log_open_file(l->dir_fd, app, &l->size, &err);
        if (l->file_fd < 0) {
                say("application '%s': %s; its output is dropped", app, err.msg);
                l->file_fd = -1;
        }
}

static void log_write(struct log_relay *l, const char *app, const char *buf, size_t n)
{
        if (l->file_fd >= 0 && l->size > 0 && l->size + n > LOG_ROTATE_BYTES)
                log_rotate(l, app);
        size_t done = 0;
        while (l->file_fd >= 0 && done < n) {
                ssize_t w = write(l->file_fd, buf + done, n - done);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0) {
                        if (l->dropped == 0)
                                say("cannot write the log of application '%s': %s; dropping output", app,
                                    w < 0 ? strerror(errno) : "short write");
                        break;
                }
                done += (size_t)w;
                l->size += (uint64_t)w;
        }
        l->dropped += n - done;
}

/* One read of at most `max` bytes; returns false once the pipe is finished (EOF or error). */
static bool log_read_once(struct log_relay *l, const char *app, size_t max, size_t *ret_got)
{
        static char buf[LOG_CHUNK];
        *ret_got = 0;
        ssize_t n = read(l->pipe_fd, buf, max < sizeof(buf) ? max : sizeof(buf));
        if (n < 0)
                return errno == EAGAIN || errno == EINTR;
        if (n == 0)
                return false;
        log_write(l, app, buf, (size_t)n);
        *ret_got = (size_t)n;
        return true;
}

void log_relay_chunk(struct log_relay *l, const char *app)
{
        if (l->pipe_fd < 0)
                return;
        size_t got;
        if (!log_read_once(l, app, LOG_CHUNK, &got))
                log_close(l, app);
}

void log_drain(struct log_relay *l, const char *app)
{
        size_t total = 0, got = 1;
        while (l->pipe_fd >= 0 && got > 0 && total < LOG_DRAIN_MAX) {
                if (!log_read_once(l, app, LOG_CHUNK, &got)) {
                        log_close(l, app);
                        return;
                }
                total += got;
        }
}

void log_close(struct log_relay *l, const char *app)
{
        if (l->dropped > 0)
                say("application '%s' lost %llu bytes of output (log not writable)", app,
                    (unsigned long long)l->dropped);
        if (l->pipe_fd >= 0)
                close(l->pipe_fd);
        if (l->dir_fd >= 0)
                close(l->dir_fd);
        if (l->file_fd >= 0)
                close(l->file_fd);
        *l = (struct log_relay){.pipe_fd = -1, .dir_fd = -1, .file_fd = -1};
}
