/* Tests for common/src/log.c: one JSON object per line, levels, limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "cm/log.h"
#include "capture.h"

/* The logging calls to capture, behind the void * that t_capture passes. */
struct calls {
    void (*fn)(void);
};

static void call(void *arg)
{
    ((struct calls *)arg)->fn();
}

/* Runs the logging calls in fn with stdout redirected; returns what was written. */
static char *capture(void (*fn)(void))
{
    struct calls c = {fn};
    return t_capture(STDOUT_FILENO, call, &c);
}

static void log_one_line_with_fields(void)
{
    json_t *fields = json_pack("{s:i, s:s}", "status", 201, "route", "/api/register");
    CM_LOGF(CM_LOG_INFO, "req-1", fields, "registered %s", "ada");
    json_decref(fields);
}

static void a_line_is_one_json_object_with_the_standard_members(void **state)
{
    (void)state;
    cm_log_init("auth", CM_LOG_INFO);
    char *out = capture(log_one_line_with_fields);
    assert_non_null(strchr(out, '\n'));
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
    json_error_t err;
    json_t *line = json_loads(out, 0, &err);
    assert_non_null(line);
    assert_string_equal(json_string_value(json_object_get(line, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(line, "service")), "auth");
    assert_string_equal(json_string_value(json_object_get(line, "request_id")), "req-1");
    assert_string_equal(json_string_value(json_object_get(line, "msg")), "registered ada");
    assert_int_equal(json_integer_value(json_object_get(line, "status")), 201);
    assert_non_null(json_string_value(json_object_get(line, "time")));
    json_decref(line);
    free(out);
}

static int evaluated;
static int side_effect(void)
{
    return ++evaluated;
}
static void log_below_level(void)
{
    CM_DEBUG(NULL, "value %d", side_effect());
}

static void lines_below_the_level_are_skipped_without_evaluating_arguments(void **state)
{
    (void)state;
    cm_log_init("auth", CM_LOG_INFO);
    evaluated = 0;
    char *out = capture(log_below_level);
    assert_string_equal(out, "");
    assert_int_equal(evaluated, 0);
    free(out);
}

static void log_long_and_hostile(void)
{
    char big[5000];
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CM_WARN(NULL, "user said \"%s\"\n\x01", big);
}

static void long_user_text_is_cut_and_control_characters_escaped(void **state)
{
    (void)state;
    cm_log_init("gateway", CM_LOG_DEBUG);
    char *out = capture(log_long_and_hostile);
    json_t *line = json_loads(out, 0, NULL);
    assert_non_null(line);
    const char *msg = json_string_value(json_object_get(line, "msg"));
    assert_non_null(msg);
    assert_true(strlen(msg) <= CM_LOG_MAX_MSG);
    /* Exactly one physical line: the newline inside the message was escaped. */
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
    json_decref(line);
    free(out);
}

static void level_names_parse_and_unknown_ones_are_refused(void **state)
{
    (void)state;
    cm_log_level_t l;
    assert_int_equal(cm_log_parse_level("warn", &l), 0);
    assert_int_equal(l, CM_LOG_WARN);
    assert_int_not_equal(cm_log_parse_level("verbose", &l), 0);
    assert_int_not_equal(cm_log_parse_level(NULL, &l), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_line_is_one_json_object_with_the_standard_members),
        cmocka_unit_test(lines_below_the_level_are_skipped_without_evaluating_arguments),
        cmocka_unit_test(long_user_text_is_cut_and_control_characters_escaped),
        cmocka_unit_test(level_names_parse_and_unknown_ones_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
