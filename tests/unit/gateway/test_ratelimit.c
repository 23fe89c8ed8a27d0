/*
 * Token buckets: a burst goes through, the next request waits for a refill
 * and is told how long, tokens come back at the configured rate and never
 * beyond the burst; clients and classes do not share buckets; the table
 * stays bounded.
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
    gw_limiter_t *l = gw_limiter_new(rates, 1024);
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
    gw_limiter_t *l = gw_limiter_new(rates, 64);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_full_bucket_allows_the_burst_then_refuses_with_retry_after),
        cmocka_unit_test(tokens_refill_at_the_configured_rate),
        cmocka_unit_test(a_long_pause_refills_only_up_to_the_burst),
        cmocka_unit_test(a_clock_going_backwards_adds_no_tokens),
        cmocka_unit_test(clients_and_classes_have_separate_buckets),
        cmocka_unit_test(the_table_stays_bounded_and_forgets_refilled_clients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
