/*
 * Tests for common/src/sweep.c (the retention sweeper) against a real,
 * throwaway PostgreSQL.
 *
 * LINKTR_TEST_NEEDS: postgres
 *
 * Each test has a pool of one connection on the auth role, so a TEMP table
 * and a pg_temp function (private to that session) stand for a service's
 * table and its retention_sweep(): no names clash with other tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cm/db.h"
#include "cm/metrics.h"
#include "cm/sweep.h"
#include "cm/util.h"
#include "capture.h"
#include "testenv.h"

#define PG_ENV "LINKTR_PG_ENV_FILE"

/* A service's sweep function in miniature: old rows of items go, at most
 * batch per call; live rows (newer than keep_s) stay. */
static const char *const setup_sql[] = {
    "CREATE TEMP TABLE items (id bigserial PRIMARY KEY, at timestamptz NOT NULL)",
    "CREATE INDEX ON items (at)",
    "CREATE FUNCTION pg_temp.sweep_items(batch int, keep_s bigint) "
    "RETURNS TABLE (tbl text, removed bigint) LANGUAGE plpgsql AS $$ "
    "DECLARE n bigint; BEGIN "
    "DELETE FROM items WHERE id IN (SELECT i.id FROM items i "
    "WHERE i.at < now() - make_interval(secs => keep_s) LIMIT batch FOR UPDATE SKIP LOCKED); "
    "GET DIAGNOSTICS n = ROW_COUNT; tbl := 'items'; removed := n; RETURN NEXT; "
    "tbl := 'empty'; removed := 0; RETURN NEXT; END $$",
    /* 2,500 rows a day old, 10 from now. */
    "INSERT INTO items (at) SELECT now() - interval '1 day' FROM generate_series(1, 2500)",
    "INSERT INTO items (at) SELECT now() FROM generate_series(1, 10)"};

static const char sweep_sql[] = "SELECT tbl, removed FROM pg_temp.sweep_items($1::int, $2::bigint)";

typedef struct fixture {
    cm_db_pool_t *pool;
    cm_metrics_t *metrics;
} fixture_t;

static void exec_ok(fixture_t *f, const char *sql)
{
    cm_db_t *db = NULL;
    assert_int_equal(cm_db_acquire(f->pool, &db), 0);
    assert_int_equal(cm_db_exec(db, sql, 0, NULL, NULL), 0);
    cm_db_release(db);
}

static long long count_items(fixture_t *f, const char *where)
{
    cm_db_t *db = NULL;
    assert_int_equal(cm_db_acquire(f->pool, &db), 0);
    PGresult *res = NULL;
    char *sql = cm_xasprintf("SELECT count(*) FROM items WHERE %s", where);
    assert_int_equal(cm_db_exec(db, sql, 0, NULL, &res), 0);
    free(sql);
    long long n = 0;
    assert_int_equal(cm_strtonum(PQgetvalue(res, 0, 0), 0, 1LL << 40, &n), 0);
    PQclear(res);
    cm_db_release(db);
    return n;
}

static int setup(void **state)
{
    fixture_t *f = cm_xcalloc(1, sizeof *f);
    char *url = t_env(PG_ENV, "AUTH_DATABASE_URL");
    cm_db_config_t cfg = {
        .conninfo = url, .size = 1, .acquire_timeout_ms = 30000, .connect_timeout_s = 5};
    int err = 0;
    f->pool = cm_db_pool_new(&cfg, &err);
    free(url);
    assert_non_null(f->pool);
    f->metrics = cm_metrics_new();
    for (size_t i = 0; i < sizeof setup_sql / sizeof setup_sql[0]; i++)
        exec_ok(f, setup_sql[i]);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    cm_db_pool_free(f->pool); /* the TEMP table and function go with the session */
    cm_metrics_free(f->metrics);
    free(f);
    return 0;
}

static cm_sweep_t *sweeper(fixture_t *f, int batch, int pause_ms, int interval_s)
{
    const char *params[1] = {"3600"}; /* keep an hour */
    cm_sweep_config_t cfg = {.service = "test",
                             .pool = f->pool,
                             .sql = sweep_sql,
                             .params = params,
                             .nparams = 1,
                             .batch = batch,
                             .interval_s = interval_s,
                             .pause_ms = pause_ms,
                             .metrics = f->metrics};
    int err = 0;
    cm_sweep_t *s = cm_sweep_new(&cfg, &err);
    assert_non_null(s);
    return s;
}

static char *rendered(fixture_t *f)
{
    cm_buf_t b;
    cm_buf_init(&b);
    cm_metrics_render(f->metrics, &b);
    return cm_buf_steal(&b);
}

static void one_run_deletes_old_rows_in_batches_until_a_batch_is_short(void **state)
{
    fixture_t *f = *state;
    cm_sweep_t *s = sweeper(f, 1000, 1, 60);
    long long removed = 0;
    int batches = 0;
    assert_int_equal(cm_sweep_run(s, &removed, &batches), 0);
    assert_int_equal(removed, 2500);
    assert_int_equal(batches, 3); /* 1,000 + 1,000 + 500 (short: done) */
    assert_int_equal(count_items(f, "true"), 10);
    assert_int_equal(count_items(f, "at > now() - interval '1 hour'"), 10);
    /* Nothing left: one short batch. */
    assert_int_equal(cm_sweep_run(s, &removed, &batches), 0);
    assert_int_equal(removed, 0);
    assert_int_equal(batches, 1);
    cm_sweep_free(s);
}

static void the_metric_counts_rows_removed_per_table(void **state)
{
    fixture_t *f = *state;
    cm_sweep_t *s = sweeper(f, 700, 0, 60);
    assert_int_equal(cm_sweep_run(s, NULL, NULL), 0);
    cm_sweep_free(s);
    char *text = rendered(f);
    assert_non_null(strstr(text, "# TYPE linktr_retention_rows_removed_total counter"));
    assert_non_null(strstr(text, "linktr_retention_rows_removed_total{table=\"items\"} 2500\n"));
    /* A table with nothing to remove gets no series. */
    assert_null(strstr(text, "table=\"empty\""));
    free(text);
}

static void a_failing_statement_is_reported_and_counted(void **state)
{
    fixture_t *f = *state;
    const char *params[1] = {"1"};
    cm_sweep_config_t cfg = {.service = "test",
                             .pool = f->pool,
                             .sql = "SELECT tbl, removed FROM pg_temp.no_such_sweep($1::int, $2)",
                             .params = params,
                             .nparams = 1,
                             .batch = 10,
                             .interval_s = 60,
                             .metrics = f->metrics};
    int err = 0;
    cm_sweep_t *s = cm_sweep_new(&cfg, &err);
    assert_non_null(s);
    assert_int_not_equal(cm_sweep_run(s, NULL, NULL), 0);
    cm_sweep_free(s);
    char *text = rendered(f);
    assert_non_null(strstr(text, "linktr_retention_errors_total 1\n"));
    free(text);
    assert_int_equal(count_items(f, "true"), 2510); /* nothing removed */
}

static void a_bad_config_is_refused(void **state)
{
    fixture_t *f = *state;
    const char *params[1] = {"1"};
    cm_sweep_config_t good = {.pool = f->pool,
                              .sql = sweep_sql,
                              .params = params,
                              .nparams = 1,
                              .batch = 10,
                              .interval_s = 60};
    cm_sweep_config_t bad[] = {good, good, good, good, good, good};
    bad[0].pool = NULL;
    bad[1].sql = NULL;
    bad[2].batch = 0;
    bad[3].interval_s = 0;
    bad[4].pause_ms = -1;
    bad[5].nparams = 9;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int err = 0;
        assert_null(cm_sweep_new(&bad[i], &err));
        assert_int_equal(err, CM_EINVAL);
    }
    assert_int_equal(cm_sweep_start(NULL), CM_EINVAL);
    cm_sweep_free(NULL);
}

static void the_timer_thread_sweeps_at_start(void **state)
{
    fixture_t *f = *state;
    cm_sweep_t *s = sweeper(f, 1000, 0, 86400);
    assert_int_equal(cm_sweep_start(s), 0);
    for (int i = 0; i < 300 && count_items(f, "true") > 10; i++)
        t_sleep_ms(100);
    assert_int_equal(count_items(f, "true"), 10);
    cm_sweep_free(s); /* waiting a day for the next sweep: stopped at once */
}

static void stopping_cuts_a_long_pause_between_batches_short(void **state)
{
    /* A pause of a minute between batches: stop after the first batch;
     * free returns without waiting out the pause or sweeping the rest. */
    fixture_t *f = *state;
    cm_sweep_t *s = sweeper(f, 1000, 60000, 86400);
    assert_int_equal(cm_sweep_start(s), 0);
    for (int i = 0; i < 300 && count_items(f, "true") > 1510; i++)
        t_sleep_ms(100);
    int64_t t0 = cm_now_us();
    cm_sweep_free(s);
    int64_t waited_ms = (cm_now_us() - t0) / 1000;
    assert_true(waited_ms < 30000); /* generous: far less than the pause */
    assert_int_equal(count_items(f, "true"), 1510);
}

/* Loads the RETENTION_* variables; rc gets cm_cfg_finish's answer. */
typedef struct load {
    cm_retention_t r;
    int rc;
} load_t;

static void load(void *arg)
{
    load_t *l = arg;
    cm_cfg_t c;
    cm_cfg_init(&c, "test");
    cm_retention_load(&c, &l->r);
    l->rc = cm_cfg_finish(&c);
}

static void retention_variables_have_defaults_and_bounds(void **state)
{
    (void)state;
    unsetenv("RETENTION_INTERVAL_S");
    unsetenv("RETENTION_BATCH");
    unsetenv("RETENTION_PAUSE_MS");
    unsetenv("RETENTION_DAYS");
    setenv("RETENTION_DEDUP_DAYS", "3", 1); /* shorter than the topics' 7 days */
    load_t l = {0};
    char *err = t_capture(STDERR_FILENO, load, &l);
    assert_int_not_equal(l.rc, 0);
    assert_non_null(strstr(err, "RETENTION_DEDUP_DAYS"));
    free(err);
    unsetenv("RETENTION_DEDUP_DAYS");
    err = t_capture(STDERR_FILENO, load, &l);
    assert_int_equal(l.rc, 0);
    free(err);
    assert_int_equal(l.r.interval_s, 300);
    assert_int_equal(l.r.batch, 1000);
    assert_int_equal(l.r.pause_ms, 50);
    assert_int_equal(l.r.keep_days, 7);
    assert_int_equal(l.r.dedup_days, 30);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(one_run_deletes_old_rows_in_batches_until_a_batch_is_short,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(the_metric_counts_rows_removed_per_table, setup, teardown),
        cmocka_unit_test_setup_teardown(a_failing_statement_is_reported_and_counted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_bad_config_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(the_timer_thread_sweeps_at_start, setup, teardown),
        cmocka_unit_test_setup_teardown(stopping_cuts_a_long_pause_between_batches_short, setup,
                                        teardown),
        cmocka_unit_test(retention_variables_have_defaults_and_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
