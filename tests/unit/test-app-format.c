/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The application commands' pure parts: signals, exit statuses, columns, argument checks, detach key. */
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "../../src/tessera/app-format.h"
#include "tap.h"
#include "util.h"

static void test_parse_signal_case(const char *s, int want)
{
        int sig = -1;
        int r = app_parse_signal(s, &sig);
        ok(r == 0 && sig == want, "signal \"%s\" is %d (got %d, r=%d)", s, want, sig, r);
}

static void test_parse_signal_bad(const char *s)
{
        int sig = -1;
        ok(app_parse_signal(s, &sig) == -EINVAL && sig == -1, "signal \"%s\" is refused", s);
}

static void test_parse_signal(void)
{
        test_parse_signal_case("TERM", SIGTERM);
        test_parse_signal_case("SIGKILL", SIGKILL);
        test_parse_signal_case("int", SIGINT);
        test_parse_signal_case("sigHup", SIGHUP);
        test_parse_signal_case("USR1", SIGUSR1);
        test_parse_signal_case("9", 9);
        test_parse_signal_case("64", 64);
        test_parse_signal_case("RTMIN", SIGRTMIN);
        test_parse_signal_case("SIGRTMIN+2", SIGRTMIN + 2);
        test_parse_signal_case("rtmax-1", SIGRTMAX - 1);
        test_parse_signal_case("RTMAX", SIGRTMAX);
        test_parse_signal_bad("");
        test_parse_signal_bad("0");
        test_parse_signal_bad("65");
        test_parse_signal_bad("-9");
        test_parse_signal_bad("9x");
        test_parse_signal_bad("FOO");
        test_parse_signal_bad("SIG");
        test_parse_signal_bad("TERMX");
        test_parse_signal_bad("RTMIN-1");
        test_parse_signal_bad("RTMAX+1");
        test_parse_signal_bad("RTMIN+99");
}

static void test_signal_name_case(int sig, const char *want)
{
        char buf[16];
        app_signal_name(sig, buf, sizeof(buf));
        ok(STREQ(buf, want), "signal %d is named %s (got %s)", sig, want, buf);
}

static void test_signal_name(void)
{
        test_signal_name_case(SIGKILL, "KILL");
        test_signal_name_case(SIGTERM, "TERM");
        test_signal_name_case(SIGUSR2, "USR2");
        test_signal_name_case(SIGRTMIN, "RTMIN");
        test_signal_name_case(SIGRTMIN + 1, "RTMIN+1");
        test_signal_name_case(SIGRTMAX - 1, "RTMAX-1");
        test_signal_name_case(SIGRTMAX, "RTMAX");
        test_signal_name_case(0, "0");
        test_signal_name_case(99, "99");
        /* Every name given reads back as its number. */
        bool round_trip = true;
        for (int sig = 1; sig <= 64; sig++) {
                char buf[16];
                int back = -1;
                app_signal_name(sig, buf, sizeof(buf));
                if (app_parse_signal(buf, &back) < 0 || back != sig) {
                        diag("signal %d: name %s reads back as %d", sig, buf, back);
                        round_trip = false;
                }
        }
        ok(round_trip, "names of signals 1-64 read back as their numbers");
}

static void test_exit_status_case(const char *json, int want_r, int want_status, const char *what)
{
        json_t *app = json_loads(json, 0, NULL);
        int status = -1;
        int r = app_exit_status(app, &status);
        ok(r == want_r && (r < 0 || status == want_status), "exit status %s: r=%d status=%d (got r=%d status=%d)", what,
           want_r, want_status, r, status);
        json_decref(app);
}

static void test_exit_status(void)
{
        test_exit_status_case("{\"state\":\"exited\",\"exit_code\":0,\"signal\":null,\"status\":0}", 0, 0, "exit 0");
        test_exit_status_case("{\"state\":\"exited\",\"exit_code\":3,\"signal\":null}", 0, 3,
                              "exit 3 without \"status\"");
        test_exit_status_case("{\"state\":\"exited\",\"exit_code\":null,\"signal\":9}", 0, 137, "killed: 128 + signal");
        test_exit_status_case("{\"state\":\"exited\",\"exit_code\":null,\"signal\":15,\"status\":143}", 0, 143,
                              "killed, with status");
        test_exit_status_case("{\"state\":\"running\",\"exit_code\":null,\"signal\":null}", -EAGAIN, 0, "running");
        test_exit_status_case("{\"state\":\"starting\"}", -EAGAIN, 0, "starting");
        test_exit_status_case("{\"state\":\"lost\",\"exit_code\":null,\"signal\":null}", -ESRCH, 0, "lost");
        test_exit_status_case("{\"state\":\"exited\"}", -EINVAL, 0, "ended without a status");
        test_exit_status_case("{\"state\":\"exited\",\"exit_code\":300}", -EINVAL, 0, "exit code out of range");
        test_exit_status_case("[]", -EINVAL, 0, "not an object");
}

static void test_format_status_case(const char *json, const char *want)
{
        json_t *app = json_loads(json, 0, NULL);
        char buf[32];
        app_format_status(app, buf, sizeof(buf));
        ok(STREQ(buf, want), "STATUS of %s is \"%s\" (got \"%s\")", json, want, buf);
        json_decref(app);
}

static void test_format_status(void)
{
        test_format_status_case("{\"state\":\"exited\",\"exit_code\":0,\"signal\":null}", "exit 0");
        test_format_status_case("{\"state\":\"exited\",\"exit_code\":42,\"signal\":null}", "exit 42");
        test_format_status_case("{\"state\":\"exited\",\"exit_code\":null,\"signal\":9}", "signal 9 (KILL)");
        test_format_status_case("{\"state\":\"running\",\"exit_code\":null}", "-");
        test_format_status_case("{\"state\":\"lost\"}", "-");
        test_format_status_case("{}", "-");
}

static void test_format_started(void)
{
        char buf[32];
        /* A fixed zone: the column is local time. */
        setenv("TZ", "UTC", 1);
        tzset();
        time_t now = 1795000000; /* 2026-11-18 11:06:40 UTC */
        json_t *same_day = json_integer(now - 3600);
        json_t *yesterday = json_integer(now - 86400);
        json_t *zero = json_integer(0);
        app_format_started(same_day, now, buf, sizeof(buf));
        ok(STREQ(buf, "10:06:40"), "started today shows the time (got %s)", buf);
        app_format_started(yesterday, now, buf, sizeof(buf));
        ok(STREQ(buf, "2026-11-17"), "started yesterday shows the date (got %s)", buf);
        app_format_started(zero, now, buf, sizeof(buf));
        ok(STREQ(buf, "-"), "no start time shows - (got %s)", buf);
        app_format_started(NULL, now, buf, sizeof(buf));
        ok(STREQ(buf, "-"), "a missing start time shows - (got %s)", buf);
        json_decref(same_day);
        json_decref(yesterday);
        json_decref(zero);
}

static void test_format_cpu_case(long long ns, const char *want)
{
        char buf[32];
        json_t *v = json_integer(ns);
        app_format_cpu(v, buf, sizeof(buf));
        ok(STREQ(buf, want), "CPU of %lld ns is %s (got %s)", ns, want, buf);
        json_decref(v);
}

static void test_format_cpu(void)
{
        test_format_cpu_case(0, "0.00s");
        test_format_cpu_case(420000000, "0.42s");
        test_format_cpu_case(12300000000LL, "12.30s");
        test_format_cpu_case(187000000000LL, "3m07s");
        test_format_cpu_case(7500LL * 1000000000LL, "2h05m");
        test_format_cpu_case((3LL * 86400 + 4 * 3600 + 59) * 1000000000LL, "3d04h");
        test_format_cpu_case(-1, "-");
        char buf[32];
        app_format_cpu(NULL, buf, sizeof(buf));
        ok(STREQ(buf, "-"), "no CPU time shows - (got %s)", buf);
}

static void test_argument_checks(void)
{
        ok(app_env_is_valid("FOO=bar"), "env FOO=bar");
        ok(app_env_is_valid("_X1="), "env with an empty value");
        ok(app_env_is_valid("A=b=c"), "env value with '='");
        ok(!app_env_is_valid("FOO"), "env without '=' is refused");
        ok(!app_env_is_valid("=bar"), "env without a name is refused");
        ok(!app_env_is_valid("1X=2"), "env name starting with a digit is refused");
        ok(!app_env_is_valid("A-B=1"), "env name with '-' is refused");

        ok(app_cpulist_is_valid("2"), "cpus 2");
        ok(app_cpulist_is_valid("2-3,5"), "cpus 2-3,5");
        ok(app_cpulist_is_valid("4-4"), "cpus 4-4");
        ok(!app_cpulist_is_valid(""), "empty cpus are refused");
        ok(!app_cpulist_is_valid("3-1"), "a backwards range is refused");
        ok(!app_cpulist_is_valid("1,"), "a trailing ',' is refused");
        ok(!app_cpulist_is_valid(",1"), "a leading ',' is refused");
        ok(!app_cpulist_is_valid("1,,2"), "an empty item is refused");
        ok(!app_cpulist_is_valid("a"), "a word is refused");
        ok(!app_cpulist_is_valid("1-"), "an open range is refused");
}

/* Feeds `chunks` to one scanner; returns what passed and whether it detached. */
static bool scan_chunks(const char *const *chunks, size_t n, char *passed, size_t *passed_n)
{
        struct detach_scanner s = {0};
        *passed_n = 0;
        for (size_t i = 0; i < n; i++) {
                size_t out_n;
                bool detached = detach_scan(&s, chunks[i], strlen(chunks[i]), passed + *passed_n, &out_n);
                *passed_n += out_n;
                if (detached)
                        return true;
        }
        return false;
}

static void test_detach_case(const char *const *chunks, size_t n, bool want_detach, const char *want_passed,
                             const char *what)
{
        char passed[256];
        size_t passed_n;
        bool detached = scan_chunks(chunks, n, passed, &passed_n);
        ok(detached == want_detach && passed_n == strlen(want_passed) && memcmp(passed, want_passed, passed_n) == 0,
           "detach key: %s", what);
}

static void test_detach(void)
{
        test_detach_case((const char *const[]){"ls\r"}, 1, false, "ls\r", "plain input passes");
        test_detach_case((const char *const[]){"a\x1d\x1d\x1d"
                                               "b"},
                         1, true, "a", "three in a row detach");
        test_detach_case((const char *const[]){"\x1d", "\x1d", "\x1d"}, 3, true, "", "three across reads detach");
        test_detach_case((const char *const[]){"\x1dx"}, 1, false, "\x1dx", "a lone Ctrl-] is passed on");
        test_detach_case((const char *const[]){"\x1d\x1d", "y"}, 2, false, "\x1d\x1dy",
                         "two held Ctrl-] go out before the next key");
        test_detach_case((const char *const[]){"\x1d\x1dz\x1d\x1d\x1d"}, 1, true, "\x1d\x1dz",
                         "an interrupted run starts over");
        test_detach_case((const char *const[]){"\x1d\x1d\x1d\x1d"}, 1, true, "", "the rest after a detach is dropped");
}

int main(void)
{
        test_parse_signal();
        test_signal_name();
        test_exit_status();
        test_format_status();
        test_format_started();
        test_format_cpu();
        test_argument_checks();
        test_detach();
        return done_testing();
}
