/*
 * One registration followed through the logs: the X-Request-Id a client
 * sends to the gateway is the request id of the gateway's and auth's
 * access-log lines, the correlation_id of the user.registered event (and a
 * traceparent Kafka header), the request id of referral's and the mailer's
 * "event handled" lines, and the X-Request-Id header of the mail. Every other
 * event a request causes carries that request's id too (reset.requested,
 * password.changed, user.verified), and so does every event a consumer
 * writes because of it (referral.converted, reward.granted), down to the
 * reward mails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "cm/util.h"
#include "http_client.h"
#include "stack.h"
#include "testenv.h"

/* Two consumers and a relay in between: generous, but bounded. */
#define TRACE_DEADLINE_MS 30000

typedef struct trace {
    char rid[64];
    const char *service; /* the log to search */
    const char *must;    /* a second substring the same line must hold */
} trace_t;

/* True if LOG_DIR/<service>.log has a JSON line with request_id rid that also holds must. */
static bool logged(void *arg)
{
    const trace_t *t = arg;
    char *dir = t_stack("LOG_DIR");
    char *path = cm_xasprintf("%s/%s.log", dir, t->service);
    char *want = cm_xasprintf("\"request_id\":\"%s\"", t->rid);
    FILE *f = fopen(path, "r");
    bool found = false;
    char *line = NULL;
    size_t cap = 0;
    while (f && !found && getline(&line, &cap, f) > 0)
        found = strstr(line, want) && strstr(line, t->must) && line[0] == '{';
    if (f)
        fclose(f);
    free(line);
    free(want);
    free(path);
    free(dir);
    return found;
}

static bool mailed(void *arg)
{
    const trace_t *t = arg;
    char *header = cm_xasprintf("\r\nX-Request-Id: %s\r\n", t->rid);
    bool ok = t_mail_count(header) == 1;
    free(header);
    return ok;
}

static void assert_logged(trace_t *t, const char *service, const char *must)
{
    t->service = service;
    t->must = must;
    if (!t_wait(logged, t, TRACE_DEADLINE_MS))
        fail_msg("no %s log line with request_id %s and %s", service, t->rid, must);
}

/* POSTs body to the gateway's path with X-Request-Id rid; returns the status. */
static long post_traced(const char *path, json_t *body, const char *rid)
{
    char hdr[96];
    snprintf(hdr, sizeof hdr, "X-Request-Id: %s", rid);
    const char *hdrs[] = {hdr, NULL};
    char *text = json_dumps(body, JSON_COMPACT);
    char *u = t_gw(path);
    t_resp_t r;
    assert_int_equal(t_http("POST", u, "application/json", text, strlen(text), hdrs, &r), 0);
    long status = r.status;
    t_resp_dispose(&r);
    free(u);
    free(text);
    return status;
}

typedef struct outboxed {
    const char *schema; /* "auth" or "referral" */
    const char *type;
    const char *rid;
    int want;
} outboxed_t;

/* True when the schema's outbox holds want events of type with correlation_id rid. */
static bool in_outbox(void *arg)
{
    const outboxed_t *o = arg;
    static const char auth[] = "SELECT 1 FROM auth.outbox WHERE payload::json->>'type' = $1 "
                               "AND payload::json->>'correlation_id' = $2";
    static const char referral[] = "SELECT 1 FROM referral.outbox WHERE payload::json->>'type' = "
                                   "$1 AND payload::json->>'correlation_id' = $2";
    const char *sql = strcmp(o->schema, "auth") == 0 ? auth : referral;
    return t_db_count(sql, o->type, o->rid) == o->want;
}

static void assert_outboxed(const char *schema, const char *type, const char *rid, int want)
{
    outboxed_t o = {schema, type, rid, want};
    if (!t_wait(in_outbox, &o, TRACE_DEADLINE_MS))
        fail_msg("%s.outbox: not %d %s events with correlation_id %s", schema, want, type, rid);
}

typedef struct mail_link {
    const char *email, *page;
    char *token;
} mail_link_t;

static bool has_link(void *arg)
{
    mail_link_t *m = arg;
    free(m->token);
    m->token = t_mail_token(m->email, m->page);
    return m->token != NULL;
}

/* The token of the page's link in the mail to email, waited for; caller frees. */
static char *link_token(const char *email, const char *page)
{
    mail_link_t m = {email, page, NULL};
    if (!t_wait(has_link, &m, TRACE_DEADLINE_MS))
        fail_msg("no mail to %s with a %s link", email, page);
    return m.token;
}

static int mails_with_request_id(const char *rid)
{
    char *header = cm_xasprintf("\r\nX-Request-Id: %s\r\n", rid);
    int n = t_mail_count(header);
    free(header);
    return n;
}

static void one_registration_is_followed_through_every_service_and_the_mail(void **state)
{
    (void)state;
    trace_t t = {0};
    snprintf(t.rid, sizeof t.rid, "trace-%s", t_unique());
    char hdr[96];
    snprintf(hdr, sizeof hdr, "X-Request-Id: %s", t.rid);
    const char *hdrs[] = {hdr, NULL};
    json_t *body = t_user_body("trc", NULL);
    char *text = json_dumps(body, JSON_COMPACT);
    char *u = t_gw("/api/register/");
    t_resp_t r;
    assert_int_equal(t_http("POST", u, "application/json", text, strlen(text), hdrs, &r), 0);
    assert_int_equal(r.status, 201);
    char *echoed = t_resp_header(&r, "X-Request-Id");
    assert_non_null(echoed);
    assert_string_equal(echoed, t.rid);
    free(echoed);
    t_resp_dispose(&r);

    /* Access-log lines: method, route pattern, status and duration as fields. */
    assert_logged(&t, "gateway", "\"route\":\"/api/register\"");
    assert_logged(&t, "gateway", "\"status\":201");
    assert_logged(&t, "auth", "\"duration_ms\":");
    assert_logged(&t, "auth", "\"method\":\"POST\"");
    /* The consumers: the event's id and type as fields, the trace context header seen. */
    assert_logged(&t, "referral", "\"event_type\":\"user.registered\"");
    assert_logged(&t, "referral", "\"traceparent\":\"00-");
    assert_logged(&t, "mailer", "\"event_id\":\"");
    assert_logged(&t, "mailer", "\"event_type\":\"user.registered\"");
    /* ...and the mail itself. */
    if (!t_wait(mailed, &t, TRACE_DEADLINE_MS))
        fail_msg("no mail with X-Request-Id: %s", t.rid);
    const char *email = json_string_value(json_object_get(body, "email"));
    char *header = cm_xasprintf("\r\nX-Request-Id: %s\r\n", t.rid);
    assert_int_equal(t_mail_count(header), 1);
    assert_true(t_mail_count(email) >= 1);
    free(header);
    free(u);
    free(text);
    json_decref(body);
}

static void a_password_reset_is_followed_into_the_mailer_log_and_both_mails(void **state)
{
    (void)state;
    json_t *body = t_user_body("trr", NULL);
    json_decref(t_register(body));
    const char *email = json_string_value(json_object_get(body, "email"));

    trace_t t = {0};
    snprintf(t.rid, sizeof t.rid, "reset-%s", t_unique());
    json_t *forgot = json_pack("{s:s}", "email", email);
    assert_int_equal(post_traced("/api/forgot-password/", forgot, t.rid), 202);
    assert_outboxed("auth", "reset.requested", t.rid, 1);
    assert_logged(&t, "auth", "\"route\":\"/api/forgot-password\"");
    assert_logged(&t, "mailer", "\"event_type\":\"reset.requested\"");
    if (!t_wait(mailed, &t, TRACE_DEADLINE_MS))
        fail_msg("no reset mail with X-Request-Id: %s", t.rid);
    char *token = link_token(email, "reset-password");

    trace_t t2 = {0};
    snprintf(t2.rid, sizeof t2.rid, "newpw-%s", t_unique());
    json_t *reset =
        json_pack("{s:s, s:s}", "token", token, "password", "another fine passphrase 77");
    assert_int_equal(post_traced("/api/reset-password/", reset, t2.rid), 204);
    assert_outboxed("auth", "password.changed", t2.rid, 1);
    assert_logged(&t2, "mailer", "\"event_type\":\"password.changed\"");
    if (!t_wait(mailed, &t2, TRACE_DEADLINE_MS))
        fail_msg("no password-changed mail with X-Request-Id: %s", t2.rid);
    /* Each mail carries its own request's id, and no other mail does. */
    assert_int_equal(mails_with_request_id(t.rid), 1);
    assert_int_equal(mails_with_request_id(t2.rid), 1);
    json_decref(reset);
    json_decref(forgot);
    free(token);
    json_decref(body);
}

static void a_verification_is_followed_through_referral_s_events_into_the_reward_mails(void **state)
{
    (void)state;
    json_t *rbody = t_user_body("trf", NULL);
    json_t *referrer = t_register(rbody);
    const char *code = json_string_value(json_object_get(referrer, "referral_code"));
    json_t *body = t_user_body("trd", code);
    json_decref(t_register(body));
    const char *email = json_string_value(json_object_get(body, "email"));
    char *token = link_token(email, "verify-email");

    trace_t t = {0};
    snprintf(t.rid, sizeof t.rid, "verify-%s", t_unique());
    json_t *verify = json_pack("{s:s}", "token", token);
    assert_int_equal(post_traced("/api/verify-email/", verify, t.rid), 200);
    assert_outboxed("auth", "user.verified", t.rid, 1);
    assert_logged(&t, "referral", "\"event_type\":\"user.verified\"");
    /* What referral wrote because of it: the conversion and both credits. */
    assert_outboxed("referral", "referral.converted", t.rid, 1);
    assert_outboxed("referral", "reward.granted", t.rid, 2);
    assert_logged(&t, "mailer", "\"event_type\":\"reward.granted\"");
    /* Two hops from the request: the referrer's and the new member's reward mails. */
    int n = 0;
    for (int i = 0; i < TRACE_DEADLINE_MS / 100 && (n = mails_with_request_id(t.rid)) < 2; i++)
        t_sleep_ms(100);
    assert_int_equal(n, 2);
    json_decref(verify);
    free(token);
    json_decref(body);
    json_decref(referrer);
    json_decref(rbody);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_registration_is_followed_through_every_service_and_the_mail),
        cmocka_unit_test(a_password_reset_is_followed_into_the_mailer_log_and_both_mails),
        cmocka_unit_test(
            a_verification_is_followed_through_referral_s_events_into_the_reward_mails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
