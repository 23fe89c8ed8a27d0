/*
 * Tests for services/auth/store.c against a real PostgreSQL (the migrations
 * applied by cm_db_migrate): unique violations mapped to fields, referral
 * codes, refresh rotation outcomes, throttling and the reset cap.
 *
 * LINKTR_TEST_NEEDS: postgres
 */
#include <pthread.h>
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
#include "signin.h"
#include "store.h"
#include "testenv.h"
#include "pg.h"

extern const cm_migration_t auth_migrations[];
extern const size_t auth_migrations_count;

/* The throttle's HMAC key (the service derives its own from the signing key). */
static const uint8_t K[AUTH_THROTTLE_SECRET_LEN] = {42, 7, 1};

static int setup(void **state)
{
    *state = t_pg_pool("AUTH_DATABASE_URL", 4, auth_migrations, auth_migrations_count);
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

/* The text of the first column of the first row (NULL shown as ""). Caller frees. */
static char *value1(cm_db_pool_t *pool, const char *sql, const char *p0)
{
    cm_db_t *db = NULL;
    PGresult *r = NULL;
    assert_int_equal(cm_db_acquire(pool, &db), 0);
    const char *p[1] = {p0};
    assert_int_equal(cm_db_exec(db, sql, 1, p, &r), 0);
    assert_int_equal(PQntuples(r), 1);
    char *v = cm_xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    cm_db_release(db);
    return v;
}

/* The first column of the first row as a non-negative number. */
static int count1(cm_db_pool_t *pool, const char *sql, const char *p0)
{
    char *v = value1(pool, sql, p0);
    long long n = -1;
    assert_int_equal(cm_strtonum(v, 0, INT32_MAX, &n), 0);
    free(v);
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
    assert_int_equal(auth_store_refresh_issue(pool, id, u.session_epoch, hash, 30), 0);
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

/* One rotation through the SQL function itself on db; the outcome digit in out. */
static int rotate_raw(cm_db_t *db, const char *hash, const char *child, char *out)
{
    const char *p[2] = {hash, child};
    PGresult *r = NULL;
    int rc = cm_db_exec(db, "SELECT outcome FROM refresh_rotate($1, $2, 30, 10)", 2, p, &r);
    if (rc == 0) {
        *out = PQntuples(r) == 1 ? PQgetvalue(r, 0, 0)[0] : '-';
        PQclear(r);
    }
    return rc;
}

static int live_tokens(cm_db_pool_t *pool, const char *user_id)
{
    return count1(pool,
                  "SELECT count(*) FROM refresh_tokens WHERE user_id = $1::uuid "
                  "AND revoked_at IS NULL",
                  user_id);
}

/*
 * Migration 008: while one rotation of a user is uncommitted, another token
 * of the same user rotates (004 made it wait for the first to commit); the
 * same token and a session-wide revocation still wait for it.
 */
static void rotations_of_one_users_tokens_run_side_by_side(void **state)
{
    cm_db_pool_t *pool = *state;
    char id[37], a0[65], a1[65], b0[65], b1[65], o = 0;
    session(pool, id, a0);
    new_hash(b0);
    assert_int_equal(auth_store_refresh_issue(pool, id, 0, b0, 30), 0); /* a second device */
    new_hash(a1);
    new_hash(b1);
    cm_db_t *hold = NULL, *other = NULL;
    assert_int_equal(cm_db_acquire(pool, &hold), 0);
    assert_int_equal(cm_db_acquire(pool, &other), 0);
    assert_int_equal(cm_db_begin(hold), 0);
    assert_int_equal(rotate_raw(hold, a0, a1, &o), 0);
    assert_int_equal(o, '1');
    /* The lock timeout only turns a regression into a failure instead of a hang. */
    assert_int_equal(cm_db_exec(other, "SET lock_timeout = '10s'", 0, NULL, NULL), 0);
    assert_int_equal(rotate_raw(other, b0, b1, &o), 0);
    assert_int_equal(o, '1');
    /* The same token waits for the holder: it would wait forever. */
    assert_int_equal(cm_db_exec(other, "SET lock_timeout = '50ms'", 0, NULL, NULL), 0);
    assert_int_not_equal(rotate_raw(other, a0, a1, &o), 0);
    assert_string_equal(cm_db_sqlstate(other), "55P03");
    /* So does every revocation's lock on the owner (a reset, a logout, ending sessions). */
    const char *p[1] = {id};
    assert_int_not_equal(cm_db_exec(other,
                                    "SELECT 1 FROM users WHERE id = $1::uuid "
                                    "FOR NO KEY UPDATE NOWAIT",
                                    1, p, NULL),
                         0);
    assert_string_equal(cm_db_sqlstate(other), "55P03");
    assert_int_equal(cm_db_exec(other, "RESET lock_timeout", 0, NULL, NULL), 0);
    assert_int_equal(cm_db_commit(hold), 0);
    cm_db_release(other);
    cm_db_release(hold);
    /* After the commit the same request is the grace replay, never a second rotation. */
    auth_refresh_outcome_t out;
    auth_user_t u;
    assert_int_equal(auth_store_refresh_rotate(pool, a0, a1, 10, 30, &out, &u), 0);
    assert_int_equal(out, AUTH_REFRESH_GRACE);
    assert_string_equal(u.id, id);
    assert_int_equal(live_tokens(pool, id), 2);
}

typedef struct thief {
    cm_db_pool_t *pool;
    const char *stale, *child;
    int rc;
    auth_refresh_outcome_t outcome;
} thief_t;

static void *thief_run(void *arg)
{
    thief_t *t = arg;
    auth_user_t u;
    t->rc = auth_store_refresh_rotate(t->pool, t->stale, t->child, 10, 30, &t->outcome, &u);
    return NULL;
}

/*
 * Migration 008 (c): a reuse revocation that meets an uncommitted rotation of
 * the family's current token waits for it and then revokes the child it wrote
 * too, though that child was not there when the revocation began.
 */
static void a_reuse_revocation_revokes_the_child_of_a_rotation_in_flight(void **state)
{
    cm_db_pool_t *pool = *state;
    char id[37], t0[65], t1[65], t2[65], t3[65], o = 0;
    session(pool, id, t0);
    new_hash(t1);
    new_hash(t2);
    new_hash(t3);
    auth_refresh_outcome_t out;
    auth_user_t u;
    assert_int_equal(auth_store_refresh_rotate(pool, t0, t1, 10, 30, &out, &u), 0);
    assert_int_equal(auth_store_refresh_rotate(pool, t1, t2, 10, 30, &out, &u), 0);
    assert_int_equal(out, AUTH_REFRESH_ROTATED);
    cm_db_t *hold = NULL, *look = NULL;
    assert_int_equal(cm_db_acquire(pool, &hold), 0);
    assert_int_equal(cm_db_acquire(pool, &look), 0);
    assert_int_equal(cm_db_begin(hold), 0);
    assert_int_equal(rotate_raw(hold, t2, t3, &o), 0); /* the owner's rotation, in flight */
    assert_int_equal(o, '1');
    thief_t th = {.pool = pool, .stale = t0, .child = t1, .rc = -1};
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, thief_run, &th), 0);
    /* Until the thief's revocation waits for the rotation's row lock (not a timed
     * assertion: the cap only keeps a regression from hanging the suite). */
    bool waiting = false;
    for (int i = 0; i < 3000 && !waiting; i++) {
        PGresult *r = NULL;
        assert_int_equal(cm_db_exec(look,
                                    "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                    "current_database() AND wait_event_type = 'Lock'",
                                    0, NULL, &r),
                         0);
        waiting = PQgetvalue(r, 0, 0)[0] != '0';
        PQclear(r);
        if (!waiting)
            t_sleep_ms(10);
    }
    assert_true(waiting);
    assert_int_equal(cm_db_commit(hold), 0);
    pthread_join(tid, NULL);
    cm_db_release(look);
    cm_db_release(hold);
    assert_int_equal(th.rc, 0);
    assert_int_equal(th.outcome, AUTH_REFRESH_REUSED);
    assert_int_equal(live_tokens(pool, id), 0); /* t3 included */
    assert_int_equal(auth_store_refresh_rotate(pool, t3, t1, 10, 30, &out, &u), 0);
    assert_int_equal(out, AUTH_REFRESH_INVALID);
}

#define CHAINS 3

typedef struct chain_race {
    cm_db_pool_t *pool;
    const char *user_id;
    char first[CHAINS][65];
    int delay_ms, rotated[CHAINS], rc[CHAINS + 1];
    int64_t ended;
    pthread_barrier_t go;
} chain_race_t;

typedef struct chain_arg {
    chain_race_t *race;
    int i; /* a chain, or CHAINS: the revoker */
} chain_arg_t;

static void *chain_run(void *arg)
{
    chain_arg_t *a = arg;
    chain_race_t *c = a->race;
    pthread_barrier_wait(&c->go);
    if (a->i == CHAINS) {
        t_sleep_ms(c->delay_ms); /* spreads the revocation over the chains' run */
        c->rc[CHAINS] = auth_store_sessions_end_others(c->pool, c->user_id, NULL, &c->ended);
        return NULL;
    }
    char cur[65], next[65];
    memcpy(cur, c->first[a->i], sizeof cur);
    for (int k = 0; k < 400; k++) {
        auth_refresh_outcome_t o;
        auth_user_t u;
        new_hash(next);
        c->rc[a->i] = auth_store_refresh_rotate(c->pool, cur, next, 10, 30, &o, &u);
        if (c->rc[a->i] != 0 || o != AUTH_REFRESH_ROTATED)
            break;
        c->rotated[a->i]++;
        memcpy(cur, next, sizeof cur);
    }
    return NULL;
}

/* Ending every session while the user's devices rotate leaves no live token behind. */
static void a_revocation_racing_rotations_leaves_no_live_token(void **state)
{
    cm_db_pool_t *pool = *state;
    for (int round = 0; round < 12; round++) {
        char id[37];
        chain_race_t c = {.pool = pool, .user_id = id, .delay_ms = round % 6};
        session(pool, id, c.first[0]);
        for (int i = 1; i < CHAINS; i++) {
            new_hash(c.first[i]);
            assert_int_equal(auth_store_refresh_issue(pool, id, 0, c.first[i], 30), 0);
        }
        pthread_barrier_init(&c.go, NULL, CHAINS + 1);
        pthread_t t[CHAINS + 1];
        chain_arg_t args[CHAINS + 1];
        for (int i = 0; i <= CHAINS; i++) {
            args[i] = (chain_arg_t){.race = &c, .i = i};
            assert_int_equal(pthread_create(&t[i], NULL, chain_run, &args[i]), 0);
        }
        for (int i = 0; i <= CHAINS; i++)
            pthread_join(t[i], NULL);
        pthread_barrier_destroy(&c.go);
        for (int i = 0; i <= CHAINS; i++)
            assert_int_equal(c.rc[i], 0);
        assert_int_equal(c.ended, CHAINS); /* each family had its one live token */
        for (int i = 0; i < CHAINS; i++)
            assert_true(c.rotated[i] < 400); /* every chain met the revocation */
        assert_int_equal(live_tokens(pool, id), 0);
    }
}

static void pair_throttle_locks_from_the_fifth_failure_with_growing_delays(void **state)
{
    cm_db_pool_t *pool = *state;
    char acct[64];
    snprintf(acct, sizeof acct, "name:Test_%s", t_unique());
    const char *ip = "203.0.113.5";
    int64_t wait = -1;
    bool pair = true;
    /* No failures on record: a success has nothing to forget (and skips the statement). */
    assert_int_equal(auth_store_throttle_check(pool, K, acct, ip, &wait, &pair), 0);
    assert_false(pair);
    for (int i = 0; i < AUTH_THROTTLE_FREE_FAILURES - 1; i++) {
        assert_int_equal(auth_store_throttle_fail(pool, K, acct, ip), 0);
        assert_int_equal(auth_store_throttle_check(pool, K, acct, ip, &wait, &pair), 0);
        assert_int_equal(wait, 0);
        assert_true(pair);
    }
    assert_int_equal(auth_store_throttle_fail(pool, K, acct, ip), 0); /* 5th: 1 s */
    assert_int_equal(auth_store_throttle_check(pool, K, acct, ip, &wait, NULL), 0);
    assert_int_equal(wait, 1);
    for (int i = 0; i < 4; i++) /* 9th: 16 s */
        assert_int_equal(auth_store_throttle_fail(pool, K, acct, ip), 0);
    assert_int_equal(auth_store_throttle_check(pool, K, acct, ip, &wait, NULL), 0);
    assert_true(wait >= 15 && wait <= 16);
    /* Another address of the same account is not slowed by this pair. */
    assert_int_equal(auth_store_throttle_check(pool, K, acct, "198.51.100.9", &wait, NULL), 0);
    assert_int_equal(wait, 0);
    /* Case is ignored: the same name in capitals is the same account. */
    char upper[64];
    snprintf(upper, sizeof upper, "%s", acct);
    for (char *c = upper + 5; *c; c++)
        *c = (char)((*c >= 'a' && *c <= 'z') ? *c - 32 : *c);
    assert_int_equal(auth_store_throttle_check(pool, K, upper, ip, &wait, NULL), 0);
    assert_true(wait >= 15);
    for (int i = 0; i < 20; i++) /* capped at 15 minutes */
        assert_int_equal(auth_store_throttle_fail(pool, K, acct, "203.0.113.5"), 0);
    assert_int_equal(auth_store_throttle_check(pool, K, acct, ip, &wait, NULL), 0);
    assert_true(wait > 800 && wait <= AUTH_THROTTLE_PAIR_MAX_S);
    assert_int_equal(auth_store_throttle_pass(pool, K, acct, ip), 0);
    /* 29 failures passed the account ceiling (20): at most 30 s for everyone, then. */
    assert_int_equal(auth_store_throttle_check(pool, K, acct, ip, &wait, &pair), 0);
    assert_true(wait <= AUTH_THROTTLE_ACCOUNT_MAX_S);
    assert_false(pair); /* the account's failures stay, the pair's are forgotten */
}

static void account_ceiling_is_short_and_keys_are_hashed(void **state)
{
    cm_db_pool_t *pool = *state;
    char acct[64], ip[32];
    snprintf(acct, sizeof acct, "name:ceiling_%s", t_unique());
    int64_t wait = -1;
    /* One failure from each of many addresses: no pair is ever slowed down. */
    for (int i = 0; i < AUTH_THROTTLE_ACCOUNT_FREE - 1; i++) {
        snprintf(ip, sizeof ip, "198.51.100.%d", i + 1);
        assert_int_equal(auth_store_throttle_fail(pool, K, acct, ip), 0);
    }
    assert_int_equal(auth_store_throttle_check(pool, K, acct, "192.0.2.1", &wait, NULL), 0);
    assert_int_equal(wait, 0);
    for (int i = 0; i < 10; i++) {
        snprintf(ip, sizeof ip, "198.51.101.%d", i + 1);
        assert_int_equal(auth_store_throttle_fail(pool, K, acct, ip), 0);
    }
    /* A fresh address now waits for the account, but never long. */
    assert_int_equal(auth_store_throttle_check(pool, K, acct, "192.0.2.1", &wait, NULL), 0);
    assert_true(wait >= 1 && wait <= AUTH_THROTTLE_ACCOUNT_MAX_S);
    assert_int_equal(count1(pool,
                            "SELECT count(*) FROM login_throttle WHERE key LIKE '%' || $1 || '%'",
                            acct + 5),
                     0);
    assert_int_equal(count1(pool,
                            "SELECT count(*) FROM login_throttle WHERE key !~ "
                            "'^(acct|pair|reset):[0-9a-f]{64}$' AND $1 = $1",
                            "x"),
                     0);
}

static void a_password_reset_clears_the_account_throttle_and_bumps_the_epoch(void **state)
{
    cm_db_pool_t *pool = *state;
    char id[37], t0[65], reset[65], acct[64];
    session(pool, id, t0);
    snprintf(acct, sizeof acct, "user:%s", id);
    for (int i = 0; i < AUTH_THROTTLE_ACCOUNT_FREE + 5; i++)
        assert_int_equal(auth_store_throttle_fail(pool, K, acct, "203.0.113.77"), 0);
    int64_t wait = 0;
    assert_int_equal(auth_store_throttle_check(pool, K, acct, "203.0.113.77", &wait, NULL), 0);
    assert_true(wait > 0);
    auth_user_t before, after;
    assert_int_equal(auth_store_user_by_id(pool, id, &before), 0);
    new_hash(reset);
    cm_db_t *db = NULL;
    assert_int_equal(cm_db_acquire(pool, &db), 0);
    const char *p[2] = {reset, id};
    assert_int_equal(cm_db_exec(db,
                                "INSERT INTO one_time_tokens (token_hash, kind, user_id, "
                                "expires_at) VALUES ($1, 'reset', $2::uuid, now() + "
                                "interval '1 hour')",
                                2, p, NULL),
                     0);
    cm_db_release(db);
    assert_int_equal(auth_store_reset_apply(pool, K, reset, "$argon2id$new", NULL), 0);
    assert_int_equal(auth_store_throttle_check(pool, K, acct, "203.0.113.77", &wait, NULL), 0);
    assert_int_equal(wait, 0);
    assert_int_equal(auth_store_user_by_id(pool, id, &after), 0);
    assert_int_equal(after.session_epoch, before.session_epoch + 1);
    /* A login that verified the old password cannot open a family any more. */
    char h[65];
    new_hash(h);
    assert_int_equal(auth_store_refresh_issue(pool, id, before.session_epoch, h, 30), CM_ESTATE);
    assert_int_equal(auth_store_refresh_issue(pool, id, after.session_epoch, h, 30), 0);
    auth_refresh_outcome_t o;
    auth_user_t u;
    char t1[65];
    new_hash(t1);
    assert_int_equal(auth_store_refresh_rotate(pool, t0, t1, 10, 30, &o, &u), 0);
    assert_int_equal(o, AUTH_REFRESH_INVALID); /* revoked by the reset */
}

static void throttle_keys_are_keyed_hashes_that_ignore_the_name_case(void **state)
{
    (void)state;
    static const uint8_t other[AUTH_THROTTLE_SECRET_LEN] = {1};
    char a[AUTH_THROTTLE_KEY_MAX], b[AUTH_THROTTLE_KEY_MAX], c[AUTH_THROTTLE_KEY_MAX];
    auth_throttle_key(K, "pair:", "name:Alice", "203.0.113.1", a);
    auth_throttle_key(K, "pair:", "name:aLICE", "203.0.113.1", b);
    assert_string_equal(a, b);
    assert_int_equal(strlen(a), 5 + 64);
    assert_int_equal(strncmp(a, "pair:", 5), 0);
    auth_throttle_key(other, "pair:", "name:Alice", "203.0.113.1", c);
    assert_string_not_equal(a, c); /* no table of names can undo them without the secret */
    auth_throttle_key(K, "pair:", "name:Alice", "203.0.113.2", c);
    assert_string_not_equal(a, c);
    auth_throttle_key(K, "acct:", "name:Alice", NULL, c);
    assert_string_not_equal(a, c);
    /* The separator is a NUL, which no name or address holds: no two splits collide. */
    auth_throttle_key(K, "pair:", "name:Alice1", "", b);
    auth_throttle_key(K, "pair:", "name:Alice", "1", c);
    assert_string_not_equal(b, c);
    auth_throttle_key(K, "reset:", "x@example.com", NULL, c);
    assert_int_equal(strlen(c), 6 + 64);
}

static void rehash_is_a_compare_and_set_on_the_old_hash(void **state)
{
    cm_db_pool_t *pool = *state;
    char id[37], t0[65];
    session(pool, id, t0);
    auth_user_t u;
    assert_int_equal(auth_store_user_by_id(pool, id, &u), 0);
    assert_int_equal(auth_store_set_password_hash(pool, id, u.password_hash, "$argon2id$rehash"),
                     0);
    /* A second rehash from the stale hash (a reset came in between) changes nothing. */
    assert_int_equal(auth_store_set_password_hash(pool, id, u.password_hash, "$argon2id$stale"),
                     CM_ECONFLICT);
    assert_int_equal(count1(pool,
                            "SELECT count(*) FROM users WHERE id = $1::uuid "
                            "AND password_hash = '$argon2id$rehash'",
                            id),
                     1);
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
        assert_int_equal(auth_store_reset_request(pool, K, n.email, h, "sealed", NULL, &issued), 0);
        assert_int_equal(issued, i < AUTH_RESETS_PER_HOUR);
    }
    char h[65];
    new_hash(h);
    assert_int_equal(
        auth_store_reset_request(pool, K, "nobody@nowhere.example", h, "s", NULL, &issued), 0);
    assert_false(issued);
    /* Both the known and the unknown address wrote their (keyed-hashed) mark; case is ignored. */
    char mark[AUTH_THROTTLE_KEY_MAX];
    auth_throttle_key(K, "reset:", "nobody@NOWHERE.example", NULL, mark);
    assert_int_equal(count1(pool, "SELECT count(*) FROM login_throttle WHERE key = $1", mark), 1);
    /* The known address's mark counted three and closed: requests four and five wrote nothing. */
    auth_throttle_key(K, "reset:", n.email, NULL, mark);
    assert_int_equal(count1(pool, "SELECT failures FROM login_throttle WHERE key = $1", mark),
                     AUTH_RESETS_PER_HOUR);
    assert_int_equal(count1(pool,
                            "SELECT count(*) FROM outbox WHERE key = $1 "
                            "AND topic = 'reset.requested'",
                            u.id),
                     3);
}

/* An address's forgot-password mark: "failures|true" when closed for the next hour, "failures|open"
 * when not closed. Caller frees. */
static char *mark_state(cm_db_pool_t *pool, const char *email)
{
    char mark[AUTH_THROTTLE_KEY_MAX];
    auth_throttle_key(K, "reset:", email, NULL, mark);
    return value1(
        pool,
        "SELECT failures || '|' || coalesce((locked_until > now() + interval '59 minutes')"
        "::text, 'open') FROM login_throttle WHERE key = $1",
        mark);
}

/* Runs one probe of email and returns whether it found budget. */
static bool probe(cm_db_pool_t *pool, const char *email)
{
    bool budget = true;
    assert_int_equal(auth_store_reset_probe(pool, K, email, &budget), 0);
    return budget;
}

static void a_closed_address_is_only_read_known_or_not_until_its_window_ends(void **state)
{
    cm_db_pool_t *pool = *state;
    names_t n;
    make_names(&n, "rw");
    auth_user_t u;
    const char *field = NULL;
    assert_int_equal(do_register(pool, &n, NULL, &u, &field), 0);
    char ghost[96];
    snprintf(ghost, sizeof ghost, "ghost_%s", n.email);
    const char *emails[2] = {n.email, ghost};
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < AUTH_RESETS_PER_HOUR; i++)
            assert_int_equal(probe(pool, emails[k]), k == 0); /* budget: the account's only */
        char *st = mark_state(pool, emails[k]);
        assert_string_equal(st, "3|true");
        free(st);
    }
    /* Closed: a probe writes nothing (the row keeps its last write) and finds no budget. */
    char mark[AUTH_THROTTLE_KEY_MAX];
    auth_throttle_key(K, "reset:", n.email, NULL, mark);
    char *before = value1(pool, "SELECT updated_at::text FROM login_throttle WHERE key = $1", mark);
    for (int k = 0; k < 2; k++)
        assert_false(probe(pool, emails[k]));
    char *after = value1(pool, "SELECT updated_at::text FROM login_throttle WHERE key = $1", mark);
    assert_string_equal(before, after);
    free(before);
    free(after);
    /* The window over (the lock passed): counting starts again at one, budget again. */
    exec1(pool,
          "UPDATE login_throttle SET locked_until = now() - interval '1 second' WHERE key = $1",
          mark);
    assert_true(probe(pool, n.email));
    char *st = mark_state(pool, n.email);
    assert_string_equal(st, "1|open");
    free(st);
    /* An hour without requests ends a window too. */
    exec1(pool,
          "UPDATE login_throttle SET failures = 2, updated_at = now() - interval '61 minutes' "
          "WHERE key = $1",
          mark);
    assert_true(probe(pool, n.email));
    st = mark_state(pool, n.email);
    assert_string_equal(st, "1|open");
    free(st);
}

/* ---- email change (issue 15) ---------------------------------------------------------- */

typedef struct change {
    char confirm[65], cancel[65];
} change_t;

/* Asks for an email change of u to new_email with fresh token hashes. */
static int ask_change(cm_db_pool_t *pool, const auth_user_t *u, const char *new_email, change_t *c,
                      bool *limited)
{
    char tok[CM_TOKEN_CHARS];
    cm_token_new(tok);
    cm_sha256_hex(tok, strlen(tok), c->confirm);
    cm_token_new(tok);
    cm_sha256_hex(tok, strlen(tok), c->cancel);
    auth_email_change_t in = {.user_id = u->id,
                              .new_email = new_email,
                              .confirm_hash = c->confirm,
                              .confirm_sealed = "sealed-c",
                              .cancel_hash = c->cancel,
                              .cancel_sealed = "sealed-x",
                              .ttl_s = 600};
    return auth_store_email_change_request(pool, &in, limited);
}

typedef struct racer {
    cm_db_pool_t *pool;
    const char *hash;
    bool confirm;
    pthread_barrier_t *go;
    int rc;
    auth_email_outcome_t outcome;
} racer_t;

static void *race_use(void *arg)
{
    racer_t *r = arg;
    char email[AUTH_EMAIL_MAX + 1];
    pthread_barrier_wait(r->go);
    r->rc = r->confirm ? auth_store_email_confirm(r->pool, r->hash, NULL, &r->outcome, email)
                       : auth_store_email_cancel(r->pool, r->hash, &r->outcome);
    return NULL;
}

static void confirm_and_cancel_at_once_leave_one_winner(void **state)
{
    cm_db_pool_t *pool = *state;
    for (int round = 0; round < 8; round++) {
        names_t a;
        make_names(&a, "er");
        auth_user_t u;
        const char *field = NULL;
        assert_int_equal(do_register(pool, &a, NULL, &u, &field), 0);
        char new_email[96];
        snprintf(new_email, sizeof new_email, "moved.%s", a.email);
        change_t c;
        bool limited = true;
        assert_int_equal(ask_change(pool, &u, new_email, &c, &limited), 0);
        assert_false(limited);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 3);
        /* Two confirms and one cancel of the same change, released together. */
        racer_t r[3] = {{pool, c.confirm, true, &go, -1, AUTH_EMAIL_UNKNOWN},
                        {pool, c.confirm, true, &go, -1, AUTH_EMAIL_UNKNOWN},
                        {pool, c.cancel, false, &go, -1, AUTH_EMAIL_UNKNOWN}};
        pthread_t t[3];
        for (int i = 0; i < 3; i++)
            assert_int_equal(pthread_create(&t[i], NULL, race_use, &r[i]), 0);
        for (int i = 0; i < 3; i++)
            pthread_join(t[i], NULL);
        pthread_barrier_destroy(&go);
        int done = 0;
        for (int i = 0; i < 3; i++) {
            assert_int_equal(r[i].rc, 0);
            done += r[i].outcome == AUTH_EMAIL_DONE;
        }
        assert_int_equal(done, 1);
        bool confirmed = r[0].outcome == AUTH_EMAIL_DONE || r[1].outcome == AUTH_EMAIL_DONE;
        /* The losers are told what the winner did; the address follows the winner only. */
        for (int i = 0; i < 3; i++)
            if (r[i].outcome != AUTH_EMAIL_DONE)
                assert_int_equal(r[i].outcome,
                                 confirmed ? AUTH_EMAIL_CONFIRMED : AUTH_EMAIL_CANCELLED);
        assert_int_equal(count1(pool,
                                "SELECT count(*) FROM users WHERE id = $1::uuid AND "
                                "email LIKE 'moved.%'",
                                u.id),
                         confirmed ? 1 : 0);
        assert_int_equal(count1(pool,
                                "SELECT count(*) FROM outbox WHERE key = $1 AND "
                                "topic = 'user.email.changed'",
                                u.id),
                         confirmed ? 1 : 0);
    }
}

static void a_new_request_supersedes_and_the_hourly_cap_holds(void **state)
{
    cm_db_pool_t *pool = *state;
    names_t a, b;
    make_names(&a, "es");
    make_names(&b, "es");
    auth_user_t u, other;
    const char *field = NULL;
    assert_int_equal(do_register(pool, &a, NULL, &u, &field), 0);
    assert_int_equal(do_register(pool, &b, NULL, &other, &field), 0);
    change_t c[AUTH_EMAIL_CHANGES_PER_HOUR + 1];
    bool limited = false;
    char email[96];
    assert_int_equal(ask_change(pool, &u, b.email, &c[0], &limited), CM_ECONFLICT);
    for (int i = 0; i < AUTH_EMAIL_CHANGES_PER_HOUR; i++) {
        snprintf(email, sizeof email, "n%d.%s", i, a.email);
        assert_int_equal(ask_change(pool, &u, email, &c[i], &limited), 0);
        assert_false(limited);
    }
    assert_int_equal(count1(pool,
                            "SELECT count(*) FROM email_changes WHERE user_id = $1::uuid "
                            "AND state = 'pending'",
                            u.id),
                     1);
    assert_int_equal(
        ask_change(pool, &u, "over.cap@example.com", &c[AUTH_EMAIL_CHANGES_PER_HOUR], &limited), 0);
    assert_true(limited);
    auth_email_outcome_t o = AUTH_EMAIL_DONE;
    char got[AUTH_EMAIL_MAX + 1];
    assert_int_equal(auth_store_email_confirm(pool, c[0].confirm, NULL, &o, got), 0);
    assert_int_equal(o, AUTH_EMAIL_SUPERSEDED);
    assert_int_equal(auth_store_email_cancel(pool, c[0].cancel, &o), 0);
    assert_int_equal(o, AUTH_EMAIL_SUPERSEDED);
    assert_int_equal(
        auth_store_email_confirm(pool, c[AUTH_EMAIL_CHANGES_PER_HOUR - 1].confirm, NULL, &o, got),
        0);
    assert_int_equal(o, AUTH_EMAIL_DONE);
    snprintf(email, sizeof email, "n%d.%s", AUTH_EMAIL_CHANGES_PER_HOUR - 1, a.email);
    assert_string_equal(got, email);
    /* Links the old address received stop working with the change. */
    assert_int_equal(count1(pool,
                            "SELECT count(*) FROM one_time_tokens WHERE user_id = $1::uuid "
                            "AND used_at IS NULL",
                            u.id),
                     0);
    /* Rows finished a month ago go with the next request of anyone (bounded batch). */
    exec1(pool,
          "UPDATE email_changes SET finished_at = now() - interval '31 days' "
          "WHERE user_id = $1::uuid AND state = 'superseded'",
          u.id);
    assert_int_equal(ask_change(pool, &other, "other.new@example.com", &c[0], &limited), 0);
    assert_int_equal(
        count1(pool, "SELECT count(*) FROM email_changes WHERE user_id = $1::uuid", u.id), 1);
}

/* ---- sessions and the new sign-in notice (issue 15) ------------------------------------ */

/* Opens a session for u from (ua, ip); returns whether a notice was written. */
static bool open_from(cm_db_pool_t *pool, const auth_user_t *u, const char *ua, const char *ip,
                      char family[37])
{
    char hash[65], net[AUTH_NET_KEY_MAX];
    new_hash(hash);
    auth_net_key(ip, net);
    auth_session_new_t in = {.user_id = u->id,
                             .epoch = u->session_epoch,
                             .hash = hash,
                             .ttl_days = 30,
                             .user_agent = ua,
                             .ip = ip,
                             .network = net};
    bool noticed = false;
    assert_int_equal(auth_store_session_open(pool, &in, family, &noticed), 0);
    assert_true(cm_is_uuid(family, strlen(family)));
    /* The token and the sessions row name the same family: the one returned. */
    char *fam = value1(pool,
                       "SELECT s.family_id FROM refresh_tokens r JOIN sessions s USING (family_id) "
                       "WHERE r.token_hash = $1",
                       hash);
    assert_non_null(fam);
    assert_string_equal(fam, family);
    free(fam);
    return noticed;
}

static void a_pair_unseen_for_90_days_is_new_and_notices_wait_an_hour(void **state)
{
    cm_db_pool_t *pool = *state;
    names_t n;
    make_names(&n, "sn");
    auth_user_t u;
    const char *field = NULL;
    char fam[37];
    assert_int_equal(do_register(pool, &n, NULL, &u, &field), 0);
    assert_false(open_from(pool, &u, "Firefox on Linux", "198.51.100.7", fam));   /* the first */
    assert_false(open_from(pool, &u, "Firefox on Linux", "198.51.100.200", fam)); /* its /24 */
    assert_true(open_from(pool, &u, "Firefox on Linux", "2001:db8:1:2::5", fam));
    assert_false(open_from(pool, &u, "curl", "2001:db8:1:2::5", fam)); /* within the hour */
    assert_int_equal(
        count1(pool, "SELECT count(*) FROM outbox WHERE key = $1 AND topic = 'signin.new'", u.id),
        1);
    /* 89 days ago is still familiar; 91 days ago is not, once the hour has passed. */
    exec1(pool, "UPDATE users SET signin_notice_at = now() - interval '2 hours' WHERE id = $1",
          u.id);
    exec1(pool,
          "UPDATE signin_seen SET last_seen_at = now() - interval '89 days' WHERE user_id = $1 "
          "AND network = '198.51.100.0/24'",
          u.id);
    assert_false(open_from(pool, &u, "Firefox on Linux", "198.51.100.8", fam));
    exec1(pool,
          "UPDATE signin_seen SET last_seen_at = now() - interval '91 days' WHERE user_id = $1 "
          "AND network = '198.51.100.0/24'",
          u.id);
    assert_true(open_from(pool, &u, "Firefox on Linux", "198.51.100.8", fam));
    /* A stale epoch (a password change in between) opens nothing. */
    char hash[65];
    new_hash(hash);
    auth_session_new_t stale = {.user_id = u.id,
                                .epoch = u.session_epoch - 1,
                                .hash = hash,
                                .ttl_days = 30,
                                .user_agent = "curl",
                                .network = "unknown"};
    bool noticed = true;
    assert_int_equal(auth_store_session_open(pool, &stale, fam, &noticed), CM_ESTATE);
    assert_false(noticed);
    assert_int_equal(
        count1(pool, "SELECT count(*) FROM refresh_tokens WHERE token_hash = $1", hash), 0);
}

static void sessions_end_alone_or_all_but_one_and_only_the_owners(void **state)
{
    cm_db_pool_t *pool = *state;
    names_t n, m;
    make_names(&n, "se");
    make_names(&m, "se");
    auth_user_t u, v;
    const char *field = NULL;
    char a[37], b[37], c[37], d[37];
    assert_int_equal(do_register(pool, &n, NULL, &u, &field), 0);
    assert_int_equal(do_register(pool, &m, NULL, &v, &field), 0);
    open_from(pool, &u, "curl", "203.0.113.1", a);
    open_from(pool, &u, "curl", "203.0.113.1", b);
    open_from(pool, &u, "Other", NULL, c);
    open_from(pool, &v, "curl", "203.0.113.1", d);
    auth_session_t *list = NULL;
    size_t k = 0;
    assert_int_equal(auth_store_sessions_list(pool, u.id, &list, &k), 0);
    assert_int_equal(k, 3);
    assert_string_equal(list[0].id, c); /* most recently used first */
    assert_string_equal(list[0].ip, "");
    assert_string_equal(list[2].ip, "203.0.113.1");
    free(list);
    assert_int_equal(auth_store_session_end(pool, u.id, d), CM_ENOTFOUND); /* v's */
    assert_int_equal(auth_store_session_end(pool, u.id, a), 0);
    assert_int_equal(auth_store_session_end(pool, u.id, a), CM_ENOTFOUND); /* ended */
    int64_t ended = 0;
    assert_int_equal(auth_store_sessions_end_others(pool, u.id, c, &ended), 0);
    assert_int_equal(ended, 1); /* b */
    assert_int_equal(auth_store_sessions_list(pool, u.id, &list, &k), 0);
    assert_int_equal(k, 1);
    assert_string_equal(list[0].id, c);
    free(list);
    assert_int_equal(auth_store_sessions_list(pool, v.id, &list, &k), 0);
    assert_int_equal(k, 1);
    free(list);
}

static void the_sweep_forgets_sessions_without_tokens_and_old_sign_ins(void **state)
{
    cm_db_pool_t *pool = *state;
    names_t n;
    make_names(&n, "sw");
    auth_user_t u;
    const char *field = NULL;
    char a[37], b[37];
    assert_int_equal(do_register(pool, &n, NULL, &u, &field), 0);
    open_from(pool, &u, "curl", "203.0.113.1", a);
    open_from(pool, &u, "Other", "198.51.100.1", b);
    /* a: its tokens long expired; b: still holds its token. Both last used long ago. */
    exec1(pool,
          "UPDATE refresh_tokens SET expires_at = now() - interval '400 days' WHERE family_id = $1",
          a);
    exec1(pool, "UPDATE sessions SET last_used_at = now() - interval '400 days' WHERE user_id = $1",
          u.id);
    exec1(pool,
          "UPDATE signin_seen SET last_seen_at = now() - interval '100 days' WHERE user_id = $1 "
          "AND user_agent = 'curl'",
          u.id);
    /* keep_s of one day: expired tokens go first, then their session, then old sign-ins. */
    exec1(pool, "SELECT * FROM retention_sweep(1000, 86400, $1::bigint)", "0");
    assert_int_equal(count1(pool, "SELECT count(*) FROM sessions WHERE family_id = $1", a), 0);
    assert_int_equal(count1(pool, "SELECT count(*) FROM sessions WHERE family_id = $1", b), 1);
    assert_int_equal(count1(pool, "SELECT count(*) FROM signin_seen WHERE user_id = $1", u.id), 1);
}

/* ---- account deletion and export (issue 15) ---------------------------------------- */

static void a_deletion_removes_every_token_at_once_and_writes_one_event(void **state)
{
    cm_db_pool_t *pool = *state;
    names_t r, a;
    make_names(&r, "dlr");
    make_names(&a, "dla");
    auth_user_t ref, u;
    const char *field = NULL;
    assert_int_equal(do_register(pool, &r, NULL, &ref, &field), 0);
    assert_int_equal(do_register(pool, &a, ref.referral_code, &u, &field), 0);
    char h1[65], h2[65], c1[65];
    cm_sha256_hex("t1", 2, h1);
    cm_sha256_hex("t2", 2, h2);
    cm_sha256_hex("c1", 2, c1);
    assert_int_equal(auth_store_refresh_issue(pool, ref.id, 0, h1, 30), 0);
    assert_int_equal(auth_store_refresh_issue(pool, ref.id, 0, h2, 30), 0);
    auth_refresh_outcome_t out;
    auth_user_t owner;
    assert_int_equal(auth_store_refresh_rotate(pool, h1, c1, 10, 30, &out, &owner), 0);
    assert_int_equal(out, AUTH_REFRESH_ROTATED);

    /* The export: two families, the rotated one's last use is its child. */
    json_t *s = NULL;
    assert_int_equal(auth_store_sessions_export(pool, ref.id, &s), 0);
    assert_int_equal(json_array_size(s), 2);
    char *text = json_dumps(s, 0);
    assert_null(strstr(text, h1));
    assert_null(strstr(text, c1));
    assert_null(strstr(text, "token_hash"));
    assert_null(strstr(text, ref.id)); /* the user id is the export's user, not per session */
    free(text);
    json_t *f0 = json_array_get(s, 0);
    assert_true(json_is_true(json_object_get(f0, "active")));
    assert_non_null(json_string_value(json_object_get(f0, "last_used_at")));
    json_decref(s);

    /* The referrer goes: its referee stays, detached; every token dies with the row. */
    assert_int_equal(auth_store_delete_user(pool, K, ref.id, "req-1"), 0);
    assert_int_equal(count1(pool, "SELECT count(*) FROM users WHERE id = $1::uuid", ref.id), 0);
    assert_int_equal(
        count1(pool, "SELECT count(*) FROM refresh_tokens WHERE user_id = $1::uuid", ref.id), 0);
    assert_int_equal(
        count1(pool, "SELECT count(*) FROM one_time_tokens WHERE user_id = $1::uuid", ref.id), 0);
    assert_int_equal(count1(pool,
                            "SELECT count(*) FROM users WHERE id = $1::uuid "
                            "AND referred_by IS NULL",
                            u.id),
                     1);
    assert_int_equal(auth_store_refresh_rotate(pool, h2, c1, 10, 30, &out, &owner), 0);
    assert_int_equal(out, AUTH_REFRESH_INVALID);
    assert_int_equal(count1(pool,
                            "SELECT count(*) FROM outbox WHERE key = $1 AND topic = "
                            "'user.deleted' AND payload::jsonb->>'correlation_id' = 'req-1'",
                            ref.id),
                     1);
    /* A second deletion finds no one and writes nothing. */
    assert_int_equal(auth_store_delete_user(pool, K, ref.id, "req-2"), CM_ENOTFOUND);
    assert_int_equal(count1(pool,
                            "SELECT count(*) FROM outbox WHERE key = $1 AND topic = 'user.deleted'",
                            ref.id),
                     1);
    assert_int_equal(auth_store_sessions_export(pool, ref.id, &s), 0);
    assert_int_equal(json_array_size(s), 0);
    json_decref(s);
}

int main(void)
{
    if (cm_crypto_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unique_violations_name_the_field_ignoring_case),
        cmocka_unit_test(confirm_and_cancel_at_once_leave_one_winner),
        cmocka_unit_test(a_new_request_supersedes_and_the_hourly_cap_holds),
        cmocka_unit_test(referral_codes_resolve_to_the_referrer_or_fail_on_the_field),
        cmocka_unit_test(rotation_then_grace_then_reuse_revokes_the_family),
        cmocka_unit_test(expired_unknown_and_logged_out_tokens_are_invalid),
        cmocka_unit_test(rotations_of_one_users_tokens_run_side_by_side),
        cmocka_unit_test(a_revocation_racing_rotations_leaves_no_live_token),
        cmocka_unit_test(a_reuse_revocation_revokes_the_child_of_a_rotation_in_flight),
        cmocka_unit_test(pair_throttle_locks_from_the_fifth_failure_with_growing_delays),
        cmocka_unit_test(account_ceiling_is_short_and_keys_are_hashed),
        cmocka_unit_test(a_password_reset_clears_the_account_throttle_and_bumps_the_epoch),
        cmocka_unit_test(rehash_is_a_compare_and_set_on_the_old_hash),
        cmocka_unit_test(a_deletion_removes_every_token_at_once_and_writes_one_event),
        cmocka_unit_test(throttle_keys_are_keyed_hashes_that_ignore_the_name_case),
        cmocka_unit_test(reset_requests_are_capped_at_three_an_hour_and_ignore_unknown_emails),
        cmocka_unit_test(a_closed_address_is_only_read_known_or_not_until_its_window_ends),
        cmocka_unit_test(a_pair_unseen_for_90_days_is_new_and_notices_wait_an_hour),
        cmocka_unit_test(sessions_end_alone_or_all_but_one_and_only_the_owners),
        cmocka_unit_test(the_sweep_forgets_sessions_without_tokens_and_old_sign_ins),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
