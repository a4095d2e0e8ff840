/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Runs a fuzz target over every file of its corpus, without libFuzzer, so the corpus
 * (seeds plus every input that once crashed) is a plain regression test.  Prints TAP.
 *   test-fuzz-NAME [DIR_OR_FILE...]     (default: the corpus compiled in)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count, failed;

static void run_file(const char *path)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0) {
                printf("not ok %d - %s: %s\n", ++count, path, strerror(errno));
                failed++;
                if (fd >= 0)
                        close(fd);
                return;
        }
        /* an exact-size heap copy, so ASan sees any read past the end */
        size_t size = (size_t)st.st_size;
        uint8_t *data = malloc(size ? size : 1);
        size_t off = 0;
        while (data && off < size) {
                ssize_t n = read(fd, data + off, size - off);
                if (n <= 0)
                        break;
                off += (size_t)n;
        }
        close(fd);
        if (!data || off != size) {
                printf("not ok %d - %s: short read\n", ++count, path);
                failed++;
                free(data);
                return;
        }
        fflush(stdout);
        LLVMFuzzerTestOneInput(data, size);
        free(data);
        printf("ok %d - %s\n", ++count, path);
        fflush(stdout);
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
        return strcmp((*a)->d_name, (*b)->d_name);
}

static void run_path(const char *path)
{
        struct stat st;
        if (stat(path, &st) < 0) {
                printf("not ok %d - %s: %s\n", ++count, path, strerror(errno));
                failed++;
                return;
        }
        if (!S_ISDIR(st.st_mode)) {
                run_file(path);
                return;
        }
        struct dirent **names;
        int n = scandir(path, &names, NULL, by_name);
        if (n < 0) {
                printf("not ok %d - %s: %s\n", ++count, path, strerror(errno));
                failed++;
                return;
        }
        for (int i = 0; i < n; i++) {
                if (names[i]->d_name[0] != '.') {
                        char file[4096];
                        snprintf(file, sizeof(file), "%s/%s", path, names[i]->d_name);
                        run_file(file);
                }
                free(names[i]);
        }
        free(names);
}

int main(int argc, char **argv)
{
        if (argc > 1) {
                for (int i = 1; i < argc; i++)
                        run_path(argv[i]);
        } else {
#ifdef FUZZ_CORPUS
                run_path(FUZZ_CORPUS);
#else
                fprintf(stderr, "usage: %s DIR_OR_FILE...\n", argv[0]);
                return 2;
#endif
        }
        if (count == 0) {
                printf("not ok 1 - the corpus is empty\n");
                count = failed = 1;
        }
        printf("1..%d\n", count);
        return failed ? 1 : 0;
}
