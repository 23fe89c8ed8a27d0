/*
 * Tests for common/src/db.c against a real, throwaway PostgreSQL.
 *
 * LINKTR_TEST_NEEDS: postgres
 *
 * AUTH_DATABASE_URL is an ordinary service role (its own schema only);
 * ADMIN_DATABASE_URL is the superuser, used to terminate backends and to
 * give each migration test a schema of its own. Single-connection tests
 * use TEMP tables (private to their session, so no names clash with other
 * tests); tests that need two sessions make a uniquely named table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "cm/db.h"
#include "cm/log.h"
#include "cm/util.h"
#include "testenv.h"
#include "capture.h"

#define PG_ENV "LINKTR_PG_ENV_FILE"

/* ---- helpers ----------------------------------------------------------- */

static cm_db_pool_t *pool_for(const char *url, int size, int acquire_ms)
{
    cm_db_config_t cfg = {.conninfo = url,
                          .size = size,
                          .acquire_timeout_ms = acquire_ms,
                          .connect_timeout_s = 5,
                          .statement_timeout_ms = 0};
    int err = 1;
    cm_db_pool_t *pool = cm_db_pool_new(&cfg, &err);
    assert_non_null(pool);
    assert_int_equal(err, 0);
    return pool;
}

/* A pool on the ordinary service role. */
static cm_db_pool_t *auth_pool(int size, int acquire_ms)
{
    char *url = t_env(PG_ENV, "AUTH_DATABASE_URL");
    cm_db_pool_t *pool = pool_for(url, size, acquire_ms);
    free(url);
    return pool;
}

static cm_db_pool_t *admin_pool(void)
{
    char *url = t_env(PG_ENV, "ADMIN_DATABASE_URL");
    cm_db_pool_t *pool = pool_for(url, 1, 5000);
    free(url);
    return pool;
}

static cm_db_t *acquire_ok(cm_db_pool_t *pool)
{
    cm_db_t *db = NULL;
    assert_int_equal(cm_db_acquire(pool, &db), 0);
    assert_non_null(db);
    return db;
}

static void exec_ok(cm_db_t *db, const char *sql)
{
    assert_int_equal(cm_db_exec(db, sql, 0, NULL, NULL), 0);
}

/* Runs sql and returns the first column of its single row as a new string. */
static char *query_value(cm_db_t *db, const char *sql, int nparams, const char *const *params)
{
    PGresult *r = NULL;
    assert_int_equal(cm_db_exec(db, sql, nparams, params, &r), 0);
    assert_int_equal(PQntuples(r), 1);
    char *v = cm_xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static long long query_int(cm_db_t *db, const char *sql, int nparams, const char *const *params)
{
    char *v = query_value(db, sql, nparams, params);
    long long n = 0;
    assert_int_equal(cm_strtonum(v, INT64_MIN, INT64_MAX, &n), 0);
    free(v);
    return n;
}

/*
 * Runs DDL for a generated name: identifiers cannot be bind parameters, so
 * the server builds the statement with format('%I'), which quotes it.
 */
static void exec_with_ident(cm_db_t *db, const char *fmt, const char *ident)
{
    const char *const params[] = {fmt, ident};
    char *sql = query_value(db, "SELECT format($1::text, $2::text)", 2, params);
    exec_ok(db, sql);
    free(sql);
}

/* A name unique to this run and call site ("t_db_<pid+time>_<tag>"). */
static char *unique_name(const char *tag)
{
    return cm_xasprintf("t_db_%s_%s", t_unique(), tag);
}

static int64_t elapsed_ms(int64_t since)
{
    return cm_now_mono_ms() - since;
}

/* ---- configuration and parameters --------------------------------------- */

static void a_bad_config_is_refused_with_einval(void **state)
{
    (void)state;
    cm_db_config_t cfg = {.conninfo = "postgresql://127.0.0.1/x", .size = 0};
    int err = 0;
    assert_null(cm_db_pool_new(&cfg, &err));
    assert_int_equal(err, CM_EINVAL);
    cfg.size = 257;
    assert_null(cm_db_pool_new(&cfg, &err));
    assert_int_equal(err, CM_EINVAL);
    cfg.size = 1;
    cfg.conninfo = NULL;
    assert_null(cm_db_pool_new(&cfg, &err));
    assert_int_equal(err, CM_EINVAL);
    cfg.conninfo = "postgresql://127.0.0.1/x";
    cfg.acquire_timeout_ms = -1;
    assert_null(cm_db_pool_new(&cfg, &err));
    assert_int_equal(err, CM_EINVAL);
    assert_null(cm_db_pool_new(NULL, &err));
    assert_int_equal(err, CM_EINVAL);
}

static void exec_stores_parameters_verbatim_including_null(void **state)
{
    (void)state;
    cm_db_pool_t *pool = auth_pool(1, 1000);
    cm_db_t *db = acquire_ok(pool);
    exec_ok(db, "CREATE TEMP TABLE p (id int PRIMARY KEY, a text, b text)");
    const char *tricky = "it's \"quoted\"; DROP TABLE p; --";
    const char *const params[] = {"7", tricky, NULL};
    assert_int_equal(
        cm_db_exec(db, "INSERT INTO p (id, a, b) VALUES ($1, $2, $3)", 3, params, NULL), 0);

    PGresult *r = NULL;
    const char *const id[] = {"7"};
    assert_int_equal(cm_db_exec(db, "SELECT a, b FROM p WHERE id = $1", 1, id, &r), 0);
    assert_int_equal(PQntuples(r), 1);
    assert_string_equal(PQgetvalue(r, 0, 0), tricky);
    assert_true(PQgetisnull(r, 0, 1));
    PQclear(r);
    assert_int_equal(query_int(db, "SELECT count(*) FROM p", 0, NULL), 1);
    cm_db_release(db);
    cm_db_pool_free(pool);
}

static void several_statements_in_one_exec_are_refused(void **state)
{
    (void)state;
    cm_db_pool_t *pool = auth_pool(1, 1000);
    cm_db_t *db = acquire_ok(pool);
    PGresult *r = (PGresult *)1;
    assert_int_equal(cm_db_exec(db, "SELECT 1; SELECT 2", 0, NULL, &r), CM_EDB);
    assert_null(r);
    assert_string_equal(cm_db_sqlstate(db), "42601");
    assert_int_equal(cm_db_exec(NULL, "SELECT 1", 0, NULL, NULL), CM_EINVAL);
    assert_int_equal(cm_db_exec(db, "SELECT $1", 1, NULL, NULL), CM_EINVAL);
    cm_db_release(db);
    cm_db_pool_free(pool);
}

static void prepared_statements_are_prepared_once_and_reused(void **state)
{
    (void)state;
    static const char name[] = "test_db_add";
    static const char sql[] = "SELECT $1::int + $2::int";
    cm_db_pool_t *pool = auth_pool(1, 1000);
    cm_db_t *db = acquire_ok(pool);
    for (int i = 0; i < 3; i++) {
        char a[16];
        snprintf(a, sizeof a, "%d", i * 10);
        const char *const params[] = {a, "5"};
        PGresult *r = NULL;
        assert_int_equal(cm_db_prepared(db, name, sql, 2, params, &r), 0);
        long long sum = -1;
        assert_int_equal(cm_strtonum(PQgetvalue(r, 0, 0), INT32_MIN, INT32_MAX, &sum), 0);
        assert_int_equal(sum, i * 10 + 5);
        PQclear(r);
    }
    const char *const n[] = {name};
    const char *count_sql = "SELECT count(*) FROM pg_prepared_statements WHERE name = $1";
    assert_int_equal(query_int(db, count_sql, 1, n), 1);

    /* Released and acquired again: the same connection still has it prepared. */
    cm_db_release(db);
    db = acquire_ok(pool);
    const char *const again[] = {"1", "1"};
    assert_int_equal(cm_db_prepared(db, name, sql, 2, again, NULL), 0);
    assert_int_equal(query_int(db, count_sql, 1, n), 1);
    cm_db_release(db);
    cm_db_pool_free(pool);
}

static void a_deallocated_statement_is_prepared_again(void **state)
{
    (void)state;
    static const char name[] = "test_db_echo";
    cm_db_pool_t *pool = auth_pool(1, 1000);
    cm_db_t *db = acquire_ok(pool);
    const char *const params[] = {"hello"};
    assert_int_equal(cm_db_prepared(db, name, "SELECT $1::text", 1, params, NULL), 0);
    exec_ok(db, "DEALLOCATE ALL");
    PGresult *r = NULL;
    assert_int_equal(cm_db_prepared(db, name, "SELECT $1::text", 1, params, &r), 0);
    assert_string_equal(PQgetvalue(r, 0, 0), "hello");
    PQclear(r);
    cm_db_release(db);
    cm_db_pool_free(pool);
}

/* ---- error mapping ------------------------------------------------------ */

/* Runs fn(db) with stdout (where the log goes) redirected and every level on. */
static char *capture_log(cm_db_t *db, void (*fn)(void *db))
{
    cm_log_init("test_db", CM_LOG_DEBUG);
    char *out = t_capture(STDOUT_FILENO, fn, db);
    cm_log_init("test_db", CM_LOG_WARN);
    return out;
}

#define SECRET "hunter2-correct-horse"

static void fail_with_secret_parameters(void *arg)
{
    cm_db_t *db = arg;
    const char *const p[] = {SECRET};
    assert_int_equal(cm_db_exec(db, "SELECT $1::int", 1, p, NULL), CM_EDB);
    assert_int_equal(cm_db_exec(db, "INSERT INTO s (v) VALUES ($1)", 1, p, NULL), CM_ECONFLICT);
}

static void failures_log_the_sqlstate_but_never_the_parameters(void **state)
{
    (void)state;
    cm_db_pool_t *pool = auth_pool(1, 1000);
    cm_db_t *db = acquire_ok(pool);
    exec_ok(db, "CREATE TEMP TABLE s (v text UNIQUE)");
    const char *const p[] = {SECRET};
    assert_int_equal(cm_db_exec(db, "INSERT INTO s (v) VALUES ($1)", 1, p, NULL), 0);
    char *log = capture_log(db, fail_with_secret_parameters);
    assert_non_null(strstr(log, "22P02"));
    assert_non_null(strstr(log, "23505"));
    assert_null(strstr(log, SECRET));
    free(log);
    cm_db_release(db);
    cm_db_pool_free(pool);
}

static void a_unique_violation_is_a_conflict_naming_the_constraint(void **state)
{
    (void)state;
    cm_db_pool_t *pool = auth_pool(1, 1000);
    cm_db_t *db = acquire_ok(pool);
    exec_ok(db, "CREATE TEMP TABLE u (email text CONSTRAINT u_email_key UNIQUE)");
    const char *const p[] = {"a@example.test"};
    const char *insert = "INSERT INTO u (email) VALUES ($1)";
    assert_int_equal(cm_db_exec(db, insert, 1, p, NULL), 0);
    assert_string_equal(cm_db_constraint(db), "");
    assert_int_equal(cm_db_exec(db, insert, 1, p, NULL), CM_ECONFLICT);
    assert_string_equal(cm_db_constraint(db), "u_email_key");
    assert_string_equal(cm_db_sqlstate(db), "23505");
    assert_int_equal(cm_db_prepared(db, "test_db_u_ins", insert, 1, p, NULL), CM_ECONFLICT);
    assert_string_equal(cm_db_constraint(db), "u_email_key");
    assert_int_equal(query_int(db, "SELECT count(*) FROM u", 0, NULL), 1);
    cm_db_release(db);
    cm_db_pool_free(pool);
}

static void a_syntax_error_is_edb_and_the_connection_stays_usable(void **state)
{
    (void)state;
    cm_db_pool_t *pool = auth_pool(1, 1000);
    cm_db_t *db = acquire_ok(pool);
    assert_int_equal(cm_db_exec(db, "SELEC 1", 0, NULL, NULL), CM_EDB);
    assert_string_equal(cm_db_sqlstate(db), "42601");
    assert_int_equal(query_int(db, "SELECT 41 + 1", 0, NULL), 42);
    long long pid = query_int(db, "SELECT pg_backend_pid()", 0, NULL);
    assert_int_equal(cm_db_exec(db, "SELECT * FROM no_such_table", 0, NULL, NULL), CM_EDB);
    assert_string_equal(cm_db_sqlstate(db), "42P01");
    cm_db_release(db);
    assert_int_equal(cm_db_pool_open(pool), 1);
    db = acquire_ok(pool);
    assert_string_equal(cm_db_sqlstate(db), "");
    assert_int_equal(query_int(db, "SELECT pg_backend_pid()", 0, NULL), pid);
    cm_db_release(db);
    cm_db_pool_free(pool);
}

static void a_statement_timeout_is_applied_to_every_connection(void **state)
{
    (void)state;
    char *url = t_env(PG_ENV, "AUTH_DATABASE_URL");
    cm_db_config_t cfg = {.conninfo = url,
                          .size = 1,
                          .acquire_timeout_ms = 1000,
                          .connect_timeout_s = 5,
                          .statement_timeout_ms = 150};
    int err;
    cm_db_pool_t *pool = cm_db_pool_new(&cfg, &err);
    assert_non_null(pool);
    free(url);
    cm_db_t *db = acquire_ok(pool);
    char *v = query_value(db, "SHOW statement_timeout", 0, NULL);
    assert_string_equal(v, "150ms");
    free(v);
    assert_int_equal(cm_db_exec(db, "SELECT pg_sleep(3)", 0, NULL, NULL), CM_EDB);
    assert_string_equal(cm_db_sqlstate(db), "57014");
    cm_db_release(db);
    cm_db_pool_free(pool);
}

/* ---- the pool ------------------------------------------------------------ */

static void an_exhausted_pool_answers_ebusy(void **state)
{
    (void)state;
    cm_db_pool_t *pool = auth_pool(2, 200);
    cm_db_t *a = acquire_ok(pool);
    cm_db_t *b = acquire_ok(pool);
    assert_ptr_not_equal(a, b);
    assert_int_equal(cm_db_pool_in_use(pool), 2);
    assert_int_equal(cm_db_pool_open(pool), 2);
    cm_db_pool_stats_t st;
    cm_db_pool_stats(pool, &st);
    assert_int_equal(st.waits, 0);
    cm_db_t *c = (cm_db_t *)1;
    assert_int_equal(cm_db_acquire(pool, &c), CM_EBUSY);
    assert_null(c);
    /* The refused acquire waited and gave up: both show in the pool's counters. */
    cm_db_pool_stats(pool, &st);
    assert_int_equal(st.size, 2);
    assert_int_equal(st.in_use, 2);
    assert_int_equal(st.waits, 1);
    assert_int_equal(st.timeouts, 1);
    cm_db_release(a);
    cm_db_release(b);
    assert_int_equal(cm_db_pool_in_use(pool), 0);
    assert_int_equal(cm_db_pool_open(pool), 2);
    cm_db_pool_free(pool);
}

struct waiter {
    cm_db_pool_t *pool;
    cm_db_t *got;
    int rc;
    int64_t waited_ms;
};

static void *wait_for_connection(void *arg)
{
    struct waiter *w = arg;
    int64_t start = cm_now_mono_ms();
    w->rc = cm_db_acquire(w->pool, &w->got);
    w->waited_ms = elapsed_ms(start);
    return NULL;
}

static void a_release_wakes_a_waiting_acquire(void **state)
{
    (void)state;
    cm_db_pool_t *pool = auth_pool(1, 10000);
    cm_db_t *held = acquire_ok(pool);
    struct waiter w = {.pool = pool, .rc = 1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, wait_for_connection, &w), 0);
    t_sleep_ms(300);
    cm_db_release(held);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(w.rc, 0);
    assert_ptr_equal(w.got, held);
    /* It waited for the release, and was woken long before its own timeout. */
    assert_true(w.waited_ms >= 200);
    assert_true(w.waited_ms < 5000);
    assert_int_equal(query_int(w.got, "SELECT 1", 0, NULL), 1);
    cm_db_release(w.got);
    cm_db_pool_free(pool);
}

/* A port that refuses connections: bound, then closed again. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void an_unreachable_server_is_eunavail_quickly(void **state)
{
    (void)state;
    char *url = cm_xasprintf("postgresql://nobody@127.0.0.1:%d/none", closed_port());
    cm_db_pool_t *pool = pool_for(url, 2, 1000);
    int64_t start = cm_now_mono_ms();
    cm_db_t *db = (cm_db_t *)1;
    assert_int_equal(cm_db_acquire(pool, &db), CM_EUNAVAIL);
    assert_null(db);
    assert_true(elapsed_ms(start) < 3000);
    /* The slot was given back: the pool is empty, not exhausted. */
    assert_int_equal(cm_db_pool_in_use(pool), 0);
    assert_int_equal(cm_db_pool_open(pool), 0);
    assert_int_equal(cm_db_acquire(pool, &db), CM_EUNAVAIL);
    assert_false(cm_db_ping(pool));
    cm_db_pool_free(pool);
    free(url);
}

static void ping_is_true_when_the_server_answers(void **state)
{
    (void)state;
    cm_db_pool_t *pool = auth_pool(1, 1000);
    assert_true(cm_db_ping(pool));
    assert_int_equal(cm_db_pool_in_use(pool), 0);
    cm_db_pool_free(pool);
}

/* ---- reconnecting after the server dropped the connection ------------------ */

static void terminate_backend(long long pid)
{
    cm_db_pool_t *admin = admin_pool();
    cm_db_t *db = acquire_ok(admin);
    char text[32];
    snprintf(text, sizeof text, "%lld", pid);
    const char *const p[] = {text};
    /* The timeout makes it wait until the backend has really gone. */
    char *v = query_value(db, "SELECT pg_terminate_backend($1::int, 5000)", 1, p);
    assert_string_equal(v, "t");
    free(v);
    cm_db_release(db);
    cm_db_pool_free(admin);
}

static void a_killed_connection_in_use_fails_once_then_reconnects(void **state)
{
    (void)state;
    cm_db_pool_t *pool = auth_pool(1, 1000);
    cm_db_t *db = acquire_ok(pool);
    long long pid = query_int(db, "SELECT pg_backend_pid()", 0, NULL);
    terminate_backend(pid);
    assert_int_equal(cm_db_exec(db, "SELECT 1", 0, NULL, NULL), CM_EUNAVAIL);
    cm_db_release(db);
    assert_int_equal(cm_db_pool_open(pool), 0);

    db = acquire_ok(pool);
    long long fresh = query_int(db, "SELECT pg_backend_pid()", 0, NULL);
    assert_true(fresh != pid);
    cm_db_release(db);
    cm_db_pool_free(pool);
}

static void killed_idle_connections_fail_at_most_once(void **state)
{
    (void)state;
    cm_db_pool_t *pool = auth_pool(2, 1000);
    cm_db_t *a = acquire_ok(pool);
    cm_db_t *b = acquire_ok(pool);
    long long pa = query_int(a, "SELECT pg_backend_pid()", 0, NULL);
    long long pb = query_int(b, "SELECT pg_backend_pid()", 0, NULL);
    cm_db_release(a);
    cm_db_release(b);
    terminate_backend(pa);
    terminate_backend(pb);

    int failures = 0;
    for (int i = 0; i < 4; i++) {
        cm_db_t *db = acquire_ok(pool);
        int rc = cm_db_exec(db, "SELECT 1", 0, NULL, NULL);
        cm_db_release(db);
        if (rc != 0) {
            assert_int_equal(rc, CM_EUNAVAIL);
            failures++;
        }
    }
    assert_true(failures <= 1);
    a = acquire_ok(pool);
    long long fresh = query_int(a, "SELECT pg_backend_pid()", 0, NULL);
    assert_true(fresh != pa && fresh != pb);
    cm_db_release(a);
    cm_db_pool_free(pool);
}

static void ping_is_true_again_after_the_server_dropped_the_connection(void **state)
{
    (void)state;
    cm_db_pool_t *pool = auth_pool(1, 1000);
    cm_db_t *db = acquire_ok(pool);
    long long pid = query_int(db, "SELECT pg_backend_pid()", 0, NULL);
    cm_db_release(db);
    terminate_backend(pid);
    assert_true(cm_db_ping(pool));
    assert_int_equal(cm_db_pool_open(pool), 1);
    cm_db_pool_free(pool);
}

/* ---- transactions ---------------------------------------------------------- */

static void begin_commit_and_rollback_work_on_a_connection(void **state)
{
    (void)state;
    cm_db_pool_t *pool = auth_pool(1, 1000);
    cm_db_t *db = acquire_ok(pool);
    exec_ok(db, "CREATE TEMP TABLE t (v text)");
    assert_int_equal(cm_db_begin(db), 0);
    exec_ok(db, "INSERT INTO t VALUES ('kept')");
    assert_int_equal(cm_db_commit(db), 0);
    assert_int_equal(cm_db_begin(db), 0);
    exec_ok(db, "INSERT INTO t VALUES ('dropped')");
    cm_db_rollback(db);
    cm_db_rollback(db); /* safe with no transaction open */
    char *v = query_value(db, "SELECT string_agg(v, ',') FROM t", 0, NULL);
    assert_string_equal(v, "kept");
    free(v);

    /* A failed statement poisons the transaction: COMMIT must not claim success. */
    assert_int_equal(cm_db_begin(db), 0);
    exec_ok(db, "INSERT INTO t VALUES ('lost')");
    assert_int_equal(cm_db_exec(db, "SELEC", 0, NULL, NULL), CM_EDB);
    assert_int_equal(cm_db_commit(db), CM_EDB);
    assert_int_equal(PQtransactionStatus(cm_db_pgconn(db)), PQTRANS_IDLE);
    assert_int_equal(query_int(db, "SELECT count(*) FROM t", 0, NULL), 1);
    cm_db_release(db);
    cm_db_pool_free(pool);
}

static void a_connection_left_in_a_transaction_is_closed_on_release(void **state)
{
    (void)state;
    cm_db_pool_t *pool = auth_pool(1, 1000);
    cm_db_t *db = acquire_ok(pool);
    exec_ok(db, "CREATE TEMP TABLE t (v text)");
    assert_int_equal(cm_db_begin(db), 0);
    exec_ok(db, "INSERT INTO t VALUES ('x')");
    cm_db_release(db);
    assert_int_equal(cm_db_pool_open(pool), 0);
    db = acquire_ok(pool);
    /* A fresh session: the temp table (and the open transaction) went with the old one. */
    assert_int_equal(cm_db_exec(db, "SELECT * FROM t", 0, NULL, NULL), CM_EDB);
    cm_db_release(db);
    cm_db_pool_free(pool);
}

struct tx_ctx {
    int calls;
    int fail_calls;     /* raise `state` on the first fail_calls calls */
    const char *state;  /* SQLSTATE to raise */
    int result;         /* what fn returns after its insert */
    cm_db_pool_t *pool; /* for the rival transaction */
    const char *table;  /* for the rival transaction */
};

/* Raises exactly the SQLSTATE the test named; a context that fails calls without
 * naming one, or names one with no statement here, is a mistake in the test. */
static int raise_state(cm_db_t *db, const char *sqlstate)
{
    static const char *const raise[][2] = {
        {"40001", "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001'; END $$"},
        {"40P01", "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40P01'; END $$"},
    };
    assert_non_null(sqlstate);
    for (size_t i = 0; i < sizeof raise / sizeof raise[0]; i++)
        if (strcmp(sqlstate, raise[i][0]) == 0)
            return cm_db_exec(db, raise[i][1], 0, NULL, NULL);
    fail_msg("raise_state: no statement raises SQLSTATE %s", sqlstate);
    return CM_EINVAL;
}

static int insert_or_raise(cm_db_t *db, void *arg)
{
    struct tx_ctx *c = arg;
    c->calls++;
    const char *const p[] = {c->state ? c->state : "none"};
    int rc = cm_db_exec(db, "INSERT INTO t (v) VALUES ($1)", 1, p, NULL);
    if (rc == 0 && c->calls <= c->fail_calls)
        rc = raise_state(db, c->state);
    return rc != 0 ? rc : c->result;
}

static long long temp_rows(cm_db_pool_t *pool)
{
    cm_db_t *db = acquire_ok(pool);
    long long n = query_int(db, "SELECT count(*) FROM t", 0, NULL);
    cm_db_release(db);
    return n;
}

/* Pool of one, so every transaction runs on the session that owns temp table t. */
static cm_db_pool_t *pool_with_temp_table(void)
{
    cm_db_pool_t *pool = auth_pool(1, 1000);
    cm_db_t *db = acquire_ok(pool);
    exec_ok(db, "CREATE TEMP TABLE t (v text)");
    cm_db_release(db);
    return pool;
}

static void tx_commits_when_fn_succeeds_and_rolls_back_when_it_fails(void **state)
{
    (void)state;
    cm_db_pool_t *pool = pool_with_temp_table();
    struct tx_ctx ok = {.result = 0};
    assert_int_equal(cm_db_tx(pool, insert_or_raise, &ok), 0);
    assert_int_equal(ok.calls, 1);
    assert_int_equal(temp_rows(pool), 1);
    struct tx_ctx bad = {.result = CM_ENOTFOUND};
    assert_int_equal(cm_db_tx(pool, insert_or_raise, &bad), CM_ENOTFOUND);
    assert_int_equal(bad.calls, 1);
    assert_int_equal(temp_rows(pool), 1);
    assert_int_equal(cm_db_pool_in_use(pool), 0);
    cm_db_pool_free(pool);
}

static void tx_retries_serialization_failures_up_to_three_times(void **state)
{
    (void)state;
    cm_db_pool_t *pool = pool_with_temp_table();
    struct tx_ctx always = {.fail_calls = 100, .state = "40001"};
    assert_int_equal(cm_db_tx(pool, insert_or_raise, &always), CM_EBUSY);
    assert_int_equal(always.calls, 4);
    assert_int_equal(temp_rows(pool), 0);

    struct tx_ctx once = {.fail_calls = 1, .state = "40P01"};
    assert_int_equal(cm_db_tx(pool, insert_or_raise, &once), 0);
    assert_int_equal(once.calls, 2);
    assert_int_equal(temp_rows(pool), 1);
    cm_db_pool_free(pool);
}

static void tx_does_not_retry_a_busy_code_that_is_not_from_the_server(void **state)
{
    (void)state;
    cm_db_pool_t *pool = pool_with_temp_table();
    struct tx_ctx busy = {.result = CM_EBUSY};
    assert_int_equal(cm_db_tx(pool, insert_or_raise, &busy), CM_EBUSY);
    assert_int_equal(busy.calls, 1);
    assert_int_equal(temp_rows(pool), 0);
    cm_db_pool_free(pool);
}

/* The rival: a SERIALIZABLE transaction that reads the table and inserts, then commits. */
static void run_rival(cm_db_pool_t *pool, const char *table)
{
    cm_db_t *db = acquire_ok(pool);
    assert_int_equal(cm_db_begin(db), 0);
    exec_ok(db, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE");
    exec_with_ident(db, "SELECT count(*) FROM %I", table);
    exec_with_ident(db, "INSERT INTO %I (who) VALUES ('rival')", table);
    assert_int_equal(cm_db_commit(db), 0);
    cm_db_release(db);
}

/* Reads, lets the rival commit a conflicting write (first call only), then writes. */
static int read_then_write(cm_db_t *db, void *arg)
{
    struct tx_ctx *c = arg;
    c->calls++;
    int rc = cm_db_exec(db, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", 0, NULL, NULL);
    const char *const fmt_read[] = {"SELECT count(*) FROM %I", c->table};
    const char *const fmt_write[] = {"INSERT INTO %I (who) VALUES ('main')", c->table};
    PGresult *r = NULL;
    if (rc == 0)
        rc = cm_db_exec(db, "SELECT format($1::text, $2::text)", 2, fmt_read, &r);
    if (rc == 0)
        rc = cm_db_exec(db, PQgetvalue(r, 0, 0), 0, NULL, NULL);
    PQclear(r);
    r = NULL;
    if (rc == 0 && c->calls == 1)
        run_rival(c->pool, c->table);
    if (rc == 0)
        rc = cm_db_exec(db, "SELECT format($1::text, $2::text)", 2, fmt_write, &r);
    if (rc == 0)
        rc = cm_db_exec(db, PQgetvalue(r, 0, 0), 0, NULL, NULL);
    PQclear(r);
    return rc;
}

static void tx_retries_a_real_serialization_conflict(void **state)
{
    (void)state;
    cm_db_pool_t *pool = auth_pool(2, 2000);
    char *table = unique_name("ser");
    cm_db_t *db = acquire_ok(pool);
    exec_with_ident(db, "CREATE TABLE %I (who text NOT NULL)", table);
    cm_db_release(db);

    struct tx_ctx c = {.pool = pool, .table = table};
    assert_int_equal(cm_db_tx(pool, read_then_write, &c), 0);
    assert_int_equal(c.calls, 2);
    db = acquire_ok(pool);
    const char *const fmt[] = {"SELECT string_agg(who, ',' ORDER BY who) FROM %I", table};
    char *sql = query_value(db, "SELECT format($1::text, $2::text)", 2, fmt);
    char *who = query_value(db, sql, 0, NULL);
    assert_string_equal(who, "main,rival");
    free(who);
    free(sql);
    exec_with_ident(db, "DROP TABLE %I", table);
    cm_db_release(db);
    free(table);
    cm_db_pool_free(pool);
}

/* ---- migrations ------------------------------------------------------------- */

/* A fresh schema and an admin URL whose search_path is only that schema. */
struct mig_env {
    char *schema;
    char *url;
};

static struct mig_env mig_env_new(const char *tag)
{
    struct mig_env e = {.schema = unique_name(tag)};
    char *admin = t_env(PG_ENV, "ADMIN_DATABASE_URL");
    cm_db_pool_t *pool = pool_for(admin, 1, 1000);
    cm_db_t *db = acquire_ok(pool);
    exec_with_ident(db, "CREATE SCHEMA %I", e.schema);
    cm_db_release(db);
    cm_db_pool_free(pool);
    /* Connection options, not SQL: the name is [a-z0-9_] made by this test. */
    e.url = cm_xasprintf("%s%coptions=-csearch_path%%3D%s", admin, strchr(admin, '?') ? '&' : '?',
                         e.schema);
    free(admin);
    return e;
}

static void mig_env_free(struct mig_env *e)
{
    cm_db_pool_t *pool = pool_for(e->url, 1, 1000);
    cm_db_t *db = acquire_ok(pool);
    exec_with_ident(db, "DROP SCHEMA %I CASCADE", e->schema);
    cm_db_release(db);
    cm_db_pool_free(pool);
    free(e->schema);
    free(e->url);
}

/* Neither statement can run twice: CREATE TABLE would fail, the INSERT would double-count. */
static const cm_migration_t base_migrations[] = {
    {1, "001_log.sql",
     "CREATE TABLE applied (version int NOT NULL);\n"
     "SELECT pg_sleep(0.2);\n"
     "INSERT INTO applied VALUES (1);"},
    {2, "002_items.sql",
     "CREATE TABLE items (id int PRIMARY KEY);\n"
     "INSERT INTO applied VALUES (2);"},
};

static long long count_in(cm_db_pool_t *pool, const char *sql)
{
    cm_db_t *db = acquire_ok(pool);
    long long n = query_int(db, sql, 0, NULL);
    cm_db_release(db);
    return n;
}

static void migrations_apply_once_and_are_idempotent(void **state)
{
    (void)state;
    struct mig_env e = mig_env_new("mig1");
    cm_db_pool_t *pool = pool_for(e.url, 1, 1000);
    assert_int_equal(cm_db_migrate(pool, base_migrations, 2), 0);
    assert_int_equal(cm_db_migrate(pool, base_migrations, 2), 0);
    assert_int_equal(count_in(pool, "SELECT count(*) FROM applied"), 2);
    assert_int_equal(count_in(pool, "SELECT count(*) FROM schema_migrations"), 2);
    cm_db_t *db = acquire_ok(pool);
    char *names = query_value(
        db,
        "SELECT string_agg(version || ':' || name, ',' ORDER BY version) FROM schema_migrations", 0,
        NULL);
    assert_string_equal(names, "1:001_log.sql,2:002_items.sql");
    free(names);
    /* The advisory lock was released (a pool of one: this is the session that took it). */
    const char *locks = "SELECT count(*) FROM pg_locks"
                        " WHERE locktype = 'advisory' AND pid = pg_backend_pid()";
    assert_int_equal(query_int(db, locks, 0, NULL), 0);
    cm_db_release(db);
    cm_db_pool_free(pool);
    mig_env_free(&e);
}

struct migrator {
    const char *url;
    int rc;
};

static void *run_migrations(void *arg)
{
    struct migrator *m = arg;
    cm_db_pool_t *pool = pool_for(m->url, 1, 1000);
    m->rc = cm_db_migrate(pool, base_migrations, 2);
    cm_db_pool_free(pool);
    return NULL;
}

static void concurrent_migrators_apply_each_migration_once(void **state)
{
    (void)state;
    struct mig_env e = mig_env_new("mig2");
    struct migrator m[2] = {{e.url, 1}, {e.url, 1}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, run_migrations, &m[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(m[0].rc, 0);
    assert_int_equal(m[1].rc, 0);
    cm_db_pool_t *pool = pool_for(e.url, 1, 1000);
    assert_int_equal(count_in(pool, "SELECT count(*) FROM applied"), 2);
    assert_int_equal(count_in(pool, "SELECT count(*) FROM schema_migrations"), 2);
    cm_db_pool_free(pool);
    mig_env_free(&e);
}

static void a_renamed_migration_is_refused_and_nothing_is_applied(void **state)
{
    (void)state;
    struct mig_env e = mig_env_new("mig3");
    cm_db_pool_t *pool = pool_for(e.url, 1, 1000);
    assert_int_equal(cm_db_migrate(pool, base_migrations, 1), 0);
    const cm_migration_t renamed[] = {
        {1, "001_renamed.sql", base_migrations[0].sql},
        base_migrations[1],
    };
    assert_int_equal(cm_db_migrate(pool, renamed, 2), CM_ESTATE);
    assert_int_equal(count_in(pool, "SELECT count(*) FROM schema_migrations"), 1);
    assert_int_equal(count_in(pool, "SELECT count(*) FROM applied"), 1);
    assert_int_equal(count_in(pool, "SELECT count(*) FROM pg_tables WHERE tablename = 'items'"
                                    " AND schemaname = current_schema()"),
                     0);
    cm_db_pool_free(pool);
    mig_env_free(&e);
}

static void a_failing_migration_is_rolled_back_and_not_recorded(void **state)
{
    (void)state;
    struct mig_env e = mig_env_new("mig4");
    cm_db_pool_t *pool = pool_for(e.url, 1, 1000);
    const cm_migration_t broken[] = {
        base_migrations[0],
        {2, "002_broken.sql", "CREATE TABLE half (id int);\nINSERT INTO nowhere VALUES (1);"},
    };
    assert_int_equal(cm_db_migrate(pool, broken, 2), CM_EDB);
    assert_int_equal(count_in(pool, "SELECT count(*) FROM schema_migrations"), 1);
    assert_int_equal(count_in(pool, "SELECT count(*) FROM pg_tables WHERE tablename = 'half'"
                                    " AND schemaname = current_schema()"),
                     0);
    /* Once fixed, the next start applies it. */
    assert_int_equal(cm_db_migrate(pool, base_migrations, 2), 0);
    assert_int_equal(count_in(pool, "SELECT count(*) FROM schema_migrations"), 2);
    const cm_migration_t unordered[] = {base_migrations[1], base_migrations[0]};
    assert_int_equal(cm_db_migrate(pool, unordered, 2), CM_EINVAL);
    cm_db_pool_free(pool);
    mig_env_free(&e);
}

int main(void)
{
    cm_log_init("test_db", CM_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_bad_config_is_refused_with_einval),
        cmocka_unit_test(exec_stores_parameters_verbatim_including_null),
        cmocka_unit_test(several_statements_in_one_exec_are_refused),
        cmocka_unit_test(prepared_statements_are_prepared_once_and_reused),
        cmocka_unit_test(a_deallocated_statement_is_prepared_again),
        cmocka_unit_test(a_unique_violation_is_a_conflict_naming_the_constraint),
        cmocka_unit_test(a_syntax_error_is_edb_and_the_connection_stays_usable),
        cmocka_unit_test(failures_log_the_sqlstate_but_never_the_parameters),
        cmocka_unit_test(a_statement_timeout_is_applied_to_every_connection),
        cmocka_unit_test(an_exhausted_pool_answers_ebusy),
        cmocka_unit_test(a_release_wakes_a_waiting_acquire),
        cmocka_unit_test(an_unreachable_server_is_eunavail_quickly),
        cmocka_unit_test(ping_is_true_when_the_server_answers),
        cmocka_unit_test(a_killed_connection_in_use_fails_once_then_reconnects),
        cmocka_unit_test(killed_idle_connections_fail_at_most_once),
        cmocka_unit_test(ping_is_true_again_after_the_server_dropped_the_connection),
        cmocka_unit_test(begin_commit_and_rollback_work_on_a_connection),
        cmocka_unit_test(a_connection_left_in_a_transaction_is_closed_on_release),
        cmocka_unit_test(tx_commits_when_fn_succeeds_and_rolls_back_when_it_fails),
        cmocka_unit_test(tx_retries_serialization_failures_up_to_three_times),
        cmocka_unit_test(tx_does_not_retry_a_busy_code_that_is_not_from_the_server),
        cmocka_unit_test(tx_retries_a_real_serialization_conflict),
        cmocka_unit_test(migrations_apply_once_and_are_idempotent),
        cmocka_unit_test(concurrent_migrators_apply_each_migration_once),
        cmocka_unit_test(a_renamed_migration_is_refused_and_nothing_is_applied),
        cmocka_unit_test(a_failing_migration_is_rolled_back_and_not_recorded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
