/*
 * Tests for services/referral/sweep.c against the real PostgreSQL: one
 * sweep expires every pending referral past the TTL, batch after batch,
 * and nothing else; it forgets old processed event ids; the sweep thread
 * runs at once and stops when asked; a database that cannot be reached is
 * an error, not a crash.
 *
 * The sweeps here commit, so the rows they act on are dated in the 1990s
 * with a TTL that reaches back to 2000-01-01: other tests work on recent
 * dates (or the 1980s, test_store), which these sweeps leave alone.
 * LINKTR_TEST_NEEDS: postgres
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm/db.h"
#include "cm/util.h"
#include "config.h"
#include "pg.h"
#include "store.h"
#include "sweep.h"
#include "testenv.h"

extern const cm_migration_t referral_migrations[];
extern const size_t referral_migrations_count;

typedef struct fixture {
    ref_config_t cfg;
    cm_db_pool_t *pool;
} fixture_t;

/* Whole days from 2000-01-01 to now: the TTL that expires only older rows. */
static int days_since_2000(void)
{
    return (int)((cm_now_us() / 1000000LL - 946684800LL) / 86400LL);
}

static int setup(void **state)
{
    fixture_t *f = cm_xcalloc(1, sizeof *f);
    f->pool = t_pg_pool("REFERRAL_DATABASE_URL", 2, referral_migrations, referral_migrations_count);
    f->cfg.ttl_days = days_since_2000();
    f->cfg.sweep_interval_s = 3600;
    ref_rules_defaults(&f->cfg.rules);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    cm_db_pool_free(f->pool);
    ref_config_dispose(&f->cfg);
    free(f);
    return 0;
}

/* A pending referral of a fresh user by referrer_id, created at `at` (committed). */
static void refer_at(fixture_t *f, const char *referrer_id, const char *at, char id[37])
{
    cm_db_t *db = NULL;
    cm_uuid_v4(id);
    assert_int_equal(cm_db_acquire(f->pool, &db), 0);
    assert_int_equal(ref_store_add_referral(db, referrer_id, id, at), 0);
    cm_db_release(db);
}

static ref_stats_t stats_of(fixture_t *f, const char *user_id)
{
    cm_db_t *db = NULL;
    ref_stats_t s;
    assert_int_equal(cm_db_acquire(f->pool, &db), 0);
    assert_int_equal(ref_store_stats(db, user_id, &s), 0);
    cm_db_release(db);
    return s;
}

/* The value of a one-parameter query on a pooled connection, as a new string. */
static char *value(fixture_t *f, const char *sql, const char *param)
{
    cm_db_t *db = NULL;
    assert_int_equal(cm_db_acquire(f->pool, &db), 0);
    char *v = t_pg_value(db, sql, param);
    cm_db_release(db);
    return v;
}

static void assert_value(fixture_t *f, const char *sql, const char *param, const char *want)
{
    char *v = value(f, sql, param);
    assert_string_equal(v, want);
    free(v);
}

#define OLD_PENDING (REF_SWEEP_BATCH + 5)

static void one_sweep_expires_every_old_pending_referral_batch_after_batch(void **state)
{
    fixture_t *f = *state;
    char referrer[37], id[37], young[37], decided[37], at[32];
    cm_uuid_v4(referrer);
    for (int i = 0; i < OLD_PENDING; i++) {
        snprintf(at, sizeof at, "1995-01-01T%02d:%02d:00Z", i / 60, i % 60);
        refer_at(f, referrer, at, id);
    }
    refer_at(f, referrer, "1999-12-01T00:00:00Z", decided);
    refer_at(f, referrer, "2000-06-01T00:00:00Z", young);
    cm_db_t *db = NULL;
    ref_conversion_t c;
    assert_int_equal(cm_db_acquire(f->pool, &db), 0);
    assert_int_equal(
        ref_store_convert(db, decided, REF_SUCCESSFUL, NULL, "1999-12-02T00:00:00Z", &c), 0);
    cm_db_release(db);

    char want[16];
    snprintf(want, sizeof want, "%d", OLD_PENDING);
    int expired = -1;
    assert_int_equal(ref_sweep_once(&f->cfg, f->pool, &expired), 0);
    assert_true(expired >= OLD_PENDING); /* more than one batch in one call */
    ref_stats_t s = stats_of(f, referrer);
    assert_int_equal(s.total, OLD_PENDING + 2);
    assert_int_equal(s.expired, OLD_PENDING);
    assert_int_equal(s.pending, 1);
    assert_int_equal(s.successful, 1);
    assert_value(f,
                 "SELECT status || ':' || coalesce(reason, '') FROM referrals "
                 "WHERE referred_id = $1::uuid",
                 young, "pending:");
    assert_value(f, "SELECT status FROM referrals WHERE referred_id = $1::uuid", decided,
                 "successful");
    assert_value(f,
                 "SELECT count(*) FROM referrals WHERE referrer_id = $1::uuid "
                 "AND status = 'expired' AND reason = 'ttl' AND converted_at IS NOT NULL",
                 referrer, want);
    /* Each expiry is announced through the outbox, keyed by the referrer. */
    assert_value(f,
                 "SELECT count(*) FROM outbox WHERE key = $1 AND "
                 "payload::jsonb #>> '{data,status}' = 'expired'",
                 referrer, want);

    assert_int_equal(ref_sweep_once(&f->cfg, f->pool, &expired), 0);
    assert_int_equal(expired, 0);
    assert_int_equal(stats_of(f, referrer).expired, OLD_PENDING);
    assert_int_equal(ref_sweep_once(&f->cfg, f->pool, NULL), 0); /* *expired is optional */
}

static void the_sweep_thread_sweeps_at_once_and_stops_when_asked(void **state)
{
    fixture_t *f = *state;
    char referrer[37], id[37];
    cm_uuid_v4(referrer);
    refer_at(f, referrer, "1996-01-01T00:00:00Z", id);
    int err = 0;
    ref_sweep_t *s = ref_sweep_start(&f->cfg, f->pool, &err);
    assert_non_null(s);
    /* The first sweep runs when the thread starts, not an interval later. */
    long long expired = 0;
    for (int waited = 0; waited < 30000 && expired == 0; waited += 50) {
        expired = stats_of(f, referrer).expired;
        if (expired == 0)
            t_sleep_ms(50);
    }
    assert_int_equal(expired, 1);
    ref_sweep_stop(s); /* wakes the thread from its hour-long wait */
    ref_sweep_stop(NULL);
}

static void start_refuses_a_missing_pool_or_a_zero_interval(void **state)
{
    fixture_t *f = *state;
    int err = 0;
    assert_null(ref_sweep_start(&f->cfg, NULL, &err));
    assert_int_equal(err, CM_EINVAL);
    err = 0;
    assert_null(ref_sweep_start(NULL, f->pool, &err));
    assert_int_equal(err, CM_EINVAL);
    ref_config_t zero = f->cfg;
    zero.sweep_interval_s = 0;
    err = 0;
    assert_null(ref_sweep_start(&zero, f->pool, &err));
    assert_int_equal(err, CM_EINVAL);
}

static void a_sweep_without_a_database_is_unavailable(void **state)
{
    fixture_t *f = *state;
    char url[96];
    snprintf(url, sizeof url, "postgresql://referral:referral@127.0.0.1:%d/linktr", t_free_port());
    cm_db_config_t c = {
        .conninfo = url, .size = 1, .acquire_timeout_ms = 1000, .connect_timeout_s = 2};
    int err = 0;
    cm_db_pool_t *down = cm_db_pool_new(&c, &err);
    assert_non_null(down);
    int expired = -1;
    assert_int_equal(ref_sweep_once(&f->cfg, down, &expired), CM_EUNAVAIL);
    assert_int_equal(expired, 0);
    cm_db_pool_free(down);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_sweep_expires_every_old_pending_referral_batch_after_batch),
        cmocka_unit_test(the_sweep_thread_sweeps_at_once_and_stops_when_asked),
        cmocka_unit_test(start_refuses_a_missing_pool_or_a_zero_interval),
        cmocka_unit_test(a_sweep_without_a_database_is_unavailable),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
