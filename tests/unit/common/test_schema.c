/* Tests for tests/support/schema.c: the JSON Schema subset the event contracts use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm/events.h"
#include "schema.h"

/* Validates the JSON text inst against the JSON text schema. */
static bool valid(const char *schema, const char *inst)
{
    json_error_t e;
    json_t *s = json_loads(schema, 0, &e);
    json_t *i = json_loads(inst, JSON_DECODE_ANY, &e);
    assert_non_null(s);
    assert_non_null(i);
    char err[256];
    bool ok = t_schema_validate(s, i, err, sizeof err);
    if (ok)
        assert_string_equal(err, "");
    else
        assert_true(strlen(err) > 0); /* a failure always says why */
    json_decref(s);
    json_decref(i);
    return ok;
}

static void type_accepts_matching_and_rejects_other_types(void **state)
{
    (void)state;
    assert_true(valid("{\"type\":\"string\"}", "\"x\""));
    assert_false(valid("{\"type\":\"string\"}", "1"));
    assert_true(valid("{\"type\":\"integer\"}", "3"));
    assert_true(valid("{\"type\":\"integer\"}", "3.0"));
    assert_false(valid("{\"type\":\"integer\"}", "3.5"));
    assert_true(valid("{\"type\":\"number\"}", "3.5"));
    assert_false(valid("{\"type\":\"object\"}", "[]"));
    assert_true(valid("{\"type\":\"array\"}", "[]"));
    assert_true(valid("{\"type\":\"boolean\"}", "false"));
    assert_false(valid("{\"type\":\"null\"}", "false"));
}

static void type_array_accepts_any_listed_type(void **state)
{
    (void)state;
    assert_true(valid("{\"type\":[\"object\",\"null\"]}", "null"));
    assert_true(valid("{\"type\":[\"object\",\"null\"]}", "{}"));
    assert_false(valid("{\"type\":[\"object\",\"null\"]}", "\"\""));
}

static void required_rejects_a_missing_member(void **state)
{
    (void)state;
    const char *s = "{\"type\":\"object\",\"required\":[\"a\",\"b\"]}";
    assert_true(valid(s, "{\"a\":1,\"b\":null}"));
    assert_false(valid(s, "{\"a\":1}"));
}

static void properties_validate_members_recursively(void **state)
{
    (void)state;
    const char *s = "{\"properties\":{\"o\":{\"properties\":{\"n\":{\"type\":\"integer\"}}}}}";
    assert_true(valid(s, "{\"o\":{\"n\":1}}"));
    assert_false(valid(s, "{\"o\":{\"n\":\"1\"}}"));
    assert_true(valid(s, "{\"other\":\"anything\"}"));
}

static void additional_properties_false_rejects_unknown_members(void **state)
{
    (void)state;
    const char *s = "{\"properties\":{\"a\":{}},\"additionalProperties\":false}";
    assert_true(valid(s, "{\"a\":1}"));
    assert_false(valid(s, "{\"a\":1,\"b\":2}"));
    /* Key order in the schema does not matter. */
    assert_false(valid("{\"additionalProperties\":false,\"properties\":{\"a\":{}}}", "{\"b\":2}"));
}

static void enum_and_const_compare_whole_values(void **state)
{
    (void)state;
    assert_true(valid("{\"enum\":[\"credit\",\"milestone\"]}", "\"milestone\""));
    assert_false(valid("{\"enum\":[\"credit\",\"milestone\"]}", "\"Credit\""));
    assert_true(valid("{\"const\":1}", "1"));
    assert_false(valid("{\"const\":1}", "2"));
    assert_false(valid("{\"const\":\"a\"}", "[\"a\"]"));
}

static void lengths_count_characters_not_bytes(void **state)
{
    (void)state;
    const char *s = "{\"minLength\":2,\"maxLength\":3}";
    assert_false(valid(s, "\"a\""));
    assert_true(valid(s, "\"ab\""));
    assert_true(valid(s, "\"\xc3\xa9\xc3\xa9\xc3\xa9\"")); /* three characters, six bytes */
    assert_false(valid(s, "\"abcd\""));
    assert_true(valid(s, "42")); /* lengths apply to strings only */
}

static void minimum_and_maximum_bound_numbers(void **state)
{
    (void)state;
    assert_true(valid("{\"minimum\":1}", "1"));
    assert_false(valid("{\"minimum\":1}", "0"));
    assert_false(valid("{\"minimum\":1}", "-5"));
    assert_false(valid("{\"maximum\":10}", "10.5"));
    assert_true(valid("{\"minimum\":1}", "\"0\""));
}

static void uuid_format_is_checked(void **state)
{
    (void)state;
    const char *s = "{\"format\":\"uuid\"}";
    assert_true(valid(s, "\"0b7f3c1e-4a1b-4c2d-9e8f-0123456789ab\""));
    assert_false(valid(s, "\"0b7f3c1e-4a1b-4c2d-9e8f-0123456789a\""));
    assert_false(valid(s, "\"0b7f3c1e-4a1b-4c2d-9e8f-0123456789ag\""));
    assert_false(valid(s, "\"\""));
    assert_true(valid(s, "null")); /* formats apply to strings only */
}

static void date_time_format_follows_rfc3339(void **state)
{
    (void)state;
    const char *s = "{\"format\":\"date-time\"}";
    assert_true(valid(s, "\"2026-11-27T10:00:00.123Z\""));
    assert_true(valid(s, "\"2026-11-27T10:00:00Z\""));
    assert_true(valid(s, "\"2024-02-29T23:59:60+02:00\""));
    assert_false(valid(s, "\"2026-02-29T10:00:00Z\""));
    assert_false(valid(s, "\"2026-11-27 10:00:00Z\""));
    assert_false(valid(s, "\"2026-11-27T10:00:00\""));
    assert_false(valid(s, "\"2026-13-27T10:00:00Z\""));
    assert_false(valid(s, "\"2026-11-27T24:00:00Z\""));
    assert_false(valid(s, "\"2026-11-27T10:00:00.Z\""));
    assert_false(valid(s, "\"2026-11-27\""));
}

static void patterns_are_posix_extended_expressions(void **state)
{
    (void)state;
    const char *s = "{\"type\":\"string\",\"pattern\":\"^[0-9a-f]{2}-[0-9]+$\"}";
    assert_true(valid(s, "\"0a-17\""));
    assert_false(valid(s, "\"0A-17\""));
    assert_false(valid(s, "\"0a-\""));
    assert_false(valid("{\"pattern\":\"(\"}", "\"a\"")); /* not an expression: a schema error */
}

static void unknown_keywords_and_formats_fail_instead_of_passing_silently(void **state)
{
    (void)state;
    assert_false(valid("{\"patternProperties\":{\"^a$\":{}}}", "{\"a\":1}"));
    assert_false(valid("{\"$ref\":\"envelope.schema.json\"}", "{}"));
    assert_false(valid("{\"format\":\"email\"}", "\"a@b\""));
    assert_true(valid("{\"title\":\"t\",\"description\":\"d\",\"$id\":\"urn:x\"}", "1"));
}

static const char *const types[] = {CM_EV_USER_REGISTERED,
                                    CM_EV_USER_VERIFIED,
                                    CM_EV_RESET_REQUESTED,
                                    CM_EV_PASSWORD_CHANGED,
                                    CM_EV_REFERRAL_CONVERTED,
                                    CM_EV_REWARD_GRANTED,
                                    CM_EV_MAIL_DEAD,
                                    "verify.requested",
                                    "envelope",
                                    CM_EV_EMAIL_CHANGE_REQUESTED,
                                    CM_EV_EMAIL_CHANGE_NOTICE,
                                    CM_EV_USER_EMAIL_CHANGED,
                                    CM_EV_SIGNIN_NEW,
                                    CM_EV_USER_DELETED};

static void every_event_schema_loads_and_declares_its_type(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        json_t *s = t_schema_load(types[i]);
        assert_string_equal(json_string_value(json_object_get(s, "$schema")),
                            "https://json-schema.org/draft/2020-12/schema");
        assert_non_null(json_string_value(json_object_get(s, "$id")));
        assert_true(json_is_false(json_object_get(s, "additionalProperties")));
        json_t *type = json_object_get(json_object_get(s, "properties"), "type"); /* borrowed */
        if (strcmp(types[i], "envelope") != 0)
            assert_string_equal(json_string_value(json_object_get(type, "const")), types[i]);
        json_decref(s);
    }
}

static const char reward[] =
    "{\"id\":\"0b7f3c1e-4a1b-4c2d-9e8f-0123456789ab\",\"type\":\"reward.granted\",\"version\":1,"
    "\"occurred_at\":\"2026-11-27T10:00:00.123Z\",\"source\":\"referral\",\"data\":{"
    "\"reward_id\":\"1b7f3c1e-4a1b-4c2d-9e8f-0123456789ab\","
    "\"user_id\":\"2b7f3c1e-4a1b-4c2d-9e8f-0123456789ab\",\"kind\":\"credit\",\"amount\":10,"
    "\"reason\":\"Referral of bob\",\"referral_id\":null,\"at\":\"2026-11-27T10:00:00.123Z\"}}";

/* Validates reward after setting data.<member> to raw JSON (NULL removes it). */
static bool reward_with(const char *member, const char *raw)
{
    json_t *ev = json_loads(reward, 0, NULL);
    json_t *data = json_object_get(ev, "data"); /* borrowed */
    if (raw)
        json_object_set_new(data, member, json_loads(raw, JSON_DECODE_ANY, NULL));
    else
        json_object_del(data, member);
    char err[256];
    bool ok = t_schema_validate_event(ev, err, sizeof err);
    json_decref(ev);
    return ok;
}

static void reward_schema_accepts_a_grant_and_rejects_each_violation(void **state)
{
    (void)state;
    assert_false(reward_with("kind", NULL));
    assert_true(reward_with("kind", "\"milestone\""));
    assert_true(reward_with("referral_id", "\"3b7f3c1e-4a1b-4c2d-9e8f-0123456789ab\""));
    assert_false(reward_with("referral_id", "\"3b7f\""));
    assert_false(reward_with("kind", "\"cash\""));
    assert_false(reward_with("amount", "0"));
    assert_false(reward_with("amount", "1.5"));
    assert_false(reward_with("at", "\"now\""));
    assert_false(reward_with("extra", "1"));
    assert_false(reward_with("reason", "\"\""));
}

static void user_registered_schema_takes_a_referrer_object_or_null(void **state)
{
    (void)state;
    json_t *data =
        json_pack("{s:s, s:s, s:s, s:s, s:n, s:s, s:s, s:s}", "user_id",
                  "0b7f3c1e-4a1b-4c2d-9e8f-0123456789ab", "username", "ada", "email",
                  "ada@example.com", "referral_code", "7KQ2M9XD", "referred_by", "ip", "127.0.0.1",
                  "verify_token_sealed", "c2VhbGVk", "registered_at", "2026-11-27T10:00:00.123Z");
    json_t *ev = cm_event_new(CM_EV_USER_REGISTERED, "auth", data);
    char err[256];
    assert_true(t_schema_validate_event(ev, err, sizeof err));
    json_object_set_new(data, "ip", json_null()); /* unknown client address */
    assert_true(t_schema_validate_event(ev, err, sizeof err));
    json_object_set_new(data, "ip", json_string(""));
    assert_false(t_schema_validate_event(ev, err, sizeof err));
    json_object_set_new(data, "ip", json_string("127.0.0.1"));
    json_object_set_new(data, "referred_by",
                        json_pack("{s:s, s:s}", "user_id", "1b7f3c1e-4a1b-4c2d-9e8f-0123456789ab",
                                  "referral_code", "HX4P0QZR"));
    assert_true(t_schema_validate_event(ev, err, sizeof err));
    json_object_set_new(json_object_get(data, "referred_by"), "referral_code", json_string("HX4"));
    assert_false(t_schema_validate_event(ev, err, sizeof err));
    assert_non_null(strstr(err, "$.data.referred_by.referral_code"));
    json_object_set_new(data, "referred_by", json_string("HX4P0QZR"));
    assert_false(t_schema_validate_event(ev, err, sizeof err));
    json_object_set_new(ev, "source", json_string("referral"));
    json_object_set_new(data, "referred_by", json_null());
    assert_false(t_schema_validate_event(ev, err, sizeof err)); /* wrong publisher */
    json_decref(ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(type_accepts_matching_and_rejects_other_types),
        cmocka_unit_test(type_array_accepts_any_listed_type),
        cmocka_unit_test(required_rejects_a_missing_member),
        cmocka_unit_test(properties_validate_members_recursively),
        cmocka_unit_test(additional_properties_false_rejects_unknown_members),
        cmocka_unit_test(enum_and_const_compare_whole_values),
        cmocka_unit_test(lengths_count_characters_not_bytes),
        cmocka_unit_test(minimum_and_maximum_bound_numbers),
        cmocka_unit_test(uuid_format_is_checked),
        cmocka_unit_test(date_time_format_follows_rfc3339),
        cmocka_unit_test(patterns_are_posix_extended_expressions),
        cmocka_unit_test(unknown_keywords_and_formats_fail_instead_of_passing_silently),
        cmocka_unit_test(every_event_schema_loads_and_declares_its_type),
        cmocka_unit_test(reward_schema_accepts_a_grant_and_rejects_each_violation),
        cmocka_unit_test(user_registered_schema_takes_a_referrer_object_or_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
