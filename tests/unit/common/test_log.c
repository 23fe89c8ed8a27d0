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

static void log_access_lines(void)
{
    cm_log_request(CM_LOG_INFO, "req-2", "POST", "/api/login/", 401, 12.5);
    /* Hostile text in every member that takes text: still one valid JSON line. */
    cm_log_request(CM_LOG_WARN, "q\"\\\n\x01", "GE\"T", "/r/\xc3\xa9\"\t/x", 404, -3.0);
    cm_log_request(CM_LOG_INFO, NULL, NULL, NULL, 200, 0.25);
}

static void an_access_line_is_the_same_json_object_without_a_tree(void **state)
{
    (void)state;
    cm_log_init("gateway", CM_LOG_INFO);
    char *out = capture(log_access_lines);
    char *save = NULL;
    json_t *lines[3] = {NULL, NULL, NULL};
    int n = 0;
    for (char *l = strtok_r(out, "\n", &save); l && n < 3; l = strtok_r(NULL, "\n", &save)) {
        json_error_t err;
        lines[n] = json_loads(l, 0, &err);
        if (!lines[n])
            fail_msg("not JSON (%s): %s", err.text, l);
        n++;
    }
    assert_int_equal(n, 3);
    json_t *a = lines[0];
    assert_string_equal(json_string_value(json_object_get(a, "service")), "gateway");
    assert_string_equal(json_string_value(json_object_get(a, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(a, "request_id")), "req-2");
    assert_string_equal(json_string_value(json_object_get(a, "msg")), "request");
    assert_string_equal(json_string_value(json_object_get(a, "method")), "POST");
    assert_string_equal(json_string_value(json_object_get(a, "route")), "/api/login/");
    assert_int_equal(json_integer_value(json_object_get(a, "status")), 401);
    assert_true(json_real_value(json_object_get(a, "duration_ms")) == 12.5);
    assert_non_null(json_string_value(json_object_get(a, "time")));
    json_t *b = lines[1];
    assert_string_equal(json_string_value(json_object_get(b, "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(b, "request_id")), "q\"\\\n\x01");
    assert_string_equal(json_string_value(json_object_get(b, "method")), "GE\"T");
    /* Bytes outside printable ASCII are escaped one by one: \u00c3\u00a9, not é. */
    assert_string_equal(json_string_value(json_object_get(b, "route")),
                        "/r/\xc3\x83\xc2\xa9\"\t/x");
    assert_true(json_real_value(json_object_get(b, "duration_ms")) == 0.0);
    json_t *c = lines[2];
    assert_null(json_object_get(c, "request_id"));
    assert_null(json_object_get(c, "route"));
    assert_string_equal(json_string_value(json_object_get(c, "method")), "OTHER");
    for (int i = 0; i < n; i++)
        json_decref(lines[i]);
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
        cmocka_unit_test(an_access_line_is_the_same_json_object_without_a_tree),
        cmocka_unit_test(lines_below_the_level_are_skipped_without_evaluating_arguments),
        cmocka_unit_test(long_user_text_is_cut_and_control_characters_escaped),
        cmocka_unit_test(level_names_parse_and_unknown_ones_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
