/* Tests for services/auth/signin.c: user agent classes of real browsers and tools, network keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "signin.h"

/* User-Agent strings as the browsers send them (copied from real requests). */
static const struct {
    const char *ua, *want;
} CASES[] = {
    {"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", "Firefox on Linux"},
    {"Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
     "Firefox on Linux"},
    {"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0",
     "Firefox on Windows"},
    {"Mozilla/5.0 (Macintosh; Intel Mac OS X 14.7; rv:132.0) Gecko/20100101 Firefox/132.0",
     "Firefox on macOS"},
    {"Mozilla/5.0 (Android 14; Mobile; rv:132.0) Gecko/132.0 Firefox/132.0", "Firefox on Android"},
    {"Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) FxiOS/132.0 Mobile/15E148 Safari/605.1.15",
     "Firefox on iOS"},
    {"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36",
     "Chrome on Windows"},
    {"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Mobile Safari/537.36",
     "Chrome on Android"},
    {"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
     "Safari/537.36",
     "Chrome on Linux"},
    {"Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36",
     "Chrome on ChromeOS"},
    {"Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
     "Chrome on iOS"},
    {"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
     "Edge on Windows"},
    {"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Mobile Safari/537.36 EdgA/131.0.0.0",
     "Edge on Android"},
    {"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/130.0.0.0 Safari/537.36 OPR/115.0.0.0",
     "Opera on Windows"},
    {"Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
     "Samsung Internet on Android"},
    {"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/18.1 Safari/605.1.15",
     "Safari on macOS"},
    {"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
     "Safari on iOS"},
    {"Mozilla/5.0 (iPad; CPU OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.7 Mobile/15E148 Safari/604.1",
     "Safari on iOS"},
    {"curl/8.5.0", "curl"},
    {"curl/7.88.1", "curl"},
    {"Wget/1.21.4", "Wget"},
    {"python-requests/2.32.3", "Other"},
    {"Go-http-client/1.1", "Other"},
    {"PostmanRuntime/7.42.0", "Other"},
    {"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "Other"},
    {"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
     "+http://www.bing.com/bingbot.htm) Chrome/131.0.0.0 Safari/537.36",
     "Other"},
    {"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "HeadlessChrome/131.0.0.0 Safari/537.36",
     "Other"},
    {"Mozilla/5.0 (Plan 9) Gecko/20100101 Firefox/128.0", "Firefox"},
    {"Mozilla/5.0", "Other"},
    {"curl", "Other"},
    {"", "Other"},
};

static void real_user_agents_fall_into_their_coarse_class(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const char *got = auth_ua_class(CASES[i].ua);
        if (strcmp(got, CASES[i].want) != 0)
            fail_msg("\"%s\": got \"%s\", want \"%s\"", CASES[i].ua, got, CASES[i].want);
        assert_true(strlen(got) < AUTH_UA_CLASS_MAX);
    }
    assert_string_equal(auth_ua_class(NULL), "Other");
}

static void the_class_never_echoes_the_header_and_reads_a_bounded_prefix(void **state)
{
    (void)state;
    /* A browser token past the scanned prefix is not seen; the header never leaks through. */
    char ua[AUTH_UA_SCAN_MAX + 64];
    memset(ua, 'x', sizeof ua - 1);
    ua[sizeof ua - 1] = '\0';
    static const char head[] = "Mozilla/5.0 (X11; Linux x86_64) <script>";
    memcpy(ua, head, sizeof head - 1);
    memcpy(ua + AUTH_UA_SCAN_MAX + 4, "Firefox/1", 9);
    assert_string_equal(auth_ua_class(ua), "Other");
    memcpy(ua + 60, "Firefox/1", 9);
    assert_string_equal(auth_ua_class(ua), "Firefox on Linux");
}

static void network_keys_are_the_ipv4_24_and_the_ipv6_64(void **state)
{
    (void)state;
    static const struct {
        const char *ip, *want;
    } keys[] = {
        {"203.0.113.77", "203.0.113.0/24"},
        {"203.0.113.1", "203.0.113.0/24"},
        {"198.51.100.255", "198.51.100.0/24"},
        {"127.0.0.1", "127.0.0.0/24"},
        {"::ffff:203.0.113.9", "203.0.113.0/24"},
        {"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
        {"2001:DB8:1:2::ffff", "2001:db8:1:2::/64"},
        {"2001:db8::1", "2001:db8::/64"},
        {"::1", "::/64"},
        {"", "unknown"},
        {"not-an-ip", "unknown"},
        {"203.0.113.0/24", "unknown"},
        {"2001:db8::1%eth0", "unknown"},
    };
    char out[AUTH_NET_KEY_MAX];
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        auth_net_key(keys[i].ip, out);
        if (strcmp(out, keys[i].want) != 0)
            fail_msg("\"%s\": got \"%s\", want \"%s\"", keys[i].ip, out, keys[i].want);
    }
    auth_net_key(NULL, out);
    assert_string_equal(out, "unknown");
    /* Two addresses of one /24 (or /64) share a key; neighbours do not. */
    char a[AUTH_NET_KEY_MAX], b[AUTH_NET_KEY_MAX];
    auth_net_key("192.0.2.10", a);
    auth_net_key("192.0.3.10", b);
    assert_string_not_equal(a, b);
    auth_net_key("2001:db8:0:1::1", a);
    auth_net_key("2001:db8:0:2::1", b);
    assert_string_not_equal(a, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(real_user_agents_fall_into_their_coarse_class),
        cmocka_unit_test(the_class_never_echoes_the_header_and_reads_a_bounded_prefix),
        cmocka_unit_test(network_keys_are_the_ipv4_24_and_the_ipv6_64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
