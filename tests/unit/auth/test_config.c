/* Tests for services/auth/config.c: defaults, required variables, each bad one named. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cm/crypto.h"
#include "config.h"
#include "capture.h"

/* 32 zero bytes in standard base64. */
#define SEAL_KEY "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

static const char *const all_vars[] = {"PORT",
                                       "BIND_ADDRESS",
                                       "DATABASE_URL",
                                       "KAFKA_BOOTSTRAP",
                                       "PUBLIC_BASE_URL",
                                       "JWT_PRIVATE_KEY_FILE",
                                       "JWT_KEY_ID",
                                       "JWT_ISSUER",
                                       "JWT_AUDIENCE",
                                       "JWT_PUBLIC_KEYS",
                                       "ACCESS_TTL_S",
                                       "REFRESH_TTL_DAYS",
                                       "REFRESH_GRACE_S",
                                       "MAILER_SEAL_PUBLIC_KEY",
                                       "ARGON2_OPSLIMIT",
                                       "ARGON2_MEMLIMIT_KIB",
                                       "HASH_WORKERS",
                                       "HASH_QUEUE",
                                       "HTTP_THREADS",
                                       "DB_POOL_SIZE",
                                       "LOG_LEVEL",
                                       "GATEWAY_ADDRESSES",
                                       NULL};

static int clean_env(void **state)
{
    (void)state;
    for (size_t i = 0; all_vars[i]; i++)
        unsetenv(all_vars[i]);
    setenv("DATABASE_URL", "postgresql://auth:auth@127.0.0.1:5432/linktr", 1);
    setenv("KAFKA_BOOTSTRAP", "127.0.0.1:9092", 1);
    setenv("JWT_PRIVATE_KEY_FILE", "/dev/null", 1);
    setenv("MAILER_SEAL_PUBLIC_KEY", SEAL_KEY, 1);
    return 0;
}

struct load {
    auth_config_t *cfg;
    int rc;
};

static void load(void *arg)
{
    struct load *l = arg;
    l->rc = auth_config_load(l->cfg);
}

/* Loads the config with stderr captured; returns what was printed (caller frees). */
static char *load_capture(auth_config_t *cfg, int *rc)
{
    struct load l = {cfg, -1};
    char *out = t_capture(STDERR_FILENO, load, &l);
    *rc = l.rc;
    return out;
}

static void unset_variables_take_the_documented_defaults(void **state)
{
    (void)state;
    auth_config_t cfg;
    int rc = -1;
    char *err = load_capture(&cfg, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg.svc.port, 8001);
    assert_string_equal(cfg.svc.bind, "127.0.0.1");
    assert_string_equal(cfg.svc.public_base_url, "http://127.0.0.1:8000");
    assert_string_equal(cfg.jwt_key_id, "dev-1");
    assert_string_equal(cfg.jwt.issuer, "linktr");
    assert_string_equal(cfg.jwt.audience, "linktr");
    assert_int_equal(cfg.access_ttl_s, 900);
    assert_int_equal(cfg.refresh_ttl_days, 30);
    assert_int_equal(cfg.refresh_grace_s, 10);
    assert_int_equal(cfg.argon2_opslimit, 2);
    assert_int_equal(cfg.argon2_memlimit, 19456u * 1024u);
    assert_int_equal(cfg.hash_workers, 0);
    assert_int_equal(cfg.hash_queue, 64);
    assert_int_equal(cfg.svc.http_threads, 16);
    assert_int_equal(cfg.svc.db_pool_size, 10);
    assert_int_equal(cfg.svc.log_level, CM_LOG_INFO);
    assert_null(cfg.jwt.public_keys);
    assert_int_equal(cfg.gateway_nets_count, 2); /* loopback, both families */
    assert_true(auth_nets_contain(cfg.gateway_nets, cfg.gateway_nets_count, "127.0.0.1"));
    assert_true(auth_nets_contain(cfg.gateway_nets, cfg.gateway_nets_count, "::1"));
    assert_false(auth_nets_contain(cfg.gateway_nets, cfg.gateway_nets_count, "127.0.0.2"));
    free(err);
    auth_config_dispose(&cfg);
}

static void a_trailing_slash_on_the_public_base_url_is_dropped(void **state)
{
    (void)state;
    setenv("PUBLIC_BASE_URL", "https://linktr.example/", 1);
    auth_config_t cfg;
    int rc = -1;
    char *err = load_capture(&cfg, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(cfg.svc.public_base_url, "https://linktr.example");
    free(err);
    auth_config_dispose(&cfg);
}

static void every_bad_or_missing_variable_is_named(void **state)
{
    (void)state;
    unsetenv("DATABASE_URL");
    unsetenv("KAFKA_BOOTSTRAP");
    setenv("PORT", "99999", 1);
    setenv("MAILER_SEAL_PUBLIC_KEY", "c2hvcnQ=", 1);
    setenv("HASH_QUEUE", "many", 1);
    setenv("LOG_LEVEL", "loud", 1);
    setenv("PUBLIC_BASE_URL", "ftp://x", 1);
    setenv("GATEWAY_ADDRESSES", "10.0.0.0/40", 1);
    auth_config_t cfg;
    int rc = 0;
    char *err = load_capture(&cfg, &rc);
    assert_int_equal(rc, CM_EINVAL);
    const char *named[] = {"DATABASE_URL",           "KAFKA_BOOTSTRAP",   "PORT",
                           "MAILER_SEAL_PUBLIC_KEY", "HASH_QUEUE",        "LOG_LEVEL",
                           "PUBLIC_BASE_URL",        "GATEWAY_ADDRESSES", NULL};
    for (size_t i = 0; named[i]; i++)
        if (!strstr(err, named[i]))
            fail_msg("%s not named in: %s", named[i], err);
    assert_null(strstr(err, "JWT_KEY_ID"));
    free(err);
    auth_config_dispose(&cfg); /* idempotent after a failed load */
}

int main(void)
{
    if (cm_crypto_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(unset_variables_take_the_documented_defaults, clean_env),
        cmocka_unit_test_setup(a_trailing_slash_on_the_public_base_url_is_dropped, clean_env),
        cmocka_unit_test_setup(every_bad_or_missing_variable_is_named, clean_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
