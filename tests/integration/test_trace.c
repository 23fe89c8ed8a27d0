/*
 * One registration followed through the logs: the X-Request-Id a client
 * sends to the gateway is the request id of the gateway's and auth's
 * access-log lines, the correlation_id of the user.registered event (and a
 * traceparent Kafka header), the request id of referral's and the mailer's
 * "event handled" lines, and the X-Request-Id header of the mail.
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_registration_is_followed_through_every_service_and_the_mail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
