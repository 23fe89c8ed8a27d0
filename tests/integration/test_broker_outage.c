/*
 * A Kafka outage does not take the site down (issue 17, item 3).
 *
 * Readiness means "this pod can answer its own requests": auth and
 * referral need their database, the gateway needs nothing behind it. With
 * the broker stopped, registrations still answer 201 (auth's outbox keeps
 * the event), reads still answer 200, and the gateway's, auth's and
 * referral's /readyz stay 200 for longer than a consumer takes to notice
 * the outage (CONSUMER_STALE_MS, 15 s). Once the broker is back, the event
 * of the registration made during the outage is delivered: the referral
 * service has the member and the mailer sent the verify mail.
 *
 * The broker: the embedded one of the local stack is frozen with SIGSTOP
 * and thawed with SIGCONT (`stack kill kafka STOP|CONT`): it keeps its
 * port and its data, and every client sees a broker that answers nothing.
 * Under make test-kafka (LINKTR_KAFKA_DIR set) the real broker is stopped
 * and resumed with deploy/kafka/kafka, as test_faults does. The mailer's
 * /readyz is not asserted during the outage: it serves no request and its
 * readiness reports its consumer.
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

#include "cm/util.h"
#include "http_client.h"
#include "stack.h"
#include "testenv.h"

/* Bounds for the waits: generous for a loaded 2-core machine, finite. */
#define RECOVERY_MS 120000
/* How long readiness must hold with the broker down: past the 15 s after
 * which a consumer that heard nothing calls itself unhealthy. */
#define HOLD_MS 20000

static long status_of(const char *base_key, const char *path, const char *bearer, char **body)
{
    char *base = t_stack(base_key);
    char *u = cm_xasprintf("%s%s", base, path);
    t_resp_t r;
    long status = t_get(u, bearer, &r) == 0 ? r.status : 0;
    if (body)
        *body = cm_xstrdup(r.body ? r.body : "");
    t_resp_dispose(&r);
    free(u);
    free(base);
    return status;
}

/* The readiness that must hold while the broker is down. */
static const char *const HOLDING[] = {"GATEWAY_ADMIN_URL", "AUTH_ADMIN_URL", "REFERRAL_ADMIN_URL"};

static void assert_ready(const char *key)
{
    char *why = NULL;
    long st = status_of(key, "/readyz", NULL, &why);
    if (st != 200)
        fprintf(stderr, "%s /readyz: %ld %s\n", key, st, why);
    assert_int_equal(st, 200);
    free(why);
}

static int broker(const char *verb)
{
    const char *kdir = getenv("LINKTR_KAFKA_DIR");
    char *cmd = NULL;
    int rc;
    if (kdir) {
        cmd = cm_xasprintf("'%s/deploy/kafka/kafka' %s '%s'", t_repo(), verb, kdir);
        rc = t_sh(cmd);
    } else {
        cmd = cm_xasprintf("kill kafka %s", strcmp(verb, "stop") == 0 ? "STOP" : "CONT");
        rc = t_stack_cmd(cmd);
    }
    free(cmd);
    return rc;
}

typedef struct user {
    const char *id, *email;
} user_t;

static bool member_known(void *arg)
{
    const user_t *u = arg;
    return t_db_count("SELECT 1 FROM referral.members WHERE user_id = $1::uuid", u->id, NULL) == 1;
}

static bool delivered(void *arg)
{
    const user_t *u = arg;
    return member_known(arg) && t_mail_count(u->email) >= 1 &&
           t_db_count("SELECT 1 FROM auth.outbox WHERE sent_at IS NULL", NULL, NULL) == 0;
}

static bool all_ready(void *arg)
{
    (void)arg;
    return status_of("GATEWAY_ADMIN_URL", "/readyz", NULL, NULL) == 200 &&
           status_of("AUTH_ADMIN_URL", "/readyz", NULL, NULL) == 200 &&
           status_of("REFERRAL_ADMIN_URL", "/readyz", NULL, NULL) == 200 &&
           status_of("MAILER_ADMIN_URL", "/readyz", NULL, NULL) == 200;
}

static void with_the_broker_down_the_site_serves_and_stays_ready(void **state)
{
    (void)state;
    /* Before: a user whose stats we read during the outage, known to referral. */
    json_t *body = t_user_body("bro", NULL);
    json_t *reader = t_register(body);
    user_t r = {json_string_value(json_object_get(reader, "id")),
                json_string_value(json_object_get(body, "email"))};
    assert_true(t_wait(member_known, &r, RECOVERY_MS));
    char *access = t_login_access(json_string_value(json_object_get(body, "username")),
                                  json_string_value(json_object_get(body, "password")));
    assert_true(t_wait(all_ready, NULL, RECOVERY_MS));

    assert_int_equal(broker("stop"), 0);
    int64_t t0 = cm_now_mono_ms();

    /* A registration during the outage: 201, its event waits in the outbox. */
    json_t *nbody = t_user_body("brn", NULL);
    json_t *newcomer = t_register(nbody);
    user_t n = {json_string_value(json_object_get(newcomer, "id")),
                json_string_value(json_object_get(nbody, "email"))};
    fprintf(stderr, "outage: register answered 201 %lld ms into the outage\n",
            (long long)(cm_now_mono_ms() - t0));

    /* Reads and readiness hold for the whole window. */
    int rounds = 0;
    while (cm_now_mono_ms() - t0 < HOLD_MS) {
        for (size_t i = 0; i < sizeof HOLDING / sizeof HOLDING[0]; i++)
            assert_ready(HOLDING[i]);
        assert_int_equal(status_of("GATEWAY_URL", "/api/referral-stats/", access, NULL), 200);
        assert_int_equal(status_of("GATEWAY_URL", "/api/me/", access, NULL), 200);
        rounds++;
        t_sleep_ms(1000);
    }
    fprintf(stderr, "outage: %d rounds over %lld ms: readiness, stats and /api/me held\n", rounds,
            (long long)(cm_now_mono_ms() - t0));
    /* The outage was real: nothing reached the consumers. */
    assert_false(member_known(&n));
    assert_true(t_db_count("SELECT 1 FROM auth.outbox WHERE sent_at IS NULL", NULL, NULL) > 0);
    /* And a second registration late in the outage still answers 201. */
    json_t *lbody = t_user_body("brl", NULL);
    json_t *late = t_register(lbody);

    assert_int_equal(broker("resume"), 0);
    int64_t t1 = cm_now_mono_ms();
    assert_true(t_wait(delivered, &n, RECOVERY_MS));
    fprintf(stderr, "outage: the registration's event delivered %lld ms after the broker resumed\n",
            (long long)(cm_now_mono_ms() - t1));
    user_t l = {json_string_value(json_object_get(late, "id")),
                json_string_value(json_object_get(lbody, "email"))};
    assert_true(t_wait(delivered, &l, RECOVERY_MS));
    assert_true(t_wait(all_ready, NULL, RECOVERY_MS));

    json_decref(late);
    json_decref(lbody);
    json_decref(newcomer);
    json_decref(nbody);
    free(access);
    json_decref(reader);
    json_decref(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(with_the_broker_down_the_site_serves_and_stays_ready),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
