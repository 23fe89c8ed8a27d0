/*
 * Tests for common/src/outbox.c: cm_outbox_add() and the relay, against a
 * real PostgreSQL and librdkafka's mock cluster running in this process as a
 * real broker (real sockets on 127.0.0.1).
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

#include <libpq-fe.h>

#include "cm/consumer.h"
#include "cm/db.h"
#include "cm/events.h"
#include "cm/log.h"
#include "cm/metrics.h"
#include "cm/outbox.h"
#include "cm/producer.h"
#include "cm/util.h"
#include "kafkamock.h"
#include "schema.h"
#include "testenv.h"

typedef struct pgfix {
    t_kafka_t *kafka;
    char *schema;
    char *admin;    /* ADMIN_DATABASE_URL */
    char *conninfo; /* admin URL with search_path = schema */
    cm_db_pool_t *pool;
    cm_outbox_relay_t *relay; /* the running relay, stopped by teardown if a test failed */
} pgfix_t;

/* Runs sql as the superuser; returns the first value of the result (or NULL), which the caller
 * free()s. */
/* Runs sql with at most one text parameter as the superuser; the first value or NULL. */
static char *admin_query1(const char *url, const char *sql, const char *param)
{
    PGconn *c = PQconnectdb(url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    const char *params[1] = {param};
    /* Without a parameter: PQexec, so set-up DDL may hold several statements. */
    PGresult *r = param ? PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0) : PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    char *v = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? cm_xstrdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    PQfinish(c);
    return v;
}

static char *admin_query(const char *url, const char *sql)
{
    return admin_query1(url, sql, NULL);
}

static void admin_exec(const char *url, const char *sql)
{
    free(admin_query(url, sql));
}

static int setup_pg(void **state)
{
    t_kafka_setup(state);
    pgfix_t *g = cm_xcalloc(1, sizeof *g);
    g->kafka = *state;
    static int n;
    g->schema = cm_xasprintf("kt_%s_%d", t_unique(), ++n);
    g->admin = t_env("LINKTR_PG_ENV_FILE", "ADMIN_DATABASE_URL");
    g->conninfo = cm_xasprintf("%s%soptions=-csearch_path%%3D%s&application_name=%s", g->admin,
                               strchr(g->admin, '?') ? "&" : "?", g->schema, g->schema);
    /* Test set-up only: the schema name is made here, never from input. */
    char *sql = cm_xasprintf(
        "CREATE SCHEMA %s; CREATE TABLE %s.outbox (id bigserial primary key, event_id uuid not "
        "null unique, topic text not null, key text not null, payload text not null, created_at "
        "timestamptz not null default now(), sent_at timestamptz)",
        g->schema, g->schema);
    admin_exec(g->admin, sql);
    free(sql);
    cm_db_config_t cfg = {g->conninfo, 4, 5000, 5, 0};
    int err = 0;
    g->pool = cm_db_pool_new(&cfg, &err);
    assert_non_null(g->pool);
    *state = g;
    return 0;
}

static int teardown_pg(void **state)
{
    pgfix_t *g = *state;
    cm_outbox_relay_stop(g->relay);
    cm_db_pool_free(g->pool);
    char *sql = cm_xasprintf("DROP SCHEMA %s CASCADE", g->schema);
    admin_exec(g->admin, sql);
    free(sql);
    void *k = g->kafka;
    t_kafka_teardown(&k);
    free(g->schema);
    free(g->admin);
    free(g->conninfo);
    free(g);
    return 0;
}

static json_t *verified_event(char user_id[37])
{
    cm_uuid_v4(user_id);
    char at[32];
    cm_format_time(cm_now_us(), at);
    return cm_event_new(CM_EV_USER_VERIFIED, "auth",
                        json_pack("{s:s, s:s}", "user_id", user_id, "verified_at", at));
}

/* Adds the events in one transaction and commits (or rolls back). */
static void add_events(pgfix_t *g, json_t **events, const char **keys, int n, bool commit)
{
    cm_db_t *db = NULL;
    assert_int_equal(cm_db_acquire(g->pool, &db), 0);
    assert_int_equal(cm_db_begin(db), 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(cm_outbox_add(db, "kt_outbox", keys[i], events[i]), 0);
    if (commit)
        assert_int_equal(cm_db_commit(db), 0);
    else
        cm_db_rollback(db);
    cm_db_release(db);
}

#define UNSENT "SELECT count(*) FROM outbox WHERE sent_at IS NULL"
#define SENT "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"
#define ALL "SELECT count(*) FROM outbox"

static long long count_rows(pgfix_t *g, const char *sql)
{
    cm_db_t *db = NULL;
    PGresult *res = NULL;
    assert_int_equal(cm_db_acquire(g->pool, &db), 0);
    assert_int_equal(cm_db_exec(db, sql, 0, NULL, &res), 0);
    long long v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    cm_db_release(db);
    return v;
}

static cm_outbox_relay_t *start_relay(pgfix_t *g, cm_producer_t *p, cm_metrics_t *m)
{
    cm_outbox_config_t cfg = {g->conninfo, "kt_outbox", g->pool, p, 0, m};
    int err = -1;
    cm_outbox_relay_t *r = cm_outbox_relay_start(&cfg, &err);
    assert_int_equal(err, 0);
    assert_non_null(r);
    g->relay = r;
    return r;
}

static void stop_relay(pgfix_t *g)
{
    cm_outbox_relay_stop(g->relay);
    g->relay = NULL;
}

/* Checks each received value is a schema-valid envelope keyed by its user id. */
static void assert_envelopes(t_seen_t *s)
{
    for (int i = 0; i < s->n; i++) {
        json_t *ev = json_loads(s->values[i], 0, NULL);
        char err[256];
        if (!t_schema_validate_event(ev, err, sizeof err))
            fail_msg("emitted event does not match its schema: %s", err);
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(ev, "data"), "user_id")), s->keys[i]);
        json_decref(ev);
    }
}

static void committed_outbox_rows_are_published_and_marked_sent(void **state)
{
    pgfix_t *g = *state;
    cm_producer_t *p = cm_producer_new(g->kafka->bootstrap, "test", NULL);
    cm_metrics_t *m = cm_metrics_new();
    cm_outbox_relay_t *r = start_relay(g, p, m);
    t_sleep_ms(300); /* the relay is idle, listening */
    char u1[37], u2[37];
    json_t *events[] = {verified_event(u1), verified_event(u2)};
    const char *keys[] = {u1, u2};
    add_events(g, events, keys, 2, true);
    int64_t t0 = cm_now_mono_ms();
    while (count_rows(g, UNSENT) > 0 && cm_now_mono_ms() - t0 < T_KAFKA_WAIT_MS)
        t_sleep_ms(20);
    assert_int_equal(count_rows(g, SENT), 2);
    t_seen_t s;
    t_seen_init(&s);
    cm_consumer_t *c = t_start_consumer(g->kafka, "g.outbox", CM_EV_USER_VERIFIED, &s, NULL);
    assert_int_equal(t_seen_wait(&s, 2, T_KAFKA_WAIT_MS), 2);
    cm_consumer_stop(c);
    assert_envelopes(&s);
    cm_outbox_relay_kick(r); /* one more round refreshes the backlog gauge */
    t_sleep_ms(300);
    stop_relay(g);
    assert_true(t_wait_metric(m, "linktr_outbox_published_total 2", 0));
    assert_true(t_wait_metric(m, "linktr_outbox_backlog 0", 0));
    t_seen_dispose(&s);
    json_decref(events[0]);
    json_decref(events[1]);
    cm_metrics_free(m);
    cm_producer_free(p);
}

static void notify_wakes_the_relay_before_its_safety_net_timer(void **state)
{
    pgfix_t *g = *state;
    cm_producer_t *p = cm_producer_new(g->kafka->bootstrap, "test", NULL);
    start_relay(g, p, NULL);
    t_sleep_ms(500); /* first round done, now waiting for up to 2 s */
    /* Three commits at different points of the 2 s timer: each goes out at once. */
    for (int i = 0; i < 3; i++) {
        char u[37];
        json_t *events[] = {verified_event(u)};
        const char *keys[] = {u};
        add_events(g, events, keys, 1, true);
        int64_t t0 = cm_now_mono_ms();
        while (count_rows(g, UNSENT) > 0 && cm_now_mono_ms() - t0 < T_KAFKA_WAIT_MS)
            t_sleep_ms(10);
        int64_t took = cm_now_mono_ms() - t0;
        assert_int_equal(count_rows(g, UNSENT), 0);
        assert_true(took < 700);
        json_decref(events[0]);
        t_sleep_ms(300);
    }
    stop_relay(g);
    cm_producer_free(p);
}

static void rolled_back_outbox_insert_publishes_nothing(void **state)
{
    pgfix_t *g = *state;
    cm_producer_t *p = cm_producer_new(g->kafka->bootstrap, "test", NULL);
    cm_outbox_relay_t *r = start_relay(g, p, NULL);
    char u1[37], u2[37];
    json_t *events[] = {verified_event(u1), verified_event(u2)};
    const char *keys[] = {u1, u2};
    add_events(g, events, keys, 1, false); /* rolled back */
    add_events(g, events + 1, keys + 1, 1, true);
    t_seen_t s;
    t_seen_init(&s);
    cm_consumer_t *c = t_start_consumer(g->kafka, "g.rollback", CM_EV_USER_VERIFIED, &s, NULL);
    assert_int_equal(t_seen_wait(&s, 1, T_KAFKA_WAIT_MS), 1);
    cm_outbox_relay_kick(r);
    t_sleep_ms(1000);
    cm_consumer_stop(c);
    stop_relay(g);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.keys[0], u2);
    assert_int_equal(count_rows(g, ALL), 1);
    t_seen_dispose(&s);
    json_decref(events[0]);
    json_decref(events[1]);
    cm_producer_free(p);
}

/* The value of an unlabelled sample in m's text, or -1 when absent. */
static double sample_of(cm_metrics_t *m, const char *name)
{
    cm_buf_t text;
    cm_buf_init(&text);
    cm_metrics_render(m, &text);
    char *needle = cm_xasprintf("\n%s ", name);
    const char *at = text.data ? strstr(text.data, needle) : NULL;
    double v = at ? strtod(at + strlen(needle), NULL) : -1;
    free(needle);
    cm_buf_dispose(&text);
    return v;
}

static void rows_wait_while_kafka_is_down_and_go_out_once_it_is_back(void **state)
{
    pgfix_t *g = *state;
    char *dead_bootstrap = t_closed_port_bootstrap();
    cm_producer_t *dead = cm_producer_new(dead_bootstrap, "test", NULL);
    cm_metrics_t *m = cm_metrics_new();
    start_relay(g, dead, m);
    char u1[37], u2[37];
    json_t *events[] = {verified_event(u1), verified_event(u2)};
    const char *keys[] = {u1, u2};
    add_events(g, events, keys, 2, true);
    t_sleep_ms(2500);
    assert_int_equal(count_rows(g, UNSENT), 2);
    /* The gauge shows them while the relay still waits for the broker's answer. */
    assert_true(t_wait_metric(m, "linktr_outbox_backlog 2\n", 0));
    /* ...and how long the oldest has waited: refreshed at least once a round (at most
     * OUTBOX_ROUND_MS while the broker does not answer), so poll generously. */
    int64_t until = cm_now_mono_ms() + 15000;
    while (sample_of(m, "linktr_outbox_oldest_unsent_age_seconds") < 1.0 &&
           cm_now_mono_ms() < until)
        t_sleep_ms(100);
    assert_true(sample_of(m, "linktr_outbox_oldest_unsent_age_seconds") >= 1.0);
    int64_t t0 = cm_now_mono_ms();
    stop_relay(g);
    assert_true(cm_now_mono_ms() - t0 < 1000); /* stop does not wait for the broker */
    assert_int_equal(count_rows(g, UNSENT), 2);
    cm_producer_free(dead);
    assert_true(t_wait_metric(m, "linktr_outbox_backlog 2", 0));

    cm_producer_t *p = cm_producer_new(g->kafka->bootstrap, "test", NULL);
    start_relay(g, p, m);
    t_seen_t s;
    t_seen_init(&s);
    cm_consumer_t *c = t_start_consumer(g->kafka, "g.down", CM_EV_USER_VERIFIED, &s, NULL);
    assert_true(t_seen_wait(&s, 2, T_KAFKA_WAIT_MS) >= 2);
    cm_consumer_stop(c);
    t0 = cm_now_mono_ms();
    while (count_rows(g, UNSENT) > 0 && cm_now_mono_ms() - t0 < T_KAFKA_WAIT_MS)
        t_sleep_ms(20);
    stop_relay(g);
    assert_int_equal(count_rows(g, UNSENT), 0);
    assert_envelopes(&s);
    bool got1 = false, got2 = false;
    for (int i = 0; i < s.n; i++) {
        got1 = got1 || strcmp(s.keys[i], u1) == 0;
        got2 = got2 || strcmp(s.keys[i], u2) == 0;
    }
    assert_true(got1 && got2);
    assert_true(t_wait_metric(m, "linktr_outbox_backlog 0", 0));
    assert_true(t_wait_metric(m, "linktr_outbox_oldest_unsent_age_seconds 0\n", 0));
    assert_true(t_wait_metric(m, "linktr_outbox_published_total 2", 0));
    t_seen_dispose(&s);
    json_decref(events[0]);
    json_decref(events[1]);
    cm_metrics_free(m);
    cm_producer_free(p);
    free(dead_bootstrap);
}

/* The pid of the relay's LISTEN backend in this test's schema, or NULL. */
static char *listen_pid(pgfix_t *g)
{
    char *pid = admin_query1(g->admin,
                             "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
                             "AND query LIKE 'LISTEN %'",
                             g->schema);
    return pid;
}

static void relay_listens_again_after_its_connection_is_killed(void **state)
{
    pgfix_t *g = *state;
    cm_producer_t *p = cm_producer_new(g->kafka->bootstrap, "test", NULL);
    start_relay(g, p, NULL);
    char *old = NULL;
    int64_t until = cm_now_mono_ms() + 5000;
    while (!(old = listen_pid(g)) && cm_now_mono_ms() < until)
        t_sleep_ms(50);
    assert_non_null(old);
    free(admin_query1(g->admin, "SELECT pg_terminate_backend($1::int)", old));
    char *now = NULL;
    until = cm_now_mono_ms() + 8000;
    while (cm_now_mono_ms() < until) {
        free(now);
        now = listen_pid(g);
        if (now && strcmp(now, old) != 0)
            break;
        t_sleep_ms(50);
    }
    assert_non_null(now);
    assert_string_not_equal(now, old);
    char u[37];
    json_t *events[] = {verified_event(u)};
    const char *keys[] = {u};
    add_events(g, events, keys, 1, true);
    int64_t t0 = cm_now_mono_ms();
    while (count_rows(g, UNSENT) > 0 && cm_now_mono_ms() - t0 < T_KAFKA_WAIT_MS)
        t_sleep_ms(20);
    assert_int_equal(count_rows(g, UNSENT), 0);
    stop_relay(g);
    json_decref(events[0]);
    free(old);
    free(now);
    cm_producer_free(p);
}

static void outbox_add_refuses_a_bad_channel_key_or_envelope(void **state)
{
    pgfix_t *g = *state;
    char u[37];
    json_t *ev = verified_event(u);
    json_t *no_id = json_deep_copy(ev);
    json_object_del(no_id, "id");
    json_t *bad_type = json_deep_copy(ev);
    json_object_set_new(bad_type, "type", json_string("^user.*"));
    cm_db_t *db = NULL;
    assert_int_equal(cm_db_acquire(g->pool, &db), 0);
    assert_int_equal(cm_outbox_add(db, "kt_outbox; DROP TABLE outbox", u, ev), CM_EINVAL);
    assert_int_equal(cm_outbox_add(db, "Kt", u, ev), CM_EINVAL);
    assert_int_equal(cm_outbox_add(db, "kt_outbox", "", ev), CM_EINVAL);
    assert_int_equal(cm_outbox_add(db, "kt_outbox", u, no_id), CM_EINVAL);
    assert_int_equal(cm_outbox_add(db, "kt_outbox", u, bad_type), CM_EINVAL);
    assert_int_equal(cm_outbox_add(db, "kt_outbox", u, NULL), CM_EINVAL);
    /* The same event twice: the unique event_id says so. */
    assert_int_equal(cm_outbox_add(db, "kt_outbox", u, ev), 0);
    assert_int_equal(cm_outbox_add(db, "kt_outbox", u, ev), CM_ECONFLICT);
    cm_db_release(db);
    assert_int_equal(count_rows(g, ALL), 1);
    json_decref(ev);
    json_decref(no_id);
    json_decref(bad_type);
}

static void relay_start_refuses_a_bad_config(void **state)
{
    pgfix_t *g = *state;
    cm_producer_t *p = cm_producer_new(g->kafka->bootstrap, "test", NULL);
    cm_outbox_config_t bad[] = {
        {g->conninfo, "kt outbox", g->pool, p, 0, NULL},
        {g->conninfo, "1kt", g->pool, p, 0, NULL},
        {g->conninfo, "kt_outbox", NULL, p, 0, NULL},
        {g->conninfo, "kt_outbox", g->pool, NULL, 0, NULL},
        {NULL, "kt_outbox", g->pool, p, 0, NULL},
        {g->conninfo, "kt_outbox", g->pool, p, -1, NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int err = 0;
        assert_null(cm_outbox_relay_start(&bad[i], &err));
        assert_int_equal(err, CM_EINVAL);
    }
    cm_producer_free(p);
}

int main(void)
{
    cm_log_init("test_outbox", CM_LOG_ERROR);
    /* Development aid: run only the tests whose name matches this glob. */
    if (getenv("LINKTR_TEST_FILTER"))
        cmocka_set_test_filter(getenv("LINKTR_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(committed_outbox_rows_are_published_and_marked_sent,
                                        setup_pg, teardown_pg),
        cmocka_unit_test_setup_teardown(notify_wakes_the_relay_before_its_safety_net_timer,
                                        setup_pg, teardown_pg),
        cmocka_unit_test_setup_teardown(rolled_back_outbox_insert_publishes_nothing, setup_pg,
                                        teardown_pg),
        cmocka_unit_test_setup_teardown(rows_wait_while_kafka_is_down_and_go_out_once_it_is_back,
                                        setup_pg, teardown_pg),
        cmocka_unit_test_setup_teardown(relay_listens_again_after_its_connection_is_killed,
                                        setup_pg, teardown_pg),
        cmocka_unit_test_setup_teardown(outbox_add_refuses_a_bad_channel_key_or_envelope, setup_pg,
                                        teardown_pg),
        cmocka_unit_test_setup_teardown(relay_start_refuses_a_bad_config, setup_pg, teardown_pg),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
