/*
 * crypto.c — the argon2id hashing pool, random tokens, SHA-256 and sealing
 * one-time tokens for the mailer (libsodium).
 *
 * The pool: N workers take jobs from a bounded ring of pointers. A job
 * lives on the caller's stack; the caller enqueues a pointer to it and
 * sleeps on the job's own condition variable until a worker has filled in
 * the result. A full ring answers CM_EBUSY at once, so a burst of logins
 * costs a bounded amount of memory and the service can reply 503.
 */
#include "cm/crypto.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cm/process.h"
#include "cm/util.h"

/* OWASP's argon2id recommendation, used when the config leaves them 0. */
#define DEFAULT_OPSLIMIT 2ULL
#define DEFAULT_MEMLIMIT (19u * 1024u * 1024u)
#define MAX_WORKERS 256
#define MAX_QUEUE (1 << 20) /* a ring of pointers: 8 MiB at most */

typedef struct job job_t;

/* What a worker runs; it fills the job's result fields. */
typedef void (*job_fn)(job_t *j, const cm_hashpool_t *p);

struct job {
    job_fn run;
    const char *pw; /* borrowed from the caller, who is blocked until done */
    size_t len;
    const char *hash; /* verify: the stored hash, NUL-terminated, or NULL */
    char out[crypto_pwhash_STRBYTES];
    int rc;
    bool needs_rehash;
    bool done;
    pthread_cond_t cv;
    void *arg; /* free for other job kinds */
};

struct cm_hashpool {
    pthread_mutex_t mu;
    pthread_cond_t not_empty;
    job_t **ring;
    int cap, head, count;
    bool stopping;
    pthread_t *threads;
    int nthreads;
    unsigned long long opslimit;
    size_t memlimit;
    char dummy[crypto_pwhash_STRBYTES]; /* what an unknown user is verified against */
    cm_family_t *jobs_done;             /* counters in the config's registry, or NULL */
    cm_family_t *cpu_seconds;
};

int cm_crypto_init(void)
{
    return sodium_init() < 0 ? CM_ECRYPTO : 0;
}

/* ---- the pool ------------------------------------------------------------------ */

/* The calling thread's CPU time in seconds (0 when the clock is unavailable). */
static double thread_cpu_s(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs one job and counts it with the CPU its thread spent (see cm_hashpool_config_t). */
static void run_counted(job_t *j, const cm_hashpool_t *p)
{
    double t0 = thread_cpu_s();
    j->run(j, p);
    double spent = thread_cpu_s() - t0;
    cm_metric_add(p->cpu_seconds, NULL, spent > 0 ? spent : 0);
    cm_metric_add(p->jobs_done, NULL, 1);
}

static void *worker_main(void *arg)
{
    cm_hashpool_t *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->count == 0 && !p->stopping)
            pthread_cond_wait(&p->not_empty, &p->mu);
        if (p->count == 0)
            break; /* stopping and drained */
        job_t *j = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->count--;
        pthread_mutex_unlock(&p->mu);
        run_counted(j, p);
        pthread_mutex_lock(&p->mu);
        j->done = true;
        pthread_cond_signal(&j->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Enqueues j and waits for a worker to finish it. Returns 0 (result in j->rc) or CM_EBUSY. */
static int submit(cm_hashpool_t *p, job_t *j)
{
    int rc = 0;
    j->done = false;
    pthread_cond_init(&j->cv, NULL);
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        rc = CM_ESTOPPED;
    } else if (p->count == p->cap) {
        rc = CM_EBUSY;
    } else {
        p->ring[(p->head + p->count) % p->cap] = j;
        p->count++;
        pthread_cond_signal(&p->not_empty);
        while (!j->done)
            pthread_cond_wait(&j->cv, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    pthread_cond_destroy(&j->cv);
    return rc;
}

static int check_config(const cm_hashpool_config_t *cfg, cm_hashpool_config_t *eff)
{
    if (!cfg || cfg->workers < 0 || cfg->workers > MAX_WORKERS || cfg->queue_cap < 0 ||
        cfg->queue_cap > MAX_QUEUE)
        return CM_EINVAL;
    *eff = *cfg;
    if (eff->workers == 0) {
        int n = cm_cpu_count();
        eff->workers = n > MAX_WORKERS ? MAX_WORKERS : n;
    }
    if (eff->queue_cap == 0)
        eff->queue_cap = 4 * eff->workers;
    eff->opslimit = eff->opslimit ? eff->opslimit : DEFAULT_OPSLIMIT;
    eff->memlimit = eff->memlimit ? eff->memlimit : DEFAULT_MEMLIMIT;
    if (eff->opslimit < crypto_pwhash_argon2id_OPSLIMIT_MIN ||
        eff->opslimit > crypto_pwhash_argon2id_OPSLIMIT_MAX ||
        eff->memlimit < crypto_pwhash_argon2id_MEMLIMIT_MIN ||
        eff->memlimit > crypto_pwhash_argon2id_MEMLIMIT_MAX)
        return CM_EINVAL;
    return 0;
}

/* The dummy hash: a random password nobody knows, hashed with the pool's parameters. */
static int make_dummy(cm_hashpool_t *p)
{
    char pw[CM_TOKEN_CHARS];
    cm_token_new(pw);
    int rc = crypto_pwhash_str_alg(p->dummy, pw, strlen(pw), p->opslimit, p->memlimit,
                                   crypto_pwhash_ALG_ARGON2ID13);
    sodium_memzero(pw, sizeof pw);
    return rc == 0 ? 0 : CM_ECRYPTO;
}

cm_hashpool_t *cm_hashpool_new(const cm_hashpool_config_t *cfg, int *err)
{
    int dummy_err = 0;
    err = err ? err : &dummy_err;
    cm_hashpool_config_t eff;
    *err = check_config(cfg, &eff);
    if (*err != 0)
        return NULL;
    cm_hashpool_t *p = cm_xcalloc(1, sizeof *p);
    p->opslimit = eff.opslimit;
    p->memlimit = eff.memlimit;
    p->cap = eff.queue_cap;
    p->ring = cm_xcalloc((size_t)p->cap, sizeof(job_t *)); /* the ring holds pointers to jobs */
    p->threads = cm_xcalloc((size_t)eff.workers, sizeof *p->threads);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->not_empty, NULL);
    if (cfg->metrics) {
        p->jobs_done =
            cm_metrics_counter(cfg->metrics, "linktr_hashpool_jobs_total",
                               "Password hashes and verifies the argon2id pool finished.", NULL);
        p->cpu_seconds = cm_metrics_counter(
            cfg->metrics, "linktr_hashpool_cpu_seconds_total",
            "CPU time the argon2id workers spent on them (each thread's own CPU clock).", NULL);
        cm_metric_add(p->jobs_done, NULL, 0); /* shown as 0 from the start, not after the first */
        cm_metric_add(p->cpu_seconds, NULL, 0);
    }
    *err = make_dummy(p);
    for (int i = 0; *err == 0 && i < eff.workers; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0)
            *err = CM_ENOMEM;
        else
            p->nthreads++;
    }
    if (*err != 0) {
        cm_hashpool_free(p);
        return NULL;
    }
    return p;
}

void cm_hashpool_free(cm_hashpool_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->not_empty);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->not_empty);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p->ring);
    free(p);
}

int cm_hashpool_depth(cm_hashpool_t *p)
{
    if (!p)
        return 0;
    pthread_mutex_lock(&p->mu);
    int n = p->count;
    pthread_mutex_unlock(&p->mu);
    return n;
}

/* ---- passwords ------------------------------------------------------------------- */

static void run_hash(job_t *j, const cm_hashpool_t *p)
{
    int rc = crypto_pwhash_str_alg(j->out, j->pw, j->len, p->opslimit, p->memlimit,
                                   crypto_pwhash_ALG_ARGON2ID13);
    j->rc = rc == 0 ? 0 : CM_ECRYPTO;
}

static void run_verify(job_t *j, const cm_hashpool_t *p)
{
    if (!j->hash) {
        /* Unknown account: spend the same work, then fail whatever it says. */
        int ignored = crypto_pwhash_str_verify(p->dummy, j->pw, j->len);
        (void)ignored;
        j->rc = CM_EAUTH;
        return;
    }
    if (crypto_pwhash_str_verify(j->hash, j->pw, j->len) != 0) {
        j->rc = CM_EAUTH;
        return;
    }
    j->needs_rehash = crypto_pwhash_str_needs_rehash(j->hash, p->opslimit, p->memlimit) != 0;
    j->rc = 0;
}

int cm_password_hash(cm_hashpool_t *p, const char *pw, size_t len, char out[crypto_pwhash_STRBYTES])
{
    if (!p || !pw || len > CM_PASSWORD_MAX_LEN || !out)
        return CM_EINVAL;
    job_t j;
    memset(&j, 0, sizeof j);
    j.run = run_hash;
    j.pw = pw;
    j.len = len;
    int rc = submit(p, &j);
    if (rc == 0)
        rc = j.rc;
    if (rc == 0)
        memcpy(out, j.out, sizeof j.out);
    sodium_memzero(&j, sizeof j);
    return rc;
}

int cm_password_verify(cm_hashpool_t *p, const char *hash, const char *pw, size_t len,
                       bool *needs_rehash)
{
    if (needs_rehash)
        *needs_rehash = false;
    if (!p || !pw || len > CM_PASSWORD_MAX_LEN)
        return CM_EINVAL;
    job_t j;
    memset(&j, 0, sizeof j);
    j.run = run_verify;
    j.pw = pw;
    j.len = len;
    /* A stored value that is not a hash string still costs one verify. */
    j.hash = hash && strnlen(hash, crypto_pwhash_STRBYTES) < crypto_pwhash_STRBYTES ? hash : NULL;
    int rc = submit(p, &j);
    if (rc == 0)
        rc = j.rc;
    if (rc == 0 && needs_rehash)
        *needs_rehash = j.needs_rehash;
    sodium_memzero(&j, sizeof j);
    return rc;
}

/* ---- tokens and hashes --------------------------------------------------------------- */

void cm_token_new(char out[CM_TOKEN_CHARS])
{
    uint8_t raw[32];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(out, CM_TOKEN_CHARS, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
}

void cm_sha256_hex(const void *data, size_t len, char out[65])
{
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, data, len);
    cm_hex_encode(h, sizeof h, out);
}

/* ---- sealing ---------------------------------------------------------------------------- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int cm_key_decode(const char *b64, size_t len, uint8_t key[32])
{
    if (!b64 || !key)
        return CM_EPARSE;
    while (len > 0 && is_space(b64[0])) {
        b64++;
        len--;
    }
    while (len > 0 && is_space(b64[len - 1]))
        len--;
    uint8_t raw[32];
    size_t n = 0;
    const char *end = NULL;
    int rc = CM_EPARSE;
    if (len > 0 &&
        sodium_base642bin(raw, sizeof raw, b64, len, NULL, &n, &end,
                          sodium_base64_VARIANT_ORIGINAL) == 0 &&
        end == b64 + len && n == sizeof raw) {
        memcpy(key, raw, sizeof raw);
        rc = 0;
    }
    sodium_memzero(raw, sizeof raw);
    return rc;
}

int cm_seal(const uint8_t pk[32], const char *msg, size_t len, char **out)
{
    if (!out)
        return CM_EINVAL;
    *out = NULL;
    if (!pk || !msg || len > 65536)
        return CM_EINVAL;
    size_t clen = len + crypto_box_SEALBYTES;
    uint8_t *c = cm_xmalloc(clen);
    int rc = CM_ECRYPTO;
    if (crypto_box_seal(c, (const unsigned char *)msg, len, pk) == 0) {
        size_t olen = sodium_base64_ENCODED_LEN(clen, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        *out = cm_xmalloc(olen);
        sodium_bin2base64(*out, olen, c, clen, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        rc = 0;
    }
    free(c);
    return rc;
}

int cm_unseal(const uint8_t pk[32], const uint8_t sk[32], const char *sealed, size_t len,
              char **out)
{
    if (!out)
        return CM_EINVAL;
    *out = NULL;
    if (!pk || !sk || !sealed || len == 0 || len > 2 * 65536)
        return CM_EPARSE;
    size_t cap = len / 4 * 3 + 3, clen = 0;
    uint8_t *c = cm_xmalloc(cap);
    char *m = NULL;
    const char *end = NULL;
    int rc = CM_EPARSE;
    if (sodium_base642bin(c, cap, sealed, len, NULL, &clen, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        end != sealed + len)
        goto out;
    rc = CM_ECRYPTO;
    if (clen < crypto_box_SEALBYTES)
        goto out;
    m = cm_xmalloc(clen - crypto_box_SEALBYTES + 1);
    if (crypto_box_seal_open((unsigned char *)m, c, clen, pk, sk) != 0)
        goto out;
    m[clen - crypto_box_SEALBYTES] = '\0';
    *out = m;
    m = NULL;
    rc = 0;
out:
    free(m);
    free(c);
    return rc;
}
