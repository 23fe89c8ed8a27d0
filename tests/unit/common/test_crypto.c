/*
 * Tests for common/src/crypto.c. The .c file is included so the full-queue
 * test can park the single worker on a job of its own (a gate it opens
 * later), which makes "the queue is full" deterministic instead of a race
 * against a slow hash.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "../../../common/src/crypto.c"

/* The smallest argon2id parameters: the tests are about behaviour, not cost. */
static const cm_hashpool_config_t small = {
    .workers = 1, .queue_cap = 4, .opslimit = 1, .memlimit = 8192};

static int setup_sodium(void **state)
{
    (void)state;
    return cm_crypto_init() == 0 ? 0 : -1;
}

static cm_hashpool_t *new_pool(const cm_hashpool_config_t *cfg)
{
    int err = 1;
    cm_hashpool_t *p = cm_hashpool_new(cfg, &err);
    assert_non_null(p);
    assert_int_equal(err, 0);
    return p;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- passwords ----------------------------------------------------------------- */

static void a_hashed_password_verifies_and_needs_no_rehash(void **state)
{
    (void)state;
    cm_hashpool_t *p = new_pool(&small);
    char hash[crypto_pwhash_STRBYTES];
    const char pw[] = "correct horse battery staple";
    assert_int_equal(cm_password_hash(p, pw, strlen(pw), hash), 0);
    assert_true(strncmp(hash, "$argon2id$", 10) == 0);
    bool rehash = true;
    assert_int_equal(cm_password_verify(p, hash, pw, strlen(pw), &rehash), 0);
    assert_false(rehash);
    cm_hashpool_free(p);
}

static void a_wrong_password_fails_with_eauth(void **state)
{
    (void)state;
    cm_hashpool_t *p = new_pool(&small);
    char hash[crypto_pwhash_STRBYTES];
    assert_int_equal(cm_password_hash(p, "s3cret-pass", 11, hash), 0);
    bool rehash = true;
    assert_int_equal(cm_password_verify(p, hash, "s3cret-pasS", 11, &rehash), CM_EAUTH);
    assert_false(rehash);
    /* Only the given length counts: a prefix of the password is not the password. */
    assert_int_equal(cm_password_verify(p, hash, "s3cret-pass", 10, NULL), CM_EAUTH);
    assert_int_equal(cm_password_verify(p, "not a hash", "s3cret-pass", 11, NULL), CM_EAUTH);
    cm_hashpool_free(p);
}

static void an_unknown_user_verify_fails_with_eauth_whatever_the_password(void **state)
{
    (void)state;
    cm_hashpool_t *p = new_pool(&small);
    assert_int_equal(cm_password_verify(p, NULL, "anything", 8, NULL), CM_EAUTH);
    assert_int_equal(cm_password_verify(p, NULL, "", 0, NULL), CM_EAUTH);
    cm_hashpool_free(p);
}

static void needs_rehash_is_true_when_the_pool_parameters_differ(void **state)
{
    (void)state;
    cm_hashpool_t *weak = new_pool(&small);
    cm_hashpool_config_t cfg = small;
    cfg.opslimit = 2;
    cfg.memlimit = 16384;
    cm_hashpool_t *strong = new_pool(&cfg);
    char hash[crypto_pwhash_STRBYTES];
    assert_int_equal(cm_password_hash(weak, "rehash-me-please", 16, hash), 0);
    bool rehash = false;
    assert_int_equal(cm_password_verify(strong, hash, "rehash-me-please", 16, &rehash), 0);
    assert_true(rehash);
    assert_int_equal(cm_password_verify(weak, hash, "rehash-me-please", 16, &rehash), 0);
    assert_false(rehash);
    cm_hashpool_free(weak);
    cm_hashpool_free(strong);
}

static void an_overlong_password_is_refused_with_einval_before_hashing(void **state)
{
    (void)state;
    cm_hashpool_t *p = new_pool(&small);
    char *pw = cm_xcalloc(CM_PASSWORD_MAX_LEN + 1, 1);
    memset(pw, 'x', CM_PASSWORD_MAX_LEN + 1);
    char hash[crypto_pwhash_STRBYTES];
    assert_int_equal(cm_password_hash(p, pw, CM_PASSWORD_MAX_LEN + 1, hash), CM_EINVAL);
    assert_int_equal(cm_password_verify(p, NULL, pw, CM_PASSWORD_MAX_LEN + 1, NULL), CM_EINVAL);
    assert_int_equal(cm_password_hash(p, pw, CM_PASSWORD_MAX_LEN, hash), 0);
    assert_int_equal(cm_password_verify(p, hash, pw, CM_PASSWORD_MAX_LEN, NULL), 0);
    free(pw);
    cm_hashpool_free(p);
}

static void a_bad_pool_config_is_refused_with_einval(void **state)
{
    (void)state;
    cm_hashpool_config_t cfg = small;
    int err = 0;
    cfg.workers = -1;
    assert_null(cm_hashpool_new(&cfg, &err));
    assert_int_equal(err, CM_EINVAL);
    cfg = small;
    cfg.memlimit = 1024; /* below argon2id's minimum */
    assert_null(cm_hashpool_new(&cfg, &err));
    assert_int_equal(err, CM_EINVAL);
    cfg = small;
    cfg.queue_cap = -3;
    assert_null(cm_hashpool_new(&cfg, &err));
    assert_int_equal(err, CM_EINVAL);
    assert_null(cm_hashpool_new(NULL, &err));
    assert_int_equal(err, CM_EINVAL);
}

/* A job that holds the worker until the test opens the gate. */
typedef struct gate {
    cm_hashpool_t *pool;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool started, open;
    int rc;
} gate_t;

static void run_gate(job_t *j, const cm_hashpool_t *p)
{
    (void)p;
    gate_t *g = j->arg;
    pthread_mutex_lock(&g->mu);
    g->started = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    j->rc = 0;
}

static void *submit_gate(void *arg)
{
    gate_t *g = arg;
    job_t j;
    memset(&j, 0, sizeof j);
    j.run = run_gate;
    j.arg = g;
    g->rc = submit(g->pool, &j);
    return NULL;
}

typedef struct queued {
    cm_hashpool_t *pool;
    char hash[crypto_pwhash_STRBYTES];
    int rc;
} queued_t;

static void *hash_in_thread(void *arg)
{
    queued_t *q = arg;
    q->rc = cm_password_hash(q->pool, "waiting-in-line", 15, q->hash);
    return NULL;
}

static void wait_until(bool (*cond)(void *), void *arg)
{
    for (int i = 0; i < 10000 && !cond(arg); i++)
        sleep_ms(1);
    assert_true(cond(arg));
}

static bool gate_started(void *arg)
{
    gate_t *g = arg;
    pthread_mutex_lock(&g->mu);
    bool s = g->started;
    pthread_mutex_unlock(&g->mu);
    return s;
}

static bool one_job_waits(void *arg)
{
    return cm_hashpool_depth(arg) == 1;
}

static void a_full_queue_answers_ebusy_at_once_and_the_queued_job_still_completes(void **state)
{
    (void)state;
    cm_hashpool_config_t cfg = small;
    cfg.queue_cap = 1;
    cm_hashpool_t *p = new_pool(&cfg);
    gate_t g = {.pool = p, .rc = 1};
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    queued_t q = {.pool = p, .rc = 1};
    pthread_t tg, tq;
    assert_int_equal(pthread_create(&tg, NULL, submit_gate, &g), 0);
    wait_until(gate_started, &g); /* the only worker is now busy */
    assert_int_equal(cm_hashpool_depth(p), 0);
    assert_int_equal(pthread_create(&tq, NULL, hash_in_thread, &q), 0);
    wait_until(one_job_waits, p); /* the only queue slot is now taken */

    char hash[crypto_pwhash_STRBYTES];
    int64_t t0 = cm_now_mono_ms();
    assert_int_equal(cm_password_hash(p, "one-too-many", 12, hash), CM_EBUSY);
    assert_int_equal(cm_password_verify(p, NULL, "one-too-many", 12, NULL), CM_EBUSY);
    assert_true(cm_now_mono_ms() - t0 < 1000); /* refused at once, not after a wait */
    assert_int_equal(cm_hashpool_depth(p), 1);

    pthread_mutex_lock(&g.mu);
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    pthread_join(tg, NULL);
    pthread_join(tq, NULL);
    assert_int_equal(g.rc, 0);
    assert_int_equal(q.rc, 0);
    assert_int_equal(cm_password_verify(p, q.hash, "waiting-in-line", 15, NULL), 0);
    assert_int_equal(cm_hashpool_depth(p), 0);
    cm_hashpool_free(p);
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
}

static void many_concurrent_hashes_on_two_workers_all_verify(void **state)
{
    (void)state;
    cm_hashpool_config_t cfg = small;
    cfg.workers = 2;
    cfg.queue_cap = 16;
    cm_hashpool_t *p = new_pool(&cfg);
    enum { N = 8 };
    queued_t q[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        q[i] = (queued_t){.pool = p, .rc = 1};
        assert_int_equal(pthread_create(&t[i], NULL, hash_in_thread, &q[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(q[i].rc, 0);
        assert_int_equal(cm_password_verify(p, q[i].hash, "waiting-in-line", 15, NULL), 0);
    }
    /* Fresh salt every time: equal passwords never give equal hashes. */
    assert_string_not_equal(q[0].hash, q[1].hash);
    cm_hashpool_free(p);
}

/* The value of an unlabelled series in m's rendering (NAN when absent). */
static double metric_value(cm_metrics_t *m, const char *name)
{
    cm_buf_t b;
    cm_buf_init(&b);
    cm_metrics_render(m, &b);
    cm_buf_puts(&b, "");
    char *text = cm_buf_steal(&b);
    double v = NAN;
    size_t n = strlen(name);
    for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
        if (strncmp(l, name, n) == 0 && l[n] == ' ')
            v = strtod(l + n + 1, NULL);
    free(text);
    return v;
}

static void the_pool_counts_every_finished_job_and_the_cpu_it_took(void **state)
{
    (void)state;
    cm_metrics_t *m = cm_metrics_new();
    cm_hashpool_config_t cfg = small;
    cfg.metrics = m;
    cm_hashpool_t *p = new_pool(&cfg);
    assert_true(metric_value(m, "linktr_hashpool_jobs_total") == 0);
    char hash[crypto_pwhash_STRBYTES];
    assert_int_equal(cm_password_hash(p, "counted once", 12, hash), 0);
    assert_int_equal(cm_password_verify(p, hash, "counted once", 12, NULL), 0);
    assert_int_equal(cm_password_verify(p, NULL, "unknown user", 12, NULL), CM_EAUTH);
    /* Refused before reaching a worker: no hash, nothing counted. */
    assert_int_equal(cm_password_verify(p, hash, "x", CM_PASSWORD_MAX_LEN + 1, NULL), CM_EINVAL);
    assert_true(metric_value(m, "linktr_hashpool_jobs_total") == 3);
    double cpu = metric_value(m, "linktr_hashpool_cpu_seconds_total");
    assert_true(cpu > 0 && cpu < 60);

    /* The worker's own CPU clock: a job that waits 300 ms on a condition
     * variable adds its wait to the jobs but almost nothing to the CPU. */
    gate_t g = {.pool = p, .rc = 1};
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    pthread_t tg;
    assert_int_equal(pthread_create(&tg, NULL, submit_gate, &g), 0);
    wait_until(gate_started, &g);
    sleep_ms(300);
    pthread_mutex_lock(&g.mu);
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    pthread_join(tg, NULL);
    assert_int_equal(g.rc, 0);
    assert_true(metric_value(m, "linktr_hashpool_jobs_total") == 4);
    assert_true(metric_value(m, "linktr_hashpool_cpu_seconds_total") - cpu < 0.1);
    cm_hashpool_free(p);
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
    cm_metrics_free(m);
}

/* ---- tokens and hashes ------------------------------------------------------------ */

static void tokens_are_43_base64url_chars_and_differ(void **state)
{
    (void)state;
    char a[CM_TOKEN_CHARS], b[CM_TOKEN_CHARS];
    cm_token_new(a);
    cm_token_new(b);
    assert_int_equal(strlen(a), 43);
    assert_int_equal(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                     43);
    assert_string_not_equal(a, b);
}

static void sha256_hex_matches_the_known_vectors(void **state)
{
    (void)state;
    char out[65];
    cm_sha256_hex("abc", 3, out);
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    cm_sha256_hex("", 0, out);
    assert_string_equal(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

/* ---- keys and sealing ---------------------------------------------------------------- */

static void key_decode_accepts_32_bytes_of_base64_with_surrounding_white_space(void **state)
{
    (void)state;
    uint8_t raw[32], key[32];
    for (int i = 0; i < 32; i++)
        raw[i] = (uint8_t)(i * 7 + 1);
    char b64[64] = " \t";
    sodium_bin2base64(b64 + 2, sizeof b64 - 2, raw, sizeof raw, sodium_base64_VARIANT_ORIGINAL);
    memcpy(b64 + strlen(b64), "\r\n", 3);
    assert_int_equal(cm_key_decode(b64, strlen(b64), key), 0);
    assert_memory_equal(key, raw, 32);
}

static void key_decode_refuses_wrong_sizes_and_garbage(void **state)
{
    (void)state;
    uint8_t raw[33] = {0}, key[32];
    char b64[64];
    sodium_bin2base64(b64, sizeof b64, raw, 31, sodium_base64_VARIANT_ORIGINAL);
    assert_int_equal(cm_key_decode(b64, strlen(b64), key), CM_EPARSE);
    sodium_bin2base64(b64, sizeof b64, raw, 33, sodium_base64_VARIANT_ORIGINAL);
    assert_int_equal(cm_key_decode(b64, strlen(b64), key), CM_EPARSE);
    assert_int_equal(cm_key_decode("", 0, key), CM_EPARSE);
    assert_int_equal(cm_key_decode("  \n", 3, key), CM_EPARSE);
    const char *junk = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!=";
    assert_int_equal(cm_key_decode(junk, strlen(junk), key), CM_EPARSE);
}

static void seal_then_unseal_round_trips(void **state)
{
    (void)state;
    uint8_t pk[32], sk[32];
    crypto_box_keypair(pk, sk);
    char *sealed = NULL, *opened = NULL;
    const char msg[] = "reset-token-value";
    assert_int_equal(cm_seal(pk, msg, strlen(msg), &sealed), 0);
    assert_non_null(sealed);
    assert_null(strpbrk(sealed, "+/="));
    assert_int_equal(cm_unseal(pk, sk, sealed, strlen(sealed), &opened), 0);
    assert_string_equal(opened, msg);
    char *again = NULL;
    assert_int_equal(cm_seal(pk, msg, strlen(msg), &again), 0);
    assert_string_not_equal(sealed, again); /* an ephemeral key per seal */
    sodium_memzero(opened, strlen(opened));
    free(opened);
    free(again);
    free(sealed);
}

static void unseal_with_the_wrong_key_or_tampered_text_fails_with_ecrypto(void **state)
{
    (void)state;
    uint8_t pk[32], sk[32], pk2[32], sk2[32];
    crypto_box_keypair(pk, sk);
    crypto_box_keypair(pk2, sk2);
    char *sealed = NULL, *opened = NULL;
    assert_int_equal(cm_seal(pk, "secret", 6, &sealed), 0);
    assert_int_equal(cm_unseal(pk2, sk2, sealed, strlen(sealed), &opened), CM_ECRYPTO);
    assert_null(opened);
    sealed[10] = sealed[10] == 'A' ? 'B' : 'A';
    assert_int_equal(cm_unseal(pk, sk, sealed, strlen(sealed), &opened), CM_ECRYPTO);
    assert_null(opened);
    /* Valid base64url but shorter than the seal overhead. */
    assert_int_equal(cm_unseal(pk, sk, "AAAA", 4, &opened), CM_ECRYPTO);
    free(sealed);
}

static void unseal_of_malformed_base64_fails_with_eparse(void **state)
{
    (void)state;
    uint8_t pk[32], sk[32];
    crypto_box_keypair(pk, sk);
    char *opened = NULL;
    assert_int_equal(cm_unseal(pk, sk, "not base64!", 11, &opened), CM_EPARSE);
    assert_int_equal(cm_unseal(pk, sk, "abc+def/", 8, &opened), CM_EPARSE); /* standard alphabet */
    assert_int_equal(cm_unseal(pk, sk, "", 0, &opened), CM_EPARSE);
    assert_null(opened);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_hashed_password_verifies_and_needs_no_rehash),
        cmocka_unit_test(the_pool_counts_every_finished_job_and_the_cpu_it_took),
        cmocka_unit_test(a_wrong_password_fails_with_eauth),
        cmocka_unit_test(an_unknown_user_verify_fails_with_eauth_whatever_the_password),
        cmocka_unit_test(needs_rehash_is_true_when_the_pool_parameters_differ),
        cmocka_unit_test(an_overlong_password_is_refused_with_einval_before_hashing),
        cmocka_unit_test(a_bad_pool_config_is_refused_with_einval),
        cmocka_unit_test(a_full_queue_answers_ebusy_at_once_and_the_queued_job_still_completes),
        cmocka_unit_test(many_concurrent_hashes_on_two_workers_all_verify),
        cmocka_unit_test(tokens_are_43_base64url_chars_and_differ),
        cmocka_unit_test(sha256_hex_matches_the_known_vectors),
        cmocka_unit_test(key_decode_accepts_32_bytes_of_base64_with_surrounding_white_space),
        cmocka_unit_test(key_decode_refuses_wrong_sizes_and_garbage),
        cmocka_unit_test(seal_then_unseal_round_trips),
        cmocka_unit_test(unseal_with_the_wrong_key_or_tampered_text_fails_with_ecrypto),
        cmocka_unit_test(unseal_of_malformed_base64_fails_with_eparse),
    };
    return cmocka_run_group_tests(tests, setup_sodium, NULL);
}
