/* Tests for services/auth/code.c: referral codes are 8 Crockford base32 characters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "code.h"

static void the_alphabet_is_crockford_base32_without_ambiguous_letters(void **state)
{
    (void)state;
    assert_int_equal(strlen(AUTH_CODE_ALPHABET), 32);
    for (const char *p = "ILOU"; *p; p++)
        assert_null(strchr(AUTH_CODE_ALPHABET, *p));
    for (size_t i = 0; i < 32; i++) /* no repeats */
        assert_ptr_equal(strchr(AUTH_CODE_ALPHABET, AUTH_CODE_ALPHABET[i]), AUTH_CODE_ALPHABET + i);
}

static void new_codes_have_8_alphabet_characters_and_use_all_of_it(void **state)
{
    (void)state;
    int seen[256] = {0};
    char prev[AUTH_CODE_LEN + 1] = "";
    for (int i = 0; i < 2000; i++) {
        char code[AUTH_CODE_LEN + 1];
        auth_code_new(code);
        assert_int_equal(strlen(code), AUTH_CODE_LEN);
        for (size_t k = 0; k < AUTH_CODE_LEN; k++) {
            assert_non_null(strchr(AUTH_CODE_ALPHABET, code[k]));
            seen[(unsigned char)code[k]]++;
        }
        assert_string_not_equal(code, prev);
        memcpy(prev, code, sizeof code);
    }
    for (size_t i = 0; i < 32; i++)
        assert_true(seen[(unsigned char)AUTH_CODE_ALPHABET[i]] > 0);
}

static void normalize_upper_cases_valid_codes(void **state)
{
    (void)state;
    char out[AUTH_CODE_LEN + 1];
    assert_true(auth_code_normalize("7kq2m9xd", 8, out));
    assert_string_equal(out, "7KQ2M9XD");
    assert_true(auth_code_normalize("HX4P0QZR", 8, out));
    assert_string_equal(out, "HX4P0QZR");
}

static void normalize_rejects_wrong_length_and_foreign_characters(void **state)
{
    (void)state;
    char out[AUTH_CODE_LEN + 1];
    assert_false(auth_code_normalize("7KQ2M9X", 7, out));
    assert_string_equal(out, "");
    assert_false(auth_code_normalize("7KQ2M9XDD", 9, out));
    assert_false(auth_code_normalize("7KQ2M9XI", 8, out)); /* I is not Crockford */
    assert_false(auth_code_normalize("7KQ2M9X-", 8, out));
    assert_false(auth_code_normalize("7KQ2\0M9X", 8, out));
    assert_false(auth_code_normalize(NULL, 8, out));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_alphabet_is_crockford_base32_without_ambiguous_letters),
        cmocka_unit_test(new_codes_have_8_alphabet_characters_and_use_all_of_it),
        cmocka_unit_test(normalize_upper_cases_valid_codes),
        cmocka_unit_test(normalize_rejects_wrong_length_and_foreign_characters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
