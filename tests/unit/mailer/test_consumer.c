/*
 * Tests for services/mailer/consumer.c and store.c against a real
 * PostgreSQL and a real Maildir: events as auth and referral emit them.
 * LINKTR_TEST_NEEDS: postgres
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "cm/crypto.h"
#include "cm/db.h"
#include "cm/util.h"
#include "config.h"
#include "consumer.h"
#include "maildir.h"
#include "store.h"
#include "testenv.h"
#include "pg.h"

extern const cm_migration_t mailer_migrations[];
extern const size_t mailer_migrations_count;

typedef struct fixture {
    mail_config_t cfg;
    cm_db_pool_t *pool;
    mail_ctx_t ctx;
    char dir[64];
} fixture_t;

static int setup(void **state)
{
    assert_int_equal(cm_crypto_init(), 0);
    fixture_t *f = cm_xcalloc(1, sizeof *f);
    f->pool = t_pg_pool("MAILER_DATABASE_URL", 2, mailer_migrations, mailer_migrations_count);
    crypto_box_keypair(f->cfg.seal_pk, f->cfg.seal_sk);
    snprintf(f->dir, sizeof f->dir, "/tmp/linktr-mailtest-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->cfg.mail_dir = cm_xasprintf("%s/mail", f->dir);
    f->cfg.svc.public_base_url = cm_xstrdup("http://127.0.0.1:8000");
    f->cfg.mail_from = cm_xstrdup("linktr <no-reply@linktr.local>");
    assert_int_equal(mail_maildir_init(f->cfg.mail_dir), 0);
    f->ctx = (mail_ctx_t){.cfg = &f->cfg, .pool = f->pool};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    cm_db_pool_free(f->pool);
    char *cmd = cm_xasprintf("rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    mail_config_dispose(&f->cfg);
    free(f);
    return 0;
}

/* Every message in new/ that contains needle, concatenated; *n counts them. */
static char *mails_with(fixture_t *f, const char *needle, int *n)
{
    char *newdir = cm_xasprintf("%s/new", f->cfg.mail_dir);
    DIR *d = opendir(newdir);
    assert_non_null(d);
    cm_buf_t all;
    cm_buf_init(&all);
    cm_buf_puts(&all, "");
    *n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char *path = cm_xasprintf("%s/%s", newdir, e->d_name);
        char *text = NULL;
        size_t len = 0;
        assert_int_equal(cm_read_file(path, 1 << 20, &text, &len), 0);
        if (strstr(text, needle)) {
            cm_buf_puts(&all, text);
            (*n)++;
        }
        free(text);
        free(path);
    }
    closedir(d);
    free(newdir);
    return cm_buf_steal(&all);
}

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

typedef struct user {
    char id[37];
    char name[48];
    char email[80];
} user_t;

static void new_user(user_t *u, const char *prefix)
{
    cm_uuid_v4(u->id);
    snprintf(u->name, sizeof u->name, "%s%.8s", prefix, u->id);
    snprintf(u->email, sizeof u->email, "m%.8s@example.com", u->id);
}

static char *sealed(fixture_t *f, const char *token)
{
    char *out = NULL;
    assert_int_equal(cm_seal(f->cfg.seal_pk, token, strlen(token), &out), 0);
    return out;
}

static char *registered(fixture_t *f, const user_t *u, const char *token, char ev[37])
{
    char *s = sealed(f, token);
    json_t *data =
        json_pack("{s:s, s:s, s:s, s:s, s:n, s:s, s:s, s:s}", "user_id", u->id, "username", u->name,
                  "email", u->email, "referral_code", "7KQ2M9XD", "referred_by", "ip", "127.0.0.1",
                  "verify_token_sealed", s, "registered_at", "2026-11-27T10:00:00Z");
    free(s);
    return envelope("user.registered", data, ev);
}

static int handle(fixture_t *f, const char *bytes)
{
    return mail_handle_event(&f->ctx, bytes, strlen(bytes));
}

static int ledger(fixture_t *f, const char *ev)
{
    cm_db_t *db = NULL;
    assert_int_equal(cm_db_acquire(f->pool, &db), 0);
    int n = mail_store_sent_count(db, ev);
    cm_db_release(db);
    return n;
}

static void a_registration_writes_one_verify_mail_with_the_opened_token(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u, "o'brien&co_");
    char ev[37];
    const char *token = "tok_ABCdef-0123456789abcdefghijklmnopqrstuv";
    char *bytes = registered(f, &u, token, ev);
    assert_int_equal(handle(f, bytes), 0);
    int n = 0;
    char *mail = mails_with(f, u.email, &n);
    assert_int_equal(n, 1);
    assert_non_null(strstr(mail, "http://127.0.0.1:8000/verify-email?token="
                                 "tok_ABCdef-0123456789abcdefghijklmnopqrstuv"));
    char to[128];
    snprintf(to, sizeof to, "\r\nTo: %s\r\n", u.email);
    assert_non_null(strstr(mail, to));
    /* The HTML part escapes the name; the sealed form never reaches the mail. */
    assert_non_null(strstr(mail, "o&#39;brien&amp;co_"));
    assert_int_equal(ledger(f, ev), 1);
    /* The contact is kept for later mails. */
    cm_db_t *db = NULL;
    char *email = NULL, *name = NULL;
    assert_int_equal(cm_db_acquire(f->pool, &db), 0);
    assert_int_equal(mail_store_contact_get(db, u.id, &email, &name), 0);
    cm_db_release(db);
    assert_string_equal(email, u.email);
    assert_string_equal(name, u.name);
    free(email);
    free(name);
    free(mail);
    free(bytes);
}

static void a_redelivered_event_writes_nothing(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u, "twice_");
    char ev[37];
    char *bytes = registered(f, &u, "tok_twice_0123456789abcdefghij", ev);
    assert_int_equal(handle(f, bytes), 0);
    assert_int_equal(handle(f, bytes), 0);
    int n = 0;
    free(mails_with(f, u.email, &n));
    assert_int_equal(n, 1);
    assert_int_equal(ledger(f, ev), 1);
    free(bytes);
}

static void malformed_or_foreign_sealed_events_are_eparse_and_send_nothing(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u, "bad_");
    char ev[37];
    assert_int_equal(handle(f, "not json"), CM_EPARSE);
    /* Sealed for someone else's key. */
    uint8_t pk[32], sk[32];
    crypto_box_keypair(pk, sk);
    char *other = NULL;
    assert_int_equal(cm_seal(pk, "tok_foreign_0123456789abc", 25, &other), 0);
    json_t *data =
        json_pack("{s:s, s:s, s:s, s:s, s:s}", "user_id", u.id, "username", u.name, "email",
                  u.email, "verify_token_sealed", other, "registered_at", "2026-11-27T10:00:00Z");
    free(other);
    char *bytes = envelope("user.registered", data, ev);
    assert_int_equal(handle(f, bytes), CM_EPARSE);
    free(bytes);
    assert_int_equal(ledger(f, ev), 0);
    /* An address that would inject a header. */
    char *s = sealed(f, "tok_inject_0123456789abcdef");
    data = json_pack("{s:s, s:s, s:s, s:s}", "user_id", u.id, "username", u.name, "email",
                     "a@b.c\r\nBcc: evil@example.com", "verify_token_sealed", s);
    free(s);
    bytes = envelope("user.registered", data, ev);
    assert_int_equal(handle(f, bytes), CM_EPARSE);
    free(bytes);
    assert_int_equal(ledger(f, ev), 0);
    int n = 0;
    free(mails_with(f, u.name, &n));
    assert_int_equal(n, 0);
}

static void reset_and_password_changed_mails_reach_the_user(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u, "reset_");
    char ev[37];
    char *reg = registered(f, &u, "tok_reg_0123456789abcdefghijkl", ev);
    assert_int_equal(handle(f, reg), 0);
    char *s = sealed(f, "tok_reset_0123456789abcdefghij");
    json_t *data =
        json_pack("{s:s, s:s, s:s, s:s, s:s}", "user_id", u.id, "email", u.email, "username",
                  u.name, "reset_token_sealed", s, "expires_at", "2026-11-27T10:30:00Z");
    free(s);
    char *reset = envelope("reset.requested", data, ev);
    assert_int_equal(handle(f, reset), 0);
    int n = 0;
    char *mail = mails_with(f, "reset-password?token=tok_reset_0123456789abcdefghij", &n);
    assert_int_equal(n, 1);
    assert_non_null(strstr(mail, "Subject: Reset your linktr password"));
    free(mail);
    data = json_pack("{s:s, s:s, s:s}", "user_id", u.id, "email", u.email, "changed_at",
                     "2026-11-27T10:05:00Z");
    char *changed = envelope("password.changed", data, ev);
    assert_int_equal(handle(f, changed), 0);
    mail = mails_with(f, "Subject: Your linktr password was changed", &n);
    assert_non_null(strstr(mail, u.email));
    char hi[80];
    snprintf(hi, sizeof hi, "Hi %s,", u.name); /* the name comes from contacts */
    assert_non_null(strstr(mail, hi));
    free(mail);
    free(reg);
    free(reset);
    free(changed);
}

static void a_reward_before_the_contact_is_parked_and_sent_on_registration(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u, "rew_");
    char ev[37];
    json_t *data = json_pack(
        "{s:s, s:s, s:s, s:i, s:s, s:s, s:s}", "reward_id", "6f1c1f1e-0000-4000-8000-000000000001",
        "user_id", u.id, "kind", "credit", "amount", 10, "reason", "Your friend <b>joined</b>",
        "referral_id", "6f1c1f1e-0000-4000-8000-000000000002", "at", "2026-11-27T10:00:00Z");
    char *reward = envelope("reward.granted", data, ev);
    /* No contact yet: parked (not retried in place, which would block every topic). */
    assert_int_equal(handle(f, reward), 0);
    assert_int_equal(ledger(f, ev), 0);
    int n = 0;
    free(mails_with(f, "You earned a linktr reward: 10 credits", &n));
    assert_int_equal(n, 0);
    char ev2[37];
    char *reg = registered(f, &u, "tok_rew_0123456789abcdefghijkl", ev2);
    assert_int_equal(handle(f, reg), 0);    /* the registration releases it */
    assert_int_equal(handle(f, reward), 0); /* and a redelivery sends nothing more */
    char *mail = mails_with(f, "You earned a linktr reward: 10 credits", &n);
    assert_int_equal(n, 1);
    assert_non_null(strstr(mail, u.email));
    assert_non_null(strstr(mail, "Your friend &lt;b&gt;joined&lt;/b&gt;"));
    assert_int_equal(ledger(f, ev), 1);
    free(mail);
    free(reg);
    free(reward);
}

static void a_failed_delivery_leaves_no_ledger_row_and_succeeds_on_retry(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u, "retry_");
    char ev[37];
    char *bytes = registered(f, &u, "tok_retry_0123456789abcdefghij", ev);
    char *saved = f->cfg.mail_dir;
    f->cfg.mail_dir = cm_xasprintf("%s/missing", f->dir); /* no tmp/: delivery fails */
    int rc = handle(f, bytes);
    assert_int_equal(rc, CM_EIO);
    assert_int_equal(ledger(f, ev), 0);
    free(f->cfg.mail_dir);
    f->cfg.mail_dir = saved;
    assert_int_equal(handle(f, bytes), 0);
    assert_int_equal(ledger(f, ev), 1);
    int n = 0;
    free(mails_with(f, u.email, &n));
    assert_int_equal(n, 1);
    free(bytes);
}

/* signin.new: one notice with the time, the class and the address; a redelivery sends nothing. */
static void a_new_signin_mails_one_notice_once_and_refuses_odd_fields(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u, "signin_");
    char ev[37], ev2[37];
    char *reg = registered(f, &u, "tok_signin_0123456789abcdefghi", ev);
    assert_int_equal(handle(f, reg), 0);
    json_t *data = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "user_id", u.id, "email",
                             u.email, "session_id", "6f1c1f1e-0000-4000-8000-000000000009",
                             "user_agent", "Firefox on Linux", "network", "203.0.113.0/24", "ip",
                             "203.0.113.5", "signed_in_at", "2026-11-27T10:07:00.000Z");
    char *notice = envelope("signin.new", data, ev);
    assert_int_equal(handle(f, notice), 0);
    assert_int_equal(handle(f, notice), 0); /* redelivered */
    int n = 0;
    char *mail = mails_with(f, "Subject: New sign-in to your linktr account", &n);
    assert_int_equal(n, 1);
    assert_non_null(strstr(mail, u.email));
    assert_non_null(strstr(mail, "Firefox on Linux"));
    assert_non_null(strstr(mail, "203.0.113.5"));
    assert_non_null(strstr(mail, "2026-11-27T10:07:00.000Z"));
    assert_int_equal(ledger(f, ev), 1);
    free(mail);
    /* A null address reads "unknown"; a class that is not printable ASCII is no mail at all. */
    data = json_pack("{s:s, s:s, s:s, s:s, s:s, s:n, s:s}", "user_id", u.id, "email", u.email,
                     "session_id", "6f1c1f1e-0000-4000-8000-00000000000a", "user_agent", "curl",
                     "network", "unknown", "ip", "signed_in_at", "2026-11-27T11:09:00.000Z");
    char *unknown = envelope("signin.new", data, ev2);
    assert_int_equal(handle(f, unknown), 0);
    mail = mails_with(f, "2026-11-27T11:09:00.000Z", &n);
    assert_int_equal(n, 1);
    assert_non_null(strstr(mail, "unknown"));
    free(mail);
    data = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "user_id", u.id, "email", u.email,
                     "session_id", "6f1c1f1e-0000-4000-8000-00000000000b", "user_agent",
                     "Fire\u00e9fox", "network", "unknown", "ip", "1.2.3.4", "signed_in_at",
                     "2026-11-27T12:11:00.000Z");
    char *odd = envelope("signin.new", data, ev2);
    assert_int_equal(handle(f, odd), CM_EPARSE);
    free(mails_with(f, "2026-11-27T12:11:00.000Z", &n));
    assert_int_equal(n, 0);
    free(odd);
    free(unknown);
    free(notice);
    free(reg);
}

/* ---- account deletion (issue 15) ---------------------------------------------- */

/* Rows sql counts for one parameter. */
static long long count_rows(fixture_t *f, const char *sql, const char *param)
{
    cm_db_t *db = NULL;
    assert_int_equal(cm_db_acquire(f->pool, &db), 0);
    PGresult *res = NULL;
    const char *p[1] = {param};
    assert_int_equal(cm_db_exec(db, sql, 1, p, &res), 0);
    long long n = PQntuples(res);
    PQclear(res);
    cm_db_release(db);
    return n;
}

static char *deleted(const user_t *u, char ev[37])
{
    json_t *data = json_pack("{s:s, s:s}", "user_id", u->id, "deleted_at", "2026-11-28T09:00:00Z");
    return envelope("user.deleted", data, ev);
}

static void a_deletion_sends_one_goodbye_then_forgets_the_address(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u, "bye_");
    char ev[37], del_ev[37];
    char *reg = registered(f, &u, "tok_bye_0123456789abcdefghijkl", ev);
    assert_int_equal(handle(f, reg), 0);
    char *del = deleted(&u, del_ev);
    assert_int_equal(handle(f, del), 0);
    int n = 0;
    char *mail = mails_with(f, "Subject: Your linktr account was deleted", &n);
    assert_int_equal(n, 1);
    assert_non_null(strstr(mail, u.email));
    char hi[80];
    snprintf(hi, sizeof hi, "Hi %s,", u.name);
    assert_non_null(strstr(mail, hi));
    free(mail);
    assert_int_equal(count_rows(f, "SELECT 1 FROM contacts WHERE user_id = $1::uuid", u.id), 0);
    assert_int_equal(count_rows(f, "SELECT 1 FROM sent WHERE recipient = $1", u.email), 0);
    assert_int_equal(count_rows(f, "SELECT 1 FROM sent WHERE event_id IN ($1::uuid)", del_ev), 1);
    /* Redelivered, a new event id, a late registration, a late reward: nothing at all. */
    assert_int_equal(handle(f, del), 0);
    char ev2[37];
    char *del2 = deleted(&u, ev2);
    assert_int_equal(handle(f, del2), 0);
    char *reg2 = registered(f, &u, "tok_bye_late_456789abcdefghijk", ev2);
    assert_int_equal(handle(f, reg2), 0);
    json_t *data = json_pack("{s:s, s:s, s:s, s:i, s:s, s:n, s:s}", "reward_id",
                             "6f1c1f1e-0000-4000-8000-0000000000b1", "user_id", u.id, "kind",
                             "credit", "amount", 7, "reason", "Welcome to linktr", "referral_id",
                             "at", "2026-11-28T09:01:00Z");
    char *reward = envelope("reward.granted", data, ev2);
    assert_int_equal(handle(f, reward), 0);
    free(mails_with(f, "Subject: Your linktr account was deleted", &n));
    assert_int_equal(n, 1);
    free(mails_with(f, "tok_bye_late_456789abcdefghijk", &n));
    assert_int_equal(n, 0);
    free(mails_with(f, "7 credits", &n));
    assert_int_equal(n, 0);
    assert_int_equal(count_rows(f, "SELECT 1 FROM contacts WHERE user_id = $1::uuid", u.id), 0);
    assert_int_equal(count_rows(f, "SELECT 1 FROM parked_mails WHERE user_id = $1::uuid", u.id), 0);
    assert_int_equal(count_rows(f, "SELECT 1 FROM sent WHERE recipient = $1", u.email), 0);
    free(reward);
    free(reg2);
    free(del2);
    free(del);
    free(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_registration_writes_one_verify_mail_with_the_opened_token),
        cmocka_unit_test(a_redelivered_event_writes_nothing),
        cmocka_unit_test(malformed_or_foreign_sealed_events_are_eparse_and_send_nothing),
        cmocka_unit_test(reset_and_password_changed_mails_reach_the_user),
        cmocka_unit_test(a_reward_before_the_contact_is_parked_and_sent_on_registration),
        cmocka_unit_test(a_failed_delivery_leaves_no_ledger_row_and_succeeds_on_retry),
        cmocka_unit_test(a_deletion_sends_one_goodbye_then_forgets_the_address),
        cmocka_unit_test(a_new_signin_mails_one_notice_once_and_refuses_odd_fields),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
