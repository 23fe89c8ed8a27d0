/*
 * linktr-auth — users, credentials and tokens (DESIGN.md).
 *
 *     linktr-auth            serve until SIGINT/SIGTERM
 *     linktr-auth migrate    apply the embedded migrations and exit
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cm/crypto.h"
#include "cm/db.h"
#include "cm/http.h"
#include "cm/kafka.h"
#include "cm/log.h"
#include "cm/metrics.h"
#include "config.h"
#include "keys.h"
#include "routes.h"

extern const cm_migration_t auth_migrations[];
extern const size_t auth_migrations_count;

/* Everything main starts, so it can stop it in order. */
typedef struct running {
    cm_metrics_t *metrics;
    cm_outbox_relay_t *relay;
    cm_http_t *http;
} running_t;

static double hash_depth(void *ctx)
{
    const auth_app_t *app = ctx;
    return (double)cm_hashpool_depth(app->hash);
}

static int open_db(auth_app_t *app)
{
    cm_db_config_t dc = {.conninfo = app->cfg->database_url,
                         .size = app->cfg->db_pool_size,
                         .acquire_timeout_ms = 2000,
                         .connect_timeout_s = 3,
                         .statement_timeout_ms = 10000};
    int rc = 0;
    app->db = cm_db_pool_new(&dc, &rc);
    if (!app->db)
        return rc ? rc : CM_EINVAL;
    rc = cm_db_migrate(app->db, auth_migrations, auth_migrations_count);
    if (rc != 0)
        CM_ERROR(NULL, "migrations failed: %s", cm_strerror(rc));
    return rc;
}

static int start_workers(auth_app_t *app, running_t *run)
{
    const auth_config_t *cfg = app->cfg;
    cm_hashpool_config_t hc = {.workers = cfg->hash_workers,
                               .queue_cap = cfg->hash_queue,
                               .opslimit = cfg->argon2_opslimit,
                               .memlimit = cfg->argon2_memlimit};
    int rc = 0;
    if (!(app->hash = cm_hashpool_new(&hc, &rc)))
        return rc ? rc : CM_EINVAL;
    if (!(app->producer = cm_producer_new(cfg->kafka_bootstrap, "linktr-auth", &rc)))
        return rc ? rc : CM_EINVAL;
    run->metrics = cm_metrics_new();
    cm_metrics_gauge_fn(run->metrics, "linktr_hashpool_queue_depth",
                        "Password hashing jobs waiting", hash_depth, app);
    auth_metrics_register(app, run->metrics);
    cm_outbox_config_t oc = {.conninfo = cfg->database_url,
                             .channel = "auth_outbox",
                             .pool = app->db,
                             .producer = app->producer,
                             .batch = 100,
                             .metrics = run->metrics};
    if (!(run->relay = cm_outbox_relay_start(&oc, &rc)))
        return rc ? rc : CM_EINVAL;
    return 0;
}

static int start_http(auth_app_t *app, running_t *run)
{
    cm_http_config_t hc = {.service = "auth",
                           .bind = app->cfg->bind,
                           .port = app->cfg->port,
                           .threads = app->cfg->http_threads,
                           .max_body = CM_MAX_BODY,
                           .request_timeout_ms = app->cfg->request_timeout_ms,
                           .keepalive_timeout_ms = app->cfg->keepalive_timeout_ms,
                           .routes = auth_routes,
                           .nroutes = auth_nroutes,
                           .ctx = app,
                           .ready = auth_ready,
                           .ready_ctx = app,
                           .metrics = run->metrics};
    int rc = 0;
    run->http = cm_http_start(&hc, &rc);
    if (!run->http)
        CM_ERROR(NULL, "cannot serve on %s:%d: %s", app->cfg->bind, app->cfg->port,
                 cm_strerror(rc));
    return run->http ? 0 : (rc ? rc : CM_EIO);
}

/* Stops in the order that loses nothing: no new requests, then no new events. */
static void stop_all(auth_app_t *app, running_t *run)
{
    cm_http_stop(run->http);
    cm_outbox_relay_stop(run->relay);
    cm_producer_free(app->producer);
    cm_hashpool_free(app->hash);
    cm_db_pool_free(app->db);
    auth_keys_dispose(app);
    cm_metrics_free(run->metrics);
}

static int serve(auth_app_t *app, const sigset_t *stop)
{
    running_t run = {0};
    int rc = start_workers(app, &run);
    if (rc == 0)
        rc = start_http(app, &run);
    if (rc == 0) {
        CM_INFO(NULL, "auth listening on %s:%d", app->cfg->bind, app->cfg->port);
        int sig = 0;
        sigwait(stop, &sig);
        CM_INFO(NULL, "signal %d: stopping", sig);
    }
    stop_all(app, &run);
    return rc;
}

int main(int argc, char **argv)
{
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL); /* every thread inherits it; sigwait takes them */
    signal(SIGPIPE, SIG_IGN);
    bool migrate_only = argc == 2 && strcmp(argv[1], "migrate") == 0;
    if (argc > 1 && !migrate_only) {
        fprintf(stderr, "usage: linktr-auth [migrate]\n");
        return 2;
    }
    auth_config_t cfg;
    if (auth_config_load(&cfg) != 0)
        return 2;
    cm_log_init("auth", cfg.log_level);
    auth_app_t app = {.cfg = &cfg};
    int rc = cm_crypto_init();
    if (rc == 0)
        rc = auth_keys_load(&app);
    if (rc == 0)
        rc = open_db(&app);
    if (rc == 0 && !migrate_only)
        rc = serve(&app, &stop);
    else {
        cm_db_pool_free(app.db);
        auth_keys_dispose(&app);
    }
    auth_config_dispose(&cfg);
    return rc == 0 ? 0 : 1;
}
