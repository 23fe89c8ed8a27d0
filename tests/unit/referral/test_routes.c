/*
 * Tests for services/referral/routes.c: the real HTTP server with the
 * referral routes, real ES256 tokens and a real PostgreSQL filled through
 * the consumer. Also the cursor encoding.
 * LINKTR_TEST_NEEDS: postgres
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "cm/db.h"
#include "cm/http.h"
#include "cm/jwt.h"
#include "cm/util.h"
#include "config.h"
#include "consumer.h"
#include "http_client.h"
#include "routes.h"
#include "testenv.h"
#include "pg.h"

extern const cm_migration_t referral_migrations[];
extern const size_t referral_migrations_count;

typedef struct fixture {
    ref_config_t cfg;
    cm_db_pool_t *pool;
    cm_jwt_verifier_t *verifier;
    cm_jwt_signer_t *signer;
    cm_jwt_signer_t *stranger; /* a key the service does not know */
    cm_http_t *http;
    ref_ctx_t events;
    ref_api_t api;
    char base[64];
} fixture_t;

/* A fresh P-256 key pair as PEM texts (caller frees both). */
static void new_key(char **priv, char **pub)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    *priv = cm_xstrndup(p, (size_t)n);
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
    n = BIO_get_mem_data(b, &p);
    *pub = cm_xstrndup(p, (size_t)n);
    BIO_free(b);
    EVP_PKEY_free(k);
}

static cm_jwt_signer_t *signer_for(cm_jwt_verifier_t *v, const char *kid)
{
    char *priv = NULL, *pub = NULL;
    new_key(&priv, &pub);
    if (v)
        assert_int_equal(cm_jwt_verifier_add_key(v, kid, pub, strlen(pub)), 0);
    int err = 0;
    cm_jwt_signer_t *s = cm_jwt_signer_new(priv, strlen(priv), kid, "linktr", "linktr", 900, &err);
    assert_non_null(s);
    free(priv);
    free(pub);
    return s;
}

static int setup(void **state)
{
    fixture_t *f = cm_xcalloc(1, sizeof *f);
    f->pool = t_pg_pool("REFERRAL_DATABASE_URL", 4, referral_migrations, referral_migrations_count);
    f->cfg.svc.public_base_url = cm_xstrdup("http://127.0.0.1:8000");
    f->cfg.daily_cap = 50;
    ref_rules_defaults(&f->cfg.rules);
    f->verifier = cm_jwt_verifier_new("linktr", "linktr", 100);
    f->signer = signer_for(f->verifier, "k1");
    f->stranger = signer_for(NULL, "k1");
    f->events = (ref_ctx_t){.cfg = &f->cfg, .pool = f->pool};
    f->api = (ref_api_t){.cfg = &f->cfg, .pool = f->pool, .jwt = f->verifier};
    int port = t_free_port();
    cm_http_config_t hc = {.service = "referral",
                           .bind = "127.0.0.1",
                           .port = port,
                           .threads = 2,
                           .request_timeout_ms = 5000,
                           .routes = ref_routes,
                           .nroutes = ref_routes_count,
                           .ctx = &f->api};
    int err = 0;
    f->http = cm_http_start(&hc, &err);
    assert_non_null(f->http);
    snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d", port);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    cm_http_stop(f->http);
    cm_jwt_signer_free(f->signer);
    cm_jwt_signer_free(f->stranger);
    cm_jwt_verifier_free(f->verifier);
    cm_db_pool_free(f->pool);
    ref_config_dispose(&f->cfg);
    free(f);
    return 0;
}

typedef struct user {
    char id[37];
    char code[9];
    char name[32];
} user_t;

static void new_user(user_t *u)
{
    cm_uuid_v4(u->id);
    snprintf(u->code, sizeof u->code, "%.8s", u->id + 28);
    snprintf(u->name, sizeof u->name, "user_%.8s", u->id);
}

/* Feeds user.registered (and optionally user.verified) through the consumer. */
static void register_user(fixture_t *f, const user_t *u, const user_t *referrer, bool verify)
{
    char ev[37], email[64];
    cm_uuid_v4(ev);
    snprintf(email, sizeof email, "%s@example.com", u->name);
    json_t *by =
        referrer ? json_pack("{s:s, s:s}", "user_id", referrer->id, "referral_code", referrer->code)
                 : json_null();
    json_t *env = json_pack(
        "{s:s, s:s, s:i, s:s, s:s, s:{s:s, s:s, s:s, s:s, s:o, s:s, s:s}}", "id", ev, "type",
        "user.registered", "version", 1, "occurred_at", "2026-11-27T10:00:00Z", "source", "auth",
        "data", "user_id", u->id, "username", u->name, "email", email, "referral_code", u->code,
        "referred_by", by, "ip", "127.0.0.1", "registered_at", "2026-11-27T10:00:00.000Z");
    char *bytes = json_dumps(env, JSON_COMPACT);
    assert_int_equal(ref_handle_event(&f->events, bytes, strlen(bytes)), 0);
    free(bytes);
    json_decref(env);
    if (!verify)
        return;
    cm_uuid_v4(ev);
    env = json_pack("{s:s, s:s, s:i, s:s, s:s, s:{s:s, s:s}}", "id", ev, "type", "user.verified",
                    "version", 1, "occurred_at", "2026-11-27T11:00:00Z", "source", "auth", "data",
                    "user_id", u->id, "verified_at", "2026-11-27T11:00:00Z");
    bytes = json_dumps(env, JSON_COMPACT);
    assert_int_equal(ref_handle_event(&f->events, bytes, strlen(bytes)), 0);
    free(bytes);
    json_decref(env);
}

static char *token_for(cm_jwt_signer_t *s, const user_t *u)
{
    char *tok = NULL;
    assert_int_equal(cm_jwt_sign(s, u->id, u->name, &tok, NULL), 0);
    return tok;
}

static void get(fixture_t *f, const char *path, const char *bearer, t_resp_t *r)
{
    char *url = cm_xasprintf("%s%s", f->base, path);
    assert_int_equal(t_get(url, bearer, r), 0);
    free(url);
}

static void assert_problem(const t_resp_t *r, long status)
{
    assert_int_equal(r->status, status);
    assert_non_null(r->content_type);
    assert_non_null(strstr(r->content_type, "application/problem+json"));
    assert_int_equal(json_integer_value(json_object_get(r->json, "status")), status);
}

static void cursor_round_trips_and_rejects_tampering(void **state)
{
    (void)state;
    ref_cursor_t c = {.created_us = 1795773600123456LL}, back;
    snprintf(c.id, sizeof c.id, "%s", "0b0e6c4e-93a4-4f4b-9a37-2d5f0c3b8a11");
    char text[REF_CURSOR_MAX + 1];
    ref_cursor_encode(&c, text);
    assert_int_equal(ref_cursor_decode(text, &back), 0);
    assert_int_equal(back.created_us, c.created_us);
    assert_string_equal(back.id, c.id);
    const char *bad[] = {"", "!!!!", "bm90LWEtY3Vyc29y" /* "not-a-cursor" */,
                         "MTIzLm5vdC1hLXV1aWQ" /* "123.not-a-uuid" */,
                         "LTEuMGIwZTZjNGUtOTNhNC00ZjRiLTlhMzctMmQ1ZjBjM2I4YTEx" /* "-1.<uuid>" */};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(ref_cursor_decode(bad[i], &back), CM_EPARSE);
}

static void requests_without_a_valid_token_get_401(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u);
    t_resp_t r;
    get(f, "/api/referral-stats/", NULL, &r);
    assert_problem(&r, 401);
    char *www = t_resp_header(&r, "WWW-Authenticate");
    assert_non_null(www);
    free(www);
    t_resp_dispose(&r);
    char *foreign = token_for(f->stranger, &u); /* right kid, wrong key */
    get(f, "/api/referrals/", foreign, &r);
    assert_problem(&r, 401);
    t_resp_dispose(&r);
    get(f, "/api/referrals/", "not.a.token", &r);
    assert_problem(&r, 401);
    t_resp_dispose(&r);
    free(foreign);
}

static void stats_are_the_callers_counters_with_code_link_and_rate(void **state)
{
    fixture_t *f = *state;
    user_t ref, a, b, c;
    new_user(&ref);
    new_user(&a);
    new_user(&b);
    new_user(&c);
    register_user(f, &ref, NULL, false);
    register_user(f, &a, &ref, true);
    register_user(f, &b, &ref, false);
    register_user(f, &c, &ref, false);
    char *tok = token_for(f->signer, &ref);
    t_resp_t r;
    get(f, "/api/referral-stats/", tok, &r);
    assert_int_equal(r.status, 200);
    json_t *j = r.json;
    assert_string_equal(json_string_value(json_object_get(j, "referral_code")), ref.code);
    char link[64];
    snprintf(link, sizeof link, "http://127.0.0.1:8000/r/%s", ref.code);
    assert_string_equal(json_string_value(json_object_get(j, "referral_link")), link);
    assert_int_equal(json_integer_value(json_object_get(j, "total")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "pending")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "successful")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "rejected")), 0);
    assert_true(json_real_value(json_object_get(j, "conversion_rate")) == 1.0);
    /* One success paid the referrer credit (default rules: 10). */
    assert_int_equal(json_integer_value(json_object_get(j, "credits")), 10);
    assert_int_equal(json_integer_value(json_object_get(j, "rewards_count")), 1);
    t_resp_dispose(&r);
    get(f, "/api/rewards/?limit=1", tok, &r);
    assert_int_equal(r.status, 200);
    json_t *reward = json_array_get(json_object_get(r.json, "results"), 0);
    assert_string_equal(json_string_value(json_object_get(reward, "kind")), "credit");
    assert_int_equal(json_integer_value(json_object_get(reward, "amount")), 10);
    assert_true(json_is_null(json_object_get(r.json, "next")));
    t_resp_dispose(&r);
    free(tok);
    /* The referred user referred nobody: zeros, a rate of 0, the welcome credit. */
    tok = token_for(f->signer, &a);
    get(f, "/api/referral-stats", tok, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "total")), 0);
    assert_true(json_real_value(json_object_get(r.json, "conversion_rate")) == 0.0);
    assert_int_equal(json_integer_value(json_object_get(r.json, "credits")), 5);
    t_resp_dispose(&r);
    free(tok);
}

/* Walks every page of path with limit and returns how many results were seen. */
static int walk(fixture_t *f, const char *tok, const char *query, int limit, char ids[][37],
                char who[][37], int max)
{
    char *cursor = NULL;
    int seen = 0, pages = 0;
    do {
        char *path =
            cursor ? cm_xasprintf("/api/referrals/?limit=%d%s&cursor=%s", limit, query, cursor)
                   : cm_xasprintf("/api/referrals/?limit=%d%s", limit, query);
        t_resp_t r;
        get(f, path, tok, &r);
        assert_int_equal(r.status, 200);
        json_t *results = json_object_get(r.json, "results");
        assert_true(json_array_size(results) <= (size_t)limit);
        for (size_t i = 0; i < json_array_size(results) && seen < max; i++) {
            json_t *row = json_array_get(results, i);
            json_t *person = json_object_get(row, "referred_user");
            snprintf(ids[seen], 37, "%s", json_string_value(json_object_get(row, "id")));
            snprintf(who[seen++], 37, "%s", json_string_value(json_object_get(person, "id")));
            assert_non_null(json_string_value(json_object_get(person, "username")));
            assert_non_null(json_string_value(json_object_get(row, "created_at")));
        }
        free(cursor);
        const char *next = json_string_value(json_object_get(r.json, "next"));
        cursor = next ? cm_xstrdup(next) : NULL;
        t_resp_dispose(&r);
        free(path);
        assert_true(++pages < 50);
    } while (cursor);
    return seen;
}

static void the_list_pages_through_every_referral_once_newest_first(void **state)
{
    fixture_t *f = *state;
    user_t ref, kids[7];
    new_user(&ref);
    register_user(f, &ref, NULL, false);
    for (int i = 0; i < 7; i++) {
        new_user(&kids[i]);
        register_user(f, &kids[i], &ref, i < 2);
    }
    char *tok = token_for(f->signer, &ref);
    char ids[16][37], who[16][37];
    assert_int_equal(walk(f, tok, "", 3, ids, who, 16), 7);
    /* Same created_at for all: the id breaks the tie, descending, across pages. */
    for (int i = 0; i + 1 < 7; i++)
        assert_true(strcmp(ids[i], ids[i + 1]) > 0);
    for (int i = 0; i < 7; i++) {
        bool found = false;
        for (int k = 0; k < 7; k++)
            found = found || strcmp(who[k], kids[i].id) == 0;
        assert_true(found);
    }
    assert_int_equal(walk(f, tok, "&status=successful", 1, ids, who, 16), 2);
    assert_int_equal(walk(f, tok, "&status=pending", 100, ids, who, 16), 5);
    free(tok);
}

static void bad_list_parameters_get_400_naming_the_field(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u);
    char *tok = token_for(f->signer, &u);
    const char *cases[][2] = {{"/api/referrals/?limit=0", "limit"},
                              {"/api/referrals/?limit=101", "limit"},
                              {"/api/referrals/?limit=ten", "limit"},
                              {"/api/referrals/?cursor=garbage", "cursor"},
                              {"/api/referrals/?status=won", "status"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        t_resp_t r;
        get(f, cases[i][0], tok, &r);
        assert_problem(&r, 400);
        assert_non_null(json_object_get(json_object_get(r.json, "errors"), cases[i][1]));
        t_resp_dispose(&r);
    }
    free(tok);
}

/* Each read folds the tombstone into its own statement: a deleted account's
 * still-valid token gets 401 everywhere, with or without rows to show. */
static void a_deleted_accounts_token_gets_401_on_every_read_and_the_opt_in(void **state)
{
    fixture_t *f = *state;
    user_t u, friend;
    new_user(&u);
    new_user(&friend);
    register_user(f, &u, NULL, true);
    register_user(f, &friend, &u, false);
    char *tok = token_for(f->signer, &u);
    const char *paths[] = {"/api/referral-stats/", "/api/referrals/",
                           "/api/referrals/?status=pending&limit=1", "/api/rewards/",
                           "/api/referral-stats/daily?days=3"};
    t_resp_t r;
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        get(f, paths[i], tok, &r);
        assert_int_equal(r.status, 200);
        t_resp_dispose(&r);
    }
    cm_db_t *db = NULL;
    bool first = false;
    assert_int_equal(cm_db_acquire(f->pool, &db), 0);
    assert_int_equal(ref_store_forget_member(db, u.id, "2026-11-28T00:00:00Z", &first), 0);
    cm_db_release(db);
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        get(f, paths[i], tok, &r);
        assert_problem(&r, 401);
        t_resp_dispose(&r);
    }
    static const char body[] = "{\"show_on_leaderboard\":true}";
    char *url = cm_xasprintf("%s/api/me", f->base);
    char *auth = cm_xasprintf("Authorization: Bearer %s", tok);
    const char *headers[] = {auth, NULL};
    assert_int_equal(t_http("PATCH", url, "application/json", body, strlen(body), headers, &r), 0);
    free(auth);
    assert_problem(&r, 401);
    t_resp_dispose(&r);
    free(url);
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cursor_round_trips_and_rejects_tampering),
        cmocka_unit_test(requests_without_a_valid_token_get_401),
        cmocka_unit_test(stats_are_the_callers_counters_with_code_link_and_rate),
        cmocka_unit_test(the_list_pages_through_every_referral_once_newest_first),
        cmocka_unit_test(bad_list_parameters_get_400_naming_the_field),
        cmocka_unit_test(a_deleted_accounts_token_gets_401_on_every_read_and_the_opt_in),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
