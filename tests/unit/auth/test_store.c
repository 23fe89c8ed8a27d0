/*
 * Tests for services/auth/store.c against a real PostgreSQL (the migrations
 * applied by cm_db_migrate): unique violations mapped to fields, referral
 * codes, refresh rotation outcomes, throttling and the reset cap.
 *
 * LINKTR_TEST_NEEDS: postgres
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm/crypto.h"
#include "cm/db.h"
#include "cm/util.h"
#include "store.h"
#include "testenv.h"

#define ENV "LINKTR_PG_ENV_FILE"

extern const cm_migration_t auth_migrations[];
extern const size_t auth_migrations_count;

static int setup(void **state)
{
    char *url = t_env(ENV, "AUTH_DATABASE_URL");
    cm_db_config_t c = {
        .conninfo = url, .size = 4, .acquire_timeout_ms = 5000, .connect_timeout_s = 5};
    int err = 0;
    cm_db_pool_t *pool = cm_db_pool_new(&c, &err);
    free(url);
    assert_non_null(pool);
    assert_int_equal(cm_db_migrate(pool, auth_migrations, auth_migrations_count), 0);
    *state = pool;
    return 0;
}

static int teardown(void **state)
{
    cm_db_pool_free(*state);
    return 0;
}

/* Runs one statement with one parameter on the test's pool. */
static void exec1(cm_db_pool_t *pool, const char *sql, const char *p0)
{
    cm_db_t *db = NULL;
    assert_int_equal(cm_db_acquire(pool, &db), 0);
    const char *p[1] = {p0};
    assert_int_equal(cm_db_exec(db, sql, 1, p, NULL), 0);
    cm_db_release(db);
}

static int count1(cm_db_pool_t *pool, const char *sql, const char *p0)
{
    cm_db_t *db = NULL;
    PGresult *r = NULL;
    assert_int_equal(cm_db_acquire(pool, &db), 0);
    const char *p[1] = {p0};
    assert_int_equal(cm_db_exec(db, sql, 1, p, &r), 0);
    long long n = -1;
    assert_int_equal(cm_strtonum(PQgetvalue(r, 0, 0), 0, INT32_MAX, &n), 0);
    PQclear(r);
    cm_db_release(db);
    return (int)n;
}

typedef struct names {
    char username[32], email[64], token[65];
} names_t;

static void make_names(names_t *n, const char *tag)
{
    static int counter;
    snprintf(n->username, sizeof n->username, "%s%d_%s", tag, ++counter, t_unique());
    snprintf(n->email, sizeof n->email, "%s@example.com", n->username);
    char tok[CM_TOKEN_CHARS];
    cm_token_new(tok);
    cm_sha256_hex(tok, strlen(tok), n->token);
}

static int do_register(cm_db_pool_t *pool, const names_t *n, const char *code, auth_user_t *out,
                       const char **field)
{
    auth_new_user_t in = {.username = n->username,
                          .email = n->email,
                          .password_hash = "$argon2id$v=19$m=19456,t=2,p=1$x$y",
                          .referral_code = code,
                          .ip = "203.0.113.9",
                          .verify_hash = n->token,
                          .verify_sealed = "sealed"};
    return auth_store_register(pool, &in, out, field);
}

static void unique_violations_name_the_field_ignoring_case(void **state)
{
    cm_db_pool_t *pool = *state;
    names_t a, b;
    make_names(&a, "uq");
    auth_user_t u;
    const char *field = NULL;
    assert_int_equal(do_register(pool, &a, NULL, &u, &field), 0);
    assert_int_equal(strlen(u.referral_code), AUTH_CODE_LEN);
    assert_true(cm_is_uuid(u.id, strlen(u.id)));

    make_names(&b, "uq");
    for (char *p = a.username; *p; p++) /* same name, other case */
        *p = (*p >= 'a' && *p <= 'z') ? (char)(*p - 32) : *p;
    snprintf(b.username, sizeof b.username, "%s", a.username);
    assert_int_equal(do_register(pool, &b, NULL, &u, &field), CM_ECONFLICT);
    assert_string_equal(field, "username");

    make_names(&b, "uq");
    snprintf(b.email, sizeof b.email, "%s", a.email);
    b.email[0] = (char)(b.email[0] - 32);
    assert_int_equal(do_register(pool, &b, NULL, &u, &field), CM_ECONFLICT);
    assert_string_equal(field, "email");
    assert_int_equal(
        count1(pool, "SELECT count(*) FROM users WHERE lower(email) = lower($1)", a.email), 1);
}

static void referral_codes_resolve_to_the_referrer_or_fail_on_the_field(void **state)
{
    cm_db_pool_t *pool = *state;
    names_t a, b, c;
    make_names(&a, "rr");
    make_names(&b, "rr");
    make_names(&c, "rr");
    auth_user_t ua, ub, uc;
    const char *field = NULL;
    assert_int_equal(do_register(pool, &a, NULL, &ua, &field), 0);
    assert_int_equal(do_register(pool, &b, ua.referral_code, &ub, &field), 0);
    assert_string_equal(ub.referred_by, ua.referral_code);
    assert_int_equal(count1(pool, "SELECT count(*) FROM outbox WHERE key = $1", ub.id), 1);
    /* Well-formed but unknown (1 in 2^40 per user that it was ever generated: checked). */
    assert_int_equal(
        count1(pool, "SELECT count(*) FROM users WHERE referral_code = $1", "ZZZZZZZZ"), 0);
    assert_int_equal(do_register(pool, &c, "ZZZZZZZZ", &uc, &field), CM_ENOTFOUND);
    assert_string_equal(field, "referral_code");
    assert_int_equal(count1(pool, "SELECT count(*) FROM users WHERE username = $1", c.username), 0);
}

/* Registers a user and opens a refresh family; returns the user id in id. */
static void session(cm_db_pool_t *pool, char id[37], char hash[65])
{
    names_t n;
    make_names(&n, "rt");
    auth_user_t u;
    const char *field = NULL;
    assert_int_equal(do_register(pool, &n, NULL, &u, &field), 0);
    memcpy(id, u.id, 37);
    char tok[CM_TOKEN_CHARS];
    cm_token_new(tok);
    cm_sha256_hex(tok, strlen(tok), hash);
    assert_int_equal(auth_store_refresh_issue(pool, id, hash, 30), 0);
}

static void new_hash(char out[65])
{
    char tok[CM_TOKEN_CHARS];
    cm_token_new(tok);
    cm_sha256_hex(tok, strlen(tok), out);
}

static void rotation_then_grace_then_reuse_revokes_the_family(void **state)
{
    cm_db_pool_t *pool = *state;
    char id[37], t0[65], t1[65], t2[65];
    session(pool, id, t0);
    new_hash(t1);
    new_hash(t2);
    auth_refresh_outcome_t o;
    auth_user_t u;
    assert_int_equal(auth_store_refresh_rotate(pool, t0, t1, 10, 30, &o, &u), 0);
    assert_int_equal(o, AUTH_REFRESH_ROTATED);
    assert_string_equal(u.id, id);
    assert_int_equal(auth_store_refresh_rotate(pool, t0, t1, 10, 30, &o, &u), 0);
    assert_int_equal(o, AUTH_REFRESH_GRACE);
    /* Outside the grace window (0 s) the same replay is theft. */
    assert_int_equal(auth_store_refresh_rotate(pool, t0, t1, 0, 30, &o, &u), 0);
    assert_int_equal(o, AUTH_REFRESH_REUSED);
    assert_int_equal(auth_store_refresh_rotate(pool, t1, t2, 10, 30, &o, &u), 0);
    assert_int_equal(o, AUTH_REFRESH_INVALID);
    assert_int_equal(count1(pool,
                            "SELECT count(*) FROM refresh_tokens WHERE user_id = $1::uuid "
                            "AND revoked_at IS NULL",
                            id),
                     0);
}

static void expired_unknown_and_logged_out_tokens_are_invalid(void **state)
{
    cm_db_pool_t *pool = *state;
    char id[37], t0[65], t1[65], other[65];
    session(pool, id, t0);
    new_hash(t1);
    new_hash(other);
    auth_refresh_outcome_t o;
    auth_user_t u;
    assert_int_equal(auth_store_refresh_rotate(pool, other, t1, 10, 30, &o, &u), 0);
    assert_int_equal(o, AUTH_REFRESH_INVALID);
    exec1(pool,
          "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' "
          "WHERE token_hash = $1",
          t0);
    assert_int_equal(auth_store_refresh_rotate(pool, t0, t1, 10, 30, &o, &u), 0);
    assert_int_equal(o, AUTH_REFRESH_INVALID);
    assert_int_equal(auth_store_logout(pool, t0), CM_ENOTFOUND);

    char t2[65];
    session(pool, id, t2);
    assert_int_equal(auth_store_logout(pool, t2), 0);
    assert_int_equal(auth_store_logout(pool, t2), CM_ENOTFOUND);
    assert_int_equal(auth_store_refresh_rotate(pool, t2, t1, 10, 30, &o, &u), 0);
    assert_int_equal(o, AUTH_REFRESH_INVALID);
}

static void throttle_locks_from_the_fifth_failure_with_growing_delays(void **state)
{
    cm_db_pool_t *pool = *state;
    char key[64];
    snprintf(key, sizeof key, "test:%s", t_unique());
    int64_t wait = -1;
    for (int i = 0; i < AUTH_THROTTLE_FREE_FAILURES - 1; i++) {
        assert_int_equal(auth_store_throttle_fail(pool, key), 0);
        assert_int_equal(auth_store_throttle_check(pool, key, &wait), 0);
        assert_int_equal(wait, 0);
    }
    assert_int_equal(auth_store_throttle_fail(pool, key), 0); /* 5th: 1 s */
    assert_int_equal(auth_store_throttle_check(pool, key, &wait), 0);
    assert_int_equal(wait, 1);
    for (int i = 0; i < 4; i++) /* 9th: 16 s */
        assert_int_equal(auth_store_throttle_fail(pool, key), 0);
    assert_int_equal(auth_store_throttle_check(pool, key, &wait), 0);
    assert_true(wait >= 15 && wait <= 16);
    for (int i = 0; i < 20; i++) /* capped at 15 minutes */
        assert_int_equal(auth_store_throttle_fail(pool, key), 0);
    assert_int_equal(auth_store_throttle_check(pool, key, &wait), 0);
    assert_true(wait > 800 && wait <= 900);
    assert_int_equal(auth_store_throttle_reset(pool, key), 0);
    assert_int_equal(auth_store_throttle_check(pool, key, &wait), 0);
    assert_int_equal(wait, 0);
}

static void reset_requests_are_capped_at_three_an_hour_and_ignore_unknown_emails(void **state)
{
    cm_db_pool_t *pool = *state;
    names_t n;
    make_names(&n, "rc");
    auth_user_t u;
    const char *field = NULL;
    assert_int_equal(do_register(pool, &n, NULL, &u, &field), 0);
    bool issued = false;
    for (int i = 0; i < 5; i++) {
        char h[65];
        new_hash(h);
        assert_int_equal(auth_store_reset_request(pool, n.email, h, "sealed", &issued), 0);
        assert_int_equal(issued, i < AUTH_RESETS_PER_HOUR);
    }
    char h[65];
    new_hash(h);
    assert_int_equal(auth_store_reset_request(pool, "nobody@nowhere.example", h, "s", &issued), 0);
    assert_false(issued);
    assert_int_equal(count1(pool,
                            "SELECT count(*) FROM outbox WHERE key = $1 "
                            "AND topic = 'reset.requested'",
                            u.id),
                     3);
}

int main(void)
{
    if (cm_crypto_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unique_violations_name_the_field_ignoring_case),
        cmocka_unit_test(referral_codes_resolve_to_the_referrer_or_fail_on_the_field),
        cmocka_unit_test(rotation_then_grace_then_reuse_revokes_the_family),
        cmocka_unit_test(expired_unknown_and_logged_out_tokens_are_invalid),
        cmocka_unit_test(throttle_locks_from_the_fifth_failure_with_growing_delays),
        cmocka_unit_test(reset_requests_are_capped_at_three_an_hour_and_ignore_unknown_emails),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
