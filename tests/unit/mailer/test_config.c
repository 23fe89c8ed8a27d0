/* Tests for services/mailer/config.c: defaults, the seal key, every bad variable named. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "config.h"
#include "capture.h"

struct load {
    mail_config_t *cfg;
    int rc;
};

static void load(void *arg)
{
    struct load *l = arg;
    l->rc = mail_config_load(l->cfg);
}

/* Runs mail_config_load with stderr captured; returns what it printed (caller frees). */
static char *load_capturing(mail_config_t *cfg, int *rc)
{
    struct load l = {cfg, -1};
    char *out = t_capture(STDERR_FILENO, load, &l);
    *rc = l.rc;
    return out;
}

static void clear_env(void)
{
    const char *vars[] = {
        "PORT",      "DATABASE_URL",      "KAFKA_BOOTSTRAP", "MAILER_SEAL_SECRET_KEY_FILE",
        "MAIL_DIR",  "SMTP_URL",          "MAIL_FROM",       "MAIL_MAX_ATTEMPTS",
        "LOG_LEVEL", "MAIL_TEMPLATES_DIR"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
}

/* Writes text to a fresh file made from the mkstemp template path. */
static void write_file(char *path, const char *text)
{
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void a_good_key_file_gives_the_key_pair_and_defaults_apply(void **state)
{
    (void)state;
    assert_true(sodium_init() >= 0);
    uint8_t pk[32], sk[32];
    crypto_box_keypair(pk, sk);
    char b64[64];
    sodium_bin2base64(b64, sizeof b64, sk, 32, sodium_base64_VARIANT_ORIGINAL);
    char line[80];
    snprintf(line, sizeof line, "%s\n", b64);
    char path[] = "/tmp/linktr-seal-XXXXXX";
    write_file(path, line);
    clear_env();
    setenv("DATABASE_URL", "postgresql://mailer@127.0.0.1/linktr", 1);
    setenv("KAFKA_BOOTSTRAP", "127.0.0.1:9092", 1);
    setenv("MAILER_SEAL_SECRET_KEY_FILE", path, 1);
    mail_config_t cfg;
    int rc = 0;
    char *err = load_capturing(&cfg, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(err, "");
    assert_memory_equal(cfg.seal_sk, sk, 32);
    assert_memory_equal(cfg.seal_pk, pk, 32);
    assert_int_equal(cfg.svc.port, 8003);
    assert_string_equal(cfg.mail_dir, ".run/mail");
    assert_null(cfg.smtp_url);
    assert_non_null(cfg.templates); /* the built-ins */
    assert_string_equal(mail_templates_get(cfg.templates, "verify_email.txt"),
                        mail_template_get("verify_email.txt"));
    assert_string_equal(cfg.mail_from, "linktr <no-reply@linktr.local>");
    assert_string_equal(cfg.svc.public_base_url, "http://127.0.0.1:8000");
    mail_config_dispose(&cfg);
    free(err);
    unlink(path);
}

static void every_bad_variable_is_named_and_secrets_are_not_echoed(void **state)
{
    (void)state;
    char path[] = "/tmp/linktr-seal-XXXXXX";
    write_file(path, "c2hvcnQ=\n"); /* "short": not 32 bytes */
    clear_env();
    setenv("PORT", "70000", 1);
    setenv("MAILER_SEAL_SECRET_KEY_FILE", path, 1);
    setenv("SMTP_URL", "http://user:hunter2@mail.example", 1);
    setenv("MAIL_MAX_ATTEMPTS", "0", 1);
    setenv("MAIL_TEMPLATES_DIR", "/nonexistent/linktr-templates", 1);
    mail_config_t cfg;
    int rc = 0;
    char *err = load_capturing(&cfg, &rc);
    assert_int_equal(rc, CM_EINVAL);
    const char *named[] = {"PORT",
                           "DATABASE_URL",
                           "KAFKA_BOOTSTRAP",
                           "MAILER_SEAL_SECRET_KEY_FILE",
                           "SMTP_URL",
                           "MAIL_MAX_ATTEMPTS",
                           "MAIL_TEMPLATES_DIR: /nonexistent/linktr-templates"};
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        assert_non_null(strstr(err, named[i]));
    assert_null(strstr(err, "hunter2"));
    assert_null(strstr(err, "c2hvcnQ"));
    free(err);
    unsetenv("MAILER_SEAL_SECRET_KEY_FILE");
    err = load_capturing(&cfg, &rc);
    assert_int_equal(rc, CM_EINVAL);
    assert_non_null(strstr(err, "MAILER_SEAL_SECRET_KEY_FILE"));
    free(err);
    unlink(path);
    clear_env();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_good_key_file_gives_the_key_pair_and_defaults_apply),
        cmocka_unit_test(every_bad_variable_is_named_and_secrets_are_not_echoed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
