/*
 * linktr-referral — referrals, counters and their API.
 *
 *     linktr-referral            serve (consumer, outbox relay, expiry sweep, HTTP API)
 *     linktr-referral migrate    apply the migrations and exit
 *
 * Start-up, signals and stop order are cm_service_main's; this file is the
 * referral service's own wiring.
 */
#include "cm/consumer.h"
#include "cm/log.h"
#include "cm/outbox.h"
#include "cm/producer.h"
#include "cm/service.h"
#include "config.h"
#include "consumer.h"
#include "routes.h"
#include "sweep.h"

extern const cm_migration_t referral_migrations[];

/* Verified access tokens kept so repeated requests skip the signature check. */
#define JWT_CACHE 10000

typedef struct app {
    ref_config_t cfg;
    cm_jwt_verifier_t *jwt;
    cm_db_pool_t *pool; /* borrowed from the skeleton */
    cm_producer_t *producer;
    cm_outbox_relay_t *relay;
    cm_consumer_t *consumer;
    ref_sweep_t *sweep;
    ref_board_t *board;
    ref_ctx_t events;
    ref_api_t api;
} app_t;

/* Ready means this pod can answer its own requests (stats, pages, redirects),
 * which need the database only. The consumer's state is no part of it: a
 * Kafka outage must not empty the Service and take the reads down; the
 * consumer catches up from its committed offsets when the broker is back
 * (consumer lag is the signal for that). */
static bool ready(void *arg, cm_buf_t *why)
{
    app_t *app = arg;
    /* Its own requests need the database only: the consumer catching up after a
     * Kafka outage is lag, not unreadiness, and must not take reads down. */
    if (cm_db_ping(app->pool))
        return true;
    cm_buf_puts(why, "database");
    return false;
}

/* The keys are configuration: a bad JWT_PUBLIC_KEYS entry stops start-up with status 2. */
static int load(void *arg, const cm_service_config_t **svc)
{
    app_t *app = arg;
    if (ref_config_load(&app->cfg) != 0)
        return CM_EINVAL;
    *svc = &app->cfg.svc;
    int rc = 0;
    app->jwt = cm_jwt_verifier_from_config("referral", &app->cfg.jwt, JWT_CACHE, &rc);
    return rc;
}

static int start_events(app_t *app, const cm_service_env_t *env)
{
    int err = 0;
    app->producer = cm_producer_new(app->cfg.svc.kafka_bootstrap, "referral", &err);
    if (!app->producer)
        return err;
    cm_outbox_config_t oc = {.conninfo = app->cfg.svc.database_url,
                             .channel = REF_OUTBOX_CHANNEL,
                             .pool = app->pool,
                             .producer = app->producer,
                             .batch = 100,
                             .metrics = env->metrics};
    if (!(app->relay = cm_outbox_relay_start(&oc, &err)))
        return err;
    app->events = (ref_ctx_t){.cfg = &app->cfg, .pool = app->pool};
    cm_consumer_config_t cc = {.bootstrap = app->cfg.svc.kafka_bootstrap,
                               .group_id = "referral",
                               .topics = ref_topics,
                               .fn = ref_consume,
                               .ctx = &app->events,
                               .metrics = env->metrics,
                               .fetch_wait_ms = app->cfg.svc.kafka_fetch_wait_ms};
    app->consumer = cm_consumer_start(&cc, &err);
    return app->consumer ? 0 : err;
}

static int start(void *arg, const cm_service_env_t *env, cm_http_config_t *http)
{
    app_t *app = arg;
    app->pool = env->pool;
    int err = start_events(app, env);
    if (err != 0)
        return err;
    if (!(app->sweep = ref_sweep_start(&app->cfg, app->pool, &err)))
        return err;
    app->board = ref_board_start(app->pool, app->cfg.board_refresh_s, app->cfg.board_size,
                                 env->metrics, &err);
    if (!app->board)
        return err;
    app->api =
        (ref_api_t){.cfg = &app->cfg, .pool = app->pool, .jwt = app->jwt, .board = app->board};
    http->routes = ref_routes;
    http->nroutes = ref_routes_count;
    http->ctx = &app->api;
    http->ready = ready;
    http->ready_ctx = app;
    return 0;
}

/* The reverse order of start: nothing in use is freed first. */
static void stop(void *arg)
{
    app_t *app = arg;
    ref_board_stop(app->board);
    ref_sweep_stop(app->sweep);
    cm_consumer_stop(app->consumer);
    cm_outbox_relay_stop(app->relay);
    cm_producer_free(app->producer);
}

static void dispose(void *arg)
{
    app_t *app = arg;
    cm_jwt_verifier_free(app->jwt);
    ref_config_dispose(&app->cfg);
}

CM_SERVICE_MAIN(app_t, .name = "referral", .db = &cm_service_postgres,
                .migrations = referral_migrations)
