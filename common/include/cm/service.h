/*
 * cm/service.h — the one start-up path every linktr service takes.
 *
 * A service's main.c holds only its own wiring: its app struct, four
 * static callbacks named load, start, stop and dispose, and one line
 *
 *     CM_SERVICE_MAIN(app_t, .name = "mailer", .migrations = mailer_migrations, .curl = true)
 *
 * that defines main() over cm_service_main.
 *
 * cm_service_main does the rest in one order for everyone (redis's single
 * start-up path is the model):
 *
 *   1. arguments: none (serve), "migrate" (services with migrations), "--version";
 *   2. SIGINT/SIGTERM blocked in every thread (sigwait takes them), SIGPIPE
 *      ignored (a peer that hangs up must not kill the process);
 *   3. libsodium and, with def->curl, libcurl are initialised;
 *   4. def->load reads the configuration and whatever else is configuration
 *      (key files): exit status 2 when it is bad; then logging starts;
 *   5. with migrations: the database pool opens and the migrations apply
 *      ("migrate" stops here);
 *   6. def->start starts the service's own parts and names its routes;
 *      with a database, the retention sweeper starts (cm/sweep.h: the
 *      schema's retention_sweep function, on RETENTION_* settings);
 *   7. the HTTP servers start: the admin listener on ADMIN_PORT (PORT +
 *      1000 unless set: GET /healthz, /readyz, /metrics and /version, no
 *      service route; probes and Prometheus use it) and the public one on
 *      PORT (the service's routes and a constant-time /healthz only); the
 *      process waits for SIGINT or SIGTERM;
 *   8. readiness fails, the public server drains (in-flight requests
 *      finish), both stop, then def->stop stops the service's parts, and
 *      everything common is freed in the reverse order of its start.
 *
 * Every request gets one access-log line at info (cm/http.h); the
 * registry also carries linktr_http_requests_in_flight and linktr_ready (1
 * when the ready callback says so, evaluated at scrape time).
 */
#ifndef CM_SERVICE_H
#define CM_SERVICE_H

#include <stdbool.h>
#include <stddef.h>

#include "cm/config.h"
#include "cm/db.h"
#include "cm/http.h"
#include "cm/jwt.h"
#include "cm/consumer.h"
#include "cm/metrics.h"

/** What the skeleton hands to def->start: everything common, already running. */
typedef struct cm_service_env {
    const cm_service_config_t *cfg; /* the shared variables (borrowed from the app) */
    cm_db_pool_t *pool;             /* NULL for a service without migrations */
    cm_metrics_t *metrics;          /* the registry /metrics serves */
} cm_service_env_t;

/** One service: its name, its migrations and its own parts. */
typedef struct cm_service_def {
    const char *name;                 /* "auth": logs, metrics, "linktr-auth" in messages */
    const cm_migration_t *migrations; /* ends with a {0, NULL, NULL} entry; NULL: no database */
    bool curl;                        /* initialise libcurl for the process (gateway, mailer) */
    int db_acquire_ms;                /* longest wait for a pooled connection; 0 → 5000 */
    /*
     * Reads the configuration into app; *svc points at its shared part
     * (inside app). Returns 0, or CM_EINVAL after the errors were printed.
     */
    int (*load)(void *app, const cm_service_config_t **svc);
    /*
     * Starts the service's parts (workers, consumers, relays) and fills
     * http's routes, nroutes, ctx, ready, ready_ctx, max_body and
     * drain_ms (how long a stop waits for in-flight requests; 0 → the
     * default CM_HTTP_DRAIN_MS); the skeleton sets the rest. Returns 0 or a CM_E* code (then stop
     * runs).
     */
    int (*start)(void *app, const cm_service_env_t *env, cm_http_config_t *http);
    /* Stops what start started (NULL-safe on a partial start); HTTP is already stopped. */
    void (*stop)(void *app);
    /* Frees what load read; also called after a failed load (so it must be NULL-safe). */
    void (*dispose)(void *app);
} cm_service_def_t;

/**
 * Runs the service until SIGINT/SIGTERM. Returns the process exit status:
 * 0 after a clean stop (or a successful migrate), 1 when start-up failed,
 * 2 for bad arguments or configuration.
 */
int cm_service_main(const cm_service_def_t *def, void *app, int argc, char **argv);

/**
 * Defines main() for a service: app_type is its app struct (zeroed, on
 * main's stack), the rest are designated initialisers of cm_service_def_t
 * (.name at least). The callbacks are the file's static load, start, stop
 * and dispose: one convention, so every main.c reads the same.
 */
#define CM_SERVICE_MAIN(app_type, ...)                                                             \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        static const cm_service_def_t def = {__VA_ARGS__, .load = load, .start = start,            \
                                             .stop = stop, .dispose = dispose};                    \
        app_type app = {0};                                                                        \
        return cm_service_main(&def, &app, argc, argv);                                            \
    }

/**
 * A verifier for the keys in j (JWT_PUBLIC_KEYS, issuer, audience), with a
 * cache of cache_size verified tokens. With no keys listed the verifier
 * starts empty (the caller adds its own). On a bad entry it prints one
 * line in the configuration's format ("linktr-<service>: config:
 * JWT_PUBLIC_KEYS: entry "kid": why") and returns NULL with *err set.
 * The caller frees the verifier with cm_jwt_verifier_free.
 */
cm_jwt_verifier_t *cm_service_verifier_new(const char *service, const cm_jwt_config_t *j,
                                           size_t cache_size, int *err);

/**
 * The readiness of a service that owns a database and consumes events:
 * true when pool answers a ping and consumer is connected and heard from
 * lately (a NULL pool or consumer is not checked). Appends what is down,
 * comma-separated, to why.
 */
bool cm_service_ready(cm_db_pool_t *pool, cm_consumer_t *consumer, cm_buf_t *why);

#endif
