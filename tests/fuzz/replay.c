/*
 * replay.c — runs a harness over committed inputs without libFuzzer.
 *
 *   fuzz_replay_<target> PATH...   (a file, or a directory of files)
 *
 * Every file goes through LLVMFuzzerTestOneInput once, in name order, so a
 * gcc build under ASan/UBSan replays the seed corpus and every crash found
 * so far (the regression seeds). Each harness's LLVMFuzzerTestOneInput
 * (FUZZ_ENTRY in fuzz.h) runs the input on a thread with a civetweb
 * worker's stack, so the replay runs in the production context too. Exits 0 when all inputs ran, 1
 * when a path cannot be read or holds no input; a broken invariant aborts.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Largest input replayed; no seed comes near it. */
#define REPLAY_MAX_BYTES (1024 * 1024)

/* Lets a harness without set-up link: the weak definition loses to a real one. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

/* Reads a whole file into a new buffer. Returns 0, or -1 (message printed). */
static int read_input(const char *path, uint8_t **out, size_t *len)
{
    int rc = -1;
    uint8_t *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        goto out;
    buf = malloc(REPLAY_MAX_BYTES);
    if (!buf)
        goto out;
    size_t n = fread(buf, 1, REPLAY_MAX_BYTES, f);
    if (ferror(f) || !feof(f))
        goto out;
    *out = buf;
    *len = n;
    buf = NULL;
    rc = 0;
out:
    if (rc != 0)
        fprintf(stderr, "replay: cannot read %s (or it exceeds %d bytes)\n", path,
                REPLAY_MAX_BYTES);
    free(buf);
    if (f)
        fclose(f);
    return rc;
}

static int run_file(const char *path)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (read_input(path, &data, &len) != 0)
        return -1;
    /* Named first, so the input behind a broken invariant is the last line. */
    fprintf(stderr, "replay: %s\n", path);
    /* An exact-size copy, so ASan catches a read one past the input. */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
        free(data);
        return -1;
    }
    memcpy(exact, data, len);
    free(data);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* Runs every regular file in dir; returns how many ran, or -1. */
static int run_dir(const char *dir)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, by_name);
    if (n < 0) {
        fprintf(stderr, "replay: cannot list %s\n", dir);
        return -1;
    }
    int ran = 0, rc = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        int w = snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        struct stat st;
        if (w > 0 && (size_t)w < sizeof path && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(path) != 0)
                rc = -1;
            else
                ran++;
        }
        free(names[i]);
    }
    free(names);
    return rc != 0 ? -1 : ran;
}

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    int total = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        int ran = stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode) ? run_dir(argv[i])
                                                                 : (run_file(argv[i]) ? -1 : 1);
        if (ran < 0)
            return 1;
        total += ran;
    }
    if (total == 0) {
        fprintf(stderr, "replay: no input to run\n");
        return 1;
    }
    fprintf(stderr, "replay: %d input(s) ran\n", total);
    return 0;
}
