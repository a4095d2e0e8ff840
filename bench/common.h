/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the benchmarks of bench/ share: samples and their statistics, running
 * programs as a shell would (fork, exec, wait) with a command log, a private
 * tesserad (state dir, socket and cgroup root named with the benchmark's
 * pid), a crun bundle and the hugetlb mount crun needs on this hybrid host,
 * the undo of all of it, and the pieces of the printed report.
 *
 * Every benchmark owns one struct bench_run: its temporary directory, its
 * command log, the first fatal error and the notes printed under the table.
 */
#ifndef TESSERA_BENCH_COMMON_H
#define TESSERA_BENCH_COMMON_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "tessera/tessera.h"

#define CGROUP_FS  "/sys/fs/cgroup"
#define HUGETLB_V1 CGROUP_FS "/hugetlb"

/* ---- samples and their statistics ---- */

struct samples {
        double *ms;
        size_t n, cap;
        char failed[256]; /* why this could not be measured; "" when it could */
};

void samples_add(struct samples *s, double ms);
void samples_fail(struct samples *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void samples_free(struct samples *s);
/* q = 0.5 is the median (mean of the middle two when n is even); otherwise the nearest rank. */
double quantile_of(const double *ms, size_t n, double q);
/* NAN when the samples failed or are empty. */
double median(const struct samples *s);
double p90(const struct samples *s);

/*
 * A process's time on a CPU and waiting on a run queue, in ns, from
 * /proc/PID/schedstat: what it spent itself on a call, apart from what it
 * waited for (the disk, the kernel, a CPU busy with other work).
 */
struct sched_times {
        uint64_t on_cpu, waiting;
};

bool sched_times_read(pid_t pid, struct sched_times *ret);

/* ---- one benchmark run ---- */

struct bench_run {
        const char *prog; /* "mgmt", "launch": the prefix of messages */
        char build[PATH_MAX], source[PATH_MAX];
        const char *sync; /* tesserad's --sync */
        char tesserad[PATH_MAX], tessera[PATH_MAX], git[PATH_MAX];
        /* everything below is owned and undone by bench_run_close() */
        char tmp[PATH_MAX];
        int log_fd, devnull;
        char fatal[512], notes[8192];
        const char *reasons[32]; /* distinct reasons of n/a cells, numbered from 1 in the notes */
        size_t n_reasons;
        bool interrupted;
};

#define BENCH_RUN_INIT(name)                                                                                           \
        {                                                                                                              \
                .prog = (name), .sync = "full", .log_fd = -1, .devnull = -1                                            \
        }

/*
 * Blocks SIGINT, SIGTERM and SIGHUP (polled with interrupted() between steps,
 * so an interruption never lands in the middle of an operation whose undo is
 * needed), ignores SIGPIPE, makes the temporary directory and opens the
 * command log and /dev/null.  Prints why on failure.
 */
int bench_run_open(struct bench_run *r);
/* Closes the log and removes the temporary directory. */
void bench_run_close(struct bench_run *r);
bool interrupted(struct bench_run *r);
void note(struct bench_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Keeps the first fatal error; returns -1. */
int fatal(struct bench_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void sleep_ms(unsigned ms);
double ms_since(uint64_t t0);
/* A count from 1 to 100000. */
int parse_count(const char *s, unsigned *ret);
/*
 * The build dir: `given`, else the parent of this binary's directory
 * (BUILD/bench/PROG), else the configured one; fills tesserad and tessera.
 */
int bench_find_build(struct bench_run *r, const char *given);

/* ---- running programs ---- */

/* PATH first, then the usual system directories (sudo and cron trim PATH); "" when missing. */
bool find_tool(const char *name, char *buf, size_t size);

struct spawn_opts {
        const char *cwd;
        int out_fd;       /* stdout; -1: /dev/null */
        int err_fd;       /* stderr; -1: the command log */
        bool new_session; /* out of the terminal's process group: a ^C must not reach a daemon before its undo */
        int deathsig;     /* sent to the child if this process dies without cleaning up */
};

/* fork + exec of argv (argv[0] absolute), stdin /dev/null; the pid, or a negative errno. */
pid_t spawn(struct bench_run *r, char *const argv[], const struct spawn_opts *o);
/* Exit status (0-255, 128+N for signal N), or a negative errno. */
int wait_status(pid_t pid);
/* The last line the command log got since `from`: what a failing tool said. */
void log_tail(struct bench_run *r, off_t from, char *buf, size_t size);
/*
 * Runs argv to completion like a shell would (fork, exec, wait), stdout to
 * /dev/null; *ret_ms is the wall time from fork to reaping.  On failure `why`
 * says which tool and what it printed last.
 */
int run_timed(struct bench_run *r, char *const argv[], const char *cwd, double *ret_ms, char *why, size_t size);
int run_quiet(struct bench_run *r, char *const argv[]);
/* First line of a command's stdout, or "" (for versions and the commit). */
void capture_line(struct bench_run *r, char *const argv[], char *buf, size_t size);

/* ---- small kernel facts ---- */

void read_loadavg(char *buf, size_t size);
unsigned long rss_kb(pid_t pid);
bool file_has_word(const char *path, const char *word);
/* The hierarchy id /proc/cgroups gives a controller: 0 means the v2 (default) hierarchy. */
int controller_hierarchy(const char *controller);
bool is_mountpoint(const char *path);
/* Kills what runs in a cgroup directory tree we made, then removes the tree (deepest first). */
void cgroup_tree_remove(const char *path);
/* `name` under every v1 controller and at the v2 root. */
void cgroup_remove_everywhere(const char *name);
/* rm -rf, not crossing into what is mounted below. */
void remove_tree(const char *path);

/* ---- a private tesserad ---- */

struct daemon {
        const char *tag;
        pid_t pid;
        char state[PATH_MAX], socket[PATH_MAX], log[PATH_MAX], cgroup_root[64];
        const char *const *extra; /* flags after the common ones */
        struct tessera_client *client;
        bool cleaned;
};

/* Paths in the run's temporary directory, cgroup root "tessera-bench-TAG-PID". */
void daemon_init(struct bench_run *r, struct daemon *d, const char *tag, const char *const *extra);
/* Starts tesserad with this daemon's private paths and waits until it answers `node`. */
int daemon_start(struct bench_run *r, struct daemon *d);
int daemon_connect(struct daemon *d, struct tessera_error *err);
void daemon_stop(struct daemon *d);
void daemon_log_tail(struct daemon *d, char *buf, size_t size);
/*
 * Leaves nothing of a daemon behind: its enclaves destroyed (restarting it on
 * its state when it died, as its enclaves outlive it), the daemon stopped, and
 * whatever is still in its cgroup root killed and removed.
 */
void daemon_cleanup(struct bench_run *r, struct daemon *d, bool destroy_enclaves);

/* ---- crun ---- */

struct crun_env {
        char bin[PATH_MAX], busybox[PATH_MAX]; /* "" when not installed */
        bool prepare;                          /* --prepare-crun: may mount the v1 hugetlb hierarchy */
        /* everything below is owned and undone by crun_env_cleanup() */
        char root[PATH_MAX], bundle[PATH_MAX], cgroup[64], live[64];
        bool hugetlb_mounted, hugetlb_dir_made;
        char hugetlb_note[256];
};

/* Finds crun and busybox; `prepare` from --prepare-crun or TESSERA_BENCH_PREPARE_CRUN. */
void crun_env_init(struct crun_env *c);
/*
 * A bundle in the run's temporary directory: busybox-static as the rootfs,
 * `crun spec`'s config.json made to run `args` without a terminal, in the
 * cgroup "tessera-bench-crun-PID".
 */
int crun_bundle_make(struct bench_run *r, struct crun_env *c, const char *const *args, char *why, size_t size);
/*
 * crun 1.8 refuses hybrid cgroups while v2 holds a controller: move hugetlb
 * to a v1 hierarchy (a host-wide change, only with --prepare-crun).  Must
 * happen before any tesserad of ours opens the hierarchies, and be undone
 * before one does.
 */
void hugetlb_mount(struct crun_env *c);
void hugetlb_unmount(struct crun_env *c);
/*
 * `crun --root ROOT VERB [--bundle B (create, run)] [--force (delete)] OPTS... ID TAIL...`,
 * timed like run_timed; `opts` and `tail` may be NULL.
 */
int crun_cmd(struct bench_run *r, struct crun_env *c, const char *verb, const char *const *opts, const char *id,
             const char *const *tail, double *ms, char *why, size_t size);
/* The live container deleted, its cgroups removed, the hugetlb mount undone. */
void crun_env_cleanup(struct bench_run *r, struct crun_env *c);

/* ---- the report ---- */

/* "median (p90)", or "n/a [k]" pointing at a numbered note that cells failing for the same reason share. */
void fmt_cell(struct bench_run *r, const struct samples *s, char *buf, size_t size);
void fmt_ratio(double num, double den, char *buf, size_t size);
const char *verdict(bool ok);
/* The title line, hardware, kernel, load, commit and tesserad's sync and state file system. */
void print_run_header(struct bench_run *r, const char *title, const char *load_start, const char *load_end);

#endif
