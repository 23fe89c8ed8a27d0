/*
 * Scale-out (issue 8) and replicas under failure (issue 7, fault 4),
 * against a stack with two instances of auth, referral and mailer (the
 * linktr_replicas fixture; the gateway round-robins over auth and
 * referral). The consumer groups share the partitions: every instance of
 * referral and of mailer handles part of the events, and the total of
 * their effects is exact, also when one instance of each is killed in the
 * middle and the other takes over its partitions.
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

#define WAVE_USERS 200

/* The sum of linktr_consumer_messages_total over the /metrics of the instance at url. */
static double consumed(const char *base)
{
    char *u = cm_xasprintf("%s/metrics", base);
    t_resp_t r;
    double total = 0;
    if (t_get(u, NULL, &r) == 0 && r.status == 200) {
        for (const char *line = r.body; line && *line;) {
            const char *end = strchr(line, '\n');
            if (strncmp(line, "linktr_consumer_messages_total{", 31) == 0) {
                const char *space = memchr(line, ' ', end ? (size_t)(end - line) : strlen(line));
                if (space)
                    total += strtod(space + 1, NULL);
            }
            line = end ? end + 1 : NULL;
        }
    }
    t_resp_dispose(&r);
    free(u);
    return total;
}

/* Every instance listed in stack.env's <KEY> (comma-separated URLs) consumed something. */
static void assert_every_instance_consumed(const char *key)
{
    char *urls = t_stack(key);
    int instances = 0;
    for (char *save = NULL, *u = strtok_r(urls, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
        double n = consumed(u);
        fprintf(stderr, "replicas: %s at %s consumed %.0f messages\n", key, u, n);
        assert_true(n > 0);
        instances++;
    }
    assert_int_equal(instances, 2);
    free(urls);
}

static void two_instances_per_service_share_the_work_and_every_effect_is_exact(void **state)
{
    (void)state;
    int64_t t0 = cm_now_mono_ms();
    t_wave_t *w = t_wave_register("rep", WAVE_USERS, 8);
    t_wave_verify(w, 8, NULL, NULL);
    t_wave_assert_exact(w);
    fprintf(stderr, "replicas: %d referred registrations and verifications exact in %lld ms\n",
            WAVE_USERS, (long long)(cm_now_mono_ms() - t0));
    assert_every_instance_consumed("REFERRAL_URLS");
    assert_every_instance_consumed("MAILER_URLS");
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
    t_wave_assert_exact(w);
    fprintf(stderr, "replicas: exact with one instance of each killed, %lld ms\n",
            (long long)(cm_now_mono_ms() - t0));
    assert_int_equal(t_stack_cmd("respawn referral-2"), 0);
    assert_int_equal(t_stack_cmd("respawn mailer-2"), 0);
    t_wave_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(two_instances_per_service_share_the_work_and_every_effect_is_exact),
        cmocka_unit_test(when_one_instance_dies_the_other_takes_its_partitions_and_nothing_is_lost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
