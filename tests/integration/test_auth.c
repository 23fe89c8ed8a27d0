/*
 * The auth service, black-box over HTTP through the gateway (GATEWAY_URL):
 * registration and its validation, the duplicate race, login, tokens,
 * /api/me/, JWKS, refresh rotation with the grace window and family
 * revocation, logout, email verification, the password reset flow, login
 * throttling, and the outbox rows each change leaves behind (read with
 * libpq from AUTH_DATABASE_URL; one-time tokens unsealed with the mailer's
 * dev key pair from the stack's key files).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <sodium.h>

#include "cm/crypto.h"
#include "cm/jwt.h"
#include "cm/util.h"
#include "http_client.h"
#include "testenv.h"
#include "instance.h"

#define ENV "LINKTR_STACK_ENV"
#define PASSWORD "correct horse battery staple 42"
/* The relay is woken by NOTIFY; generous, but bounded so a lost event fails. */
#define OUTBOX_DEADLINE_MS 15000
#define RACERS 20

/* ---- helpers ------------------------------------------------------------------ */

/* A fresh, unique user body: {username, email, password}. */
static json_t *new_user(const char *tag)
{
    static int counter;
    char name[64], email[96];
    snprintf(name, sizeof name, "%s%d_%s", tag, __atomic_add_fetch(&counter, 1, __ATOMIC_SEQ_CST),
             t_unique());
    snprintf(email, sizeof email, "%s@example.com", name);
    return json_pack("{s:s, s:s, s:s}", "username", name, "email", email, "password", PASSWORD);
}

static const char *str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static void post(const char *path, json_t *body, const char *bearer, t_resp_t *r)
{
    char *u = t_url("GATEWAY_URL", path);
    assert_int_equal(t_post_json(u, body, bearer, r), 0);
    free(u);
}

static void get(const char *path, const char *bearer, t_resp_t *r)
{
    char *u = t_url("GATEWAY_URL", path);
    assert_int_equal(t_get(u, bearer, r), 0);
    free(u);
}

/* Registers body and returns the user's id (caller frees). */
static char *register_ok(json_t *body)
{
    t_resp_t r;
    post("/api/register/", body, NULL, &r);
    if (r.status != 201)
        fail_msg("register: %ld %s", r.status, r.body);
    char *id = cm_xstrdup(str(r.json, "id"));
    t_resp_dispose(&r);
    return id;
}

/* Logs in and returns the tokens object (caller decrefs). */
static json_t *login_ok(const char *ident, const char *password)
{
    json_t *b = json_pack("{s:s, s:s}", "username_or_email", ident, "password", password);
    t_resp_t r;
    post("/api/login/", b, NULL, &r);
    if (r.status != 200)
        fail_msg("login: %ld %s", r.status, r.body);
    json_t *tokens = json_incref(r.json);
    t_resp_dispose(&r);
    json_decref(b);
    return tokens;
}

static void assert_problem(const t_resp_t *r, long status)
{
    if (r->status != status)
        fail_msg("expected %ld, got %ld: %s", status, r->status, r->body);
    assert_non_null(r->content_type);
    assert_non_null(strstr(r->content_type, "application/problem+json"));
    assert_int_equal(json_integer_value(json_object_get(r->json, "status")), status);
    assert_non_null(str(r->json, "title"));
}

/* Asserts a problem whose errors name field. */
static void assert_field_error(const t_resp_t *r, long status, const char *field)
{
    assert_problem(r, status);
    json_t *list = json_object_get(json_object_get(r->json, "errors"), field);
    if (!json_is_array(list) || json_array_size(list) == 0)
        fail_msg("no errors.%s in %s", field, r->body);
}

static PGconn *db(void)
{
    char *dsn = t_env(ENV, "AUTH_DATABASE_URL");
    PGconn *c = PQconnectdb(dsn);
    free(dsn);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("database: %s", PQerrorMessage(c));
    return c;
}

/* Runs a query with up to 3 text parameters; the caller PQclear()s. */
static PGresult *query(const char *sql, int n, const char *p0, const char *p1, const char *p2)
{
    PGconn *c = db();
    const char *params[3] = {p0, p1, p2};
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("query failed: %s", PQerrorMessage(c));
    PQfinish(c);
    return r;
}

static int count(const char *sql, const char *p0, const char *p1)
{
    PGresult *r = query(sql, p1 ? 2 : 1, p0, p1, NULL);
    long long n = -1;
    assert_int_equal(cm_strtonum(PQgetvalue(r, 0, 0), 0, INT32_MAX, &n), 0);
    PQclear(r);
    return (int)n;
}

/* ---- a small JSON Schema check (the subset proto/events uses) ------------------------ */

static bool type_ok(json_t *v, const char *t)
{
    return (strcmp(t, "string") == 0 && json_is_string(v)) ||
           (strcmp(t, "object") == 0 && json_is_object(v)) ||
           (strcmp(t, "null") == 0 && json_is_null(v)) ||
           (strcmp(t, "integer") == 0 && json_is_integer(v)) ||
           (strcmp(t, "array") == 0 && json_is_array(v)) ||
           (strcmp(t, "boolean") == 0 && json_is_boolean(v)) ||
           (strcmp(t, "number") == 0 && json_is_number(v));
}

/* Fails the test naming path when v does not satisfy schema s. */
static void check_schema(json_t *s, json_t *v, const char *path)
{
    json_t *t = json_object_get(s, "type");
    bool ok = !t;
    if (json_is_string(t))
        ok = type_ok(v, json_string_value(t));
    for (size_t i = 0; json_is_array(t) && i < json_array_size(t); i++)
        ok = ok || type_ok(v, json_string_value(json_array_get(t, i)));
    if (!ok)
        fail_msg("%s: wrong type", path);
    json_t *c = json_object_get(s, "const");
    if (c && !json_equal(c, v))
        fail_msg("%s: not the constant", path);
    if (json_is_string(v)) {
        json_int_t len = (json_int_t)json_string_length(v);
        json_t *mn = json_object_get(s, "minLength"), *mx = json_object_get(s, "maxLength");
        if ((mn && len < json_integer_value(mn)) || (mx && len > json_integer_value(mx)))
            fail_msg("%s: length %lld out of bounds", path, (long long)len);
        const char *f = json_string_value(json_object_get(s, "format"));
        if (f && strcmp(f, "uuid") == 0 && !cm_is_uuid(json_string_value(v), (size_t)len))
            fail_msg("%s: not a uuid", path);
        if (f && strcmp(f, "date-time") == 0 && !strchr(json_string_value(v), 'T'))
            fail_msg("%s: not a date-time", path);
    }
    if (!json_is_object(v))
        return;
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    for (size_t i = 0; i < json_array_size(req); i++)
        if (!json_object_get(v, json_string_value(json_array_get(req, i))))
            fail_msg("%s: missing %s", path, json_string_value(json_array_get(req, i)));
    const char *key;
    json_t *member;
    json_object_foreach(v, key, member)
    {
        json_t *ps = json_object_get(props, key);
        if (!ps && json_is_false(json_object_get(s, "additionalProperties")))
            fail_msg("%s: unexpected member %s", path, key);
        char *sub = cm_xasprintf("%s.%s", path, key);
        if (ps)
            check_schema(ps, member, sub);
        free(sub);
    }
}

/* Checks an envelope against proto/events/<type>.schema.json of this source tree. */
static void check_event_schema(json_t *env)
{
    const char *type = str(env, "type");
    char *root = cm_xstrdup(__FILE__);
    char *cut = strstr(root, "/tests/integration/");
    assert_non_null(cut);
    *cut = '\0';
    char *path = cm_xasprintf("%s/proto/events/%s.schema.json", root, type);
    json_error_t err;
    json_t *schema = json_load_file(path, 0, &err);
    if (!schema)
        fail_msg("cannot load %s: %s", path, err.text);
    check_schema(schema, env, type);
    json_decref(schema);
    free(path);
    free(root);
}

/* Waits until the newest outbox row of topic for user is sent; returns its envelope. */
static json_t *sent_event(const char *user_id, const char *topic)
{
    int64_t deadline = cm_now_mono_ms() + OUTBOX_DEADLINE_MS;
    for (;;) {
        PGresult *r = query("SELECT payload, sent_at IS NOT NULL FROM outbox "
                            "WHERE key = $1 AND topic = $2 ORDER BY id DESC LIMIT 1",
                            2, user_id, topic, NULL);
        bool sent = PQntuples(r) == 1 && PQgetvalue(r, 0, 1)[0] == 't';
        json_t *env = PQntuples(r) == 1 ? json_loads(PQgetvalue(r, 0, 0), 0, NULL) : NULL;
        PQclear(r);
        if (sent) {
            assert_non_null(env);
            if (strcmp(topic, "verify.requested") != 0) /* no schema yet: proposed */
                check_event_schema(env);
            return env;
        }
        json_decref(env);
        if (cm_now_mono_ms() > deadline)
            fail_msg("no sent %s row for %s", topic, user_id);
        t_sleep_ms(100);
    }
}

static void read_key(const char *env_key, uint8_t key[32])
{
    char *path = t_env(ENV, env_key);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(cm_read_file(path, 4096, &text, &len), 0);
    assert_int_equal(cm_key_decode(text, len, key), 0);
    sodium_memzero(text, len);
    free(text);
    free(path);
}

/* Opens a sealed token the way the mailer does. Caller frees. */
static char *unseal(const char *sealed)
{
    uint8_t pk[32], sk[32];
    read_key("MAILER_SEAL_PUBLIC_KEY_FILE", pk);
    read_key("MAILER_SEAL_SECRET_KEY_FILE", sk);
    char *out = NULL;
    assert_int_equal(cm_unseal(pk, sk, sealed, strlen(sealed), &out), 0);
    sodium_memzero(sk, sizeof sk);
    return out;
}

/* The one-time token carried (sealed) by the newest event of topic for user. */
static char *event_token(const char *user_id, const char *topic, const char *member)
{
    json_t *env = sent_event(user_id, topic);
    const char *sealed = str(json_object_get(env, "data"), member);
    assert_non_null(sealed);
    char *tok = unseal(sealed);
    char *payload = json_dumps(env, 0);
    assert_null(strstr(payload, tok)); /* never in clear */
    free(payload);
    json_decref(env);
    return tok;
}

/* ---- registration ------------------------------------------------------------------- */

static void register_answers_201_with_the_user_shape(void **state)
{
    (void)state;
    json_t *u = new_user("reg");
    t_resp_t r;
    post("/api/register/", u, NULL, &r);
    assert_int_equal(r.status, 201);
    assert_true(cm_is_uuid(str(r.json, "id"), strlen(str(r.json, "id"))));
    assert_string_equal(str(r.json, "username"), str(u, "username"));
    assert_string_equal(str(r.json, "email"), str(u, "email"));
    assert_true(json_is_false(json_object_get(r.json, "email_verified")));
    const char *code = str(r.json, "referral_code");
    assert_int_equal(strlen(code), 8);
    assert_int_equal(strspn(code, "0123456789ABCDEFGHJKMNPQRSTVWXYZ"), 8);
    char *base = t_env_opt(ENV, "PUBLIC_BASE_URL");
    char *link = cm_xasprintf("%s/r/%s", base ? base : "", code);
    if (base)
        assert_string_equal(str(r.json, "referral_link"), link);
    else
        assert_non_null(strstr(str(r.json, "referral_link"), code));
    assert_true(json_is_null(json_object_get(r.json, "referred_by")));
    assert_non_null(strchr(str(r.json, "created_at"), 'T'));
    assert_null(json_object_get(r.json, "password"));
    assert_null(json_object_get(r.json, "password_hash"));
    free(link);
    free(base);
    t_resp_dispose(&r);
    json_decref(u);
}

static void duplicate_username_or_email_in_any_case_is_409_naming_the_field(void **state)
{
    (void)state;
    json_t *u = new_user("dup");
    free(register_ok(u));
    t_resp_t r;
    /* Same name upper-cased, new email. */
    char *upper = cm_xstrdup(str(u, "username"));
    for (char *p = upper; *p; p++)
        *p = (*p >= 'a' && *p <= 'z') ? (char)(*p - 32) : *p;
    json_t *b = json_pack("{s:s, s:s, s:s}", "username", upper, "email",
                          "x_"
                          "fresh@example.com",
                          "password", PASSWORD);
    char *fresh = cm_xasprintf("f%s@example.com", t_unique());
    json_object_set_new(b, "email", json_string(fresh));
    post("/api/register/", b, NULL, &r);
    assert_field_error(&r, 409, "username");
    assert_null(json_object_get(json_object_get(r.json, "errors"), "email"));
    t_resp_dispose(&r);
    /* New name, same email in other case. */
    char *other = cm_xasprintf("o%s", t_unique());
    char *email = cm_xasprintf("%s@EXAMPLE.COM", str(u, "username"));
    json_object_set_new(b, "username", json_string(other));
    json_object_set_new(b, "email", json_string(email));
    post("/api/register/", b, NULL, &r);
    assert_field_error(&r, 409, "email");
    assert_null(json_object_get(json_object_get(r.json, "errors"), "username"));
    t_resp_dispose(&r);
    assert_int_equal(
        count("SELECT count(*) FROM users WHERE lower(username) = lower($1)", other, NULL), 0);
    free(upper), free(fresh), free(other), free(email);
    json_decref(b);
    json_decref(u);
}

typedef struct racer {
    json_t *body;
    long status;
} racer_t;

static void *race(void *arg)
{
    racer_t *rc = arg;
    char *u = t_url("GATEWAY_URL", "/api/register/");
    t_resp_t r;
    rc->status = t_post_json(u, rc->body, NULL, &r) == 0 ? r.status : 0;
    t_resp_dispose(&r);
    free(u);
    return NULL;
}

static void twenty_parallel_registrations_of_one_name_give_exactly_one_201(void **state)
{
    (void)state;
    char name[32];
    snprintf(name, sizeof name, "race_%s", t_unique());
    racer_t racers[RACERS];
    pthread_t th[RACERS];
    for (int i = 0; i < RACERS; i++) {
        char email[96];
        snprintf(email, sizeof email, "%s_%d@example.com", name, i);
        racers[i].body =
            json_pack("{s:s, s:s, s:s}", "username", name, "email", email, "password", PASSWORD);
        assert_int_equal(pthread_create(&th[i], NULL, race, &racers[i]), 0);
    }
    int created = 0, conflicts = 0;
    for (int i = 0; i < RACERS; i++) {
        pthread_join(th[i], NULL);
        created += racers[i].status == 201;
        conflicts += racers[i].status == 409;
        json_decref(racers[i].body);
    }
    assert_int_equal(created, 1);
    assert_int_equal(conflicts, RACERS - 1);
    assert_int_equal(
        count("SELECT count(*) FROM users WHERE lower(username) = lower($1)", name, NULL), 1);
}

static void bad_json_missing_fields_and_wrong_types_are_400_naming_fields(void **state)
{
    (void)state;
    char *u = t_url("GATEWAY_URL", "/api/register/");
    t_resp_t r;
    assert_int_equal(t_http("POST", u, "application/json", "{\"username\": ", 13, NULL, &r), 0);
    assert_problem(&r, 400);
    t_resp_dispose(&r);
    assert_int_equal(t_http("POST", u, "application/json", "[1, 2]", 6, NULL, &r), 0);
    assert_problem(&r, 400);
    t_resp_dispose(&r);

    json_t *b = json_pack("{s:s}", "username", "someone");
    post("/api/register/", b, NULL, &r);
    assert_field_error(&r, 400, "email");
    assert_field_error(&r, 400, "password");
    t_resp_dispose(&r);
    json_decref(b);

    b = json_pack("{s:i, s:b, s:[], s:i}", "username", 5, "email", 1, "password", "referral_code",
                  7);
    post("/api/register/", b, NULL, &r);
    assert_field_error(&r, 400, "username");
    assert_field_error(&r, 400, "email");
    assert_field_error(&r, 400, "password");
    assert_field_error(&r, 400, "referral_code");
    t_resp_dispose(&r);
    json_decref(b);
    free(u);
}

static void invalid_values_are_400_naming_each_field_and_create_nothing(void **state)
{
    (void)state;
    char name[40];
    snprintf(name, sizeof name, "ab");
    json_t *b = json_pack("{s:s, s:s, s:s}", "username", name, "email", "not-an-email", "password",
                          "password1");
    t_resp_t r;
    post("/api/register/", b, NULL, &r);
    assert_field_error(&r, 400, "username");
    assert_field_error(&r, 400, "email");
    assert_field_error(&r, 400, "password");
    t_resp_dispose(&r);
    json_decref(b);

    json_t *u = new_user("val");
    json_object_set_new(u, "password", json_string("12345678901"));
    post("/api/register/", u, NULL, &r);
    assert_field_error(&r, 400, "password");
    assert_null(json_object_get(json_object_get(r.json, "errors"), "username"));
    t_resp_dispose(&r);
    json_object_set_new(u, "password", json_string(str(u, "username")));
    post("/api/register/", u, NULL, &r);
    assert_field_error(&r, 400, "password");
    t_resp_dispose(&r);
    assert_int_equal(
        count("SELECT count(*) FROM users WHERE username = $1", str(u, "username"), NULL), 0);
    json_decref(u);
}

static void unknown_referral_code_is_400_and_creates_nothing(void **state)
{
    (void)state;
    json_t *u = new_user("ref");
    t_resp_t r;
    /* Well-formed but (almost surely) unknown, then malformed. */
    const char *codes[] = {"ZZZZZZZZ", "not-a-code"};
    for (int i = 0; i < 2; i++) {
        json_object_set_new(u, "referral_code", json_string(codes[i]));
        post("/api/register/", u, NULL, &r);
        assert_field_error(&r, 400, "referral_code");
        t_resp_dispose(&r);
    }
    assert_int_equal(
        count("SELECT count(*) FROM users WHERE username = $1", str(u, "username"), NULL), 0);
    json_decref(u);
}

static void a_valid_referral_code_records_referred_by(void **state)
{
    (void)state;
    json_t *a = new_user("rfa");
    t_resp_t r;
    post("/api/register/", a, NULL, &r);
    assert_int_equal(r.status, 201);
    char *code = cm_xstrdup(str(r.json, "referral_code"));
    char *a_id = cm_xstrdup(str(r.json, "id"));
    t_resp_dispose(&r);

    json_t *b = new_user("rfb");
    char *lower = cm_xstrdup(code); /* codes are accepted in any case */
    for (char *p = lower; *p; p++)
        *p = (*p >= 'A' && *p <= 'Z') ? (char)(*p + 32) : *p;
    json_object_set_new(b, "referral_code", json_string(lower));
    post("/api/register/", b, NULL, &r);
    assert_int_equal(r.status, 201);
    assert_string_equal(str(r.json, "referred_by"), code);
    char *b_id = cm_xstrdup(str(r.json, "id"));
    t_resp_dispose(&r);
    assert_int_equal(count("SELECT count(*) FROM users WHERE id = $1::uuid AND referred_by = "
                           "$2::uuid",
                           b_id, a_id),
                     1);
    json_t *env = sent_event(b_id, "user.registered");
    json_t *ref = json_object_get(json_object_get(env, "data"), "referred_by");
    assert_string_equal(str(ref, "user_id"), a_id);
    assert_string_equal(str(ref, "referral_code"), code);
    json_decref(env);
    free(code), free(a_id), free(b_id), free(lower);
    json_decref(a);
    json_decref(b);
}

static void user_registered_reaches_the_outbox_sealed_and_gets_sent(void **state)
{
    (void)state;
    json_t *u = new_user("evt");
    char *id = register_ok(u);
    json_t *env = sent_event(id, "user.registered");
    assert_string_equal(str(env, "type"), "user.registered");
    assert_string_equal(str(env, "source"), "auth");
    assert_int_equal(json_integer_value(json_object_get(env, "version")), 1);
    json_t *d = json_object_get(env, "data");
    assert_string_equal(str(d, "user_id"), id);
    assert_string_equal(str(d, "username"), str(u, "username"));
    assert_string_equal(str(d, "email"), str(u, "email"));
    assert_int_equal(strlen(str(d, "referral_code")), 8);
    assert_true(json_is_null(json_object_get(d, "referred_by")));
    assert_non_null(str(d, "ip"));
    assert_non_null(strchr(str(d, "registered_at"), 'Z'));
    char *tok = unseal(str(d, "verify_token_sealed"));
    assert_int_equal(strlen(tok), 43);
    char *payload = json_dumps(env, 0);
    assert_null(strstr(payload, tok));
    free(payload);
    free(tok);
    json_decref(env);
    free(id);
    json_decref(u);
}

/* ---- login and tokens ------------------------------------------------------------------- */

static void check_access_token(const char *token, const char *user_id, const char *username)
{
    char *path = t_env_opt(ENV, "JWT_PUBLIC_KEY_FILE");
    char *kid = t_env_opt(ENV, "JWT_KEY_ID");
    if (!path || !kid) { /* no key to verify with: check the structure */
        const char *dot1 = strchr(token, '.');
        assert_non_null(dot1);
        assert_non_null(strchr(dot1 + 1, '.'));
        free(path), free(kid);
        return;
    }
    char *pem = NULL;
    size_t len = 0;
    assert_int_equal(cm_read_file(path, 65536, &pem, &len), 0);
    cm_jwt_verifier_t *v = cm_jwt_verifier_new("linktr", "linktr", 0);
    assert_int_equal(cm_jwt_verifier_add_key(v, kid, pem, len), 0);
    cm_jwt_claims_t c;
    assert_int_equal(cm_jwt_verify(v, token, strlen(token), &c), 0);
    assert_string_equal(c.sub, user_id);
    assert_string_equal(c.username, username);
    assert_true(c.exp > c.iat && c.exp - c.iat <= 900);
    cm_jwt_verifier_free(v);
    free(pem), free(path), free(kid);
}

static void login_by_username_or_email_in_any_case_gives_verifiable_tokens(void **state)
{
    (void)state;
    json_t *u = new_user("log");
    char *id = register_ok(u);
    char *upper_email = cm_xstrdup(str(u, "email"));
    for (char *p = upper_email; *p; p++)
        *p = (*p >= 'a' && *p <= 'z') ? (char)(*p - 32) : *p;
    const char *idents[] = {str(u, "username"), str(u, "email"), upper_email};
    for (int i = 0; i < 3; i++) {
        json_t *t = login_ok(idents[i], PASSWORD);
        assert_string_equal(str(t, "token_type"), "Bearer");
        assert_int_equal(json_integer_value(json_object_get(t, "expires_in")), 900);
        assert_int_equal(strlen(str(t, "refresh")), 43);
        assert_string_equal(str(json_object_get(t, "user"), "id"), id);
        check_access_token(str(t, "access"), id, str(u, "username"));
        json_decref(t);
    }
    free(upper_email);
    free(id);
    json_decref(u);
}

static void wrong_password_and_unknown_user_get_the_same_401(void **state)
{
    (void)state;
    json_t *u = new_user("bad");
    free(register_ok(u));
    json_t *b1 = json_pack("{s:s, s:s}", "username_or_email", str(u, "username"), "password",
                           "wrong horse battery staple 42");
    json_t *b2 =
        json_pack("{s:s, s:s}", "username_or_email", "nobody_by_that_name", "password", PASSWORD);
    t_resp_t r1, r2;
    post("/api/login/", b1, NULL, &r1);
    post("/api/login/", b2, NULL, &r2);
    assert_problem(&r1, 401);
    assert_problem(&r2, 401);
    assert_string_equal(str(r1.json, "title"), str(r2.json, "title"));
    assert_string_equal(str(r1.json, "detail"), str(r2.json, "detail"));
    char *www = t_resp_header(&r1, "WWW-Authenticate");
    assert_non_null(www);
    free(www);
    t_resp_dispose(&r1);
    t_resp_dispose(&r2);
    json_t *b3 = json_pack("{s:s}", "password", PASSWORD);
    post("/api/login/", b3, NULL, &r1);
    assert_field_error(&r1, 400, "username_or_email");
    t_resp_dispose(&r1);
    json_object_set_new(b3, "username_or_email", json_string(""));
    json_object_set_new(b3, "password", json_integer(5));
    post("/api/login/", b3, NULL, &r1);
    assert_field_error(&r1, 400, "username_or_email");
    assert_field_error(&r1, 400, "password");
    t_resp_dispose(&r1);
    json_decref(b1), json_decref(b2), json_decref(b3);
    json_decref(u);
}

static void five_failed_logins_lock_the_account_with_429_and_retry_after(void **state)
{
    (void)state;
    json_t *u = new_user("thr");
    free(register_ok(u));
    json_t *bad = json_pack("{s:s, s:s}", "username_or_email", str(u, "username"), "password",
                            "wrong horse battery staple 42");
    t_resp_t r;
    for (int i = 0; i < 5; i++) {
        post("/api/login/", bad, NULL, &r);
        assert_problem(&r, 401);
        t_resp_dispose(&r);
    }
    json_t *good =
        json_pack("{s:s, s:s}", "username_or_email", str(u, "email"), "password", PASSWORD);
    post("/api/login/", good, NULL, &r); /* locked even for the right password */
    assert_problem(&r, 429);
    char *ra = t_resp_header(&r, "Retry-After");
    assert_non_null(ra);
    long long wait_s = 0;
    assert_int_equal(cm_strtonum(ra, 1, 3600, &wait_s), 0);
    t_resp_dispose(&r);
    t_sleep_ms((int)wait_s * 1000 + 1000); /* the first lock is short; a success then resets it */
    free(ra);
    json_decref(login_ok(str(u, "username"), PASSWORD));
    post("/api/login/", bad, NULL, &r);
    assert_problem(&r, 401);
    t_resp_dispose(&r);
    json_decref(bad), json_decref(good), json_decref(u);
}

static void me_needs_a_valid_bearer_token(void **state)
{
    (void)state;
    json_t *u = new_user("me");
    char *id = register_ok(u);
    json_t *t = login_ok(str(u, "username"), PASSWORD);
    t_resp_t r;
    get("/api/me/", str(t, "access"), &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(str(r.json, "id"), id);
    assert_string_equal(str(r.json, "username"), str(u, "username"));
    t_resp_dispose(&r);
    get("/api/me/", NULL, &r);
    assert_problem(&r, 401);
    t_resp_dispose(&r);
    char *tampered = cm_xstrdup(str(t, "access"));
    size_t n = strlen(tampered);
    tampered[n - 3] = tampered[n - 3] == 'A' ? 'B' : 'A';
    get("/api/me/", tampered, &r);
    assert_problem(&r, 401);
    t_resp_dispose(&r);
    get("/api/me/", "not.a.jwt", &r);
    assert_problem(&r, 401);
    t_resp_dispose(&r);
    free(tampered);
    json_decref(t);
    free(id);
    json_decref(u);
}

static void jwks_publishes_one_p256_signing_key(void **state)
{
    (void)state;
    t_resp_t r;
    get("/.well-known/jwks.json", NULL, &r);
    assert_int_equal(r.status, 200);
    json_t *keys = json_object_get(r.json, "keys");
    assert_true(json_array_size(keys) >= 1);
    json_t *k = json_array_get(keys, 0);
    assert_string_equal(str(k, "kty"), "EC");
    assert_string_equal(str(k, "crv"), "P-256");
    assert_string_equal(str(k, "alg"), "ES256");
    assert_non_null(str(k, "kid"));
    assert_non_null(str(k, "x"));
    assert_null(json_object_get(k, "d"));
    t_resp_dispose(&r);
}

/* ---- refresh and logout ---------------------------------------------------------------------- */

/* POSTs {"refresh": tok} to path. */
static void post_refresh(const char *path, const char *tok, t_resp_t *r)
{
    json_t *b = json_pack("{s:s}", "refresh", tok);
    post(path, b, NULL, r);
    json_decref(b);
}

static json_t *refresh_ok(const char *tok)
{
    t_resp_t r;
    post_refresh("/api/token/refresh/", tok, &r);
    if (r.status != 200)
        fail_msg("refresh: %ld %s", r.status, r.body);
    json_t *t = json_incref(r.json);
    t_resp_dispose(&r);
    return t;
}

static void refresh_rotates_and_a_retry_within_the_grace_window_gets_the_same_pair(void **state)
{
    (void)state;
    json_t *u = new_user("rot");
    char *id = register_ok(u);
    json_t *t0 = login_ok(str(u, "username"), PASSWORD);
    json_t *t1 = refresh_ok(str(t0, "refresh"));
    assert_string_not_equal(str(t1, "refresh"), str(t0, "refresh"));
    check_access_token(str(t1, "access"), id, str(u, "username"));
    json_t *again = refresh_ok(str(t0, "refresh")); /* a second tab, at once */
    assert_string_equal(str(again, "refresh"), str(t1, "refresh"));
    json_t *t2 = refresh_ok(str(t1, "refresh")); /* the session goes on */
    assert_int_equal(strlen(str(t2, "refresh")), 43);
    json_decref(t0), json_decref(t1), json_decref(t2), json_decref(again);
    free(id);
    json_decref(u);
}

static void reusing_a_rotated_token_revokes_the_whole_family(void **state)
{
    (void)state;
    json_t *u = new_user("reu");
    free(register_ok(u));
    json_t *t0 = login_ok(str(u, "username"), PASSWORD);
    json_t *other = login_ok(str(u, "username"), PASSWORD); /* another device, own family */
    json_t *t1 = refresh_ok(str(t0, "refresh"));
    json_t *t2 = refresh_ok(str(t1, "refresh"));
    t_resp_t r;
    /* t0's successor has moved on already: this is a stolen copy. */
    post_refresh("/api/token/refresh/", str(t0, "refresh"), &r);
    assert_problem(&r, 401);
    t_resp_dispose(&r);
    post_refresh("/api/token/refresh/", str(t2, "refresh"), &r);
    assert_problem(&r, 401);
    t_resp_dispose(&r);
    json_decref(refresh_ok(str(other, "refresh")));
    json_decref(t0), json_decref(t1), json_decref(t2), json_decref(other);
    json_decref(u);
}

static void malformed_or_unknown_refresh_tokens_are_401(void **state)
{
    (void)state;
    t_resp_t r;
    const char *bad[] = {"short", "' OR 1=1 --", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"};
    for (int i = 0; i < 3; i++) {
        post_refresh("/api/token/refresh/", bad[i], &r);
        assert_problem(&r, 401);
        t_resp_dispose(&r);
        post_refresh("/api/logout/", bad[i], &r);
        assert_problem(&r, 401);
        t_resp_dispose(&r);
    }
    json_t *b = json_pack("{s:i}", "refresh", 42);
    post("/api/token/refresh/", b, NULL, &r);
    assert_field_error(&r, 400, "refresh");
    t_resp_dispose(&r);
    json_decref(b);
}

static void logout_revokes_the_family_and_answers_204(void **state)
{
    (void)state;
    json_t *u = new_user("out");
    free(register_ok(u));
    json_t *t0 = login_ok(str(u, "username"), PASSWORD);
    json_t *t1 = refresh_ok(str(t0, "refresh"));
    t_resp_t r;
    post_refresh("/api/logout/", str(t1, "refresh"), &r);
    assert_int_equal(r.status, 204);
    t_resp_dispose(&r);
    post_refresh("/api/token/refresh/", str(t1, "refresh"), &r);
    assert_problem(&r, 401);
    t_resp_dispose(&r);
    post_refresh("/api/logout/", str(t1, "refresh"), &r);
    assert_problem(&r, 401);
    t_resp_dispose(&r);
    json_decref(t0), json_decref(t1), json_decref(u);
}

/* ---- email verification and password reset ------------------------------------------------------
 */

static void verify_email_with_the_mailed_token_marks_the_user_verified_once(void **state)
{
    (void)state;
    json_t *u = new_user("ver");
    char *id = register_ok(u);
    char *tok = event_token(id, "user.registered", "verify_token_sealed");
    json_t *b = json_pack("{s:s}", "token", tok);
    t_resp_t r;
    post("/api/verify-email/", b, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(str(r.json, "id"), id);
    assert_true(json_is_true(json_object_get(r.json, "email_verified")));
    t_resp_dispose(&r);
    json_t *env = sent_event(id, "user.verified");
    assert_string_equal(str(json_object_get(env, "data"), "user_id"), id);
    assert_non_null(str(json_object_get(env, "data"), "verified_at"));
    json_decref(env);
    post("/api/verify-email/", b, NULL, &r); /* single use */
    assert_field_error(&r, 400, "token");
    t_resp_dispose(&r);
    assert_int_equal(
        count("SELECT count(*) FROM outbox WHERE key = $1 AND topic = $2", id, "user.verified"), 1);
    json_t *t = login_ok(str(u, "username"), PASSWORD);
    get("/api/me/", str(t, "access"), &r);
    assert_true(json_is_true(json_object_get(r.json, "email_verified")));
    t_resp_dispose(&r);
    json_t *junk = json_pack("{s:s}", "token", "nope");
    post("/api/verify-email/", junk, NULL, &r);
    assert_field_error(&r, 400, "token");
    t_resp_dispose(&r);
    json_decref(junk), json_decref(t), json_decref(b);
    free(tok), free(id);
    json_decref(u);
}

static void forgot_password_answers_the_same_whether_or_not_the_account_exists(void **state)
{
    (void)state;
    json_t *u = new_user("fgt");
    free(register_ok(u));
    json_t *known = json_pack("{s:s}", "email", str(u, "email"));
    char *ghost = cm_xasprintf("ghost_%s@example.com", t_unique());
    json_t *unknown = json_pack("{s:s}", "email", ghost);
    t_resp_t r1, r2;
    post("/api/forgot-password/", known, NULL, &r1);
    post("/api/forgot-password/", unknown, NULL, &r2);
    assert_int_equal(r1.status, 202);
    assert_int_equal(r2.status, 202);
    assert_string_equal(r1.body, r2.body);
    t_resp_dispose(&r1);
    t_resp_dispose(&r2);
    json_t *bad = json_pack("{s:s}", "email", "not an email");
    post("/api/forgot-password/", bad, NULL, &r1);
    assert_field_error(&r1, 400, "email");
    t_resp_dispose(&r1);
    json_decref(known), json_decref(unknown), json_decref(bad), json_decref(u);
    free(ghost);
}

static void at_most_three_reset_mails_per_account_per_hour(void **state)
{
    (void)state;
    json_t *u = new_user("cap");
    char *id = register_ok(u);
    json_t *b = json_pack("{s:s}", "email", str(u, "email"));
    for (int i = 0; i < 5; i++) {
        t_resp_t r;
        post("/api/forgot-password/", b, NULL, &r);
        assert_int_equal(r.status, 202);
        t_resp_dispose(&r);
    }
    assert_int_equal(
        count("SELECT count(*) FROM outbox WHERE key = $1 AND topic = $2", id, "reset.requested"),
        3);
    json_decref(b), json_decref(u);
    free(id);
}

static void reset_password_end_to_end_revokes_sessions_and_emits_password_changed(void **state)
{
    (void)state;
    json_t *u = new_user("rst");
    char *id = register_ok(u);
    json_t *session = login_ok(str(u, "username"), PASSWORD);
    json_t *fb = json_pack("{s:s}", "email", str(u, "email"));
    t_resp_t r;
    post("/api/forgot-password/", fb, NULL, &r);
    assert_int_equal(r.status, 202);
    t_resp_dispose(&r);
    char *tok = event_token(id, "reset.requested", "reset_token_sealed");
    json_t *weak = json_pack("{s:s, s:s}", "token", tok, "password", "password1");
    post("/api/reset-password/", weak, NULL, &r);
    assert_field_error(&r, 400, "password");
    t_resp_dispose(&r);
    const char *newpw = "violet umbrella marathon 1987";
    json_t *good = json_pack("{s:s, s:s}", "token", tok, "password", newpw);
    post("/api/reset-password/", good, NULL, &r);
    assert_int_equal(r.status, 204);
    t_resp_dispose(&r);
    post("/api/reset-password/", good, NULL, &r); /* single use */
    assert_field_error(&r, 400, "token");
    t_resp_dispose(&r);
    post_refresh("/api/token/refresh/", str(session, "refresh"), &r); /* sessions revoked */
    assert_problem(&r, 401);
    t_resp_dispose(&r);
    json_t *old =
        json_pack("{s:s, s:s}", "username_or_email", str(u, "username"), "password", PASSWORD);
    post("/api/login/", old, NULL, &r);
    assert_problem(&r, 401);
    t_resp_dispose(&r);
    json_decref(login_ok(str(u, "email"), newpw));
    json_t *env = sent_event(id, "password.changed");
    assert_string_equal(str(json_object_get(env, "data"), "email"), str(u, "email"));
    assert_non_null(str(json_object_get(env, "data"), "changed_at"));
    json_decref(env);
    json_decref(weak), json_decref(good), json_decref(old), json_decref(fb);
    json_decref(session), json_decref(u);
    free(tok), free(id);
}

static void resend_verification_issues_a_new_token_and_refuses_verified_users(void **state)
{
    (void)state;
    json_t *u = new_user("rsd");
    char *id = register_ok(u);
    char *first = event_token(id, "user.registered", "verify_token_sealed");
    json_t *t = login_ok(str(u, "username"), PASSWORD);
    t_resp_t r;
    json_t *empty = json_object();
    post("/api/resend-verification/", empty, NULL, &r);
    assert_problem(&r, 401);
    t_resp_dispose(&r);
    post("/api/resend-verification/", empty, str(t, "access"), &r);
    assert_int_equal(r.status, 202);
    t_resp_dispose(&r);
    char *second = event_token(id, "verify.requested", "verify_token_sealed");
    assert_string_not_equal(first, second);
    json_t *b = json_pack("{s:s}", "token", first); /* superseded */
    post("/api/verify-email/", b, NULL, &r);
    assert_field_error(&r, 400, "token");
    t_resp_dispose(&r);
    json_object_set_new(b, "token", json_string(second));
    post("/api/verify-email/", b, NULL, &r);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
    post("/api/resend-verification/", empty, str(t, "access"), &r);
    assert_field_error(&r, 409, "email");
    t_resp_dispose(&r);
    json_decref(b), json_decref(empty), json_decref(t), json_decref(u);
    free(first), free(second), free(id);
}

/* The operations endpoints are auth's own (the gateway has its own). */
static void get_auth(const char *path, t_resp_t *r)
{
    char *base = t_env(ENV, "AUTH_URL");
    char *u = cm_xasprintf("%s%s", base, path);
    assert_int_equal(t_get(u, NULL, r), 0);
    free(u);
    free(base);
}

static void get_admin(const char *path, t_resp_t *r)
{
    char *base = t_env(ENV, "AUTH_ADMIN_URL");
    char *u = cm_xasprintf("%s%s", base, path);
    assert_int_equal(t_get(u, NULL, r), 0);
    free(u);
    free(base);
}

/* Health, readiness, metrics and version on the admin port; the public port keeps /healthz. */
static void health_readiness_and_metrics_answer_on_the_admin_port(void **state)
{
    (void)state;
    t_resp_t r;
    get_auth("/healthz", &r);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
    get_auth("/readyz", &r);
    assert_int_equal(r.status, 404);
    t_resp_dispose(&r);
    get_auth("/metrics", &r);
    assert_int_equal(r.status, 404);
    t_resp_dispose(&r);
    get_auth("/version", &r);
    assert_int_equal(r.status, 404);
    t_resp_dispose(&r);
    get_admin("/healthz", &r);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
    get_admin("/version", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "service")), "auth");
    assert_non_null(json_string_value(json_object_get(r.json, "version")));
    t_resp_dispose(&r);
    get_admin("/api/me", &r);
    assert_int_equal(r.status, 404);
    t_resp_dispose(&r);
    get_admin("/readyz", &r);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
    get_admin("/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "linktr_hashpool_queue_depth"));
    assert_non_null(strstr(r.body, "linktr_outbox_backlog"));
    assert_non_null(strstr(r.body, "linktr_auth_logins_total{result=\"success\"}"));
    assert_non_null(strstr(r.body, "linktr_auth_refresh_reuse_total"));
    t_resp_dispose(&r);
}

/* ---- a private instance with overrides (small hash pool, other argon2 parameters) ---- */

typedef struct burster {
    const char *url;
    json_t *body;
    long status;
    char *retry_after;
} burster_t;

static void *burst(void *arg)
{
    burster_t *b = arg;
    t_resp_t r;
    b->status = t_post_json(b->url, b->body, NULL, &r) == 0 ? r.status : 0;
    b->retry_after = t_resp_header(&r, "Retry-After");
    t_resp_dispose(&r);
    return NULL;
}

#define BURST 24

static void a_burst_beyond_the_hash_queue_gets_503_with_retry_after(void **state)
{
    (void)state;
    static const char *const small[] = {"HASH_WORKERS=1", "HASH_QUEUE=1", "HTTP_THREADS=32", NULL};
    t_instance_t in;
    t_auth_start(&in, small);
    char *u = cm_xasprintf("%s/api/register/", in.base);
    burster_t b[BURST];
    pthread_t th[BURST];
    for (int i = 0; i < BURST; i++) {
        b[i] = (burster_t){.url = u, .body = new_user("bst")};
        assert_int_equal(pthread_create(&th[i], NULL, burst, &b[i]), 0);
    }
    int created = 0, busy = 0;
    for (int i = 0; i < BURST; i++) {
        pthread_join(th[i], NULL);
        created += b[i].status == 201;
        if (b[i].status == 503) {
            busy++;
            assert_non_null(b[i].retry_after);
        }
        if (b[i].status != 201 && b[i].status != 503)
            fail_msg("unexpected status %ld", b[i].status);
        free(b[i].retry_after);
        json_decref(b[i].body);
    }
    assert_true(created >= 1);
    assert_true(busy >= 1);
    free(u);
    t_instance_stop(&in);
}

static void login_rehashes_when_the_argon2_parameters_changed(void **state)
{
    (void)state;
    json_t *u = new_user("rhs");
    char *id = register_ok(u); /* hashed with the stack's parameters (t=2) */
    static const char *const t3[] = {"ARGON2_OPSLIMIT=3", NULL};
    t_instance_t in;
    t_auth_start(&in, t3);
    PGresult *r = query("SELECT password_hash FROM users WHERE id = $1::uuid", 1, id, NULL, NULL);
    assert_non_null(strstr(PQgetvalue(r, 0, 0), "t=2"));
    PQclear(r);
    char *lu = cm_xasprintf("%s/api/login/", in.base);
    json_t *b =
        json_pack("{s:s, s:s}", "username_or_email", str(u, "username"), "password", PASSWORD);
    t_resp_t resp;
    assert_int_equal(t_post_json(lu, b, NULL, &resp), 0);
    assert_int_equal(resp.status, 200);
    t_resp_dispose(&resp);
    r = query("SELECT password_hash FROM users WHERE id = $1::uuid", 1, id, NULL, NULL);
    assert_non_null(strstr(PQgetvalue(r, 0, 0), "t=3"));
    PQclear(r);
    json_decref(login_ok(str(u, "username"), PASSWORD)); /* still valid through the stack */
    t_instance_stop(&in);
    json_decref(b), json_decref(u);
    free(lu), free(id);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL); /* before the racing threads */
    if (cm_crypto_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(register_answers_201_with_the_user_shape),
        cmocka_unit_test(duplicate_username_or_email_in_any_case_is_409_naming_the_field),
        cmocka_unit_test(twenty_parallel_registrations_of_one_name_give_exactly_one_201),
        cmocka_unit_test(bad_json_missing_fields_and_wrong_types_are_400_naming_fields),
        cmocka_unit_test(invalid_values_are_400_naming_each_field_and_create_nothing),
        cmocka_unit_test(unknown_referral_code_is_400_and_creates_nothing),
        cmocka_unit_test(a_valid_referral_code_records_referred_by),
        cmocka_unit_test(user_registered_reaches_the_outbox_sealed_and_gets_sent),
        cmocka_unit_test(login_by_username_or_email_in_any_case_gives_verifiable_tokens),
        cmocka_unit_test(wrong_password_and_unknown_user_get_the_same_401),
        cmocka_unit_test(five_failed_logins_lock_the_account_with_429_and_retry_after),
        cmocka_unit_test(me_needs_a_valid_bearer_token),
        cmocka_unit_test(jwks_publishes_one_p256_signing_key),
        cmocka_unit_test(refresh_rotates_and_a_retry_within_the_grace_window_gets_the_same_pair),
        cmocka_unit_test(reusing_a_rotated_token_revokes_the_whole_family),
        cmocka_unit_test(malformed_or_unknown_refresh_tokens_are_401),
        cmocka_unit_test(logout_revokes_the_family_and_answers_204),
        cmocka_unit_test(verify_email_with_the_mailed_token_marks_the_user_verified_once),
        cmocka_unit_test(forgot_password_answers_the_same_whether_or_not_the_account_exists),
        cmocka_unit_test(at_most_three_reset_mails_per_account_per_hour),
        cmocka_unit_test(reset_password_end_to_end_revokes_sessions_and_emits_password_changed),
        cmocka_unit_test(resend_verification_issues_a_new_token_and_refuses_verified_users),
        cmocka_unit_test(health_readiness_and_metrics_answer_on_the_admin_port),
        cmocka_unit_test(a_burst_beyond_the_hash_queue_gets_503_with_retry_after),
        cmocka_unit_test(login_rehashes_when_the_argon2_parameters_changed),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
