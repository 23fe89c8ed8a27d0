/* Tests for the pure helpers of services/auth/routes.c: tokens and the client address. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cm/crypto.h"
#include "routes.h"

static void tokens_are_43_base64url_characters(void **state)
{
    (void)state;
    char t[CM_TOKEN_CHARS];
    cm_token_new(t);
    assert_true(auth_token_well_formed(t, strlen(t)));
    assert_false(auth_token_well_formed(t, strlen(t) - 1));
    assert_false(auth_token_well_formed("", 0));
    assert_false(auth_token_well_formed(NULL, 43));
    char bad[CM_TOKEN_CHARS];
    memcpy(bad, t, sizeof bad);
    bad[10] = '+';
    assert_false(auth_token_well_formed(bad, strlen(bad)));
    bad[10] = '\0';
    assert_false(auth_token_well_formed(bad, 43));
}

static void forwarded_address_is_believed_only_from_loopback(void **state)
{
    (void)state;
    char ip[46];
    auth_client_ip("127.0.0.1", "203.0.113.7, 10.0.0.1", ip);
    assert_string_equal(ip, "203.0.113.7");
    auth_client_ip("::1", " 2001:db8::1", ip);
    assert_string_equal(ip, "2001:db8::1");
    auth_client_ip("198.51.100.2", "203.0.113.7", ip);
    assert_string_equal(ip, "198.51.100.2");
    auth_client_ip("127.0.0.1", NULL, ip);
    assert_string_equal(ip, "127.0.0.1");
}

static void a_forged_forwarded_value_falls_back_to_the_peer(void **state)
{
    (void)state;
    char ip[46];
    auth_client_ip("127.0.0.1", "'; DROP TABLE users; --", ip);
    assert_string_equal(ip, "127.0.0.1");
    auth_client_ip("127.0.0.1", "999.1.1.1", ip);
    assert_string_equal(ip, "127.0.0.1");
    auth_client_ip("not-an-ip", NULL, ip);
    assert_string_equal(ip, "");
}

int main(void)
{
    if (cm_crypto_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tokens_are_43_base64url_characters),
        cmocka_unit_test(forwarded_address_is_believed_only_from_loopback),
        cmocka_unit_test(a_forged_forwarded_value_falls_back_to_the_peer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
