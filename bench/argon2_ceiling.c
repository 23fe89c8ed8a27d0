/* argon2_ceiling.c — times one argon2id verify at auth's configured
 * parameters, so login throughput can be compared with the hash-bound
 * ceiling (cores ÷ one verify) measured on the same machine in the same run.
 *
 *   linktr-bench-argon2 [verifies]        (default 12)
 *
 * Reads ARGON2_OPSLIMIT and ARGON2_MEMLIMIT_KIB like the auth service
 * (defaults t=2, m=19456 KiB). Prints one line of KEY=VALUE pairs:
 *   opslimit memlimit_kib verifies cores median_ms min_ms ceiling_rps
 * where ceiling_rps = cores * 1000 / median_ms. Exit 0 on success, 1 on a
 * bad argument, 2 when libsodium fails. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#define MAX_VERIFIES 1000

/** The argon2id parameters and how many verifies to time. */
typedef struct bench_params {
    unsigned long long opslimit;
    size_t memlimit;
    int verifies;
} bench_params_t;

/* Reads a positive integer from the environment (or def); -1 when invalid. */
static long long env_num(const char *name, long long def, long long max)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return def;
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno != 0 || *end != '\0' || n < 1 || n > max)
        return -1;
    return n;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Fills p from argv and the environment; prints why and returns -1 when bad. */
static int parse_params(int argc, char **argv, bench_params_t *p)
{
    long long ops = env_num("ARGON2_OPSLIMIT", 2, 64);
    long long kib = env_num("ARGON2_MEMLIMIT_KIB", 19456, 4LL * 1024 * 1024);
    long long n = 12;
    if (argc > 1) {
        char *end = NULL;
        errno = 0;
        n = strtoll(argv[1], &end, 10);
        if (errno != 0 || *end != '\0' || n < 1 || n > MAX_VERIFIES)
            n = -1;
    }
    if (ops < 0 || kib < 8 || n < 0 || argc > 2) {
        fprintf(stderr,
                "usage: linktr-bench-argon2 [verifies 1-%d] "
                "(ARGON2_OPSLIMIT 1-64, ARGON2_MEMLIMIT_KIB >= 8)\n",
                MAX_VERIFIES);
        return -1;
    }
    p->opslimit = (unsigned long long)ops;
    p->memlimit = (size_t)kib * 1024u;
    p->verifies = (int)n;
    return 0;
}

/* Times p->verifies verifies of one fresh hash into ms[]; 0 or -1. */
static int time_verifies(const bench_params_t *p, double *ms)
{
    static const char pw[] = "correct horse battery staple 42";
    char hash[crypto_pwhash_STRBYTES];
    if (crypto_pwhash_str_alg(hash, pw, sizeof pw - 1, p->opslimit, p->memlimit,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return -1;
    for (int i = 0; i < p->verifies; i++) {
        double t0 = now_ms();
        int rc = crypto_pwhash_str_verify(hash, pw, sizeof pw - 1);
        ms[i] = now_ms() - t0;
        if (rc != 0)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    bench_params_t p;
    if (parse_params(argc, argv, &p) != 0)
        return 1;
    if (sodium_init() < 0)
        return 2;
    double *ms = calloc((size_t)p.verifies, sizeof *ms);
    if (!ms)
        return 2;
    int status = 2;
    if (time_verifies(&p, ms) != 0) {
        fprintf(stderr, "linktr-bench-argon2: crypto_pwhash failed (out of memory?)\n");
        goto out;
    }
    qsort(ms, (size_t)p.verifies, sizeof *ms, cmp_double);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1)
        cores = 1;
    double median = ms[p.verifies / 2];
    printf("opslimit=%llu memlimit_kib=%zu verifies=%d cores=%ld median_ms=%.2f min_ms=%.2f "
           "ceiling_rps=%.1f\n",
           p.opslimit, p.memlimit / 1024u, p.verifies, cores, median, ms[0],
           (double)cores * 1000.0 / median);
    status = 0;
out:
    free(ms);
    return status;
}
