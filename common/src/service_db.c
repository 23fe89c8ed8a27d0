/*
 * service_db.c — what a service with a database adds to the start-up path
 * (cm_service_postgres, see cm/service.h): the pool and its migrations,
 * the pool's metrics and the retention sweeper. A file of its own so that a
 * service without a database (the gateway) links no libpq.
 */
#include "cm/service.h"

#include "cm/log.h"
#include "cm/sweep.h"

static int open_pool(const cm_service_def_t *def, const cm_service_config_t *cfg,
                     cm_db_pool_t **pool)
{
    cm_db_config_t dc = {.conninfo = cfg->database_url,
                         .size = cfg->db_pool_size,
                         .acquire_timeout_ms = def->db_acquire_ms ? def->db_acquire_ms : 5000,
                         .connect_timeout_s = 5,
                         .statement_timeout_ms = 10000};
    int rc = 0;
    *pool = cm_db_pool_new(&dc, &rc);
    if (!*pool) {
        CM_ERROR(NULL, "cannot open the database pool: %s", cm_strerror(rc));
        return rc ? rc : CM_EIO;
    }
    size_t n = 0;
    while (def->migrations && def->migrations[n].name)
        n++;
    rc = cm_db_migrate(*pool, def->migrations, n);
    if (rc != 0)
        CM_ERROR(NULL, "migrations failed: %s", cm_strerror(rc));
    return rc;
}

static double pool_in_use(void *ctx)
{
    cm_db_pool_stats_t s;
    cm_db_pool_stats(ctx, &s);
    return s.in_use;
}

static double pool_open(void *ctx)
{
    cm_db_pool_stats_t s;
    cm_db_pool_stats(ctx, &s);
    return s.open;
}

static double pool_waits(void *ctx)
{
    cm_db_pool_stats_t s;
    cm_db_pool_stats(ctx, &s);
    return (double)s.waits;
}

static double pool_timeouts(void *ctx)
{
    cm_db_pool_stats_t s;
    cm_db_pool_stats(ctx, &s);
    return (double)s.timeouts;
}

static void register_pool_metrics(cm_metrics_t *m, cm_db_pool_t *pool)
{
    cm_db_pool_stats_t s;
    cm_db_pool_stats(pool, &s);
    cm_family_t *max = cm_metrics_gauge(m, "linktr_db_pool_connections_max",
                                        "Database connections the pool may open.", NULL);
    cm_metric_set(max, NULL, s.size);
    cm_metrics_gauge_fn(m, "linktr_db_pool_connections_in_use",
                        "Database connections checked out now.", pool_in_use, pool);
    cm_metrics_gauge_fn(m, "linktr_db_pool_connections_open",
                        "Database connections open now (in use or idle).", pool_open, pool);
    cm_metrics_gauge_fn(m, "linktr_db_pool_waits_total",
                        "Acquires that found every connection taken.", pool_waits, pool);
    cm_metrics_gauge_fn(m, "linktr_db_pool_timeouts_total",
                        "Acquires that gave up waiting for a connection.", pool_timeouts, pool);
}

static int start_extras(const cm_service_def_t *def, const cm_service_config_t *cfg,
                        cm_db_pool_t *pool, cm_metrics_t *metrics, cm_sweep_t **sweeper)
{
    register_pool_metrics(metrics, pool);
    int rc = 0;
    *sweeper = cm_retention_start(&cfg->retention, def->name, pool, metrics, &rc);
    return *sweeper ? 0 : (rc ? rc : CM_EINVAL);
}

const cm_service_db_t cm_service_postgres = {
    .open = open_pool, .start = start_extras, .stop = cm_sweep_free, .close = cm_db_pool_free};
