/* Tests for services/referral/config.c: defaults, and every bad variable named. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "capture.h"

struct load {
    ref_config_t *cfg;
    int rc;
};

static void load(void *arg)
{
    struct load *l = arg;
    l->rc = ref_config_load(l->cfg);
}

/* Runs ref_config_load with stderr captured; returns what it printed (caller frees). */
static char *load_capturing(ref_config_t *cfg, int *rc)
{
    struct load l = {cfg, -1};
    char *out = t_capture(STDERR_FILENO, load, &l);
    *rc = l.rc;
    return out;
}

static void clear_env(void)
{
    const char *vars[] = {"PORT",
                          "BIND_ADDRESS",
                          "DATABASE_URL",
                          "KAFKA_BOOTSTRAP",
                          "PUBLIC_BASE_URL",
                          "LOG_LEVEL",
                          "JWT_PUBLIC_KEYS",
                          "REFERRAL_TTL_DAYS",
                          "REFERRAL_DAILY_CAP",
                          "REFERRAL_RULES_FILE",
                          "REFERRAL_DISPOSABLE_DOMAINS_FILE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
}

static void the_required_variables_set_and_the_rest_default(void **state)
{
    (void)state;
    clear_env();
    setenv("DATABASE_URL", "postgresql://referral@127.0.0.1/linktr", 1);
    setenv("KAFKA_BOOTSTRAP", "127.0.0.1:9092", 1);
    setenv("JWT_PUBLIC_KEYS", "k1=/keys/k1.pem", 1);
    setenv("PUBLIC_BASE_URL", "http://example.test:8000/", 1);
    ref_config_t cfg;
    int rc = 0;
    char *err = load_capturing(&cfg, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(err, "");
    assert_int_equal(cfg.svc.port, 8002);
    assert_string_equal(cfg.svc.bind, "127.0.0.1");
    assert_string_equal(cfg.svc.public_base_url, "http://example.test:8000");
    assert_string_equal(cfg.jwt.issuer, "linktr");
    assert_string_equal(cfg.jwt.audience, "linktr");
    assert_int_equal(cfg.ttl_days, 30);
    assert_int_equal(cfg.daily_cap, 50);
    assert_int_equal(cfg.rules.referrer_credit, 10);
    assert_true(cfg.disposable.n > 0);
    ref_config_dispose(&cfg);
    free(err);
}

static void every_bad_variable_is_named(void **state)
{
    (void)state;
    clear_env();
    setenv("PORT", "http", 1);
    setenv("DATABASE_URL", "mysql://x", 1);
    setenv("REFERRAL_TTL_DAYS", "0", 1);
    setenv("LOG_LEVEL", "loud", 1);
    setenv("REFERRAL_RULES_FILE", "/nonexistent/rules.json", 1);
    ref_config_t cfg;
    int rc = 0;
    char *err = load_capturing(&cfg, &rc);
    assert_int_equal(rc, CM_EINVAL);
    const char *named[] = {"PORT",
                           "DATABASE_URL",
                           "KAFKA_BOOTSTRAP",
                           "JWT_PUBLIC_KEYS",
                           "REFERRAL_TTL_DAYS",
                           "LOG_LEVEL",
                           "REFERRAL_RULES_FILE"};
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        assert_non_null(strstr(err, named[i]));
    assert_null(strstr(err, "mysql://x")); /* URLs may carry passwords: never echoed */
    free(err);
    clear_env();
}

static void a_rules_file_replaces_the_defaults_and_a_bad_one_is_named(void **state)
{
    (void)state;
    clear_env();
    setenv("DATABASE_URL", "postgresql://referral@127.0.0.1/linktr", 1);
    setenv("KAFKA_BOOTSTRAP", "127.0.0.1:9092", 1);
    setenv("JWT_PUBLIC_KEYS", "k1=/keys/k1.pem", 1);
    char path[] = "/tmp/linktr-rules-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char good[] = "{\"referrer_credit\": 3, \"milestones\": [{\"at\": 2, \"amount\": 9}]}";
    assert_int_equal(write(fd, good, sizeof good - 1), (ssize_t)(sizeof good - 1));
    close(fd);
    setenv("REFERRAL_RULES_FILE", path, 1);
    ref_config_t cfg;
    int rc = 0;
    char *err = load_capturing(&cfg, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg.rules.referrer_credit, 3);
    assert_int_equal(cfg.rules.nmilestones, 1);
    ref_config_dispose(&cfg);
    free(err);
    FILE *f = fopen(path, "w");
    fputs("{\"referrer_credit\": -3}", f);
    fclose(f);
    err = load_capturing(&cfg, &rc);
    assert_int_equal(rc, CM_EINVAL);
    assert_non_null(strstr(err, "REFERRAL_RULES_FILE"));
    free(err);
    unlink(path);
    clear_env();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_required_variables_set_and_the_rest_default),
        cmocka_unit_test(every_bad_variable_is_named),
        cmocka_unit_test(a_rules_file_replaces_the_defaults_and_a_bad_one_is_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
