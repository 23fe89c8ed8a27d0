/*
 * linktr-auth — users, credentials and tokens (DESIGN.md).
 *
 *     linktr-auth            serve until SIGINT/SIGTERM
 *     linktr-auth migrate    apply the embedded migrations and exit
 *
 * Start-up, signals and stop order are cm_service_main's; this file is
 * auth's own wiring.
 */
#include "cm/crypto.h"
#include "cm/log.h"
#include "cm/outbox.h"
#include "cm/producer.h"
#include "cm/service.h"
#include "config.h"
#include "keys.h"
#include "routes.h"

extern const cm_migration_t auth_migrations[];

typedef struct app {
    auth_config_t cfg;
    auth_app_t auth; /* what the routes see */
    cm_outbox_relay_t *relay;
} app_t;

static double hash_depth(void *ctx)
{
    const auth_app_t *auth = ctx;
    return (double)cm_hashpool_depth(auth->hash);
}

static int load(void *arg, const cm_service_config_t **svc)
{
    app_t *app = arg;
    if (auth_config_load(&app->cfg) != 0)
        return CM_EINVAL;
    app->auth.cfg = &app->cfg;
    *svc = &app->cfg.svc;
    return 0;
}

static int start_workers(app_t *app, const cm_service_env_t *env)
{
    const auth_config_t *cfg = &app->cfg;
    auth_app_t *auth = &app->auth;
    cm_hashpool_config_t hc = {.workers = cfg->hash_workers,
                               .queue_cap = cfg->hash_queue,
                               .opslimit = cfg->argon2_opslimit,
                               .memlimit = cfg->argon2_memlimit,
                               .metrics = env->metrics};
    int rc = 0;
    if (!(auth->hash = cm_hashpool_new(&hc, &rc)))
        return rc ? rc : CM_EINVAL;
    if (!(auth->producer = cm_producer_new(cfg->svc.kafka_bootstrap, "linktr-auth", &rc)))
        return rc ? rc : CM_EINVAL;
    cm_metrics_gauge_fn(env->metrics, "linktr_hashpool_queue_depth",
                        "Password hashing jobs waiting", hash_depth, auth);
    auth_metrics_register(auth, env->metrics);
    cm_outbox_config_t oc = {.conninfo = cfg->svc.database_url,
                             .channel = "auth_outbox",
                             .pool = auth->db,
                             .producer = auth->producer,
                             .batch = 100,
                             .metrics = env->metrics};
    if (!(app->relay = cm_outbox_relay_start(&oc, &rc)))
        return rc ? rc : CM_EINVAL;
    return 0;
}

static int start(void *arg, const cm_service_env_t *env, cm_http_config_t *http)
{
    app_t *app = arg;
    app->auth.db = env->pool;
    int rc = auth_keys_load(&app->auth);
    if (rc == 0)
        rc = start_workers(app, env);
    if (rc != 0)
        return rc;
    http->max_body = CM_MAX_BODY;
    http->routes = auth_routes;
    http->nroutes = auth_nroutes;
    http->ctx = &app->auth;
    http->ready = auth_ready;
    http->ready_ctx = &app->auth;
    return 0;
}

/* Stops in the order that loses nothing: no new events once no new requests. */
static void stop(void *arg)
{
    app_t *app = arg;
    cm_outbox_relay_stop(app->relay);
    cm_producer_free(app->auth.producer);
    cm_hashpool_free(app->auth.hash);
}

static void dispose(void *arg)
{
    app_t *app = arg;
    auth_keys_dispose(&app->auth);
    auth_config_dispose(&app->cfg);
}

CM_SERVICE_MAIN(app_t, .name = "auth", .db = &cm_service_postgres, .migrations = auth_migrations,
                .db_acquire_ms = 2000)
