/*
 * Tests for common/src/service.c: the one start-up path. A service made of
 * counters runs through cm_service_main with a real HTTP server on
 * loopback; SIGTERM is sent to the thread that waits for it.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "capture.h"
#include "cm/service.h"
#include "http_client.h"
#include "testenv.h"

/* The service under test: it records which callbacks ran, in order. */
typedef struct fake {
    cm_service_config_t svc;
    int fail_load;  /* load returns CM_EINVAL */
    int fail_start; /* start returns CM_EIO */
    char trace[64]; /* one letter per callback: l(oad) s(tart) t(stop) d(ispose) */
    bool metrics_seen;
} fake_t;

static void trace(fake_t *f, char c)
{
    size_t n = strlen(f->trace);
    if (n + 1 < sizeof f->trace)
        f->trace[n] = c;
}

static int fake_load(void *arg, const cm_service_config_t **svc)
{
    fake_t *f = arg;
    trace(f, 'l');
    if (f->fail_load)
        return CM_EINVAL;
    char admin[16];
    snprintf(admin, sizeof admin, "%d", t_free_port());
    setenv("ADMIN_PORT", admin, 1);
    cm_service_defaults_t d = {.port = t_free_port(), .http_threads = 2};
    cm_cfg_t c;
    cm_cfg_init(&c, "fake");
    cm_cfg_service(&c, &d, &f->svc);
    *svc = &f->svc;
    return cm_cfg_finish(&c);
}

static void on_hello(cm_req_t *rq, void *ctx)
{
    (void)ctx;
    cm_reply_json(rq, 200, json_pack("{s:s}", "hello", "world"));
}

static const cm_route_t ROUTES[] = {{"GET", "/hello", on_hello, 0}};

static int fake_start(void *arg, const cm_service_env_t *env, cm_http_config_t *http)
{
    fake_t *f = arg;
    trace(f, 's');
    f->metrics_seen = env->metrics != NULL && env->pool == NULL && env->cfg == &f->svc;
    if (f->fail_start)
        return CM_EIO;
    http->routes = ROUTES;
    http->nroutes = 1;
    http->ctx = f;
    return 0;
}

static void fake_stop(void *arg)
{
    trace(arg, 't');
}

static void fake_dispose(void *arg)
{
    fake_t *f = arg;
    trace(f, 'd');
    cm_service_config_dispose(&f->svc);
}

static const cm_service_def_t DEF = {.name = "fake",
                                     .load = fake_load,
                                     .start = fake_start,
                                     .stop = fake_stop,
                                     .dispose = fake_dispose};

/* Asks the thread in cm_service_main to stop once /hello answers. */
typedef struct stopper {
    fake_t *f;
    int hello_status;
    /* What the two listeners answered once /hello did. */
    long public_readyz, public_metrics, admin_readyz, admin_hello, admin_version;
    bool in_flight_exported;
} stopper_t;

static long status_at(int port, const char *path, char **body)
{
    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    t_resp_t r = {0};
    long st = t_get(url, NULL, &r) == 0 ? r.status : 0;
    if (body)
        *body = cm_xstrdup(r.body ? r.body : "");
    t_resp_dispose(&r);
    return st;
}

static void probe_listeners(stopper_t *s)
{
    const cm_service_config_t *c = &s->f->svc;
    s->public_readyz = status_at(c->port, "/readyz", NULL);
    s->public_metrics = status_at(c->port, "/metrics", NULL);
    s->admin_readyz = status_at(c->admin_port, "/readyz", NULL);
    s->admin_hello = status_at(c->admin_port, "/hello", NULL);
    s->admin_version = status_at(c->admin_port, "/version", NULL);
    char *metrics = NULL;
    if (status_at(c->admin_port, "/metrics", &metrics) == 200)
        s->in_flight_exported = strstr(metrics, "\nlinktr_http_requests_in_flight ") != NULL;
    free(metrics);
}

static void *stop_when_serving(void *arg)
{
    stopper_t *s = arg;
    for (int i = 0; i < 200 && s->hello_status != 200; i++) {
        if (s->f->svc.port) {
            char url[64];
            snprintf(url, sizeof url, "http://127.0.0.1:%d/hello", s->f->svc.port);
            t_resp_t r = {0};
            if (t_get(url, NULL, &r) == 0)
                s->hello_status = (int)r.status;
            t_resp_dispose(&r);
        }
        if (s->hello_status != 200)
            t_sleep_ms(20);
    }
    if (s->hello_status == 200)
        probe_listeners(s);
    /* To the process, as an operator's SIGTERM comes: every thread blocks it,
     * so only cm_service_main's sigwait takes it. */
    kill(getpid(), SIGTERM);
    return NULL;
}

static void serves_until_sigterm_then_stops_in_order(void **state)
{
    (void)state;
    fake_t f = {0};
    stopper_t s = {.f = &f};
    /* Blocked before the stopper thread starts, so it inherits the mask too. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, stop_when_serving, &s), 0);
    char *argv[] = {"linktr-fake", NULL};
    int rc = cm_service_main(&DEF, &f, 1, argv);
    pthread_join(t, NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(s.hello_status, 200);
    assert_int_equal(s.public_readyz, 404);
    assert_int_equal(s.public_metrics, 404);
    assert_int_equal(s.admin_readyz, 200);
    assert_int_equal(s.admin_hello, 404);
    assert_int_equal(s.admin_version, 200);
    assert_true(s.in_flight_exported);
    assert_true(f.metrics_seen);
    assert_string_equal(f.trace, "lstd");
}

static void bad_configuration_exits_2_and_is_disposed(void **state)
{
    (void)state;
    fake_t f = {.fail_load = 1};
    char *argv[] = {"linktr-fake", NULL};
    assert_int_equal(cm_service_main(&DEF, &f, 1, argv), 2);
    assert_string_equal(f.trace, "ld");
}

static void a_failed_start_exits_1_and_stops_what_started(void **state)
{
    (void)state;
    fake_t f = {.fail_start = 1};
    char *argv[] = {"linktr-fake", NULL};
    assert_int_equal(cm_service_main(&DEF, &f, 1, argv), 1);
    assert_string_equal(f.trace, "lstd");
}

typedef struct run_args {
    int argc;
    char **argv;
    fake_t *f;
    int rc;
} run_args_t;

static void run_main(void *arg)
{
    run_args_t *a = arg;
    a->rc = cm_service_main(&DEF, a->f, a->argc, a->argv);
}

static void version_and_usage_need_no_configuration(void **state)
{
    (void)state;
    fake_t f = {0};
    char *version[] = {"linktr-fake", "--version", NULL};
    run_args_t a = {2, version, &f, -1};
    char *out = t_capture(STDOUT_FILENO, run_main, &a);
    assert_int_equal(a.rc, 0);
    assert_non_null(strstr(out, "linktr-fake "));
    free(out);
    /* No migrations: "migrate" is not a command of this service. */
    char *migrate[] = {"linktr-fake", "migrate", NULL};
    a = (run_args_t){2, migrate, &f, -1};
    out = t_capture(STDERR_FILENO, run_main, &a);
    assert_int_equal(a.rc, 2);
    assert_non_null(strstr(out, "usage: linktr-fake [--version]"));
    free(out);
    assert_string_equal(f.trace, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(serves_until_sigterm_then_stops_in_order),
        cmocka_unit_test(bad_configuration_exits_2_and_is_disposed),
        cmocka_unit_test(a_failed_start_exits_1_and_stops_what_started),
        cmocka_unit_test(version_and_usage_need_no_configuration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
