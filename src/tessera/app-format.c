/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Signals, exit statuses, times and argument checks for the application commands. */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "app-format.h"
#include "util.h"

#define MAX_SIGNAL 64 /* the kernel's _NSIG - 1 on every architecture Linux runs HPC on */

/* "RTMIN+N" / "RTMAX-N" (after the "SIG" prefix is gone); -EINVAL when it is neither. */
static int parse_realtime_signal(const char *s, int *ret)
{
        int base, sign;
        uint64_t offset = 0;
        if (strncasecmp(s, "RTMIN", 5) == 0) {
                base = SIGRTMIN;
                sign = 1;
        } else if (strncasecmp(s, "RTMAX", 5) == 0) {
                base = SIGRTMAX;
                sign = -1;
        } else {
                return -EINVAL;
        }
        s += 5;
        if (*s) {
                if (*s != (sign > 0 ? '+' : '-') || parse_uint64(s + 1, (uint64_t)(SIGRTMAX - SIGRTMIN), &offset) < 0)
                        return -EINVAL;
        }
        *ret = base + sign * (int)offset;
        return 0;
}

int app_parse_signal(const char *s, int *ret)
{
        uint64_t number;
        if (!s || !*s)
                return -EINVAL;
        if (isdigit((unsigned char)s[0])) {
                if (parse_uint64(s, MAX_SIGNAL, &number) < 0 || number == 0)
                        return -EINVAL;
                *ret = (int)number;
                return 0;
        }
        if (strncasecmp(s, "SIG", 3) == 0)
                s += 3;
        if (parse_realtime_signal(s, ret) == 0)
                return 0;
        for (int sig = 1; sig <= MAX_SIGNAL; sig++) {
                const char *name = sigabbrev_np(sig);
                if (name && strcasecmp(name, s) == 0) {
                        *ret = sig;
                        return 0;
                }
        }
        return -EINVAL;
}

void app_signal_name(int sig, char *buf, size_t n)
{
        /* glibc names the real-time signals by number only; kill(1) and bash call them RTMIN+N. */
        const char *name = sig < SIGRTMIN ? sigabbrev_np(sig) : NULL;
        if (name)
                snprintf(buf, n, "%s", name);
        else if (sig == SIGRTMIN)
                snprintf(buf, n, "RTMIN");
        else if (sig > SIGRTMIN && sig <= SIGRTMAX && sig - SIGRTMIN <= SIGRTMAX - sig)
                snprintf(buf, n, "RTMIN+%d", sig - SIGRTMIN);
        else if (sig > SIGRTMIN && sig < SIGRTMAX)
                snprintf(buf, n, "RTMAX-%d", SIGRTMAX - sig);
        else if (sig == SIGRTMAX)
                snprintf(buf, n, "RTMAX");
        else
                snprintf(buf, n, "%d", sig);
}

/* obj[key] as a non-negative int; false when null, missing or out of range. */
static bool get_small_uint(const json_t *obj, const char *key, int max, int *ret)
{
        const json_t *v = json_object_get(obj, key);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
                return false;
        *ret = (int)json_integer_value(v);
        return true;
}

static bool app_has_ended(const json_t *app)
{
        const char *state = json_string_value(json_object_get(app, "state"));
        return state && (STREQ(state, "exited") || STREQ(state, "lost"));
}

int app_exit_status(const json_t *app, int *ret)
{
        const char *state = json_string_value(json_object_get(app, "state"));
        int v;
        if (!json_is_object(app))
                return -EINVAL;
        if (state && (STREQ(state, "starting") || STREQ(state, "running")))
                return -EAGAIN;
        if (state && STREQ(state, "lost"))
                return -ESRCH;
        if (get_small_uint(app, "status", 255, &v) || get_small_uint(app, "exit_code", 255, &v)) {
                *ret = v;
                return 0;
        }
        if (get_small_uint(app, "signal", MAX_SIGNAL, &v)) {
                *ret = 128 + v;
                return 0;
        }
        return -EINVAL;
}

void app_format_status(const json_t *app, char *buf, size_t n)
{
        int v;
        char name[16];
        snprintf(buf, n, "-");
        if (!app_has_ended(app))
                return;
        if (get_small_uint(app, "signal", MAX_SIGNAL, &v)) {
                app_signal_name(v, name, sizeof(name));
                snprintf(buf, n, "signal %d (%s)", v, name);
        } else if (get_small_uint(app, "exit_code", 255, &v)) {
                snprintf(buf, n, "exit %d", v);
        }
}

void app_format_started(const json_t *unix_seconds, time_t now, char *buf, size_t n)
{
        struct tm started_tm, now_tm;
        if (!json_is_integer(unix_seconds) || json_integer_value(unix_seconds) <= 0) {
                snprintf(buf, n, "-");
                return;
        }
        time_t started = (time_t)json_integer_value(unix_seconds);
        if (!localtime_r(&started, &started_tm) || !localtime_r(&now, &now_tm)) {
                snprintf(buf, n, "-");
                return;
        }
        bool today = started_tm.tm_year == now_tm.tm_year && started_tm.tm_yday == now_tm.tm_yday;
        if (strftime(buf, n, today ? "%H:%M:%S" : "%Y-%m-%d", &started_tm) == 0)
                snprintf(buf, n, "-");
}

void app_format_cpu(const json_t *ns, char *buf, size_t n)
{
        if (!json_is_integer(ns) || json_integer_value(ns) < 0) {
                snprintf(buf, n, "-");
                return;
        }
        uint64_t nanos = (uint64_t)json_integer_value(ns);
        uint64_t s = nanos / 1000000000u;
        /* Two significant parts are enough to compare applications at a glance. */
        if (s < 60)
                snprintf(buf, n, "%.2fs", (double)nanos / 1e9);
        else if (s < 3600)
                snprintf(buf, n, "%llum%02llus", (unsigned long long)(s / 60), (unsigned long long)(s % 60));
        else if (s < 86400)
                snprintf(buf, n, "%lluh%02llum", (unsigned long long)(s / 3600), (unsigned long long)(s % 3600 / 60));
        else
                snprintf(buf, n, "%llud%02lluh", (unsigned long long)(s / 86400),
                         (unsigned long long)(s % 86400 / 3600));
}

bool app_env_is_valid(const char *kv)
{
        const char *eq = strchr(kv, '=');
        if (!eq || eq == kv || isdigit((unsigned char)kv[0]))
                return false;
        for (const char *p = kv; p < eq; p++)
                if (!isalnum((unsigned char)*p) && *p != '_')
                        return false;
        return true;
}

/* One "N" or "N-M" item of a cpu list, N <= M. */
static bool cpu_range_is_valid(const char *item, size_t len)
{
        char copy[48];
        if (len == 0 || len >= sizeof(copy))
                return false;
        memcpy(copy, item, len);
        copy[len] = '\0';
        char *dash = strchr(copy, '-');
        uint64_t lo, hi;
        if (dash)
                *dash = '\0';
        if (parse_uint64(copy, UINT32_MAX, &lo) < 0)
                return false;
        return !dash || (parse_uint64(dash + 1, UINT32_MAX, &hi) == 0 && hi >= lo);
}

bool app_cpulist_is_valid(const char *s)
{
        if (!*s)
                return false;
        for (;;) {
                size_t len = strcspn(s, ",");
                if (!cpu_range_is_valid(s, len))
                        return false;
                if (!s[len])
                        return true;
                s += len + 1;
        }
}

bool detach_scan(struct detach_scanner *s, const char *in, size_t n, char *out, size_t *out_n)
{
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
                if ((unsigned char)in[i] == DETACH_KEY) {
                        if (++s->held == DETACH_COUNT) {
                                s->held = 0;
                                *out_n = o;
                                return true;
                        }
                        continue;
                }
                /* Not a detach after all: the held Ctrl-] were meant for the program. */
                for (; s->held > 0; s->held--)
                        out[o++] = DETACH_KEY;
                out[o++] = in[i];
        }
        *out_n = o;
        return false;
}
