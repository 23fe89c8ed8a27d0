/*
 * The gateway's route table: every public path of API.md reaches the right
 * upstream with the right edge policy, with or without a trailing slash;
 * a wrong method is told apart from an unknown path; the body and query
 * checks accept what API.md allows and nothing else.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "routes.h"

typedef struct expect {
    const char *method;
    const char *path;
    gw_upstream_id_t upstream;
    bool token;
    gw_rate_class_t cls;
} expect_t;

/* Written from API.md, independently of the table in routes.c. */
static const expect_t API[] = {
    {"POST", "/api/register/", GW_UP_AUTH, false, GW_RL_REGISTER},
    {"POST", "/api/login/", GW_UP_AUTH, false, GW_RL_LOGIN},
    {"POST", "/api/token/refresh/", GW_UP_AUTH, false, GW_RL_OTHER},
    {"POST", "/api/logout/", GW_UP_AUTH, false, GW_RL_OTHER},
    {"POST", "/api/forgot-password/", GW_UP_AUTH, false, GW_RL_FORGOT},
    {"POST", "/api/reset-password/", GW_UP_AUTH, false, GW_RL_OTHER},
    {"POST", "/api/verify-email/", GW_UP_AUTH, false, GW_RL_OTHER},
    {"POST", "/api/resend-verification/", GW_UP_AUTH, true, GW_RL_FORGOT},
    {"GET", "/api/me/", GW_UP_AUTH, true, GW_RL_OTHER},
    {"GET", "/.well-known/jwks.json", GW_UP_AUTH, false, GW_RL_OTHER},
    {"GET", "/api/referrals/", GW_UP_REFERRAL, true, GW_RL_OTHER},
    {"GET", "/api/referral-stats/", GW_UP_REFERRAL, true, GW_RL_OTHER},
    {"GET", "/api/referral-stats/daily/", GW_UP_REFERRAL, true, GW_RL_OTHER},
    {"GET", "/api/rewards/", GW_UP_REFERRAL, true, GW_RL_OTHER},
    {"GET", "/api/leaderboard/", GW_UP_REFERRAL, true, GW_RL_OTHER},
    {"PATCH", "/api/me/", GW_UP_REFERRAL, true, GW_RL_OTHER}, /* GET /api/me/ stays auth's */
    {"DELETE", "/api/me/", GW_UP_AUTH, true, GW_RL_LOGIN},
    {"GET", "/api/me/export/", GW_UP_AUTH, true, GW_RL_OTHER},
    {"POST", "/api/email/", GW_UP_AUTH, true, GW_RL_FORGOT},
    {"POST", "/api/email/confirm/", GW_UP_AUTH, false, GW_RL_OTHER},
    {"POST", "/api/email/cancel/", GW_UP_AUTH, false, GW_RL_OTHER},
    {"GET", "/api/sessions/", GW_UP_AUTH, true, GW_RL_OTHER},
    {"POST", "/api/sessions/revoke-others/", GW_UP_AUTH, true, GW_RL_OTHER},
    {"DELETE", "/api/sessions/0b6d0c39-5b7e-4c1e-9a51-2f5d3c7e8a10/", GW_UP_AUTH, true,
     GW_RL_OTHER},
    {"POST", "/api/password/", GW_UP_AUTH, true, GW_RL_LOGIN},
};
#define NAPI (sizeof API / sizeof API[0])

static void check_one(const expect_t *e, const char *path)
{
    const gw_route_t *r = NULL;
    assert_int_equal(gw_route_find(e->method, path, &r, NULL), 0);
    assert_non_null(r);
    assert_string_equal(r->method, e->method);
    assert_int_equal(r->upstream, e->upstream);
    assert_int_equal(r->needs_token, e->token);
    assert_int_equal(r->rate_class, e->cls);
}

static void every_api_path_routes_with_and_without_trailing_slash(void **state)
{
    (void)state;
    for (size_t i = 0; i < NAPI; i++) {
        check_one(&API[i], API[i].path);
        size_t len = strlen(API[i].path);
        char *other = API[i].path[len - 1] == '/' ? cm_xstrndup(API[i].path, len - 1)
                                                  : cm_xasprintf("%s/", API[i].path);
        check_one(&API[i], other);
        free(other);
    }
}

static void the_table_has_exactly_the_public_api(void **state)
{
    (void)state;
    size_t n = 0;
    const gw_route_t *t = gw_routes(&n);
    assert_int_equal(n, NAPI);
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t j = 0; j < NAPI; j++) {
            size_t len = strlen(t[i].path);
            /* A route ending in a star: the expected path holds one id in its place. */
            bool star = len > 1 && t[i].path[len - 1] == '*';
            found = found ||
                    (strncmp(API[j].path, t[i].path, len - star) == 0 &&
                     (star || API[j].path[len] == '\0' || strcmp(API[j].path + len, "/") == 0));
        }
        assert_true(found);
    }
}

static void wrong_method_is_told_apart_and_lists_allowed_methods(void **state)
{
    (void)state;
    const gw_route_t *r = NULL;
    cm_buf_t allow;
    cm_buf_init(&allow);
    assert_int_equal(gw_route_find("GET", "/api/login/", &r, &allow), CM_ESTATE);
    assert_string_equal(allow.data, "POST");
    allow.len = 0;
    assert_int_equal(gw_route_find("PUT", "/api/me", &r, &allow), CM_ESTATE);
    assert_string_equal(allow.data, "GET, HEAD, DELETE, PATCH");
    allow.len = 0;
    assert_int_equal(gw_route_find("TRACE", "/api/referrals/", &r, &allow), CM_ESTATE);
    assert_string_equal(allow.data, "GET, HEAD");
    assert_int_equal(gw_route_find("HEAD", "/api/login", &r, NULL), CM_ESTATE);
    assert_int_equal(gw_route_find("POST", "/api/referrals", &r, NULL), CM_ESTATE);
    cm_buf_dispose(&allow);
}

static void head_takes_the_get_route_with_its_policy(void **state)
{
    (void)state;
    for (size_t i = 0; i < NAPI; i++) {
        if (strcmp(API[i].method, "GET") != 0)
            continue;
        const gw_route_t *r = NULL;
        assert_int_equal(gw_route_find("HEAD", API[i].path, &r, NULL), 0);
        assert_string_equal(r->method, "GET"); /* forwarded upstream as GET */
        assert_int_equal(r->needs_token, API[i].token);
        assert_int_equal(r->upstream, API[i].upstream);
    }
}

static void account_answers_are_no_store_and_the_jwks_is_public(void **state)
{
    (void)state;
    size_t n = 0;
    const gw_route_t *t = gw_routes(&n);
    for (size_t i = 0; i < n; i++) {
        gw_cache_t want = strcmp(t[i].path, "/.well-known/jwks.json") == 0 ? GW_CACHE_PUBLIC
                          : t[i].upstream == GW_UP_AUTH                    ? GW_CACHE_NO_STORE
                                                                           : GW_CACHE_UPSTREAM;
        if (t[i].cache != want)
            fail_msg("%s %s: cache policy %d, want %d", t[i].method, t[i].path, t[i].cache, want);
    }
    /* A row built without a policy is never stored by a cache. */
    const gw_route_t stranger = {.method = "GET", .path = "/.well-known/jwks.json"};
    assert_int_equal(stranger.cache, GW_CACHE_NO_STORE);
}

static void unknown_paths_are_not_found(void **state)
{
    (void)state;
    const gw_route_t *r = NULL;
    const char *paths[] = {"/",
                           "/api",
                           "/api/",
                           "/api/users/",
                           "/api/login/x",
                           "/api//login",
                           "/API/login/",
                           "/api/login//",
                           "/healthz/x",
                           "/.well-known/",
                           "/api/token/",
                           "/internal/users",
                           "/api/sessions/a/b",
                           "/api/sessions//"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        assert_int_equal(gw_route_find("POST", paths[i], &r, NULL), CM_ENOTFOUND);
}

static void query_strings_with_controls_spaces_or_fragments_are_refused(void **state)
{
    (void)state;
    assert_true(gw_query_valid(NULL));
    assert_true(gw_query_valid(""));
    assert_true(gw_query_valid("limit=20&cursor=abc%20def&status=pending"));
    assert_false(gw_query_valid("a=b c"));
    assert_false(gw_query_valid("a=b\r\nX-User-Id: 1"));
    assert_false(gw_query_valid("a=b#frag"));
    assert_false(gw_query_valid("a=\x7f"));
    assert_false(gw_query_valid("a=\xc3\xa9"));
    char *big = cm_xmalloc(GW_MAX_QUERY + 2);
    memset(big, 'a', GW_MAX_QUERY + 1);
    big[GW_MAX_QUERY + 1] = '\0';
    assert_false(gw_query_valid(big));
    big[GW_MAX_QUERY] = '\0';
    assert_true(gw_query_valid(big));
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_api_path_routes_with_and_without_trailing_slash),
        cmocka_unit_test(the_table_has_exactly_the_public_api),
        cmocka_unit_test(wrong_method_is_told_apart_and_lists_allowed_methods),
        cmocka_unit_test(head_takes_the_get_route_with_its_policy),
        cmocka_unit_test(account_answers_are_no_store_and_the_jwks_is_public),
        cmocka_unit_test(unknown_paths_are_not_found),
        cmocka_unit_test(query_strings_with_controls_spaces_or_fragments_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
