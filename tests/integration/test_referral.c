/*
 * The referral service end to end, against the running stack: users
 * register through auth, events travel through Kafka, the referral API
 * answers through the gateway. Duplicates and out-of-order events are
 * produced straight onto the topics, as a misbehaving broker would.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "cm/crypto.h"
#include "cm/events.h"
#include "cm/producer.h"
#include "cm/util.h"
#include "http_client.h"
#include "testenv.h"

#define ENV "LINKTR_STACK_ENV"
/* Events cross Kafka and two consumers: generous, but bounded. */
#define DEADLINE_MS 30000
#define PASSWORD "correct horse battery staple 42"

/* One value from an admin query with one text parameter; "" when no row. Caller frees. */
static char *query1(const char *sql, const char *param)
{
    char *dsn = t_env(ENV, "ADMIN_DATABASE_URL");
    PGconn *c = PQconnectdb(dsn);
    free(dsn);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    const char *p[1] = {param};
    PGresult *r = PQexecParams(c, sql, 1, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    char *v = cm_xstrdup(PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    PQfinish(c);
    return v;
}

/* Polls sql until it yields want (or the deadline passes); returns true on success. */
static bool eventually(const char *sql, const char *param, const char *want)
{
    int64_t deadline = cm_now_mono_ms() + DEADLINE_MS;
    for (;;) {
        char *v = query1(sql, param);
        bool ok = strcmp(v, want) == 0;
        free(v);
        if (ok)
            return true;
        if (cm_now_mono_ms() > deadline)
            return false;
        t_sleep_ms(100);
    }
}

typedef struct user {
    char id[37];
    char name[40];
    char email[80];
    char code[16];
} user_t;

/* POST /api/register/ through auth (retrying while the hash pool is busy); fills u. */
static void register_user(user_t *u, const char *tag, const char *referral_code)
{
    static int seq;
    snprintf(u->name, sizeof u->name, "r%s%d_%s", tag, __atomic_add_fetch(&seq, 1, 0), t_unique());
    snprintf(u->email, sizeof u->email, "%s@example.com", u->name);
    json_t *body =
        json_pack("{s:s, s:s, s:s}", "username", u->name, "email", u->email, "password", PASSWORD);
    if (referral_code)
        json_object_set_new(body, "referral_code", json_string(referral_code));
    char *reg = t_url("GATEWAY_URL", "/api/register/");
    t_resp_t r;
    for (int tries = 0;; tries++) {
        assert_int_equal(t_post_json(reg, body, NULL, &r), 0);
        if ((r.status != 503 && r.status != 429) || tries > 100)
            break;
        t_resp_dispose(&r);
        t_sleep_ms(100);
    }
    assert_int_equal(r.status, 201);
    snprintf(u->id, sizeof u->id, "%s", json_string_value(json_object_get(r.json, "id")));
    snprintf(u->code, sizeof u->code, "%s",
             json_string_value(json_object_get(r.json, "referral_code")));
    t_resp_dispose(&r);
    free(reg);
    json_decref(body);
}

static char *login(const user_t *u)
{
    json_t *body = json_pack("{s:s, s:s}", "username_or_email", u->name, "password", PASSWORD);
    char *lg = t_url("GATEWAY_URL", "/api/login/");
    t_resp_t r;
    for (int tries = 0;; tries++) {
        assert_int_equal(t_post_json(lg, body, NULL, &r), 0);
        if ((r.status != 503 && r.status != 429) || tries > 100)
            break;
        t_resp_dispose(&r);
        t_sleep_ms(100);
    }
    assert_int_equal(r.status, 200);
    char *tok = cm_xstrdup(json_string_value(json_object_get(r.json, "access")));
    t_resp_dispose(&r);
    free(lg);
    json_decref(body);
    return tok;
}

/* GET path through the gateway with the token; the JSON body (caller decrefs). */
static json_t *api_get(const char *path, const char *tok)
{
    char *u = t_url("GATEWAY_URL", path);
    t_resp_t r;
    assert_int_equal(t_get(u, tok, &r), 0);
    assert_int_equal(r.status, 200);
    json_t *j = json_incref(r.json);
    t_resp_dispose(&r);
    free(u);
    return j;
}

/* Polls the stats until member reaches want (e.g. "successful" == 1). */
static json_t *stats_when(const char *tok, const char *member, long long want)
{
    int64_t deadline = cm_now_mono_ms() + DEADLINE_MS;
    for (;;) {
        json_t *s = api_get("/api/referral-stats/", tok);
        if (json_integer_value(json_object_get(s, member)) == want || cm_now_mono_ms() > deadline)
            return s;
        json_decref(s);
        t_sleep_ms(100);
    }
}

/* The token in the verify link of the mail sent to email (caller frees), polled. */
static char *verify_token_for(const char *email)
{
    char *dir = t_env(ENV, "MAIL_DIR");
    char *newdir = cm_xasprintf("%s/new", dir);
    char *token = NULL;
    int64_t deadline = cm_now_mono_ms() + DEADLINE_MS;
    while (!token && cm_now_mono_ms() < deadline) {
        DIR *d = opendir(newdir);
        for (struct dirent *e; d && !token && (e = readdir(d));) {
            if (e->d_name[0] == '.')
                continue;
            char *path = cm_xasprintf("%s/%s", newdir, e->d_name);
            char *text = NULL;
            size_t len = 0;
            const char *at = NULL;
            if (cm_read_file(path, 1 << 20, &text, &len) == 0 && strstr(text, email) &&
                (at = strstr(text, "verify-email?token=")))
                token = cm_xstrndup(at + 19, strspn(at + 19, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                             "abcdefghijklmnopqrstuvwxyz"
                                                             "0123456789-_"));
            free(text);
            free(path);
        }
        if (d)
            closedir(d);
        if (!token)
            t_sleep_ms(100);
    }
    free(newdir);
    free(dir);
    assert_non_null(token);
    return token;
}

static void verify(const char *email)
{
    char *token = verify_token_for(email);
    json_t *body = json_pack("{s:s}", "token", token);
    char *u = t_url("GATEWAY_URL", "/api/verify-email/");
    t_resp_t r;
    assert_int_equal(t_post_json(u, body, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
    free(u);
    json_decref(body);
    free(token);
}

/* Produces one message straight onto a topic (key = the user id). */
static void produce(const char *topic, const char *key, json_t *envelope)
{
    char *bootstrap = t_env(ENV, "KAFKA_BOOTSTRAP");
    int err = 0;
    cm_producer_t *p = cm_producer_new(bootstrap, "integration-referral", &err);
    assert_non_null(p);
    char *text = json_dumps(envelope, JSON_COMPACT);
    assert_int_equal(cm_producer_send(p, topic, key, text, strlen(text), 10000), 0);
    free(text);
    cm_producer_free(p);
    free(bootstrap);
}

#define REFERRAL_STATUS "SELECT status FROM referral.referrals WHERE referred_id = $1::uuid"

static void a_referred_registration_is_pending_then_successful_after_verification(void **state)
{
    (void)state;
    user_t ada, bob;
    register_user(&ada, "ada", NULL);
    register_user(&bob, "bob", ada.code);
    assert_true(eventually(REFERRAL_STATUS, bob.id, "pending"));
    char *tok = login(&ada);
    json_t *s = stats_when(tok, "pending", 1);
    assert_int_equal(json_integer_value(json_object_get(s, "total")), 1);
    assert_int_equal(json_integer_value(json_object_get(s, "pending")), 1);
    assert_string_equal(json_string_value(json_object_get(s, "referral_code")), ada.code);
    json_decref(s);
    verify(bob.email);
    s = stats_when(tok, "successful", 1);
    assert_int_equal(json_integer_value(json_object_get(s, "successful")), 1);
    assert_int_equal(json_integer_value(json_object_get(s, "pending")), 0);
    assert_true(json_real_value(json_object_get(s, "conversion_rate")) == 1.0);
    json_decref(s);
    json_t *page = api_get("/api/referrals/?limit=10", tok);
    json_t *row = json_array_get(json_object_get(page, "results"), 0);
    assert_non_null(row);
    assert_string_equal(json_string_value(json_object_get(row, "status")), "successful");
    json_t *who = json_object_get(row, "referred_user");
    assert_string_equal(json_string_value(json_object_get(who, "id")), bob.id);
    assert_string_equal(json_string_value(json_object_get(who, "username")), bob.name);
    assert_true(json_is_null(json_object_get(page, "next")));
    /* The transition went out as referral.converted through the outbox. */
    assert_true(eventually("SELECT count(*) FROM referral.outbox WHERE key = $1 AND "
                           "topic = 'referral.converted' AND sent_at IS NOT NULL",
                           ada.id, "1"));
    json_decref(page);
    free(tok);
}

/* A user.registered for u, sealed for the mailer, as auth would emit it. */
static json_t *registered_event(const user_t *u, const user_t *referrer)
{
    char *pkfile = t_env(ENV, "MAILER_SEAL_PUBLIC_KEY_FILE");
    char *pktext = NULL;
    size_t len = 0;
    assert_int_equal(cm_read_file(pkfile, 256, &pktext, &len), 0);
    uint8_t pk[32];
    assert_int_equal(cm_key_decode(pktext, len, pk), 0);
    char *sealed = NULL;
    assert_int_equal(cm_seal(pk, "tok_integration_0123456789abcdef", 32, &sealed), 0);
    json_t *by =
        referrer ? json_pack("{s:s, s:s}", "user_id", referrer->id, "referral_code", referrer->code)
                 : json_null();
    char at[32];
    cm_format_time(cm_now_us(), at);
    json_t *data =
        json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:s}", "user_id", u->id, "username", u->name,
                  "email", u->email, "referral_code", u->code, "referred_by", by, "ip", "127.0.0.1",
                  "verify_token_sealed", sealed, "registered_at", at);
    free(sealed);
    free(pktext);
    free(pkfile);
    return cm_event_new(CM_EV_USER_REGISTERED, "auth", data);
}

static void the_same_event_delivered_twice_counts_once_and_mails_once(void **state)
{
    (void)state;
    user_t ada, bob;
    register_user(&ada, "dupa", NULL);
    register_user(&bob, "dupb", ada.code);
    assert_true(eventually(REFERRAL_STATUS, bob.id, "pending"));
    /* The event exactly as auth published it, from its outbox. */
    char *payload = query1("SELECT payload FROM auth.outbox WHERE key = $1 AND "
                           "topic = 'user.registered'",
                           bob.id);
    json_t *original = json_loads(payload, 0, NULL);
    assert_non_null(original);
    const char *orig_id = json_string_value(json_object_get(original, "id"));
    assert_true(
        eventually("SELECT count(*) FROM mailer.sent WHERE event_id = $1::uuid", orig_id, "1"));
    produce(CM_EV_USER_REGISTERED, bob.id, original);
    /* A sentinel behind it on the same partition (same key): once it is
     * handled, so is the duplicate. It is a new event id for a known user. */
    json_t *sentinel = registered_event(&bob, &ada);
    produce(CM_EV_USER_REGISTERED, bob.id, sentinel);
    const char *sid = json_string_value(json_object_get(sentinel, "id"));
    assert_true(eventually("SELECT count(*) FROM referral.processed_events "
                           "WHERE event_id = $1::uuid",
                           sid, "1"));
    assert_true(eventually("SELECT count(*) FROM mailer.sent WHERE event_id = $1::uuid", sid, "1"));
    assert_true(eventually("SELECT concat_ws(',', total, pending) FROM referral.referral_counters "
                           "WHERE user_id = $1::uuid",
                           ada.id, "1,1"));
    assert_true(
        eventually("SELECT count(*) FROM mailer.sent WHERE event_id = $1::uuid", orig_id, "1"));
    /* The original event, its duplicate and the sentinel: two mails, not three. */
    assert_true(
        eventually("SELECT count(*) FROM mailer.sent WHERE recipient = $1", bob.email, "2"));
    json_decref(sentinel);
    json_decref(original);
    free(payload);
}

static void a_verification_produced_before_its_registration_still_ends_successful(void **state)
{
    (void)state;
    user_t ada, ghost;
    register_user(&ada, "ooo", NULL);
    assert_true(
        eventually("SELECT count(*) FROM referral.members WHERE user_id = $1::uuid", ada.id, "1"));
    cm_uuid_v4(ghost.id);
    snprintf(ghost.name, sizeof ghost.name, "ghost_%s", t_unique());
    snprintf(ghost.email, sizeof ghost.email, "%s@example.com", ghost.name);
    snprintf(ghost.code, sizeof ghost.code, "%.8s", ghost.id + 28);
    char at[32];
    cm_format_time(cm_now_us(), at);
    json_t *ver = cm_event_new(CM_EV_USER_VERIFIED, "auth",
                               json_pack("{s:s, s:s}", "user_id", ghost.id, "verified_at", at));
    produce(CM_EV_USER_VERIFIED, ghost.id, ver);
    assert_true(eventually("SELECT count(*) FROM referral.parked_verifications "
                           "WHERE user_id = $1::uuid",
                           ghost.id, "1"));
    json_t *reg = registered_event(&ghost, &ada);
    produce(CM_EV_USER_REGISTERED, ghost.id, reg);
    assert_true(eventually(REFERRAL_STATUS, ghost.id, "successful"));
    assert_true(eventually("SELECT concat_ws(',', total, pending, successful) "
                           "FROM referral.referral_counters WHERE user_id = $1::uuid",
                           ada.id, "1,0,1"));
    json_decref(reg);
    json_decref(ver);
}

typedef struct batch {
    const char *code;
    int first, count;
    user_t *users;
} batch_t;

static void *register_batch(void *arg)
{
    batch_t *b = arg;
    for (int i = b->first; i < b->first + b->count; i++)
        register_user(&b->users[i], "par", b->code);
    return NULL;
}

static void thirty_parallel_referred_registrations_give_thirty_distinct_referrals(void **state)
{
    (void)state;
    enum { N = 30, THREADS = 6 };
    user_t ada, kids[N] = {0};
    register_user(&ada, "par0", NULL);
    pthread_t th[THREADS];
    batch_t b[THREADS];
    for (int t = 0; t < THREADS; t++) {
        b[t] = (batch_t){ada.code, t * (N / THREADS), N / THREADS, kids};
        assert_int_equal(pthread_create(&th[t], NULL, register_batch, &b[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    char *tok = login(&ada);
    json_t *s = stats_when(tok, "total", N);
    assert_int_equal(json_integer_value(json_object_get(s, "total")), N);
    assert_int_equal(json_integer_value(json_object_get(s, "pending")), N);
    json_decref(s);
    /* Page through with limit 7: every referred user exactly once. */
    char seen[N][37];
    int n = 0, pages = 0;
    char *cursor = NULL;
    do {
        char *path = cursor ? cm_xasprintf("/api/referrals/?limit=7&cursor=%s", cursor)
                            : cm_xstrdup("/api/referrals/?limit=7");
        json_t *page = api_get(path, tok);
        json_t *results = json_object_get(page, "results");
        for (size_t i = 0; i < json_array_size(results); i++) {
            json_t *who = json_object_get(json_array_get(results, i), "referred_user");
            assert_true(n < N);
            snprintf(seen[n++], 37, "%s", json_string_value(json_object_get(who, "id")));
        }
        free(cursor);
        const char *next = json_string_value(json_object_get(page, "next"));
        cursor = next ? cm_xstrdup(next) : NULL;
        json_decref(page);
        free(path);
        assert_true(++pages <= 6);
    } while (cursor);
    assert_int_equal(n, N);
    for (int i = 0; i < N; i++) {
        int matches = 0;
        for (int k = 0; k < N; k++)
            matches += strcmp(seen[k], kids[i].id) == 0;
        assert_int_equal(matches, 1);
    }
    free(tok);
}

static void the_referral_api_refuses_missing_tokens_and_bad_cursors(void **state)
{
    (void)state;
    t_resp_t r;
    char *u = t_url("GATEWAY_URL", "/api/referral-stats/");
    assert_int_equal(t_get(u, NULL, &r), 0);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.content_type, "application/problem+json"));
    t_resp_dispose(&r);
    free(u);
    user_t ada;
    register_user(&ada, "cur", NULL);
    char *tok = login(&ada);
    u = t_url("GATEWAY_URL", "/api/referrals/?cursor=bm90LWEtY3Vyc29y");
    assert_int_equal(t_get(u, tok, &r), 0);
    assert_int_equal(r.status, 400);
    assert_non_null(json_object_get(json_object_get(r.json, "errors"), "cursor"));
    t_resp_dispose(&r);
    free(u);
    free(tok);
}

/* The mails in MAIL_DIR/new that contain both needles. */
static int mails_with(const char *a, const char *b)
{
    char *dir = t_env(ENV, "MAIL_DIR");
    char *newdir = cm_xasprintf("%s/new", dir);
    int n = 0;
    DIR *d = opendir(newdir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char *path = cm_xasprintf("%s/%s", newdir, e->d_name);
        char *text = NULL;
        size_t len = 0;
        if (cm_read_file(path, 1 << 20, &text, &len) == 0 && strstr(text, a) && strstr(text, b))
            n++;
        free(text);
        free(path);
    }
    if (d)
        closedir(d);
    free(newdir);
    free(dir);
    return n;
}

static bool eventually_mails(const char *a, const char *b, int want)
{
    int64_t deadline = cm_now_mono_ms() + DEADLINE_MS;
    while (mails_with(a, b) != want) {
        if (cm_now_mono_ms() > deadline)
            return false;
        t_sleep_ms(100);
    }
    return true;
}

static void verification_pays_both_users_and_the_fifth_success_a_milestone(void **state)
{
    (void)state;
    enum { N = 5 };
    user_t ada, kids[N] = {0};
    register_user(&ada, "rew", NULL);
    for (int i = 0; i < N; i++)
        register_user(&kids[i], "rewk", ada.code);
    char *tok = login(&ada);
    json_t *s = stats_when(tok, "pending", N);
    json_decref(s);
    for (int i = 0; i < N - 1; i++)
        verify(kids[i].email);
    s = stats_when(tok, "credits", 10 * (N - 1));
    assert_int_equal(json_integer_value(json_object_get(s, "credits")), 10 * (N - 1));
    assert_int_equal(json_integer_value(json_object_get(s, "rewards_count")), N - 1);
    json_decref(s);
    verify(kids[N - 1].email);
    /* The fifth success: its credit plus the milestone (default rules: 25). */
    s = stats_when(tok, "credits", 10 * N + 25);
    assert_int_equal(json_integer_value(json_object_get(s, "credits")), 10 * N + 25);
    assert_int_equal(json_integer_value(json_object_get(s, "rewards_count")), N + 1);
    assert_int_equal(json_integer_value(json_object_get(s, "successful")), N);
    json_decref(s);
    json_t *page = api_get("/api/rewards/?limit=2", tok);
    json_t *results = json_object_get(page, "results");
    assert_int_equal(json_array_size(results), 2);
    bool milestone = false;
    for (size_t i = 0; i < 2; i++) {
        json_t *r = json_array_get(results, i);
        if (strcmp(json_string_value(json_object_get(r, "kind")), "milestone") == 0)
            milestone = json_integer_value(json_object_get(r, "amount")) == 25;
    }
    assert_true(milestone);
    assert_non_null(json_string_value(json_object_get(page, "next")));
    json_decref(page);
    /* The referred user got the welcome credit; the mailer told both. */
    char *kt = login(&kids[0]);
    page = api_get("/api/rewards/", kt);
    json_t *welcome = json_array_get(json_object_get(page, "results"), 0);
    assert_int_equal(json_integer_value(json_object_get(welcome, "amount")), 5);
    json_decref(page);
    assert_true(eventually_mails(kids[0].email, "You earned a linktr reward: 5 credits", 1));
    assert_true(eventually_mails(ada.email, "You earned a linktr reward: 10 credits", N));
    assert_true(eventually_mails(ada.email, "You earned a linktr reward: 25 credits", 1));
    free(kt);
    free(tok);
}

static void a_referral_from_a_disposable_address_is_rejected_and_pays_nothing(void **state)
{
    (void)state;
    user_t ada;
    register_user(&ada, "dis", NULL);
    user_t bad;
    snprintf(bad.name, sizeof bad.name, "rdis_%s", t_unique());
    snprintf(bad.email, sizeof bad.email, "%s@mailinator.com", bad.name);
    json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "username", bad.name, "email", bad.email,
                             "password", PASSWORD, "referral_code", ada.code);
    char *reg = t_url("GATEWAY_URL", "/api/register/");
    t_resp_t r;
    assert_int_equal(t_post_json(reg, body, NULL, &r), 0);
    assert_int_equal(r.status, 201);
    snprintf(bad.id, sizeof bad.id, "%s", json_string_value(json_object_get(r.json, "id")));
    t_resp_dispose(&r);
    free(reg);
    json_decref(body);
    assert_true(eventually(REFERRAL_STATUS, bad.id, "rejected"));
    char *tok = login(&ada);
    json_t *s = stats_when(tok, "rejected", 1);
    assert_int_equal(json_integer_value(json_object_get(s, "rejected")), 1);
    assert_int_equal(json_integer_value(json_object_get(s, "pending")), 0);
    json_decref(s);
    verify(bad.email);
    json_t *page = api_get("/api/referrals/?status=rejected", tok);
    json_t *row = json_array_get(json_object_get(page, "results"), 0);
    assert_string_equal(json_string_value(json_object_get(row, "reason")), "disposable_email");
    json_decref(page);
    s = api_get("/api/referral-stats/", tok);
    assert_int_equal(json_integer_value(json_object_get(s, "credits")), 0);
    assert_int_equal(json_integer_value(json_object_get(s, "successful")), 0);
    json_decref(s);
    free(tok);
}

/*
 * A pending referral older than REFERRAL_TTL_DAYS is expired by the sweep
 * (the fixture runs it every second); a late verification does not revive
 * it. Its age is set back in the database: nobody waits 30 days.
 */
static void a_pending_referral_past_its_ttl_expires_and_stays_expired(void **state)
{
    (void)state;
    user_t ada, bob;
    register_user(&ada, "exp", NULL);
    register_user(&bob, "exp", ada.code);
    assert_true(eventually(REFERRAL_STATUS, bob.id, "pending"));
    char *aged = query1("UPDATE referral.referrals SET created_at = now() - interval '31 days' "
                        "WHERE referred_id = $1::uuid RETURNING status",
                        bob.id);
    assert_string_equal(aged, "pending");
    free(aged);
    assert_true(eventually(REFERRAL_STATUS, bob.id, "expired"));
    assert_true(
        eventually("SELECT count(*) FROM referral.outbox WHERE topic = 'referral.converted' "
                   "AND payload::jsonb #>> '{data,referred_id}' = $1 "
                   "AND payload::jsonb #>> '{data,status}' = 'expired'",
                   bob.id, "1"));
    char *tok = login(&ada);
    json_t *s = stats_when(tok, "expired", 1);
    assert_int_equal(json_integer_value(json_object_get(s, "expired")), 1);
    assert_int_equal(json_integer_value(json_object_get(s, "pending")), 0);
    json_decref(s);
    json_t *page = api_get("/api/referrals/?status=expired", tok);
    json_t *row = json_array_get(json_object_get(page, "results"), 0); /* borrowed */
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(row, "referred_user"), "id")), bob.id);
    json_decref(page);
    verify(bob.email);
    t_sleep_ms(1000);
    assert_true(eventually(REFERRAL_STATUS, bob.id, "expired"));
    s = api_get("/api/referral-stats/", tok);
    assert_int_equal(json_integer_value(json_object_get(s, "successful")), 0);
    assert_int_equal(json_integer_value(json_object_get(s, "credits")), 0);
    json_decref(s);
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_referred_registration_is_pending_then_successful_after_verification),
        cmocka_unit_test(the_same_event_delivered_twice_counts_once_and_mails_once),
        cmocka_unit_test(a_verification_produced_before_its_registration_still_ends_successful),
        cmocka_unit_test(thirty_parallel_referred_registrations_give_thirty_distinct_referrals),
        cmocka_unit_test(the_referral_api_refuses_missing_tokens_and_bad_cursors),
        cmocka_unit_test(verification_pays_both_users_and_the_fifth_success_a_milestone),
        cmocka_unit_test(a_referral_from_a_disposable_address_is_rejected_and_pays_nothing),
        cmocka_unit_test(a_pending_referral_past_its_ttl_expires_and_stays_expired),
    };
    if (cm_crypto_init() != 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
