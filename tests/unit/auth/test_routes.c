/* Tests for the pure helpers of services/auth/routes.c: the client address. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cm/crypto.h"
#include "routes.h"

static auth_config_t gateways(const char *list)
{
    auth_config_t cfg = {0};
    assert_int_equal(
        auth_nets_parse(list, cfg.gateway_nets, AUTH_GATEWAY_NETS_MAX, &cfg.gateway_nets_count), 0);
    return cfg;
}

static void real_ip_is_believed_only_from_a_gateway_address(void **state)
{
    (void)state;
    auth_config_t cfg = gateways("127.0.0.1/32,::1/128");
    char ip[46];
    auth_client_ip(&cfg, "127.0.0.1", "203.0.113.7", ip);
    assert_string_equal(ip, "203.0.113.7");
    auth_client_ip(&cfg, "::1", "2001:db8::1", ip);
    assert_string_equal(ip, "2001:db8::1");
    auth_client_ip(&cfg, "::ffff:127.0.0.1", "203.0.113.8", ip); /* mapped loopback */
    assert_string_equal(ip, "203.0.113.8");
    auth_client_ip(&cfg, "198.51.100.2", "203.0.113.7", ip); /* anyone else: the peer */
    assert_string_equal(ip, "198.51.100.2");
    auth_client_ip(&cfg, "127.0.0.1", NULL, ip);
    assert_string_equal(ip, "127.0.0.1");
}

static void gateway_blocks_are_configurable_cidrs(void **state)
{
    (void)state;
    auth_config_t cfg = gateways(" 10.1.0.0/16 , fd00:1::/64");
    char ip[46];
    auth_client_ip(&cfg, "10.1.200.3", "203.0.113.9", ip);
    assert_string_equal(ip, "203.0.113.9");
    auth_client_ip(&cfg, "10.2.0.1", "203.0.113.9", ip);
    assert_string_equal(ip, "10.2.0.1");
    auth_client_ip(&cfg, "fd00:1::abcd", "2001:db8::9", ip);
    assert_string_equal(ip, "2001:db8::9");
    auth_client_ip(&cfg, "fd00:2::1", "2001:db8::9", ip);
    assert_string_equal(ip, "fd00:2::1");
    auth_client_ip(&cfg, "127.0.0.1", "203.0.113.9", ip); /* loopback is no longer listed */
    assert_string_equal(ip, "127.0.0.1");
    auth_config_t odd = gateways("10.0.0.0/7");
    assert_true(auth_nets_contain(odd.gateway_nets, odd.gateway_nets_count, "11.255.0.1"));
    assert_false(auth_nets_contain(odd.gateway_nets, odd.gateway_nets_count, "12.0.0.1"));
    auth_config_t all = gateways("0.0.0.0/0");
    assert_true(auth_nets_contain(all.gateway_nets, all.gateway_nets_count, "8.8.8.8"));
    assert_false(auth_nets_contain(all.gateway_nets, all.gateway_nets_count, "::1"));
}

static void malformed_gateway_lists_are_refused(void **state)
{
    (void)state;
    auth_net_t nets[2];
    int n = 0;
    const char *bad[] = {"",
                         ",",
                         "10.0.0.0/33",
                         "::1/129",
                         "10.0.0.1/-1",
                         "10.0.0.1/",
                         "example.com",
                         "10.0.0.1,,10.0.0.2",
                         "1.2.3.4,5.6.7.8,9.9.9.9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(auth_nets_parse(bad[i], nets, 2, &n), CM_EINVAL);
}

static void forwarded_for_is_never_read_and_a_forged_real_ip_falls_back_to_the_peer(void **state)
{
    (void)state;
    auth_config_t cfg = gateways("127.0.0.1");
    char ip[46];
    auth_client_ip(&cfg, "127.0.0.1", "'; DROP TABLE users; --", ip);
    assert_string_equal(ip, "127.0.0.1");
    auth_client_ip(&cfg, "127.0.0.1", "999.1.1.1", ip);
    assert_string_equal(ip, "127.0.0.1");
    auth_client_ip(&cfg, "127.0.0.1", "203.0.113.7, 10.0.0.1", ip); /* a list is not an address */
    assert_string_equal(ip, "127.0.0.1");
    auth_client_ip(&cfg, "not-an-ip", NULL, ip);
    assert_string_equal(ip, "");
}

int main(void)
{
    if (cm_crypto_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(real_ip_is_believed_only_from_a_gateway_address),
        cmocka_unit_test(gateway_blocks_are_configurable_cidrs),
        cmocka_unit_test(malformed_gateway_lists_are_refused),
        cmocka_unit_test(forwarded_for_is_never_read_and_a_forged_real_ip_falls_back_to_the_peer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
