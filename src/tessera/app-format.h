/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The pure parts of the application commands (cmd-app.c): signal names and
 * numbers, exit statuses and how `apps` shows them, the checks made on
 * `launch` arguments before the call, and the console's detach key.  No I/O,
 * so the unit tests drive them directly.
 */
#ifndef TESSERA_CLI_APP_FORMAT_H
#define TESSERA_CLI_APP_FORMAT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/*
 * A signal as `kill --signal` takes it: a number (1..64), or a name with or
 * without "SIG", in any case ("TERM", "sigkill", "USR1", "RTMIN+2",
 * "RTMAX-1").  -EINVAL for anything else.
 */
int app_parse_signal(const char *s, int *ret);
/* 9 -> "KILL", 35 -> "RTMIN+1"; a number in decimal when it has no name. */
void app_signal_name(int sig, char *buf, size_t n);

/*
 * The status a shell would report for an ended application: "status", else
 * "exit_code", else 128 + "signal".  -EAGAIN while it runs (starting,
 * running), -ESRCH when it was lost (no status is known), -EINVAL when the
 * object has none of these.
 */
int app_exit_status(const json_t *app, int *ret);

/* The STATUS column: "exit 0", "signal 9 (KILL)", or "-" while it runs or when lost (no status known). */
void app_format_status(const json_t *app, char *buf, size_t n);
/* The STARTED column: "HH:MM:SS" (local time) when `now` is the same day, else "YYYY-MM-DD"; "-" if not a time. */
void app_format_started(const json_t *unix_seconds, time_t now, char *buf, size_t n);
/* The CPU column from nanoseconds: "0.42s", "12.30s", "3m07s", "2h05m", "3d04h"; "-" if not a number. */
void app_format_cpu(const json_t *ns, char *buf, size_t n);

/* --env: "NAME=value", NAME a shell variable name (letters, digits, '_', not starting with a digit). */
bool app_env_is_valid(const char *kv);
/* --cpus: a cpu list ("2", "2-3,5"): increasing ranges, no empty items. */
bool app_cpulist_is_valid(const char *s);

/*
 * The console's detach key: Ctrl-] typed three times in a row.  The
 * Ctrl-] bytes of a possible detach are held back; when another byte
 * follows they go out in front of it, so a program inside still gets a
 * lone Ctrl-].  detach_scan() copies `in` to `out` (room for n + 2 bytes:
 * the held ones) and returns true when the third Ctrl-] came: then the
 * bytes before it are in `out` and the rest of `in` is dropped.
 */
#define DETACH_KEY   0x1d /* Ctrl-] */
#define DETACH_COUNT 3
struct detach_scanner {
        unsigned held; /* Ctrl-] typed in a row so far, not yet passed on */
};
bool detach_scan(struct detach_scanner *s, const char *in, size_t n, char *out, size_t *out_n);

#endif
