/*
 * linktr-referral — referrals, counters and their API.
 *
 *     linktr-referral            serve (consumer, outbox relay, expiry sweep, HTTP API)
 *     linktr-referral migrate    apply the migrations and exit
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cm/db.h"
#include "cm/http.h"
#include "cm/jwt.h"
#include "cm/kafka.h"
#include "cm/log.h"
#include "cm/metrics.h"
#include "config.h"
#include "consumer.h"
#include "routes.h"
#include "sweep.h"

extern const cm_migration_t referral_migrations[];
extern const size_t referral_migrations_count;

typedef struct app {
    ref_config_t cfg;
    cm_db_pool_t *pool;
    cm_metrics_t *metrics;
    cm_jwt_verifier_t *jwt;
    cm_producer_t *producer;
    cm_outbox_relay_t *relay;
    cm_consumer_t *consumer;
    ref_sweep_t *sweep;
    cm_http_t *http;
    ref_ctx_t events;
    ref_api_t api;
} app_t;

static bool ready(void *arg, cm_buf_t *why)
{
    app_t *app = arg;
    bool ok = true;
    if (!cm_db_ping(app->pool)) {
        cm_buf_puts(why, "database");
        ok = false;
    }
    /* Not connected to a broker, or not heard from one lately: events are not being handled. */
    if (!cm_consumer_healthy(app->consumer)) {
        cm_buf_puts(why, ok ? "kafka consumer" : ", kafka consumer");
        ok = false;
    }
    return ok;
}

static int open_db(app_t *app)
{
    cm_db_config_t dbc = {.conninfo = app->cfg.db_url,
                          .size = app->cfg.db_pool_size,
                          .acquire_timeout_ms = 5000,
                          .connect_timeout_s = 5,
                          .statement_timeout_ms = 10000};
    int err = 0;
    app->pool = cm_db_pool_new(&dbc, &err);
    if (!app->pool)
        return err;
    return cm_db_migrate(app->pool, referral_migrations, referral_migrations_count);
}

static int load_keys(app_t *app)
{
    app->jwt = cm_jwt_verifier_new(app->cfg.jwt_issuer, app->cfg.jwt_audience, 10000);
    if (!app->jwt)
        return CM_EINVAL;
    char bad[CM_JWT_KID_MAX + 1] = "";
    int rc = cm_jwt_verifier_load_report(app->jwt, app->cfg.jwt_public_keys, bad, sizeof bad);
    if (rc != 0)
        fprintf(stderr, "linktr-referral: config: JWT_PUBLIC_KEYS: entry \"%s\": %s\n", bad,
                cm_strerror(rc));
    return rc;
}

static int start_kafka(app_t *app)
{
    int err = 0;
    app->producer = cm_producer_new(app->cfg.kafka, "referral", &err);
    if (!app->producer)
        return err;
    cm_outbox_config_t oc = {.conninfo = app->cfg.db_url,
                             .channel = REF_OUTBOX_CHANNEL,
                             .pool = app->pool,
                             .producer = app->producer,
                             .batch = 100,
                             .metrics = app->metrics};
    app->relay = cm_outbox_relay_start(&oc, &err);
    if (!app->relay)
        return err;
    app->events = (ref_ctx_t){.cfg = &app->cfg, .pool = app->pool};
    cm_consumer_config_t cc = {.bootstrap = app->cfg.kafka,
                               .group_id = "referral",
                               .topics = ref_topics,
                               .fn = ref_consume,
                               .ctx = &app->events,
                               .metrics = app->metrics};
    app->consumer = cm_consumer_start(&cc, &err);
    if (!app->consumer)
        return err;
    app->sweep = ref_sweep_start(&app->cfg, app->pool, &err);
    return app->sweep ? 0 : err;
}

static int start(app_t *app)
{
    app->metrics = cm_metrics_new();
    int err = start_kafka(app);
    if (err != 0)
        return err;
    app->api = (ref_api_t){.cfg = &app->cfg, .pool = app->pool, .jwt = app->jwt};
    cm_http_config_t hc = {.service = "referral",
                           .bind = app->cfg.bind,
                           .port = app->cfg.port,
                           .threads = app->cfg.http_threads,
                           .request_timeout_ms = app->cfg.request_timeout_ms,
                           .keepalive_timeout_ms = app->cfg.keepalive_timeout_ms,
                           .routes = ref_routes,
                           .nroutes = ref_routes_count,
                           .ctx = &app->api,
                           .ready = ready,
                           .ready_ctx = app,
                           .metrics = app->metrics};
    app->http = cm_http_start(&hc, &err);
    return app->http ? 0 : err;
}

/* Stops in the reverse order of start: nothing in use is freed first. */
static void stop(app_t *app)
{
    cm_http_stop(app->http);
    ref_sweep_stop(app->sweep);
    cm_consumer_stop(app->consumer);
    cm_outbox_relay_stop(app->relay);
    cm_producer_free(app->producer);
    cm_db_pool_free(app->pool);
    cm_jwt_verifier_free(app->jwt);
    cm_metrics_free(app->metrics);
    ref_config_dispose(&app->cfg);
}

int main(int argc, char **argv)
{
    bool migrate_only = argc > 1 && strcmp(argv[1], "migrate") == 0;
    if (argc > 2 || (argc == 2 && !migrate_only)) {
        fprintf(stderr, "usage: linktr-referral [migrate]\n");
        return 2;
    }
    app_t app = {0};
    if (ref_config_load(&app.cfg) != 0)
        return 2;
    cm_log_init("referral", app.cfg.log_level);
    /* Block the signals before any thread starts, so only sigwait sees them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    int rc = migrate_only ? 0 : load_keys(&app);
    if (rc == 0)
        rc = open_db(&app);
    if (rc == 0 && !migrate_only)
        rc = start(&app);
    if (rc == 0 && !migrate_only) {
        CM_INFO(NULL, "referral listening on %s:%d", app.cfg.bind, app.cfg.port);
        int sig = 0;
        sigwait(&sigs, &sig);
        CM_INFO(NULL, "referral stopping (signal %d)", sig);
    } else if (rc != 0) {
        CM_ERROR(NULL, "referral failed to start: %s", cm_strerror(rc));
    }
    stop(&app);
    return rc == 0 ? 0 : 1;
}
