/*
 * The gateway's life cycle (services/gateway/gateway.c): built from its
 * configuration with real key files, it counts in the registry it is
 * given, builds the route table (with preflights only when CORS is on),
 * and refuses a bad key list with one configuration line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "capture.h"
#include "gateway.h"
#include "routes.h"

/* Writes a fresh P-256 public key as PEM into a temporary file; returns its path. */
static char *write_public_key(void)
{
    char *path = strdup("/tmp/linktr-test-gw-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(key);
    assert_true(PEM_write_PUBKEY(f, key));
    EVP_PKEY_free(key);
    fclose(f);
    return path;
}

static void config_with(gw_config_t *cfg, const char *keys, const char *cors)
{
    setenv("JWT_PUBLIC_KEYS", keys, 1);
    if (cors)
        setenv("CORS_ORIGINS", cors, 1);
    else
        unsetenv("CORS_ORIGINS");
    assert_int_equal(gw_config_load(cfg), 0);
}

static size_t count_method(const gw_t *gw, const char *method)
{
    size_t n = 0;
    for (size_t i = 0; i < gw->nroutes; i++)
        n += strcmp(gw->routes[i].method, method) == 0;
    return n;
}

static void the_gateway_counts_in_the_registry_it_is_given(void **state)
{
    (void)state;
    char *pem = write_public_key();
    char keys[128];
    snprintf(keys, sizeof keys, "k1=%s", pem);
    gw_config_t cfg;
    config_with(&cfg, keys, NULL);
    cm_metrics_t *m = cm_metrics_new();
    int err = -1;
    gw_t *gw = gw_new(&cfg, m, &err);
    assert_non_null(gw);
    assert_int_equal(err, 0);
    assert_ptr_equal(gw->metrics, m);
    size_t n = 0;
    gw_routes(&n);
    size_t api = 0; /* the API rows; the HTML pages (pages.h) come after them */
    for (size_t i = 0; i < gw->nroutes; i++)
        api += strncmp(gw->routes[i].path, "/api/", 5) == 0 ||
               strncmp(gw->routes[i].path, "/.well-known/", 13) == 0;
    assert_int_equal(api, n);
    assert_int_equal(gw->nroutes, n + 11); /* 7 pages + the email-change pages' GET and POST */
    assert_int_equal(count_method(gw, "OPTIONS"), 0);
    assert_non_null(gw->limiter); /* RATE_LIMITS defaults to on */
    gw_free(gw);
    cm_metrics_free(m); /* the registry outlives the gateway and is not freed by it */
    gw_config_dispose(&cfg);
    unlink(pem);
    free(pem);
}

static void cors_adds_one_preflight_route_per_path(void **state)
{
    (void)state;
    char *pem = write_public_key();
    char keys[128];
    snprintf(keys, sizeof keys, "k1=%s", pem);
    gw_config_t cfg;
    config_with(&cfg, keys, "https://app.example");
    cm_metrics_t *m = cm_metrics_new();
    int err = 0;
    gw_t *gw = gw_new(&cfg, m, &err);
    assert_non_null(gw);
    size_t n = 0;
    const gw_route_t *t = gw_routes(&n);
    size_t paths = 0;
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i; j++)
            seen = seen || strcmp(t[i].path, t[j].path) == 0;
        paths += !seen;
    }
    assert_int_equal(count_method(gw, "OPTIONS"), paths);
    gw_free(gw);
    cm_metrics_free(m);
    gw_config_dispose(&cfg);
    unsetenv("CORS_ORIGINS");
    unlink(pem);
    free(pem);
}

struct attempt {
    gw_config_t *cfg;
    cm_metrics_t *m;
    gw_t *gw;
    int err;
};

static void try_new(void *arg)
{
    struct attempt *a = arg;
    a->gw = gw_new(a->cfg, a->m, &a->err);
}

static void a_key_that_cannot_be_read_is_named_as_configuration(void **state)
{
    (void)state;
    gw_config_t cfg;
    config_with(&cfg, "gone=/nonexistent/linktr.pem", NULL);
    struct attempt a = {&cfg, cm_metrics_new(), NULL, 0};
    char *out = t_capture(STDERR_FILENO, try_new, &a);
    assert_null(a.gw);
    assert_int_not_equal(a.err, 0);
    assert_non_null(strstr(out, "linktr-gateway: config: JWT_PUBLIC_KEYS: entry \"gone\""));
    free(out);
    cm_metrics_free(a.m);
    gw_config_dispose(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_gateway_counts_in_the_registry_it_is_given),
        cmocka_unit_test(cors_adds_one_preflight_route_per_path),
        cmocka_unit_test(a_key_that_cannot_be_read_is_named_as_configuration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
