/* The auth service's HTTP handlers (see routes.h and API.md, "Accounts"). */
#include "routes.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "cm/log.h"
#include "cm/netaddr.h"
#include "code.h"
#include "keys.h"
#include "signin.h"
#include "store.h"
#include "validate.h"

#define MSG_REQUIRED "This field is required."
#define MSG_NOT_STRING "Must be a string."
#define MSG_BLANK "This field may not be blank."
#define MSG_BAD_TOKEN "Invalid or expired token."
#define MSG_LOGIN_FAILED "No active account found with the given credentials."
/* Longest identifier or password a login looks at; longer can never match. */
#define LOGIN_MAX_BYTES 1024

/* ---- small helpers ---------------------------------------------------------- */

/* A string member: 0 with *s and *len set, or CM_EINVAL with the reason added to errors. */
static int get_string(json_t *body, const char *field, bool required, json_t *errors,
                      const char **s, size_t *len)
{
    json_t *v = json_object_get(body, field); /* borrowed */
    *s = NULL;
    *len = 0;
    if (!v || json_is_null(v)) {
        if (required)
            cm_errors_add(errors, field, MSG_REQUIRED);
        return required ? CM_EINVAL : 0;
    }
    if (!json_is_string(v)) {
        cm_errors_add(errors, field, MSG_NOT_STRING);
        return CM_EINVAL;
    }
    *s = json_string_value(v);
    *len = json_string_length(v);
    return 0;
}

/* Overwrites a secret string member in place before the body is freed. */
static void wipe_member(json_t *body, const char *field)
{
    json_t *v = json_object_get(body, field); /* borrowed */
    if (json_is_string(v))
        sodium_memzero((void *)(uintptr_t)json_string_value(v), json_string_length(v));
}

/* 503 for an unreachable or saturated dependency, 500 for anything else. */
static void reply_failure(cm_req_t *rq, int rc, const char *what)
{
    if (rc == CM_EUNAVAIL || rc == CM_EBUSY || rc == CM_ETIMEDOUT) {
        cm_reply_header(rq, "Retry-After", "1");
        cm_reply_problem(rq, 503, "Service unavailable",
                         "The service is busy or a dependency is down; try again shortly.", NULL);
        return;
    }
    CM_ERROR(cm_req_id(rq), "%s failed: %s", what, cm_errname(rc));
    cm_reply_problem(rq, 500, "Internal error", "The request could not be completed.", NULL);
}

static void reply_unauthorized(cm_req_t *rq, const char *detail)
{
    cm_reply_problem(rq, 401, "Unauthorized", detail, NULL);
}

static void reply_field_error(cm_req_t *rq, const char *field, const char *msg)
{
    json_t *errors = json_object();
    cm_errors_add(errors, field, msg);
    cm_reply_invalid(rq, errors);
}

static json_t *user_json(const auth_app_t *app, const auth_user_t *u)
{
    cm_buf_t link;
    cm_buf_init(&link);
    cm_buf_puts(&link, app->cfg->svc.public_base_url);
    cm_buf_puts(&link, "/r/");
    cm_buf_puts(&link, u->referral_code);
    char created[32];
    cm_format_time(u->created_us, created);
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:b, s:s, s:s, s:s?, s:s}", "id", u->id, "username", u->username,
                  "email", u->email, "email_verified", u->email_verified, "referral_code",
                  u->referral_code, "referral_link", link.data, "referred_by",
                  u->referred_by[0] ? u->referred_by : NULL, "created_at", created);
    cm_buf_dispose(&link);
    return o;
}

/* Signs an access token for session sid and replies 200 with the tokens object. */
static void reply_tokens(cm_req_t *rq, const auth_app_t *app, const auth_user_t *u,
                         const char *refresh, const char *sid)
{
    char *access = NULL;
    /* The code rides in the token: referral can show it before it has seen the user.
     * The session id lets GET /api/sessions/ mark the caller's own session. */
    int rc = cm_jwt_sign_sid(app->signer, u->id, u->username, u->referral_code, sid, &access, NULL);
    if (rc != 0) {
        reply_failure(rq, rc, "jwt sign");
        return;
    }
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:i, s:o}", "access", access, "refresh", refresh, "token_type",
                  "Bearer", "expires_in", app->cfg->access_ttl_s, "user", user_json(app, u));
    sodium_memzero(access, strlen(access));
    free(access);
    cm_reply_json(rq, 200, o);
}

/* Verifies the Bearer token into *claims and loads its user; replies 401 itself on failure. */
static int bearer_claims_or_reply(cm_req_t *rq, const auth_app_t *app, auth_user_t *u,
                                  cm_jwt_claims_t *claims)
{
    const char *tok = NULL;
    size_t len = 0;
    const char *hdr = cm_req_header(rq, "Authorization");
    if (!hdr || cm_jwt_from_header(hdr, &tok, &len) != 0 ||
        cm_jwt_verify(app->verifier, tok, len, claims) != 0) {
        reply_unauthorized(rq, "Authentication credentials were not provided or are invalid.");
        return CM_EAUTH;
    }
    int rc = auth_store_user_by_id(app->db, claims->sub, u);
    if (rc == CM_ENOTFOUND)
        reply_unauthorized(rq, "Authentication credentials were not provided or are invalid.");
    else if (rc != 0)
        reply_failure(rq, rc, "user lookup");
    return rc;
}

/* Verifies the Bearer token and loads its user; replies 401 itself on failure. */
static int bearer_user_or_reply(cm_req_t *rq, const auth_app_t *app, auth_user_t *u)
{
    cm_jwt_claims_t claims;
    return bearer_claims_or_reply(rq, app, u, &claims);
}

/* Makes a one-time token: its hash for the database and its sealed form for the mailer. */
static int sealed_token(const auth_app_t *app, char hash[65], char **sealed)
{
    char token[CM_TOKEN_CHARS];
    cm_token_new(token);
    cm_sha256_hex(token, strlen(token), hash);
    int rc = cm_seal(app->cfg->mailer_seal_pk, token, strlen(token), sealed);
    sodium_memzero(token, sizeof token);
    return rc;
}

static void count(cm_family_t *f, const char *label)
{
    const char *values[1] = {label};
    if (f)
        cm_metric_add(f, label ? values : NULL, 1);
}

void auth_metrics_register(auth_app_t *app, cm_metrics_t *m)
{
    app->logins =
        cm_metrics_counter(m, "linktr_auth_logins_total", "Login attempts by result", "result");
    app->registrations =
        cm_metrics_counter(m, "linktr_auth_registrations_total", "Accounts created", NULL);
    app->reuse =
        cm_metrics_counter(m, "linktr_auth_refresh_reuse_total",
                           "Rotated refresh tokens presented again (family revoked)", NULL);
}

/* ---- the client address ----------------------------------------------------------- */

/* Copies ip into out if it is a valid address; false (out untouched) otherwise. */
static bool take_ip(const char *ip, char out[46])
{
    size_t n = ip ? strnlen(ip, 46) : 46;
    if (n >= 46 || !cm_ip_valid(ip))
        return false;
    memcpy(out, ip, n + 1);
    return true;
}

void auth_client_ip(const auth_config_t *cfg, const char *peer, const char *real_ip, char out[46])
{
    out[0] = '\0';
    bool gateway = auth_nets_contain(cfg->gateway_nets, cfg->gateway_nets_count, peer);
    if (gateway && take_ip(real_ip, out))
        return;
    (void)take_ip(peer, out); /* not from the gateway, or a value it would never send */
}

/* ---- registration ----------------------------------------------------------------- */

typedef struct reg_input {
    const char *username, *email, *password, *code;
    size_t ulen, elen, plen, clen;
    char normalized_code[AUTH_CODE_LEN + 1];
} reg_input_t;

/* Reads and validates the body; every problem lands in errors. */
static void check_register(json_t *body, reg_input_t *in, json_t *errors)
{
    const char *msg = NULL;
    if (get_string(body, "username", true, errors, &in->username, &in->ulen) == 0 &&
        auth_validate_username(in->username, in->ulen, &msg) != 0)
        cm_errors_add(errors, "username", msg);
    if (get_string(body, "email", true, errors, &in->email, &in->elen) == 0 &&
        auth_validate_email(in->email, in->elen, &msg) != 0)
        cm_errors_add(errors, "email", msg);
    bool names_ok = !json_object_get(errors, "username") && !json_object_get(errors, "email");
    if (get_string(body, "password", true, errors, &in->password, &in->plen) == 0 &&
        auth_validate_password(in->password, in->plen, names_ok ? in->username : NULL,
                               names_ok ? in->email : NULL, &msg) != 0)
        cm_errors_add(errors, "password", msg);
    if (get_string(body, "referral_code", false, errors, &in->code, &in->clen) == 0 && in->code &&
        in->clen > 0 && !auth_code_normalize(in->code, in->clen, in->normalized_code))
        cm_errors_add(errors, "referral_code", "Unknown referral code.");
}

static void reply_conflict(cm_req_t *rq, bool username, bool email)
{
    json_t *errors = json_object();
    if (username)
        cm_errors_add(errors, "username", "A user with that username already exists.");
    if (email)
        cm_errors_add(errors, "email", "A user with that email already exists.");
    cm_reply_problem(rq, 409, "Conflict", "A unique field is already taken.", errors);
}

/* Fails fast, before spending a hash, when the name or email is visibly taken. */
static int precheck_or_reply(cm_req_t *rq, const auth_app_t *app, const reg_input_t *in)
{
    bool u = false, e = false;
    int rc = auth_store_taken(app->db, in->username, in->email, &u, &e);
    if (rc != 0) {
        reply_failure(rq, rc, "register precheck");
        return rc;
    }
    if (u || e) {
        reply_conflict(rq, u, e);
        return CM_ECONFLICT;
    }
    return 0;
}

/* Hashes, makes the verify token and writes everything in one transaction. */
static void create_user(cm_req_t *rq, const auth_app_t *app, const reg_input_t *in)
{
    char pwhash[crypto_pwhash_STRBYTES], token_hash[65], ip[46];
    char *sealed = NULL;
    int rc = cm_password_hash(app->hash, in->password, in->plen, pwhash);
    if (rc != 0) {
        reply_failure(rq, rc, "password hash");
        return;
    }
    rc = sealed_token(app, token_hash, &sealed);
    if (rc != 0) {
        reply_failure(rq, rc, "seal verify token");
        return;
    }
    auth_client_ip(app->cfg, cm_req_peer(rq), cm_req_header(rq, "X-Real-IP"), ip);
    auth_new_user_t nu = {.username = in->username,
                          .email = in->email,
                          .password_hash = pwhash,
                          .referral_code = in->normalized_code[0] ? in->normalized_code : NULL,
                          .ip = ip[0] ? ip : NULL,
                          .verify_hash = token_hash,
                          .verify_sealed = sealed,
                          .request_id = cm_req_id(rq)};
    auth_user_t u;
    const char *field = NULL;
    rc = auth_store_register(app->db, &nu, &u, &field);
    free(sealed);
    if (rc == CM_ECONFLICT && field)
        reply_conflict(rq, strcmp(field, "username") == 0, strcmp(field, "email") == 0);
    else if (rc == CM_ENOTFOUND && field)
        reply_field_error(rq, field, "Unknown referral code.");
    else if (rc != 0)
        reply_failure(rq, rc, "register");
    else {
        count(app->registrations, NULL);
        cm_reply_json(rq, 201, user_json(app, &u));
    }
}

static void on_register(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    json_t *body = NULL;
    if (cm_req_json_or_reply(rq, &body) != 0)
        return;
    json_t *errors = json_object();
    reg_input_t in = {0};
    check_register(body, &in, errors);
    if (json_object_size(errors) > 0) {
        cm_reply_invalid(rq, errors);
        goto out;
    }
    json_decref(errors);
    if (precheck_or_reply(rq, app, &in) == 0)
        create_user(rq, app, &in);
out:
    wipe_member(body, "password");
    json_decref(body);
}

/* ---- login -------------------------------------------------------------------------- */

/* The throttle's account: the user id when the name exists, else the name itself (keyed-hashed
 * by the store), so unknown names are slowed down alike and reveal nothing. */
static void throttle_account(const auth_user_t *u, bool found, const char *ident, cm_buf_t *out)
{
    cm_buf_puts(out, found ? "user:" : "name:");
    cm_buf_puts(out, found ? u->id : ident);
}

/* Replies 429 with Retry-After when the pair or the account is locked; returns non-zero then.
 * *pair_failures (may be NULL): whether the pair has failures to forget on a success. */
static int throttled_or_reply(cm_req_t *rq, const auth_app_t *app, const char *account,
                              const char *ip, bool *pair_failures)
{
    int64_t wait_s = 0;
    int rc =
        auth_store_throttle_check(app->db, app->throttle_key, account, ip, &wait_s, pair_failures);
    if (rc != 0) {
        reply_failure(rq, rc, "throttle check");
        return rc;
    }
    if (wait_s <= 0)
        return 0;
    count(app->logins, "throttled");
    char v[24];
    snprintf(v, sizeof v, "%lld", (long long)wait_s);
    cm_reply_header(rq, "Retry-After", v);
    cm_reply_problem(rq, 429, "Too many requests",
                     "Too many failed login attempts; try again later.", NULL);
    return CM_EBUSY;
}

/* After the password matched: clear the pair's failures (when it had any: a failure that lands
 * between the check and here counts, it came after), rehash if needed, issue tokens. */
static void login_success(cm_req_t *rq, const auth_app_t *app, const auth_user_t *u,
                          const char *account, const char *ip, const char *pw, size_t plen,
                          bool rehash, bool pair_failures)
{
    if (pair_failures && auth_store_throttle_pass(app->db, app->throttle_key, account, ip) != 0)
        CM_WARN(cm_req_id(rq), "could not reset the login throttle");
    char newhash[crypto_pwhash_STRBYTES];
    /* Compare-and-set: a reset that committed meanwhile keeps its hash. */
    if (rehash && cm_password_hash(app->hash, pw, plen, newhash) == 0 &&
        auth_store_set_password_hash(app->db, u->id, u->password_hash, newhash) != 0)
        CM_INFO(cm_req_id(rq), "rehash skipped: the password changed meanwhile");
    sodium_memzero(newhash, sizeof newhash);
    char refresh[CM_TOKEN_CHARS], hash[65], family[37], network[AUTH_NET_KEY_MAX];
    cm_token_new(refresh);
    cm_sha256_hex(refresh, strlen(refresh), hash);
    auth_net_key(ip, network);
    auth_session_new_t sn = {.user_id = u->id,
                             .epoch = u->session_epoch,
                             .hash = hash,
                             .ttl_days = app->cfg->refresh_ttl_days,
                             .user_agent = auth_ua_class(cm_req_header(rq, "User-Agent")),
                             .ip = ip[0] ? ip : NULL,
                             .network = network,
                             .request_id = cm_req_id(rq)};
    bool noticed = false;
    int rc = auth_store_session_open(app->db, &sn, family, &noticed);
    if (rc == CM_ESTATE) /* a reset won: the password verified is no longer the password */
        reply_unauthorized(rq, MSG_LOGIN_FAILED);
    else if (rc != 0)
        reply_failure(rq, rc, "refresh issue");
    else
        reply_tokens(rq, app, u, refresh, family);
    if (noticed)
        CM_INFO(cm_req_id(rq), "new sign-in notice for user %s (%s)", u->id, sn.user_agent);
    sodium_memzero(refresh, sizeof refresh);
}

static void login(cm_req_t *rq, const auth_app_t *app, const char *ident, const char *pw,
                  size_t plen)
{
    auth_user_t u = {0};
    int rc = auth_store_user_by_login(app->db, ident, &u);
    if (rc != 0 && rc != CM_ENOTFOUND) {
        reply_failure(rq, rc, "login lookup");
        return;
    }
    bool found = rc == 0;
    char ip[46];
    cm_buf_t account;
    cm_buf_init(&account);
    throttle_account(&u, found, ident, &account);
    auth_client_ip(app->cfg, cm_req_peer(rq), cm_req_header(rq, "X-Real-IP"), ip);
    bool pair_failures = false;
    if (throttled_or_reply(rq, app, account.data, ip, &pair_failures) != 0)
        goto out;
    bool rehash = false;
    rc = cm_password_verify(app->hash, found ? u.password_hash : NULL, pw, plen, &rehash);
    if (rc == 0 && found) {
        count(app->logins, "success");
        login_success(rq, app, &u, account.data, ip, pw, plen, rehash, pair_failures);
    } else if (rc == CM_EAUTH || rc == 0) {
        count(app->logins, "failure");
        if (auth_store_throttle_fail(app->db, app->throttle_key, account.data, ip) != 0)
            CM_WARN(cm_req_id(rq), "could not count a failed login");
        reply_unauthorized(rq, MSG_LOGIN_FAILED);
    } else {
        reply_failure(rq, rc, "password verify");
    }
out:
    cm_buf_dispose(&account);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
}

static void on_login(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    json_t *body = NULL;
    if (cm_req_json_or_reply(rq, &body) != 0)
        return;
    json_t *errors = json_object();
    const char *ident = NULL, *pw = NULL;
    size_t ilen = 0, plen = 0;
    int a = get_string(body, "username_or_email", true, errors, &ident, &ilen);
    int b = get_string(body, "password", true, errors, &pw, &plen);
    if (a == 0 && ilen == 0)
        cm_errors_add(errors, "username_or_email", MSG_BLANK);
    if (b == 0 && plen == 0)
        cm_errors_add(errors, "password", MSG_BLANK);
    if (json_object_size(errors) > 0) {
        cm_reply_invalid(rq, errors);
        goto out;
    }
    json_decref(errors);
    if (ilen > LOGIN_MAX_BYTES || plen > LOGIN_MAX_BYTES || memchr(ident, '\0', ilen) ||
        memchr(pw, '\0', plen))
        reply_unauthorized(rq, MSG_LOGIN_FAILED); /* can never match an account */
    else
        login(rq, app, ident, pw, plen);
out:
    wipe_member(body, "password");
    json_decref(body);
}

/* ---- refresh and logout ------------------------------------------------------------------ */

/* Reads {"refresh": "<token>"}; replies 400/401 itself. Malformed tokens never reach SQL. */
static int refresh_body_or_reply(cm_req_t *rq, json_t *body, const char **tok, size_t *len)
{
    json_t *errors = json_object();
    if (get_string(body, "refresh", true, errors, tok, len) != 0) {
        cm_reply_invalid(rq, errors);
        return CM_EINVAL;
    }
    json_decref(errors);
    if (!auth_token_well_formed(*tok, *len)) {
        reply_unauthorized(rq, "Token is invalid or expired.");
        return CM_EAUTH;
    }
    return 0;
}

static void on_refresh(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    json_t *body = NULL;
    if (cm_req_json_or_reply(rq, &body) != 0)
        return;
    const char *tok = NULL;
    size_t len = 0;
    if (refresh_body_or_reply(rq, body, &tok, &len) != 0)
        goto out;
    char child[CM_TOKEN_CHARS], hash[65], child_hash[65];
    auth_refresh_child(app, tok, len, child);
    cm_sha256_hex(tok, len, hash);
    cm_sha256_hex(child, strlen(child), child_hash);
    auth_refresh_outcome_t outcome = AUTH_REFRESH_INVALID;
    auth_user_t u;
    char family[37];
    int rc = auth_store_refresh_rotate_sid(app->db, hash, child_hash, app->cfg->refresh_grace_s,
                                           app->cfg->refresh_ttl_days, &outcome, &u, family);
    if (rc != 0)
        reply_failure(rq, rc, "refresh");
    else if (outcome == AUTH_REFRESH_ROTATED || outcome == AUTH_REFRESH_GRACE)
        reply_tokens(rq, app, &u, child, family);
    else {
        count(outcome == AUTH_REFRESH_REUSED ? app->reuse : NULL, NULL);
        reply_unauthorized(rq, "Token is invalid or expired.");
    }
    sodium_memzero(child, sizeof child);
out:
    wipe_member(body, "refresh");
    json_decref(body);
}

static void on_logout(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    json_t *body = NULL;
    if (cm_req_json_or_reply(rq, &body) != 0)
        return;
    const char *tok = NULL;
    size_t len = 0;
    if (refresh_body_or_reply(rq, body, &tok, &len) != 0)
        goto out;
    char hash[65];
    cm_sha256_hex(tok, len, hash);
    int rc = auth_store_logout(app->db, hash);
    if (rc == CM_ENOTFOUND)
        reply_unauthorized(rq, "Token is invalid or expired.");
    else if (rc != 0)
        reply_failure(rq, rc, "logout");
    else
        cm_reply_empty(rq, 204);
out:
    wipe_member(body, "refresh");
    json_decref(body);
}

/* ---- forgot / reset password, verify email ------------------------------------------------ */

static void on_forgot(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    json_t *body = NULL;
    if (cm_req_json_or_reply(rq, &body) != 0)
        return;
    json_t *errors = json_object();
    const char *email = NULL, *msg = NULL;
    size_t elen = 0;
    if (get_string(body, "email", true, errors, &email, &elen) == 0 &&
        auth_validate_email(email, elen, &msg) != 0)
        cm_errors_add(errors, "email", msg);
    if (json_object_size(errors) > 0) {
        cm_reply_invalid(rq, errors);
        goto out;
    }
    json_decref(errors);
    /*
     * One statement for every address (it writes a mark either way); only an
     * account with reset budget left — the first AUTH_RESETS_PER_HOUR requests
     * an hour — costs more: the token, its seal and the issuing transaction.
     */
    char hash[65];
    char *sealed = NULL;
    bool budget = false, issued = false;
    int rc = auth_store_reset_probe(app->db, app->throttle_key, email, &budget);
    if (rc == 0 && budget && (rc = sealed_token(app, hash, &sealed)) == 0)
        rc = auth_store_reset_issue(app->db, email, hash, sealed, cm_req_id(rq), &issued);
    free(sealed);
    if (rc != 0)
        reply_failure(rq, rc, "forgot password");
    else
        cm_reply_json(rq, 202,
                      json_pack("{s:s}", "detail",
                                "If an account with that email exists, a password "
                                "reset link has been sent to it."));
out:
    json_decref(body);
}

/* Reads a one-time token member; 400 naming "token" when absent or malformed. */
static int one_time_token_or_reply(cm_req_t *rq, json_t *body, json_t *errors, char hash[65])
{
    const char *tok = NULL;
    size_t len = 0;
    if (get_string(body, "token", true, errors, &tok, &len) != 0)
        return CM_EINVAL;
    if (!auth_token_well_formed(tok, len)) {
        cm_errors_add(errors, "token", MSG_BAD_TOKEN);
        return CM_EINVAL;
    }
    (void)rq;
    cm_sha256_hex(tok, len, hash);
    return 0;
}

/*
 * 400 for a refused one-time token, with the machine-readable reason the
 * pages show ("code": token_used | token_expired | token_invalid). Only
 * the token's holder can ask about it, so the reason tells nothing to
 * anyone else; any lookup failure falls back to token_invalid.
 */
static void reply_token_refused(cm_req_t *rq, const auth_app_t *app, const char *kind,
                                const char *hash)
{
    static const char *const codes[] = {"token_invalid", "token_used", "token_expired"};
    static const char *const msgs[] = {MSG_BAD_TOKEN, "This link was already used.",
                                       "This link has expired."};
    auth_token_state_t st = AUTH_TOKEN_INVALID;
    if (auth_store_token_state(app->db, kind, hash, &st) != 0)
        st = AUTH_TOKEN_INVALID;
    json_t *errors = json_object();
    cm_errors_add(errors, "token", msgs[st]);
    cm_reply_problem_ext(rq, 400, "Validation failed", "One or more fields are invalid.", errors,
                         json_pack("{s:s}", "code", codes[st]));
}

static void reset_password(cm_req_t *rq, const auth_app_t *app, const char *hash, const char *pw,
                           size_t plen)
{
    auth_user_t u;
    const char *msg = NULL;
    char pwhash[crypto_pwhash_STRBYTES];
    int rc = auth_store_token_owner(app->db, "reset", hash, &u);
    if (rc == CM_ENOTFOUND) {
        reply_token_refused(rq, app, "reset", hash);
        return;
    }
    if (rc != 0) {
        reply_failure(rq, rc, "reset lookup");
        return;
    }
    if (auth_validate_password(pw, plen, u.username, u.email, &msg) != 0) {
        reply_field_error(rq, "password", msg);
        return;
    }
    rc = cm_password_hash(app->hash, pw, plen, pwhash);
    if (rc == 0)
        rc = auth_store_reset_apply(app->db, app->throttle_key, hash, pwhash, cm_req_id(rq));
    if (rc == CM_ENOTFOUND)
        reply_token_refused(rq, app, "reset", hash);
    else if (rc != 0)
        reply_failure(rq, rc, "reset password");
    else
        cm_reply_empty(rq, 204);
}

static void on_reset(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    json_t *body = NULL;
    if (cm_req_json_or_reply(rq, &body) != 0)
        return;
    json_t *errors = json_object();
    char hash[65];
    const char *pw = NULL;
    size_t plen = 0;
    int a = one_time_token_or_reply(rq, body, errors, hash);
    int b = get_string(body, "password", true, errors, &pw, &plen);
    if (a != 0 || b != 0) {
        cm_reply_invalid(rq, errors);
        goto out;
    }
    json_decref(errors);
    reset_password(rq, app, hash, pw, plen);
out:
    wipe_member(body, "password");
    wipe_member(body, "token");
    json_decref(body);
}

static void on_verify(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    json_t *body = NULL;
    if (cm_req_json_or_reply(rq, &body) != 0)
        return;
    json_t *errors = json_object();
    char hash[65];
    if (one_time_token_or_reply(rq, body, errors, hash) != 0) {
        cm_reply_invalid(rq, errors);
        goto out;
    }
    json_decref(errors);
    auth_user_t u;
    int rc = auth_store_verify_email(app->db, hash, cm_req_id(rq), &u);
    if (rc == CM_ENOTFOUND)
        reply_token_refused(rq, app, "verify", hash);
    else if (rc != 0)
        reply_failure(rq, rc, "verify email");
    else
        cm_reply_json(rq, 200, user_json(app, &u));
out:
    wipe_member(body, "token");
    json_decref(body);
}

static void reply_already_verified(cm_req_t *rq)
{
    json_t *errors = json_object();
    cm_errors_add(errors, "email", "Email is already verified.");
    cm_reply_problem(rq, 409, "Conflict", "Email is already verified.", errors);
}

static void on_resend(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    auth_user_t u;
    if (bearer_user_or_reply(rq, app, &u) != 0)
        return;
    if (u.email_verified) {
        reply_already_verified(rq);
        return;
    }
    char hash[65];
    char *sealed = NULL;
    bool issued = false;
    int rc = sealed_token(app, hash, &sealed);
    if (rc == 0)
        rc = auth_store_verify_reissue(app->db, u.id, hash, sealed, cm_req_id(rq), &issued);
    free(sealed);
    if (rc == CM_ESTATE) {
        reply_already_verified(rq);
    } else if (rc != 0) {
        reply_failure(rq, rc, "resend verification");
    } else {
        cm_reply_json(rq, 202,
                      json_pack("{s:s}", "detail", "A new verification link has been sent."));
    }
}

/* ---- sessions and password change (issue 15) ------------------------------------------- */

#define SESSIONS_PREFIX "/api/sessions/"
#define MSG_NO_SESSION "No such session."
#define MSG_WRONG_PASSWORD "The current password is not correct."

/* The caller's session id (the token's sid), or NULL when the token names none. */
static const char *session_of(const cm_jwt_claims_t *claims)
{
    return cm_is_uuid(claims->sid, strlen(claims->sid)) ? claims->sid : NULL;
}

static json_t *session_json(const auth_session_t *s, const char *current)
{
    char created[32], used[32];
    cm_format_time(s->created_us, created);
    cm_format_time(s->last_used_us, used);
    return json_pack("{s:s, s:s, s:s, s:s, s:s?, s:b}", "id", s->id, "created_at", created,
                     "last_used_at", used, "user_agent", s->user_agent, "ip",
                     s->ip[0] ? s->ip : NULL, "current", strcmp(s->id, current) == 0);
}

static void on_sessions_list(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    auth_user_t u;
    cm_jwt_claims_t claims;
    if (bearer_claims_or_reply(rq, app, &u, &claims) != 0)
        return;
    auth_session_t *list = NULL;
    size_t n = 0;
    int rc = auth_store_sessions_list(app->db, u.id, &list, &n);
    if (rc != 0) {
        reply_failure(rq, rc, "sessions list");
        return;
    }
    json_t *results = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(results, session_json(&list[i], claims.sid));
    free(list);
    cm_reply_json(rq, 200, json_pack("{s:o}", "results", results));
}

/* The {id} of /api/sessions/{id}[/] as a canonical UUID in out; false when it is none. */
static bool session_id_of(const char *path, char out[37])
{
    size_t plen = sizeof SESSIONS_PREFIX - 1;
    if (strncmp(path, SESSIONS_PREFIX, plen) != 0)
        return false;
    const char *id = path + plen;
    size_t len = strnlen(id, 38);
    if (len == 37 && id[36] == '/')
        len = 36;
    if (!cm_is_uuid(id, len))
        return false;
    for (size_t i = 0; i < 36; i++) /* the database's spelling, for the comparison with sid */
        out[i] = (char)(id[i] >= 'A' && id[i] <= 'F' ? id[i] - 'A' + 'a' : id[i]);
    out[36] = '\0';
    return true;
}

static void on_session_end(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    auth_user_t u;
    char id[37];
    if (bearer_user_or_reply(rq, app, &u) != 0)
        return;
    /* A malformed id names no session of the caller's: the same 404 as another account's. */
    int rc = session_id_of(cm_req_path(rq), id) ? auth_store_session_end(app->db, u.id, id)
                                                : CM_ENOTFOUND;
    if (rc == CM_ENOTFOUND)
        cm_reply_problem(rq, 404, "Not Found", MSG_NO_SESSION, NULL);
    else if (rc != 0)
        reply_failure(rq, rc, "session end");
    else
        cm_reply_empty(rq, 204);
}

static void on_sessions_revoke_others(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    auth_user_t u;
    cm_jwt_claims_t claims;
    if (bearer_claims_or_reply(rq, app, &u, &claims) != 0)
        return;
    /* A token from before sessions had ids names none: every session ends then. */
    int rc = auth_store_sessions_end_others(app->db, u.id, session_of(&claims), NULL);
    if (rc != 0)
        reply_failure(rq, rc, "revoke other sessions");
    else
        cm_reply_empty(rq, 204);
}

typedef struct pw_input {
    const char *current, *next;
    size_t clen, nlen;
    bool keep_others;
} pw_input_t;

/* Reads and validates the body against the user's names; every problem lands in errors. */
static void check_password_change(json_t *body, const auth_user_t *u, pw_input_t *in,
                                  json_t *errors)
{
    const char *msg = NULL;
    if (get_string(body, "current_password", true, errors, &in->current, &in->clen) == 0 &&
        in->clen == 0)
        cm_errors_add(errors, "current_password", MSG_BLANK);
    if (get_string(body, "new_password", true, errors, &in->next, &in->nlen) == 0 &&
        auth_validate_password(in->next, in->nlen, u->username, u->email, &msg) != 0)
        cm_errors_add(errors, "new_password", msg);
    json_t *keep = json_object_get(body, "keep_other_sessions"); /* borrowed */
    if (keep && !json_is_null(keep) && !json_is_boolean(keep))
        cm_errors_add(errors, "keep_other_sessions", "Must be a boolean.");
    in->keep_others = json_is_true(keep);
}

/* A wrong current password counts in the login throttle like a failed login, then 403. */
static void reply_wrong_password(cm_req_t *rq, const auth_app_t *app, const char *account,
                                 const char *ip)
{
    if (auth_store_throttle_fail(app->db, app->throttle_key, account, ip) != 0)
        CM_WARN(cm_req_id(rq), "could not count a wrong current password");
    cm_reply_problem(rq, 403, "Forbidden", MSG_WRONG_PASSWORD, NULL);
}

/* After the current password matched: hash the new one, store, end the others. */
static void change_password(cm_req_t *rq, const auth_app_t *app, const auth_user_t *u,
                            const char *sid, const pw_input_t *in)
{
    char pwhash[crypto_pwhash_STRBYTES];
    int rc = cm_password_hash(app->hash, in->next, in->nlen, pwhash);
    auth_password_change_t pc = {.user_id = u->id,
                                 .old_hash = u->password_hash,
                                 .new_hash = pwhash,
                                 .end_others = !in->keep_others,
                                 .keep_family = sid,
                                 .request_id = cm_req_id(rq)};
    if (rc == 0)
        rc = auth_store_password_change(app->db, &pc);
    sodium_memzero(pwhash, sizeof pwhash);
    if (rc == CM_ECONFLICT) /* a reset or another change came first: that is no longer it */
        cm_reply_problem(rq, 403, "Forbidden", MSG_WRONG_PASSWORD, NULL);
    else if (rc != 0)
        reply_failure(rq, rc, "password change");
    else
        cm_reply_empty(rq, 204);
}

/* Throttle, verify the current password (argon2id pool), then change. */
static void verify_and_change(cm_req_t *rq, const auth_app_t *app, const auth_user_t *u,
                              const char *sid, const pw_input_t *in)
{
    char ip[46];
    cm_buf_t account;
    cm_buf_init(&account);
    throttle_account(u, true, NULL, &account);
    auth_client_ip(app->cfg, cm_req_peer(rq), cm_req_header(rq, "X-Real-IP"), ip);
    bool pair_failures = false;
    if (throttled_or_reply(rq, app, account.data, ip, &pair_failures) != 0)
        goto out;
    bool rehash = false;
    int rc = CM_EAUTH; /* too long or holding a NUL: can never be the password */
    if (in->clen <= LOGIN_MAX_BYTES && !memchr(in->current, '\0', in->clen))
        rc = cm_password_verify(app->hash, u->password_hash, in->current, in->clen, &rehash);
    if (rc == CM_EAUTH) {
        reply_wrong_password(rq, app, account.data, ip);
    } else if (rc != 0) {
        reply_failure(rq, rc, "password verify");
    } else {
        if (pair_failures &&
            auth_store_throttle_pass(app->db, app->throttle_key, account.data, ip) != 0)
            CM_WARN(cm_req_id(rq), "could not reset the login throttle");
        change_password(rq, app, u, sid, in);
    }
out:
    cm_buf_dispose(&account);
}

static void on_password_change(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    auth_user_t u;
    cm_jwt_claims_t claims;
    if (bearer_claims_or_reply(rq, app, &u, &claims) != 0)
        return;
    json_t *body = NULL;
    if (cm_req_json_or_reply(rq, &body) != 0)
        goto out;
    json_t *errors = json_object();
    pw_input_t in = {0};
    check_password_change(body, &u, &in, errors);
    if (json_object_size(errors) > 0)
        cm_reply_invalid(rq, errors); /* nothing spent, nothing counted: no guess was checked */
    else {
        json_decref(errors);
        verify_and_change(rq, app, &u, session_of(&claims), &in);
    }
    wipe_member(body, "current_password");
    wipe_member(body, "new_password");
    json_decref(body);
out:
    sodium_memzero(u.password_hash, sizeof u.password_hash);
}

/* ---- account deletion and export (issue 15) ------------------------------------------------- */

/* Checks the caller's password on the hash pool. A wrong one is 403 and counts as a failed
 * login of the account from this address, so this is no way around the login throttle;
 * a locked pair or account answers 429 before any hash is spent. Replies itself on failure. */
static int password_or_reply(cm_req_t *rq, const auth_app_t *app, const auth_user_t *u,
                             const char *pw, size_t plen)
{
    char ip[46];
    cm_buf_t account;
    cm_buf_init(&account);
    throttle_account(u, true, NULL, &account);
    auth_client_ip(app->cfg, cm_req_peer(rq), cm_req_header(rq, "X-Real-IP"), ip);
    int rc = throttled_or_reply(rq, app, account.data, ip, NULL);
    if (rc == 0) {
        bool rehash = false;
        rc = (plen > LOGIN_MAX_BYTES || memchr(pw, '\0', plen))
                 ? CM_EAUTH
                 : cm_password_verify(app->hash, u->password_hash, pw, plen, &rehash);
        if (rc == CM_EAUTH) {
            if (auth_store_throttle_fail(app->db, app->throttle_key, account.data, ip) != 0)
                CM_WARN(cm_req_id(rq), "could not count a failed password check");
            json_t *errors = json_object();
            cm_errors_add(errors, "password", "The password is not correct.");
            cm_reply_problem(rq, 403, "Forbidden", "The password is not correct.", errors);
        } else if (rc != 0) {
            reply_failure(rq, rc, "password verify");
        }
    }
    cm_buf_dispose(&account);
    return rc;
}

/* DELETE /api/me {password}: the account, its tokens and a user.deleted event, at once. */
static void on_delete_me(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    auth_user_t u;
    json_t *body = NULL;
    if (bearer_user_or_reply(rq, app, &u) != 0 || cm_req_json_or_reply(rq, &body) != 0)
        goto wipe;
    json_t *errors = json_object();
    const char *pw = NULL;
    size_t plen = 0;
    if (get_string(body, "password", true, errors, &pw, &plen) == 0 && plen == 0)
        cm_errors_add(errors, "password", MSG_BLANK);
    if (json_object_size(errors) > 0) {
        cm_reply_invalid(rq, errors);
        goto out;
    }
    json_decref(errors);
    if (password_or_reply(rq, app, &u, pw, plen) != 0)
        goto out;
    int rc = auth_store_delete_user(app->db, app->throttle_key, u.id, cm_req_id(rq));
    if (rc == CM_ENOTFOUND) /* a concurrent deletion won */
        reply_unauthorized(rq, "Authentication credentials were not provided or are invalid.");
    else if (rc != 0)
        reply_failure(rq, rc, "delete account");
    else {
        CM_INFO(cm_req_id(rq), "account %s deleted", u.id);
        cm_reply_empty(rq, 204);
    }
out:
    wipe_member(body, "password");
    json_decref(body);
wipe:
    sodium_memzero(u.password_hash, sizeof u.password_hash);
}

/* GET /api/me/export: auth's part of the export (the gateway adds referral's). */
static void on_export(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    auth_user_t u;
    if (bearer_user_or_reply(rq, app, &u) != 0)
        return;
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    json_t *sessions = NULL;
    int rc = auth_store_sessions_export(app->db, u.id, &sessions);
    if (rc != 0) {
        reply_failure(rq, rc, "export sessions");
        return;
    }
    cm_reply_json(rq, 200,
                  json_pack("{s:o, s:o}", "user", user_json(app, &u), "sessions", sessions));
}

/* ---- me, jwks, readiness ----------------------------------------------------------------------
 */

static void on_me(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    auth_user_t u;
    if (bearer_user_or_reply(rq, app, &u) != 0)
        return;
    cm_reply_json(rq, 200, user_json(app, &u));
}

static void on_jwks(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    cm_reply_json(rq, 200, cm_jwt_signer_jwks(app->signer));
}

/* Ready means this pod can answer its own requests, which need the database
 * only: events go through the outbox, whose relay rides out a Kafka outage
 * (its backlog is linktr_outbox_backlog). Kafka is no part of readiness, or
 * a broker outage would empty the Service and take registrations and reads
 * down with it. */
bool auth_ready(void *ctx, cm_buf_t *why)
{
    const auth_app_t *app = ctx;
    if (cm_db_ping(app->db))
        return true;
    cm_buf_puts(why, "database");
    return false;
}

/* ---- email change (issue 15) ------------------------------------------------------------ */

/* A problem of status whose errors name field. */
static void reply_field_error_status(cm_req_t *rq, int status, const char *field, const char *msg)
{
    json_t *errors = json_object();
    cm_errors_add(errors, field, msg);
    cm_reply_problem(rq, status, status == 409 ? "Conflict" : "Validation failed", msg, errors);
}

/* Reads {password, new_email}; every problem lands in errors. */
static void check_email_change(json_t *body, const auth_user_t *u, json_t *errors, const char **pw,
                               size_t *plen, const char **email)
{
    const char *msg = NULL;
    size_t elen = 0;
    if (get_string(body, "password", true, errors, pw, plen) == 0 && *plen == 0)
        cm_errors_add(errors, "password", MSG_BLANK);
    if (get_string(body, "new_email", true, errors, email, &elen) != 0)
        return;
    if (auth_validate_email(*email, elen, &msg) != 0)
        cm_errors_add(errors, "new_email", msg);
    else if (strcasecmp(*email, u->email) == 0)
        cm_errors_add(errors, "new_email", "This is already your email address.");
}

/* Makes both tokens and stores the pending change with its two mails' events. */
static void request_email_change(cm_req_t *rq, const auth_app_t *app, const auth_user_t *u,
                                 const char *email)
{
    char confirm_hash[65], cancel_hash[65];
    char *confirm = NULL, *cancel = NULL;
    bool limited = false;
    int rc = sealed_token(app, confirm_hash, &confirm);
    if (rc == 0)
        rc = sealed_token(app, cancel_hash, &cancel);
    if (rc == 0) {
        auth_email_change_t in = {.user_id = u->id,
                                  .new_email = email,
                                  .confirm_hash = confirm_hash,
                                  .confirm_sealed = confirm,
                                  .cancel_hash = cancel_hash,
                                  .cancel_sealed = cancel,
                                  .ttl_s = app->cfg->email_change_ttl_s,
                                  .request_id = cm_req_id(rq)};
        rc = auth_store_email_change_request(app->db, &in, &limited);
    }
    free(confirm);
    free(cancel);
    if (rc == CM_ECONFLICT) {
        reply_field_error_status(rq, 409, "new_email", "A user with that email already exists.");
    } else if (rc == CM_ENOTFOUND) {
        reply_unauthorized(rq, "Authentication credentials were not provided or are invalid.");
    } else if (rc != 0) {
        reply_failure(rq, rc, "email change");
    } else if (limited) {
        cm_reply_header(rq, "Retry-After", "3600");
        cm_reply_problem(rq, 429, "Too many requests",
                         "Too many email changes were asked for this hour; try again later.", NULL);
    } else {
        cm_reply_json(rq, 202,
                      json_pack("{s:s, s:s, s:i}", "detail",
                                "A confirmation link has been sent to the new address; your email "
                                "changes when it is opened.",
                                "new_email", email, "expires_in", app->cfg->email_change_ttl_s));
    }
}

static void on_email_change(cm_req_t *rq, void *ctx)
{
    const auth_app_t *app = ctx;
    auth_user_t u;
    if (bearer_user_or_reply(rq, app, &u) != 0)
        return;
    json_t *body = NULL;
    if (cm_req_json_or_reply(rq, &body) != 0)
        goto wipe;
    json_t *errors = json_object();
    const char *pw = NULL, *email = NULL;
    size_t plen = 0;
    check_email_change(body, &u, errors, &pw, &plen, &email);
    if (json_object_size(errors) > 0) {
        cm_reply_invalid(rq, errors);
        goto out;
    }
    json_decref(errors);
    if (password_or_reply(rq, app, &u, pw, plen) == 0)
        request_email_change(rq, app, &u, email);
out:
    wipe_member(body, "password");
    json_decref(body);
wipe:
    sodium_memzero(u.password_hash, sizeof u.password_hash);
}

/*
 * A link that cannot do what it was made for: problem+json with the extension member
 * "reason" (RFC 9457 §3.2: invalid, expired, confirmed, cancelled, superseded, taken), so a
 * page tells its reader which without parsing prose, and errors[field] for forms.
 */
static void reply_link_problem(cm_req_t *rq, int status, const char *title, const char *reason,
                               const char *field, const char *detail)
{
    json_t *p =
        json_pack("{s:s, s:s, s:i, s:s, s:s, s:{s:[s]}}", "type", "about:blank", "title", title,
                  "status", status, "detail", detail, "reason", reason, "errors", field, detail);
    const char *id = cm_req_id(rq);
    if (p && id)
        json_object_set_new(p, "request_id", json_string(id));
    char *text = p ? json_dumps(p, JSON_COMPACT) : NULL;
    json_decref(p);
    cm_reply_raw(rq, status, "application/problem+json", text, text ? strlen(text) : 0);
    free(text);
}

/* Answers every outcome but DONE. */
static void reply_email_outcome(cm_req_t *rq, auth_email_outcome_t o)
{
    switch (o) {
    case AUTH_EMAIL_CONFIRMED:
        reply_link_problem(rq, 410, "Gone", "confirmed", "token",
                           "This email change was already confirmed.");
        break;
    case AUTH_EMAIL_CANCELLED:
        reply_link_problem(rq, 410, "Gone", "cancelled", "token",
                           "This email change was cancelled.");
        break;
    case AUTH_EMAIL_SUPERSEDED:
        reply_link_problem(rq, 410, "Gone", "superseded", "token",
                           "A newer email change replaced this one.");
        break;
    case AUTH_EMAIL_EXPIRED:
        reply_link_problem(rq, 410, "Gone", "expired", "token", "This link has expired.");
        break;
    case AUTH_EMAIL_TAKEN:
        reply_link_problem(rq, 409, "Conflict", "taken", "new_email",
                           "Another account has this email address now.");
        break;
    default:
        reply_link_problem(rq, 400, "Validation failed", "invalid", "token", MSG_BAD_TOKEN);
    }
}

/* Both token endpoints: {token} → the change it names, confirmed or cancelled. */
static void use_email_token(cm_req_t *rq, const auth_app_t *app, bool confirm)
{
    json_t *body = NULL;
    if (cm_req_json_or_reply(rq, &body) != 0)
        return;
    json_t *errors = json_object();
    char hash[65];
    if (one_time_token_or_reply(rq, body, errors, hash) != 0) {
        if (json_object_get(errors, "token") && !json_object_get(body, "token"))
            cm_reply_invalid(rq, errors); /* missing: a plain field error */
        else {
            json_decref(errors); /* malformed: no change can have it */
            reply_email_outcome(rq, AUTH_EMAIL_UNKNOWN);
        }
        goto out;
    }
    json_decref(errors);
    auth_email_outcome_t o = AUTH_EMAIL_UNKNOWN;
    char email[AUTH_EMAIL_MAX + 1] = "";
    int rc = confirm ? auth_store_email_confirm(app->db, hash, cm_req_id(rq), &o, email)
                     : auth_store_email_cancel(app->db, hash, &o);
    if (rc != 0)
        reply_failure(rq, rc, confirm ? "email confirm" : "email cancel");
    else if (o != AUTH_EMAIL_DONE)
        reply_email_outcome(rq, o);
    else if (confirm)
        cm_reply_json(rq, 200,
                      json_pack("{s:s, s:s, s:b}", "detail", "Your email address was changed.",
                                "email", email, "email_verified", 1));
    else
        cm_reply_json(rq, 200, json_pack("{s:s}", "detail", "The email change was cancelled."));
out:
    wipe_member(body, "token");
    json_decref(body);
}

static void on_email_confirm(cm_req_t *rq, void *ctx)
{
    use_email_token(rq, ctx, true);
}

static void on_email_cancel(cm_req_t *rq, void *ctx)
{
    use_email_token(rq, ctx, false);
}

const cm_route_t auth_routes[] = {
    {"POST", "/api/register", on_register, CM_ROUTE_NO_STORE},
    {"POST", "/api/login", on_login, CM_ROUTE_NO_STORE},
    {"POST", "/api/token/refresh", on_refresh, CM_ROUTE_NO_STORE},
    {"POST", "/api/logout", on_logout, CM_ROUTE_NO_STORE},
    {"POST", "/api/forgot-password", on_forgot, CM_ROUTE_NO_STORE},
    {"POST", "/api/reset-password", on_reset, CM_ROUTE_NO_STORE},
    {"POST", "/api/verify-email", on_verify, CM_ROUTE_NO_STORE},
    {"POST", "/api/resend-verification", on_resend, CM_ROUTE_NO_STORE},
    {"GET", "/api/me", on_me, CM_ROUTE_NO_STORE},
    {"GET", "/.well-known/jwks.json", on_jwks, 0},
    /* email change (issue 15) */
    {"POST", "/api/email", on_email_change, CM_ROUTE_NO_STORE},
    {"POST", "/api/email/confirm", on_email_confirm, CM_ROUTE_NO_STORE},
    {"POST", "/api/email/cancel", on_email_cancel, CM_ROUTE_NO_STORE},
    /* issue 15: sessions and password change */
    {"GET", "/api/sessions", on_sessions_list, CM_ROUTE_NO_STORE},
    {"POST", "/api/sessions/revoke-others", on_sessions_revoke_others, CM_ROUTE_NO_STORE},
    {"DELETE", "/api/sessions/*", on_session_end, CM_ROUTE_NO_STORE},
    {"POST", "/api/password", on_password_change, CM_ROUTE_NO_STORE},
    /* issue 15: deletion and export */
    {"DELETE", "/api/me", on_delete_me, CM_ROUTE_NO_STORE},
    {"GET", "/api/me/export", on_export, CM_ROUTE_NO_STORE},
};
const size_t auth_nroutes = sizeof auth_routes / sizeof auth_routes[0];
