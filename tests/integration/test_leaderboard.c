/*
 * The monthly leaderboard (GET /api/leaderboard/) and its opt-in (PATCH
 * /api/me/), end to end through the gateway against the running stack.
 *
 * Successful referrals are seeded into the referral schema by the admin
 * role as plain rows of referral.referrals: the rollup triggers of
 * migrations 004/005 count them per day exactly as they count the
 * consumer's conversions, and some are dated last month to prove that only
 * this month ranks. The stack refreshes the leaderboard every second
 * (REFERRAL_LEADERBOARD_REFRESH_S=1 in the test fixture); waits are bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "cm/crypto.h"
#include "cm/util.h"
#include "http_client.h"
#include "stack.h"
#include "testenv.h"

#define PASSWORD "correct horse battery staple 42"
#define WAIT_MS 20000

typedef struct member {
    char id[37];
    char name[40];
    char *access; /* owned */
} member_t;

static bool in_referral(void *arg)
{
    const member_t *m = arg;
    return t_db_count("SELECT 1 FROM referral.members WHERE user_id = $1::uuid", m->id, NULL) == 1;
}

/* Registers a member through the gateway, logs in, and waits until referral knows it. */
static void join(member_t *m, const char *tag)
{
    json_t *body = t_user_body(tag, NULL);
    json_t *user = t_register(body);
    snprintf(m->id, sizeof m->id, "%s", json_string_value(json_object_get(user, "id")));
    snprintf(m->name, sizeof m->name, "%s", json_string_value(json_object_get(user, "username")));
    m->access = t_login_access(m->name, PASSWORD);
    assert_true(t_wait(in_referral, m, WAIT_MS));
    json_decref(user);
    json_decref(body);
}

/*
 * Seeds n successful referrals of referrer m converted `when` ("this" month
 * or "last" month), through the rollup triggers. The triggers name their
 * tables unqualified, so the session runs with the referral schema first,
 * as the service's own role does.
 */
static void seed(const member_t *m, int n, const char *when)
{
    static const char sql[] =
        "WITH at AS (SELECT CASE WHEN $2 = 'last' THEN date_trunc('month', now()) - interval "
        "'1 day' ELSE now() END AS t), ins AS (INSERT INTO referrals "
        "(id, referrer_id, referred_id, status, created_at, converted_at, stripe) "
        "SELECT gen_random_uuid(), $1::uuid, r.id, 'successful', at.t, at.t, "
        "referral_stripe(r.id) FROM at, (SELECT gen_random_uuid() AS id "
        "FROM generate_series(1, $3::int)) r RETURNING 1) SELECT count(*) FROM ins";
    char *dsn = t_stack("ADMIN_DATABASE_URL");
    PGconn *c = PQconnectdb(dsn);
    free(dsn);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, "SET search_path = referral");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    char count[16];
    snprintf(count, sizeof count, "%d", n);
    const char *p[3] = {m->id, when, count};
    r = PQexecParams(c, sql, 3, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("seed: %s", PQresultErrorMessage(r));
    assert_string_equal(PQgetvalue(r, 0, 0), count);
    PQclear(r);
    PQfinish(c);
}

/* GET /api/leaderboard/ through the gateway with tok (NULL: none); the answer. */
static void board_get(const char *tok, t_resp_t *r)
{
    char *u = t_gw("/api/leaderboard/");
    assert_int_equal(t_get(u, tok, r), 0);
    free(u);
}

/* The board (new reference), checked for shape: period, ranks 1..n, non-increasing counts. */
static json_t *board(const char *tok)
{
    t_resp_t r;
    board_get(tok, &r);
    assert_int_equal(r.status, 200);
    json_t *b = json_incref(r.json);
    t_resp_dispose(&r);
    char period[8];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(period, sizeof period, "%Y-%m", &tm);
    assert_string_equal(json_string_value(json_object_get(b, "period")), period);
    json_t *results = json_object_get(b, "results"); /* borrowed */
    assert_true(json_is_array(results));
    assert_true(json_array_size(results) <= 20);
    json_int_t prev = INT64_MAX;
    for (size_t i = 0; i < json_array_size(results); i++) {
        json_t *e = json_array_get(results, i); /* borrowed */
        assert_int_equal(json_integer_value(json_object_get(e, "rank")), (json_int_t)i + 1);
        json_int_t n = json_integer_value(json_object_get(e, "successful"));
        assert_true(n > 0 && n <= prev);
        prev = n;
        json_t *name = json_object_get(e, "username"); /* borrowed */
        assert_true(json_is_null(name) || json_is_string(name));
        assert_int_equal(json_object_size(e), 3);
    }
    return b;
}

/* The rank of the entry showing username name, or 0. */
static int rank_of(json_t *b, const char *name)
{
    json_t *results = json_object_get(b, "results"); /* borrowed */
    for (size_t i = 0; i < json_array_size(results); i++) {
        json_t *e = json_array_get(results, i);
        const char *u = json_string_value(json_object_get(e, "username"));
        if (u && strcmp(u, name) == 0)
            return (int)json_integer_value(json_object_get(e, "rank"));
    }
    return 0;
}

/* The "successful" of the entry at rank (1-based). */
static json_int_t successful_at(json_t *b, int rank)
{
    json_t *e = json_array_get(json_object_get(b, "results"), (size_t)rank - 1); /* borrowed */
    return json_integer_value(json_object_get(e, "successful"));
}

/* Number of entries that show a username. */
static int named(json_t *b)
{
    json_t *results = json_object_get(b, "results"); /* borrowed */
    int n = 0;
    for (size_t i = 0; i < json_array_size(results); i++)
        n += json_is_string(json_object_get(json_array_get(results, i), "username"));
    return n;
}

/* PATCH /api/me/ with a raw body and content type; tok NULL sends no token. */
static void patch_me(const char *tok, const char *ctype, const char *body, t_resp_t *r)
{
    char *u = t_gw("/api/me/");
    char *auth = tok ? cm_xasprintf("Authorization: Bearer %s", tok) : NULL;
    const char *headers[] = {auth, NULL};
    assert_int_equal(t_http("PATCH", u, ctype, body, strlen(body), headers, r), 0);
    free(auth);
    free(u);
}

static void opt(const member_t *m, bool show)
{
    t_resp_t r;
    patch_me(m->access, "application/json",
             show ? "{\"show_on_leaderboard\": true}" : "{\"show_on_leaderboard\": false}", &r);
    assert_int_equal(r.status, 200);
    assert_true(json_is_boolean(json_object_get(r.json, "show_on_leaderboard")));
    assert_int_equal(json_is_true(json_object_get(r.json, "show_on_leaderboard")), show);
    assert_int_equal(json_object_size(r.json), 1);
    t_resp_dispose(&r);
}

typedef struct top_wait {
    const char *tok;
    json_int_t want; /* the count that must lead the board */
} top_wait_t;

static bool leads(void *arg)
{
    top_wait_t *w = arg;
    json_t *b = board(w->tok);
    bool ok = successful_at(b, 1) == w->want;
    json_decref(b);
    return ok;
}

/* Waits until at least two more refreshes happened on the stack's referral (so one started
 * after the caller's change). */
static void two_refreshes(void)
{
    char *admin = t_stack("REFERRAL_ADMIN_URL");
    double start = t_metric_sum(admin, "linktr_referral_leaderboard_refreshes_total");
    int64_t deadline = cm_now_mono_ms() + WAIT_MS;
    while (t_metric_sum(admin, "linktr_referral_leaderboard_refreshes_total") < start + 2 &&
           cm_now_mono_ms() < deadline)
        t_sleep_ms(100);
    assert_true(t_metric_sum(admin, "linktr_referral_leaderboard_refreshes_total") >= start + 2);
    free(admin);
}

static void leave(member_t *m)
{
    free(m->access);
    m->access = NULL;
}

static void ranks_this_months_successes_and_shows_only_opted_in_names(void **state)
{
    (void)state;
    member_t a, b, c, l;
    join(&a, "lba");
    join(&b, "lbb");
    join(&c, "lbc"); /* after b: b wins their tie */
    join(&l, "lbl");
    /* Far above anything the other tests convert, so these four lead the board. */
    seed(&a, 5003, "this");
    seed(&b, 5002, "this");
    seed(&c, 5002, "this");
    seed(&l, 5001, "this");
    seed(&l, 3000, "last"); /* last month's count: would lead if it were counted */
    /* A refresh may have run between two seeds: wait for one that started after all four. */
    two_refreshes();
    top_wait_t w = {.tok = a.access, .want = 5003};
    assert_true(t_wait(leads, &w, WAIT_MS));

    /* Nobody opted in: every place is anonymous, and the counts are this month's only. */
    json_t *bd = board(a.access);
    assert_int_equal(named(bd), 0);
    assert_int_equal(successful_at(bd, 1), 5003);
    assert_int_equal(successful_at(bd, 2), 5002);
    assert_int_equal(successful_at(bd, 3), 5002);
    assert_int_equal(successful_at(bd, 4), 5001);
    json_decref(bd);

    /* Opting in shows the name at once (this process's cache); the others stay anonymous. */
    opt(&a, true);
    bd = board(b.access);
    assert_int_equal(rank_of(bd, a.name), 1);
    assert_int_equal(named(bd), 1);
    json_decref(bd);

    opt(&c, true);
    opt(&b, true);
    opt(&l, true);
    bd = board(l.access);
    assert_int_equal(rank_of(bd, b.name), 2); /* the tie goes to the earlier member */
    assert_int_equal(rank_of(bd, c.name), 3);
    assert_int_equal(rank_of(bd, l.name), 4);
    assert_int_equal(successful_at(bd, 4), 5001);
    assert_int_equal(named(bd), 4);
    json_decref(bd);

    /* Opting out hides the name again, at once and after the next refreshes (stored). */
    opt(&a, false);
    bd = board(a.access);
    assert_int_equal(rank_of(bd, a.name), 0);
    assert_true(json_is_null(
        json_object_get(json_array_get(json_object_get(bd, "results"), 0), "username")));
    json_decref(bd);
    two_refreshes();
    bd = board(a.access);
    assert_int_equal(rank_of(bd, a.name), 0);
    assert_int_equal(rank_of(bd, b.name), 2);
    assert_int_equal(rank_of(bd, c.name), 3);
    assert_int_equal(rank_of(bd, l.name), 4);
    assert_int_equal(named(bd), 3);
    json_decref(bd);
    /* The opt-outs of the other members so a later test starts from anonymity. */
    opt(&b, false);
    opt(&c, false);
    opt(&l, false);
    leave(&a);
    leave(&b);
    leave(&c);
    leave(&l);
}

/* Expects a 400 problem naming field; the member's stored opt-in stays want. */
static void refused(const member_t *m, const char *ctype, const char *body, int status,
                    const char *field, const char *want)
{
    t_resp_t r;
    patch_me(m->access, ctype, body, &r);
    assert_int_equal(r.status, status);
    assert_non_null(r.content_type);
    assert_non_null(strstr(r.content_type, "application/problem+json"));
    if (field)
        assert_true(json_is_array(json_object_get(json_object_get(r.json, "errors"), field)));
    t_resp_dispose(&r);
    char *v = t_db_value("SELECT coalesce((SELECT show::text FROM referral.leaderboard_optin "
                         "WHERE user_id = $1::uuid), 'none')",
                         m->id);
    assert_string_equal(v, want);
    free(v);
}

static void the_opt_in_refuses_bad_bodies_and_missing_tokens_and_changes_nothing(void **state)
{
    (void)state;
    member_t m;
    join(&m, "lbv");
    const char *json = "application/json";
    refused(&m, json, "{}", 400, "show_on_leaderboard", "none");
    opt(&m, true);
    refused(&m, json, "{\"show_on_leaderboard\": false, \"username\": \"x\"}", 400, "username",
            "true");
    refused(&m, json, "{\"show_on_leaderboard\": \"false\"}", 400, "show_on_leaderboard", "true");
    refused(&m, json, "{\"show_on_leaderboard\": 0}", 400, "show_on_leaderboard", "true");
    refused(&m, json, "{\"show_on_leaderboard\": null}", 400, "show_on_leaderboard", "true");
    refused(&m, json, "[false]", 400, NULL, "true");
    refused(&m, json, "{\"show_on_leaderboard\": fals", 400, NULL, "true");
    refused(&m, "text/plain", "{\"show_on_leaderboard\": false}", 415, NULL, "true");

    t_resp_t r;
    patch_me(NULL, json, "{\"show_on_leaderboard\": false}", &r);
    assert_int_equal(r.status, 401);
    t_assert_header(&r, "WWW-Authenticate", "Bearer");
    t_resp_dispose(&r);
    patch_me("not.a.token", json, "{\"show_on_leaderboard\": false}", &r);
    assert_int_equal(r.status, 401);
    t_resp_dispose(&r);
    opt(&m, true); /* still the stored value after all of the above */

    board_get(NULL, &r);
    assert_int_equal(r.status, 401);
    t_resp_dispose(&r);

    /* GET /api/me/ is still auth's: the route table splits /api/me by method. */
    char *u = t_gw("/api/me/");
    assert_int_equal(t_get(u, m.access, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "id")), m.id);
    t_resp_dispose(&r);
    free(u);
    opt(&m, false);
    leave(&m);
}

/*
 * O(1) per request: requests are answered from the cache. Over 200 requests
 * the served counter rises by 200 and the database reads (refreshes) only
 * by the timer's ticks in that time, never per request.
 */
static void requests_are_served_from_the_cache_not_the_database(void **state)
{
    (void)state;
    member_t m;
    join(&m, "lbo");
    char *admin = t_stack("REFERRAL_ADMIN_URL");
    double served0 = t_metric_sum(admin, "linktr_referral_leaderboard_served_total");
    double reads0 = t_metric_sum(admin, "linktr_referral_leaderboard_refreshes_total");
    int64_t t0 = cm_now_mono_ms();
    for (int i = 0; i < 200; i++) {
        t_resp_t r;
        board_get(m.access, &r);
        assert_int_equal(r.status, 200);
        t_resp_dispose(&r);
    }
    int64_t elapsed_ms = cm_now_mono_ms() - t0;
    double served = t_metric_sum(admin, "linktr_referral_leaderboard_served_total") - served0;
    double reads = t_metric_sum(admin, "linktr_referral_leaderboard_refreshes_total") - reads0;
    fprintf(stderr, "200 requests in %lld ms: %.0f served from the cache, %.0f refreshes\n",
            (long long)elapsed_ms, served, reads);
    assert_true(served == 200);
    /* One refresh per second (the fixture's interval), +2 for the edges; never one a request. */
    assert_true(reads <= (double)elapsed_ms / 1000.0 + 2.0);
    assert_true(reads < 200);
    free(admin);
    leave(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ranks_this_months_successes_and_shows_only_opted_in_names),
        cmocka_unit_test(the_opt_in_refuses_bad_bodies_and_missing_tokens_and_changes_nothing),
        cmocka_unit_test(requests_are_served_from_the_cache_not_the_database),
    };
    if (cm_crypto_init() != 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
