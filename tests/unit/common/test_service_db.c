/*
 * Tests for common/src/service_db.c: what a service with a database adds to
 * the start-up path, against the real PostgreSQL of the "postgres" fixture,
 * in a schema of this test's own.
 *
 * LINKTR_TEST_NEEDS: postgres
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm/service.h"
#include "cm/sweep.h"
#include "cm/util.h"
#include "pg.h"
#include "testenv.h"

#define PG_ENV "LINKTR_PG_ENV_FILE"

/* A table and the retention function every service schema has. */
static const cm_migration_t MIGRATIONS[] = {
    {1, "001_things.sql",
     "CREATE TABLE things (id int PRIMARY KEY);\n"
     "CREATE FUNCTION retention_sweep(batch int, keep_s bigint, dedup_s bigint)\n"
     "    RETURNS TABLE (tbl text, removed bigint) LANGUAGE sql\n"
     "    AS $$ SELECT 'things'::text, 0::bigint $$;"},
    {0, NULL, NULL},
};

typedef struct fixture {
    char *schema;
    char *url; /* the admin URL with search_path set to schema */
} fixture_t;

/* Runs sql (one statement) on a one-connection pool on url. */
static void run_sql(const char *url, const char *fmt, const char *ident)
{
    cm_db_config_t dc = {.conninfo = url, .size = 1, .acquire_timeout_ms = 5000};
    int err = 0;
    cm_db_pool_t *pool = cm_db_pool_new(&dc, &err);
    assert_non_null(pool);
    cm_db_t *db = NULL;
    assert_int_equal(cm_db_acquire(pool, &db), 0);
    const char *p[2] = {fmt, ident};
    PGresult *r = NULL;
    assert_int_equal(cm_db_exec(db, "SELECT format($1::text, $2::text)", 2, p, &r), 0);
    char *stmt = cm_xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    assert_int_equal(cm_db_exec(db, stmt, 0, NULL, NULL), 0);
    free(stmt);
    cm_db_release(db);
    cm_db_pool_free(pool);
}

static int setup(void **state)
{
    fixture_t *f = cm_xcalloc(1, sizeof *f);
    char *admin = t_env(PG_ENV, "ADMIN_DATABASE_URL");
    f->schema = cm_xasprintf("t_svcdb_%s", t_unique());
    run_sql(admin, "CREATE SCHEMA %I", f->schema);
    /* Connection options, not SQL: the name is [a-z0-9_] made by this test. */
    f->url = cm_xasprintf("%s%coptions=-csearch_path%%3D%s", admin, strchr(admin, '?') ? '&' : '?',
                          f->schema);
    free(admin);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    run_sql(f->url, "DROP SCHEMA %I CASCADE", f->schema);
    free(f->schema);
    free(f->url);
    free(f);
    return 0;
}

static cm_service_config_t config_for(const char *url)
{
    cm_service_config_t cfg = {
        .database_url = (char *)(uintptr_t)url,
        .db_pool_size = 2,
        .retention = {
            .interval_s = 3600, .batch = 100, .pause_ms = 0, .keep_days = 7, .dedup_days = 30}};
    return cfg;
}

static void open_applies_the_migrations_and_start_adds_pool_metrics_and_the_sweeper(void **state)
{
    fixture_t *f = *state;
    const cm_service_def_t def = {.name = "svcdb", .migrations = MIGRATIONS};
    cm_service_config_t cfg = config_for(f->url);
    cm_db_pool_t *pool = NULL;
    assert_int_equal(cm_service_postgres.open(&def, &cfg, &pool), 0);
    assert_non_null(pool);
    cm_db_t *db = NULL;
    assert_int_equal(cm_db_acquire(pool, &db), 0);
    char *n = t_pg_value(db, "SELECT count(*) FROM schema_migrations", NULL);
    assert_string_equal(n, "1");
    free(n);
    cm_db_release(db);
    cm_metrics_t *m = cm_metrics_new();
    cm_sweep_t *sweeper = NULL;
    assert_int_equal(cm_service_postgres.start(&def, &cfg, pool, m, &sweeper), 0);
    assert_non_null(sweeper);
    cm_buf_t out;
    cm_buf_init(&out);
    cm_metrics_render(m, &out);
    assert_non_null(strstr(out.data, "\nlinktr_db_pool_connections_max 2\n"));
    /* In use: 0 or the sweeper's first run, which starts at once. */
    assert_non_null(strstr(out.data, "\nlinktr_db_pool_connections_in_use "));
    assert_non_null(strstr(out.data, "\nlinktr_db_pool_waits_total 0\n"));
    assert_non_null(strstr(out.data, "\nlinktr_db_pool_timeouts_total 0\n"));
    cm_buf_dispose(&out);
    cm_service_postgres.stop(sweeper);
    cm_service_postgres.close(pool);
    cm_metrics_free(m);
}

static void a_database_that_cannot_be_reached_fails_the_open(void **state)
{
    (void)state;
    const cm_service_def_t def = {.name = "svcdb", .migrations = MIGRATIONS};
    cm_service_config_t cfg = config_for("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1");
    cm_db_pool_t *pool = NULL;
    assert_int_not_equal(cm_service_postgres.open(&def, &cfg, &pool), 0);
    cm_service_postgres.close(pool); /* whatever open left: NULL-safe */
    cm_service_postgres.stop(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            open_applies_the_migrations_and_start_adds_pool_metrics_and_the_sweeper, setup,
            teardown),
        cmocka_unit_test(a_database_that_cannot_be_reached_fails_the_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
