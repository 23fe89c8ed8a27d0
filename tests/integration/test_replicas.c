/*
 * Scale-out (issue 8) and replicas under failure (issue 7, fault 4),
 * against a stack with two instances of auth, referral and mailer (the
 * linktr_replicas fixture; the gateway round-robins over auth and
 * referral). The consumer groups share the partitions: every instance of
 * referral and of mailer handles part of the events, and the total of
 * their effects is exact, also when one instance of each is killed in the
 * middle and the other takes over its partitions.
 *
 * This stack's mailers deliver over real SMTP (deploy/local/smtp-catcher,
 * aiosmtpd, storing into MAIL_DIR): with the server down registrations
 * still succeed and the mails arrive once it is back; a recipient the
 * server refuses for good ends on mail.dead.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "cm/util.h"
#include "http_client.h"
#include "stack.h"
#include "testenv.h"

#define WAVE_USERS 200

static void two_instances_per_service_share_the_work_and_every_effect_is_exact(void **state)
{
    (void)state;
    /* The instances share the work once the groups have rebalanced over both. */
    t_wait_every_instance_assigned("REFERRAL_ADMIN_URLS", 2);
    t_wait_every_instance_assigned("MAILER_ADMIN_URLS", 2);
    int64_t t0 = cm_now_mono_ms();
    t_wave_t *w = t_wave_register("rep", WAVE_USERS, 8);
    t_wave_verify(w, 8, NULL, NULL);
    t_wave_assert_exact(w, 0);
    fprintf(stderr, "replicas: %d referred registrations and verifications exact in %lld ms\n",
            WAVE_USERS, (long long)(cm_now_mono_ms() - t0));
    t_assert_every_instance_consumed("REFERRAL_ADMIN_URLS", 2);
    t_assert_every_instance_consumed("MAILER_ADMIN_URLS", 2);
    t_wave_free(w);
}

static void kill_second_instances(void *arg)
{
    (void)arg;
    assert_int_equal(t_stack_cmd("kill referral-2 KILL"), 0);
    assert_int_equal(t_stack_cmd("kill mailer-2 KILL"), 0);
    fprintf(stderr, "replicas: referral-2 and mailer-2 got SIGKILL halfway\n");
}

static void when_one_instance_dies_the_other_takes_its_partitions_and_nothing_is_lost(void **state)
{
    (void)state;
    int64_t t0 = cm_now_mono_ms();
    t_wave_t *w = t_wave_register("die", WAVE_USERS, 8);
    t_wave_verify(w, 8, kill_second_instances, NULL);
    /* Only the survivors work on: the group rebalances after the session timeout. */
    t_wave_assert_exact(w, 1); /* mailer-2 may have been killed mid-send */
    fprintf(stderr, "replicas: exact with one instance of each killed, %lld ms\n",
            (long long)(cm_now_mono_ms() - t0));
    assert_int_equal(t_stack_cmd("respawn referral-2"), 0);
    assert_int_equal(t_stack_cmd("respawn mailer-2"), 0);
    t_wave_free(w);
}

#define SMTP_USERS 10

struct smtp_users {
    char *emails[SMTP_USERS];
    int want;
};

static bool each_has_mail(void *arg)
{
    struct smtp_users *u = arg;
    for (int i = 0; i < SMTP_USERS; i++)
        if (t_mail_count(u->emails[i]) < u->want)
            return false;
    return true;
}

static void mails_wait_while_the_smtp_server_is_down_and_arrive_once_when_it_is_back(void **state)
{
    (void)state;
    assert_int_equal(t_stack_cmd("kill smtp TERM"), 0);
    struct smtp_users u = {.want = 1};
    for (int i = 0; i < SMTP_USERS; i++) {
        json_t *body = t_user_body("smtp", NULL);
        json_decref(t_register(body));
        u.emails[i] = cm_xstrdup(json_string_value(json_object_get(body, "email")));
        json_decref(body);
    }
    t_sleep_ms(3000);
    for (int i = 0; i < SMTP_USERS; i++)
        assert_int_equal(t_mail_count(u.emails[i]), 0);
    assert_int_equal(t_stack_cmd("respawn smtp"), 0);
    int64_t t0 = cm_now_mono_ms();
    assert_true(t_wait(each_has_mail, &u, 120000));
    fprintf(stderr, "smtp: %d mails delivered %lld ms after the server came back\n", SMTP_USERS,
            (long long)(cm_now_mono_ms() - t0));
    t_sleep_ms(2000);
    for (int i = 0; i < SMTP_USERS; i++) {
        assert_int_equal(t_mail_count(u.emails[i]), 1);
        free(u.emails[i]);
    }
}

struct dead {
    const char *user_id, *email;
};

static bool dead_lettered(void *arg)
{
    struct dead *d = arg;
    if (t_db_count("SELECT 1 FROM mailer.sent WHERE recipient = $1 AND outcome = 'dead'", d->email,
                   NULL) != 1)
        return false;
    /* And the event itself is on the mail.dead topic. */
    char *bootstrap = t_stack("KAFKA_BOOTSTRAP");
    char *cmd = cm_xasprintf("kcat -C -q -e -o beginning -b '%s' -t mail.dead 2>/dev/null | "
                             "grep -q '%s'",
                             bootstrap, d->user_id);
    int rc = t_sh(cmd);
    free(cmd);
    free(bootstrap);
    return rc == 0;
}

static void a_recipient_the_server_refuses_for_good_lands_on_mail_dead(void **state)
{
    (void)state;
    json_t *body = t_user_body("bounce", NULL); /* the catcher answers 550 to bounce*@ */
    json_t *user = t_register(body);
    struct dead d = {json_string_value(json_object_get(user, "id")),
                     json_string_value(json_object_get(body, "email"))};
    assert_true(t_wait(dead_lettered, &d, 60000));
    assert_int_equal(t_mail_count(d.email), 0);
    json_decref(user);
    json_decref(body);
}

/* A fault test that failed halfway must not leave the next tests without the service. */
static int respawn_killed(void **state)
{
    (void)state;
    static const char *const killed[] = {"referral-2", "mailer-2", "smtp", NULL};
    return t_stack_heal(killed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(two_instances_per_service_share_the_work_and_every_effect_is_exact),
        cmocka_unit_test_teardown(
            when_one_instance_dies_the_other_takes_its_partitions_and_nothing_is_lost,
            respawn_killed),
        cmocka_unit_test_teardown(
            mails_wait_while_the_smtp_server_is_down_and_arrive_once_when_it_is_back,
            respawn_killed),
        cmocka_unit_test(a_recipient_the_server_refuses_for_good_lands_on_mail_dead),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
