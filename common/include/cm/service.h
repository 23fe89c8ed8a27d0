/*
 * cm/service.h — the one start-up path every linktr service takes.
 *
 * A service's main.c holds only its own wiring: its app struct, four
 * static callbacks named load, start, stop and dispose, and one line
 *
 *     CM_SERVICE_MAIN(app_t, .name = "mailer", .db = &cm_service_postgres,
 *                     .migrations = mailer_migrations)
 *
 * that defines main() over cm_service_main.
 *
 * cm_service_main does the rest in one order for everyone (redis's single
 * start-up path is the model):
 *
 *   1. arguments: none (serve), "migrate" (services with migrations), "--version";
 *   2. SIGINT/SIGTERM blocked in every thread (sigwait takes them), SIGPIPE
 *      ignored (a peer that hangs up must not kill the process);
 *   3. libsodium is initialised (a service that uses libcurl initialises it
 *      in its start and cleans it up in its dispose);
 *   4. def->load reads the configuration and whatever else is configuration
 *      (key files): exit status 2 when it is bad; then logging starts;
 *   5. with a database (def->db): the pool opens and the migrations apply
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
#include "cm/metrics.h"

/** What the skeleton hands to def->start: everything common, already running. */
typedef struct cm_service_env {
    const cm_service_config_t *cfg; /* the shared variables (borrowed from the app) */
    cm_db_pool_t *pool;             /* NULL for a service without migrations */
    cm_metrics_t *metrics;          /* the registry /metrics serves */
} cm_service_env_t;

typedef struct cm_service_def cm_service_def_t;
typedef struct cm_sweep cm_sweep_t;

/**
 * What a service with a database adds to the start-up path: the pool and
 * its migrations, the pool's metrics, the retention sweeper. Kept behind
 * this table (cm_service_postgres, in service_db.c) so a service without
 * a database links no libpq.
 */
typedef struct cm_service_db {
    /* Opens *pool with cfg's DATABASE_URL and DB_POOL_SIZE, applies def's migrations. */
    int (*open)(const cm_service_def_t *def, const cm_service_config_t *cfg, cm_db_pool_t **pool);
    /* After the service started: pool metrics in metrics, the sweeper in *sweeper. */
    int (*start)(const cm_service_def_t *def, const cm_service_config_t *cfg, cm_db_pool_t *pool,
                 cm_metrics_t *metrics, cm_sweep_t **sweeper);
    void (*stop)(cm_sweep_t *sweeper); /* NULL-safe */
    void (*close)(cm_db_pool_t *pool); /* NULL-safe */
} cm_service_db_t;

/** PostgreSQL through cm/db.h: what auth, referral and the mailer name as .db. */
extern const cm_service_db_t cm_service_postgres;

/** One service: its name, its migrations and its own parts. */
struct cm_service_def {
    const char *name;                 /* "auth": logs, metrics, "linktr-auth" in messages */
    const cm_service_db_t *db;        /* &cm_service_postgres, or NULL: no database */
    const cm_migration_t *migrations; /* with db: ends with a {0, NULL, NULL} entry */
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
};

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

#endif
