/*
 * Token buckets: a burst goes through, the next request waits for a refill
 * and is told how long, tokens come back at the configured rate and never
 * beyond the burst; clients and classes do not share buckets; the table
 * stays bounded; IPv6 clients are keyed by their prefix, IPv4 (mapped or
 * not) by address.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "ratelimit.h"

static void a_full_bucket_allows_the_burst_then_refuses_with_retry_after(void **state)
{
    (void)state;
    gw_rate_t r = {3, 60}; /* 3 per minute: one token every 20 s */
    gw_bucket_t b = {3.0, 1000};
    int64_t retry = 0;
    for (int i = 0; i < 3; i++)
        assert_true(gw_bucket_take(&b, &r, 1000, &retry));
    assert_false(gw_bucket_take(&b, &r, 1000, &retry));
    assert_int_equal(retry, 20);
    assert_false(gw_bucket_take(&b, &r, 1000 + 15000, &retry));
    assert_int_equal(retry, 5);
}

static void tokens_refill_at_the_configured_rate(void **state)
{
    (void)state;
    gw_rate_t r = {2, 10}; /* one token every 5 s */
    gw_bucket_t b = {0.0, 0};
    int64_t retry = 0;
    assert_false(gw_bucket_take(&b, &r, 4999, &retry));
    assert_int_equal(retry, 1);
    assert_true(gw_bucket_take(&b, &r, 5000, &retry));
    assert_false(gw_bucket_take(&b, &r, 5000, &retry));
    assert_true(gw_bucket_take(&b, &r, 10000, &retry));
}

static void a_long_pause_refills_only_up_to_the_burst(void **state)
{
    (void)state;
    gw_rate_t r = {2, 1};
    gw_bucket_t b = {0.0, 0};
    int64_t retry = 0;
    int allowed = 0;
    for (int i = 0; i < 10; i++)
        allowed += gw_bucket_take(&b, &r, 3600 * 1000, &retry);
    assert_int_equal(allowed, 2);
}

static void a_clock_going_backwards_adds_no_tokens(void **state)
{
    (void)state;
    gw_rate_t r = {1, 60};
    gw_bucket_t b = {0.0, 100000};
    int64_t retry = 0;
    assert_false(gw_bucket_take(&b, &r, 0, &retry));
    assert_true(retry >= 1);
}

static void clients_and_classes_have_separate_buckets(void **state)
{
    (void)state;
    gw_rate_t rates[GW_RL_COUNT] = {{1, 60}, {1, 60}, {1, 60}, {1, 60}};
    gw_limiter_t *l = gw_limiter_new(rates, 1024, 64);
    int64_t retry = 0;
    assert_true(gw_limiter_take(l, GW_RL_LOGIN, "10.0.0.1", 0, &retry));
    assert_false(gw_limiter_take(l, GW_RL_LOGIN, "10.0.0.1", 0, &retry));
    assert_int_equal(retry, 60);
    assert_true(gw_limiter_take(l, GW_RL_LOGIN, "10.0.0.2", 0, &retry));
    assert_true(gw_limiter_take(l, GW_RL_REGISTER, "10.0.0.1", 0, &retry));
    assert_true(gw_limiter_take(l, GW_RL_LOGIN, "10.0.0.1", 60000, &retry));
    assert_int_equal(gw_limiter_size(l), 3);
    gw_limiter_free(l);
}

static void the_table_stays_bounded_and_forgets_refilled_clients(void **state)
{
    (void)state;
    gw_rate_t rates[GW_RL_COUNT] = {{5, 1}, {5, 1}, {5, 1}, {5, 1}};
    gw_limiter_t *l = gw_limiter_new(rates, 64, 64);
    int64_t retry = 0;
    char ip[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(ip, sizeof ip, "10.1.%d.%d", i / 256, i % 256);
        assert_true(gw_limiter_take(l, GW_RL_OTHER, ip, 0, &retry));
    }
    assert_true(gw_limiter_size(l) <= 64);
    /* A second later every bucket is full again: new clients take the freed room. */
    for (int i = 0; i < 40; i++) {
        snprintf(ip, sizeof ip, "10.2.0.%d", i);
        assert_true(gw_limiter_take(l, GW_RL_OTHER, ip, 1000, &retry));
    }
    assert_true(gw_limiter_size(l) <= 64);
    gw_limiter_free(l);
}

static void ipv6_addresses_of_one_64_share_a_bucket(void **state)
{
    (void)state;
    gw_rate_t rates[GW_RL_COUNT] = {{3, 60}, {3, 60}, {3, 60}, {3, 60}};
    gw_limiter_t *l = gw_limiter_new(rates, 1024, 64);
    int64_t retry = 0;
    char ip[64];
    /* Three fresh addresses of 2001:db8:1::/64 use up the network's burst... */
    for (int i = 1; i <= 3; i++) {
        snprintf(ip, sizeof ip, "2001:db8:1:0:%x::%x", i * 7, i);
        assert_true(gw_limiter_take(l, GW_RL_LOGIN, ip, 0, &retry));
    }
    /* ...so a fourth, never seen before, is refused. */
    assert_false(gw_limiter_take(l, GW_RL_LOGIN, "2001:db8:1:0:ffff:ffff:ffff:ffff", 0, &retry));
    assert_true(retry >= 1);
    /* The neighbouring /64 is another client. */
    assert_true(gw_limiter_take(l, GW_RL_LOGIN, "2001:db8:1:1::1", 0, &retry));
    assert_int_equal(gw_limiter_size(l), 2);
    gw_limiter_free(l);
}

static void the_ipv6_prefix_is_configurable(void **state)
{
    (void)state;
    gw_rate_t rates[GW_RL_COUNT] = {{1, 60}, {1, 60}, {1, 60}, {1, 60}};
    int64_t retry = 0;
    /* /48: two /64s of one site are one client. */
    gw_limiter_t *l = gw_limiter_new(rates, 1024, 48);
    assert_true(gw_limiter_take(l, GW_RL_LOGIN, "2001:db8:1:1::1", 0, &retry));
    assert_false(gw_limiter_take(l, GW_RL_LOGIN, "2001:db8:1:2::1", 0, &retry));
    assert_true(gw_limiter_take(l, GW_RL_LOGIN, "2001:db8:2::1", 0, &retry));
    gw_limiter_free(l);
    /* /128: every address is its own client. */
    l = gw_limiter_new(rates, 1024, 128);
    assert_true(gw_limiter_take(l, GW_RL_LOGIN, "2001:db8:1:1::1", 0, &retry));
    assert_true(gw_limiter_take(l, GW_RL_LOGIN, "2001:db8:1:1::2", 0, &retry));
    assert_false(gw_limiter_take(l, GW_RL_LOGIN, "2001:db8:1:1::1", 0, &retry));
    gw_limiter_free(l);
}

static void ipv4_mapped_ipv6_counts_as_the_ipv4_address(void **state)
{
    (void)state;
    gw_rate_t rates[GW_RL_COUNT] = {{2, 60}, {2, 60}, {2, 60}, {2, 60}};
    gw_limiter_t *l = gw_limiter_new(rates, 1024, 64);
    int64_t retry = 0;
    assert_true(gw_limiter_take(l, GW_RL_LOGIN, "192.0.2.7", 0, &retry));
    assert_true(gw_limiter_take(l, GW_RL_LOGIN, "::ffff:192.0.2.7", 0, &retry));
    assert_false(gw_limiter_take(l, GW_RL_LOGIN, "::FFFF:c000:207", 0, &retry));
    /* IPv4 is keyed by the whole address: the next one is another client, */
    assert_true(gw_limiter_take(l, GW_RL_LOGIN, "192.0.2.8", 0, &retry));
    /* and so is a mapped address of another IPv4 host, although both share a /64. */
    assert_true(gw_limiter_take(l, GW_RL_LOGIN, "::ffff:192.0.2.9", 0, &retry));
    gw_limiter_free(l);
}

static void client_keys_name_the_network(void **state)
{
    (void)state;
    char key[GW_CLIENT_KEY_MAX];
    assert_int_equal(gw_client_key("2001:db8:1:0:abcd::1", 64, key), 0);
    assert_string_equal(key, "6:2001:db8:1::/64");
    assert_int_equal(gw_client_key("2001:DB8:1:0:ABCD::1", 56, key), 0);
    assert_string_equal(key, "6:2001:db8:1::/56");
    assert_int_equal(gw_client_key("2001:db8:1:ff::1", 60, key), 0);
    assert_string_equal(key, "6:2001:db8:1:f0::/60");
    assert_int_equal(gw_client_key("::1", 128, key), 0);
    assert_string_equal(key, "6:::1/128");
    assert_int_equal(gw_client_key("::ffff:10.0.0.1", 64, key), 0);
    assert_string_equal(key, "4:10.0.0.1");
    assert_int_equal(gw_client_key("10.0.0.1", 64, key), 0);
    assert_string_equal(key, "4:10.0.0.1");
    /* Not addresses, or a prefix out of range. */
    assert_int_equal(gw_client_key("example.com", 64, key), CM_EINVAL);
    assert_int_equal(gw_client_key("2001:db8::1%eth0", 64, key), CM_EINVAL);
    assert_int_equal(gw_client_key("", 64, key), CM_EINVAL);
    assert_int_equal(gw_client_key("2001:db8::1", 31, key), CM_EINVAL);
    assert_int_equal(gw_client_key("2001:db8::1", 129, key), CM_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_full_bucket_allows_the_burst_then_refuses_with_retry_after),
        cmocka_unit_test(tokens_refill_at_the_configured_rate),
        cmocka_unit_test(a_long_pause_refills_only_up_to_the_burst),
        cmocka_unit_test(a_clock_going_backwards_adds_no_tokens),
        cmocka_unit_test(clients_and_classes_have_separate_buckets),
        cmocka_unit_test(the_table_stays_bounded_and_forgets_refilled_clients),
        cmocka_unit_test(ipv6_addresses_of_one_64_share_a_bucket),
        cmocka_unit_test(the_ipv6_prefix_is_configurable),
        cmocka_unit_test(ipv4_mapped_ipv6_counts_as_the_ipv4_address),
        cmocka_unit_test(client_keys_name_the_network),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
