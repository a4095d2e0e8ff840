/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* tesserad: one per node, in the foreground.  Configuration: defaults, the file, then flags. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "fault.h"
#include "tessera-build.h"
#include "tesserad.h"
#include "util.h"

static void usage(FILE *f)
{
        fprintf(f, "usage: tesserad [--config FILE] [--state-dir DIR] [--socket PATH] [--cgroup-root NAME]\n"
                   "                [--host-cpus LIST] [--host-memory SIZE|N:SIZE,...] [--block-size SIZE]\n"
                   "                [--host-devices ID,...] [--topology XML] [--sync full|normal]\n"
                   "                [--supervisor PATH] [--fault POINT] [--list-fault-points] [--version]\n");
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                {"config", required_argument, NULL, 'c'},
                {"state-dir", required_argument, NULL, 0},
                {"socket", required_argument, NULL, 0},
                {"cgroup-root", required_argument, NULL, 0},
                {"host-cpus", required_argument, NULL, 0},
                {"host-memory", required_argument, NULL, 0},
                {"block-size", required_argument, NULL, 0},
                {"host-devices", required_argument, NULL, 0},
                {"topology", required_argument, NULL, 0},
                {"sync", required_argument, NULL, 0},
                {"supervisor", required_argument, NULL, 0},
                {"fault", required_argument, NULL, 0},
                {"list-fault-points", no_argument, NULL, 'L'},
                {"version", no_argument, NULL, 'V'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        struct tessera_config cfg;
        struct tessera_error err = {0};
        config_init(&cfg);

        /* first pass: only the config file, so flags given anywhere override it */
        const char *config_path = NULL;
        int c, idx;
        opterr = 0;
        while ((c = getopt_long(argc, argv, "c:hV", opts, &idx)) != -1)
                if (c == 'c')
                        config_path = optarg;
        if (!config_path && access(CONFIG_DEFAULT_PATH, R_OK) == 0)
                config_path = CONFIG_DEFAULT_PATH;
        if (config_path && config_load_file(&cfg, config_path, &err) < 0) {
                fprintf(stderr, "tesserad: %s\n", err.msg);
                return 2;
        }
        optind = 0;
        opterr = 1;
        while ((c = getopt_long(argc, argv, "c:hV", opts, &idx)) != -1) {
                switch (c) {
                case 0:
                        if (config_set(&cfg, opts[idx].name, optarg, &err) < 0) {
                                fprintf(stderr, "tesserad: %s\n", err.msg);
                                return 2;
                        }
                        break;
                case 'c': break;
                case 'L':
                        for (const char *const *p = fault_points(); *p; p++)
                                printf("%s\n", *p);
                        return 0;
                case 'V': printf("tesserad %s\n", TESSERA_VERSION); return 0;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "tesserad: unexpected argument '%s'\n", argv[optind]);
                usage(stderr);
                return 2;
        }
        if (config_validate(&cfg, &err) < 0) {
                fprintf(stderr, "tesserad: %s\n", err.msg);
                return 2;
        }
        if (cfg.fault[0] && fault_arm(cfg.fault, &err) < 0) {
                fprintf(stderr, "tesserad: %s\n", err.msg);
                return 2;
        }
        return serve(&cfg);
}
