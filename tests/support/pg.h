/*
 * pg.h — the unit-test PostgreSQL (the "postgres" ctest fixture) as a pool.
 *
 * A test whose source holds the line "LINKTR_TEST_NEEDS: postgres" runs
 * with LINKTR_PG_ENV_FILE naming the fixture's pg.env (see testenv.h); the
 * service roles' URLs are its AUTH_DATABASE_URL, REFERRAL_DATABASE_URL and
 * MAILER_DATABASE_URL.
 */
#ifndef LINKTR_TEST_PG_H
#define LINKTR_TEST_PG_H

#include <stddef.h>

#include "cm/db.h"

/**
 * A pool of size connections on the database URL under url_key in pg.env
 * (acquire timeout 5 s, connect timeout 5 s), with the n migrations applied
 * (none when migrations is NULL). Fails the test when either step fails.
 * The caller frees the pool with cm_db_pool_free.
 */
cm_db_pool_t *t_pg_pool(const char *url_key, int size, const cm_migration_t *migrations, size_t n);

/**
 * Runs sql with one text parameter (NULL: none) on db and returns the first
 * column of the first row as a new string the caller free()s: "" when there
 * is no row, "<null>" for SQL NULL. Fails the test when the statement fails.
 * For what no store function reads (arranging ages, checking side tables).
 */
char *t_pg_value(cm_db_t *db, const char *sql, const char *param);

/** A test group's database: a pool, and one connection inside a transaction per test. */
typedef struct t_pg_tx {
    cm_db_pool_t *pool; /* the group's (t_pg_pool) */
    cm_db_t *db;        /* between t_pg_begin and t_pg_rollback: the test's connection */
} t_pg_tx_t;

/** cmocka setup (*state is a t_pg_tx_t): takes a connection and begins a transaction. */
int t_pg_begin(void **state);

/** cmocka teardown: rolls the test's transaction back and gives the connection back. */
int t_pg_rollback(void **state);

/** cmocka group teardown: frees the pool and the t_pg_tx_t itself (calloc'ed by the test). */
int t_pg_tx_free(void **state);

#endif
