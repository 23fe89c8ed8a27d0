/* Tests for services/auth/validate.c: every registration rule accepts and rejects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cm/crypto.h"
#include "validate.h"

static int username(const char *s)
{
    const char *msg = NULL;
    int rc = auth_validate_username(s, strlen(s), &msg);
    if (rc != 0)
        assert_non_null(msg);
    return rc;
}

static int email(const char *s)
{
    const char *msg = NULL;
    int rc = auth_validate_email(s, strlen(s), &msg);
    if (rc != 0)
        assert_non_null(msg);
    return rc;
}

static int password(const char *pw, const char *user, const char *mail, const char **msg)
{
    *msg = NULL;
    int rc = auth_validate_password(pw, strlen(pw), user, mail, msg);
    if (rc != 0)
        assert_non_null(*msg);
    return rc;
}

static void usernames_of_3_to_30_allowed_characters_pass(void **state)
{
    (void)state;
    assert_int_equal(username("ada"), 0);
    assert_int_equal(username("Ada.Lovelace_1815-x"), 0);
    assert_int_equal(username("abcdefghijabcdefghijabcdefghij"), 0); /* 30 */
}

static void usernames_of_2_or_31_characters_are_rejected(void **state)
{
    (void)state;
    assert_int_equal(username("ab"), CM_EINVAL);
    assert_int_equal(username("abcdefghijabcdefghijabcdefghijk"), CM_EINVAL); /* 31 */
    assert_int_equal(username(""), CM_EINVAL);
}

static void usernames_with_other_characters_are_rejected(void **state)
{
    (void)state;
    assert_int_equal(username("ada lovelace"), CM_EINVAL);
    assert_int_equal(username("ada@home"), CM_EINVAL);
    assert_int_equal(username("ad\xc3\xa9le"), CM_EINVAL); /* é */
    const char *msg = NULL;
    assert_int_equal(auth_validate_username("ad\0a", 4, &msg), CM_EINVAL);
}

static void plausible_email_addresses_pass(void **state)
{
    (void)state;
    assert_int_equal(email("ada@example.com"), 0);
    assert_int_equal(email("Ada.Lovelace+tag@mail.example.co.uk"), 0);
    assert_int_equal(email("o'brien@x-y.io"), 0);
}

static void malformed_email_addresses_are_rejected(void **state)
{
    (void)state;
    const char *bad[] = {"",
                         "ada",
                         "ada@",
                         "@example.com",
                         "ada@example",
                         "ada@@example.com",
                         "a da@example.com",
                         ".ada@example.com",
                         "ada.@example.com",
                         "a..da@example.com",
                         "ada@-example.com",
                         "ada@example-.com",
                         "ada@example.c0m",
                         "ada@example..com",
                         "ada@exa_mple.com",
                         "ada@example.c",
                         NULL};
    for (size_t i = 0; bad[i]; i++) {
        if (email(bad[i]) != CM_EINVAL)
            fail_msg("accepted %s", bad[i]);
    }
}

static void email_of_254_characters_passes_and_255_is_rejected(void **state)
{
    (void)state;
    char buf[300];
    /* 64-character local part, then labels of 63 characters: 64 + 1 + 63*3 = 254 */
    memset(buf, 'a', 64);
    buf[64] = '@';
    size_t n = 65;
    for (int l = 0; l < 3; l++) {
        memset(buf + n, 'b', 62);
        n += 62;
        buf[n++] = l < 2 ? '.' : 'c';
    }
    buf[n] = '\0';
    assert_int_equal(strlen(buf), 254);
    buf[n - 1] = 'c';
    assert_int_equal(email(buf), 0);
    buf[n] = 'd';
    buf[n + 1] = '\0';
    assert_int_equal(email(buf), CM_EINVAL);
}

static void passwords_of_8_and_128_characters_pass(void **state)
{
    (void)state;
    const char *msg;
    assert_int_equal(password("xK9#mP2q", "ada", "ada@example.com", &msg), 0);
    char pw[129];
    for (int i = 0; i < 128; i++)
        pw[i] = "qZ7!kR3@wM9#tB5$"[i % 16] + (char)(i / 16 % 2);
    pw[128] = '\0';
    assert_int_equal(password(pw, "ada", "ada@example.com", &msg), 0);
}

static void passwords_of_7_and_129_characters_are_rejected(void **state)
{
    (void)state;
    const char *msg;
    assert_int_equal(password("xK9#mP2", "ada", "ada@example.com", &msg), CM_EINVAL);
    assert_non_null(strstr(msg, "8 to 128"));
    char pw[130];
    for (int i = 0; i < 129; i++)
        pw[i] = "qZ7!kR3@wM9#tB5$"[i % 16];
    pw[129] = '\0';
    assert_int_equal(password(pw, "ada", "ada@example.com", &msg), CM_EINVAL);
    assert_non_null(strstr(msg, "8 to 128"));
}

static void password_length_counts_characters_not_bytes(void **state)
{
    (void)state;
    const char *msg;
    /* Seven two-byte characters are 14 bytes but still too short. */
    assert_int_equal(
        password("\xc3\xa9\xc3\xa0\xc3\xb6\xc3\xbc\xc3\xb1\xc3\xa7\xc3\xb8", NULL, NULL, &msg),
        CM_EINVAL);
    assert_non_null(strstr(msg, "8 to 128"));
}

static void all_digit_passwords_are_rejected(void **state)
{
    (void)state;
    const char *msg;
    assert_int_equal(password("84736291047563", "ada", "ada@example.com", &msg), CM_EINVAL);
    assert_non_null(strstr(msg, "numeric"));
}

static void passwords_similar_to_the_username_or_email_are_rejected(void **state)
{
    (void)state;
    const char *msg;
    assert_int_equal(password("ada_lovelace1", "ada_lovelace", "ada@example.com", &msg), CM_EINVAL);
    assert_non_null(strstr(msg, "similar"));
    assert_int_equal(password("Kw7countess9", "zed", "kw7countess9@example.com", &msg), CM_EINVAL);
    assert_non_null(strstr(msg, "similar"));
    /* The same password is fine for somebody else. */
    assert_int_equal(password("ada_lovelace1", "zed", "zed@example.com", &msg), 0);
}

static void common_passwords_are_rejected(void **state)
{
    (void)state;
    const char *msg;
    const char *common[] = {"password1", "Password123", "qwertyuiop", "letmein!",
                            "iloveyou2", "Passw0rd!",   NULL};
    for (size_t i = 0; common[i]; i++) {
        if (password(common[i], "zed", "zed@example.com", &msg) != CM_EINVAL)
            fail_msg("accepted %s", common[i]);
        assert_non_null(strstr(msg, "common"));
    }
}

static void strong_passwords_pass(void **state)
{
    (void)state;
    const char *msg;
    assert_int_equal(password("correct horse battery staple 42", "ada", "ada@example.com", &msg),
                     0);
    assert_int_equal(password("zebra-quantum-77", "ada", "ada@example.com", &msg), 0);
}

static void passwords_with_nul_bytes_are_rejected(void **state)
{
    (void)state;
    const char *msg = NULL;
    assert_int_equal(auth_validate_password("zebra-qu\0ntum-77", 16, NULL, NULL, &msg), CM_EINVAL);
}

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tokens_are_43_base64url_characters),
        cmocka_unit_test(usernames_of_3_to_30_allowed_characters_pass),
        cmocka_unit_test(usernames_of_2_or_31_characters_are_rejected),
        cmocka_unit_test(usernames_with_other_characters_are_rejected),
        cmocka_unit_test(plausible_email_addresses_pass),
        cmocka_unit_test(malformed_email_addresses_are_rejected),
        cmocka_unit_test(email_of_254_characters_passes_and_255_is_rejected),
        cmocka_unit_test(passwords_of_8_and_128_characters_pass),
        cmocka_unit_test(passwords_of_7_and_129_characters_are_rejected),
        cmocka_unit_test(password_length_counts_characters_not_bytes),
        cmocka_unit_test(all_digit_passwords_are_rejected),
        cmocka_unit_test(passwords_similar_to_the_username_or_email_are_rejected),
        cmocka_unit_test(common_passwords_are_rejected),
        cmocka_unit_test(strong_passwords_pass),
        cmocka_unit_test(passwords_with_nul_bytes_are_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
