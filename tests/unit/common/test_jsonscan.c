/*
 * Tests for common/src/jsonscan.c: the depth and size bound that runs
 * before jansson on every untrusted JSON input.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "cm/jsonscan.h"
#include "cm/util.h"

/* civetweb 1.15's worker stack (Debian's libcivetweb sets it; tests/fuzz asserts it). */
#define WORKER_STACK 0x19000

static int scan(const char *s, int max_depth, size_t *where)
{
    return cm_json_scan(s, strlen(s), 1 << 20, max_depth, where);
}

/* n copies of open, then n of close (close may be ""). */
static char *nested(size_t n, char open, char close)
{
    char *s = cm_xmalloc(2 * n + 1);
    memset(s, open, n);
    memset(s + n, close ? close : ' ', n);
    s[2 * n] = '\0';
    return s;
}

static void flat_and_scalar_documents_pass_at_depth_one_or_zero(void **state)
{
    (void)state;
    size_t where = 0;
    assert_int_equal(scan("{\"a\":1,\"b\":[1,2,3]}", 2, &where), 0);
    assert_int_equal(where, strlen("{\"a\":1,\"b\":[1,2,3]}"));
    assert_int_equal(scan("{\"a\":1,\"b\":[1,2,3]}", 1, NULL), CM_ERANGE);
    assert_int_equal(scan("{}", 1, NULL), 0);
    assert_int_equal(scan("42", 0, NULL), 0);
    assert_int_equal(scan("[]", 0, NULL), CM_ERANGE);
    assert_int_equal(cm_json_scan(NULL, 0, 10, 1, NULL), 0);
}

static void depth_is_counted_across_arrays_and_objects_alike(void **state)
{
    (void)state;
    const char *mixed = "{\"a\":[{\"b\":[{}]}]}"; /* five levels */
    size_t where = 0;
    assert_int_equal(scan(mixed, 5, NULL), 0);
    assert_int_equal(scan(mixed, 4, &where), CM_ERANGE);
    assert_int_equal(where, strlen("{\"a\":[{\"b\":[")); /* the fifth opener */
    /* Siblings do not add up: depth returns as brackets close. */
    assert_int_equal(scan("[[[]],[[]],[[]],[[]]]", 3, NULL), 0);
}

static void brackets_inside_strings_and_escapes_do_not_count(void **state)
{
    (void)state;
    assert_int_equal(scan("{\"k\":\"[[[[[[[[{{{{{{\"}", 1, NULL), 0);
    /* An escaped quote does not end the string, so the brackets after it are still inside. */
    assert_int_equal(scan("[\"\\\"[[[[\"]", 1, NULL), 0);
    /* An escaped backslash does end it: the brackets after the closing quote count. */
    assert_int_equal(scan("[\"\\\\\",[[[]]]]", 1, NULL), CM_ERANGE);
    assert_int_equal(scan("[\"\\\\\",[[[]]]]", 4, NULL), 0);
    /* Unicode escapes and raw UTF-8 are plain string bytes. */
    assert_int_equal(scan("[\"\\u005b\\u007b\xc3\xa9[\"]", 1, NULL), 0);
}

static void a_million_openers_are_refused_at_the_first_too_deep_one(void **state)
{
    (void)state;
    char *s = nested(1000000, '[', 0);
    size_t where = 0;
    assert_int_equal(cm_json_scan(s, 1000000, 2000000, 64, &where), CM_ERANGE);
    assert_int_equal(where, 64);
    free(s);
    s = nested(1000, '{', 0);
    assert_int_equal(scan(s, 64, NULL), CM_ERANGE);
    free(s);
}

static void a_stray_closer_does_not_buy_extra_depth(void **state)
{
    (void)state;
    /* "]]]]" first must not let the next four openers ride below zero. */
    assert_int_equal(scan("]]]][[[[", 2, NULL), CM_ERANGE);
    assert_int_equal(scan("}}[", 1, NULL), 0);
}

static void an_unterminated_string_hides_what_follows_and_the_parser_refuses_it(void **state)
{
    (void)state;
    /* Everything after the open quote is string to the scan; jansson then rejects it. */
    const char *s = "[\"[[[[[[[[[[[[[";
    assert_int_equal(scan(s, 1, NULL), 0);
    assert_null(json_loads(s, 0, NULL));
    /* A trailing backslash steps past the end without reading it. */
    assert_int_equal(cm_json_scan("[\"\\", 3, 3, 1, NULL), 0);
}

static void input_over_the_size_limit_is_too_big(void **state)
{
    (void)state;
    size_t where = 0;
    assert_int_equal(cm_json_scan("{\"a\":1}", 7, 6, 8, &where), CM_ETOOBIG);
    assert_int_equal(where, 7);
    assert_int_equal(cm_json_scan("{\"a\":1}", 7, 7, 8, NULL), 0);
}

static void nul_bytes_are_just_bytes(void **state)
{
    (void)state;
    const char s[] = "[\"\0[[[\"]\0[[";
    assert_int_equal(cm_json_scan(s, sizeof s - 1, 64, 1, NULL), CM_ERANGE);
    assert_int_equal(cm_json_scan(s, sizeof s - 1, 64, 2, NULL), 0);
}

/* Parses s with jansson and reports whether it made a value. */
static void *parse_on_thread(void *arg)
{
    json_t *v = json_loads(arg, JSON_DECODE_ANY, NULL);
    bool ok = v != NULL;
    json_decref(v);
    return ok ? arg : NULL;
}

static void what_the_body_limit_admits_parses_on_a_civetweb_worker_stack(void **state)
{
    (void)state;
    /* The deepest body the scan lets through must parse within the worker's stack. */
    char *s = nested(CM_JSON_MAX_DEPTH_BODY, '[', ']');
    assert_int_equal(scan(s, CM_JSON_MAX_DEPTH_BODY, NULL), 0);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    assert_int_equal(pthread_attr_setstacksize(&attr, WORKER_STACK), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, &attr, parse_on_thread, s), 0);
    void *ok = NULL;
    pthread_join(t, &ok);
    assert_ptr_equal(ok, s);
    pthread_attr_destroy(&attr);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(flat_and_scalar_documents_pass_at_depth_one_or_zero),
        cmocka_unit_test(depth_is_counted_across_arrays_and_objects_alike),
        cmocka_unit_test(brackets_inside_strings_and_escapes_do_not_count),
        cmocka_unit_test(a_million_openers_are_refused_at_the_first_too_deep_one),
        cmocka_unit_test(a_stray_closer_does_not_buy_extra_depth),
        cmocka_unit_test(an_unterminated_string_hides_what_follows_and_the_parser_refuses_it),
        cmocka_unit_test(input_over_the_size_limit_is_too_big),
        cmocka_unit_test(nul_bytes_are_just_bytes),
        cmocka_unit_test(what_the_body_limit_admits_parses_on_a_civetweb_worker_stack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
