/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tessera: the command-line shell of tesserad.  It parses, makes one call per
 * command through libtessera's client, and prints; the daemon decides.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "cli.h"
#include "tessera-build.h"
#include "output.h"
#include "util.h"

#define MAX_COMMAND_OPTIONS 32

static int cmd_help(struct cli *cli, int argc, char **argv);

static const struct option_help change_options[] = {
        {"-c, --cpus N|LIST", "a number of cores (\"2\") or these cores (\"4-5,7\")"},
        {"-m, --memory SIZE[@NUMA]", "memory (\"256M\"), from one NUMA node if given (\"256M@1\")"},
        {"-d, --device ID", "a device (see `tessera devices`)"},
        {NULL},
};

static const struct option_help create_options[] = {
        {"-n, --name NAME", "the enclave's name"},
        {"-c, --cpus N|LIST", "a number of cores (\"2\") or these cores (\"4-5\")"},
        {"-m, --memory SIZE", "memory (\"1G\"), rounded up to whole blocks"},
        {"    --numa LIST", "NUMA nodes to take cores and memory from (\"0,1\")"},
        {"    --hugepages", "back the memory with huge pages"},
        {"-d, --device ID", "a device; repeat for more (replaces the file's devices)"},
        {"    --pids N", "at most N processes"},
        {"    --namespaces LIST", "more namespaces: net, user (\"net,user\")"},
        {"    --root PATH", "root: a directory, a squashfs image, an OCI layout or bundle (default: the host's)"},
        {"    --hostname NAME", "host name inside (default: the enclave's name)"},
        {"    --on-failure ACTION", "keep, reclaim or restart"},
        {"    --owner USER", "give the enclave to USER"},
        {"    --type TYPE", "native or vm"},
        {NULL},
};

/* Every command takes these (cli_getopt handles them). */
static const struct option_help common_options[] = {
        {"-j, --json", "print the daemon's answer as JSON"},
        {"-h, --help", "this help"},
        {NULL},
};

/* Sorted by name: `tessera help` lists them in this order. */
static const struct command commands[] = {
        {"apps", {{"list_apps"}}, cmd_apps, "[NAME]", "list the applications (of one enclave)", NULL},
        {"assign",
         {{"assign_cpus", "cpus", "NAME N|LIST"},
          {"assign_memory", "memory", "NAME SIZE[@NUMA]"},
          {"assign_pci", "device", "NAME ID"}},
         cmd_assign,
         "NAME [--cpus N|LIST] [--memory SIZE[@NUMA]] [--device ID]",
         "give an enclave more cores, memory or a device",
         change_options},
        {"cat", {{"cat_file"}}, cmd_cat, "NAME PATH [--max SIZE]", "print a file from inside an enclave", file_options},
        {"check", {{0}}, cmd_check, "", "check the ledger against the kernel (root only)", NULL},
        {"console", {{0}}, cmd_console, "NAME", "attach to an enclave's console (Ctrl-] three times detaches)", NULL},
        {"cpus", {{"list_cpus"}}, cmd_cpus, "", "list the cores and who owns each", NULL},
        {"create",
         {{"create_enclave"}},
         cmd_create,
         "[FILE.yaml] [--name NAME --cpus N|LIST --memory SIZE ...]",
         "create an enclave from a spec file and/or flags (flags override the file)",
         create_options},
        {"destroy", {{"destroy_enclave"}}, cmd_destroy, "NAME", "destroy an enclave and give back its resources", NULL},
        {"devices", {{"list_pci"}}, cmd_devices, "", "list the devices and who owns each", NULL},
        {"help", {{0}}, cmd_help, "[COMMAND]", "show the commands, or one command's options", NULL},
        {"kill",
         {{0}},
         cmd_kill,
         "NAME APP [--signal SIG]",
         "send an application a signal (default TERM)",
         kill_options},
        {"launch",
         {{"launch_app"}},
         cmd_launch,
         "NAME [--name APP] [--cpus LIST] [--env K=V]... [--cwd DIR] [--user U] [--wait] [--tty] [--] CMD [ARGS...]",
         "start an application in an enclave",
         launch_options},
        {"list", {{"list_enclaves"}}, cmd_list, "", "list the enclaves", NULL},
        {"logs", {{0}}, cmd_logs, "NAME APP [--follow]", "print an application's output", logs_options},
        {"memory",
         {{"list_memory"}},
         cmd_memory,
         "",
         "list the memory blocks of each NUMA node and their owners",
         NULL},
        {"node", {{0}}, cmd_node, "", "summarize this node: cores, memory, NUMA, enclaves, daemon", NULL},
        {"ping", {{"ping_enclave"}}, cmd_ping, "NAME", "check that an enclave's supervisor answers", NULL},
        {"release",
         {{"remove_pci", "device", "NAME ID"}},
         cmd_release,
         "NAME [--cpus N|LIST] [--memory SIZE[@NUMA]] [--device ID]",
         "take cores, memory or a device back from an enclave",
         change_options},
        {"segments",
         {{"list_segments"}},
         cmd_segments,
         "",
         "list the XEMEM shared-memory segments: owner, mode, exporter, attachers",
         NULL},
        {"wait", {{0}}, cmd_wait, "NAME APP", "wait for an application to end and exit with its status", NULL},
        {"write",
         {{"cat_into_file"}},
         cmd_write,
         "NAME PATH [--max SIZE] < DATA",
         "write standard input into a file inside an enclave",
         file_options},
};

int cli_fail(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        fputs("tessera: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        return EXIT_FAILURE;
}

static const char *usage_args(const struct cli *cli)
{
        return cli->alias_args ? cli->alias_args : cli->command->args;
}

int cli_usage(const struct cli *cli, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "tessera: %s: ", cli->invoked_as);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        const char *args = usage_args(cli);
        fprintf(stderr, "usage: tessera %s%s%s\n", cli->invoked_as, *args ? " " : "", args);
        return EXIT_USAGE;
}

static void print_aliases(const struct command *cmd, const char *indent, FILE *f)
{
        if (!cmd->aliases[0].name)
                return;
        fprintf(f, "%salso:", indent);
        for (size_t i = 0; i < ELEMENTSOF(cmd->aliases) && cmd->aliases[i].name; i++)
                fprintf(f, "%s %s%s%s", i ? "," : "", cmd->aliases[i].name, cmd->aliases[i].args ? " " : "",
                        cmd->aliases[i].args ? cmd->aliases[i].args : "");
        fputc('\n', f);
}

static void print_option_help(const struct option_help *options)
{
        for (; options && options->flags; options++)
                printf("  %-26s %s\n", options->flags, options->text);
}

int cli_help(const struct cli *cli)
{
        const struct command *cmd = cli->command;
        const char *args = usage_args(cli);
        printf("usage: tessera %s%s%s\n\n%s\n", cli->invoked_as, *args ? " " : "", args, cmd->summary);
        print_aliases(cmd, "", stdout);
        printf("\nOptions:\n");
        print_option_help(cmd->options);
        print_option_help(common_options);
        return 0;
}

static void print_main_help(FILE *f)
{
        fprintf(f, "usage: tessera [--socket PATH] [--json] COMMAND [ARGS]\n\n"
                   "The shell of tesserad, which partitions this node into enclaves.\n\n"
                   "Commands:\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
                fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
                print_aliases(&commands[i], "           ", f);
        }
        fprintf(f,
                "\nOptions:\n"
                "  -s, --socket PATH  tesserad's socket (default: $TESSERA_SOCKET, else " TESSERA_DEFAULT_SOCKET ")\n"
                "  -j, --json         print the daemon's answer as JSON\n"
                "  -h, --help         this help; `tessera COMMAND --help` shows one command\n"
                "  -V, --version      print the version\n");
}

/* Finds a command by name or alias; fills the alias part of `cli`. */
static const struct command *find_command(const char *name, struct cli *cli)
{
        for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
                const struct command *cmd = &commands[i];
                if (STREQ(cmd->name, name)) {
                        cli->positional = NULL;
                        cli->alias_args = NULL;
                        return cmd;
                }
                for (size_t a = 0; a < ELEMENTSOF(cmd->aliases) && cmd->aliases[a].name; a++)
                        if (STREQ(cmd->aliases[a].name, name)) {
                                cli->positional = cmd->aliases[a].positional;
                                cli->alias_args = cmd->aliases[a].args;
                                return cmd;
                        }
        }
        return NULL;
}

/* Remembers the option getopt refused, as the user typed it, for the usage message. */
static void note_bad_option(struct cli *cli, int argc, char **argv, bool missing_value)
{
        const char *what = missing_value ? "needs a value" : "is not known";
        if (optind >= 1 && optind - 1 < argc && strncmp(argv[optind - 1], "--", 2) == 0) {
                const char *opt = argv[optind - 1];
                int len = (int)strcspn(opt, "=");
                snprintf(cli->bad_option, sizeof(cli->bad_option), "option '%.*s' %s", len, opt, what);
        } else {
                snprintf(cli->bad_option, sizeof(cli->bad_option), "option '-%c' %s", optopt, what);
        }
}

int cli_getopt(struct cli *cli, int argc, char **argv, const struct option *options)
{
        struct option all[MAX_COMMAND_OPTIONS + 3];
        char shortopts[3 * MAX_COMMAND_OPTIONS + 8];
        /* '+' stops at the first operand; ':' first: a missing value comes back as ':', not '?'. */
        strcpy(shortopts, cli->options_first ? "+:jh" : ":jh");
        size_t n = 0, len = strlen(shortopts);
        for (; options && options[n].name && n < MAX_COMMAND_OPTIONS; n++) {
                all[n] = options[n];
                if (options[n].flag || options[n].val >= 128 || !isalnum(options[n].val))
                        continue;
                shortopts[len++] = (char)options[n].val;
                if (options[n].has_arg != no_argument)
                        shortopts[len++] = ':';
                if (options[n].has_arg == optional_argument)
                        shortopts[len++] = ':';
        }
        shortopts[len] = '\0';
        all[n++] = (struct option){"json", no_argument, NULL, 'j'};
        all[n++] = (struct option){"help", no_argument, NULL, 'h'};
        all[n] = (struct option){0};

        for (;;) {
                int c = getopt_long(argc, argv, shortopts, all, NULL);
                if (c == 'j') {
                        cli->json = true;
                        continue;
                }
                if (c == '?' || c == ':') {
                        note_bad_option(cli, argc, argv, c == ':');
                        return '?';
                }
                return c;
        }
}

int cli_option_status(struct cli *cli, int c)
{
        if (c == 'h')
                return cli_help(cli);
        if (c == '?')
                return cli_usage(cli, "%s", cli->bad_option);
        return cli_usage(cli, "option '%c' is not handled", c); /* a command forgot a case */
}

int cli_parse_plain(struct cli *cli, int argc, char **argv, int n_args)
{
        int c;
        while ((c = cli_getopt(cli, argc, argv, NULL)) != -1)
                return cli_option_status(cli, c);
        if (argc - optind > n_args)
                return cli_usage(cli, "unexpected argument '%s'", argv[optind + n_args]);
        if (argc - optind < n_args)
                return cli_usage(cli, "missing %s", usage_args(cli));
        return -1;
}

int cli_out_of_memory(void)
{
        return cli_fail("out of memory");
}

int cli_unexpected_reply(const char *op, const char *expected)
{
        return cli_fail("unexpected reply from tesserad to `%s` (expected %s); are tessera and tesserad the same "
                        "version?",
                        op, expected);
}

int cli_print_table(const struct table *t)
{
        int r = table_print(t, stdout);
        if (r < 0)
                return cli_fail("cannot write to standard output: %s", strerror(-r));
        return 0;
}

int cli_call(struct cli *cli, const char *op, json_t *request, json_t **ret, struct tessera_error *err)
{
        if (!cli->client) {
                int r = tessera_client_connect(cli->socket_path, &cli->client, err);
                if (r < 0)
                        return r;
        }
        void *result = NULL;
        int r = tessera_client_call(cli->client, op, request, &result, err);
        if (r < 0)
                return r;
        *ret = result;
        return 0;
}

int cli_print_json(const json_t *v)
{
        if (json_print_pretty(v, stdout) < 0)
                return cli_fail("cannot write to standard output: %s", strerror(errno));
        return 0;
}

static int cmd_help(struct cli *cli, int argc, char **argv)
{
        int c;
        while ((c = cli_getopt(cli, argc, argv, NULL)) != -1)
                return cli_option_status(cli, c);
        if (optind == argc) {
                print_main_help(stdout);
                return 0;
        }
        if (argc - optind > 1)
                return cli_usage(cli, "expected at most one COMMAND");
        struct cli about = *cli;
        about.command = find_command(argv[optind], &about);
        if (!about.command) {
                cli_fail("unknown command '%s' (see tessera help)", argv[optind]);
                return EXIT_USAGE;
        }
        about.invoked_as = argv[optind];
        return cli_help(&about);
}

static int parse_global_options(struct cli *cli, int argc, char **argv, bool *done)
{
        static const struct option options[] = {
                {"socket", required_argument, NULL, 's'},
                {"json", no_argument, NULL, 'j'},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, 'V'},
                {0},
        };
        int c;
        *done = false;
        /* '+': stop at the command name, whose own options follow it. */
        while ((c = getopt_long(argc, argv, "+:s:jhV", options, NULL)) != -1) {
                switch (c) {
                case 's': cli->socket_path = optarg; break;
                case 'j': cli->json = true; break;
                case 'h':
                        print_main_help(stdout);
                        *done = true;
                        return 0;
                case 'V':
                        printf("tessera %s\n", TESSERA_VERSION);
                        *done = true;
                        return 0;
                default:
                        note_bad_option(cli, argc, argv, c == ':');
                        fprintf(stderr, "tessera: %s\n", cli->bad_option);
                        fprintf(stderr, "usage: tessera [--socket PATH] [--json] COMMAND [ARGS] (see tessera help)\n");
                        *done = true;
                        return EXIT_USAGE;
                }
        }
        return 0;
}

static int finish_output(int status)
{
        if (fflush(stdout) != 0 || ferror(stdout)) {
                cli_fail("cannot write to standard output: %s", strerror(errno));
                return EXIT_FAILURE;
        }
        return status;
}

int main(int argc, char **argv)
{
        struct cli cli = {0};
        bool done;
        opterr = 0; /* messages come from cli_usage(), in one format */
        int status = parse_global_options(&cli, argc, argv, &done);
        if (done)
                return finish_output(status);
        if (optind >= argc) {
                fprintf(stderr, "tessera: no command given\n"
                                "usage: tessera [--socket PATH] [--json] COMMAND [ARGS] (see tessera help)\n");
                return EXIT_USAGE;
        }
        int first = optind;
        cli.invoked_as = argv[first];
        cli.command = find_command(argv[first], &cli);
        if (!cli.command) {
                cli_fail("unknown command '%s' (see tessera help)", argv[first]);
                return EXIT_USAGE;
        }
        optind = 0; /* the command's getopt_long starts over, at its own argv[1] */
        status = cli.command->run(&cli, argc - first, argv + first);
        tessera_client_free(cli.client);
        return finish_output(status);
}
