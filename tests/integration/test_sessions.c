/*
 * Sessions, password change and the new sign-in notice (issue 15), against
 * the running stack, through the gateway:
 *
 * - GET /api/sessions/ lists the caller's logins with their user agent
 *   class and address and marks the caller's own (the token's sid);
 * - DELETE /api/sessions/{id}/ ends one: its refresh token is 401 at once,
 *   the caller's other sessions and other accounts' sessions keep working,
 *   another account's id (or a malformed one) is 404;
 * - POST /api/sessions/revoke-others/ ends all but the current one;
 * - POST /api/password/: weak → 400 naming new_password, wrong current
 *   password → 403 (counted by the login throttle: 429 follows), success
 *   ends the other sessions (unless keep_other_sessions), mails
 *   password.changed (correlated with the request id) and the new
 *   password logs in;
 * - a login from a (user agent class, network) pair new to the account
 *   writes signin.new (valid against its schema) and one mail; none
 *   for the account's first login, none again within the hour.
 *
 * Networks other than loopback's are simulated by logging in straight at
 * auth with X-Real-IP (loopback is auth's default GATEWAY_ADDRESSES), as
 * test_hostile_sessions.c does: the shared stack's gateway believes no
 * X-Forwarded-For.
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
#include <jansson.h>
#include <sodium.h>

#include "cm/util.h"
#include "http_client.h"
#include "schema.h"
#include "stack.h"
#include "testenv.h"

#define PASSWORD "correct horse battery staple 42"
#define NEW_PASSWORD "a brand new passphrase 1987 tulips"
#define UA_FIREFOX "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
#define UA_CHROME_ANDROID                                                                          \
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "                   \
    "Chrome/131.0.0.0 Mobile Safari/537.36"
#define UA_CURL "curl/8.5.0"
#define MAIL_WAIT_MS 30000
#define SIGNIN_SUBJECT "New sign-in to your linktr account"
#define CHANGED_SUBJECT "Your linktr password was changed"

/* ---- helpers ---------------------------------------------------------------------- */

/* One login's tokens and session id (all owned). */
typedef struct login {
    char *access, *refresh, *sid;
} login_t;

static void login_dispose(login_t *l)
{
    free(l->access);
    free(l->refresh);
    free(l->sid);
    memset(l, 0, sizeof *l);
}

/* Sends method base+path with an optional JSON body, Bearer, User-Agent and X-Real-IP;
 * retries while auth's hash pool answers 503. Returns the status. */
static long call(const char *base_key, const char *method, const char *path, json_t *body,
                 const char *bearer, const char *ua, const char *real_ip, t_resp_t *r)
{
    char *u = t_url(base_key, path);
    char *auth = bearer ? cm_xasprintf("Authorization: Bearer %s", bearer) : NULL;
    char *uah = ua ? cm_xasprintf("User-Agent: %s", ua) : NULL;
    char *iph = real_ip ? cm_xasprintf("X-Real-IP: %s", real_ip) : NULL;
    const char *hdrs[4] = {NULL};
    size_t n = 0;
    if (auth)
        hdrs[n++] = auth;
    if (uah)
        hdrs[n++] = uah;
    if (iph)
        hdrs[n++] = iph;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    for (int tries = 0;; tries++) {
        assert_int_equal(t_http(method, u, text ? "application/json" : NULL, text,
                                text ? strlen(text) : 0, hdrs, r),
                         0);
        if (r->status != 503 || tries > 100)
            break;
        t_resp_dispose(r);
        t_sleep_ms(100);
    }
    free(text);
    free(iph);
    free(uah);
    free(auth);
    free(u);
    return r->status;
}

static long gw(const char *method, const char *path, json_t *body, const char *bearer, t_resp_t *r)
{
    return call("GATEWAY_URL", method, path, body, bearer, NULL, NULL, r);
}

/* The sid claim of an access token (its payload, base64url JSON). Caller frees. */
static char *sid_of(const char *access)
{
    const char *p = strchr(access, '.');
    assert_non_null(p);
    const char *end = strchr(p + 1, '.');
    assert_non_null(end);
    unsigned char raw[2048];
    size_t rawlen = 0;
    assert_int_equal(sodium_base642bin(raw, sizeof raw, p + 1, (size_t)(end - p - 1), NULL, &rawlen,
                                       NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                     0);
    json_t *claims = json_loadb((const char *)raw, rawlen, 0, NULL);
    assert_non_null(claims);
    const char *sid = json_string_value(json_object_get(claims, "sid"));
    assert_non_null(sid);
    char *out = cm_xstrdup(sid);
    json_decref(claims);
    return out;
}

/* Logs in at base_key (GATEWAY_URL or AUTH_URL) with a User-Agent and maybe an X-Real-IP. */
static login_t login_via(const char *base_key, const char *user, const char *password,
                         const char *ua, const char *ip)
{
    json_t *body = json_pack("{s:s, s:s}", "username_or_email", user, "password", password);
    t_resp_t r;
    long st = call(base_key, "POST", "/api/login/", body, NULL, ua, ip, &r);
    if (st != 200)
        fprintf(stderr, "login: %ld %s\n", st, r.body);
    assert_int_equal(st, 200);
    login_t l = {
        .access = cm_xstrdup(json_string_value(json_object_get(r.json, "access"))),
        .refresh = cm_xstrdup(json_string_value(json_object_get(r.json, "refresh"))),
    };
    l.sid = sid_of(l.access);
    t_resp_dispose(&r);
    json_decref(body);
    return l;
}

static login_t login(const char *user, const char *ua)
{
    return login_via("GATEWAY_URL", user, PASSWORD, ua, NULL);
}

/* Refreshes; on 200 the login's tokens become the new ones. Returns the status. */
static long refresh(login_t *l)
{
    json_t *body = json_pack("{s:s}", "refresh", l->refresh);
    t_resp_t r;
    long st = gw("POST", "/api/token/refresh/", body, NULL, &r);
    if (st == 200) {
        free(l->access);
        free(l->refresh);
        l->access = cm_xstrdup(json_string_value(json_object_get(r.json, "access")));
        l->refresh = cm_xstrdup(json_string_value(json_object_get(r.json, "refresh")));
    }
    t_resp_dispose(&r);
    json_decref(body);
    return st;
}

/* A registered user: its body (username, email, password) and its id. */
typedef struct user {
    json_t *body;
    char *id;
} user_t;

static user_t new_user(const char *tag)
{
    user_t u = {.body = t_user_body(tag, NULL)};
    json_t *made = t_register(u.body);
    u.id = cm_xstrdup(json_string_value(json_object_get(made, "id")));
    json_decref(made);
    return u;
}

static const char *name_of(const user_t *u)
{
    return json_string_value(json_object_get(u->body, "username"));
}

static const char *email_of(const user_t *u)
{
    return json_string_value(json_object_get(u->body, "email"));
}

static void user_dispose(user_t *u)
{
    json_decref(u->body);
    free(u->id);
}

/* GET /api/sessions/ as l; asserts 200 and returns "results" (new reference). */
static json_t *sessions_of(const login_t *l)
{
    t_resp_t r;
    assert_int_equal(gw("GET", "/api/sessions/", NULL, l->access, &r), 200);
    t_assert_header(&r, "Cache-Control", "no-store");
    json_t *results = json_incref(json_object_get(r.json, "results"));
    assert_true(json_is_array(results));
    t_resp_dispose(&r);
    return results;
}

/* The entry of list whose id is sid, or NULL (borrowed). */
static json_t *entry(json_t *list, const char *sid)
{
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        if (strcmp(json_string_value(json_object_get(s, "id")), sid) == 0)
            return s;
    }
    return NULL;
}

static long end_session(const login_t *as, const char *id)
{
    char *path = cm_xasprintf("/api/sessions/%s/", id);
    t_resp_t r;
    long st = gw("DELETE", path, NULL, as->access, &r);
    if (st == 404)
        assert_string_equal(r.content_type, "application/problem+json");
    t_resp_dispose(&r);
    free(path);
    return st;
}

/* The newest such mail's text, waiting (bounded) for at least one. Caller frees. */
static char *wait_mail(const char *a, const char *b)
{
    int64_t deadline = cm_now_mono_ms() + MAIL_WAIT_MS;
    while (t_mails_with(a, b) < 1 && cm_now_mono_ms() < deadline)
        t_sleep_ms(100);
    char *dir = t_stack("MAIL_DIR");
    char *newdir = cm_xasprintf("%s/new", dir);
    char *found = NULL;
    DIR *d = opendir(newdir);
    for (struct dirent *e; d && (e = readdir(d)) && !found;) {
        char *path = cm_xasprintf("%s/%s", newdir, e->d_name);
        char *text = NULL;
        size_t len = 0;
        if (e->d_name[0] != '.' && cm_read_file(path, 1 << 20, &text, &len) == 0 &&
            strstr(text, a) && strstr(text, b)) {
            found = text;
            text = NULL;
        }
        free(text);
        free(path);
    }
    if (d)
        closedir(d);
    free(newdir);
    free(dir);
    if (!found)
        fail_msg("no mail with \"%s\" and \"%s\" within %d ms", a, b, MAIL_WAIT_MS);
    return found;
}

static int outbox_count(const char *user_id, const char *topic)
{
    return t_db_count("SELECT 1 FROM auth.outbox WHERE key = $1 AND topic = $2", user_id, topic);
}

/* ---- sessions ------------------------------------------------------------------------ */

static void
the_list_shows_each_login_with_its_class_and_address_and_marks_the_current_one(void **state)
{
    (void)state;
    user_t u = new_user("sl");
    login_t a = login(name_of(&u), UA_FIREFOX);
    login_t b = login(name_of(&u), UA_CURL);
    assert_string_not_equal(a.sid, b.sid);
    json_t *list = sessions_of(&a);
    assert_int_equal(json_array_size(list), 2);
    json_t *ea = entry(list, a.sid), *eb = entry(list, b.sid);
    assert_non_null(ea);
    assert_non_null(eb);
    assert_string_equal(json_string_value(json_object_get(ea, "user_agent")), "Firefox on Linux");
    assert_string_equal(json_string_value(json_object_get(eb, "user_agent")), "curl");
    assert_true(json_is_true(json_object_get(ea, "current")));
    assert_true(json_is_false(json_object_get(eb, "current")));
    assert_string_equal(json_string_value(json_object_get(ea, "ip")), "127.0.0.1");
    assert_non_null(json_string_value(json_object_get(ea, "created_at")));
    assert_non_null(json_string_value(json_object_get(ea, "last_used_at")));
    json_decref(list);
    /* The other login sees the same two, itself as the current one. */
    list = sessions_of(&b);
    assert_int_equal(json_array_size(list), 2);
    assert_true(json_is_true(json_object_get(entry(list, b.sid), "current")));
    assert_true(json_is_false(json_object_get(entry(list, a.sid), "current")));
    json_decref(list);
    /* A refresh keeps the session (and its mark) and moves last_used_at, at most once a
     * minute (auth migration 008): a's last use is made two minutes old, as time would. */
    static const char used[] =
        "SELECT last_used_at::text FROM auth.sessions WHERE family_id = $1::uuid";
    assert_int_equal(t_db_count("UPDATE auth.sessions SET last_used_at = last_used_at - "
                                "interval '2 minutes' WHERE family_id = $1::uuid RETURNING 1",
                                a.sid, NULL),
                     1);
    char *before = t_db_value(used, a.sid);
    assert_int_equal(refresh(&a), 200);
    char *sid = sid_of(a.access);
    assert_string_equal(sid, a.sid);
    free(sid);
    char *moved = t_db_value(used, a.sid);
    assert_non_null(before);
    assert_non_null(moved);
    assert_string_not_equal(before, moved);
    list = sessions_of(&a);
    assert_int_equal(json_array_size(list), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "id")), a.sid);
    json_decref(list);
    /* Within the minute another refresh leaves the row alone (no write per rotation). */
    assert_int_equal(refresh(&a), 200);
    char *again = t_db_value(used, a.sid);
    assert_non_null(again);
    assert_string_equal(again, moved);
    free(before), free(moved), free(again);
    t_resp_t r;
    assert_int_equal(gw("GET", "/api/sessions/", NULL, NULL, &r), 401);
    t_resp_dispose(&r);
    login_dispose(&a);
    login_dispose(&b);
    user_dispose(&u);
}

static void ending_a_session_kills_its_refresh_token_and_nothing_else(void **state)
{
    (void)state;
    user_t u = new_user("se"), other = new_user("so");
    login_t a = login(name_of(&u), UA_FIREFOX);
    login_t b = login(name_of(&u), UA_CHROME_ANDROID);
    login_t c = login(name_of(&other), UA_FIREFOX);
    /* Another account's session is no session of the caller's: 404, and it lives on. */
    assert_int_equal(end_session(&a, c.sid), 404);
    assert_int_equal(refresh(&c), 200);
    /* Malformed ids name no session either. */
    assert_int_equal(end_session(&a, "not-a-uuid"), 404);
    assert_int_equal(end_session(&a, "00000000-0000-0000-0000-000000000000"), 404);
    assert_int_equal(end_session(&a, "revoke-others"), 404);
    t_resp_t r;
    assert_int_equal(gw("DELETE", "/api/sessions/a%2Fb/", NULL, a.access, &r), 404);
    t_resp_dispose(&r);
    assert_int_equal(gw("DELETE", "/api/sessions/x/y/", NULL, a.access, &r), 404);
    t_resp_dispose(&r);
    assert_int_equal(gw("DELETE", "/api/sessions/%3Cb%3E/", NULL, a.access, &r), 404);
    t_resp_dispose(&r);
    assert_int_equal(gw("GET", "/api/sessions/x/", NULL, a.access, &r), 405);
    t_resp_dispose(&r);
    /* The real thing: b's refresh token is refused at once; a and c carry on. */
    assert_int_equal(end_session(&a, b.sid), 204);
    assert_int_equal(refresh(&b), 401);
    assert_int_equal(refresh(&a), 200);
    assert_int_equal(refresh(&a), 200);
    assert_int_equal(refresh(&c), 200);
    assert_int_equal(end_session(&a, b.sid), 404); /* already ended */
    json_t *list = sessions_of(&a);
    assert_int_equal(json_array_size(list), 1);
    assert_non_null(entry(list, a.sid));
    json_decref(list);
    list = sessions_of(&c);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);
    /* Without a token the gateway answers before auth. */
    char *path = cm_xasprintf("/api/sessions/%s/", a.sid);
    assert_int_equal(gw("DELETE", path, NULL, NULL, &r), 401);
    t_resp_dispose(&r);
    free(path);
    /* Ending one's own current session is a logout. */
    assert_int_equal(end_session(&a, a.sid), 204);
    assert_int_equal(refresh(&a), 401);
    login_dispose(&a);
    login_dispose(&b);
    login_dispose(&c);
    user_dispose(&u);
    user_dispose(&other);
}

static void revoke_others_ends_every_session_but_the_current_one(void **state)
{
    (void)state;
    user_t u = new_user("sr"), other = new_user("sq");
    login_t a = login(name_of(&u), UA_FIREFOX);
    login_t b = login(name_of(&u), UA_CURL);
    login_t c = login(name_of(&u), NULL);
    login_t d = login(name_of(&other), NULL);
    t_resp_t r;
    assert_int_equal(gw("POST", "/api/sessions/revoke-others/", NULL, b.access, &r), 204);
    t_resp_dispose(&r);
    assert_int_equal(refresh(&a), 401);
    assert_int_equal(refresh(&c), 401);
    assert_int_equal(refresh(&b), 200);
    assert_int_equal(refresh(&d), 200);
    json_t *list = sessions_of(&b);
    assert_int_equal(json_array_size(list), 1);
    assert_true(json_is_true(json_object_get(entry(list, b.sid), "current")));
    json_decref(list);
    assert_int_equal(gw("POST", "/api/sessions/revoke-others/", NULL, NULL, &r), 401);
    t_resp_dispose(&r);
    login_dispose(&a);
    login_dispose(&b);
    login_dispose(&c);
    login_dispose(&d);
    user_dispose(&u);
    user_dispose(&other);
}

/* ---- password change ------------------------------------------------------------------- */

static long change(const login_t *l, const char *current, const char *next, json_t *keep,
                   t_resp_t *r)
{
    json_t *body = json_pack("{s:s, s:s}", "current_password", current, "new_password", next);
    if (keep)
        json_object_set(body, "keep_other_sessions", keep);
    long st = gw("POST", "/api/password/", body, l->access, r);
    json_decref(body);
    return st;
}

static void a_weak_new_password_is_400_and_a_wrong_current_one_403(void **state)
{
    (void)state;
    user_t u = new_user("pw");
    login_t a = login(name_of(&u), NULL);
    login_t b = login(name_of(&u), NULL);
    t_resp_t r;
    assert_int_equal(change(&a, PASSWORD, "12345678", NULL, &r), 400);
    assert_non_null(json_object_get(json_object_get(r.json, "errors"), "new_password"));
    t_resp_dispose(&r);
    assert_int_equal(change(&a, PASSWORD, "password", NULL, &r), 400);
    assert_non_null(json_object_get(json_object_get(r.json, "errors"), "new_password"));
    t_resp_dispose(&r);
    assert_int_equal(change(&a, PASSWORD, name_of(&u), NULL, &r), 400);
    t_resp_dispose(&r);
    json_t *yes = json_string("yes");
    assert_int_equal(change(&a, PASSWORD, NEW_PASSWORD, yes, &r), 400);
    assert_non_null(json_object_get(json_object_get(r.json, "errors"), "keep_other_sessions"));
    t_resp_dispose(&r);
    json_decref(yes);
    json_t *missing = json_pack("{s:s}", "new_password", NEW_PASSWORD);
    assert_int_equal(gw("POST", "/api/password/", missing, a.access, &r), 400);
    assert_non_null(json_object_get(json_object_get(r.json, "errors"), "current_password"));
    t_resp_dispose(&r);
    json_decref(missing);
    assert_int_equal(change(&a, "not the password at all", NEW_PASSWORD, NULL, &r), 403);
    assert_string_equal(r.content_type, "application/problem+json");
    t_resp_dispose(&r);
    /* Another session's token cannot skip the check either. */
    assert_int_equal(change(&b, "still not it", NEW_PASSWORD, NULL, &r), 403);
    t_resp_dispose(&r);
    login_dispose(&a);
    login_dispose(&b);
    user_dispose(&u);
}

static void nothing_changes_until_the_current_password_is_right(void **state)
{
    (void)state;
    user_t u = new_user("pn");
    login_t a = login(name_of(&u), NULL);
    login_t b = login(name_of(&u), NULL);
    t_resp_t r;
    assert_int_equal(change(&a, "wrong wrong wrong", NEW_PASSWORD, NULL, &r), 403);
    t_resp_dispose(&r);
    assert_int_equal(change(&a, PASSWORD, "123", NULL, &r), 400);
    t_resp_dispose(&r);
    /* Both sessions work and the old password still logs in. */
    assert_int_equal(refresh(&b), 200);
    assert_int_equal(refresh(&a), 200);
    login_t c = login(name_of(&u), NULL);
    assert_int_equal(outbox_count(u.id, "password.changed"), 0);
    assert_int_equal(gw("POST", "/api/password/", NULL, NULL, &r), 401);
    t_resp_dispose(&r);
    login_dispose(&a);
    login_dispose(&b);
    login_dispose(&c);
    user_dispose(&u);
}

static void wrong_current_passwords_count_in_the_login_throttle(void **state)
{
    (void)state;
    user_t u = new_user("pt");
    login_t a = login(name_of(&u), NULL);
    t_resp_t r;
    long st = 0;
    int tries = 0;
    /* Five failures are free, then the pair (account, address) waits 1 s, 2 s, 4 s... */
    for (; tries < 12 && st != 429; tries++) {
        st = change(&a, "guess number whatever", NEW_PASSWORD, NULL, &r);
        if (st == 429)
            t_assert_header(&r, "Content-Type", "application/problem+json");
        if (st == 429) {
            char *ra = t_resp_header(&r, "Retry-After");
            assert_non_null(ra);
            free(ra);
        } else {
            assert_int_equal(st, 403);
        }
        t_resp_dispose(&r);
    }
    assert_int_equal(st, 429);
    assert_in_range(tries, 6, 12);
    /* The same throttle guards the login: the guesser cannot switch endpoints. */
    json_t *body = json_pack("{s:s, s:s}", "username_or_email", name_of(&u), "password", PASSWORD);
    assert_int_equal(gw("POST", "/api/login/", body, NULL, &r), 429);
    t_resp_dispose(&r);
    json_decref(body);
    login_dispose(&a);
    user_dispose(&u);
}

static void a_password_change_ends_the_other_sessions_and_mails_the_owner(void **state)
{
    (void)state;
    user_t u = new_user("pc");
    login_t a = login(name_of(&u), NULL);
    login_t b = login(name_of(&u), NULL);
    char rid[64];
    snprintf(rid, sizeof rid, "pwchange-%s", t_unique());
    char *hdr = cm_xasprintf("Authorization: Bearer %s", a.access);
    char *ridh = cm_xasprintf("X-Request-Id: %s", rid);
    const char *hdrs[] = {hdr, ridh, NULL};
    json_t *body =
        json_pack("{s:s, s:s}", "current_password", PASSWORD, "new_password", NEW_PASSWORD);
    char *text = json_dumps(body, JSON_COMPACT);
    char *url = t_gw("/api/password/");
    t_resp_t r;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(t_http("POST", url, "application/json", text, strlen(text), hdrs, &r), 0);
        if (r.status != 503)
            break;
        t_resp_dispose(&r);
        t_sleep_ms(100);
    }
    assert_int_equal(r.status, 204);
    t_resp_dispose(&r);
    /* b is gone at once, a stays; the old password is dead, the new one works. */
    assert_int_equal(refresh(&b), 401);
    assert_int_equal(refresh(&a), 200);
    json_t *old = json_pack("{s:s, s:s}", "username_or_email", name_of(&u), "password", PASSWORD);
    assert_int_equal(gw("POST", "/api/login/", old, NULL, &r), 401);
    t_resp_dispose(&r);
    json_decref(old);
    login_t c = login_via("GATEWAY_URL", name_of(&u), NEW_PASSWORD, NULL, NULL);
    /* password.changed: one event, valid, carrying the request's id; one mail. */
    assert_int_equal(outbox_count(u.id, "password.changed"), 1);
    char *payload = t_db_value(
        "SELECT payload FROM auth.outbox WHERE key = $1 AND topic = 'password.changed'", u.id);
    json_t *env = json_loads(payload, 0, NULL);
    char err[256];
    if (!t_schema_validate_event(env, err, sizeof err))
        fail_msg("password.changed: %s", err);
    assert_string_equal(json_string_value(json_object_get(env, "correlation_id")), rid);
    char *mail = wait_mail(email_of(&u), CHANGED_SUBJECT);
    char *xrid = cm_xasprintf("X-Request-Id: %s", rid);
    assert_non_null(strstr(mail, xrid));
    free(xrid);
    free(mail);
    assert_int_equal(t_mails_with(email_of(&u), CHANGED_SUBJECT), 1);
    json_decref(env);
    free(payload);
    free(url);
    free(text);
    json_decref(body);
    free(ridh);
    free(hdr);
    login_dispose(&a);
    login_dispose(&b);
    login_dispose(&c);
    user_dispose(&u);
}

static void keep_other_sessions_keeps_them_working(void **state)
{
    (void)state;
    user_t u = new_user("pk");
    login_t a = login(name_of(&u), NULL);
    login_t b = login(name_of(&u), NULL);
    t_resp_t r;
    assert_int_equal(change(&a, PASSWORD, NEW_PASSWORD, json_true(), &r), 204);
    t_resp_dispose(&r);
    assert_int_equal(refresh(&b), 200);
    assert_int_equal(refresh(&a), 200);
    json_t *list = sessions_of(&a);
    assert_int_equal(json_array_size(list), 2);
    json_decref(list);
    login_t c = login_via("GATEWAY_URL", name_of(&u), NEW_PASSWORD, NULL, NULL);
    login_dispose(&a);
    login_dispose(&b);
    login_dispose(&c);
    user_dispose(&u);
}

/* ---- the new sign-in notice ------------------------------------------------------------ */

/* The newest signin.new of user_id, validated against its schema (new reference). */
static json_t *newest_signin_event(const char *user_id)
{
    char *payload = t_db_value("SELECT payload FROM auth.outbox WHERE key = $1 AND "
                               "topic = 'signin.new' ORDER BY id DESC LIMIT 1",
                               user_id);
    assert_non_null(payload);
    json_t *env = json_loads(payload, 0, NULL);
    free(payload);
    char err[256];
    if (!t_schema_validate_event(env, err, sizeof err))
        fail_msg("signin.new: %s", err);
    return env;
}

static void a_new_user_agent_mails_once_an_hour_and_the_first_login_never(void **state)
{
    (void)state;
    user_t u = new_user("ns");
    login_t first = login(name_of(&u), UA_FIREFOX);
    /* The outbox row is written with the session: its absence is final. */
    assert_int_equal(outbox_count(u.id, "signin.new"), 0);
    login_t again = login(name_of(&u), UA_FIREFOX);
    assert_int_equal(outbox_count(u.id, "signin.new"), 0);
    login_t fresh = login(name_of(&u), UA_CURL);
    assert_int_equal(outbox_count(u.id, "signin.new"), 1);
    json_t *env = newest_signin_event(u.id);
    json_t *data = json_object_get(env, "data");
    assert_string_equal(json_string_value(json_object_get(data, "user_agent")), "curl");
    assert_string_equal(json_string_value(json_object_get(data, "network")), "127.0.0.0/24");
    assert_string_equal(json_string_value(json_object_get(data, "session_id")), fresh.sid);
    json_decref(env);
    char *mail = wait_mail(email_of(&u), SIGNIN_SUBJECT);
    assert_non_null(strstr(mail, "curl"));
    assert_non_null(strstr(mail, "127.0.0.1"));
    assert_null(strstr(mail, fresh.refresh));
    assert_null(strstr(mail, fresh.access));
    free(mail);
    /* Another new pair within the hour: remembered, but no second notice. */
    login_t third = login(name_of(&u), UA_CHROME_ANDROID);
    assert_int_equal(outbox_count(u.id, "signin.new"), 1);
    t_sleep_ms(1000); /* what a second event would need to reach the Maildir, roughly */
    assert_int_equal(t_mails_with(email_of(&u), SIGNIN_SUBJECT), 1);
    login_dispose(&first);
    login_dispose(&again);
    login_dispose(&fresh);
    login_dispose(&third);
    user_dispose(&u);
}

static void a_new_network_is_a_new_sign_in_and_a_neighbour_address_is_not(void **state)
{
    (void)state;
    user_t u = new_user("nn");
    login_t a = login_via("AUTH_URL", name_of(&u), PASSWORD, UA_FIREFOX, "198.51.100.7");
    login_t b = login_via("AUTH_URL", name_of(&u), PASSWORD, UA_FIREFOX, "198.51.100.99");
    assert_int_equal(outbox_count(u.id, "signin.new"), 0); /* the same /24 */
    login_t c = login_via("AUTH_URL", name_of(&u), PASSWORD, UA_FIREFOX, "203.0.113.5");
    assert_int_equal(outbox_count(u.id, "signin.new"), 1);
    json_t *env = newest_signin_event(u.id);
    json_t *data = json_object_get(env, "data");
    assert_string_equal(json_string_value(json_object_get(data, "ip")), "203.0.113.5");
    assert_string_equal(json_string_value(json_object_get(data, "network")), "203.0.113.0/24");
    json_decref(env);
    char *mail = wait_mail(email_of(&u), SIGNIN_SUBJECT);
    assert_non_null(strstr(mail, "203.0.113.5"));
    assert_non_null(strstr(mail, "Firefox on Linux"));
    free(mail);
    /* The session list shows where each login came from. */
    json_t *list = sessions_of(&c);
    assert_int_equal(json_array_size(list), 3);
    assert_string_equal(json_string_value(json_object_get(entry(list, a.sid), "ip")),
                        "198.51.100.7");
    json_decref(list);
    login_dispose(&a);
    login_dispose(&b);
    login_dispose(&c);
    user_dispose(&u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            the_list_shows_each_login_with_its_class_and_address_and_marks_the_current_one),
        cmocka_unit_test(ending_a_session_kills_its_refresh_token_and_nothing_else),
        cmocka_unit_test(revoke_others_ends_every_session_but_the_current_one),
        cmocka_unit_test(a_weak_new_password_is_400_and_a_wrong_current_one_403),
        cmocka_unit_test(nothing_changes_until_the_current_password_is_right),
        cmocka_unit_test(wrong_current_passwords_count_in_the_login_throttle),
        cmocka_unit_test(a_password_change_ends_the_other_sessions_and_mails_the_owner),
        cmocka_unit_test(keep_other_sessions_keeps_them_working),
        cmocka_unit_test(a_new_user_agent_mails_once_an_hour_and_the_first_login_never),
        cmocka_unit_test(a_new_network_is_a_new_sign_in_and_a_neighbour_address_is_not),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
