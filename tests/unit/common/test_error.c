/* Tests for common/src/error.c: the CM_E* table, its names and its messages. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm/error.h"

/* The table as the header defines it, to check the functions against. */
typedef struct row {
    int code;
    const char *name;
    const char *msg;
} row_t;

static const row_t table[] = {
#define ROW(name, num, msg) {CM_##name, "CM_" #name, msg},
    CM_ERRNO_MAP(ROW)
#undef ROW
};
#define NROWS (sizeof table / sizeof *table)

static void codes_are_negative_and_numbered_from_minus_one_without_gaps(void **state)
{
    (void)state;
    assert_int_equal(NROWS, 17);
    for (size_t i = 0; i < NROWS; i++)
        assert_int_equal(table[i].code, -(int)(i + 1));
    assert_int_equal(CM_EINVAL, -1);
    assert_int_equal(CM_ESTOPPED, -(int)NROWS);
}

static void every_code_maps_to_its_own_name_and_message(void **state)
{
    (void)state;
    for (size_t i = 0; i < NROWS; i++) {
        assert_string_equal(cm_errname(table[i].code), table[i].name);
        assert_string_equal(cm_strerror(table[i].code), table[i].msg);
        /* The same static storage every time: callers never free it. */
        assert_ptr_equal(cm_strerror(table[i].code), cm_strerror(table[i].code));
    }
    assert_string_equal(cm_errname(CM_ECONFLICT), "CM_ECONFLICT");
    assert_string_equal(cm_strerror(CM_ETIMEDOUT), "timed out");
}

static void every_code_has_a_distinct_name_and_a_distinct_message(void **state)
{
    (void)state;
    for (int a = -1; a >= CM_ESTOPPED; a--) {
        assert_true(strlen(cm_strerror(a)) > 0);
        assert_string_not_equal(cm_strerror(a), "unknown error");
        assert_string_not_equal(cm_strerror(a), "success");
        assert_string_not_equal(cm_errname(a), "CM_EUNKNOWN");
        assert_string_not_equal(cm_errname(a), "OK");
        for (int b = a - 1; b >= CM_ESTOPPED; b--) {
            assert_string_not_equal(cm_errname(a), cm_errname(b));
            assert_string_not_equal(cm_strerror(a), cm_strerror(b));
        }
    }
}

static void a_name_leads_back_to_its_code(void **state)
{
    (void)state;
    /* Round trip: code -> name -> the one code with that name in the table. */
    for (int code = -1; code >= CM_ESTOPPED; code--) {
        const char *name = cm_errname(code);
        int found = 0, matches = 0;
        for (size_t i = 0; i < NROWS; i++) {
            if (strcmp(table[i].name, name) == 0) {
                found = table[i].code;
                matches++;
            }
        }
        assert_int_equal(matches, 1);
        assert_int_equal(found, code);
    }
}

static void zero_is_success(void **state)
{
    (void)state;
    assert_string_equal(cm_strerror(0), "success");
    assert_string_equal(cm_errname(0), "OK");
}

static void unknown_codes_get_the_unknown_name_and_message(void **state)
{
    (void)state;
    const int unknown[] = {1, 2, 17, CM_ESTOPPED - 1, -9999, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        assert_string_equal(cm_strerror(unknown[i]), "unknown error");
        assert_string_equal(cm_errname(unknown[i]), "CM_EUNKNOWN");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(codes_are_negative_and_numbered_from_minus_one_without_gaps),
        cmocka_unit_test(every_code_maps_to_its_own_name_and_message),
        cmocka_unit_test(every_code_has_a_distinct_name_and_a_distinct_message),
        cmocka_unit_test(a_name_leads_back_to_its_code),
        cmocka_unit_test(zero_is_success),
        cmocka_unit_test(unknown_codes_get_the_unknown_name_and_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
