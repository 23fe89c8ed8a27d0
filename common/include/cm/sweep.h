/*
 * cm/sweep.h — the retention sweeper: a timer thread that deletes rows
 * nobody needs any more (expired tokens, sent outbox rows, old
 * deduplication ids) in bounded batches, so no table only grows.
 *
 * The SQL stays with each service: a migration creates, in the service's
 * own schema, the function
 *
 *     retention_sweep(batch int, keep_s bigint, dedup_s bigint)
 *         RETURNS TABLE (tbl text, removed bigint)
 *
 * (keep_s and dedup_s are RETENTION_DAYS and RETENTION_DEDUP_DAYS in
 * seconds; a service uses the ones it needs) that deletes at most `batch` rows from each of its
 * tables per call and returns one row per table. This module calls it (a parameterized statement
 * the service supplies) until every table's batch comes back short, pausing between batches so a
 * large backlog never holds locks or I/O for long, counts the rows in
 * linktr_retention_rows_removed_total {table="..."} and sleeps until the next interval. Each call
 * is its own short transaction; the functions take rows FOR UPDATE SKIP LOCKED, so replicas
 * sweeping at once share the work.
 */
#ifndef CM_SWEEP_H
#define CM_SWEEP_H

#include "cm/config.h"
#include "cm/db.h"
#include "cm/error.h"
#include "cm/metrics.h"

typedef struct cm_sweep cm_sweep_t;

/** What a sweeper runs; everything borrowed must outlive the sweeper. */
typedef struct cm_sweep_config {
    const char *service; /* for log lines (borrowed) */
    cm_db_pool_t *pool;  /* borrowed */
    /* One statement returning rows (tbl text, removed bigint); $1 is the
     * batch size, $2.. are params. Borrowed: use a static string. */
    const char *sql;
    const char *const *params; /* nparams text values for $2..; copied */
    int nparams;               /* 0..8 */
    int batch;                 /* 1..100000 */
    int interval_s;            /* 1..86400 */
    int pause_ms;              /* 0..60000 */
    cm_metrics_t *metrics;     /* borrowed, or NULL for no metrics */
} cm_sweep_config_t;

/**
 * Creates a sweeper (no thread yet). Returns NULL with *err = CM_EINVAL
 * for a bad config. Free with cm_sweep_free().
 */
cm_sweep_t *cm_sweep_new(const cm_sweep_config_t *cfg, int *err);

/**
 * Sweeps once, now, on the calling thread: batches until every table's
 * batch is short (or cm_sweep_free() is stopping it). *removed (if not
 * NULL) receives the rows deleted and *batches the statements run.
 * Returns 0 or the CM_E* code of the failing statement.
 */
CM_MUST_CHECK int cm_sweep_run(cm_sweep_t *s, long long *removed, int *batches);

/** Starts the timer thread: a sweep at once, then one every interval_s. Returns 0 or CM_E*. */
CM_MUST_CHECK int cm_sweep_start(cm_sweep_t *s);

/**
 * The usual sweeper of a service, not started: cm_sweep_new() over the
 * service's retention_sweep($1 batch, $2 keep_s, $3 dedup_s) with r's
 * settings. Returns it (free with cm_sweep_free) or NULL with *err.
 */
cm_sweep_t *cm_retention_new(const cm_retention_t *r, const char *service, cm_db_pool_t *pool,
                             cm_metrics_t *metrics, int *err);

/** cm_retention_new() and cm_sweep_start(): what a service's main calls. NULL with *err. */
cm_sweep_t *cm_retention_start(const cm_retention_t *r, const char *service, cm_db_pool_t *pool,
                               cm_metrics_t *metrics, int *err);

/**
 * Stops the thread (promptly: a pause or a wait is cut short, a running
 * statement finishes its one batch) and frees. NULL-safe.
 */
void cm_sweep_free(cm_sweep_t *s);

#endif
