/*
 * The pure parts of the pages (services/gateway/pages.c): CSRF tokens are
 * bound to their form, the token they spend and a time window; the origin
 * check; HTML escaping; referral codes and cookies; user-agent classes; and
 * the one-segment wildcard route that serves /r/<code>.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pages.h"

static gw_pages_t *pages_for(const char *base, const char *secret)
{
    static gw_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.svc.public_base_url = (char *)(uintptr_t)base;
    cfg.pages_secret = (char *)(uintptr_t)secret;
    cfg.attribution_days = 30;
    return gw_pages_new(&cfg);
}

static void csrf_token_is_bound_to_form_token_and_time(void **state)
{
    (void)state;
    gw_pages_t *p = pages_for("http://127.0.0.1:8000", NULL);
    char tok[GW_CSRF_CHARS];
    gw_csrf_make(p, "verify", "T1", 1000, tok);
    assert_true(gw_csrf_check(p, "verify", "T1", tok, 1000));
    assert_true(gw_csrf_check(p, "verify", "T1", tok, 1000 + GW_CSRF_TTL_S));
    assert_false(gw_csrf_check(p, "verify", "T1", tok, 1001 + GW_CSRF_TTL_S)); /* expired */
    assert_false(gw_csrf_check(p, "reset", "T1", tok, 1000));                  /* other form */
    assert_false(gw_csrf_check(p, "verify", "T2", tok, 1000));                 /* other token */
    assert_false(gw_csrf_check(p, "verify", "T1", NULL, 1000));
    assert_false(gw_csrf_check(p, "verify", "T1", "", 1000));
    assert_false(gw_csrf_check(p, "verify", "T1", "4600.abc", 1000));
    tok[strlen(tok) - 1] ^= 1;
    assert_false(gw_csrf_check(p, "verify", "T1", tok, 1000)); /* tampered */
    /* A later expiry cannot be written in: the MAC covers it, and the bound refuses it. */
    assert_false(gw_csrf_check(p, "verify", "T1", "99999999999.AAAA", 1000));
    gw_pages_t *q = pages_for("http://127.0.0.1:8000", NULL);
    gw_csrf_make(p, "verify", "T1", 1000, tok);
    assert_false(gw_csrf_check(q, "verify", "T1", tok, 1000)); /* another random key */
    gw_pages_free(p);
    gw_pages_free(q);
}

static void replicas_sharing_a_secret_accept_each_others_tokens(void **state)
{
    (void)state;
    const char *secret = "0123456789abcdef0123456789abcdef";
    gw_pages_t *a = pages_for("https://links.example", secret);
    gw_pages_t *b = pages_for("https://links.example", secret);
    char tok[GW_CSRF_CHARS];
    gw_csrf_make(a, "signup", "", 5000, tok);
    assert_true(gw_csrf_check(b, "signup", "", tok, 5000));
    gw_pages_free(a);
    gw_pages_free(b);
}

static void only_the_public_origin_may_post(void **state)
{
    (void)state;
    gw_pages_t *p = pages_for("https://links.example/app", NULL);
    assert_true(gw_pages_origin_ok(p, "https://links.example", NULL));
    assert_false(gw_pages_origin_ok(p, "https://links.example.evil", NULL));
    assert_false(gw_pages_origin_ok(p, "http://links.example", NULL));
    assert_false(gw_pages_origin_ok(p, "null", "https://links.example/x"));
    assert_true(gw_pages_origin_ok(p, NULL, "https://links.example/verify-email?token=x"));
    assert_false(gw_pages_origin_ok(p, NULL, "https://links.example.evil/"));
    assert_false(gw_pages_origin_ok(p, NULL, "https://links.example"));
    assert_false(gw_pages_origin_ok(p, NULL, NULL));
    gw_pages_free(p);
}

static void html_escaping_covers_text_and_attributes(void **state)
{
    (void)state;
    cm_buf_t b;
    cm_buf_init(&b);
    gw_html_escape(&b, "<a href=\"x\" onclick='y'>&amp;</a>");
    assert_string_equal(b.data,
                        "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;");
    cm_buf_dispose(&b);
}

static void referral_codes_and_cookies_are_read_strictly(void **state)
{
    (void)state;
    assert_true(gw_ref_code_valid("7KQ2M9XD"));
    assert_true(gw_ref_code_valid("abc"));
    assert_false(gw_ref_code_valid(""));
    assert_false(gw_ref_code_valid(NULL));
    assert_false(gw_ref_code_valid("AB-CD"));
    assert_false(gw_ref_code_valid("ABCDEFGHJKMNPQRST")); /* 17 */
    cm_arena_t *a = cm_arena_new();
    const char *v = NULL;
    assert_int_equal(gw_cookie_get(a, "x=1; linktr_ref=AB12; y=2", "linktr_ref", &v), 0);
    assert_string_equal(v, "AB12");
    assert_int_equal(gw_cookie_get(a, "xlinktr_ref=AB12", "linktr_ref", &v), CM_ENOTFOUND);
    assert_int_equal(gw_cookie_get(a, NULL, "linktr_ref", &v), CM_ENOTFOUND);
    assert_int_equal(gw_cookie_get(a, "linktr_ref", "linktr_ref", &v), CM_ENOTFOUND);
    cm_arena_free(a);
}

static void user_agents_fall_into_coarse_classes(void **state)
{
    (void)state;
    assert_string_equal(gw_ua_class("Mozilla/5.0 (compatible; Googlebot/2.1)"), "bot");
    assert_string_equal(gw_ua_class("curl/8.0"), "bot");
    assert_string_equal(gw_ua_class("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile"), "mobile");
    assert_string_equal(gw_ua_class("Mozilla/5.0 (X11; Linux x86_64) Chrome/120"), "desktop");
    assert_string_equal(gw_ua_class(NULL), "bot");
    assert_string_equal(gw_ua_class(""), "bot");
    assert_string_equal(gw_ua_class("Lynx"), "other");
}

static void nop(cm_req_t *rq, void *ctx)
{
    (void)rq;
    (void)ctx;
}

static void a_star_route_matches_exactly_one_segment(void **state)
{
    (void)state;
    static const cm_route_t t[] = {{"GET", "/r/*", nop, 0}};
    const cm_route_t *r = NULL;
    assert_int_equal(cm_route_find(t, 1, "GET", "/r/AB12", &r, NULL), 0);
    assert_int_equal(cm_route_find(t, 1, "GET", "/r/AB12/", &r, NULL), 0);
    assert_int_equal(cm_route_find(t, 1, "HEAD", "/r/AB12", &r, NULL), 0);
    assert_int_equal(cm_route_find(t, 1, "GET", "/r/", &r, NULL), CM_ENOTFOUND);
    assert_int_equal(cm_route_find(t, 1, "GET", "/r", &r, NULL), CM_ENOTFOUND);
    assert_int_equal(cm_route_find(t, 1, "GET", "/r/a/b", &r, NULL), CM_ENOTFOUND);
    assert_int_equal(cm_route_find(t, 1, "GET", "/rx/a", &r, NULL), CM_ENOTFOUND);
    assert_int_equal(cm_route_find(t, 1, "POST", "/r/AB12", &r, NULL), CM_ESTATE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(csrf_token_is_bound_to_form_token_and_time),
        cmocka_unit_test(replicas_sharing_a_secret_accept_each_others_tokens),
        cmocka_unit_test(only_the_public_origin_may_post),
        cmocka_unit_test(html_escaping_covers_text_and_attributes),
        cmocka_unit_test(referral_codes_and_cookies_are_read_strictly),
        cmocka_unit_test(user_agents_fall_into_coarse_classes),
        cmocka_unit_test(a_star_route_matches_exactly_one_segment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
