/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tessera-supervisor internals: the state shared by the loop (main.c), the
 * application records (app.c, app-child.c, stem.c, log.c), `open` (files.c)
 * and the request field readers (request.c).  One thread: nothing here is
 * locked.
 */
#ifndef TESSERA_SUPERVISOR_H
#define TESSERA_SUPERVISOR_H

#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "proto.h"

#define LISTEN_FD       3
#define MAX_CONNECTIONS 32
#define MAX_APPS        4096 /* records, stems and exited ones included, until `forget` */

/* Longest strings of a request (bytes, without the NUL). */
#define MAX_PATH_LEN 4096

enum app_state {
        APP_STARTING, /* forked (or a stem given its plan), waiting for `start` */
        APP_RUNNING,  /* exec'd */
        APP_EXITED,   /* reaped; kept until `forget` */
        APP_STEM,     /* forked by `stem`, waiting for a launch plan (no start deadline) */
};

/* Output of a "log" application: a pipe the loop copies into <app>.log in tesserad's directory. */
struct log_relay {
        int pipe_fd; /* read end, non-blocking; -1 once closed */
        int dir_fd;  /* the enclave's log directory, as tesserad passed it */
        int file_fd; /* <app>.log, O_APPEND; -1 when it could not be reopened */
        uint64_t size;
        uint64_t dropped; /* bytes lost to write errors, reported once when the relay ends */
};

struct app {
        char name[64];
        pid_t pid; /* in the enclave's pid namespace */
        enum app_state state;
        int go_fd;                  /* write end of the child's start pipe, until `start` */
        int error_fd;               /* read end of the child's exec error pipe, until `start` */
        int spec_fd;                /* a stem's end of its plan socket; kept once it died, so it is known as one */
        uint64_t start_deadline_ns; /* killed when not started by then; 0 when started or killed */
        struct log_relay log;       /* pipe_fd -1 without "log" */
        int exit_code;              /* -1: none (killed, or not exited) */
        int signal;                 /* -1: none */
        uint64_t cpu_ns;
        uint64_t peak_memory;
        char *error;          /* why it did not start, or NULL */
        char error_field[16]; /* the launch field that error is about */
};

struct supervisor {
        const char *enclave;
        int signal_fd;
        uint64_t started_ns;
        uid_t trusted_uid; /* how root of the parent user namespace (tesserad) appears here */
        int connections[MAX_CONNECTIONS];
        size_t n_connections;
        struct app *apps[MAX_APPS];
        size_t n_apps;
        uint64_t start_timeout_ns; /* for launched children that are never started */
        bool setgroups_denied;     /* a user namespace whose setgroups is "deny" */
        struct rlimit nofile;      /* RLIMIT_NOFILE as the supervisor got it; applications get it back */
        bool shutdown_requested;
};

/* One request: descriptors that came with it and those that go back with the reply. */
struct call {
        json_t *request;
        int fds_in[PROTO_MAX_FDS]; /* a handler that keeps one sets its slot to -1; the rest are closed */
        size_t n_fds_in;
        json_t *result;
        int fds_out[PROTO_MAX_FDS]; /* closed once the reply is sent */
        size_t n_fds_out;
};

typedef int (*op_handler)(struct supervisor *s, struct call *c, struct tessera_error *err);

/* main.c */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* app.c */
int op_launch(struct supervisor *s, struct call *c, struct tessera_error *err);
int op_start(struct supervisor *s, struct call *c, struct tessera_error *err);
int op_collect(struct supervisor *s, struct call *c, struct tessera_error *err);
int op_forget(struct supervisor *s, struct call *c, struct tessera_error *err);
int op_apps(struct supervisor *s, struct call *c, struct tessera_error *err);
int op_kill(struct supervisor *s, struct call *c, struct tessera_error *err);
int op_stem(struct supervisor *s, struct call *c, struct tessera_error *err);
/* Reaps every child that has ended, recording those that are applications. */
void apps_reap(struct supervisor *s);
/* Kills launched children whose start deadline passed. */
void apps_enforce_start_deadlines(struct supervisor *s);
/* Milliseconds until the next start deadline, or -1 when none is pending. */
int apps_poll_timeout_ms(const struct supervisor *s);
size_t apps_count_alive(const struct supervisor *s);

/* log.c */
int log_open(struct log_relay *l, int dir_fd, const char *app, int *ret_write_end, struct tessera_error *err);
/* Copies at most one bounded chunk from the pipe to the file (the loop calls it on POLLIN). */
void log_relay_chunk(struct log_relay *l, const char *app);
/* Copies what the pipe holds now (bounded), e.g. once the application has ended. */
void log_drain(struct log_relay *l, const char *app);
void log_close(struct log_relay *l, const char *app);

/* files.c */
int op_open(struct supervisor *s, struct call *c, struct tessera_error *err);

/* request.c: typed fields of a request; every error names the field */
int req_string(json_t *req, const char *field, bool required, size_t max_len, const char **ret,
               struct tessera_error *err);
int req_bool(json_t *req, const char *field, bool def, bool *ret, struct tessera_error *err);
/* A uid or gid: 0 .. 2^32-2 ((uid_t)-1 means "unchanged" to the kernel). */
int req_id(json_t *req, const char *field, uint32_t *ret, struct tessera_error *err);
/* A record name ([A-Za-z0-9][A-Za-z0-9_.-]{0,62}); NULL when absent and not required. */
int req_name(json_t *req, const char *field, bool required, const char **ret, struct tessera_error *err);
int req_app(json_t *req, const char **ret, struct tessera_error *err);
int req_absolute_path(json_t *req, const char *field, bool required, const char **ret, struct tessera_error *err);

/* Strings of an array field, NULL-terminated in a new array (the strings stay the request's). */
struct string_limits {
        size_t min_count, max_count;
        size_t max_each, max_total; /* bytes */
        bool key_value;             /* each must be "K=V" with a non-empty K */
};
int req_strings(json_t *req, const char *field, const struct string_limits *lim, char ***ret, size_t *ret_n,
                struct tessera_error *err);
int req_ids(json_t *req, const char *field, size_t max_count, gid_t **ret, size_t *ret_n, struct tessera_error *err);
/*
 * "cpus": null/absent (*ret NULL), an array of cpu numbers or a cpulist
 * string ("0-3,6"); every cpu must be one the supervisor may run on.  The
 * set is CPU_ALLOC'd (*ret_size bytes); `desc` gets a cpulist for messages.
 */
int req_cpus(json_t *req, const char *field, cpu_set_t **ret, size_t *ret_size, char *desc, size_t desc_size,
             struct tessera_error *err);

/* app-child.c: what the forked child needs, prepared before the fork */
struct launch_plan {
        char **argv;
        char **envp;
        const char *path; /* the command search path: PATH of envp, or a default */
        const char *cwd;
        bool set_ids; /* false: keep the supervisor's uid, gid and groups */
        uid_t uid;
        gid_t gid;
        gid_t *groups;
        size_t n_groups;
        bool setgroups_denied;
        cpu_set_t *cpus; /* NULL: no pinning */
        size_t cpus_size;
        const char *cpus_desc;
        int stdio[3];   /* become 0, 1, 2 (without a tty) */
        int tty_master; /* >= 0: the pty slave becomes 0-2 and the controlling terminal */
        int go_fd;      /* read end: one byte means "start" */
        int error_fd;   /* write end: one exec_error when a step fails */
        struct rlimit nofile;
};

struct exec_error {
        int code;
        char field[16];
        char msg[496];
};

/* From the fork (or a stem's receipt of its plan) to the exec. */
_Noreturn void app_child_run(const struct launch_plan *p);
/* Default actions, nothing blocked: what every child of the supervisor starts with. */
int app_child_reset_signals(struct exec_error *e);
int app_child_fail(struct exec_error *e, int code, const char *field, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/* stem.c */
/* Forks a stem: it keeps only its end of a SOCK_SEQPACKET pair (ours in *ret_spec_fd) and waits there. */
int stem_fork(int *ret_spec_fd, pid_t *ret_pid, struct tessera_error *err);
/*
 * Sends a stem its plan with the plan's descriptors; the stem then runs
 * app_child_run().  -EPIPE (or -ECONNRESET) when the stem has died.
 */
int stem_send_plan(int spec_fd, const struct launch_plan *p, struct tessera_error *err);

#endif
