/*
 * Account deletion and export (issue 15), through the gateway of the real
 * stack: DELETE /api/me/ and what follows in every service, the
 * user.deleted event delivered again, the referral service down while an
 * account is deleted, and GET /api/me/export.
 *
 * Access tokens of a deleted account: auth answers 401 at once (the user
 * row is gone); referral answers 401 once it has consumed user.deleted (its
 * tombstone). The tests assert the first immediately and wait (bounded)
 * for the second; nothing waits for ACCESS_TTL_S.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "cm/events.h"
#include "cm/producer.h"
#include "cm/util.h"
#include "http_client.h"
#include "schema.h"
#include "stack.h"
#include "testenv.h"

#define PASSWORD "correct horse battery staple 42"
/* Bounds for the waits: generous for a loaded 2-core machine, finite. */
#define WAIT_MS 60000
#define GOODBYE_SUBJECT "Your linktr account was deleted"

/* ---- small helpers ------------------------------------------------------------- */

static const char *str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* DELETE /api/me/ with {password} (NULL: no body) and a request id. */
static void delete_me(const char *access, const char *password, const char *rid, t_resp_t *r)
{
    char *u = t_gw("/api/me/");
    char *auth = cm_xasprintf("Authorization: Bearer %s", access);
    char *idh = cm_xasprintf("X-Request-Id: %s", rid ? rid : "del-test");
    const char *h[] = {auth, idh, NULL};
    char *body = password ? cm_xasprintf("{\"password\":\"%s\"}", password) : NULL;
    assert_int_equal(
        t_http("DELETE", u, body ? "application/json" : NULL, body, body ? strlen(body) : 0, h, r),
        0);
    free(body);
    free(idh);
    free(auth);
    free(u);
}

static long get_status(const char *path, const char *access)
{
    char *u = t_gw(path);
    t_resp_t r;
    long st = t_get(u, access, &r) == 0 ? r.status : 0;
    t_resp_dispose(&r);
    free(u);
    return st;
}

/* Logs in; returns the whole answer (new reference), asserting 200. */
static json_t *login(const char *username)
{
    char *u = t_gw("/api/login/");
    json_t *body = json_pack("{s:s, s:s}", "username_or_email", username, "password", PASSWORD);
    t_resp_t r;
    assert_int_equal(t_post_json(u, body, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    json_t *out = json_incref(r.json);
    t_resp_dispose(&r);
    json_decref(body);
    free(u);
    return out;
}

static long login_status(const char *username)
{
    char *u = t_gw("/api/login/");
    json_t *body = json_pack("{s:s, s:s}", "username_or_email", username, "password", PASSWORD);
    t_resp_t r;
    long st = t_post_json(u, body, NULL, &r) == 0 ? r.status : 0;
    t_resp_dispose(&r);
    json_decref(body);
    free(u);
    return st;
}

static long refresh_status(const char *refresh)
{
    char *u = t_gw("/api/token/refresh/");
    json_t *body = json_pack("{s:s}", "refresh", refresh);
    t_resp_t r;
    long st = t_post_json(u, body, NULL, &r) == 0 ? r.status : 0;
    t_resp_dispose(&r);
    json_decref(body);
    free(u);
    return st;
}

/* /r/<code> as a browser opens it: 302 to the signup page, or the friendly 404 page. */
static long referral_link_status(const char *code)
{
    char *path = cm_xasprintf("/r/%s", code);
    char *u = t_gw(path);
    const char *h[] = {"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
                       "Accept: text/html", NULL};
    t_resp_t r;
    long st = t_http("GET", u, NULL, NULL, 0, h, &r) == 0 ? r.status : 0;
    if (st == 404)
        assert_non_null(strstr(r.content_type ? r.content_type : "", "text/html"));
    t_resp_dispose(&r);
    free(u);
    free(path);
    return st;
}

static void verify_email(const char *email)
{
    char *token = NULL;
    for (int64_t end = cm_now_mono_ms() + WAIT_MS; !token && cm_now_mono_ms() < end;) {
        token = t_mail_token(email, "/verify-email");
        if (!token)
            t_sleep_ms(100);
    }
    assert_non_null(token);
    char *u = t_gw("/api/verify-email/");
    json_t *body = json_pack("{s:s}", "token", token);
    t_resp_t r;
    assert_int_equal(t_post_json(u, body, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
    json_decref(body);
    free(u);
    free(token);
}

struct sql_wait {
    const char *sql, *p0, *p1;
    int want;
};

static bool rows_are(void *arg)
{
    struct sql_wait *w = arg;
    return t_db_count(w->sql, w->p0, w->p1) == w->want;
}

static void wait_rows(const char *sql, const char *p0, const char *p1, int want)
{
    struct sql_wait w = {sql, p0, p1, want};
    if (!t_wait(rows_are, &w, WAIT_MS))
        fail_msg("waited for %d rows of: %s (%s)", want, sql, p0 ? p0 : "");
}

struct status_wait {
    const char *path, *access;
    long want;
};

static bool status_is(void *arg)
{
    struct status_wait *w = arg;
    return get_status(w->path, w->access) == w->want;
}

/* The referrer's counts as one comparable line. */
static char *counts_of(const char *user_id)
{
    return t_db_value("SELECT concat_ws('/', total, pending, successful, rejected, expired, "
                      "credits, rewards_count, clicks) FROM referral.referral_counters "
                      "WHERE user_id = $1::uuid",
                      user_id);
}

/* The sent user.deleted envelope of user_id from auth's outbox (new reference). */
static json_t *deleted_event(const char *user_id)
{
    static const char sql[] = "SELECT 1 FROM auth.outbox WHERE key = $1 AND topic = $2 "
                              "AND sent_at IS NOT NULL";
    wait_rows(sql, user_id, CM_EV_USER_DELETED, 1);
    char *text = t_db_value("SELECT payload FROM auth.outbox WHERE key = $1 "
                            "AND topic = 'user.deleted'",
                            user_id);
    assert_non_null(text);
    json_t *env = json_loads(text, 0, NULL);
    free(text);
    assert_non_null(env);
    char err[256] = "";
    if (!t_schema_validate_event(env, err, sizeof err))
        fail_msg("user.deleted does not match its schema: %s", err);
    return env;
}

static void produce(json_t *env, const char *key)
{
    char *text = json_dumps(env, JSON_COMPACT);
    char *bootstrap = t_stack("KAFKA_BOOTSTRAP");
    int err = 0;
    cm_producer_t *p = cm_producer_new(bootstrap, "test-account-delete", &err);
    assert_non_null(p);
    assert_int_equal(cm_producer_send(p, CM_EV_USER_DELETED, key, text, strlen(text), 30000), 0);
    cm_producer_free(p);
    free(bootstrap);
    free(text);
}

/* A referrer and a user it referred, the user verified (a successful referral, rewards). */
typedef struct pair {
    json_t *ref_body, *referrer, *body, *user;
    const char *ref_id, *id, *username, *email, *code;
} pair_t;

static void pair_new(pair_t *p, const char *tag, bool verified)
{
    p->ref_body = t_user_body(tag, NULL);
    p->referrer = t_register(p->ref_body);
    p->ref_id = str(p->referrer, "id");
    p->body = t_user_body(tag, str(p->referrer, "referral_code"));
    p->user = t_register(p->body);
    p->id = str(p->user, "id");
    p->username = str(p->body, "username");
    p->email = str(p->body, "email");
    p->code = str(p->user, "referral_code");
    wait_rows("SELECT 1 FROM referral.members WHERE user_id = $1::uuid", p->id, NULL, 1);
    if (verified) {
        verify_email(p->email);
        wait_rows("SELECT 1 FROM referral.referrals WHERE referred_id = $1::uuid "
                  "AND status = 'successful'",
                  p->id, NULL, 1);
        wait_rows("SELECT 1 FROM referral.rewards WHERE user_id = $1::uuid", p->ref_id, NULL, 1);
    }
}

static void pair_dispose(pair_t *p)
{
    json_decref(p->user);
    json_decref(p->body);
    json_decref(p->referrer);
    json_decref(p->ref_body);
}

/* Every trace of the user is gone from auth, referral and the mailer (but the counts). */
static void assert_forgotten(const pair_t *p)
{
    const char *id = p->id;
    assert_int_equal(t_db_count("SELECT 1 FROM auth.users WHERE id = $1::uuid", id, NULL), 0);
    assert_int_equal(
        t_db_count("SELECT 1 FROM auth.refresh_tokens WHERE user_id = $1::uuid", id, NULL), 0);
    assert_int_equal(
        t_db_count("SELECT 1 FROM auth.one_time_tokens WHERE user_id = $1::uuid", id, NULL), 0);
    assert_int_equal(t_db_count("SELECT 1 FROM referral.members WHERE user_id = $1::uuid "
                                "OR lower(username) = lower($2) OR lower(email) = lower($2)",
                                id, p->username),
                     0);
    assert_int_equal(
        t_db_count("SELECT 1 FROM referral.members WHERE lower(email) = lower($1)", p->email, NULL),
        0);
    assert_int_equal(
        t_db_count("SELECT 1 FROM referral.clicks WHERE referrer_id = $1::uuid OR code = $2", id,
                   p->code),
        0);
    /* The referral itself stays (the referrer's count), with nothing but the random id. */
    assert_int_equal(
        t_db_count("SELECT 1 FROM referral.referrals WHERE referred_id = $1::uuid", id, NULL), 1);
    assert_int_equal(
        t_db_count("SELECT 1 FROM referral.deleted_members WHERE user_id = $1::uuid", id, NULL), 1);
    assert_int_equal(t_db_count("SELECT 1 FROM mailer.contacts WHERE user_id = $1::uuid OR "
                                "lower(email) = lower($2)",
                                id, p->email),
                     0);
    assert_int_equal(
        t_db_count("SELECT 1 FROM mailer.sent WHERE lower(recipient) = lower($1)", p->email, NULL),
        0);
    assert_true(t_db_count("SELECT 1 FROM mailer.sent WHERE user_id = $1::uuid", id, NULL) >= 1);
}

/* ---- deletion ------------------------------------------------------------------ */

static void a_wrong_password_is_403_and_changes_nothing(void **state)
{
    (void)state;
    json_t *body = t_user_body("dwp", NULL);
    json_t *user = t_register(body);
    json_t *tokens = login(str(body, "username"));
    const char *access = str(tokens, "access");
    t_resp_t r;

    delete_me(access, "not the password at all", NULL, &r);
    assert_int_equal(r.status, 403);
    assert_non_null(strstr(r.content_type, "application/problem+json"));
    t_resp_dispose(&r);
    delete_me(access, NULL, NULL, &r); /* no JSON body at all */
    assert_int_equal(r.status, 415);
    t_resp_dispose(&r);
    char *u = t_gw("/api/me/");
    char *bearer = cm_xasprintf("Authorization: Bearer %s", access);
    const char *h[] = {bearer, NULL};
    assert_int_equal(t_http("DELETE", u, "application/json", "{}", 2, h, &r), 0);
    assert_int_equal(r.status, 400); /* the password is required, and named */
    assert_non_null(json_object_get(json_object_get(r.json, "errors"), "password"));
    t_resp_dispose(&r);
    free(bearer);
    free(u);
    delete_me("not.a.token", PASSWORD, NULL, &r);
    assert_int_equal(r.status, 401);
    t_resp_dispose(&r);

    assert_int_equal(get_status("/api/me/", access), 200);
    assert_int_equal(refresh_status(str(tokens, "refresh")), 200);
    assert_int_equal(t_db_count("SELECT 1 FROM auth.outbox WHERE key = $1 AND topic = $2",
                                str(user, "id"), CM_EV_USER_DELETED),
                     0);
    /* Wrong passwords count in the login throttle: guessing here is no faster than at login. */
    /* 8 failures in all lock the (account, address) pair for 2^3 s (AUTH_THROTTLE_*). */
    int refused = 1;
    for (int64_t end = cm_now_mono_ms() + WAIT_MS; refused < 8 && cm_now_mono_ms() < end;) {
        delete_me(access, "still not the password", NULL, &r);
        long st = r.status;
        t_resp_dispose(&r);
        assert_true(st == 403 || st == 429);
        refused += st == 403;
        if (st == 429)
            t_sleep_ms(250);
    }
    assert_int_equal(refused, 8);
    assert_int_equal(login_status(str(body, "username")), 429);
    delete_me(access, PASSWORD, NULL, &r); /* even the right password waits */
    assert_int_equal(r.status, 429);
    t_resp_dispose(&r);
    assert_int_equal(get_status("/api/me/", access), 200);
    json_decref(tokens);
    json_decref(user);
    json_decref(body);
}

static void deleting_an_account_kills_its_tokens_and_anonymises_it_once(void **state)
{
    (void)state;
    pair_t p;
    pair_new(&p, "del", true);
    /* The user is a referrer too: its link is clicked, then must stop resolving. */
    assert_int_equal(referral_link_status(p.code), 302);
    wait_rows("SELECT 1 FROM referral.clicks WHERE referrer_id = $1::uuid", p.id, NULL, 1);
    json_t *tokens = login(p.username);
    const char *access = str(tokens, "access");
    assert_int_equal(get_status("/api/referral-stats/", access), 200);
    char *before = counts_of(p.ref_id);
    assert_non_null(before);

    t_resp_t r;
    delete_me(access, PASSWORD, "del-corr-1", &r);
    assert_int_equal(r.status, 204);
    t_resp_dispose(&r);

    /* auth: at once. */
    assert_int_equal(login_status(p.username), 401);
    assert_int_equal(login_status(p.email), 401);
    assert_int_equal(refresh_status(str(tokens, "refresh")), 401);
    assert_int_equal(get_status("/api/me/", access), 401);
    assert_int_equal(get_status("/api/me/export/", access), 401);
    /* referral: once it has consumed user.deleted. */
    struct status_wait sw = {"/api/referral-stats/", access, 401};
    assert_true(t_wait(status_is, &sw, WAIT_MS));
    assert_int_equal(get_status("/api/referrals/", access), 401);
    assert_int_equal(get_status("/api/rewards/", access), 401);

    json_t *env = deleted_event(p.id);
    assert_string_equal(str(env, "correlation_id"), "del-corr-1");
    assert_string_equal(str(json_object_get(env, "data"), "user_id"), p.id);

    wait_rows("SELECT 1 FROM mailer.deleted_contacts WHERE user_id = $1::uuid", p.id, NULL, 1);
    assert_int_equal(t_mails_with(p.email, GOODBYE_SUBJECT), 1);
    assert_forgotten(&p);
    char *after = counts_of(p.ref_id);
    assert_string_equal(before, after);
    assert_int_equal(referral_link_status(p.code), 404);
    char *anon = t_db_value("SELECT anonymised_at::text FROM referral.deleted_members "
                            "WHERE user_id = $1::uuid",
                            p.id);

    /* The same event again, and a copy with a new id: nothing more happens. */
    produce(env, p.id);
    char again[37];
    cm_uuid_v4(again);
    json_object_set_new(env, "id", json_string(again));
    produce(env, p.id);
    wait_rows("SELECT 1 FROM referral.processed_events WHERE event_id = $1::uuid", again, NULL, 1);
    t_sleep_ms(2000); /* the mailer reads the same topic; let it have its go */
    assert_int_equal(t_mails_with(p.email, GOODBYE_SUBJECT), 1);
    assert_forgotten(&p);
    char *after2 = counts_of(p.ref_id);
    assert_string_equal(before, after2);
    char *anon2 = t_db_value("SELECT anonymised_at::text FROM referral.deleted_members "
                             "WHERE user_id = $1::uuid",
                             p.id);
    assert_string_equal(anon, anon2);

    free(anon2);
    free(anon);
    free(after2);
    free(after);
    free(before);
    json_decref(env);
    json_decref(tokens);
    pair_dispose(&p);
}

static void a_deleted_referrer_leaves_its_referees_whole(void **state)
{
    (void)state;
    pair_t p;
    pair_new(&p, "drf", false);
    const char *rname = str(p.ref_body, "username");
    const char *rcode = str(p.referrer, "referral_code");
    char *raccess = t_login_access(rname, PASSWORD);
    t_resp_t r;
    delete_me(raccess, PASSWORD, NULL, &r);
    assert_int_equal(r.status, 204);
    t_resp_dispose(&r);
    assert_int_equal(login_status(rname), 401);

    /* The referee keeps its account; the code that referred it no longer exists. */
    char *uaccess = t_login_access(p.username, PASSWORD);
    char *u = t_gw("/api/me/");
    assert_int_equal(t_get(u, uaccess, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(json_is_null(json_object_get(r.json, "referred_by")));
    t_resp_dispose(&r);
    wait_rows("SELECT 1 FROM referral.deleted_members WHERE user_id = $1::uuid", p.ref_id, NULL, 1);
    assert_int_equal(t_db_count("SELECT 1 FROM referral.members WHERE user_id = $1::uuid "
                                "OR referral_code = $2",
                                p.ref_id, rcode),
                     0);
    assert_int_equal(referral_link_status(rcode), 404);
    assert_int_equal(
        t_db_count("SELECT 1 FROM referral.referrals WHERE referrer_id = $1::uuid", p.ref_id, NULL),
        1);
    assert_int_equal(
        t_db_count("SELECT 1 FROM referral.members WHERE user_id = $1::uuid", p.id, NULL), 1);
    assert_int_equal(get_status("/api/referral-stats/", uaccess), 200);
    /* A new registration with the dead code is refused like any unknown code. */
    json_t *late = t_user_body("drl", rcode);
    char *reg = t_gw("/api/register/");
    assert_int_equal(t_post_json(reg, late, NULL, &r), 0);
    assert_int_equal(r.status, 400);
    t_resp_dispose(&r);
    free(reg);
    json_decref(late);
    free(u);
    free(uaccess);
    free(raccess);
    pair_dispose(&p);
}

static void a_deletion_while_referral_is_down_is_anonymised_once_after_it_returns(void **state)
{
    (void)state;
    pair_t p;
    pair_new(&p, "dfa", true);
    char *access = t_login_access(p.username, PASSWORD);
    char *before = counts_of(p.ref_id);
    /* KILL, not TERM: a draining referral still consumes until it exits (its public port
     * already refuses), which would anonymise "while down"; a crash leaves the event to the
     * restarted instance, uncommitted, as the fault this test is about. */
    assert_int_equal(t_stack_cmd("kill referral KILL"), 0);
    struct status_wait down = {"/api/referral-stats/", access, 503};
    assert_true(t_wait(status_is, &down, WAIT_MS));

    t_resp_t r;
    delete_me(access, PASSWORD, "del-fault-1", &r);
    assert_int_equal(r.status, 204); /* auth does not depend on referral */
    t_resp_dispose(&r);
    assert_int_equal(get_status("/api/me/", access), 401);
    json_t *env = deleted_event(p.id);
    t_sleep_ms(1000);
    /* Nothing anonymised while the service is down. */
    assert_int_equal(
        t_db_count("SELECT 1 FROM referral.members WHERE user_id = $1::uuid", p.id, NULL), 1);

    assert_int_equal(t_stack_cmd("respawn referral"), 0);
    wait_rows("SELECT 1 FROM referral.deleted_members WHERE user_id = $1::uuid", p.id, NULL, 1);
    struct status_wait gone = {"/api/referral-stats/", access, 401};
    assert_true(t_wait(status_is, &gone, WAIT_MS));
    t_sleep_ms(2000); /* a duplicate that was going to arrive arrives */
    assert_int_equal(t_db_count("SELECT 1 FROM referral.processed_events WHERE event_id = $1::uuid",
                                str(env, "id"), NULL),
                     1);
    wait_rows("SELECT 1 FROM mailer.deleted_contacts WHERE user_id = $1::uuid", p.id, NULL, 1);
    assert_forgotten(&p);
    assert_int_equal(t_mails_with(p.email, GOODBYE_SUBJECT), 1);
    char *after = counts_of(p.ref_id);
    assert_string_equal(before, after);

    free(after);
    json_decref(env);
    free(before);
    free(access);
    pair_dispose(&p);
}

/* ---- export -------------------------------------------------------------------- */

/* More referrals than one page (100) holds, so the export must follow the cursor. */
#define EXPORT_REFERRALS 103

static void the_export_holds_the_callers_data_and_nothing_of_other_accounts(void **state)
{
    (void)state;
    t_wave_t *w = t_wave_register("exp", EXPORT_REFERRALS, 4);
    const char *rname = str(w->referrer, "username");
    json_t *first = login(rname); /* a second session besides the wave's own login */
    json_t *other_body = t_user_body("exo", NULL); /* an unrelated account */
    json_t *other = t_register(other_body);
    verify_email(w->emails[0]); /* one successful referral: rewards for both */
    wait_rows("SELECT 1 FROM referral.rewards WHERE user_id = $1::uuid", w->referrer_id, NULL, 1);
    wait_rows("SELECT 1 FROM referral.referrals WHERE referrer_id = $1::uuid", w->referrer_id, NULL,
              EXPORT_REFERRALS);

    char *u = t_gw("/api/me/export/");
    t_resp_t r;
    assert_int_equal(t_get(u, w->referrer_access, &r), 0);
    assert_int_equal(r.status, 200);
    t_assert_header(&r, "Content-Disposition", "attachment; filename=\"linktr-export.json\"");
    t_assert_header(&r, "Cache-Control", "no-store");
    json_t *doc = r.json;
    assert_non_null(doc);
    json_t *user = json_object_get(doc, "user");
    assert_string_equal(str(user, "id"), w->referrer_id);
    assert_string_equal(str(user, "username"), rname);
    json_t *sessions = json_object_get(doc, "sessions");
    assert_true(json_array_size(sessions) >= 2);
    json_t *s0 = json_array_get(sessions, 0);
    assert_non_null(str(s0, "id"));
    assert_non_null(str(s0, "created_at"));
    assert_non_null(str(s0, "last_used_at"));
    assert_true(json_is_boolean(json_object_get(s0, "active")));
    assert_int_equal(json_array_size(json_object_get(doc, "referrals")), EXPORT_REFERRALS);
    json_t *rewards = json_object_get(doc, "rewards");
    assert_true(json_array_size(rewards) >= 1);
    assert_string_equal(str(json_array_get(rewards, 0), "kind"), "credit");

    /* Nothing of another account: not the referred people, not the unrelated one. */
    assert_null(strstr(r.body, "token_hash"));
    assert_null(strstr(r.body, str(other, "id")));
    assert_null(strstr(r.body, str(other_body, "username")));
    assert_null(strstr(r.body, str(other_body, "email")));
    for (int i = 0; i < w->n; i++) {
        assert_null(strstr(r.body, w->ids[i]));
        assert_null(strstr(r.body, w->emails[i]));
    }
    t_resp_dispose(&r);

    /* The unrelated account's own export is its own. */
    char *oaccess = t_login_access(str(other_body, "username"), PASSWORD);
    assert_int_equal(t_get(u, oaccess, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(str(json_object_get(r.json, "user"), "id"), str(other, "id"));
    assert_int_equal(json_array_size(json_object_get(r.json, "referrals")), 0);
    assert_null(strstr(r.body, w->referrer_id));
    assert_null(strstr(r.body, rname));
    t_resp_dispose(&r);

    assert_int_equal(get_status("/api/me/export/", NULL), 401);
    free(oaccess);
    free(u);
    json_decref(other);
    json_decref(other_body);
    json_decref(first);
    t_wave_free(w);
}

/* A fault test that failed halfway must not leave the next tests without the service. */
static int respawn_killed(void **state)
{
    (void)state;
    static const char *const killed[] = {"referral", NULL};
    return t_stack_heal(killed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_wrong_password_is_403_and_changes_nothing),
        cmocka_unit_test(deleting_an_account_kills_its_tokens_and_anonymises_it_once),
        cmocka_unit_test(a_deleted_referrer_leaves_its_referees_whole),
        cmocka_unit_test(the_export_holds_the_callers_data_and_nothing_of_other_accounts),
        cmocka_unit_test_teardown(
            a_deletion_while_referral_is_down_is_anonymised_once_after_it_returns, respawn_killed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
