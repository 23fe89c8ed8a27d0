/*
 * Tests for services/referral/consumer.c, store.c and sweep.c against a
 * real PostgreSQL: user.registered and user.verified events as auth emits
 * them, the fraud rules, the reward engine and the expiry sweep.
 * LINKTR_TEST_NEEDS: postgres
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "cm/db.h"
#include "cm/events.h"
#include "cm/sweep.h"
#include "cm/util.h"
#include "config.h"
#include "consumer.h"
#include "rules.h"
#include "sweep.h"
#include "testenv.h"
#include "pg.h"

extern const cm_migration_t referral_migrations[];
extern const size_t referral_migrations_count;

typedef struct fixture {
    ref_config_t cfg;
    cm_db_pool_t *pool;
    ref_ctx_t ctx;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = cm_xcalloc(1, sizeof *f);
    f->pool = t_pg_pool("REFERRAL_DATABASE_URL", 2, referral_migrations, referral_migrations_count);
    f->cfg.ttl_days = 30;
    f->cfg.daily_cap = 50;
    ref_rules_defaults(&f->cfg.rules);
    assert_int_equal(ref_domains_parse(ref_default_disposable, &f->cfg.disposable), 0);
    f->ctx = (ref_ctx_t){.cfg = &f->cfg, .pool = f->pool};
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

/* A new user: ids and a unique 8-character code. */
typedef struct user {
    char id[37];
    char code[9];
    char name[32];
} user_t;

static void new_user(user_t *u)
{
    cm_uuid_v4(u->id);
    /* The uuid's random tail makes a unique code. */
    snprintf(u->code, sizeof u->code, "%.8s", u->id + 28);
    for (char *p = u->code; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    snprintf(u->name, sizeof u->name, "user_%.8s", u->id);
}

/* The envelope auth emits, as bytes; event_id receives its id. The caller frees. */
static char *envelope(const char *type, json_t *data, char event_id[37])
{
    cm_uuid_v4(event_id);
    json_t *env =
        json_pack("{s:s, s:s, s:i, s:s, s:s, s:o}", "id", event_id, "type", type, "version", 1,
                  "occurred_at", "2026-11-27T10:00:00.123Z", "source", "auth", "data", data);
    char *s = json_dumps(env, JSON_COMPACT);
    json_decref(env);
    return s;
}

static char *registered_as(const user_t *u, const user_t *referrer, const char *email,
                           char event_id[37])
{
    json_t *by =
        referrer ? json_pack("{s:s, s:s}", "user_id", referrer->id, "referral_code", referrer->code)
                 : json_null();
    json_t *data =
        json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:s}", "user_id", u->id, "username", u->name,
                  "email", email, "referral_code", u->code, "referred_by", by, "ip", "127.0.0.1",
                  "verify_token_sealed", "c2VhbGVk", "registered_at", "2026-11-27T10:00:00.100Z");
    return envelope("user.registered", data, event_id);
}

static char *registered(const user_t *u, const user_t *referrer, char event_id[37])
{
    char email[64];
    snprintf(email, sizeof email, "%s@example.com", u->name);
    return registered_as(u, referrer, email, event_id);
}

static char *verified(const user_t *u, char event_id[37])
{
    json_t *data = json_pack("{s:s, s:s}", "user_id", u->id, "verified_at", "2026-11-27T11:00:00Z");
    return envelope("user.verified", data, event_id);
}

static int handle(fixture_t *f, const char *bytes)
{
    return ref_handle_event(&f->ctx, bytes, strlen(bytes));
}

/* The first column of the first row of sql with one parameter, as a new string ("" if none). */
static char *query1(fixture_t *f, const char *sql, const char *param)
{
    cm_db_t *db = NULL;
    assert_int_equal(cm_db_acquire(f->pool, &db), 0);
    PGresult *res = NULL;
    const char *p[1] = {param};
    assert_int_equal(cm_db_exec(db, sql, 1, p, &res), 0);
    char *v = cm_xstrdup(PQntuples(res) > 0 ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    cm_db_release(db);
    return v;
}

static void assert_query(fixture_t *f, const char *sql, const char *param, const char *want)
{
    char *got = query1(f, sql, param);
    assert_string_equal(got, want);
    free(got);
}

#define COUNTERS                                                                                   \
    "SELECT concat_ws(',', total, pending, successful, rejected, expired) "                        \
    "FROM referral_counters WHERE user_id = $1::uuid"

static void a_registration_creates_the_member_with_empty_counters(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u);
    char ev[37];
    char *bytes = registered(&u, NULL, ev);
    assert_int_equal(handle(f, bytes), 0);
    char *row = query1(f,
                       "SELECT concat_ws('|', username, referral_code, "
                       "coalesce(referred_by::text, 'none')) FROM members WHERE user_id = $1::uuid",
                       u.id);
    char want[128];
    snprintf(want, sizeof want, "%s|%s|none", u.name, u.code);
    assert_string_equal(row, want);
    free(row);
    assert_query(f, COUNTERS, u.id, "0,0,0,0,0");
    assert_query(f, "SELECT count(*) FROM processed_events WHERE event_id = $1::uuid", ev, "1");
    free(bytes);
}

static void a_referred_registration_creates_a_pending_referral_and_counts_it(void **state)
{
    fixture_t *f = *state;
    user_t ref, a, b;
    new_user(&ref);
    new_user(&a);
    new_user(&b);
    char ev[37];
    char *r = registered(&ref, NULL, ev);
    char *ra = registered(&a, &ref, ev);
    char *rb = registered(&b, &ref, ev);
    assert_int_equal(handle(f, r), 0);
    assert_int_equal(handle(f, ra), 0);
    assert_int_equal(handle(f, rb), 0);
    char *row = query1(f,
                       "SELECT status || '|' || referrer_id FROM referrals "
                       "WHERE referred_id = $1::uuid",
                       a.id);
    char want[64];
    snprintf(want, sizeof want, "pending|%s", ref.id);
    assert_string_equal(row, want);
    free(row);
    assert_query(f, COUNTERS, ref.id, "2,2,0,0,0");
    assert_query(f, "SELECT referred_by::text FROM members WHERE user_id = $1::uuid", b.id, ref.id);
    free(r);
    free(ra);
    free(rb);
}

static void the_same_event_twice_changes_nothing(void **state)
{
    fixture_t *f = *state;
    user_t ref, a;
    new_user(&ref);
    new_user(&a);
    char ev[37];
    char *bytes = registered(&a, &ref, ev);
    assert_int_equal(handle(f, bytes), 0);
    assert_int_equal(handle(f, bytes), 0);
    assert_query(f, COUNTERS, ref.id, "1,1,0,0,0");
    assert_query(f, "SELECT count(*) FROM referrals WHERE referrer_id = $1::uuid", ref.id, "1");
    /* A second registration event (new id) for the same user counts nothing either. */
    char *again = registered(&a, &ref, ev);
    assert_int_equal(handle(f, again), 0);
    assert_query(f, COUNTERS, ref.id, "1,1,0,0,0");
    free(again);
    free(bytes);
}

static void malformed_events_are_eparse_and_change_nothing(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u);
    char ev[37];
    assert_int_equal(handle(f, "{\"id\": 12"), CM_EPARSE);
    assert_int_equal(handle(f, "[]"), CM_EPARSE);
    const char *bad[][2] = {
        {"user_id", "not-a-uuid"},
        {"registered_at", "2026-02-30T10:00:00Z"},
        {"registered_at", "2026-13-01T10:00:00Z"},
        {"registered_at", "2026-11-27T24:00:00Z"},
        {"registered_at", "2026-11-27T10:00:60Z"},
        {"registered_at", "2026-11-+7T10:00:00Z"},
        {"registered_at", "2026-11-27T10:00:00"},
        {"registered_at", "yesterday"},
        {"username", ""},
        {"referral_code", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char email[64];
        snprintf(email, sizeof email, "%s@example.com", u.name);
        json_t *data = json_pack("{s:s, s:s, s:s, s:s, s:n, s:s}", "user_id", u.id, "username",
                                 u.name, "email", email, "referral_code", u.code, "referred_by",
                                 "registered_at", "2026-11-27T10:00:00Z");
        json_object_set_new(data, bad[i][0], json_string(bad[i][1]));
        char *bytes = envelope("user.registered", data, ev);
        assert_int_equal(handle(f, bytes), CM_EPARSE);
        free(bytes);
    }
    json_t *data = json_pack("{s:s, s:s, s:s, s:s, s:{s:i}, s:s}", "user_id", u.id, "username",
                             u.name, "email", "x@example.com", "referral_code", u.code,
                             "referred_by", "user_id", 5, "registered_at", "2026-11-27T10:00:00Z");
    char *bytes = envelope("user.registered", data, ev);
    assert_int_equal(handle(f, bytes), CM_EPARSE);
    free(bytes);
    data = json_pack("{s:s}", "user_id", u.id); /* verified without verified_at */
    bytes = envelope("user.verified", data, ev);
    assert_int_equal(handle(f, bytes), CM_EPARSE);
    free(bytes);
    assert_query(f, "SELECT count(*) FROM members WHERE user_id = $1::uuid", u.id, "0");
    assert_query(f, "SELECT count(*) FROM parked_verifications WHERE user_id = $1::uuid", u.id,
                 "0");
}

static void verification_makes_the_referral_successful_once_and_emits_converted(void **state)
{
    fixture_t *f = *state;
    user_t ref, a;
    new_user(&ref);
    new_user(&a);
    char ev[37];
    char *reg = registered(&a, &ref, ev);
    char *ver = verified(&a, ev);
    assert_int_equal(handle(f, reg), 0);
    assert_int_equal(handle(f, ver), 0);
    assert_int_equal(handle(f, ver), 0);
    assert_query(f, COUNTERS, ref.id, "1,0,1,0,0");
    assert_query(f, "SELECT status FROM referrals WHERE referred_id = $1::uuid", a.id,
                 "successful");
    assert_query(f, "SELECT count(*) FROM outbox WHERE key = $1 AND topic = 'referral.converted'",
                 ref.id, "1");
    char *payload = query1(f, "SELECT payload FROM outbox WHERE key = $1", ref.id);
    json_t *env = json_loads(payload, 0, NULL);
    assert_non_null(env);
    json_t *data = json_object_get(env, "data");
    assert_string_equal(json_string_value(json_object_get(data, "status")), "successful");
    assert_string_equal(json_string_value(json_object_get(data, "referred_id")), a.id);
    assert_string_equal(json_string_value(json_object_get(data, "referrer_id")), ref.id);
    assert_true(json_is_null(json_object_get(data, "reason")));
    json_decref(env);
    free(payload);
    free(reg);
    free(ver);
}

static void a_verification_before_its_registration_is_parked_then_applied(void **state)
{
    fixture_t *f = *state;
    user_t ref, a;
    new_user(&ref);
    new_user(&a);
    char ev[37];
    char *ver = verified(&a, ev);
    char *reg = registered(&a, &ref, ev);
    assert_int_equal(handle(f, ver), 0);
    assert_query(f, "SELECT count(*) FROM parked_verifications WHERE user_id = $1::uuid", a.id,
                 "1");
    assert_int_equal(handle(f, reg), 0);
    assert_query(f, "SELECT status FROM referrals WHERE referred_id = $1::uuid", a.id,
                 "successful");
    assert_query(f, COUNTERS, ref.id, "1,0,1,0,0");
    assert_query(f, "SELECT count(*) FROM parked_verifications WHERE user_id = $1::uuid", a.id,
                 "0");
    free(ver);
    free(reg);
}

static void events_of_other_types_are_ignored(void **state)
{
    fixture_t *f = *state;
    char ev[37];
    char *bytes = envelope("password.changed", json_pack("{s:s}", "user_id", "x"), ev);
    assert_int_equal(handle(f, bytes), 0);
    assert_query(f, "SELECT count(*) FROM processed_events WHERE event_id = $1::uuid", ev, "0");
    free(bytes);
}

/* Registers u (referred by referrer, or not) with email through the consumer. */
static void join(fixture_t *f, const user_t *u, const user_t *referrer, const char *email)
{
    char ev[37];
    char *bytes = email ? registered_as(u, referrer, email, ev) : registered(u, referrer, ev);
    assert_int_equal(handle(f, bytes), 0);
    free(bytes);
}

static void verify(fixture_t *f, const user_t *u)
{
    char ev[37];
    char *bytes = verified(u, ev);
    assert_int_equal(handle(f, bytes), 0);
    assert_int_equal(handle(f, bytes), 0); /* redelivered: pays nothing more */
    free(bytes);
}

#define STATUS_REASON                                                                              \
    "SELECT status || ':' || coalesce(reason, '') FROM referrals "                                 \
    "WHERE referred_id = $1::uuid"
#define CREDITS                                                                                    \
    "SELECT credits || ',' || rewards_count FROM referral_counters "                               \
    "WHERE user_id = $1::uuid"

static void a_referral_from_an_alias_of_the_referrers_own_email_is_rejected(void **state)
{
    fixture_t *f = *state;
    user_t ref, alias, other;
    new_user(&ref);
    new_user(&alias);
    new_user(&other);
    char mine[80], theirs[80], friend[80];
    snprintf(mine, sizeof mine, "Ada.Love%.8s@gmail.com", ref.id);
    snprintf(theirs, sizeof theirs, "adalove%.8s+promo@GoogleMail.com", ref.id);
    snprintf(friend, sizeof friend, "ada.love%.8s@example.com", ref.id);
    join(f, &ref, NULL, mine);
    join(f, &alias, &ref, theirs);
    join(f, &other, &ref, friend); /* same local part, another domain: a real friend */
    assert_query(f, STATUS_REASON, alias.id, "rejected:self_referral_alias");
    assert_query(f, STATUS_REASON, other.id, "pending:");
    assert_query(f, COUNTERS, ref.id, "2,1,0,1,0");
    char *payload = query1(f,
                           "SELECT payload FROM outbox WHERE key = $1 AND "
                           "payload::jsonb->'data'->>'status' = 'rejected'",
                           ref.id);
    json_t *env = json_loads(payload, 0, NULL);
    assert_non_null(env);
    json_t *data = json_object_get(env, "data");
    assert_string_equal(json_string_value(json_object_get(data, "reason")), "self_referral_alias");
    assert_string_equal(json_string_value(json_object_get(data, "referred_id")), alias.id);
    json_decref(env);
    free(payload);
}

/* user.email.changed as auth emits it. */
static char *email_changed(const user_t *u, const char *old_email, const char *new_email,
                           char event_id[37])
{
    json_t *data =
        json_pack("{s:s, s:s, s:s, s:s, s:s}", "user_id", u->id, "username", u->name, "old_email",
                  old_email, "new_email", new_email, "changed_at", "2026-11-27T12:00:00.000Z");
    return envelope("user.email.changed", data, event_id);
}

static void the_alias_rule_compares_with_the_address_after_an_email_change(void **state)
{
    fixture_t *f = *state;
    user_t ref, alias;
    new_user(&ref);
    new_user(&alias);
    char first[80], moved[80], theirs[80], ev[37];
    snprintf(first, sizeof first, "first%.8s@example.com", ref.id);
    snprintf(moved, sizeof moved, "Ada.Love%.8s@gmail.com", ref.id);
    snprintf(theirs, sizeof theirs, "adalove%.8s+promo@GoogleMail.com", ref.id);
    join(f, &ref, NULL, first);
    char *bytes = email_changed(&ref, first, moved, ev);
    assert_int_equal(handle(f, bytes), 0);
    assert_int_equal(handle(f, bytes), 0); /* redelivered: nothing more */
    free(bytes);
    assert_query(f, "SELECT email FROM members WHERE user_id = $1::uuid", ref.id, moved);
    join(f, &alias, &ref, theirs);
    assert_query(f, STATUS_REASON, alias.id, "rejected:self_referral_alias");
}

static void an_email_change_before_its_registration_is_parked_then_applied(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u);
    char ev1[37], ev2[37];
    /* Two changes overtake the registration: both are consumed (the partition moves on)
     * and the newer one waits. */
    char *first = email_changed(&u, "a@example.com", "b@example.com", ev1);
    char *second = email_changed(&u, "b@example.com", "c@example.com", ev2);
    assert_int_equal(handle(f, first), 0);
    assert_int_equal(handle(f, second), 0);
    assert_int_equal(handle(f, first), 0); /* redelivered: nothing more */
    assert_query(f, "SELECT count(*) FROM processed_events WHERE event_id = $1::uuid", ev1, "1");
    assert_query(f, "SELECT email FROM parked_email_changes WHERE user_id = $1::uuid", u.id,
                 "c@example.com");
    /* The registration brings the member with its old address; the parked change wins. */
    join(f, &u, NULL, "a@example.com");
    assert_query(f, "SELECT email FROM members WHERE user_id = $1::uuid", u.id, "c@example.com");
    assert_query(f, "SELECT count(*) FROM parked_email_changes WHERE user_id = $1::uuid", u.id,
                 "0");
    free(first);
    free(second);
    char ev[37];
    json_t *data = json_pack("{s:s, s:s}", "user_id", u.id, "new_email", "no at sign");
    char *bytes = envelope("user.email.changed", data, ev);
    assert_int_equal(handle(f, bytes), CM_EPARSE);
    free(bytes);
}

static void a_referral_from_a_disposable_domain_is_rejected(void **state)
{
    fixture_t *f = *state;
    user_t ref, a;
    new_user(&ref);
    new_user(&a);
    join(f, &ref, NULL, NULL);
    join(f, &a, &ref, "someone@inbox.Mailinator.com");
    assert_query(f, STATUS_REASON, a.id, "rejected:disposable_email");
    assert_query(f, COUNTERS, ref.id, "1,0,0,1,0");
    /* A rejected referral is not made successful by a verification. */
    verify(f, &a);
    assert_query(f, STATUS_REASON, a.id, "rejected:disposable_email");
    assert_query(f, CREDITS, ref.id, "0,0");
}

static void more_than_the_daily_cap_of_referrals_is_rejected(void **state)
{
    fixture_t *f = *state;
    f->cfg.daily_cap = 3;
    user_t ref, kids[4];
    new_user(&ref);
    join(f, &ref, NULL, NULL);
    for (int i = 0; i < 4; i++) {
        new_user(&kids[i]);
        join(f, &kids[i], &ref, NULL);
    }
    f->cfg.daily_cap = 50;
    for (int i = 0; i < 3; i++)
        assert_query(f, STATUS_REASON, kids[i].id, "pending:");
    assert_query(f, STATUS_REASON, kids[3].id, "rejected:daily_cap");
    assert_query(f, COUNTERS, ref.id, "4,3,0,1,0");
}

static void a_verification_pays_the_referrer_and_the_welcome_credit_once(void **state)
{
    fixture_t *f = *state;
    user_t ref, a;
    new_user(&ref);
    new_user(&a);
    join(f, &ref, NULL, NULL);
    join(f, &a, &ref, NULL);
    verify(f, &a);
    verify(f, &a); /* a second user.verified (new event id) changes nothing either */
    assert_query(f, CREDITS, ref.id, "10,1");
    assert_query(f, CREDITS, a.id, "5,1");
    assert_query(f,
                 "SELECT string_agg(rule || '=' || amount, ',' ORDER BY rule) FROM rewards "
                 "WHERE user_id = $1::uuid",
                 ref.id, "referrer_credit=10");
    assert_query(f, "SELECT count(*) FROM outbox WHERE topic = 'reward.granted' AND key = $1", a.id,
                 "1");
    char *payload = query1(f,
                           "SELECT payload FROM outbox WHERE topic = 'reward.granted' "
                           "AND key = $1",
                           ref.id);
    json_t *env = json_loads(payload, 0, NULL);
    json_t *data = json_object_get(env, "data");
    assert_string_equal(json_string_value(json_object_get(data, "kind")), "credit");
    assert_int_equal(json_integer_value(json_object_get(data, "amount")), 10);
    assert_string_equal(json_string_value(json_object_get(data, "user_id")), ref.id);
    assert_non_null(json_string_value(json_object_get(data, "referral_id")));
    json_decref(env);
    free(payload);
}

/* bytes with correlation_id set (a new string; bytes freed). */
static char *correlated(char *bytes, const char *correlation_id)
{
    json_t *env = json_loads(bytes, 0, NULL);
    assert_non_null(env);
    assert_int_equal(cm_event_set_correlation(env, correlation_id), 0);
    char *out = json_dumps(env, JSON_COMPACT);
    json_decref(env);
    free(bytes);
    return out;
}

#define CORRELATED                                                                                 \
    "SELECT string_agg(topic, ',' ORDER BY topic) FROM outbox "                                    \
    "WHERE payload::json->>'correlation_id' = $1"

static void events_written_for_a_consumed_event_carry_its_correlation_id(void **state)
{
    fixture_t *f = *state;
    user_t ref, a, b, c;
    new_user(&ref);
    new_user(&a);
    new_user(&b);
    new_user(&c);
    join(f, &ref, NULL, NULL);
    join(f, &a, &ref, NULL);
    join(f, &b, &ref, NULL);
    /* A verification caused by one request: the conversion and both credits carry its id. */
    char ev[37], rid_a[32], rid_c[32];
    snprintf(rid_a, sizeof rid_a, "verify-%.8s", a.id);
    snprintf(rid_c, sizeof rid_c, "register-%.8s", c.id);
    char *bytes = correlated(verified(&a, ev), rid_a);
    assert_int_equal(handle(f, bytes), 0);
    free(bytes);
    assert_query(f, CORRELATED, rid_a, "referral.converted,reward.granted,reward.granted");
    /* A registration refused by a fraud rule: its rejection carries the registration's id. */
    bytes = correlated(registered_as(&c, &ref, "someone@mailinator.com", ev), rid_c);
    assert_int_equal(handle(f, bytes), 0);
    free(bytes);
    assert_query(f, CORRELATED, rid_c, "referral.converted");
    /* An event without one: what it causes has none either. */
    verify(f, &b);
    assert_query(f,
                 "SELECT count(*) FROM outbox WHERE payload::json->>'correlation_id' IS NULL AND "
                 "(key = $1 OR payload::json->'data'->>'referred_id' = $1)",
                 b.id, "2");
}

static void the_fifth_success_pays_the_milestone_exactly_once(void **state)
{
    fixture_t *f = *state;
    user_t ref, kids[6];
    new_user(&ref);
    join(f, &ref, NULL, NULL);
    for (int i = 0; i < 6; i++) {
        new_user(&kids[i]);
        join(f, &kids[i], &ref, NULL);
    }
    const char *milestone = "SELECT count(*) FROM rewards WHERE user_id = $1::uuid "
                            "AND kind = 'milestone' AND rule = 'milestone_5'";
    for (int i = 0; i < 4; i++)
        verify(f, &kids[i]);
    assert_query(f, milestone, ref.id, "0");
    verify(f, &kids[4]);
    assert_query(f, milestone, ref.id, "1");
    verify(f, &kids[5]);
    assert_query(f, milestone, ref.id, "1");
    assert_query(f, CREDITS, ref.id, "85,7"); /* 6 × 10 + 25 */
    assert_query(f, COUNTERS, ref.id, "6,0,6,0,0");
}

static void the_sweep_expires_pending_referrals_older_than_the_ttl(void **state)
{
    fixture_t *f = *state;
    user_t ref, old, fresh;
    new_user(&ref);
    new_user(&old);
    new_user(&fresh);
    join(f, &ref, NULL, NULL);
    join(f, &old, &ref, NULL);
    join(f, &fresh, &ref, NULL);
    assert_query(f,
                 "UPDATE referrals SET created_at = now() - interval '31 days' "
                 "WHERE referred_id = $1::uuid RETURNING 'aged'",
                 old.id, "aged");
    assert_query(f,
                 "UPDATE referrals SET created_at = now() - interval '29 days' "
                 "WHERE referred_id = $1::uuid RETURNING 'aged'",
                 fresh.id, "aged");
    int expired = 0;
    assert_int_equal(ref_sweep_once(&f->cfg, f->pool, &expired), 0);
    assert_true(expired >= 1);
    assert_query(f, STATUS_REASON, old.id, "expired:ttl");
    assert_query(f, STATUS_REASON, fresh.id, "pending:");
    assert_query(f, COUNTERS, ref.id, "2,1,0,0,1");
    assert_int_equal(ref_sweep_once(&f->cfg, f->pool, &expired), 0);
    assert_int_equal(expired, 0);
    /* An expired referral does not turn successful later. */
    verify(f, &old);
    assert_query(f, STATUS_REASON, old.id, "expired:ttl");
}

/* The referral service's retention_sweep() (migration 003) through cm/sweep.h. */
static void
the_retention_sweep_forgets_old_event_ids_parked_rows_tombstones_and_sent_outbox_rows(void **state)
{
    fixture_t *f = *state;
    char old_ev[37], new_ev[37], old_park[37], unsent[37];
    cm_uuid_v4(old_ev);
    cm_uuid_v4(new_ev);
    cm_uuid_v4(old_park);
    cm_uuid_v4(unsent);
    assert_query(f,
                 "INSERT INTO processed_events (event_id, processed_at) VALUES ($1::uuid, "
                 "now() - interval '31 days') RETURNING 'in'",
                 old_ev, "in");
    assert_query(f,
                 "INSERT INTO processed_events (event_id, processed_at) VALUES ($1::uuid, "
                 "now() - interval '29 days') RETURNING 'in'",
                 new_ev, "in");
    assert_query(f,
                 "INSERT INTO parked_verifications (user_id, verified_at, parked_at) VALUES "
                 "($1::uuid, now(), now() - interval '31 days') RETURNING 'in'",
                 old_park, "in");
    assert_query(f,
                 "INSERT INTO parked_email_changes (user_id, email, parked_at) VALUES "
                 "($1::uuid, 'x@example.com', now() - interval '31 days') RETURNING 'in'",
                 old_park, "in");
    assert_query(f,
                 "INSERT INTO deleted_members (user_id, deleted_at, anonymised_at) VALUES "
                 "($1::uuid, now(), now() - interval '31 days') RETURNING 'in'",
                 old_park, "in");
    assert_query(f,
                 "INSERT INTO deleted_members (user_id, deleted_at) VALUES "
                 "($1::uuid, now() - interval '90 days') RETURNING 'in'",
                 new_ev, "in");
    /* An unsent outbox row, however old, is never swept: it is still to be published. */
    assert_query(f,
                 "INSERT INTO outbox (event_id, topic, key, payload, created_at) VALUES "
                 "($1::uuid, 't', 'k', '{}', now() - interval '90 days') RETURNING 'in'",
                 unsent, "in");
    cm_retention_t r = {
        .interval_s = 60, .batch = 1000, .pause_ms = 0, .keep_days = 7, .dedup_days = 30};
    int err = 0;
    cm_sweep_t *s = cm_retention_new(&r, "referral", f->pool, NULL, &err);
    assert_non_null(s);
    long long removed = 0;
    assert_int_equal(cm_sweep_run(s, &removed, NULL), 0);
    assert_true(removed >= 2);
    cm_sweep_free(s);
    assert_query(f, "SELECT count(*) FROM processed_events WHERE event_id = $1::uuid", old_ev, "0");
    assert_query(f, "SELECT count(*) FROM processed_events WHERE event_id = $1::uuid", new_ev, "1");
    assert_query(f, "SELECT count(*) FROM parked_verifications WHERE user_id = $1::uuid", old_park,
                 "0");
    assert_query(f, "SELECT count(*) FROM parked_email_changes WHERE user_id = $1::uuid", old_park,
                 "0");
    assert_query(f, "SELECT count(*) FROM deleted_members WHERE user_id = $1::uuid", old_park, "0");
    /* A tombstone's age is when it was made here, not when the account was deleted. */
    assert_query(f, "SELECT count(*) FROM deleted_members WHERE user_id = $1::uuid", new_ev, "1");
    assert_query(f, "SELECT count(*) FROM outbox WHERE event_id = $1::uuid", unsent, "1");
}

/* user.registered of u referred by referrer, registered at `at`. The caller frees. */
static char *registered_when(const user_t *u, const user_t *referrer, const char *at)
{
    char ev[37], email[64];
    snprintf(email, sizeof email, "%s@example.com", u->name);
    json_t *by = json_pack("{s:s, s:s}", "user_id", referrer->id, "referral_code", referrer->code);
    json_t *data =
        json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:s}", "user_id", u->id, "username", u->name,
                  "email", email, "referral_code", u->code, "referred_by", by, "ip", "127.0.0.1",
                  "verify_token_sealed", "c2VhbGVk", "registered_at", at);
    return envelope("user.registered", data, ev);
}

static void the_daily_cap_counts_referrals_that_arrive_out_of_order(void **state)
{
    /* One referrer's events ride different partitions (keyed by the
     * referred user), so a later registration is often handled first. */
    fixture_t *f = *state;
    f->cfg.daily_cap = 3;
    user_t ref, kids[6];
    new_user(&ref);
    join(f, &ref, NULL, NULL);
    for (int i = 0; i < 6; i++) {
        new_user(&kids[i]);
        char at[40];
        snprintf(at, sizeof at, "2026-11-27T10:00:0%dZ", 9 - i); /* newest first */
        char *bytes = registered_when(&kids[i], &ref, at);
        assert_int_equal(handle(f, bytes), 0);
        free(bytes);
    }
    f->cfg.daily_cap = 50;
    assert_query(f, COUNTERS, ref.id, "6,3,0,3,0");
    assert_query(f,
                 "SELECT count(*) FROM referrals WHERE referrer_id = $1::uuid "
                 "AND status = 'rejected' AND reason = 'daily_cap'",
                 ref.id, "3");
}

/* One consumer thread of the concurrent cap test. */
typedef struct racer {
    ref_ctx_t *ctx;
    char **events;
    int from, to;
    int failures;
} racer_t;

static void *race(void *arg)
{
    racer_t *r = arg;
    for (int i = r->from; i < r->to; i++)
        if (ref_handle_event(r->ctx, r->events[i], strlen(r->events[i])) != 0)
            r->failures++;
    return NULL;
}

static void the_daily_cap_is_exact_when_consumers_race(void **state)
{
    /* Replicas of the referral service handle one referrer's referrals at
     * the same time: 8 threads, 8 connections, 120 referrals, a cap of 20. */
    enum { N = 120, THREADS = 8, CAP = 20 };
    fixture_t *f = *state;
    char *url = t_env("LINKTR_PG_ENV_FILE", "REFERRAL_DATABASE_URL");
    cm_db_config_t dbc = {
        .conninfo = url, .size = THREADS, .acquire_timeout_ms = 30000, .connect_timeout_s = 5};
    int err = 0;
    cm_db_pool_t *pool = cm_db_pool_new(&dbc, &err);
    free(url);
    assert_non_null(pool);
    ref_config_t cfg = f->cfg;
    cfg.daily_cap = CAP;
    ref_ctx_t ctx = {.cfg = &cfg, .pool = pool};
    user_t ref;
    new_user(&ref);
    join(f, &ref, NULL, NULL);
    char *events[N];
    for (int i = 0; i < N; i++) {
        user_t kid;
        new_user(&kid);
        char at[40];
        snprintf(at, sizeof at, "2026-11-27T10:%02d:%02dZ", (i * 7) % 60, (i * 13) % 60);
        events[i] = registered_when(&kid, &ref, at);
    }
    pthread_t th[THREADS];
    racer_t r[THREADS];
    for (int t = 0; t < THREADS; t++) {
        r[t] = (racer_t){
            .ctx = &ctx, .events = events, .from = t * N / THREADS, .to = (t + 1) * N / THREADS};
        assert_int_equal(pthread_create(&th[t], NULL, race, &r[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(r[t].failures, 0);
    }
    for (int i = 0; i < N; i++)
        free(events[i]);
    cm_db_pool_free(pool);
    assert_query(f, COUNTERS, ref.id, "120,20,0,100,0");
    assert_query(f,
                 "SELECT count(*) FROM referrals WHERE referrer_id = $1::uuid "
                 "AND status = 'pending'",
                 ref.id, "20");
}

static void
racing_conversions_of_one_referrer_spread_over_stripes_and_pay_each_milestone_once(void **state)
{
    /* A viral referrer: 8 threads (replicas) verify 96 referred users of one
     * referrer at once. Milestones at 1..16 make every early conversion
     * need its exact ordinal; past 16 conversions go without the lock. */
    enum { N = 96, THREADS = 8 };
    fixture_t *f = *state;
    char *url = t_env("LINKTR_PG_ENV_FILE", "REFERRAL_DATABASE_URL");
    cm_db_config_t dbc = {
        .conninfo = url, .size = THREADS, .acquire_timeout_ms = 30000, .connect_timeout_s = 5};
    int err = 0;
    cm_db_pool_t *pool = cm_db_pool_new(&dbc, &err);
    free(url);
    assert_non_null(pool);
    ref_config_t cfg = f->cfg;
    cfg.daily_cap = N;
    cfg.rules.nmilestones = REF_MAX_MILESTONES;
    for (int i = 0; i < REF_MAX_MILESTONES; i++)
        cfg.rules.milestones[i] = (ref_milestone_t){.at = i + 1, .amount = 1000};
    ref_ctx_t ctx = {.cfg = &cfg, .pool = pool};
    user_t ref;
    new_user(&ref);
    join(f, &ref, NULL, NULL);
    char *events[N];
    for (int i = 0; i < N; i++) {
        user_t kid;
        new_user(&kid);
        char ev[37];
        char *reg = registered(&kid, &ref, ev);
        assert_int_equal(ref_handle_event(&ctx, reg, strlen(reg)), 0); /* under this cap */
        free(reg);
        events[i] = verified(&kid, ev);
    }
    pthread_t th[THREADS];
    racer_t r[THREADS];
    for (int t = 0; t < THREADS; t++) {
        r[t] = (racer_t){
            .ctx = &ctx, .events = events, .from = t * N / THREADS, .to = (t + 1) * N / THREADS};
        assert_int_equal(pthread_create(&th[t], NULL, race, &r[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(r[t].failures, 0); /* no deadlock, no retry */
    }
    for (int i = 0; i < N; i++)
        free(events[i]);
    cm_db_pool_free(pool);
    assert_query(f, COUNTERS, ref.id, "96,0,96,0,0");
    /* Each milestone once, each by a different referral: 16 distinct ordinals. */
    assert_query(f,
                 "SELECT count(*) || ',' || count(DISTINCT referral_id) FROM rewards "
                 "WHERE user_id = $1::uuid AND kind = 'milestone'",
                 ref.id, "16,16");
    assert_query(f, CREDITS, ref.id, "16960,112"); /* 96 × 10 + 16 × 1000; 96 + 16 rewards */
    /* The counts went to several stripe rows, and stats still read one exact row. */
    char *rows =
        query1(f, "SELECT count(*) FROM referral_counter_stripes WHERE user_id = $1::uuid", ref.id);
    long long nrows = 0;
    assert_int_equal(cm_strtonum(rows, 2, 16, &nrows), 0);
    free(rows);
}

/* ---- account deletion (issue 15) ---------------------------------------------- */

static char *deleted(const user_t *u, char event_id[37])
{
    json_t *data = json_pack("{s:s, s:s}", "user_id", u->id, "deleted_at", "2026-11-28T09:00:00Z");
    return envelope("user.deleted", data, event_id);
}

#define TOMB                                                                                       \
    "SELECT count(*) || '|' || min(deleted_at) FROM deleted_members WHERE user_id = $1::uuid"

static void a_deleted_user_is_anonymised_once_and_the_referrers_counts_stay(void **state)
{
    fixture_t *f = *state;
    user_t ref, a;
    new_user(&ref);
    new_user(&a);
    join(f, &ref, NULL, NULL);
    join(f, &a, &ref, NULL);
    verify(f, &a);
    assert_query(f, COUNTERS, ref.id, "1,0,1,0,0");
    char ev[37];
    char *bytes = deleted(&a, ev);
    assert_int_equal(handle(f, bytes), 0);
    assert_query(f, "SELECT count(*) FROM members WHERE user_id = $1::uuid", a.id, "0");
    assert_query(f, "SELECT count(*) FROM referrals WHERE referred_id = $1::uuid", a.id, "1");
    assert_query(f, COUNTERS, ref.id, "1,0,1,0,0");
    assert_query(f, TOMB, a.id, "1|2026-11-28 09:00:00+00");
    char *at =
        query1(f, "SELECT anonymised_at::text FROM deleted_members WHERE user_id = $1::uuid", a.id);
    /* The same event, then another event for the same user: nothing more. */
    assert_int_equal(handle(f, bytes), 0);
    char *again = deleted(&a, ev);
    assert_int_equal(handle(f, again), 0);
    assert_query(f, "SELECT anonymised_at::text FROM deleted_members WHERE user_id = $1::uuid",
                 a.id, at);
    assert_query(f, COUNTERS, ref.id, "1,0,1,0,0");
    /* A deleted referrer's code no longer resolves. */
    char *del_ref = deleted(&ref, ev);
    assert_int_equal(handle(f, del_ref), 0);
    assert_query(f, "SELECT count(*) FROM members WHERE referral_code = $1", ref.code, "0");
    free(del_ref);
    free(again);
    free(at);
    free(bytes);
}

static void a_registration_after_the_deletion_counts_but_stores_no_member(void **state)
{
    fixture_t *f = *state;
    user_t ref, a;
    new_user(&ref);
    new_user(&a);
    join(f, &ref, NULL, NULL);
    char ev[37];
    char *del = deleted(&a, ev);
    assert_int_equal(handle(f, del), 0);
    join(f, &a, &ref, NULL); /* user.registered overtaken on its own topic */
    verify(f, &a);
    assert_query(f, "SELECT count(*) FROM members WHERE user_id = $1::uuid", a.id, "0");
    assert_query(f, COUNTERS, ref.id, "1,0,1,0,0");
    assert_query(f, "SELECT count(*) FROM parked_verifications WHERE user_id = $1::uuid", a.id,
                 "0");
    free(del);
}

static void a_parked_email_change_leaves_with_the_account(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u);
    char ev[37];
    char *change = email_changed(&u, "a@example.com", "b@example.com", ev);
    assert_int_equal(handle(f, change), 0);
    char *del = deleted(&u, ev);
    assert_int_equal(handle(f, del), 0);
    assert_query(f, "SELECT count(*) FROM parked_email_changes WHERE user_id = $1::uuid", u.id,
                 "0");
    /* A change consumed after the deletion is done with: nothing is parked. */
    char *late = email_changed(&u, "b@example.com", "c@example.com", ev);
    assert_int_equal(handle(f, late), 0);
    assert_query(f, "SELECT count(*) FROM parked_email_changes WHERE user_id = $1::uuid", u.id,
                 "0");
    free(late);
    free(del);
    free(change);
}

static void a_malformed_deletion_is_eparse(void **state)
{
    fixture_t *f = *state;
    char ev[37];
    char *bytes = envelope("user.deleted", json_pack("{s:s}", "user_id", "nope"), ev);
    assert_int_equal(handle(f, bytes), CM_EPARSE);
    free(bytes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_registration_creates_the_member_with_empty_counters),
        cmocka_unit_test(a_deleted_user_is_anonymised_once_and_the_referrers_counts_stay),
        cmocka_unit_test(a_registration_after_the_deletion_counts_but_stores_no_member),
        cmocka_unit_test(a_malformed_deletion_is_eparse),
        cmocka_unit_test(a_referred_registration_creates_a_pending_referral_and_counts_it),
        cmocka_unit_test(the_same_event_twice_changes_nothing),
        cmocka_unit_test(malformed_events_are_eparse_and_change_nothing),
        cmocka_unit_test(verification_makes_the_referral_successful_once_and_emits_converted),
        cmocka_unit_test(a_verification_before_its_registration_is_parked_then_applied),
        cmocka_unit_test(events_of_other_types_are_ignored),
        cmocka_unit_test(a_referral_from_an_alias_of_the_referrers_own_email_is_rejected),
        cmocka_unit_test(a_referral_from_a_disposable_domain_is_rejected),
        cmocka_unit_test(the_alias_rule_compares_with_the_address_after_an_email_change),
        cmocka_unit_test(an_email_change_before_its_registration_is_parked_then_applied),
        cmocka_unit_test(a_parked_email_change_leaves_with_the_account),
        cmocka_unit_test(more_than_the_daily_cap_of_referrals_is_rejected),
        cmocka_unit_test(a_verification_pays_the_referrer_and_the_welcome_credit_once),
        cmocka_unit_test(events_written_for_a_consumed_event_carry_its_correlation_id),
        cmocka_unit_test(the_fifth_success_pays_the_milestone_exactly_once),
        cmocka_unit_test(the_sweep_expires_pending_referrals_older_than_the_ttl),
        cmocka_unit_test(
            the_retention_sweep_forgets_old_event_ids_parked_rows_tombstones_and_sent_outbox_rows),
        cmocka_unit_test(the_daily_cap_counts_referrals_that_arrive_out_of_order),
        cmocka_unit_test(the_daily_cap_is_exact_when_consumers_race),
        cmocka_unit_test(
            racing_conversions_of_one_referrer_spread_over_stripes_and_pay_each_milestone_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
