#include "cm/db.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "cm/log.h"
#include "cm/util.h"

/* A whole transaction is run at most this often: the first try plus three retries. */
#define TX_ATTEMPTS 4
/* PostgreSQL names are at most NAMEDATALEN - 1 = 63 bytes. */
#define NAME_MAX_LEN 64

struct cm_db {
    cm_db_pool_t *pool;
    PGconn *conn;    /* NULL while the slot has no open connection */
    bool in_use;     /* checked out (or being connected) */
    bool broken;     /* closed on release */
    char **prepared; /* names prepared on conn (owned copies) */
    size_t nprepared;
    size_t capprepared;
    char sqlstate[6];
    char constraint[NAME_MAX_LEN];
};

struct cm_db_pool {
    char *conninfo;
    cm_db_config_t cfg; /* cfg.conninfo points at the owned copy above */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled whenever a slot becomes free */
    cm_db_t *slots;    /* cfg.size of them */
    int in_use;
    int open;
    long long waits;    /* acquires that found no free slot at first */
    long long timeouts; /* acquires that gave up (CM_EBUSY) */
};

/* ---- errors ----------------------------------------------------------- */

static bool sqlstate_is(const char *state, const char *want)
{
    return strcmp(state, want) == 0;
}

/* True for the SQLSTATEs that mean the connection is gone or the server is going away. */
static bool sqlstate_unavailable(const char *s)
{
    return strncmp(s, "08", 2) == 0 || sqlstate_is(s, "57P01") || sqlstate_is(s, "57P02") ||
           sqlstate_is(s, "57P03");
}

static bool sqlstate_retryable(const char *s)
{
    return sqlstate_is(s, "40001") || sqlstate_is(s, "40P01");
}

static void copy_field(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

/*
 * Records a failed result (which may be NULL when libpq could not even
 * send the query), logs it and maps it to a CM_E* code. Only the SQLSTATE
 * and the server's primary message are logged, never the parameters.
 */
static int fail_with(cm_db_t *db, PGresult *r)
{
    copy_field(db->sqlstate, sizeof db->sqlstate,
               r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL);
    copy_field(db->constraint, sizeof db->constraint,
               r ? PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME) : NULL);
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg)
        msg = PQerrorMessage(db->conn);
    /* Data exceptions quote the offending input ("invalid input syntax ...: \"secret\""). */
    if (strncmp(db->sqlstate, "22", 2) == 0)
        msg = "data exception (message withheld: it may quote a parameter)";
    /* A unique violation is an expected answer (duplicate registration), not a fault. */
    cm_log_level_t level = sqlstate_is(db->sqlstate, "23505") ? CM_LOG_DEBUG : CM_LOG_WARN;
    CM_LOG(level, NULL, "db: query failed: sqlstate %s: %s",
           db->sqlstate[0] ? db->sqlstate : "none", msg);
    PQclear(r);
    if (PQstatus(db->conn) != CONNECTION_OK || sqlstate_unavailable(db->sqlstate)) {
        db->broken = true;
        return CM_EUNAVAIL;
    }
    if (sqlstate_is(db->sqlstate, "23505"))
        return CM_ECONFLICT;
    if (sqlstate_retryable(db->sqlstate))
        return CM_EBUSY;
    return CM_EDB;
}

/* Hands a successful result to the caller (or frees it) and maps a failed one. */
static int finish_result(cm_db_t *db, PGresult *r, PGresult **res)
{
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        return fail_with(db, r);
    if (res)
        *res = r;
    else
        PQclear(r);
    return 0;
}

static int check_query_args(cm_db_t *db, const char *sql, int nparams, const char *const *params,
                            PGresult **res)
{
    if (res)
        *res = NULL;
    if (!db || !db->conn || !sql || nparams < 0 || (nparams > 0 && !params))
        return CM_EINVAL;
    return 0;
}

/* ---- prepared statement bookkeeping ------------------------------------ */

static bool is_prepared(const cm_db_t *db, const char *name)
{
    for (size_t i = 0; i < db->nprepared; i++)
        if (strcmp(db->prepared[i], name) == 0)
            return true;
    return false;
}

static void remember_prepared(cm_db_t *db, const char *name)
{
    if (db->nprepared == db->capprepared) {
        db->capprepared = db->capprepared ? db->capprepared * 2 : 8;
        db->prepared = cm_xreallocarray(db->prepared, db->capprepared, sizeof *db->prepared);
    }
    db->prepared[db->nprepared++] = cm_xstrdup(name);
}

static void forget_prepared(cm_db_t *db, const char *name)
{
    for (size_t i = 0; i < db->nprepared; i++) {
        if (strcmp(db->prepared[i], name) == 0) {
            free(db->prepared[i]);
            db->prepared[i] = db->prepared[--db->nprepared];
            return;
        }
    }
}

static void forget_all_prepared(cm_db_t *db)
{
    for (size_t i = 0; i < db->nprepared; i++)
        free(db->prepared[i]);
    free(db->prepared);
    db->prepared = NULL;
    db->nprepared = db->capprepared = 0;
}

/* ---- connections -------------------------------------------------------- */

static void close_conn(cm_db_t *db)
{
    PQfinish(db->conn);
    db->conn = NULL;
    db->broken = false;
    forget_all_prepared(db);
}

static int set_statement_timeout(cm_db_t *db, int ms)
{
    char value[32];
    snprintf(value, sizeof value, "%d", ms);
    const char *const params[] = {value};
    return cm_db_exec(db, "SELECT set_config('statement_timeout', $1, false)", 1, params, NULL);
}

/* Server notices (such as "relation already exists, skipping") go to the debug log, not stderr. */
static void on_notice(void *arg, const char *message)
{
    (void)arg;
    size_t len = strlen(message);
    while (len > 0 && message[len - 1] == '\n')
        len--;
    CM_LOG(CM_LOG_DEBUG, NULL, "db: server notice: %.*s", (int)len, message);
}

/* Opens db->conn. On failure the connection is closed again and CM_EUNAVAIL returned. */
static int open_conn(cm_db_t *db, const cm_db_config_t *cfg)
{
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%d", cfg->connect_timeout_s);
    /*
     * expand_dbname = 1: conninfo may be a URL or key=value string, and the
     * keywords after it override it. A timeout of 0 keeps the URL's own.
     */
    const char *const keys[] = {"dbname", cfg->connect_timeout_s > 0 ? "connect_timeout" : NULL,
                                NULL};
    const char *const values[] = {cfg->conninfo, timeout, NULL};
    db->conn = PQconnectdbParams(keys, values, 1);
    if (!db->conn || PQstatus(db->conn) != CONNECTION_OK) {
        CM_LOG(CM_LOG_WARN, NULL, "db: cannot connect: %s",
               db->conn ? PQerrorMessage(db->conn) : "out of memory");
        close_conn(db);
        return CM_EUNAVAIL;
    }
    PQsetNoticeProcessor(db->conn, on_notice, NULL);
    if (cfg->statement_timeout_ms > 0 &&
        set_statement_timeout(db, cfg->statement_timeout_ms) != 0) {
        close_conn(db);
        return CM_EUNAVAIL;
    }
    return 0;
}

/*
 * An idle connection learns that its server went away (restart, terminated
 * backend) only when it reads: the server's last message or EOF is waiting
 * in the socket. Consuming it here lets acquire hand out a fresh connection
 * instead of one that fails on first use.
 */
static bool idle_conn_alive(PGconn *conn)
{
    if (PQstatus(conn) != CONNECTION_OK)
        return false;
    struct pollfd p = {.fd = PQsocket(conn), .events = POLLIN};
    if (p.fd < 0)
        return false;
    /* The server's farewell message and the EOF behind it take two reads. */
    for (int i = 0; i < 4 && poll(&p, 1, 0) > 0; i++)
        if (!PQconsumeInput(conn) || PQstatus(conn) != CONNECTION_OK)
            return false;
    return PQtransactionStatus(conn) == PQTRANS_IDLE;
}

/* ---- pool ---------------------------------------------------------------- */

static bool config_valid(const cm_db_config_t *cfg)
{
    return cfg && cfg->conninfo && cfg->conninfo[0] && cfg->size >= 1 && cfg->size <= 256 &&
           cfg->acquire_timeout_ms >= 0 && cfg->connect_timeout_s >= 0 &&
           cfg->statement_timeout_ms >= 0;
}

static bool init_sync(cm_db_pool_t *pool)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return false;
    bool ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
              pthread_cond_init(&pool->cv, &attr) == 0;
    pthread_condattr_destroy(&attr);
    if (!ok)
        return false;
    if (pthread_mutex_init(&pool->mu, NULL) != 0) {
        pthread_cond_destroy(&pool->cv);
        return false;
    }
    return true;
}

cm_db_pool_t *cm_db_pool_new(const cm_db_config_t *cfg, int *err)
{
    int dummy = 0;
    if (!err)
        err = &dummy;
    *err = CM_EINVAL;
    if (!config_valid(cfg))
        return NULL;
    cm_db_pool_t *pool = cm_xcalloc(1, sizeof *pool);
    if (!init_sync(pool)) {
        free(pool);
        *err = CM_ENOMEM;
        return NULL;
    }
    pool->conninfo = cm_xstrdup(cfg->conninfo);
    pool->cfg = *cfg;
    pool->cfg.conninfo = pool->conninfo;
    pool->slots = cm_xcalloc((size_t)cfg->size, sizeof *pool->slots);
    for (int i = 0; i < cfg->size; i++)
        pool->slots[i].pool = pool;
    *err = 0;
    return pool;
}

void cm_db_pool_free(cm_db_pool_t *pool)
{
    if (!pool)
        return;
    for (int i = 0; i < pool->cfg.size; i++) {
        if (pool->slots[i].in_use)
            CM_LOG(CM_LOG_ERROR, NULL, "db: pool freed with a connection still checked out");
        close_conn(&pool->slots[i]);
    }
    free(pool->slots);
    pthread_cond_destroy(&pool->cv);
    pthread_mutex_destroy(&pool->mu);
    /* The conninfo may carry a password: wipe it before freeing. */
    sodium_memzero(pool->conninfo, strlen(pool->conninfo));
    free(pool->conninfo);
    free(pool);
}

/* Marks a free slot as taken, preferring one with an open connection. Called locked. */
static cm_db_t *take_slot(cm_db_pool_t *pool)
{
    cm_db_t *empty = NULL;
    for (int i = 0; i < pool->cfg.size && !(empty && empty->conn); i++) {
        cm_db_t *s = &pool->slots[i];
        if (!s->in_use && (s->conn || !empty))
            empty = s;
    }
    if (empty) {
        empty->in_use = true;
        pool->in_use++;
    }
    return empty;
}

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Waits until a slot is free or the acquire timeout passes (then NULL). */
static cm_db_t *wait_for_slot(cm_db_pool_t *pool)
{
    struct timespec deadline;
    deadline_after(&deadline, pool->cfg.acquire_timeout_ms);
    pthread_mutex_lock(&pool->mu);
    cm_db_t *db = take_slot(pool);
    if (!db)
        pool->waits++;
    while (!db) {
        if (pthread_cond_timedwait(&pool->cv, &pool->mu, &deadline) == ETIMEDOUT) {
            db = take_slot(pool);
            break;
        }
        db = take_slot(pool);
    }
    if (!db)
        pool->timeouts++;
    pthread_mutex_unlock(&pool->mu);
    return db;
}

static void count_open(cm_db_pool_t *pool, int delta)
{
    pthread_mutex_lock(&pool->mu);
    pool->open += delta;
    pthread_mutex_unlock(&pool->mu);
}

/* Gives a slot back and wakes one waiter. */
static void put_slot(cm_db_t *db, int open_delta)
{
    cm_db_pool_t *pool = db->pool;
    pthread_mutex_lock(&pool->mu);
    pool->open += open_delta;
    db->in_use = false;
    pool->in_use--;
    pthread_cond_signal(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
}

int cm_db_acquire(cm_db_pool_t *pool, cm_db_t **out)
{
    if (!pool || !out)
        return CM_EINVAL;
    *out = NULL;
    cm_db_t *db = wait_for_slot(pool);
    if (!db)
        return CM_EBUSY;
    /* Connecting happens outside the lock: the slot is reserved meanwhile. */
    if (db->conn && !idle_conn_alive(db->conn)) {
        close_conn(db);
        count_open(pool, -1);
    }
    if (!db->conn) {
        int rc = open_conn(db, &pool->cfg);
        if (rc != 0) {
            put_slot(db, 0);
            return rc;
        }
        count_open(pool, 1);
    }
    *out = db;
    return 0;
}

void cm_db_release(cm_db_t *db)
{
    if (!db)
        return;
    int open_delta = 0;
    bool reusable = db->conn && !db->broken && PQstatus(db->conn) == CONNECTION_OK &&
                    PQtransactionStatus(db->conn) == PQTRANS_IDLE;
    if (db->conn && !reusable) {
        close_conn(db);
        open_delta = -1;
    }
    db->sqlstate[0] = '\0';
    db->constraint[0] = '\0';
    put_slot(db, open_delta);
}

PGconn *cm_db_pgconn(cm_db_t *db)
{
    return db ? db->conn : NULL;
}

void cm_db_pool_stats(cm_db_pool_t *pool, cm_db_pool_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    out->size = pool->cfg.size;
    out->in_use = pool->in_use;
    out->open = pool->open;
    out->waits = pool->waits;
    out->timeouts = pool->timeouts;
    pthread_mutex_unlock(&pool->mu);
}

int cm_db_pool_in_use(cm_db_pool_t *pool)
{
    if (!pool)
        return 0;
    pthread_mutex_lock(&pool->mu);
    int n = pool->in_use;
    pthread_mutex_unlock(&pool->mu);
    return n;
}

int cm_db_pool_open(cm_db_pool_t *pool)
{
    if (!pool)
        return 0;
    pthread_mutex_lock(&pool->mu);
    int n = pool->open;
    pthread_mutex_unlock(&pool->mu);
    return n;
}

/* ---- queries --------------------------------------------------------------- */

int cm_db_exec(cm_db_t *db, const char *sql, int nparams, const char *const *params, PGresult **res)
{
    int rc = check_query_args(db, sql, nparams, params, res);
    if (rc != 0)
        return rc;
    PGresult *r = PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    return finish_result(db, r, res);
}

static int prepare(cm_db_t *db, const char *name, const char *sql, int nparams)
{
    int rc = finish_result(db, PQprepare(db->conn, name, sql, nparams, NULL), NULL);
    if (rc == 0)
        remember_prepared(db, name);
    return rc;
}

/* 26000: the server does not know the statement (DISCARD ALL, DEALLOCATE). */
static bool statement_missing(const PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    return state && strcmp(state, "26000") == 0;
}

int cm_db_prepared(cm_db_t *db, const char *name, const char *sql, int nparams,
                   const char *const *params, PGresult **res)
{
    int rc = check_query_args(db, sql, nparams, params, res);
    if (rc == 0 && !name)
        rc = CM_EINVAL;
    if (rc == 0 && !is_prepared(db, name))
        rc = prepare(db, name, sql, nparams);
    if (rc != 0)
        return rc;
    PGresult *r = PQexecPrepared(db->conn, name, nparams, params, NULL, NULL, 0);
    if (statement_missing(r)) {
        forget_prepared(db, name);
        /* Inside a transaction the failure already aborted it: report it instead. */
        if (PQtransactionStatus(db->conn) == PQTRANS_IDLE) {
            PQclear(r);
            rc = prepare(db, name, sql, nparams);
            if (rc != 0)
                return rc;
            r = PQexecPrepared(db->conn, name, nparams, params, NULL, NULL, 0);
        }
    }
    return finish_result(db, r, res);
}

const char *cm_db_constraint(const cm_db_t *db)
{
    return db ? db->constraint : "";
}

const char *cm_db_sqlstate(const cm_db_t *db)
{
    return db ? db->sqlstate : "";
}

/* ---- transactions ------------------------------------------------------------ */

int cm_db_begin(cm_db_t *db)
{
    return cm_db_exec(db, "BEGIN", 0, NULL, NULL);
}

int cm_db_commit(cm_db_t *db)
{
    if (!db || !db->conn)
        return CM_EINVAL;
    /* COMMIT of a failed transaction "succeeds" as a ROLLBACK: say what happened. */
    if (PQtransactionStatus(db->conn) == PQTRANS_INERROR) {
        CM_LOG(CM_LOG_WARN, NULL, "db: commit of a failed transaction: rolled back");
        cm_db_rollback(db);
        return CM_EDB;
    }
    return cm_db_exec(db, "COMMIT", 0, NULL, NULL);
}

void cm_db_rollback(cm_db_t *db)
{
    if (!db || !db->conn || PQtransactionStatus(db->conn) == PQTRANS_IDLE)
        return;
    PGresult *r = PQexec(db->conn, "ROLLBACK");
    /* A connection that cannot roll back is closed on release, which rolls back too. */
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        db->broken = true;
    PQclear(r);
}

/* One try of cm_db_tx; *retry says whether the failure was a serialization failure. */
static int tx_once(cm_db_pool_t *pool, cm_db_tx_fn fn, void *ctx, bool *retry)
{
    cm_db_t *db;
    *retry = false;
    int rc = cm_db_acquire(pool, &db);
    if (rc != 0)
        return rc;
    rc = cm_db_begin(db);
    if (rc == 0)
        rc = fn(db, ctx);
    if (rc == 0)
        rc = cm_db_commit(db);
    else
        cm_db_rollback(db);
    *retry = rc == CM_EBUSY && sqlstate_retryable(db->sqlstate);
    cm_db_release(db);
    return rc;
}

/* Sleeps a few milliseconds, growing with the attempt and jittered so rivals drift apart. */
static void backoff(int attempt)
{
    /* The clock's low digits are jitter enough here; it needs no secrecy. */
    long us = (long)attempt * 5000L + (long)(cm_now_us() % 5000);
    struct timespec ts = {.tv_sec = 0, .tv_nsec = us * 1000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int cm_db_tx(cm_db_pool_t *pool, cm_db_tx_fn fn, void *ctx)
{
    if (!pool || !fn)
        return CM_EINVAL;
    int rc = 0;
    for (int attempt = 0; attempt < TX_ATTEMPTS; attempt++) {
        if (attempt > 0) {
            CM_LOG(CM_LOG_INFO, NULL, "db: transaction retry %d after a serialization failure",
                   attempt);
            backoff(attempt);
        }
        bool retry;
        rc = tx_once(pool, fn, ctx, &retry);
        if (!retry)
            break;
    }
    return rc;
}

bool cm_db_ping(cm_db_pool_t *pool)
{
    if (!pool)
        return false;
    /* A connection that died while idle fails once; a second try opens a fresh one. */
    for (int i = 0; i < 2; i++) {
        cm_db_t *db;
        if (cm_db_acquire(pool, &db) != 0)
            return false;
        int rc = cm_db_exec(db, "SELECT 1", 0, NULL, NULL);
        bool broken = db->broken;
        cm_db_release(db);
        if (rc == 0)
            return true;
        if (!broken)
            return false;
    }
    return false;
}

/* ---- migrations ------------------------------------------------------------------ */

/*
 * The lock is per schema, so services sharing one database do not wait for
 * each other; the first key ("lktr") keeps it apart from other advisory locks.
 */
#define MIGRATE_LOCK_KEYS "1818981490, hashtext(coalesce(current_schema(), ''))"

static const char sql_lock[] = "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEYS ")";
static const char sql_unlock[] = "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEYS ")";
static const char sql_create[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                 " version int PRIMARY KEY, name text NOT NULL,"
                                 " applied_at timestamptz NOT NULL DEFAULT now())";
static const char sql_applied[] = "SELECT version, name FROM schema_migrations ORDER BY version";
static const char sql_record[] = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)";

/* The embedded list must be complete and strictly ordered: anything else is a build mistake. */
static int check_migration_list(const cm_migration_t *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!m[i].name || !m[i].sql || m[i].version < 0 ||
            (i > 0 && m[i].version <= m[i - 1].version)) {
            CM_LOG(CM_LOG_ERROR, NULL, "db: migration list is not strictly ordered at entry %zu",
                   i);
            return CM_EINVAL;
        }
    }
    return 0;
}

static const cm_migration_t *find_migration(const cm_migration_t *m, size_t n, long long version)
{
    for (size_t i = 0; i < n; i++)
        if (m[i].version == version)
            return &m[i];
    return NULL;
}

/* Refuses a history that names a version differently from this binary (a renamed file). */
static int check_history(const PGresult *applied, const cm_migration_t *m, size_t n)
{
    for (int row = 0; row < PQntuples(applied); row++) {
        long long version;
        const char *name = PQgetvalue(applied, row, 1);
        if (cm_strtonum(PQgetvalue(applied, row, 0), 0, INT32_MAX, &version) != 0)
            return CM_EDB;
        const cm_migration_t *mine = find_migration(m, n, version);
        if (mine && strcmp(mine->name, name) != 0) {
            CM_LOG(CM_LOG_ERROR, NULL,
                   "db: schema_migrations records version %lld as %s but this binary has %s",
                   version, name, mine->name);
            return CM_ESTATE;
        }
    }
    return 0;
}

static bool is_applied(const PGresult *applied, int version)
{
    char text[16];
    snprintf(text, sizeof text, "%d", version);
    for (int row = 0; row < PQntuples(applied); row++)
        if (strcmp(PQgetvalue(applied, row, 0), text) == 0)
            return true;
    return false;
}

/* Runs a migration's SQL text: several statements, compiled in, never request data. */
static int exec_script(cm_db_t *db, const char *sql)
{
    PGresult *r = PQexec(db->conn, sql);
    if (PQresultStatus(r) == PGRES_EMPTY_QUERY) {
        PQclear(r);
        return 0;
    }
    return finish_result(db, r, NULL);
}

static int apply_one(cm_db_t *db, const cm_migration_t *m)
{
    char version[16];
    snprintf(version, sizeof version, "%d", m->version);
    const char *const params[] = {version, m->name};
    int rc = cm_db_begin(db);
    if (rc == 0)
        rc = exec_script(db, m->sql);
    if (rc == 0)
        rc = cm_db_exec(db, sql_record, 2, params, NULL);
    if (rc == 0)
        rc = cm_db_commit(db);
    if (rc != 0) {
        cm_db_rollback(db);
        CM_LOG(CM_LOG_ERROR, NULL, "db: migration %s failed: %s (sqlstate %s)", m->name,
               cm_strerror(rc), db->sqlstate);
        return rc;
    }
    CM_LOG(CM_LOG_INFO, NULL, "db: applied migration %s", m->name);
    return 0;
}

static int migrate_locked(cm_db_t *db, const cm_migration_t *m, size_t n)
{
    PGresult *applied = NULL;
    int rc = cm_db_exec(db, sql_create, 0, NULL, NULL);
    if (rc == 0)
        rc = cm_db_exec(db, sql_applied, 0, NULL, &applied);
    if (rc == 0)
        rc = check_history(applied, m, n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (!is_applied(applied, m[i].version))
            rc = apply_one(db, &m[i]);
    PQclear(applied);
    return rc;
}

int cm_db_migrate(cm_db_pool_t *pool, const cm_migration_t *migrations, size_t n)
{
    if (!pool || (n > 0 && !migrations))
        return CM_EINVAL;
    int rc = check_migration_list(migrations, n);
    if (rc != 0)
        return rc;
    cm_db_t *db;
    rc = cm_db_acquire(pool, &db);
    if (rc != 0)
        return rc;
    rc = cm_db_exec(db, sql_lock, 0, NULL, NULL);
    if (rc == 0) {
        rc = migrate_locked(db, migrations, n);
        cm_db_rollback(db);
        /* If the unlock fails, closing the session releases the lock instead. */
        if (cm_db_exec(db, sql_unlock, 0, NULL, NULL) != 0)
            db->broken = true;
    }
    cm_db_release(db);
    return rc;
}
