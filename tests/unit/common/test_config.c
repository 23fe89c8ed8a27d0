/* Tests for common/src/config.c: every bad variable is named, defaults apply. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cm/config.h"
#include "capture.h"

struct finish {
    cm_cfg_t *c;
    int rc;
};

static void finish(void *arg)
{
    struct finish *f = arg;
    f->rc = cm_cfg_finish(f->c);
}

/* Captures what cm_cfg_finish prints to stderr. */
static char *finish_and_capture(cm_cfg_t *c, int *rc)
{
    struct finish f = {c, 0};
    char *out = t_capture(STDERR_FILENO, finish, &f);
    *rc = f.rc;
    return out;
}

static void unset_variables_take_their_defaults(void **state)
{
    (void)state;
    unsetenv("T_PORT");
    unsetenv("T_NAME");
    setenv("T_EMPTY", "", 1);
    cm_cfg_t c;
    cm_cfg_init(&c, "test");
    assert_int_equal(cm_cfg_int(&c, "T_PORT", 8001, 1, 65535), 8001);
    char *name = cm_cfg_str(&c, "T_NAME", "dflt");
    char *empty = cm_cfg_str(&c, "T_EMPTY", "fallback");
    assert_string_equal(name, "dflt");
    assert_string_equal(empty, "fallback");
    assert_true(cm_cfg_bool(&c, "T_FLAG", true));
    assert_int_equal(cm_cfg_finish(&c), 0);
    free(name);
    free(empty);
}

static void valid_values_are_parsed(void **state)
{
    (void)state;
    setenv("T_PORT", "9000", 1);
    setenv("T_FLAG", "Off", 1);
    setenv("T_URL", "postgresql://u@h/db", 1);
    setenv("T_LEVEL", "WARN", 1);
    static const char *const schemes[] = {"postgresql", "postgres", NULL};
    static const char *const levels[] = {"debug", "info", "warn", NULL};
    cm_cfg_t c;
    cm_cfg_init(&c, "test");
    assert_int_equal(cm_cfg_int(&c, "T_PORT", 1, 1, 65535), 9000);
    assert_false(cm_cfg_bool(&c, "T_FLAG", true));
    char *url = cm_cfg_url(&c, "T_URL", NULL, schemes);
    assert_string_equal(url, "postgresql://u@h/db");
    assert_int_equal(cm_cfg_choice(&c, "T_LEVEL", "info", levels), 2);
    assert_int_equal(cm_cfg_finish(&c), 0);
    free(url);
}

static void every_bad_variable_is_named_in_one_report(void **state)
{
    (void)state;
    setenv("T_PORT", "80x", 1);
    setenv("T_THREADS", "0", 1);
    setenv("T_FLAG", "maybe", 1);
    setenv("T_URL", "mysql://secret-password@h/db", 1);
    unsetenv("T_REQUIRED");
    static const char *const schemes[] = {"postgresql", NULL};
    cm_cfg_t c;
    cm_cfg_init(&c, "test");
    (void)cm_cfg_int(&c, "T_PORT", 8000, 1, 65535);
    (void)cm_cfg_int(&c, "T_THREADS", 4, 1, 64);
    (void)cm_cfg_bool(&c, "T_FLAG", false);
    free(cm_cfg_url(&c, "T_URL", NULL, schemes));
    free(cm_cfg_str_required(&c, "T_REQUIRED"));
    int rc = 0;
    char *out = finish_and_capture(&c, &rc);
    assert_int_equal(rc, CM_EINVAL);
    assert_non_null(strstr(out, "T_PORT: must be a whole number"));
    assert_non_null(strstr(out, "T_THREADS: must be between 1 and 64"));
    assert_non_null(strstr(out, "T_FLAG: must be true or false"));
    assert_non_null(strstr(out, "T_URL: must be a URL starting with postgresql://"));
    assert_non_null(strstr(out, "T_REQUIRED: is required"));
    /* A URL may carry a password: it is never echoed. */
    assert_null(strstr(out, "secret-password"));
    free(out);
}

static void a_bad_choice_lists_the_allowed_words(void **state)
{
    (void)state;
    setenv("T_LEVEL", "loud", 1);
    static const char *const levels[] = {"debug", "info", NULL};
    cm_cfg_t c;
    cm_cfg_init(&c, "test");
    assert_int_equal(cm_cfg_choice(&c, "T_LEVEL", "info", levels), 0);
    int rc = 0;
    char *out = finish_and_capture(&c, &rc);
    assert_int_equal(rc, CM_EINVAL);
    assert_non_null(strstr(out, "T_LEVEL: must be one of debug, info"));
    free(out);
}

static void more_errors_than_the_table_holds_are_counted_not_lost(void **state)
{
    (void)state;
    cm_cfg_t c;
    cm_cfg_init(&c, "test");
    for (int i = 0; i < CM_CFG_MAX_ERRORS + 3; i++)
        cm_cfg_error(&c, "T_MANY", "bad %d", i);
    int rc = 0;
    char *out = finish_and_capture(&c, &rc);
    assert_int_equal(rc, CM_EINVAL);
    assert_non_null(strstr(out, "and 3 more"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unset_variables_take_their_defaults),
        cmocka_unit_test(valid_values_are_parsed),
        cmocka_unit_test(every_bad_variable_is_named_in_one_report),
        cmocka_unit_test(a_bad_choice_lists_the_allowed_words),
        cmocka_unit_test(more_errors_than_the_table_holds_are_counted_not_lost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
