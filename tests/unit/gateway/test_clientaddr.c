/*
 * Who the client is (services/gateway/clientaddr.c): X-Forwarded-For is
 * believed only from a trusted proxy, the client is the rightmost hop that
 * is not one, and every address is sent in canonical text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clientaddr.h"
#include "cm/netaddr.h"

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
    assert_true(cm_ip_valid("::1"));
    assert_false(cm_ip_valid("256.1.1.1"));
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
        cmocka_unit_test(forwarded_for_from_an_untrusted_peer_is_ignored),
        cmocka_unit_test(forwarded_for_from_a_trusted_proxy_is_appended_and_names_the_client),
        cmocka_unit_test(malformed_forwarded_for_falls_back_to_the_peer),
        cmocka_unit_test(ip_addresses_are_compared_as_addresses),
        cmocka_unit_test(forwarded_for_is_believed_from_a_trusted_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
