/*
 * The gateway's configuration: defaults for the local stack, comma lists
 * of upstreams, RATE_LIMITS specs, and a clear failure naming each bad
 * variable.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "clientaddr.h"

static const char *const VARS[] = {"PORT",
                                   "BIND_ADDRESS",
                                   "AUTH_URL",
                                   "REFERRAL_URL",
                                   "JWT_PUBLIC_KEYS",
                                   "RATE_LIMITS",
                                   "TRUSTED_PROXIES",
                                   "CORS_ORIGINS",
                                   "LOG_LEVEL",
                                   "UPSTREAM_TIMEOUT_MS",
                                   "UPSTREAM_MAX_CONNECTIONS",
                                   "JWKS_REFRESH",
                                   "HTTP_THREADS",
                                   "REQUEST_TIMEOUT_MS",
                                   "KEEPALIVE_TIMEOUT_MS",
                                   "RATE_LIMIT_IPV6_PREFIX",
                                   "RATE_LIMIT_REPLICAS",
                                   NULL};

static int clear_env(void **state)
{
    (void)state;
    for (int i = 0; VARS[i]; i++)
        unsetenv(VARS[i]);
    return 0;
}

static void defaults_fit_the_local_stack(void **state)
{
    (void)state;
    setenv("JWT_PUBLIC_KEYS", "k1=/tmp/k1.pem", 1);
    gw_config_t c;
    assert_int_equal(gw_config_load(&c), 0);
    assert_int_equal(c.svc.port, 8000);
    assert_string_equal(c.svc.bind, "127.0.0.1");
    assert_int_equal(c.auth_urls.n, 1);
    assert_string_equal(c.auth_urls.items[0], "http://127.0.0.1:8001");
    assert_string_equal(c.referral_urls.items[0], "http://127.0.0.1:8002");
    assert_int_equal(c.connect_timeout_ms, 1000);
    assert_int_equal(c.upstream_timeout_ms, 10000);
    assert_int_equal(c.svc.http_threads, 128);
    assert_int_equal(c.svc.request_timeout_ms, 1000);
    /* Longer than a proxy's usual 60 s upstream idle timeout. */
    assert_int_equal(c.svc.keepalive_timeout_ms, 75000);
    assert_int_equal(c.ipv6_prefix, 64);
    assert_true(c.rate_limits);
    assert_int_equal(c.trusted_proxies.n, 0);
    assert_int_equal(c.cors_origins.n, 0);
    assert_int_equal(c.upstream_max_conns, 8);
    assert_true(c.jwks_refresh);
    assert_int_equal(c.rates[GW_RL_LOGIN].burst, 20);
    assert_int_equal(c.rates[GW_RL_REGISTER].burst, 10);
    assert_int_equal(c.rates[GW_RL_FORGOT].burst, 5);
    assert_int_equal(c.rates[GW_RL_OTHER].burst, 600);
    gw_config_dispose(&c);
}

static void upstream_lists_are_split_trimmed_and_lose_trailing_slashes(void **state)
{
    (void)state;
    setenv("JWT_PUBLIC_KEYS", "k1=/tmp/k1.pem", 1);
    setenv("AUTH_URL", "http://10.0.0.1:8001/ , http://10.0.0.2:8001", 1);
    setenv("TRUSTED_PROXIES", "127.0.0.1, ::1", 1);
    setenv("CORS_ORIGINS", "https://app.example.com", 1);
    setenv("RATE_LIMITS", "off", 1);
    gw_config_t c;
    assert_int_equal(gw_config_load(&c), 0);
    assert_int_equal(c.auth_urls.n, 2);
    assert_string_equal(c.auth_urls.items[0], "http://10.0.0.1:8001");
    assert_string_equal(c.auth_urls.items[1], "http://10.0.0.2:8001");
    assert_int_equal(c.trusted_proxies.n, 2);
    assert_string_equal(c.trusted_proxies.items[1], "::1");
    assert_int_equal(c.cors_origins.n, 1);
    assert_false(c.rate_limits);
    gw_config_dispose(&c);
}

static void bad_variables_fail_the_load(void **state)
{
    (void)state;
    const char *bad[][2] = {
        {"JWT_PUBLIC_KEYS", ""},
        {"PORT", "0"},
        {"AUTH_URL", "ftp://x"},
        {"AUTH_URL", "http://a:1,,http://b:2"},
        {"REFERRAL_URL", "127.0.0.1:8002"},
        {"RATE_LIMITS", "login=abc"},
        {"RATE_LIMITS", "lunch=5/60"},
        {"TRUSTED_PROXIES", "10.0.0.0/33"},
        {"TRUSTED_PROXIES", "10.0.0.1/8"},
        {"TRUSTED_PROXIES", "fd00::/129"},
        {"TRUSTED_PROXIES", "127.0.0.1, proxy.internal"},
        {"CORS_ORIGINS", "app.example.com"},
        {"LOG_LEVEL", "loud"},
        {"UPSTREAM_TIMEOUT_MS", "-5"},
        {"UPSTREAM_MAX_CONNECTIONS", "0"},
        {"JWKS_REFRESH", "sometimes"},
        {"RATE_LIMIT_IPV6_PREFIX", "31"},
        {"RATE_LIMIT_IPV6_PREFIX", "129"},
        {"RATE_LIMIT_IPV6_PREFIX", "/64"},
        {"REQUEST_TIMEOUT_MS", "0"},
        {"KEEPALIVE_TIMEOUT_MS", "0"},
        {"RATE_LIMIT_REPLICAS", "0"},
        {"RATE_LIMIT_REPLICAS", "three"},
        {"RATE_LIMIT_REPLICAS", "1001"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clear_env(NULL);
        setenv("JWT_PUBLIC_KEYS", "k1=/tmp/k1.pem", 1);
        setenv(bad[i][0], bad[i][1], 1);
        gw_config_t c;
        int rc = gw_config_load(&c);
        gw_config_dispose(&c);
        if (rc != CM_EINVAL)
            fail_msg("%s=%s was accepted", bad[i][0], bad[i][1]);
    }
}

static void trusted_proxies_take_addresses_and_cidr_ranges(void **state)
{
    (void)state;
    setenv("JWT_PUBLIC_KEYS", "k1=/tmp/k1.pem", 1);
    setenv("TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7, fd00::/8, ::1/128, 0.0.0.0/0", 1);
    gw_config_t c;
    assert_int_equal(gw_config_load(&c), 0);
    assert_int_equal(c.trusted_proxies.n, 5);
    assert_string_equal(c.trusted_proxies.items[0], "10.0.0.0/8");
    assert_true(gw_ip_trusted("10.200.0.1", &c.trusted_proxies));
    assert_true(gw_ip_trusted("fd12::1", &c.trusted_proxies));
    gw_config_dispose(&c);
}

/* Runs gw_config_load with stderr captured; returns what it printed (a new string). */
static char *load_and_capture(int *rc)
{
    char path[] = "/tmp/gw-config-test.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    gw_config_t c;
    *rc = gw_config_load(&c);
    gw_config_dispose(&c);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char buf[2048];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    unlink(path);
    buf[n > 0 ? n : 0] = '\0';
    return cm_xstrdup(buf);
}

static void a_bad_trusted_proxy_is_named_with_the_variable(void **state)
{
    (void)state;
    setenv("JWT_PUBLIC_KEYS", "k1=/tmp/k1.pem", 1);
    setenv("TRUSTED_PROXIES", "10.0.0.0/8, 10.0.0.0/40", 1);
    int rc = 0;
    char *out = load_and_capture(&rc);
    assert_int_equal(rc, CM_EINVAL);
    if (!strstr(out, "TRUSTED_PROXIES") || !strstr(out, "10.0.0.0/40") || !strstr(out, "CIDR"))
        fail_msg("unclear message: %s", out);
    free(out);
    setenv("TRUSTED_PROXIES", "10.1.2.3/8", 1);
    out = load_and_capture(&rc);
    assert_int_equal(rc, CM_EINVAL);
    if (!strstr(out, "TRUSTED_PROXIES") || !strstr(out, "10.1.2.3/8") || !strstr(out, "prefix"))
        fail_msg("unclear message: %s", out);
    free(out);
}

static void rate_specs_override_only_the_named_classes(void **state)
{
    (void)state;
    gw_rate_t rates[GW_RL_COUNT] = {{20, 60}, {10, 60}, {5, 60}, {600, 60}};
    bool on = false;
    assert_int_equal(gw_rate_spec_parse("login=3/10, forgot-password=1/3600", &on, rates), 0);
    assert_true(on);
    assert_int_equal(rates[GW_RL_LOGIN].burst, 3);
    assert_int_equal(rates[GW_RL_LOGIN].period_s, 10);
    assert_int_equal(rates[GW_RL_FORGOT].period_s, 3600);
    assert_int_equal(rates[GW_RL_REGISTER].burst, 10);
    assert_int_equal(rates[GW_RL_OTHER].burst, 600);
    assert_int_equal(gw_rate_spec_parse("login=0/10", &on, rates), CM_EPARSE);
    assert_int_equal(gw_rate_spec_parse("login=5/", &on, rates), CM_EPARSE);
    assert_int_equal(gw_rate_spec_parse("login=5/10,other", &on, rates), CM_EPARSE);
    assert_int_equal(rates[GW_RL_LOGIN].burst, 3); /* a failed parse changes nothing */
    assert_int_equal(gw_rate_spec_parse("OFF", &on, rates), 0);
    assert_false(on);
}

static void replicas_divide_every_limit_so_the_deployment_keeps_the_configured_rate(void **state)
{
    (void)state;
    gw_rate_t rates[GW_RL_COUNT] = {{20, 60}, {10, 60}, {5, 60}, {600, 60}};
    gw_rate_divide(rates, 1);
    assert_int_equal(rates[GW_RL_LOGIN].burst, 20);
    assert_int_equal(rates[GW_RL_LOGIN].period_s, 60);
    gw_rate_divide(rates, 8);
    /* 20/60 over 8: 2 tokens per 48 s each, 16 per 48 s in all = 20 per 60 s. */
    assert_int_equal(rates[GW_RL_LOGIN].burst, 2);
    assert_int_equal(rates[GW_RL_LOGIN].period_s, 48);
    /* 10/60 over 8: 1 token per 48 s each (10 per 60 s in all). */
    assert_int_equal(rates[GW_RL_REGISTER].burst, 1);
    assert_int_equal(rates[GW_RL_REGISTER].period_s, 48);
    /* 5/60 over 8, fewer tokens than replicas: 1 per 96 s each, 5 per 60 s in all. */
    assert_int_equal(rates[GW_RL_FORGOT].burst, 1);
    assert_int_equal(rates[GW_RL_FORGOT].period_s, 96);
    assert_int_equal(rates[GW_RL_OTHER].burst, 75);
    assert_int_equal(rates[GW_RL_OTHER].period_s, 60);
    /* Rounding never lets the replicas together refill faster than configured. */
    gw_rate_t odd[GW_RL_COUNT] = {{7, 10}, {7, 10}, {7, 10}, {1000000, 86400}};
    gw_rate_divide(odd, 3);
    assert_int_equal(odd[GW_RL_LOGIN].burst, 2);
    assert_int_equal(odd[GW_RL_LOGIN].period_s, 9); /* 6 per 9 s ≤ 7 per 10 s */
    assert_true(odd[GW_RL_OTHER].burst * 3 * 86400 <= 1000000LL * odd[GW_RL_OTHER].period_s);
}

static void rate_limit_replicas_divides_the_loaded_limits(void **state)
{
    (void)state;
    setenv("JWT_PUBLIC_KEYS", "k1=/tmp/k1.pem", 1);
    setenv("RATE_LIMITS", "login=30/60", 1);
    setenv("RATE_LIMIT_REPLICAS", "3", 1);
    gw_config_t c;
    assert_int_equal(gw_config_load(&c), 0);
    assert_int_equal(c.rate_replicas, 3);
    assert_int_equal(c.rates[GW_RL_LOGIN].burst, 10);
    assert_int_equal(c.rates[GW_RL_LOGIN].period_s, 60);
    assert_int_equal(c.rates[GW_RL_REGISTER].burst, 3); /* the default 10/60 */
    assert_int_equal(c.rates[GW_RL_REGISTER].period_s, 54);
    gw_config_dispose(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(defaults_fit_the_local_stack, clear_env),
        cmocka_unit_test(replicas_divide_every_limit_so_the_deployment_keeps_the_configured_rate),
        cmocka_unit_test_setup(rate_limit_replicas_divides_the_loaded_limits, clear_env),
        cmocka_unit_test_setup(upstream_lists_are_split_trimmed_and_lose_trailing_slashes,
                               clear_env),
        cmocka_unit_test_setup(bad_variables_fail_the_load, clear_env),
        cmocka_unit_test_setup(trusted_proxies_take_addresses_and_cidr_ranges, clear_env),
        cmocka_unit_test_setup(a_bad_trusted_proxy_is_named_with_the_variable, clear_env),
        cmocka_unit_test(rate_specs_override_only_the_named_classes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
