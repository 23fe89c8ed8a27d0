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

static const char *const SHARED_VARS[] = {"PORT",
                                          "ADMIN_PORT",
                                          "BIND_ADDRESS",
                                          "LOG_LEVEL",
                                          "HTTP_THREADS",
                                          "DATABASE_URL",
                                          "DB_POOL_SIZE",
                                          "KAFKA_BOOTSTRAP",
                                          "KAFKA_FETCH_WAIT_MS",
                                          "PUBLIC_BASE_URL",
                                          NULL};

static void unset_shared(void)
{
    for (int i = 0; SHARED_VARS[i]; i++)
        unsetenv(SHARED_VARS[i]);
}

static void the_shared_variables_take_the_service_defaults(void **state)
{
    (void)state;
    unset_shared();
    setenv("DATABASE_URL", "postgresql://svc@127.0.0.1/linktr", 1);
    setenv("KAFKA_BOOTSTRAP", "127.0.0.1:9092", 1);
    cm_service_defaults_t d = {.port = 8123, .http_threads = 7, .db_pool_size = 5, .kafka = true};
    cm_service_config_t s;
    cm_cfg_t c;
    cm_cfg_init(&c, "test");
    cm_cfg_service(&c, &d, &s);
    assert_int_equal(cm_cfg_finish(&c), 0);
    assert_int_equal(s.port, 8123);
    assert_int_equal(s.admin_port, 9123);
    assert_string_equal(s.bind, "127.0.0.1");
    assert_int_equal(s.log_level, CM_LOG_INFO);
    assert_int_equal(s.http_threads, 7);
    assert_int_equal(s.db_pool_size, 5);
    assert_string_equal(s.database_url, "postgresql://svc@127.0.0.1/linktr");
    assert_string_equal(s.kafka_bootstrap, "127.0.0.1:9092");
    assert_int_equal(s.kafka_fetch_wait_ms, 500); /* librdkafka's: right for Apache Kafka */
    assert_string_equal(s.public_base_url, "http://127.0.0.1:8000");
    cm_service_config_dispose(&s);
    assert_null(s.bind);
    setenv("KAFKA_FETCH_WAIT_MS", "25", 1); /* what the stack sets for its mock broker */
    cm_cfg_init(&c, "test");
    cm_cfg_service(&c, &d, &s);
    assert_int_equal(cm_cfg_finish(&c), 0);
    assert_int_equal(s.kafka_fetch_wait_ms, 25);
    cm_service_config_dispose(&s);
    unset_shared();
}

static void a_service_without_database_or_kafka_reads_neither(void **state)
{
    (void)state;
    unset_shared();
    setenv("DATABASE_URL", "mysql://not-read", 1);
    setenv("PUBLIC_BASE_URL", "https://linktr.example///", 1);
    cm_service_defaults_t d = {.port = 8000, .http_threads = 32};
    cm_service_config_t s;
    cm_cfg_t c;
    cm_cfg_init(&c, "test");
    cm_cfg_service(&c, &d, &s);
    assert_int_equal(cm_cfg_finish(&c), 0);
    assert_null(s.database_url);
    assert_null(s.kafka_bootstrap);
    assert_string_equal(s.public_base_url, "https://linktr.example");
    cm_service_config_dispose(&s);
    unset_shared();
}

static void the_admin_port_must_differ_from_port_and_is_needed_above_64535(void **state)
{
    (void)state;
    unset_shared();
    setenv("PORT", "8001", 1);
    setenv("ADMIN_PORT", "8001", 1);
    cm_service_defaults_t d = {.port = 8001, .http_threads = 4};
    cm_service_config_t s;
    cm_cfg_t c;
    cm_cfg_init(&c, "test");
    cm_cfg_service(&c, &d, &s);
    int rc = 0;
    char *out = finish_and_capture(&c, &rc);
    assert_int_equal(rc, CM_EINVAL);
    assert_non_null(strstr(out, "ADMIN_PORT: must differ from PORT"));
    free(out);
    cm_service_config_dispose(&s);

    setenv("PORT", "65000", 1);
    unsetenv("ADMIN_PORT");
    cm_cfg_init(&c, "test");
    cm_cfg_service(&c, &d, &s);
    out = finish_and_capture(&c, &rc);
    assert_int_equal(rc, CM_EINVAL);
    assert_non_null(strstr(out, "ADMIN_PORT: must be set"));
    free(out);
    cm_service_config_dispose(&s);

    setenv("ADMIN_PORT", "9999", 1);
    cm_cfg_init(&c, "test");
    cm_cfg_service(&c, &d, &s);
    assert_int_equal(cm_cfg_finish(&c), 0);
    assert_int_equal(s.port, 65000);
    assert_int_equal(s.admin_port, 9999);
    cm_service_config_dispose(&s);
    unset_shared();
}

static void every_bad_shared_variable_is_named_once(void **state)
{
    (void)state;
    unset_shared();
    setenv("PORT", "0", 1);
    setenv("LOG_LEVEL", "loud", 1);
    setenv("HTTP_THREADS", "many", 1);
    setenv("DATABASE_URL", "mysql://u:secret@h/db", 1);
    setenv("DB_POOL_SIZE", "1000", 1);
    setenv("PUBLIC_BASE_URL", "ftp://x", 1);
    setenv("KAFKA_FETCH_WAIT_MS", "0", 1);
    cm_service_defaults_t d = {.port = 8001, .http_threads = 4, .db_pool_size = 4, .kafka = true};
    cm_service_config_t s;
    cm_cfg_t c;
    cm_cfg_init(&c, "test");
    cm_cfg_service(&c, &d, &s);
    int rc = 0;
    char *out = finish_and_capture(&c, &rc);
    assert_int_equal(rc, CM_EINVAL);
    const char *named[] = {"PORT:",
                           "LOG_LEVEL:",
                           "HTTP_THREADS:",
                           "DATABASE_URL:",
                           "DB_POOL_SIZE:",
                           "KAFKA_BOOTSTRAP:",
                           "KAFKA_FETCH_WAIT_MS:",
                           "PUBLIC_BASE_URL:",
                           NULL};
    for (int i = 0; named[i]; i++) {
        const char *at = strstr(out, named[i]);
        assert_non_null(at);
        assert_null(strstr(at + 1, named[i])); /* one message per variable */
    }
    assert_null(strstr(out, "secret")); /* a URL's password is never echoed */
    free(out);
    cm_service_config_dispose(&s);
    unset_shared();
}

static void the_jwt_keys_are_required_only_where_asked(void **state)
{
    (void)state;
    unsetenv("JWT_PUBLIC_KEYS");
    unsetenv("JWT_ISSUER");
    setenv("JWT_AUDIENCE", "aud", 1);
    cm_jwt_config_t j;
    cm_cfg_t c;
    cm_cfg_init(&c, "test");
    cm_cfg_jwt(&c, false, &j);
    assert_int_equal(cm_cfg_finish(&c), 0);
    assert_null(j.public_keys);
    assert_string_equal(j.issuer, "linktr");
    assert_string_equal(j.audience, "aud");
    cm_jwt_config_dispose(&j);
    cm_cfg_init(&c, "test");
    cm_cfg_jwt(&c, true, &j);
    int rc = 0;
    char *out = finish_and_capture(&c, &rc);
    assert_int_equal(rc, CM_EINVAL);
    assert_non_null(strstr(out, "JWT_PUBLIC_KEYS:"));
    free(out);
    cm_jwt_config_dispose(&j);
    unsetenv("JWT_AUDIENCE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unset_variables_take_their_defaults),
        cmocka_unit_test(valid_values_are_parsed),
        cmocka_unit_test(every_bad_variable_is_named_in_one_report),
        cmocka_unit_test(a_bad_choice_lists_the_allowed_words),
        cmocka_unit_test(more_errors_than_the_table_holds_are_counted_not_lost),
        cmocka_unit_test(the_shared_variables_take_the_service_defaults),
        cmocka_unit_test(a_service_without_database_or_kafka_reads_neither),
        cmocka_unit_test(the_admin_port_must_differ_from_port_and_is_needed_above_64535),
        cmocka_unit_test(every_bad_shared_variable_is_named_once),
        cmocka_unit_test(the_jwt_keys_are_required_only_where_asked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
