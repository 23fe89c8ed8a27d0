/*
 * Hostile load on the referral service and the retention sweepers, against
 * real binaries (issue 12, findings 7 and 8).
 *
 * The shared stack runs with REFERRAL_DAILY_CAP=1000, so this file starts
 * a stack of its own (deploy/local/stack, its own run dir, free ports, its
 * own embedded broker even under `make test-kafka`, so no consumer group
 * is shared) with the default cap of 50, two referral replicas (so
 * referrals of one referrer are handled concurrently and out of order),
 * and sweepers that run every second in batches of 100 with a pause of a
 * second between batches. The stack is stopped when the file ends, even
 * when a test fails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "cm/crypto.h"
#include "cm/events.h"
#include "cm/producer.h"
#include "cm/util.h"
#include "http_client.h"
#include "stack.h"
#include "testenv.h"

#define CAP 50
#define BURST 200
#define DEADLINE_MS 120000

/* The stack this file starts: its run dir (owned). */
static char *run_dir;

static char *stack_cmd(const char *what)
{
    char *build = t_stack("BUILD_DIR"); /* the fixture's build tree: same binaries */
    /* clang-format off */
    char *cmd = cm_xasprintf(
        "env -u KAFKA_BOOTSTRAP LINKTR_RUN_DIR='%s' LINKTR_BUILD_DIR='%s' "
        "LINKTR_READY_PATH=/readyz RATE_LIMITS=off LOG_LEVEL=warn "
        "REFERRAL_DAILY_CAP=%d LINKTR_REPLICAS=referral=2 "
        "RETENTION_INTERVAL_S=1 RETENTION_BATCH=100 RETENTION_PAUSE_MS=1000 "
        "'%s/deploy/local/stack' %s",
        run_dir, build, CAP, t_repo(), what);
    /* clang-format on */
    free(build);
    return cmd;
}

static int start_stack(void **state)
{
    (void)state;
    char *build = t_stack("BUILD_DIR");
    run_dir = cm_xasprintf("%s/hostile-referral-run", build);
    free(build);
    char *start = stack_cmd("start --free-ports --clean");
    int rc = t_sh(start);
    free(start);
    char *env = cm_xasprintf("%s/stack.env", run_dir);
    /* Every helper of stack.h reads this stack from now on. */
    setenv(T_STACK_ENV, env, 1);
    free(env);
    return rc == 0 ? 0 : -1;
}

static int stop_stack(void **state)
{
    (void)state;
    char *stop = stack_cmd("stop");
    int rc = t_sh(stop);
    free(stop);
    free(run_dir);
    return rc == 0 ? 0 : -1;
}

/* One value from an admin query with up to one parameter; "" when no row. Caller frees. */
static char *query1(const char *sql, const char *param)
{
    char *v = t_db_value(sql, param);
    return v ? v : cm_xstrdup("");
}

/* Runs sql with n text parameters as the database's superuser. */
static void admin_exec_params(const char *sql, int n, const char *const *params)
{
    char *dsn = t_stack("ADMIN_DATABASE_URL");
    PGconn *c = PQconnectdb(dsn);
    free(dsn);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
}

typedef struct poll_arg {
    const char *sql;
    const char *param;
    const char *want;
} poll_arg_t;

static bool query_is(void *arg)
{
    poll_arg_t *p = arg;
    char *v = query1(p->sql, p->param);
    bool ok = strcmp(v, p->want) == 0;
    free(v);
    return ok;
}

/* Polls sql until it yields want (bounded); asserts it did. */
static void eventually(const char *sql, const char *param, const char *want)
{
    poll_arg_t p = {sql, param, want};
    if (!t_wait(query_is, &p, DEADLINE_MS)) {
        char *got = query1(sql, param);
        fail_msg("%s [%s]: want %s, got %s", sql, param ? param : "", want, got);
    }
}

/* ---- finding 7: the daily cap under concurrency ------------------------- */

#define REFERRALS_OF "SELECT count(*) FROM referral.referrals WHERE referrer_id = $1::uuid"
#define COUNTERS                                                                                   \
    "SELECT concat_ws(',', total, pending, successful, rejected, expired) "                        \
    "FROM referral.referral_counters WHERE user_id = $1::uuid"
#define ROWS_BY_STATUS                                                                             \
    "SELECT concat_ws(',', count(*), count(*) FILTER (WHERE status = 'pending'), "                 \
    "count(*) FILTER (WHERE status = 'successful'), "                                              \
    "count(*) FILTER (WHERE status = 'rejected'), count(*) FILTER (WHERE status = 'expired')) "    \
    "FROM referral.referrals WHERE referrer_id = $1::uuid"

/* Waits until all n referrals of referrer_id are in, then asserts exactly
 * CAP pending, the rest rejected by the cap, and counters equal to the rows. */
static void assert_cap_exact(const char *referrer_id, int n)
{
    char want[16];
    snprintf(want, sizeof want, "%d", n);
    eventually(REFERRALS_OF, referrer_id, want);
    char rows[64];
    snprintf(rows, sizeof rows, "%d,%d,0,%d,0", n, CAP, n - CAP);
    eventually(COUNTERS, referrer_id, rows);
    char *got = query1(ROWS_BY_STATUS, referrer_id);
    assert_string_equal(got, rows);
    free(got);
    snprintf(want, sizeof want, "%d", n - CAP);
    got = query1("SELECT count(*) FROM referral.referrals WHERE referrer_id = $1::uuid "
                 "AND status = 'rejected' AND reason = 'daily_cap'",
                 referrer_id);
    assert_string_equal(got, want);
    free(got);
}

/* One producer thread: its share of the burst's events. */
typedef struct burst {
    cm_producer_t *producer;
    char **keys;
    char **events;
    int from, to;
    int failures;
} burst_t;

static void *produce_some(void *arg)
{
    burst_t *b = arg;
    for (int i = b->from; i < b->to; i++)
        if (cm_producer_send(b->producer, CM_EV_USER_REGISTERED, b->keys[i], b->events[i],
                             strlen(b->events[i]), 10000) != 0)
            b->failures++;
    return NULL;
}

/* user.registered for a new user referred by referrer, registered at_us. */
static char *registered_event(const uint8_t pk[32], const char *id, const char *referrer_id,
                              const char *referrer_code, int64_t at_us)
{
    char *sealed = NULL;
    assert_int_equal(cm_seal(pk, "tok_hostile_0123456789abcdef0123", 32, &sealed), 0);
    char name[32], email[64], code[9], at[40];
    snprintf(name, sizeof name, "hr_%.8s", id);
    snprintf(email, sizeof email, "%s@example.com", name);
    snprintf(code, sizeof code, "%.8s", id + 28); /* the uuid's random tail: unique */
    for (char *p = code; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    cm_format_time(at_us, at);
    json_t *by = referrer_id ? json_pack("{s:s, s:s}", "user_id", referrer_id, "referral_code",
                                         referrer_code)
                             : json_null();
    json_t *data = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:s}", "user_id", id, "username",
                             name, "email", email, "referral_code", code, "referred_by", by, "ip",
                             "127.0.0.1", "verify_token_sealed", sealed, "registered_at", at);
    json_t *env = cm_event_new(CM_EV_USER_REGISTERED, "auth", data);
    assert_non_null(env);
    char *text = json_dumps(env, JSON_COMPACT);
    json_decref(env);
    free(sealed);
    return text;
}

static void load_seal_key(uint8_t pk[32])
{
    char *pkfile = t_stack("MAILER_SEAL_PUBLIC_KEY_FILE");
    char *pktext = NULL;
    size_t len = 0;
    assert_int_equal(cm_read_file(pkfile, 256, &pktext, &len), 0);
    assert_int_equal(cm_key_decode(pktext, len, pk), 0);
    free(pktext);
    free(pkfile);
}

static void a_burst_of_referrals_on_the_topic_admits_exactly_the_daily_cap(void **state)
{
    /* 200 registrations referred by one referrer land on the topic at once
     * from 8 producers, keyed by the referred user (so spread over every
     * partition and both replicas), their registration times shuffled. */
    (void)state;
    enum { THREADS = 8 };
    uint8_t pk[32];
    load_seal_key(pk);
    char referrer[37], referrer_code[9];
    cm_uuid_v4(referrer);
    snprintf(referrer_code, sizeof referrer_code, "R%.7s", referrer + 29);
    for (char *p = referrer_code; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    char *keys[BURST], *events[BURST];
    int64_t now = cm_now_us();
    for (int i = 0; i < BURST; i++) {
        keys[i] = cm_xcalloc(37, 1);
        cm_uuid_v4(keys[i]);
        int64_t shuffled = (int64_t)((i * 37) % BURST) * 10000; /* within 2 s, out of order */
        events[i] = registered_event(pk, keys[i], referrer, referrer_code, now + shuffled);
    }
    int err = 0;
    char *bootstrap = t_stack("KAFKA_BOOTSTRAP");
    cm_producer_t *producer = cm_producer_new(bootstrap, "integration-hostile", &err);
    free(bootstrap);
    assert_non_null(producer);
    pthread_t th[THREADS];
    burst_t b[THREADS];
    for (int t = 0; t < THREADS; t++) {
        b[t] = (burst_t){.producer = producer,
                         .keys = keys,
                         .events = events,
                         .from = t * BURST / THREADS,
                         .to = (t + 1) * BURST / THREADS};
        assert_int_equal(pthread_create(&th[t], NULL, produce_some, &b[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(b[t].failures, 0);
    }
    cm_producer_free(producer);
    assert_cap_exact(referrer, BURST);
    for (int i = 0; i < BURST; i++) {
        free(keys[i]);
        free(events[i]);
    }
}

static void
two_hundred_referred_registrations_through_the_gateway_admit_exactly_the_cap(void **state)
{
    /* The finding as it was seen: 200 registrations with one referral code,
     * 16 clients at once, through the gateway and auth. */
    (void)state;
    t_wave_t *w = t_wave_register("cap", BURST, 16);
    assert_cap_exact(w->referrer_id, BURST);
    t_wave_free(w);
}

/* ---- finding 8: retention --------------------------------------------- */

/* The sum over a service's instances of one sample of their /metrics. */
static double metric_sum(const char *urls_key, const char *sample)
{
    char *urls = t_stack(urls_key);
    double sum = 0;
    char *save = NULL;
    for (char *u = strtok_r(urls, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
        char *url = cm_xasprintf("%s/metrics", u);
        t_resp_t r;
        assert_int_equal(t_get(url, NULL, &r), 0);
        assert_int_equal(r.status, 200);
        char *line = cm_xasprintf("\n%s ", sample);
        const char *at = strstr(r.body, line);
        if (at)
            sum += strtod(at + strlen(line), NULL);
        free(line);
        t_resp_dispose(&r);
        free(url);
    }
    free(urls);
    return sum;
}

#define REMOVED(t) "linktr_retention_rows_removed_total{table=\"" t "\"}"

/* One seeding statement: $1 is the run's tag, $2 (where nparams is 2) the user's id. */
typedef struct seed {
    const char *sql;
    int nparams;
} seed_t;

/* Old rows (past every retention) and live ones (just inside it) in each
 * table the sweepers look after. 250 old rows per table: three batches. */
static const seed_t SEED[] = {
    {"INSERT INTO auth.users (id, username, email, password_hash, referral_code) "
     "VALUES ($2::uuid, 'ret_' || $1, 'ret_' || $1 || '@example.com', 'x', 'ZZZZZZZZ')",
     2},
    /* expired 8 days ago: gone; expired 6 days ago, or revoked but live: kept */
    {"INSERT INTO auth.refresh_tokens (token_hash, user_id, family_id, expires_at) "
     "SELECT 'old_' || $1 || '_' || g, $2::uuid, gen_random_uuid(), now() - interval '8 days' "
     "FROM generate_series(1, 250) g",
     2},
    {"INSERT INTO auth.refresh_tokens (token_hash, user_id, family_id, expires_at, revoked_at) "
     "SELECT 'live_' || $1 || '_' || g, $2::uuid, gen_random_uuid(), "
     "now() - interval '6 days' + (g % 2) * interval '30 days', "
     "CASE WHEN g % 2 = 1 THEN now() END FROM generate_series(1, 6) g",
     2},
    {"INSERT INTO auth.one_time_tokens (token_hash, kind, user_id, expires_at, used_at) "
     "SELECT 'old_' || $1 || '_' || g, 'reset', $2::uuid, now() - interval '8 days', "
     "CASE WHEN g % 2 = 0 THEN now() - interval '9 days' END FROM generate_series(1, 250) g",
     2},
    {"INSERT INTO auth.one_time_tokens (token_hash, kind, user_id, expires_at) "
     "SELECT 'live_' || $1 || '_' || g, 'verify', $2::uuid, now() + interval '1 day' "
     "FROM generate_series(1, 5) g",
     2},
    {"INSERT INTO auth.login_throttle (key, failures, updated_at) "
     "SELECT 'old_' || $1 || '_' || g, 3, now() - interval '8 days' "
     "FROM generate_series(1, 250) g",
     1},
    {"INSERT INTO auth.login_throttle (key, failures, updated_at) "
     "SELECT 'live_' || $1 || '_' || g, 3, now() - interval '6 days' "
     "FROM generate_series(1, 5) g",
     1},
    {"INSERT INTO auth.outbox (event_id, topic, key, payload, created_at, sent_at) "
     "SELECT gen_random_uuid(), 'retention.' || $1, 'k', '{}', now() - interval '9 days', "
     "now() - interval '8 days' + (g > 250)::int * interval '2 days' "
     "FROM generate_series(1, 255) g",
     1},
    {"INSERT INTO referral.processed_events (event_id, processed_at) "
     "SELECT gen_random_uuid(), now() - interval '31 days' + (g > 250)::int "
     "* interval '2 days' FROM generate_series(1, 255) g",
     0},
    {"INSERT INTO referral.outbox (event_id, topic, key, payload, sent_at) "
     "SELECT gen_random_uuid(), 'retention.' || $1, 'k', '{}', "
     "now() - interval '8 days' + (g > 250)::int * interval '2 days' "
     "FROM generate_series(1, 255) g",
     1},
    {"INSERT INTO mailer.sent (event_id, recipient, template, sent_at) "
     "SELECT gen_random_uuid(), 'ret_' || $1 || '@example.com', 'verify_email', "
     "now() - interval '31 days' + (g > 250)::int * interval '2 days' "
     "FROM generate_series(1, 255) g",
     1},
    /* Deletion tombstones and parked changes: the dedup window, counted from when they
     * were made here (a tombstone of a deletion long ago, made recently, stays). */
    {"INSERT INTO referral.deleted_members (user_id, deleted_at, anonymised_at) "
     "SELECT gen_random_uuid(), now() - interval '90 days', "
     "now() - interval '31 days' + (g > 250)::int * interval '2 days' "
     "FROM generate_series(1, 255) g",
     0},
    {"INSERT INTO referral.parked_email_changes (user_id, email, parked_at) "
     "SELECT gen_random_uuid(), 'ret_' || $1 || '@example.com', "
     "now() - interval '31 days' + (g > 250)::int * interval '2 days' "
     "FROM generate_series(1, 255) g",
     1},
    {"INSERT INTO mailer.deleted_contacts (user_id, deleted_at) "
     "SELECT gen_random_uuid(), now() - interval '31 days' + (g > 250)::int * interval '2 days' "
     "FROM generate_series(1, 255) g",
     0},
};

static void seed_retention_rows(const char *tag)
{
    char *user_id = query1("SELECT gen_random_uuid()::text", NULL);
    const char *params[2] = {tag, user_id};
    for (size_t i = 0; i < sizeof SEED / sizeof SEED[0]; i++)
        admin_exec_params(SEED[i].sql, SEED[i].nparams, params);
    free(user_id);
}

/* How many rows of the login_throttle seed are left, seen while sweeping. */
static bool throttle_batches_seen(void *arg)
{
    int *seen = arg; /* seen[0]: intermediate counts; seen[1]: counts not on a batch boundary */
    char *v = query1("SELECT count(*) FROM auth.login_throttle WHERE key LIKE 'old\\_%'", NULL);
    long long n = 0;
    if (cm_strtonum(v, 0, 1000, &n) == 0) {
        if (n == 150 || n == 50)
            seen[0]++;
        else if (n != 250 && n != 0)
            seen[1]++;
    }
    free(v);
    return n == 0;
}

static void the_sweepers_remove_old_rows_in_batches_keep_live_ones_and_count_them(void **state)
{
    (void)state;
    double before[4] = {
        metric_sum("AUTH_ADMIN_URLS", REMOVED("login_throttle")),
        metric_sum("REFERRAL_ADMIN_URLS", REMOVED("processed_events")),
        metric_sum("MAILER_ADMIN_URLS", REMOVED("sent")),
        metric_sum("AUTH_ADMIN_URLS", REMOVED("refresh_tokens")),
    };
    seed_retention_rows(t_unique());
    /* Batches of 100 with a second between them: 250 old rows leave as
     * 250 → 150 → 50 → 0, never all at once. */
    int seen[2] = {0, 0};
    assert_true(t_wait(throttle_batches_seen, seen, DEADLINE_MS));
    assert_true(seen[0] > 0);
    assert_int_equal(seen[1], 0);
    /* Every old row goes; every live row stays. */
    eventually("SELECT count(*) FROM auth.refresh_tokens WHERE token_hash LIKE 'old\\_%'", NULL,
               "0");
    eventually("SELECT count(*) FROM auth.one_time_tokens WHERE token_hash LIKE 'old\\_%'", NULL,
               "0");
    eventually("SELECT count(*) FROM auth.outbox WHERE topic LIKE 'retention.%' "
               "AND sent_at < now() - interval '7 days'",
               NULL, "0");
    eventually("SELECT count(*) FROM referral.processed_events "
               "WHERE processed_at < now() - interval '30 days'",
               NULL, "0");
    eventually("SELECT count(*) FROM referral.outbox WHERE topic LIKE 'retention.%' "
               "AND sent_at < now() - interval '7 days'",
               NULL, "0");
    eventually("SELECT count(*) FROM mailer.sent WHERE sent_at < now() - interval '30 days'", NULL,
               "0");
    eventually("SELECT count(*) FROM referral.deleted_members "
               "WHERE anonymised_at < now() - interval '30 days'",
               NULL, "0");
    eventually("SELECT count(*) FROM referral.parked_email_changes "
               "WHERE parked_at < now() - interval '30 days'",
               NULL, "0");
    eventually("SELECT count(*) FROM mailer.deleted_contacts "
               "WHERE deleted_at < now() - interval '30 days'",
               NULL, "0");
    char *v =
        query1("SELECT concat_ws(',', "
               "(SELECT count(*) FROM auth.refresh_tokens WHERE token_hash LIKE 'live\\_%'), "
               "(SELECT count(*) FROM auth.one_time_tokens WHERE token_hash LIKE 'live\\_%'), "
               "(SELECT count(*) FROM auth.login_throttle WHERE key LIKE 'live\\_%'), "
               "(SELECT count(*) FROM auth.outbox WHERE topic LIKE 'retention.%'), "
               "(SELECT count(*) FROM referral.processed_events "
               " WHERE processed_at < now() - interval '28 days'), "
               "(SELECT count(*) FROM referral.outbox WHERE topic LIKE 'retention.%'), "
               "(SELECT count(*) FROM mailer.sent WHERE sent_at < now() - interval '28 days'), "
               "(SELECT count(*) FROM referral.deleted_members "
               " WHERE anonymised_at < now() - interval '28 days'), "
               "(SELECT count(*) FROM referral.parked_email_changes "
               " WHERE parked_at < now() - interval '28 days'), "
               "(SELECT count(*) FROM mailer.deleted_contacts "
               " WHERE deleted_at < now() - interval '28 days'))",
               NULL);
    assert_string_equal(v, "6,5,5,5,5,5,5,5,5,5");
    free(v);
    /* The metric counted each row once, across replicas. */
    assert_true(metric_sum("AUTH_ADMIN_URLS", REMOVED("login_throttle")) - before[0] == 250);
    assert_true(metric_sum("REFERRAL_ADMIN_URLS", REMOVED("processed_events")) - before[1] == 250);
    assert_true(metric_sum("MAILER_ADMIN_URLS", REMOVED("sent")) - before[2] == 250);
    assert_true(metric_sum("AUTH_ADMIN_URLS", REMOVED("refresh_tokens")) - before[3] == 250);
}

static void every_service_still_answers_after_the_burst(void **state)
{
    (void)state;
    const char *keys[] = {"GATEWAY_URL", "AUTH_URLS", "REFERRAL_URLS", "MAILER_URLS"};
    for (size_t k = 0; k < 4; k++) {
        char *urls = t_stack(keys[k]);
        char *save = NULL;
        for (char *u = strtok_r(urls, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
            char *url = cm_xasprintf("%s/healthz", u);
            t_resp_t r;
            assert_int_equal(t_get(url, NULL, &r), 0);
            assert_int_equal(r.status, 200);
            t_resp_dispose(&r);
            free(url);
        }
        free(urls);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_burst_of_referrals_on_the_topic_admits_exactly_the_daily_cap),
        cmocka_unit_test(
            two_hundred_referred_registrations_through_the_gateway_admit_exactly_the_cap),
        cmocka_unit_test(the_sweepers_remove_old_rows_in_batches_keep_live_ones_and_count_them),
        cmocka_unit_test(every_service_still_answers_after_the_burst),
    };
    return cmocka_run_group_tests(tests, start_stack, stop_stack);
}
