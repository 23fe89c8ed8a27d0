/*
 * What the gateway sends upstream: only allow-listed client headers (no
 * hop-by-hop headers, no client-supplied identity), its own request id,
 * X-Forwarded-For appended and X-Real-IP decided by the gateway, with
 * X-Forwarded-For believed only from a trusted proxy.
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

static void forwarded_for_from_an_untrusted_peer_is_ignored(void **state)
{
    (void)state;
    cm_arena_t *a = cm_arena_new();
    gw_list_t none = {NULL, 0};
    const char *ip = NULL, *xff = NULL;
    gw_client_addr(a, "203.0.113.5", "1.2.3.4", &none, &ip, &xff);
    assert_string_equal(ip, "203.0.113.5");
    assert_string_equal(xff, "203.0.113.5");
    gw_client_addr(a, "203.0.113.5", NULL, &none, &ip, &xff);
    assert_string_equal(ip, "203.0.113.5");
    assert_string_equal(xff, "203.0.113.5");
    cm_arena_free(a);
}

static void forwarded_for_from_a_trusted_proxy_is_appended_and_names_the_client(void **state)
{
    (void)state;
    cm_arena_t *a = cm_arena_new();
    char *items[] = {"10.0.0.2", "10.0.0.3"};
    gw_list_t trusted = {items, 2};
    const char *ip = NULL, *xff = NULL;
    gw_client_addr(a, "10.0.0.2", "198.51.100.7, 10.0.0.3", &trusted, &ip, &xff);
    assert_string_equal(ip, "198.51.100.7");
    assert_string_equal(xff, "198.51.100.7, 10.0.0.3, 10.0.0.2");
    /* A client that prepends a forged address still is the rightmost untrusted entry. */
    gw_client_addr(a, "10.0.0.2", "6.6.6.6, 198.51.100.7", &trusted, &ip, &xff);
    assert_string_equal(ip, "198.51.100.7");
    assert_string_equal(xff, "198.51.100.7, 10.0.0.2");
    /* IPv4-mapped IPv6 peers match their IPv4 entry. */
    gw_client_addr(a, "::ffff:10.0.0.2", "198.51.100.8", &trusted, &ip, &xff);
    assert_string_equal(ip, "198.51.100.8");
    assert_string_equal(xff, "198.51.100.8, 10.0.0.2");
    /* One client is one address, however it is written (one rate-limit bucket). */
    gw_client_addr(a, "10.0.0.2", "2001:0DB8:0000::0001", &trusted, &ip, &xff);
    assert_string_equal(ip, "2001:db8::1");
    assert_string_equal(xff, "2001:db8::1, 10.0.0.2");
    /* X-Forwarded-For names the client as X-Real-IP does, and every hop canonical. */
    gw_client_addr(a, "10.0.0.2", "::ffff:1.2.3.4, ::FFFF:10.0.0.3", &trusted, &ip, &xff);
    assert_string_equal(ip, "1.2.3.4");
    assert_string_equal(xff, "1.2.3.4, 10.0.0.3, 10.0.0.2");
    gw_client_addr(a, "::ffff:203.0.113.9", NULL, &trusted, &ip, &xff);
    assert_string_equal(ip, "203.0.113.9");
    cm_arena_free(a);
}

static void malformed_forwarded_for_falls_back_to_the_peer(void **state)
{
    (void)state;
    cm_arena_t *a = cm_arena_new();
    char *items[] = {"127.0.0.1"};
    gw_list_t trusted = {items, 1};
    const char *bad[] = {"not-an-ip", "1.2.3.4,,5.6.7.8", "", "1.2.3.4; drop table", "1.2.3.4 5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *ip = NULL, *xff = NULL;
        gw_client_addr(a, "127.0.0.1", bad[i], &trusted, &ip, &xff);
        assert_string_equal(ip, "127.0.0.1");
        assert_string_equal(xff, "127.0.0.1");
    }
    char *huge = cm_xmalloc(GW_MAX_XFF + 16);
    memset(huge, '1', GW_MAX_XFF + 15);
    huge[GW_MAX_XFF + 15] = '\0';
    const char *ip = NULL, *xff = NULL;
    gw_client_addr(a, "127.0.0.1", huge, &trusted, &ip, &xff);
    assert_string_equal(ip, "127.0.0.1");
    free(huge);
    cm_arena_free(a);
}

static void ip_addresses_are_compared_as_addresses(void **state)
{
    (void)state;
    char *items[] = {"2001:db8::1", "192.0.2.1"};
    gw_list_t trusted = {items, 2};
    assert_true(gw_ip_trusted("2001:0db8:0000::0001", &trusted));
    assert_true(gw_ip_trusted("192.0.2.1", &trusted));
    assert_false(gw_ip_trusted("192.0.2.10", &trusted));
    assert_false(gw_ip_trusted("junk", &trusted));
    assert_true(gw_ip_valid("::1"));
    assert_false(gw_ip_valid("256.1.1.1"));
}

static void cidr_ranges_match_up_to_their_boundaries(void **state)
{
    (void)state;
    assert_true(gw_cidr_match("10.0.0.0", "10.0.0.0/8"));
    assert_true(gw_cidr_match("10.255.255.255", "10.0.0.0/8"));
    assert_false(gw_cidr_match("9.255.255.255", "10.0.0.0/8"));
    assert_false(gw_cidr_match("11.0.0.0", "10.0.0.0/8"));
    /* A prefix that is not a multiple of eight splits a byte. */
    assert_true(gw_cidr_match("172.16.0.1", "172.16.0.0/12"));
    assert_true(gw_cidr_match("172.31.255.254", "172.16.0.0/12"));
    assert_false(gw_cidr_match("172.32.0.0", "172.16.0.0/12"));
    assert_false(gw_cidr_match("172.15.255.255", "172.16.0.0/12"));
    assert_true(gw_cidr_match("192.0.2.128", "192.0.2.128/25"));
    assert_false(gw_cidr_match("192.0.2.127", "192.0.2.128/25"));
    /* /32 and a bare address are one address. */
    assert_true(gw_cidr_match("192.0.2.1", "192.0.2.1/32"));
    assert_false(gw_cidr_match("192.0.2.2", "192.0.2.1/32"));
    assert_true(gw_cidr_match("192.0.2.1", "192.0.2.1"));
    /* /0 is every address of its family, and only of its family. */
    assert_true(gw_cidr_match("0.0.0.0", "0.0.0.0/0"));
    assert_true(gw_cidr_match("255.255.255.255", "0.0.0.0/0"));
    assert_false(gw_cidr_match("2001:db8::1", "0.0.0.0/0"));
    assert_true(gw_cidr_match("2001:db8::1", "::/0"));
    assert_false(gw_cidr_match("10.0.0.1", "::/0"));
}

static void ipv6_ranges_and_v4_mapped_addresses_match(void **state)
{
    (void)state;
    assert_true(gw_cidr_match("fd00::1", "fd00::/8"));
    assert_true(gw_cidr_match("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fd00::/8"));
    assert_false(gw_cidr_match("fe00::", "fd00::/8"));
    assert_false(gw_cidr_match("fc00::", "fd00::/8"));
    /* /65: the first bit of the fifth group is the last one of the prefix. */
    assert_true(gw_cidr_match("2001:db8::7fff:ffff:ffff:ffff", "2001:db8::/65"));
    assert_false(gw_cidr_match("2001:db8:0:0:8000::", "2001:db8::/65"));
    assert_true(gw_cidr_match("2001:db8:0:0:8000::", "2001:db8::8000:0:0:0/65"));
    assert_false(gw_cidr_match("2001:db8::7fff:ffff:ffff:ffff", "2001:db8::8000:0:0:0/65"));
    assert_true(gw_cidr_match("2001:DB8::1", "2001:db8::1/128"));
    assert_false(gw_cidr_match("2001:db8::2", "2001:db8::1/128"));
    /* An IPv4-mapped IPv6 peer (a dual-stack socket) is its IPv4 address, both ways. */
    assert_true(gw_cidr_match("::ffff:10.1.2.3", "10.0.0.0/8"));
    assert_false(gw_cidr_match("::ffff:11.1.2.3", "10.0.0.0/8"));
    assert_true(gw_cidr_match("10.1.2.3", "::ffff:10.0.0.0/104"));
    assert_true(gw_cidr_match("::ffff:10.1.2.3", "::ffff:10.0.0.0/104"));
    assert_false(gw_cidr_match("11.1.2.3", "::ffff:10.0.0.0/104"));
    assert_true(gw_cidr_match("203.0.113.9", "::ffff:0:0/96"));
    assert_true(gw_cidr_match("203.0.113.9", "::ffff:203.0.113.9"));
    assert_false(gw_cidr_match("::ffff:10.1.2.3", "fd00::/8"));
    assert_false(gw_cidr_match("junk", "10.0.0.0/8"));
    assert_false(gw_cidr_match("10.0.0.1", "junk/8"));
}

static void cidr_check_refuses_bad_ranges_and_names_stray_host_bits(void **state)
{
    (void)state;
    const char *good[] = {"10.0.0.0/8", "0.0.0.0/0", "192.0.2.1/32",
                          "192.0.2.1",  "fd00::/8",  "::/0",
                          "::1/128",    "::1",       "::ffff:10.0.0.0/104"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (gw_cidr_check(good[i]) != 0)
            fail_msg("%s refused", good[i]);
    const char *bad[] = {"10.0.0.0/33",
                         "fd00::/129",
                         "10.0.0.0/",
                         "/8",
                         "10.0.0.0/8/8",
                         "10.0.0.0/+8",
                         "10.0.0.0/-1",
                         "10.0.0.0/08x",
                         "10.0.0/8",
                         "10.0.0.0/0008",
                         "::ffff:10.0.0.0/80",
                         "host.example/8",
                         ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (gw_cidr_check(bad[i]) != CM_EPARSE)
            fail_msg("%s accepted", bad[i]);
    assert_int_equal(gw_cidr_check("10.0.0.1/8"), CM_ERANGE);
    assert_int_equal(gw_cidr_check("fd00::1/8"), CM_ERANGE);
    assert_int_equal(gw_cidr_check("172.16.0.0/11"), CM_ERANGE);
    assert_int_equal(gw_cidr_check(NULL), CM_EPARSE);
}

static void forwarded_for_is_believed_from_a_trusted_range(void **state)
{
    (void)state;
    cm_arena_t *a = cm_arena_new();
    char *items[] = {"10.0.0.0/8", "fd00::/8"};
    gw_list_t trusted = {items, 2};
    const char *ip = NULL, *xff = NULL;
    /* Two proxies inside the ranges; the client is the rightmost address outside them. */
    gw_client_addr(a, "fd00::7", "198.51.100.7, 10.20.30.40", &trusted, &ip, &xff);
    assert_string_equal(ip, "198.51.100.7");
    assert_string_equal(xff, "198.51.100.7, 10.20.30.40, fd00::7");
    gw_client_addr(a, "::ffff:10.9.9.9", "198.51.100.8", &trusted, &ip, &xff);
    assert_string_equal(ip, "198.51.100.8");
    /* A peer just outside the range is not believed. */
    gw_client_addr(a, "11.0.0.1", "198.51.100.9", &trusted, &ip, &xff);
    assert_string_equal(ip, "11.0.0.1");
    assert_string_equal(xff, "11.0.0.1");
    cm_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(allow_listed_headers_pass_and_the_rest_are_dropped),
        cmocka_unit_test(gateway_sets_request_id_forwarded_for_and_real_ip_itself),
        cmocka_unit_test(absent_content_type_and_accept_are_not_filled_in_by_curl),
        cmocka_unit_test(header_values_with_line_breaks_are_not_forwarded),
        cmocka_unit_test(forwarded_for_from_an_untrusted_peer_is_ignored),
        cmocka_unit_test(forwarded_for_from_a_trusted_proxy_is_appended_and_names_the_client),
        cmocka_unit_test(malformed_forwarded_for_falls_back_to_the_peer),
        cmocka_unit_test(ip_addresses_are_compared_as_addresses),
        cmocka_unit_test(cidr_ranges_match_up_to_their_boundaries),
        cmocka_unit_test(ipv6_ranges_and_v4_mapped_addresses_match),
        cmocka_unit_test(cidr_check_refuses_bad_ranges_and_names_stray_host_bits),
        cmocka_unit_test(forwarded_for_is_believed_from_a_trusted_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
