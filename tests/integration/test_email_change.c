/*
 * Email change while signed in (issue 15), black-box through the gateway on
 * the running stack: POST /api/email/ and its refusals (400, 401, 403 counted
 * by the login throttle, 409), the two mails read from the Maildir (the
 * confirm link to the new address, the cancel link to the old one), the
 * pages /confirm-email and /cancel-email-change (a GET spends nothing; the
 * form POST with its CSRF token from our Origin spends the token), the
 * outcomes (changed, already used, cancelled, replaced, expired, taken
 * meanwhile), the copies of the address that follow (the mailer's contact,
 * referral's member) and the events: valid against proto/events, tokens
 * never in clear. Databases are read with libpq from the stack's URLs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "cm/crypto.h"
#include "cm/util.h"
#include "http_client.h"
#include "schema.h"
#include "testenv.h"

#define ENV "LINKTR_STACK_ENV"
#define PASSWORD "correct horse battery staple 42"
#define DEADLINE_MS 30000

/* ---- HTTP ------------------------------------------------------------------------------ */

static const char *str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* POSTs JSON through the gateway; retries while auth's hash pool says 503. */
static long post(const char *path, json_t *body, const char *bearer, t_resp_t *r)
{
    char *u = t_url("GATEWAY_URL", path);
    for (int tries = 0;; tries++) {
        assert_int_equal(t_post_json(u, body, bearer, r), 0);
        if (r->status != 503 || tries > 100)
            break;
        t_resp_dispose(r);
        t_sleep_ms(100);
    }
    free(u);
    return r->status;
}

/* A problem+json answer of status; with field, its errors name it. */
static void assert_problem(const t_resp_t *r, long status, const char *field)
{
    if (r->status != status)
        fail_msg("expected %ld, got %ld: %s", status, r->status, r->body);
    assert_non_null(r->content_type);
    assert_non_null(strstr(r->content_type, "application/problem+json"));
    assert_int_equal(json_integer_value(json_object_get(r->json, "status")), status);
    if (field) {
        json_t *list = json_object_get(json_object_get(r->json, "errors"), field);
        if (!json_is_array(list) || json_array_size(list) == 0)
            fail_msg("no errors.%s in %s", field, r->body);
    }
}

/* A registered, logged-in user. */
typedef struct user {
    char name[64], email[128], id[37];
    char *access;
} user_t;

static void register_user(user_t *u, const char *tag)
{
    static int counter;
    snprintf(u->name, sizeof u->name, "%s%d_%s", tag, ++counter, t_unique());
    snprintf(u->email, sizeof u->email, "%s@example.com", u->name);
    json_t *b =
        json_pack("{s:s, s:s, s:s}", "username", u->name, "email", u->email, "password", PASSWORD);
    t_resp_t r;
    if (post("/api/register/", b, NULL, &r) != 201)
        fail_msg("register: %ld %s", r.status, r.body);
    snprintf(u->id, sizeof u->id, "%s", str(r.json, "id"));
    t_resp_dispose(&r);
    json_decref(b);
    u->access = NULL;
}

/* Logs in as ident; returns the status (the access token goes to *access when 200). */
static long login(const char *ident, const char *password, char **access)
{
    json_t *b = json_pack("{s:s, s:s}", "username_or_email", ident, "password", password);
    t_resp_t r;
    long st = post("/api/login/", b, NULL, &r);
    if (st == 200 && access)
        *access = cm_xstrdup(str(r.json, "access"));
    t_resp_dispose(&r);
    json_decref(b);
    return st;
}

static void new_user(user_t *u, const char *tag)
{
    register_user(u, tag);
    if (login(u->email, PASSWORD, &u->access) != 200)
        fail_msg("login of %s failed", u->email);
}

static void user_dispose(user_t *u)
{
    free(u->access);
    u->access = NULL;
}

/* POST /api/email/ as u. */
static long ask_change(const user_t *u, const char *password, const char *new_email, t_resp_t *r)
{
    json_t *b = json_pack("{s:s, s:s}", "password", password, "new_email", new_email);
    long st = post("/api/email/", b, u->access, r);
    json_decref(b);
    return st;
}

static void ask_change_ok(const user_t *u, const char *new_email)
{
    t_resp_t r;
    if (ask_change(u, PASSWORD, new_email, &r) != 202)
        fail_msg("email change: %ld %s", r.status, r.body);
    assert_string_equal(str(r.json, "new_email"), new_email);
    assert_true(json_integer_value(json_object_get(r.json, "expires_in")) > 0);
    t_resp_dispose(&r);
}

/* POST /api/email/confirm/ or /cancel/ with token; returns the status, r filled. */
static long use_token(const char *what, const char *token, t_resp_t *r)
{
    char *path = cm_xasprintf("/api/email/%s/", what);
    json_t *b = json_pack("{s:s}", "token", token);
    long st = post(path, b, NULL, r);
    json_decref(b);
    free(path);
    return st;
}

static void assert_link_refused(const char *what, const char *token, long status,
                                const char *reason)
{
    t_resp_t r;
    use_token(what, token, &r);
    assert_problem(&r, status, NULL);
    if (!str(r.json, "reason") || strcmp(str(r.json, "reason"), reason) != 0)
        fail_msg("expected reason %s: %s", reason, r.body);
    t_resp_dispose(&r);
}

/* ---- pages ----------------------------------------------------------------------------- */

/* GET page?token=: 200 with the form; returns its csrf value (caller frees). */
static char *get_page(const char *page, const char *token)
{
    char *path = cm_xasprintf("%s?token=%s", page, token);
    char *u = t_url("GATEWAY_URL", path);
    t_resp_t r;
    assert_int_equal(t_get(u, NULL, &r), 0);
    if (r.status != 200)
        fail_msg("GET %s: %ld %s", page, r.status, r.body);
    assert_non_null(strstr(r.content_type, "text/html"));
    static const char key[] = "name=\"csrf\" value=\"";
    const char *at = strstr(r.body, key);
    assert_non_null(at);
    at += sizeof key - 1;
    char *csrf = cm_xstrndup(at, strcspn(at, "\""));
    t_resp_dispose(&r);
    free(u);
    free(path);
    return csrf;
}

/* POSTs the page's form from origin (NULL: none); returns the status, r filled. */
static long post_page(const char *page, const char *token, const char *csrf, const char *origin,
                      t_resp_t *r)
{
    char *u = t_url("GATEWAY_URL", page);
    char *form = cm_xasprintf("token=%s&csrf=%s", token, csrf ? csrf : "");
    char *hdr = origin ? cm_xasprintf("Origin: %s", origin) : NULL;
    const char *headers[2] = {hdr, NULL};
    assert_int_equal(
        t_http("POST", u, "application/x-www-form-urlencoded", form, strlen(form), headers, r), 0);
    free(hdr);
    free(form);
    free(u);
    return r->status;
}

/* GET twice (as a mail scanner and a link preview would), then the person's POST. */
static long click(const char *page, const char *token, t_resp_t *r)
{
    free(get_page(page, token));
    char *csrf = get_page(page, token);
    char *origin = t_env(ENV, "PUBLIC_BASE_URL");
    long st = post_page(page, token, csrf, origin, r);
    free(origin);
    free(csrf);
    return st;
}

static void assert_page(const t_resp_t *r, long status, const char *needle)
{
    if (r->status != status || !strstr(r->body, needle))
        fail_msg("expected %ld with \"%s\", got %ld: %s", status, needle, r->status, r->body);
}

/* ---- the Maildir ----------------------------------------------------------------------- */

/* The newest mail to `to` that holds needle, polled for up to DEADLINE_MS. Caller frees. */
static char *mail_to(const char *to, const char *needle)
{
    char *dir = t_env(ENV, "MAIL_DIR");
    char *newdir = cm_xasprintf("%s/new", dir);
    char *hdr = cm_xasprintf("\r\nTo: %s\r\n", to);
    char *found = NULL;
    int64_t deadline = cm_now_mono_ms() + DEADLINE_MS;
    while (!found && cm_now_mono_ms() < deadline) {
        DIR *d = opendir(newdir);
        for (struct dirent *e; d && !found && (e = readdir(d));) {
            if (e->d_name[0] == '.')
                continue;
            char *path = cm_xasprintf("%s/%s", newdir, e->d_name);
            char *text = NULL;
            size_t len = 0;
            if (cm_read_file(path, 1 << 20, &text, &len) == 0 && strstr(text, hdr) &&
                strstr(text, needle))
                found = text;
            else
                free(text);
            free(path);
        }
        if (d)
            closedir(d);
        if (!found)
            t_sleep_ms(100);
    }
    if (!found)
        fail_msg("no mail to %s with %s", to, needle);
    free(hdr);
    free(newdir);
    free(dir);
    return found;
}

/* The token of the first "<page>?token=" link in the newest such mail to `to`. Caller frees. */
static char *link_token(const char *to, const char *page)
{
    char *needle = cm_xasprintf("%s?token=", page);
    char *mail = mail_to(to, needle);
    const char *at = strstr(mail, needle) + strlen(needle);
    char *tok = cm_xstrndup(at, strspn(at, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                           "0123456789-_"));
    assert_true(strlen(tok) >= 32);
    free(mail);
    free(needle);
    return tok;
}

/* ---- databases ------------------------------------------------------------------------- */

/* The first column of the first row of sql (params p0, p1) on db_key's database, or NULL. */
static char *db_value(const char *db_key, const char *sql, const char *p0, const char *p1)
{
    char *dsn = t_env(ENV, db_key);
    PGconn *c = PQconnectdb(dsn);
    free(dsn);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("database: %s", PQerrorMessage(c));
    const char *params[2] = {p0, p1};
    PGresult *r = PQexecParams(c, sql, p1 ? 2 : (p0 ? 1 : 0), NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("query failed: %s", PQerrorMessage(c));
    char *v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)
                  ? cm_xstrdup(PQgetvalue(r, 0, 0))
                  : NULL;
    PQclear(r);
    PQfinish(c);
    return v;
}

/* Polls until sql's value equals want (a copy that follows an event). */
static void wait_value(const char *db_key, const char *sql, const char *p0, const char *want)
{
    int64_t deadline = cm_now_mono_ms() + DEADLINE_MS;
    char *v = NULL;
    for (;;) {
        v = db_value(db_key, sql, p0, NULL);
        if ((v && strcmp(v, want) == 0) || cm_now_mono_ms() > deadline)
            break;
        free(v);
        t_sleep_ms(100);
    }
    if (!v || strcmp(v, want) != 0)
        fail_msg("%s: wanted %s, have %s", sql, want, v ? v : "(none)");
    free(v);
}

/* The newest sent outbox envelope of topic for user, validated against proto/events. */
static json_t *sent_event(const char *user_id, const char *topic)
{
    int64_t deadline = cm_now_mono_ms() + DEADLINE_MS;
    for (;;) {
        char *payload = db_value("AUTH_DATABASE_URL",
                                 "SELECT payload FROM outbox WHERE key = $1 AND topic = $2 "
                                 "AND sent_at IS NOT NULL ORDER BY id DESC LIMIT 1",
                                 user_id, topic);
        if (payload) {
            json_t *env = json_loads(payload, 0, NULL);
            free(payload);
            assert_non_null(env);
            char err[256];
            if (!t_schema_validate_event(env, err, sizeof err))
                fail_msg("%s does not match its schema: %s", topic, err);
            return env;
        }
        if (cm_now_mono_ms() > deadline)
            fail_msg("no sent %s event for %s", topic, user_id);
        t_sleep_ms(100);
    }
}

/* No outbox row of the user holds token in clear. */
static void assert_token_sealed(const char *user_id, const char *token)
{
    char *n = db_value("AUTH_DATABASE_URL",
                       "SELECT count(*) FROM outbox WHERE key = $1 AND strpos(payload, $2) > 0",
                       user_id, token);
    assert_non_null(n);
    assert_string_equal(n, "0");
    free(n);
}

/* ---- the request ------------------------------------------------------------------------ */

static void asking_needs_a_token_a_valid_new_address_and_the_password(void **state)
{
    (void)state;
    user_t a;
    new_user(&a, "ecv");
    t_resp_t r;
    json_t *b = json_pack("{s:s, s:s}", "password", PASSWORD, "new_email", "x@example.com");
    post("/api/email/", b, NULL, &r);
    assert_problem(&r, 401, NULL);
    t_resp_dispose(&r);
    json_decref(b);
    const char *bad[] = {"not-an-address", "two@@example.com", "a@b", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ask_change(&a, PASSWORD, bad[i], &r);
        assert_problem(&r, 400, "new_email");
        t_resp_dispose(&r);
    }
    ask_change(&a, PASSWORD, a.email, &r); /* already the address */
    assert_problem(&r, 400, "new_email");
    t_resp_dispose(&r);
    char upper[128];
    snprintf(upper, sizeof upper, "%s", a.email);
    upper[0] = (char)(upper[0] - 'a' + 'A');
    ask_change(&a, PASSWORD, upper, &r); /* case does not make another address */
    assert_problem(&r, 400, "new_email");
    t_resp_dispose(&r);
    b = json_pack("{s:s}", "new_email", "y@example.com");
    post("/api/email/", b, a.access, &r);
    assert_problem(&r, 400, "password");
    t_resp_dispose(&r);
    json_decref(b);
    b = json_pack("{s:i, s:s}", "password", 42, "new_email", "y@example.com");
    post("/api/email/", b, a.access, &r);
    assert_problem(&r, 400, "password");
    t_resp_dispose(&r);
    json_decref(b);
    /* Nothing was stored and nothing mailed. */
    char *n = db_value("AUTH_DATABASE_URL", "SELECT count(*) FROM email_changes WHERE user_id = $1",
                       a.id, NULL);
    assert_string_equal(n, "0");
    free(n);
    user_dispose(&a);
}

static void a_wrong_password_is_403_and_counts_in_the_login_throttle(void **state)
{
    (void)state;
    user_t a;
    new_user(&a, "ecp");
    t_resp_t r;
    ask_change(&a, "not the password at all", "elsewhere@example.com", &r);
    assert_problem(&r, 403, "password");
    t_resp_dispose(&r);
    /* Guessing goes on until the throttle locks the account's pair: 429, never a 202. */
    bool locked = false;
    for (int i = 0; i < 12 && !locked; i++) {
        ask_change(&a, "still not the password", "elsewhere@example.com", &r);
        if (r.status == 429) {
            locked = true;
            assert_non_null(strstr(r.body, "failed login")); /* auth's throttle, not a bucket */
            char *ra = t_resp_header(&r, "Retry-After");
            assert_non_null(ra);
            free(ra);
        } else {
            assert_problem(&r, 403, "password");
        }
        t_resp_dispose(&r);
    }
    assert_true(locked);
    /* The lock is the login throttle's: logging in with the right password waits too. */
    assert_int_equal(login(a.email, PASSWORD, NULL), 429);
    char *n = db_value("AUTH_DATABASE_URL", "SELECT count(*) FROM email_changes WHERE user_id = $1",
                       a.id, NULL);
    assert_string_equal(n, "0");
    free(n);
    user_dispose(&a);
}

static void an_address_another_account_has_is_409(void **state)
{
    (void)state;
    user_t a, b;
    new_user(&a, "ect");
    register_user(&b, "ecu");
    t_resp_t r;
    ask_change(&a, PASSWORD, b.email, &r);
    assert_problem(&r, 409, "new_email");
    t_resp_dispose(&r);
    for (char *p = b.email; *p; p++) /* ignoring case */
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    ask_change(&a, PASSWORD, b.email, &r);
    assert_problem(&r, 409, "new_email");
    t_resp_dispose(&r);
    user_dispose(&a);
}

/* ---- confirm ------------------------------------------------------------------------------ */

static void the_confirm_link_changes_the_address_and_every_copy_follows(void **state)
{
    (void)state;
    user_t a;
    new_user(&a, "ecc");
    char new_email[160];
    snprintf(new_email, sizeof new_email, "moved.%s", a.email);
    ask_change_ok(&a, new_email);
    char *confirm = link_token(new_email, "/confirm-email");
    char *cancel = link_token(a.email, "/cancel-email-change");
    /* The notice names the new address; both events match their schemas, tokens sealed. */
    char *notice = mail_to(a.email, "/cancel-email-change?token=");
    assert_non_null(strstr(notice, new_email));
    free(notice);
    json_decref(sent_event(a.id, "email.change.requested"));
    json_decref(sent_event(a.id, "email.change.notice"));
    /* Nothing changed yet. */
    assert_int_equal(login(a.email, PASSWORD, NULL), 200);
    assert_int_equal(login(new_email, PASSWORD, NULL), 401);
    t_resp_t r;
    click("/confirm-email", confirm, &r);
    assert_page(&r, 200, "Email address changed");
    assert_non_null(strstr(r.body, new_email));
    t_resp_dispose(&r);
    assert_int_equal(login(new_email, PASSWORD, NULL), 200);
    assert_int_equal(login(a.email, PASSWORD, NULL), 401);
    char *u = t_url("GATEWAY_URL", "/api/me/");
    assert_int_equal(t_get(u, a.access, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(str(r.json, "email"), new_email);
    assert_true(json_is_true(json_object_get(r.json, "email_verified")));
    t_resp_dispose(&r);
    free(u);
    /* The event, and the copies of the address. */
    json_t *env = sent_event(a.id, "user.email.changed");
    json_t *data = json_object_get(env, "data");
    assert_string_equal(str(data, "old_email"), a.email);
    assert_string_equal(str(data, "new_email"), new_email);
    assert_non_null(str(env, "correlation_id"));
    json_decref(env);
    wait_value("MAILER_DATABASE_URL", "SELECT email FROM contacts WHERE user_id = $1::uuid", a.id,
               new_email);
    wait_value("REFERRAL_DATABASE_URL", "SELECT email FROM members WHERE user_id = $1::uuid", a.id,
               new_email);
    assert_token_sealed(a.id, confirm);
    assert_token_sealed(a.id, cancel);
    /* Single use: again through the page and the API; the cancel link is too late now. */
    click("/confirm-email", confirm, &r);
    assert_page(&r, 410, "already used");
    t_resp_dispose(&r);
    assert_link_refused("confirm", confirm, 410, "confirmed");
    assert_link_refused("cancel", cancel, 410, "confirmed");
    free(cancel);
    free(confirm);
    user_dispose(&a);
}

static void the_cancel_link_makes_the_confirm_link_fail(void **state)
{
    (void)state;
    user_t a;
    new_user(&a, "ecx");
    char new_email[160];
    snprintf(new_email, sizeof new_email, "thief.%s", a.email);
    ask_change_ok(&a, new_email);
    char *confirm = link_token(new_email, "/confirm-email");
    char *cancel = link_token(a.email, "/cancel-email-change");
    t_resp_t r;
    click("/cancel-email-change", cancel, &r);
    assert_page(&r, 200, "Email change cancelled");
    t_resp_dispose(&r);
    click("/confirm-email", confirm, &r);
    assert_page(&r, 410, "This change was cancelled");
    t_resp_dispose(&r);
    assert_link_refused("confirm", confirm, 410, "cancelled");
    assert_link_refused("cancel", cancel, 410, "cancelled");
    assert_int_equal(login(a.email, PASSWORD, NULL), 200);
    assert_int_equal(login(new_email, PASSWORD, NULL), 401);
    free(cancel);
    free(confirm);
    user_dispose(&a);
}

static void an_address_registered_meanwhile_is_409_at_confirmation(void **state)
{
    (void)state;
    user_t a;
    new_user(&a, "ecm");
    char new_email[160];
    snprintf(new_email, sizeof new_email, "wanted.%s", a.email);
    ask_change_ok(&a, new_email);
    char *confirm = link_token(new_email, "/confirm-email");
    /* Someone registers the address before the link is opened. */
    json_t *b =
        json_pack("{s:s, s:s, s:s}", "username", "x", "email", new_email, "password", PASSWORD);
    char name[64];
    snprintf(name, sizeof name, "ecn_%s", t_unique());
    json_object_set_new(b, "username", json_string(name));
    t_resp_t r;
    assert_int_equal(post("/api/register/", b, NULL, &r), 201);
    t_resp_dispose(&r);
    json_decref(b);
    use_token("confirm", confirm, &r);
    assert_problem(&r, 409, "new_email");
    assert_string_equal(str(r.json, "reason"), "taken");
    t_resp_dispose(&r);
    click("/confirm-email", confirm, &r);
    assert_page(&r, 409, "taken meanwhile");
    t_resp_dispose(&r);
    assert_int_equal(login(a.email, PASSWORD, NULL), 200);
    char *n = db_value(
        "AUTH_DATABASE_URL",
        "SELECT count(*) FROM outbox WHERE key = $1 AND topic = 'user.email.changed'", a.id, NULL);
    assert_string_equal(n, "0");
    free(n);
    free(confirm);
    user_dispose(&a);
}

static void a_new_request_replaces_the_old_and_links_expire(void **state)
{
    (void)state;
    user_t a;
    new_user(&a, "ecr");
    char first[160], second[160];
    snprintf(first, sizeof first, "first.%s", a.email);
    snprintf(second, sizeof second, "second.%s", a.email);
    ask_change_ok(&a, first);
    char *old_confirm = link_token(first, "/confirm-email");
    ask_change_ok(&a, second);
    char *confirm = link_token(second, "/confirm-email");
    assert_link_refused("confirm", old_confirm, 410, "superseded");
    t_resp_t r;
    click("/confirm-email", old_confirm, &r);
    assert_page(&r, 410, "replaced");
    t_resp_dispose(&r);
    /* Expiry (EMAIL_CHANGE_TTL_S is at least 10 minutes): moved into the past here. */
    char *n = db_value("AUTH_DATABASE_URL",
                       "WITH e AS (UPDATE email_changes SET expires_at = now() - interval '1 "
                       "second' WHERE user_id = $1::uuid AND state = 'pending' RETURNING 1) "
                       "SELECT count(*) FROM e",
                       a.id, NULL);
    assert_string_equal(n, "1");
    free(n);
    assert_link_refused("confirm", confirm, 410, "expired");
    click("/confirm-email", confirm, &r);
    assert_page(&r, 410, "expired");
    t_resp_dispose(&r);
    assert_int_equal(login(a.email, PASSWORD, NULL), 200);
    free(confirm);
    free(old_confirm);
    user_dispose(&a);
}

static void bad_tokens_and_forged_forms_spend_nothing(void **state)
{
    (void)state;
    t_resp_t r;
    assert_link_refused("confirm", "short", 400, "invalid");
    assert_link_refused("confirm", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 400, "invalid");
    assert_link_refused("cancel", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 400, "invalid");
    json_t *b = json_object();
    post("/api/email/confirm/", b, NULL, &r);
    assert_problem(&r, 400, "token");
    t_resp_dispose(&r);
    json_decref(b);
    user_t a;
    new_user(&a, "ecf");
    char new_email[160];
    snprintf(new_email, sizeof new_email, "forged.%s", a.email);
    ask_change_ok(&a, new_email);
    char *confirm = link_token(new_email, "/confirm-email");
    char *csrf = get_page("/confirm-email", confirm);
    char *origin = t_env(ENV, "PUBLIC_BASE_URL");
    post_page("/confirm-email", confirm, NULL, origin, &r); /* no CSRF token */
    assert_page(&r, 403, "Request refused");
    t_resp_dispose(&r);
    post_page("/confirm-email", confirm, csrf, "http://evil.example", &r);
    assert_page(&r, 403, "Request refused");
    t_resp_dispose(&r);
    /* A CSRF token made for the cancel form does not fit the confirm form. */
    char *cancel = link_token(a.email, "/cancel-email-change");
    char *cancel_csrf = get_page("/cancel-email-change", cancel);
    post_page("/confirm-email", confirm, cancel_csrf, origin, &r);
    assert_page(&r, 403, "Request refused");
    t_resp_dispose(&r);
    post_page("/confirm-email", confirm, csrf, origin, &r);
    assert_page(&r, 200, "Email address changed");
    t_resp_dispose(&r);
    free(cancel_csrf);
    free(cancel);
    free(origin);
    free(csrf);
    free(confirm);
    user_dispose(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(asking_needs_a_token_a_valid_new_address_and_the_password),
        cmocka_unit_test(a_wrong_password_is_403_and_counts_in_the_login_throttle),
        cmocka_unit_test(an_address_another_account_has_is_409),
        cmocka_unit_test(the_confirm_link_changes_the_address_and_every_copy_follows),
        cmocka_unit_test(the_cancel_link_makes_the_confirm_link_fail),
        cmocka_unit_test(an_address_registered_meanwhile_is_409_at_confirmation),
        cmocka_unit_test(a_new_request_replaces_the_old_and_links_expire),
        cmocka_unit_test(bad_tokens_and_forged_forms_spend_nothing),
    };
    if (cm_crypto_init() != 0)
        return 1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
