/*
 * What the gateway sends upstream: only allow-listed client headers (no
 * hop-by-hop headers, no client-supplied identity), its own request id,
 * X-Forwarded-For and X-Real-IP as the gateway decided them (the decision
 * itself: test_clientaddr.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "proxy.h"

/* A fake client request: NULL-terminated name/value pairs. */
static const char *fake_get(const void *src, const char *name)
{
    const char *const *kv = src;
    for (size_t i = 0; kv[i]; i += 2)
        if (strcasecmp(kv[i], name) == 0)
            return kv[i + 1];
    return NULL;
}

/* The value sent for name, or NULL when the list has no such header. */
static const char *sent(const struct curl_slist *l, const char *name)
{
    size_t n = strlen(name);
    for (; l; l = l->next)
        if (strncasecmp(l->data, name, n) == 0 && l->data[n] == ':')
            return l->data[n + 1] == ' ' ? l->data + n + 2 : l->data + n + 1;
    return NULL;
}

static const char *const HOSTILE[] = {
    "Content-Type",
    "application/json",
    "Authorization",
    "Bearer abc.def.ghi",
    "Accept",
    "application/json",
    "User-Agent",
    "tests/1.0",
    "Connection",
    "keep-alive, X-User-Id",
    "Keep-Alive",
    "timeout=5",
    "Transfer-Encoding",
    "chunked",
    "TE",
    "trailers",
    "Upgrade",
    "websocket",
    "Proxy-Authorization",
    "Basic eDp5",
    "Proxy-Connection",
    "keep-alive",
    "Trailer",
    "X-User-Id",
    "Host",
    "evil.example",
    "X-User-Id",
    "00000000-0000-0000-0000-000000000001",
    "X-Forwarded-User",
    "admin",
    "X-Auth-User",
    "admin",
    "X-Real-IP",
    "6.6.6.6",
    "X-Forwarded-Host",
    "evil.example",
    "X-Request-Id",
    "client-chosen",
    "Cookie",
    "session=1",
    NULL,
};

static void allow_listed_headers_pass_and_the_rest_are_dropped(void **state)
{
    (void)state;
    struct curl_slist *l = gw_upstream_headers(fake_get, HOSTILE, "rid-1", "10.0.0.9", "10.0.0.9");
    assert_string_equal(sent(l, "Content-Type"), "application/json");
    assert_string_equal(sent(l, "Authorization"), "Bearer abc.def.ghi");
    assert_string_equal(sent(l, "Accept"), "application/json");
    assert_string_equal(sent(l, "User-Agent"), "tests/1.0");
    const char *dropped[] = {
        "Connection",          "Keep-Alive",       "Transfer-Encoding", "TE",    "Upgrade",
        "Proxy-Authorization", "Proxy-Connection", "Trailer",           "Host",  "X-User-Id",
        "X-Forwarded-User",    "X-Auth-User",      "X-Forwarded-Host",  "Cookie"};
    for (size_t i = 0; i < sizeof dropped / sizeof dropped[0]; i++) {
        assert_null(sent(l, dropped[i]));
        assert_false(gw_header_forwardable(dropped[i]));
    }
    curl_slist_free_all(l);
}

static void gateway_sets_request_id_forwarded_for_and_real_ip_itself(void **state)
{
    (void)state;
    struct curl_slist *l =
        gw_upstream_headers(fake_get, HOSTILE, "rid-7", "1.2.3.4, 10.0.0.2", "1.2.3.4");
    assert_string_equal(sent(l, "X-Request-Id"), "rid-7");
    assert_string_equal(sent(l, "X-Forwarded-For"), "1.2.3.4, 10.0.0.2");
    assert_string_equal(sent(l, "X-Real-IP"), "1.2.3.4");
    /* An empty Expect stops curl from waiting for 100-continue on larger bodies. */
    assert_string_equal(sent(l, "Expect"), "");
    size_t real_ip = 0;
    for (const struct curl_slist *p = l; p; p = p->next)
        real_ip += strncasecmp(p->data, "X-Real-IP:", 10) == 0;
    assert_int_equal(real_ip, 1);
    curl_slist_free_all(l);
}

static void absent_content_type_and_accept_are_not_filled_in_by_curl(void **state)
{
    (void)state;
    const char *const kv[] = {"User-Agent", "x", NULL};
    struct curl_slist *l = gw_upstream_headers(fake_get, kv, "rid", "1.1.1.1", "1.1.1.1");
    /* "Name:" with no value tells curl to send no such header at all. */
    assert_string_equal(sent(l, "Content-Type"), "");
    assert_string_equal(sent(l, "Accept"), "");
    curl_slist_free_all(l);
}

static void header_values_with_line_breaks_are_not_forwarded(void **state)
{
    (void)state;
    const char *const kv[] = {"Authorization", "Bearer x\r\nX-User-Id: 1", NULL};
    struct curl_slist *l = gw_upstream_headers(fake_get, kv, "rid", "1.1.1.1", "1.1.1.1");
    assert_null(sent(l, "Authorization"));
    for (const struct curl_slist *p = l; p; p = p->next)
        assert_null(strpbrk(p->data, "\r\n"));
    curl_slist_free_all(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(allow_listed_headers_pass_and_the_rest_are_dropped),
        cmocka_unit_test(gateway_sets_request_id_forwarded_for_and_real_ip_itself),
        cmocka_unit_test(absent_content_type_and_accept_are_not_filled_in_by_curl),
        cmocka_unit_test(header_values_with_line_breaks_are_not_forwarded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
