/* service.c — the one start-up path (see cm/service.h). */
#include "cm/service.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cm/crypto.h"
#include "cm/log.h"
#include "cm/process.h"

#ifndef LINKTR_VERSION
#define LINKTR_VERSION "unknown"
#endif

/* Everything common the skeleton started, so it stops it in reverse order. */
typedef struct running {
    const char *name; /* the service's (def->name) */
    const cm_service_config_t *cfg;
    cm_db_pool_t *pool;
    cm_metrics_t *metrics;
    cm_sweep_t *retention; /* deletes expired, used and sent rows on a timer */
    cm_http_t *http;       /* the public listener: the service's routes and /healthz */
    cm_http_t *admin;      /* the admin listener: /healthz /readyz /metrics /version */
    cm_ready_fn ready;     /* the service's readiness (def->start's), for linktr_ready */
    void *ready_ctx;
    int drain_ms; /* how long stop waits for in-flight requests */
} running_t;

typedef enum mode { MODE_SERVE, MODE_MIGRATE, MODE_VERSION, MODE_USAGE } run_mode_t;

static run_mode_t parse_args(const cm_service_def_t *def, int argc, char **argv)
{
    if (argc == 1)
        return MODE_SERVE;
    if (argc == 2 && strcmp(argv[1], "--version") == 0)
        return MODE_VERSION;
    if (argc == 2 && strcmp(argv[1], "migrate") == 0 && def->db)
        return MODE_MIGRATE;
    return MODE_USAGE;
}

/* Blocked before any thread starts, so every thread inherits the mask and only sigwait sees them.
 */
static void block_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Before the configuration: loading it may already verify keys. */
static int init_libraries(const cm_service_def_t *def)
{
    int rc = cm_crypto_init();
    if (rc != 0)
        fprintf(stderr, "linktr-%s: libsodium failed to initialise\n", def->name);
    return rc;
}

/* GET /version on the admin listener: which build this is. */
static void on_version(cm_req_t *rq, void *ctx)
{
    const running_t *run = ctx;
    cm_reply_json(rq, 200, json_pack("{s:s,s:s}", "service", run->name, "version", LINKTR_VERSION));
}

static const cm_route_t admin_routes[] = {
    {"GET", "/version", on_version, CM_ROUTE_NO_STORE | CM_ROUTE_QUIET},
};

/* 1 when /readyz would answer 200 now: alerts see readiness flapping without the kubelet. */
static double ready_now(void *ctx)
{
    const running_t *run = ctx;
    if (!run->ready)
        return 1;
    cm_buf_t why;
    cm_buf_init(&why);
    bool ok = run->ready(run->ready_ctx, &why);
    cm_buf_dispose(&why);
    return ok ? 1 : 0;
}

static double http_in_flight(void *ctx)
{
    const running_t *run = ctx;
    return cm_http_in_flight(run->http);
}

/*
 * The admin listener: the built-ins (readiness from the service's ready
 * callback) and /version, no service route. Probes and Prometheus use it;
 * no public route reaches it.
 */
static int start_admin(const cm_service_def_t *def, running_t *run, const cm_http_config_t *pub)
{
    cm_http_config_t ac = {.service = def->name,
                           .bind = run->cfg->bind,
                           .port = run->cfg->admin_port,
                           /* Probes and scrapes only: a few workers, and idle connections
                            * released within a second so a scraper cannot hold them. */
                           .threads = 4,
                           .request_timeout_ms = run->cfg->request_timeout_ms,
                           .keepalive_timeout_ms = 1000,
                           .routes = admin_routes,
                           .nroutes = sizeof admin_routes / sizeof admin_routes[0],
                           .ctx = run,
                           .ready = pub->ready,
                           .ready_ctx = pub->ready_ctx,
                           .metrics = run->metrics};
    int rc = 0;
    run->admin = cm_http_start(&ac, &rc);
    if (!run->admin) {
        CM_ERROR(NULL, "cannot serve the admin port on %s:%d: %s", ac.bind, ac.port,
                 cm_strerror(rc));
        return rc ? rc : CM_EIO;
    }
    CM_INFO(NULL, "%s admin (health, readiness, metrics, version) on %s:%d", def->name, ac.bind,
            ac.port);
    return 0;
}

static int start_http(const cm_service_def_t *def, running_t *run, cm_http_config_t *hc)
{
    hc->service = def->name;
    hc->bind = run->cfg->bind;
    hc->port = run->cfg->port;
    hc->threads = run->cfg->http_threads;
    hc->request_timeout_ms = run->cfg->request_timeout_ms;
    hc->keepalive_timeout_ms = run->cfg->keepalive_timeout_ms;
    hc->health_only = true;
    hc->metrics = run->metrics;
    run->drain_ms = hc->drain_ms > 0 ? hc->drain_ms : CM_HTTP_DRAIN_MS;
    run->ready = hc->ready;
    run->ready_ctx = hc->ready_ctx;
    cm_metrics_gauge_fn(run->metrics, "linktr_ready",
                        "1 when the service is ready (what /readyz answers), at scrape time.",
                        ready_now, run);
    int rc = start_admin(def, run, hc);
    if (rc != 0)
        return rc;
    run->http = cm_http_start(hc, &rc);
    if (!run->http) {
        CM_ERROR(NULL, "cannot serve on %s:%d: %s", hc->bind, hc->port, cm_strerror(rc));
        return rc ? rc : CM_EIO;
    }
    CM_INFO(NULL, "%s listening on %s:%d", def->name, hc->bind, hc->port);
    return 0;
}

/* Start-up after the configuration: libraries, database, the service, HTTP. */
static int start(const cm_service_def_t *def, void *app, running_t *run, run_mode_t mode)
{
    int rc = def->db ? def->db->open(def, run->cfg, &run->pool) : 0;
    if (rc != 0 || mode == MODE_MIGRATE)
        return rc;
    run->metrics = cm_metrics_new();
    cm_process_metrics_register(run->metrics, def->name, LINKTR_VERSION);
    cm_metrics_gauge_fn(run->metrics, "linktr_http_requests_in_flight",
                        "Requests on the public port being answered right now.", http_in_flight,
                        run);
    cm_service_env_t env = {.cfg = run->cfg, .pool = run->pool, .metrics = run->metrics};
    cm_http_config_t hc = {0};
    rc = def->start(app, &env, &hc);
    if (rc == 0 && def->db)
        rc = def->db->start(def, run->cfg, run->pool, run->metrics, &run->retention);
    if (rc != 0) {
        CM_ERROR(NULL, "%s failed to start: %s", def->name, cm_strerror(rc));
        return rc;
    }
    return start_http(def, run, &hc);
}

/* No new requests, then the service's own parts, then what they used. */
static void stop(const cm_service_def_t *def, void *app, running_t *run, bool started)
{
    cm_http_drain(run->admin, 0); /* /readyz answers 503 from now on */
    if (run->http && !cm_http_drain(run->http, run->drain_ms))
        CM_WARN(NULL, "stopping with requests still in flight");
    /* The admin listener first: its /metrics reads the public server. */
    cm_http_stop(run->admin);
    run->admin = NULL;
    cm_http_stop(run->http);
    run->http = NULL;
    if (def->db)
        def->db->stop(run->retention);
    if (started)
        def->stop(app);
    if (def->db)
        def->db->close(run->pool);
    cm_metrics_free(run->metrics);
}

int cm_service_main(const cm_service_def_t *def, void *app, int argc, char **argv)
{
    run_mode_t mode = parse_args(def, argc, argv);
    if (mode == MODE_VERSION) {
        printf("linktr-%s %s\n", def->name, LINKTR_VERSION);
        return 0;
    }
    if (mode == MODE_USAGE) {
        fprintf(stderr, "usage: linktr-%s [%s--version]\n", def->name, def->db ? "migrate | " : "");
        return 2;
    }
    sigset_t stop_signals;
    block_signals(&stop_signals);
    running_t run = {.name = def->name};
    int rc = init_libraries(def);
    if (rc == 0 && def->load(app, &run.cfg) != 0) {
        def->dispose(app);
        return 2;
    }
    if (rc == 0) {
        cm_log_init(def->name, run.cfg->log_level);
        rc = start(def, app, &run, mode);
    }
    if (rc == 0 && mode == MODE_SERVE) {
        int sig = 0;
        sigwait(&stop_signals, &sig);
        CM_INFO(NULL, "signal %d: %s stopping", sig, def->name);
    }
    stop(def, app, &run, run.metrics != NULL);
    def->dispose(app);
    return rc == 0 ? 0 : 1;
}
