/*
 * Sessions and logins under attack, against the real stack (issue 12, items
 * 4, 5, 9 and 10), over HTTP to the gateway and straight to auth:
 *
 * - resets, logouts, rotations and logins of one user race on threads for
 *   hundreds of iterations; once a reset or a logout has answered, no
 *   refresh token of the families it ended works, and a login that checked
 *   the old password opens no family; a second auth with other argon2
 *   parameters makes every login rehash, and no rehash ever replaces the
 *   newer password; a reuse revocation racing a rotation leaves no child alive;
 * - the login throttle slows an attacker (429 + Retry-After) while the
 *   owner, from another address, logs in; the account ceiling is short and
 *   a reset clears everything at once; throttle keys are hashes;
 * - forgot-password costs the same for known and unknown addresses;
 * - auth believes X-Real-IP only from GATEWAY_ADDRESSES.
 *
 * Client addresses are simulated by talking to auth directly with an
 * X-Real-IP header: the test runs on loopback, which is the default
 * GATEWAY_ADDRESSES.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "cm/crypto.h"
#include "cm/util.h"
#include "http_client.h"
#include "stack.h"
#include "testenv.h"
#include "instance.h"

#define ENV "LINKTR_STACK_ENV"
/* Iterations of the session race; HOSTILE_SESSION_ITERATIONS overrides. */
#define RACE_ITERATIONS 200
/* A rotator stops after this many rotations of its own (it normally stops at the 401). */
#define MAX_ROTATIONS 40
#define MAX_TOKENS 256
/* Must match services/auth/store.h. */
#define ACCOUNT_MAX_S 30

/* ---- HTTP helpers ---------------------------------------------------------------- */

/* POSTs body to base+path with an optional X-Real-IP; returns the status (0: no answer). */
static long post(const char *base, const char *path, json_t *body, const char *real_ip, t_resp_t *r)
{
    char *u = cm_xasprintf("%s%s", base, path);
    char *hdr = real_ip ? cm_xasprintf("X-Real-IP: %s", real_ip) : NULL;
    const char *headers[2] = {hdr, NULL};
    char *text = json_dumps(body, JSON_COMPACT);
    int rc = t_http("POST", u, "application/json", text, strlen(text), headers, r);
    free(text), free(hdr), free(u);
    return rc == 0 ? r->status : 0;
}

static long post_status(const char *base, const char *path, json_t *body, const char *real_ip)
{
    t_resp_t r;
    long s = post(base, path, body, real_ip, &r);
    t_resp_dispose(&r);
    return s;
}

static char *password(int k)
{
    return cm_xasprintf("violet pancake orbit %d zebra lantern", k);
}

/* Logs in; returns the status and, on 200, the refresh token in *refresh (caller frees). */
static long login(const char *base, const char *ident, const char *pw, const char *ip,
                  char **refresh, char **retry_after)
{
    json_t *b = json_pack("{s:s, s:s}", "username_or_email", ident, "password", pw);
    t_resp_t r;
    long s = post(base, "/api/login/", b, ip, &r);
    if (refresh)
        *refresh =
            s == 200 ? cm_xstrdup(json_string_value(json_object_get(r.json, "refresh"))) : NULL;
    if (retry_after)
        *retry_after = t_resp_header(&r, "Retry-After");
    t_resp_dispose(&r);
    json_decref(b);
    return s;
}

/* Presents a refresh token; on 200 *next is the new one (caller frees). */
static long refresh(const char *base, const char *tok, char **next)
{
    json_t *b = json_pack("{s:s}", "refresh", tok);
    t_resp_t r;
    long s = post(base, "/api/token/refresh/", b, NULL, &r);
    *next = s == 200 ? cm_xstrdup(json_string_value(json_object_get(r.json, "refresh"))) : NULL;
    t_resp_dispose(&r);
    json_decref(b);
    return s;
}

/* A reset token for user_id, stored as the service stores one (no mail, no hourly cap). */
static char *reset_token(const char *user_id)
{
    char tok[CM_TOKEN_CHARS], hash[65];
    cm_token_new(tok);
    cm_sha256_hex(tok, strlen(tok), hash);
    assert_int_equal(t_db_count("INSERT INTO auth.one_time_tokens (token_hash, kind, user_id, "
                                "expires_at) VALUES ($1, 'reset', $2::uuid, now() + "
                                "interval '30 minutes') RETURNING 1",
                                hash, user_id),
                     1);
    return cm_xstrdup(tok);
}

static long reset(const char *base, const char *tok, const char *pw)
{
    json_t *b = json_pack("{s:s, s:s}", "token", tok, "password", pw);
    long s = post_status(base, "/api/reset-password/", b, NULL);
    json_decref(b);
    return s;
}

/* Registers a fresh user with password(0); returns its user object. */
static json_t *new_user(const char *tag)
{
    json_t *body = t_user_body(tag, NULL);
    char *pw = password(0);
    json_object_set_new(body, "password", json_string(pw));
    json_t *u = t_register(body);
    free(pw);
    json_decref(body);
    return u;
}

static const char *str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* ---- a second auth with other argon2 parameters ------------------------------------- */

/* Teardown: a test that failed half-way must not leave its instance running (it holds
 * ctest's output pipe, and ctest would wait for it). */
static int reap_instance(void **state)
{
    t_instance_t *in = *state;
    t_instance_kill(in);
    free(in);
    *state = NULL;
    return 0;
}

/* ---- the session race --------------------------------------------------------------- */

/* Every refresh token a racer saw; all must be dead once the race is over. */
typedef struct bag {
    pthread_mutex_t mu;
    char *tok[MAX_TOKENS];
    int n;
} bag_t;

static void bag_add(bag_t *b, char *tok)
{
    pthread_mutex_lock(&b->mu);
    if (b->n < MAX_TOKENS)
        b->tok[b->n++] = tok;
    else
        free(tok);
    pthread_mutex_unlock(&b->mu);
}

typedef struct race {
    const char *gw, *auth, *auth2; /* base URLs */
    const char *ident, *old_pw, *new_pw, *reset_tok;
    char *family_a, *family_b; /* first tokens of the two families */
    pthread_barrier_t start;
    bag_t bag;
    long reset_status, logout_status;
} race_t;

typedef struct racer {
    race_t *race;
    int role;
} racer_t;

enum { ROTATE_A, ROTATE_B, LOGOUT_B, LOGIN_OLD, LOGIN_OLD_REHASH, RESET, ROLES };

static void rotate_chain(race_t *rc, const char *base, const char *first)
{
    char *cur = cm_xstrdup(first);
    for (int i = 0; i < MAX_ROTATIONS; i++) {
        char *next = NULL;
        if (refresh(base, cur, &next) != 200)
            break;
        bag_add(&rc->bag, cur);
        cur = next;
    }
    bag_add(&rc->bag, cur);
}

static void *race_run(void *arg)
{
    racer_t *me = arg;
    race_t *rc = me->race;
    char *tok = NULL;
    pthread_barrier_wait(&rc->start);
    switch (me->role) {
    case ROTATE_A:
        rotate_chain(rc, rc->auth, rc->family_a);
        break;
    case ROTATE_B:
        rotate_chain(rc, rc->gw, rc->family_b);
        break;
    case LOGOUT_B: {
        json_t *b = json_pack("{s:s}", "refresh", rc->family_b);
        rc->logout_status = post_status(rc->gw, "/api/logout/", b, NULL);
        json_decref(b);
        break;
    }
    case LOGIN_OLD:
    case LOGIN_OLD_REHASH:
        if (login(me->role == LOGIN_OLD ? rc->auth : rc->auth2, rc->ident, rc->old_pw, NULL, &tok,
                  NULL) == 200)
            bag_add(&rc->bag, tok);
        break;
    case RESET:
        rc->reset_status = reset(rc->gw, rc->reset_tok, rc->new_pw);
        break;
    }
    return NULL;
}

/* One round: two families of the old password, everything at once, then the verdict. */
static void race_once(race_t *rc, const char *user_id, int k)
{
    char *old_pw = password(k), *new_pw = password(k + 1), *tok = reset_token(user_id);
    rc->old_pw = old_pw, rc->new_pw = new_pw, rc->reset_tok = tok;
    rc->bag.n = 0;
    assert_int_equal(login(rc->auth, rc->ident, old_pw, NULL, &rc->family_a, NULL), 200);
    assert_int_equal(login(rc->gw, rc->ident, old_pw, NULL, &rc->family_b, NULL), 200);
    pthread_barrier_init(&rc->start, NULL, ROLES);
    pthread_t tid[ROLES];
    racer_t who[ROLES];
    for (int i = 0; i < ROLES; i++) {
        who[i] = (racer_t){.race = rc, .role = i};
        assert_int_equal(pthread_create(&tid[i], NULL, race_run, &who[i]), 0);
    }
    for (int i = 0; i < ROLES; i++)
        pthread_join(tid[i], NULL);
    pthread_barrier_destroy(&rc->start);
    assert_int_equal(rc->reset_status, 204);
    /* A reset that commits first has already revoked family B: the logout then
     * finds nothing live and answers 401, as for any dead token. Either way
     * the family is over, which the refreshes below prove. */
    if (rc->logout_status != 204 && rc->logout_status != 401)
        fail_msg("iteration %d: logout answered %ld", k, rc->logout_status);
    /* The reset and the logout have answered: nothing issued before them may refresh. */
    for (int i = 0; i < rc->bag.n; i++) {
        char *next = NULL;
        long s = refresh(rc->gw, rc->bag.tok[i], &next);
        if (s != 401)
            fail_msg("iteration %d: a refresh token from before the reset answered %ld", k, s);
        free(rc->bag.tok[i]);
    }
    /* No rehash (auth-2 hashes differently, so every login rehashes) replaced the new hash. */
    assert_int_equal(login(k % 2 ? rc->auth : rc->auth2, rc->ident, new_pw, NULL, NULL, NULL), 200);
    free(rc->family_a), free(rc->family_b), free(old_pw), free(new_pw), free(tok);
}

static void no_refresh_token_from_before_a_reset_or_logout_survives_the_race(void **state)
{
    static const char *const other_params[] = {"ARGON2_OPSLIMIT=1", "ARGON2_MEMLIMIT_KIB=8192",
                                               NULL};
    t_instance_t *inst = cm_xcalloc(1, sizeof *inst);
    *state = inst;
    t_auth_start(inst, other_params);
    json_t *u = new_user("race");
    race_t rc = {.ident = str(u, "username")};
    char *gw = t_env(ENV, "GATEWAY_URL"), *auth = t_env(ENV, "AUTH_URL");
    rc.gw = gw, rc.auth = auth, rc.auth2 = inst->base;
    pthread_mutex_init(&rc.bag.mu, NULL);
    char *env = getenv("HOSTILE_SESSION_ITERATIONS");
    long long iterations = RACE_ITERATIONS;
    if (env)
        assert_int_equal(cm_strtonum(env, 1, 100000, &iterations), 0);
    for (int k = 0; k < (int)iterations; k++)
        race_once(&rc, str(u, "id"), k);
    /* The last password is the only one that works, on both instances. */
    char *last = password((int)iterations), *before = password((int)iterations - 1);
    assert_int_equal(login(auth, rc.ident, last, NULL, NULL, NULL), 200);
    assert_int_equal(login(inst->base, rc.ident, before, NULL, NULL, NULL), 401);
    free(last), free(before);
    pthread_mutex_destroy(&rc.bag.mu);
    t_instance_stop(inst);
    free(gw), free(auth);
    json_decref(u);
}

/* ---- reuse detection racing a rotation ------------------------------------------------ */

#define REUSE_ITERATIONS 100

typedef struct reuse_race {
    const char *base, *stale, *current;
    int delay_ms; /* spreads the theft over the rotator's run across iterations */
    pthread_barrier_t start;
    bag_t bag;
} reuse_race_t;

static void *reuse_rotator(void *arg)
{
    reuse_race_t *rr = arg;
    char *cur = cm_xstrdup(rr->current);
    pthread_barrier_wait(&rr->start);
    for (int i = 0; i < MAX_ROTATIONS; i++) {
        char *next = NULL;
        if (refresh(rr->base, cur, &next) != 200)
            break;
        bag_add(&rr->bag, cur);
        cur = next;
    }
    bag_add(&rr->bag, cur);
    return NULL;
}

static void *reuse_thief(void *arg)
{
    reuse_race_t *rr = arg;
    char *next = NULL;
    pthread_barrier_wait(&rr->start);
    t_sleep_ms(rr->delay_ms);
    long s = refresh(rr->base, rr->stale, &next); /* a token two rotations old: theft */
    if (s != 401)
        fprintf(stderr, "reuse race: the stale token answered %ld\n", s);
    free(next);
    return NULL;
}

static void a_reuse_revocation_sees_every_child_a_concurrent_rotation_wrote(void **state)
{
    (void)state;
    json_t *u = new_user("reuse");
    char *auth = t_env(ENV, "AUTH_URL"), *pw = password(0);
    reuse_race_t rr = {.base = auth};
    pthread_mutex_init(&rr.bag.mu, NULL);
    for (int k = 0; k < REUSE_ITERATIONS; k++) {
        char *t0 = NULL, *t1 = NULL, *t2 = NULL;
        assert_int_equal(login(auth, str(u, "username"), pw, NULL, &t0, NULL), 200);
        assert_int_equal(refresh(auth, t0, &t1), 200);
        assert_int_equal(refresh(auth, t1, &t2), 200);
        rr.stale = t0, rr.current = t2, rr.bag.n = 0, rr.delay_ms = (k * 7) % 20;
        pthread_barrier_init(&rr.start, NULL, 2);
        pthread_t a, b;
        assert_int_equal(pthread_create(&a, NULL, reuse_rotator, &rr), 0);
        assert_int_equal(pthread_create(&b, NULL, reuse_thief, &rr), 0);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
        pthread_barrier_destroy(&rr.start);
        for (int i = 0; i < rr.bag.n; i++) {
            char *next = NULL;
            long s = refresh(auth, rr.bag.tok[i], &next);
            if (s != 401)
                fail_msg("iteration %d: a token of the revoked family answered %ld", k, s);
            free(rr.bag.tok[i]);
        }
        free(t0), free(t1), free(t2);
    }
    pthread_mutex_destroy(&rr.bag.mu);
    free(pw), free(auth);
    json_decref(u);
}

/* ---- throttling that protects the owner --------------------------------------------- */

static long long retry_after_s(const char *v)
{
    long long n = -1;
    assert_non_null(v);
    assert_int_equal(cm_strtonum(v, 1, 3600, &n), 0);
    return n;
}

static void the_owner_logs_in_from_another_address_while_the_attacker_is_throttled(void **state)
{
    (void)state;
    json_t *u = new_user("owner");
    char *auth = t_env(ENV, "AUTH_URL"), *pw = password(0), *ra = NULL;
    const char *name = str(u, "username"), *attacker = "203.0.113.66";
    int counted = 0, throttled = 0;
    /* Seven counted failures: from the fifth on the pair waits 1, 2, then 4 s. */
    while (counted < 7) {
        long s = login(auth, name, "wrong horse battery staple", attacker, NULL, &ra);
        if (s == 429) {
            throttled++;
            long long wait = retry_after_s(ra);
            assert_true(counted >= 5 && wait <= 4);
            t_sleep_ms((int)wait * 1000 + 100);
        } else {
            assert_int_equal(s, 401);
            counted++;
        }
        free(ra);
    }
    assert_true(throttled >= 1);
    /* The right password from the attacker's address waits too: the pair is locked. */
    assert_int_equal(login(auth, str(u, "email"), pw, attacker, NULL, &ra), 429);
    free(ra);
    /* The owner, elsewhere, is not locked out by someone else's failures. */
    char *tok = NULL;
    assert_int_equal(login(auth, str(u, "email"), pw, "198.51.100.7", &tok, NULL), 200);
    assert_non_null(tok);
    free(tok);
    assert_int_equal(login(auth, name, "wrong horse battery staple", attacker, NULL, NULL), 429);
    free(pw), free(auth);
    json_decref(u);
}

static void a_distributed_attack_meets_a_short_ceiling_and_a_reset_clears_it(void **state)
{
    (void)state;
    json_t *u = new_user("ceil");
    char *auth = t_env(ENV, "AUTH_URL"), *gw = t_env(ENV, "GATEWAY_URL"), *pw = password(0);
    const char *name = str(u, "username");
    char ip[32], *ra = NULL;
    int refused = 0;
    for (int i = 0; i < 30; i++) { /* one guess from each of 30 addresses */
        snprintf(ip, sizeof ip, "192.0.2.%d", i + 1);
        long s = login(auth, name, "wrong horse battery staple", ip, NULL, &ra);
        assert_true(s == 401 || s == 429);
        if (s == 429) {
            refused++;
            assert_true(retry_after_s(ra) <= ACCOUNT_MAX_S);
        }
        free(ra);
    }
    assert_true(refused > 0); /* the ceiling engaged */
    /* A fresh address waits, but only briefly: never more than the ceiling's cap. */
    long s = login(auth, name, pw, "198.51.100.200", NULL, &ra);
    if (s == 429)
        assert_true(retry_after_s(ra) <= ACCOUNT_MAX_S);
    else
        assert_int_equal(s, 200);
    free(ra);
    /* The owner resets the password: every throttle row of the account is gone at once. */
    char *tok = reset_token(str(u, "id")), *new_pw = password(1);
    assert_int_equal(reset(gw, tok, new_pw), 204);
    assert_int_equal(login(auth, name, new_pw, "192.0.2.1", NULL, NULL), 200);
    assert_int_equal(login(auth, name, new_pw, "198.51.100.201", NULL, NULL), 200);
    free(tok), free(new_pw), free(pw), free(auth), free(gw);
    json_decref(u);
}

static void unknown_names_are_throttled_alike_and_never_stored(void **state)
{
    (void)state;
    char *auth = t_env(ENV, "AUTH_URL");
    char name[64];
    snprintf(name, sizeof name, "Ghost_%s", t_unique());
    int throttled = 0;
    for (int i = 0; i < 7; i++) {
        long s = login(auth, name, "wrong horse battery staple", "203.0.113.99", NULL, NULL);
        assert_true(s == 401 || s == 429);
        throttled += s == 429;
    }
    assert_true(throttled >= 1);
    assert_int_equal(t_db_count("SELECT 1 FROM auth.login_throttle WHERE key ILIKE '%' || $1 || "
                                "'%' OR account ILIKE '%' || $1 || '%'",
                                name, NULL),
                     0);
    assert_int_equal(t_db_count("SELECT 1 FROM auth.login_throttle WHERE "
                                "key !~ '^(acct|pair|reset):[0-9a-f]{64}$' OR updated_at IS NULL",
                                NULL, NULL),
                     0);
    free(auth);
}

/* ---- forgot-password: same work for known and unknown addresses ------------------------ */

#define FORGOT_ROUNDS 150 /* of each kind, interleaved */
#define KNOWN_USERS 10

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t timed_forgot(const char *gw, const char *email)
{
    json_t *b = json_pack("{s:s}", "email", email);
    int64_t t0 = cm_now_us();
    long s = post_status(gw, "/api/forgot-password/", b, NULL);
    int64_t dt = cm_now_us() - t0;
    assert_int_equal(s, 202);
    json_decref(b);
    return dt;
}

static void forgot_password_takes_as_long_for_unknown_as_for_known_addresses(void **state)
{
    (void)state;
    char *gw = t_env(ENV, "GATEWAY_URL");
    json_t *users[KNOWN_USERS];
    for (int i = 0; i < KNOWN_USERS; i++)
        users[i] = new_user("fgt");
    static int64_t known[FORGOT_ROUNDS], unknown[FORGOT_ROUNDS];
    char ghost[96];
    for (int i = 0; i < 10; i++) { /* warm the connections and prepared statements */
        snprintf(ghost, sizeof ghost, "warm%d_%s@example.com", i, t_unique());
        (void)timed_forgot(gw, ghost);
    }
    /* As many unknown addresses as known ones, each asked as often: an address's requests
     * after its first three in a window only read its mark, known or not, so the two kinds
     * are compared with the same history. */
    static char ghosts[KNOWN_USERS][96];
    for (int i = 0; i < KNOWN_USERS; i++)
        snprintf(ghosts[i], sizeof ghosts[i], "nobody%d_%s@example.com", i, t_unique());
    for (int i = 0; i < FORGOT_ROUNDS; i++) {
        const char *mine = str(users[i % KNOWN_USERS], "email"), *nobody = ghosts[i % KNOWN_USERS];
        if (i % 2) {
            known[i] = timed_forgot(gw, mine);
            unknown[i] = timed_forgot(gw, nobody);
        } else {
            unknown[i] = timed_forgot(gw, nobody);
            known[i] = timed_forgot(gw, mine);
        }
    }
    /* The unknown path writes too (its keyed-hashed mark), as the known one does. */
    int marks =
        t_db_count("SELECT 1 FROM auth.login_throttle WHERE key LIKE 'reset:%'", NULL, NULL);
    snprintf(ghost, sizeof ghost, "ghost_%s@example.com", t_unique());
    (void)timed_forgot(gw, ghost);
    assert_true(t_db_count("SELECT 1 FROM auth.login_throttle WHERE key LIKE 'reset:%'", NULL,
                           NULL) > marks);
    qsort(known, FORGOT_ROUNDS, sizeof known[0], cmp_i64);
    qsort(unknown, FORGOT_ROUNDS, sizeof unknown[0], cmp_i64);
    int64_t mk = known[FORGOT_ROUNDS / 2], mu = unknown[FORGOT_ROUNDS / 2];
    int64_t diff = mk > mu ? mk - mu : mu - mk;
    fprintf(stderr, "forgot-password medians: known %lld us, unknown %lld us, diff %lld us\n",
            (long long)mk, (long long)mu, (long long)diff);
    /*
     * Generous: both paths run the same transaction shape (the first three
     * requests of an address a write and one commit, later ones one read);
     * the known one adds two small INSERTs (token, outbox) on the first three
     * requests per account and hour. A synchronous commit's flush
     * costs 1-10 ms on real disks; on this shared 2-core machine a request
     * costs a few ms with jitter of the same order. 5 ms plus a quarter of
     * the larger median catches a flush-sized gap on a quiet disk without
     * failing on scheduler noise.
     */
    int64_t bound = 5000 + (mk > mu ? mk : mu) / 4;
    assert_true(diff <= bound);
    for (int i = 0; i < KNOWN_USERS; i++)
        json_decref(users[i]);
    free(gw);
}

/* ---- one client-IP policy --------------------------------------------------------------- */

static char *registration_ip(const char *id)
{
    return t_db_value("SELECT host(registration_ip) FROM auth.users WHERE id = $1::uuid", id);
}

static json_t *register_at(const char *base, const char *real_ip, const char *xff)
{
    json_t *body = t_user_body("ip", NULL);
    char *u = cm_xasprintf("%s/api/register/", base);
    char *h1 = real_ip ? cm_xasprintf("X-Real-IP: %s", real_ip) : NULL;
    char *h2 = xff ? cm_xasprintf("X-Forwarded-For: %s", xff) : NULL;
    const char *headers[3] = {h1 ? h1 : h2, h1 ? h2 : NULL, NULL};
    char *text = json_dumps(body, JSON_COMPACT);
    t_resp_t r;
    assert_int_equal(t_http("POST", u, "application/json", text, strlen(text), headers, &r), 0);
    assert_int_equal(r.status, 201);
    json_t *user = json_incref(r.json);
    t_resp_dispose(&r);
    free(text), free(h1), free(h2), free(u);
    json_decref(body);
    return user;
}

static void auth_believes_real_ip_only_from_gateway_addresses(void **state)
{
    char *auth = t_env(ENV, "AUTH_URL"), *gw = t_env(ENV, "GATEWAY_URL");
    /* From loopback (a gateway address by default): X-Real-IP, never X-Forwarded-For. */
    json_t *a = register_at(auth, "203.0.113.41", "198.51.100.1, 198.51.100.2");
    char *ip = registration_ip(str(a, "id"));
    assert_string_equal(ip, "203.0.113.41");
    free(ip);
    json_t *b = register_at(auth, NULL, "198.51.100.1");
    ip = registration_ip(str(b, "id"));
    assert_string_equal(ip, "127.0.0.1");
    free(ip);
    /* Through the gateway: its decision (here the test's own address), whatever we claim. */
    json_t *c = register_at(gw, "203.0.113.42", "203.0.113.43");
    ip = registration_ip(str(c, "id"));
    assert_non_null(ip);
    assert_string_not_equal(ip, "203.0.113.42");
    free(ip);
    /* An auth whose gateway lives elsewhere takes loopback for a client. */
    static const char *const elsewhere[] = {"GATEWAY_ADDRESSES=10.9.0.0/16", NULL};
    t_instance_t *other = cm_xcalloc(1, sizeof *other);
    *state = other;
    t_auth_start(other, elsewhere);
    json_t *d = register_at(other->base, "203.0.113.44", "203.0.113.45");
    ip = registration_ip(str(d, "id"));
    assert_string_equal(ip, "127.0.0.1");
    free(ip);
    t_instance_stop(other);
    json_decref(a), json_decref(b), json_decref(c), json_decref(d);
    free(auth), free(gw);
}

int main(void)
{
    if (cm_crypto_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(no_refresh_token_from_before_a_reset_or_logout_survives_the_race,
                                  reap_instance),
        cmocka_unit_test(a_reuse_revocation_sees_every_child_a_concurrent_rotation_wrote),
        cmocka_unit_test(the_owner_logs_in_from_another_address_while_the_attacker_is_throttled),
        cmocka_unit_test(a_distributed_attack_meets_a_short_ceiling_and_a_reset_clears_it),
        cmocka_unit_test(unknown_names_are_throttled_alike_and_never_stored),
        cmocka_unit_test(forgot_password_takes_as_long_for_unknown_as_for_known_addresses),
        cmocka_unit_test_teardown(auth_believes_real_ip_only_from_gateway_addresses, reap_instance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
