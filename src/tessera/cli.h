/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the shell's command groups share: the command table entry, the
 * invocation state, and the helpers that keep messages, exit statuses and
 * option handling the same in every command.
 *
 * Exit statuses: 0 success, 1 failure (one line "tessera: ..." on stderr, or a
 * negative answer such as a failed ping or check), 2 usage error.
 */
#ifndef TESSERA_CLI_H
#define TESSERA_CLI_H

#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>

#include "tessera/tessera.h"

#define EXIT_USAGE 2

struct cli;

/* Another name for a command.  With `positional` set, the alias takes that request field as
 * a second positional argument (Hobbes' `assign_cpus NAME N`), with `args` as its usage. */
struct command_alias {
        const char *name;
        const char *positional;
        const char *args;
};

/* One line of `tessera COMMAND --help`: "-c, --cpus N|LIST" and what it does. */
struct option_help {
        const char *flags;
        const char *text;
};

struct command {
        const char *name;
        struct command_alias aliases[4];
        int (*run)(struct cli *cli, int argc, char **argv);
        const char *args;                  /* usage after the name, e.g. "NAME" */
        const char *summary;               /* one line for `tessera help` */
        const struct option_help *options; /* for `tessera COMMAND --help`, ending with {NULL}; or NULL */
};

struct cli {
        const char *socket_path; /* --socket, or NULL for $TESSERA_SOCKET / the default */
        bool json;
        const struct command *command;
        const char *invoked_as;        /* the name or alias typed */
        const char *positional;        /* from the alias, see struct command_alias */
        const char *alias_args;        /* usage of that alias, or NULL */
        struct tessera_client *client; /* connected on first call */
        char bad_option[64];           /* what cli_getopt() refused */
        bool options_first; /* cli_getopt stops at the first operand (launch: the command's options follow) */
};

/* "tessera: MESSAGE" on stderr; returns 1 (EXIT_FAILURE). */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "tessera: COMMAND: MESSAGE" and "usage: tessera COMMAND ARGS" on stderr; returns EXIT_USAGE. */
int cli_usage(const struct cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The command's usage and options on stdout (for --help); returns 0. */
int cli_help(const struct cli *cli);

/*
 * getopt_long over a command's own options (`options`, terminated by a zero
 * entry; short options are derived from it) plus --json and --help, which
 * every command takes.  Returns the next option's `val`, or -1 after the last;
 * handles --json itself; returns 'h' for --help and '?' for an unknown option
 * or a missing argument: hand those to cli_option_status().
 */
int cli_getopt(struct cli *cli, int argc, char **argv, const struct option *options);
/* For 'h': prints the help and returns 0; else the usage error for the refused option (EXIT_USAGE). */
int cli_option_status(struct cli *cli, int c);

/*
 * For commands whose only options are --json and --help: parses them and wants
 * exactly `n_args` positional arguments (argv[optind]...).  Returns -1 to go
 * on, else the status the command must exit with now.
 */
int cli_parse_plain(struct cli *cli, int argc, char **argv, int n_args);

/* "out of memory"; returns 1. */
int cli_out_of_memory(void);
/* The daemon answered `op` with something else than `expected` (another version?); returns 1. */
int cli_unexpected_reply(const char *op, const char *expected);
/* The table on stdout; returns 0, or 1 when stdout failed. */
struct table;
int cli_print_table(const struct table *t);

/* Connects on first use and makes one call; *ret is a new reference. */
int cli_call(struct cli *cli, const char *op, json_t *request, json_t **ret, struct tessera_error *err);
/* Prints `v` as --json wants it; returns 0 or 1 when stdout failed. */
int cli_print_json(const json_t *v);

/* cmd-node.c */
int cmd_node(struct cli *cli, int argc, char **argv);
int cmd_cpus(struct cli *cli, int argc, char **argv);
int cmd_memory(struct cli *cli, int argc, char **argv);
int cmd_devices(struct cli *cli, int argc, char **argv);
int cmd_segments(struct cli *cli, int argc, char **argv);

/* cmd-enclave.c */
int cmd_list(struct cli *cli, int argc, char **argv);
int cmd_create(struct cli *cli, int argc, char **argv);
int cmd_destroy(struct cli *cli, int argc, char **argv);
int cmd_ping(struct cli *cli, int argc, char **argv);
int cmd_assign(struct cli *cli, int argc, char **argv);
int cmd_release(struct cli *cli, int argc, char **argv);
int cmd_check(struct cli *cli, int argc, char **argv);

/* cmd-app.c */
int cmd_launch(struct cli *cli, int argc, char **argv);
int cmd_apps(struct cli *cli, int argc, char **argv);
int cmd_logs(struct cli *cli, int argc, char **argv);
int cmd_kill(struct cli *cli, int argc, char **argv);
int cmd_wait(struct cli *cli, int argc, char **argv);
int cmd_console(struct cli *cli, int argc, char **argv);
int cmd_cat(struct cli *cli, int argc, char **argv);
int cmd_write(struct cli *cli, int argc, char **argv);
extern const struct option_help launch_options[], logs_options[], kill_options[], file_options[];

#endif
