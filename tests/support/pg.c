#include "pg.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include "cm/util.h"
#include "testenv.h"

cm_db_pool_t *t_pg_pool(const char *url_key, int size, const cm_migration_t *migrations, size_t n)
{
    char *url = t_env("LINKTR_PG_ENV_FILE", url_key);
    cm_db_config_t c = {
        .conninfo = url, .size = size, .acquire_timeout_ms = 5000, .connect_timeout_s = 5};
    int err = 0;
    cm_db_pool_t *pool = cm_db_pool_new(&c, &err);
    free(url);
    assert_non_null(pool);
    if (migrations)
        assert_int_equal(cm_db_migrate(pool, migrations, n), 0);
    return pool;
}

char *t_pg_value(cm_db_t *db, const char *sql, const char *param)
{
    const char *p[1] = {param};
    PGresult *res = NULL;
    assert_int_equal(cm_db_exec(db, sql, param ? 1 : 0, p, &res), 0);
    char *v = NULL;
    if (PQntuples(res) < 1 || PQnfields(res) < 1)
        v = cm_xstrdup("");
    else
        v = cm_xstrdup(PQgetisnull(res, 0, 0) ? "<null>" : PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

int t_pg_begin(void **state)
{
    t_pg_tx_t *t = *state;
    assert_int_equal(cm_db_acquire(t->pool, &t->db), 0);
    assert_int_equal(cm_db_begin(t->db), 0);
    return 0;
}

int t_pg_rollback(void **state)
{
    t_pg_tx_t *t = *state;
    cm_db_rollback(t->db);
    cm_db_release(t->db);
    t->db = NULL;
    return 0;
}

int t_pg_tx_free(void **state)
{
    t_pg_tx_t *t = *state;
    cm_db_pool_free(t->pool);
    free(t);
    *state = NULL;
    return 0;
}
