/*
 * cm/db.h — PostgreSQL through libpq: a bounded connection pool, prepared
 * statements, transactions and the migration runner.
 *
 * Every query is parameterized: text parameters through PQexecParams or
 * prepared statements. No SQL is ever assembled from data.
 *
 * libpq errors are mapped once, here: unique violation (23505) →
 * CM_ECONFLICT (cm_db_constraint() names the constraint), serialization
 * failure / deadlock → CM_EBUSY, lost connection or server unreachable →
 * CM_EUNAVAIL, anything else → CM_EDB. A connection that failed is closed
 * when released and reopened on the next acquire, so services recover
 * after the server restarts without a restart of their own.
 */
#ifndef CM_DB_H
#define CM_DB_H

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

#include "cm/error.h"

typedef struct cm_db_pool cm_db_pool_t;
typedef struct cm_db cm_db_t; /* one checked-out connection */

typedef struct cm_db_config {
    const char *conninfo;     /* libpq URL or key=value string (borrowed, copied) */
    int size;                 /* connections at most; 1–256 */
    int acquire_timeout_ms;   /* wait for a free connection at most this long */
    int connect_timeout_s;    /* libpq connect_timeout */
    int statement_timeout_ms; /* server-side statement_timeout, 0 = none */
} cm_db_config_t;

/** One embedded migration: a numbered SQL file compiled into the binary. */
typedef struct cm_migration {
    int version;      /* from the file name: 001_users.sql → 1 */
    const char *name; /* "001_users.sql" */
    const char *sql;
} cm_migration_t;

/**
 * Creates a pool. Connections open lazily, so this succeeds while the
 * server is down. Returns NULL with *err = CM_EINVAL for a bad config.
 */
cm_db_pool_t *cm_db_pool_new(const cm_db_config_t *cfg, int *err);

/** Closes every connection and frees the pool. All connections must be released. NULL-safe. */
void cm_db_pool_free(cm_db_pool_t *pool);

/**
 * Checks out a connection, opening one if needed. Returns 0 and sets *out,
 * CM_EBUSY when none is free within the acquire timeout, CM_EUNAVAIL when
 * the server cannot be reached.
 */
CM_MUST_CHECK int cm_db_acquire(cm_db_pool_t *pool, cm_db_t **out);

/** Returns a connection to the pool; a broken one (or one left inside a transaction) is closed.
 * NULL-safe. */
void cm_db_release(cm_db_t *db);

/** The libpq connection, for what this module does not wrap (LISTEN). */
PGconn *cm_db_pgconn(cm_db_t *db);

/**
 * Runs sql with text parameters (NULL entries are SQL NULL). On success
 * returns 0 and, when res is not NULL, a result the caller PQclear()s.
 * On failure returns a CM_E* code and *res is NULL.
 */
CM_MUST_CHECK int cm_db_exec(cm_db_t *db, const char *sql, int nparams, const char *const *params,
                             PGresult **res);

/**
 * Like cm_db_exec through a named prepared statement: prepared on this
 * connection at first use, then reused. name must be unique per SQL text
 * within the process (use a static name next to a static SQL string).
 */
CM_MUST_CHECK int cm_db_prepared(cm_db_t *db, const char *name, const char *sql, int nparams,
                                 const char *const *params, PGresult **res);

/** The constraint named by the last CM_ECONFLICT on this connection, or "". */
const char *cm_db_constraint(const cm_db_t *db);

/** The SQLSTATE of the last failure on this connection, or "". */
const char *cm_db_sqlstate(const cm_db_t *db);

/** BEGIN / COMMIT / ROLLBACK on the connection. */
CM_MUST_CHECK int cm_db_begin(cm_db_t *db);
CM_MUST_CHECK int cm_db_commit(cm_db_t *db);
/** Rolls back; safe to call when no transaction is open. */
void cm_db_rollback(cm_db_t *db);

/** The body of a transaction; return 0 to commit, a CM_E* code to roll back. */
typedef int (*cm_db_tx_fn)(cm_db_t *db, void *ctx);

/**
 * Acquires a connection, runs fn inside BEGIN … COMMIT, releases it.
 * Rolls back and returns fn's code when fn fails. Retries the whole
 * transaction (up to 3 times) when the server reports a serialization
 * failure or deadlock, so fn must be safe to run again.
 */
CM_MUST_CHECK int cm_db_tx(cm_db_pool_t *pool, cm_db_tx_fn fn, void *ctx);

/** True when a connection can be had and answers SELECT 1 (for /readyz). */
bool cm_db_ping(cm_db_pool_t *pool);

/**
 * Applies the migrations not yet in schema_migrations, in version order,
 * each in its own transaction together with its schema_migrations row.
 * Holds a PostgreSQL advisory lock meanwhile, so replicas that start
 * together apply each migration exactly once. Returns 0 or a CM_E* code
 * (and logs the failing migration's name).
 */
CM_MUST_CHECK int cm_db_migrate(cm_db_pool_t *pool, const cm_migration_t *migrations, size_t n);

/** A pool's counters at one moment, for /metrics. */
typedef struct cm_db_pool_stats {
    int size;           /* connections at most */
    int in_use;         /* checked out now */
    int open;           /* connected now (in use or idle) */
    long long waits;    /* acquires since start that found every connection taken */
    long long timeouts; /* of those, the ones that gave up after acquire_timeout_ms */
} cm_db_pool_stats_t;

/** Fills *out with the pool's counters (all zero for a NULL pool). */
void cm_db_pool_stats(cm_db_pool_t *pool, cm_db_pool_stats_t *out);

/** Number of connections currently checked out / open (for metrics and tests). */
int cm_db_pool_in_use(cm_db_pool_t *pool);
int cm_db_pool_open(cm_db_pool_t *pool);

#endif
