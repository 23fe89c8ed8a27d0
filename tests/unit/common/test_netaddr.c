/* Tests for common/src/netaddr.c: addresses and CIDR ranges as text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm/netaddr.h"

static void cidr_ranges_match_up_to_their_boundaries(void **state)
{
    (void)state;
    assert_true(cm_cidr_match("10.0.0.0", "10.0.0.0/8"));
    assert_true(cm_cidr_match("10.255.255.255", "10.0.0.0/8"));
    assert_false(cm_cidr_match("9.255.255.255", "10.0.0.0/8"));
    assert_false(cm_cidr_match("11.0.0.0", "10.0.0.0/8"));
    /* A prefix that is not a multiple of eight splits a byte. */
    assert_true(cm_cidr_match("172.16.0.1", "172.16.0.0/12"));
    assert_true(cm_cidr_match("172.31.255.254", "172.16.0.0/12"));
    assert_false(cm_cidr_match("172.32.0.0", "172.16.0.0/12"));
    assert_false(cm_cidr_match("172.15.255.255", "172.16.0.0/12"));
    assert_true(cm_cidr_match("192.0.2.128", "192.0.2.128/25"));
    assert_false(cm_cidr_match("192.0.2.127", "192.0.2.128/25"));
    /* /32 and a bare address are one address. */
    assert_true(cm_cidr_match("192.0.2.1", "192.0.2.1/32"));
    assert_false(cm_cidr_match("192.0.2.2", "192.0.2.1/32"));
    assert_true(cm_cidr_match("192.0.2.1", "192.0.2.1"));
    /* /0 is every address of its family, and only of its family. */
    assert_true(cm_cidr_match("0.0.0.0", "0.0.0.0/0"));
    assert_true(cm_cidr_match("255.255.255.255", "0.0.0.0/0"));
    assert_false(cm_cidr_match("2001:db8::1", "0.0.0.0/0"));
    assert_true(cm_cidr_match("2001:db8::1", "::/0"));
    assert_false(cm_cidr_match("10.0.0.1", "::/0"));
}

static void ipv6_ranges_and_v4_mapped_addresses_match(void **state)
{
    (void)state;
    assert_true(cm_cidr_match("fd00::1", "fd00::/8"));
    assert_true(cm_cidr_match("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fd00::/8"));
    assert_false(cm_cidr_match("fe00::", "fd00::/8"));
    assert_false(cm_cidr_match("fc00::", "fd00::/8"));
    /* /65: the first bit of the fifth group is the last one of the prefix. */
    assert_true(cm_cidr_match("2001:db8::7fff:ffff:ffff:ffff", "2001:db8::/65"));
    assert_false(cm_cidr_match("2001:db8:0:0:8000::", "2001:db8::/65"));
    assert_true(cm_cidr_match("2001:db8:0:0:8000::", "2001:db8::8000:0:0:0/65"));
    assert_false(cm_cidr_match("2001:db8::7fff:ffff:ffff:ffff", "2001:db8::8000:0:0:0/65"));
    assert_true(cm_cidr_match("2001:DB8::1", "2001:db8::1/128"));
    assert_false(cm_cidr_match("2001:db8::2", "2001:db8::1/128"));
    /* An IPv4-mapped IPv6 peer (a dual-stack socket) is its IPv4 address, both ways. */
    assert_true(cm_cidr_match("::ffff:10.1.2.3", "10.0.0.0/8"));
    assert_false(cm_cidr_match("::ffff:11.1.2.3", "10.0.0.0/8"));
    assert_true(cm_cidr_match("10.1.2.3", "::ffff:10.0.0.0/104"));
    assert_true(cm_cidr_match("::ffff:10.1.2.3", "::ffff:10.0.0.0/104"));
    assert_false(cm_cidr_match("11.1.2.3", "::ffff:10.0.0.0/104"));
    assert_true(cm_cidr_match("203.0.113.9", "::ffff:0:0/96"));
    assert_true(cm_cidr_match("203.0.113.9", "::ffff:203.0.113.9"));
    assert_false(cm_cidr_match("::ffff:10.1.2.3", "fd00::/8"));
    assert_false(cm_cidr_match("junk", "10.0.0.0/8"));
    assert_false(cm_cidr_match("10.0.0.1", "junk/8"));
}

static void cidr_check_refuses_bad_ranges_and_names_stray_host_bits(void **state)
{
    (void)state;
    const char *good[] = {"10.0.0.0/8", "0.0.0.0/0", "192.0.2.1/32",
                          "192.0.2.1",  "fd00::/8",  "::/0",
                          "::1/128",    "::1",       "::ffff:10.0.0.0/104"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (cm_cidr_check(good[i]) != 0)
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
        if (cm_cidr_check(bad[i]) != CM_EPARSE)
            fail_msg("%s accepted", bad[i]);
    assert_int_equal(cm_cidr_check("10.0.0.1/8"), CM_ERANGE);
    assert_int_equal(cm_cidr_check("fd00::1/8"), CM_ERANGE);
    assert_int_equal(cm_cidr_check("172.16.0.0/11"), CM_ERANGE);
    assert_int_equal(cm_cidr_check(NULL), CM_EPARSE);
}

static void addresses_parse_and_print_in_canonical_text(void **state)
{
    (void)state;
    cm_ip_t ip;
    char text[CM_IP_TEXT_MAX];
    assert_true(cm_ip_parse("2001:0DB8:0000::0001", &ip));
    assert_int_equal(cm_ip_format(&ip, text, sizeof text), 0);
    assert_string_equal(text, "2001:db8::1");
    /* A dual-stack socket's IPv4-mapped peer is the IPv4 address. */
    assert_true(cm_ip_parse("::ffff:192.0.2.7", &ip));
    assert_int_equal(cm_ip_format(&ip, text, sizeof text), 0);
    assert_string_equal(text, "192.0.2.7");
    assert_int_equal(cm_ip_format(&ip, text, 8), CM_EINVAL);
    assert_true(cm_ip_valid("::1"));
    assert_false(cm_ip_valid("256.1.1.1"));
    assert_false(cm_ip_valid("[::1]"));
    assert_false(cm_ip_valid("fe80::1%eth0"));
    assert_false(cm_ip_valid(NULL));
}

static void an_address_is_in_a_list_of_ranges_or_not(void **state)
{
    (void)state;
    char *ranges[] = {"127.0.0.1", NULL, "fd00::/8", "10.0.0.0/8"};
    assert_true(cm_ip_in_ranges("127.0.0.1", ranges, 4));
    assert_true(cm_ip_in_ranges("fd12::3", ranges, 4));
    assert_true(cm_ip_in_ranges("::ffff:10.1.1.1", ranges, 4));
    assert_false(cm_ip_in_ranges("127.0.0.2", ranges, 4));
    assert_false(cm_ip_in_ranges("junk", ranges, 4));
    assert_false(cm_ip_in_ranges("127.0.0.1", ranges, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cidr_ranges_match_up_to_their_boundaries),
        cmocka_unit_test(ipv6_ranges_and_v4_mapped_addresses_match),
        cmocka_unit_test(cidr_check_refuses_bad_ranges_and_names_stray_host_bits),
        cmocka_unit_test(addresses_parse_and_print_in_canonical_text),
        cmocka_unit_test(an_address_is_in_a_list_of_ranges_or_not),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
