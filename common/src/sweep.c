/* sweep.c — the retention sweeper (see cm/sweep.h). */
#include "cm/sweep.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cm/log.h"
#include "cm/util.h"

#define MAX_PARAMS 8

struct cm_sweep {
    char *service;
    cm_db_pool_t *pool;
    const char *sql;
    char *params[MAX_PARAMS + 1]; /* [0] is the batch size */
    int nparams;                  /* including the batch size */
    int batch;
    int interval_s;
    int pause_ms;
    cm_family_t *removed; /* linktr_retention_rows_removed_total{table} or NULL */
    cm_family_t *errors;  /* linktr_retention_errors_total or NULL */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
};

static bool config_ok(const cm_sweep_config_t *cfg)
{
    if (!cfg || !cfg->pool || !cfg->sql || cfg->nparams < 0 || cfg->nparams > MAX_PARAMS ||
        (cfg->nparams > 0 && !cfg->params))
        return false;
    for (int i = 0; i < cfg->nparams; i++)
        if (!cfg->params[i])
            return false;
    return cfg->batch >= 1 && cfg->batch <= 100000 && cfg->interval_s >= 1 &&
           cfg->interval_s <= 86400 && cfg->pause_ms >= 0 && cfg->pause_ms <= 60000;
}

cm_sweep_t *cm_sweep_new(const cm_sweep_config_t *cfg, int *err)
{
    if (!config_ok(cfg)) {
        *err = CM_EINVAL;
        return NULL;
    }
    cm_sweep_t *s = cm_xcalloc(1, sizeof *s);
    s->service = cm_xstrdup(cfg->service ? cfg->service : "");
    s->pool = cfg->pool;
    s->sql = cfg->sql;
    s->batch = cfg->batch;
    s->interval_s = cfg->interval_s;
    s->pause_ms = cfg->pause_ms;
    char b[16];
    snprintf(b, sizeof b, "%d", cfg->batch);
    s->params[0] = cm_xstrdup(b);
    for (int i = 0; i < cfg->nparams; i++)
        s->params[i + 1] = cm_xstrdup(cfg->params[i]);
    s->nparams = cfg->nparams + 1;
    if (cfg->metrics) {
        s->removed = cm_metrics_counter(cfg->metrics, "linktr_retention_rows_removed_total",
                                        "Rows deleted by the retention sweeper", "table");
        s->errors = cm_metrics_counter(cfg->metrics, "linktr_retention_errors_total",
                                       "Retention sweeps that failed", NULL);
    }
    pthread_mutex_init(&s->mu, NULL);
    /* Waits measure on the monotonic clock: a wall-clock step neither
     * skips a sweep nor stalls one for hours. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    return s;
}

static bool stopping(cm_sweep_t *s)
{
    pthread_mutex_lock(&s->mu);
    bool stop = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return stop;
}

/* Waits ms milliseconds or until the sweeper is stopped; returns true when stopped. */
static bool wait_or_stop(cm_sweep_t *s, long long ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(ms / 1000);
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (!s->stopping && pthread_cond_timedwait(&s->cv, &s->mu, &until) != ETIMEDOUT)
        ;
    bool stop = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return stop;
}

/* One statement: at most a batch per table. *full is set when some table
 * filled its batch (more may be left); *removed gets the rows deleted. */
static int one_batch(cm_sweep_t *s, bool *full, long long *removed)
{
    cm_db_t *db = NULL;
    int rc = cm_db_acquire(s->pool, &db);
    if (rc != 0)
        return rc;
    PGresult *res = NULL;
    /* Unnamed (not prepared): a batch every few minutes gains nothing from
     * a plan cache, and two sweepers with different SQL can share a pool. */
    rc = cm_db_exec(db, s->sql, s->nparams, (const char *const *)s->params, &res);
    *full = false;
    *removed = 0;
    for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
        long long n = 0;
        if (PQnfields(res) < 2 || cm_strtonum(PQgetvalue(res, i, 1), 0, 1LL << 40, &n) != 0) {
            rc = CM_EDB;
            break;
        }
        const char *table[1] = {PQgetvalue(res, i, 0)};
        if (n > 0)
            cm_metric_add(s->removed, table, (double)n);
        *removed += n;
        *full = *full || n >= s->batch;
    }
    PQclear(res);
    cm_db_release(db);
    return rc;
}

int cm_sweep_run(cm_sweep_t *s, long long *removed, int *batches)
{
    long long total = 0;
    int count = 0, rc = 0;
    bool full = true;
    while (full && !stopping(s)) {
        if (count > 0 && s->pause_ms > 0 && wait_or_stop(s, s->pause_ms))
            break;
        long long n = 0;
        rc = one_batch(s, &full, &n);
        if (rc != 0)
            break;
        total += n;
        count++;
    }
    if (rc != 0)
        cm_metric_add(s->errors, NULL, 1);
    if (removed)
        *removed = total;
    if (batches)
        *batches = count;
    return rc;
}

static void *run(void *arg)
{
    cm_sweep_t *s = arg;
    do {
        long long n = 0;
        int rc = cm_sweep_run(s, &n, NULL);
        if (rc != 0)
            CM_WARN(NULL, "%s: retention sweep: %s", s->service, cm_strerror(rc));
        else if (n > 0)
            CM_INFO(NULL, "%s: retention sweep removed %lld rows", s->service, n);
    } while (!wait_or_stop(s, (long long)s->interval_s * 1000));
    return NULL;
}

int cm_sweep_start(cm_sweep_t *s)
{
    if (!s || s->started)
        return CM_EINVAL;
    if (pthread_create(&s->thread, NULL, run, s) != 0)
        return CM_ENOMEM;
    s->started = true;
    return 0;
}

void cm_sweep_free(cm_sweep_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->started)
        pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    for (int i = 0; i < s->nparams; i++)
        free(s->params[i]);
    free(s->service);
    free(s);
}

cm_sweep_t *cm_retention_new(const cm_retention_t *r, const char *service, cm_db_pool_t *pool,
                             cm_metrics_t *metrics, int *err)
{
    static const char sql[] =
        "SELECT tbl, removed FROM retention_sweep($1::int, $2::bigint, $3::bigint)";
    if (!r) {
        *err = CM_EINVAL;
        return NULL;
    }
    char keep[24], dedup[24];
    snprintf(keep, sizeof keep, "%lld", r->keep_days * 86400LL);
    snprintf(dedup, sizeof dedup, "%lld", r->dedup_days * 86400LL);
    const char *params[2] = {keep, dedup};
    cm_sweep_config_t sc = {.service = service,
                            .pool = pool,
                            .sql = sql,
                            .params = params,
                            .nparams = 2,
                            .batch = r->batch,
                            .interval_s = r->interval_s,
                            .pause_ms = r->pause_ms,
                            .metrics = metrics};
    return cm_sweep_new(&sc, err);
}

cm_sweep_t *cm_retention_start(const cm_retention_t *r, const char *service, cm_db_pool_t *pool,
                               cm_metrics_t *metrics, int *err)
{
    cm_sweep_t *s = cm_retention_new(r, service, pool, metrics, err);
    if (s && (*err = cm_sweep_start(s)) != 0) {
        cm_sweep_free(s);
        s = NULL;
    }
    return s;
}
