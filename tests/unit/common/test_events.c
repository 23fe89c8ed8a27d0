/* Tests for common/src/events.c: the event envelope and the field readers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm/events.h"
#include "cm/util.h"
#include "schema.h"

static const char good[] = "{\"id\":\"0b7f3c1e-4a1b-4c2d-9e8f-0123456789ab\","
                           "\"type\":\"user.verified\",\"version\":1,"
                           "\"occurred_at\":\"2026-11-27T10:00:00.123Z\",\"source\":\"auth\","
                           "\"data\":{\"user_id\":\"0b7f3c1e-4a1b-4c2d-9e8f-0123456789ab\","
                           "\"verified_at\":\"2026-11-27T10:00:00.123Z\"}}";

/* Parses a JSON text after replacing member name's value with raw JSON (NULL removes it). */
static int parse_with(const char *name, const char *raw)
{
    json_t *o = json_loads(good, 0, NULL);
    assert_non_null(o);
    if (raw) {
        json_t *v = json_loads(raw, JSON_DECODE_ANY, NULL);
        assert_non_null(v);
        json_object_set_new(o, name, v);
    } else {
        json_object_del(o, name);
    }
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    cm_event_t ev;
    memset(&ev, 0x5a, sizeof ev);
    int rc = cm_event_parse(text, strlen(text), &ev);
    free(text);
    if (rc != 0)
        assert_null(ev.data); /* nothing to dispose */
    cm_event_dispose(&ev);
    return rc;
}

static void new_event_round_trips_through_dump_and_parse(void **state)
{
    (void)state;
    json_t *data = json_pack("{s:s, s:s}", "user_id", "0b7f3c1e-4a1b-4c2d-9e8f-0123456789ab",
                             "verified_at", "2026-11-27T10:00:00.123Z");
    json_t *ev = cm_event_new(CM_EV_USER_VERIFIED, "auth", data);
    assert_non_null(ev);
    char err[256];
    assert_true(t_schema_validate_event(ev, err, sizeof err));
    char *text = json_dumps(ev, JSON_COMPACT);
    cm_event_t parsed;
    assert_int_equal(cm_event_parse(text, strlen(text), &parsed), 0);
    assert_string_equal(parsed.id, json_string_value(json_object_get(ev, "id")));
    assert_true(cm_is_uuid(parsed.id, strlen(parsed.id)));
    assert_string_equal(parsed.type, "user.verified");
    assert_string_equal(parsed.source, "auth");
    assert_int_equal(parsed.version, 1);
    assert_string_equal(parsed.occurred_at, json_string_value(json_object_get(ev, "occurred_at")));
    assert_true(json_equal(parsed.data, json_object_get(ev, "data")));
    cm_event_dispose(&parsed);
    cm_event_dispose(&parsed); /* idempotent */
    assert_null(parsed.data);
    free(text);
    json_decref(ev);
}

/* The correlation id: set, validated against the schema, parsed back, and its traceparent. */
static void a_correlation_id_round_trips_and_gives_a_w3c_traceparent(void **state)
{
    (void)state;
    json_t *ev =
        cm_event_new(CM_EV_USER_VERIFIED, "auth",
                     json_pack("{s:s, s:s}", "user_id", "0b7f3c1e-4a1b-4c2d-9e8f-0123456789ab",
                               "verified_at", "2026-11-27T10:00:00.123Z"));
    assert_int_equal(cm_event_set_correlation(ev, "req-42.A_b"), 0);
    assert_int_equal(cm_event_set_correlation(ev, NULL), 0); /* none: unchanged */
    char err[256];
    assert_true(t_schema_validate_event(ev, err, sizeof err));
    assert_int_equal(cm_event_set_correlation(ev, "bad id\r\nX: y"), CM_EINVAL);
    assert_string_equal(json_string_value(json_object_get(ev, "correlation_id")), "req-42.A_b");
    char *text = json_dumps(ev, JSON_COMPACT);
    cm_event_t parsed;
    assert_int_equal(cm_event_parse(text, strlen(text), &parsed), 0);
    assert_string_equal(parsed.correlation_id, "req-42.A_b");
    char tp[CM_TRACEPARENT_LEN + 1];
    assert_int_equal(cm_event_traceparent(parsed.correlation_id, parsed.id, tp), 0);
    assert_int_equal(strlen(tp), CM_TRACEPARENT_LEN);
    assert_memory_equal(tp, "00-", 3);
    assert_string_equal(tp + 52, "-01");
    cm_event_dispose(&parsed);
    free(text);
    json_decref(ev);
    /* A UUID request id is the trace id itself; the event id gives the parent id. */
    assert_int_equal(cm_event_traceparent("0AF7651F-6a2b-4c3d-9e8f-0123456789AB",
                                          "b7ad6b71-6920-4ccc-8e59-2f1c3b4d5e6f", tp),
                     0);
    assert_string_equal(tp, "00-0af7651f6a2b4c3d9e8f0123456789ab-b7ad6b7169204ccc-01");
    assert_int_equal(cm_event_traceparent("x y", "b7ad6b71-6920-4ccc-8e59-2f1c3b4d5e6f", tp),
                     CM_EINVAL);
    assert_int_equal(cm_event_traceparent("ok", "not-a-uuid", tp), CM_EINVAL);
    /* Without one the field is empty; a malformed one makes the envelope malformed. */
    const char *plain =
        "{\"id\":\"0b7f3c1e-4a1b-4c2d-9e8f-0123456789ab\",\"type\":\"user.verified\","
        "\"version\":1,\"occurred_at\":\"2026-11-27T10:00:00Z\",\"source\":\"auth\","
        "\"data\":{}}";
    assert_int_equal(cm_event_parse(plain, strlen(plain), &parsed), 0);
    assert_string_equal(parsed.correlation_id, "");
    cm_event_dispose(&parsed);
    const char *bad = "{\"id\":\"0b7f3c1e-4a1b-4c2d-9e8f-0123456789ab\",\"type\":\"user.verified\","
                      "\"version\":1,\"occurred_at\":\"2026-11-27T10:00:00Z\",\"source\":\"auth\","
                      "\"data\":{},\"correlation_id\":\"a b\"}";
    assert_int_equal(cm_event_parse(bad, strlen(bad), &parsed), CM_EPARSE);
}

static void new_events_get_distinct_ids(void **state)
{
    (void)state;
    json_t *a = cm_event_new("user.verified", "auth", json_object());
    json_t *b = cm_event_new("user.verified", "auth", json_object());
    assert_string_not_equal(json_string_value(json_object_get(a, "id")),
                            json_string_value(json_object_get(b, "id")));
    json_decref(a);
    json_decref(b);
}

static void new_event_refuses_bad_type_source_or_data(void **state)
{
    (void)state;
    assert_null(cm_event_new("User.Registered", "auth", json_object()));
    assert_null(cm_event_new("", "auth", json_object()));
    assert_null(cm_event_new("user.verified", "", json_object()));
    assert_null(cm_event_new("user.verified", "a\"b", json_object()));
    assert_null(cm_event_new("user.verified", "auth", json_array()));
    assert_null(cm_event_new("user.verified", "auth", NULL));
    assert_null(cm_event_new(NULL, "auth", json_object()));
}

static void parse_accepts_the_design_example(void **state)
{
    (void)state;
    cm_event_t ev;
    assert_int_equal(cm_event_parse(good, strlen(good), &ev), 0);
    assert_string_equal(ev.type, "user.verified");
    cm_event_dispose(&ev);
}

static void parse_rejects_each_missing_member(void **state)
{
    (void)state;
    const char *members[] = {"id", "type", "version", "occurred_at", "source", "data"};
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(parse_with(members[i], NULL), CM_EPARSE);
}

static void parse_rejects_mistyped_members(void **state)
{
    (void)state;
    assert_int_equal(parse_with("id", "42"), CM_EPARSE);
    assert_int_equal(parse_with("type", "null"), CM_EPARSE);
    assert_int_equal(parse_with("version", "\"1\""), CM_EPARSE);
    assert_int_equal(parse_with("version", "1.5"), CM_EPARSE);
    assert_int_equal(parse_with("version", "0"), CM_EPARSE);
    assert_int_equal(parse_with("occurred_at", "1700000000"), CM_EPARSE);
    assert_int_equal(parse_with("occurred_at", "\"yesterday\""), CM_EPARSE);
    assert_int_equal(parse_with("source", "{}"), CM_EPARSE);
    assert_int_equal(parse_with("source", "\"\""), CM_EPARSE);
}

static void parse_rejects_a_type_outside_lowercase_and_dots(void **state)
{
    (void)state;
    assert_int_equal(parse_with("type", "\"User.Registered\""), CM_EPARSE);
    assert_int_equal(parse_with("type", "\"user_registered\""), CM_EPARSE);
    assert_int_equal(parse_with("type", "\"\""), CM_EPARSE);
    char longtype[80];
    memset(longtype, 'a', sizeof longtype);
    longtype[0] = '"';
    longtype[65] = '"';
    longtype[66] = '\0'; /* 64 letters */
    assert_int_equal(parse_with("type", longtype), CM_EPARSE);
    longtype[64] = '"';
    longtype[65] = '\0'; /* 63 letters */
    assert_int_equal(parse_with("type", longtype), 0);
}

static void parse_rejects_an_id_that_is_not_a_uuid(void **state)
{
    (void)state;
    assert_int_equal(parse_with("id", "\"not-a-uuid\""), CM_EPARSE);
    assert_int_equal(parse_with("id", "\"0b7f3c1e-4a1b-4c2d-9e8f-0123456789abc\""), CM_EPARSE);
    assert_int_equal(parse_with("id", "\"0b7f3c1e4a1b4c2d9e8f0123456789ab\""), CM_EPARSE);
}

static void parse_rejects_data_that_is_not_an_object(void **state)
{
    (void)state;
    assert_int_equal(parse_with("data", "[]"), CM_EPARSE);
    assert_int_equal(parse_with("data", "null"), CM_EPARSE);
    assert_int_equal(parse_with("data", "\"{}\""), CM_EPARSE);
}

static void parse_rejects_input_that_is_not_json_or_not_an_object(void **state)
{
    (void)state;
    cm_event_t ev;
    assert_int_equal(cm_event_parse("", 0, &ev), CM_EPARSE);
    assert_int_equal(cm_event_parse("{\"id\":", 6, &ev), CM_EPARSE);
    assert_int_equal(cm_event_parse("[1,2]", 5, &ev), CM_EPARSE);
    assert_int_equal(cm_event_parse("\xff\xfe", 2, &ev), CM_EPARSE);
    /* Only len bytes count: the rest of a valid text is not read. */
    assert_int_equal(cm_event_parse(good, strlen(good) - 1, &ev), CM_EPARSE);
    assert_int_equal(cm_event_parse(NULL, 0, &ev), CM_EPARSE);
    assert_null(ev.data);
}

static void parse_rejects_duplicate_members(void **state)
{
    (void)state;
    char *text = cm_xasprintf("{\"type\":\"user.registered\",%s", good + 1);
    cm_event_t ev;
    assert_int_equal(cm_event_parse(text, strlen(text), &ev), CM_EPARSE);
    free(text);
}

static void parse_refuses_huge_input_before_reading_it(void **state)
{
    (void)state;
    size_t n = CM_EVENT_MAX_BYTES + 1;
    char *big = cm_xmalloc(n);
    memset(big, ' ', n);
    /* Valid JSON after whitespace: its bytes without the NUL, since the parser reads a
     * (pointer, length) slice and big is not a C string. */
    memcpy(big + n - (sizeof good - 1), good, sizeof good - 1);
    cm_event_t ev;
    assert_int_equal(cm_event_parse(big, n, &ev), CM_ETOOBIG);
    assert_int_equal(cm_event_parse(big + 1, n - 1, &ev), 0); /* exactly at the cap is fine */
    cm_event_dispose(&ev);
    free(big);
}

/* ---- field readers ---------------------------------------------------------- */

static void text_field_of_1_to_max_printable_bytes_is_returned_borrowed(void **state)
{
    (void)state;
    json_t *d = json_pack("{s:s, s:s, s:s}", "name", "ada", "max", "abcd", "utf8", "caf\xc3\xa9");
    assert_ptr_equal(cm_event_text(d, "name", 64), json_string_value(json_object_get(d, "name")));
    assert_string_equal(cm_event_text(d, "max", 4), "abcd");
    assert_null(cm_event_text(d, "max", 3));
    assert_string_equal(cm_event_text(d, "utf8", 5), "caf\xc3\xa9"); /* bytes, not characters */
    assert_null(cm_event_text(d, "utf8", 4));
    json_decref(d);
}

static void text_field_refuses_missing_empty_mistyped_and_control_characters(void **state)
{
    (void)state;
    json_t *d = json_loads("{\"empty\":\"\",\"num\":7,\"null\":null,\"obj\":{},\"nl\":\"a\\nb\","
                           "\"del\":\"a\\u007fb\",\"nul\":\"a\\u0000b\",\"tab\":\"\\t\"}",
                           JSON_ALLOW_NUL, NULL);
    assert_non_null(d);
    const char *keys[] = {"missing", "empty", "num", "null", "obj", "nl", "del", "nul", "tab"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (cm_event_text(d, keys[i], 64) != NULL)
            fail_msg("cm_event_text accepted %s", keys[i]);
    json_t *arr = json_pack("[s]", "x");
    assert_null(cm_event_text(arr, "0", 64)); /* not an object */
    assert_null(cm_event_text(NULL, "x", 64));
    json_decref(arr);
    json_decref(d);
}

static void uuid_field_accepts_canonical_uuids_only(void **state)
{
    (void)state;
    json_t *d = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:i}", "lower", "0b7f3c1e-4a1b-4c2d-9e8f-0123456789ab", "upper",
        "0B7F3C1E-4A1B-4C2D-9E8F-0123456789AB", "braces", "{0b7f3c1e-4a1b-4c2d-9e8f-0123456789ab}",
        "short", "0b7f3c1e-4a1b-4c2d-9e8f-0123456789a", "nohyphen",
        "0b7f3c1e4a1b4c2d9e8f0123456789abcdef", "num", 1);
    assert_string_equal(cm_event_uuid(d, "lower"), "0b7f3c1e-4a1b-4c2d-9e8f-0123456789ab");
    assert_string_equal(cm_event_uuid(d, "upper"), "0B7F3C1E-4A1B-4C2D-9E8F-0123456789AB");
    assert_null(cm_event_uuid(d, "braces"));
    assert_null(cm_event_uuid(d, "short"));
    assert_null(cm_event_uuid(d, "nohyphen"));
    assert_null(cm_event_uuid(d, "num"));
    assert_null(cm_event_uuid(d, "missing"));
    assert_null(cm_event_uuid(NULL, "lower"));
    json_decref(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(new_event_round_trips_through_dump_and_parse),
        cmocka_unit_test(new_events_get_distinct_ids),
        cmocka_unit_test(a_correlation_id_round_trips_and_gives_a_w3c_traceparent),
        cmocka_unit_test(new_event_refuses_bad_type_source_or_data),
        cmocka_unit_test(parse_accepts_the_design_example),
        cmocka_unit_test(parse_rejects_each_missing_member),
        cmocka_unit_test(parse_rejects_mistyped_members),
        cmocka_unit_test(parse_rejects_a_type_outside_lowercase_and_dots),
        cmocka_unit_test(parse_rejects_an_id_that_is_not_a_uuid),
        cmocka_unit_test(parse_rejects_data_that_is_not_an_object),
        cmocka_unit_test(parse_rejects_input_that_is_not_json_or_not_an_object),
        cmocka_unit_test(parse_rejects_duplicate_members),
        cmocka_unit_test(parse_refuses_huge_input_before_reading_it),
        cmocka_unit_test(text_field_of_1_to_max_printable_bytes_is_returned_borrowed),
        cmocka_unit_test(text_field_refuses_missing_empty_mistyped_and_control_characters),
        cmocka_unit_test(uuid_field_accepts_canonical_uuids_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
