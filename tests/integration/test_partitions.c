/*
 * Partitions configurable per topic (issue 18): a stack of its own with
 * KAFKA_PARTITIONS=12,mail.dead=2 on the embedded broker and three
 * instances of referral and of mailer, so each consumer group shares 12
 * partitions among 3 members. A wave of referred registrations and
 * verifications through the gateway must have every effect exactly once
 * (the referral rows, the striped counters, rewards and milestones, the
 * mails), every instance must have done part of the work, and the topics
 * must have the partition counts the spec gave them.
 *
 * Its own run dir, free ports and own broker (also under `make test-kafka`:
 * the partition count is this file's to set); stopped when the file ends.
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
#include <librdkafka/rdkafka.h>

#include "cm/util.h"
#include "http_client.h"
#include "stack.h"
#include "testenv.h"

#define WAVE_USERS 200
#define REPLICAS 3

static char *run_dir;

static char *stack_cmd(const char *what)
{
    char *build = t_stack("BUILD_DIR"); /* the fixture's build tree: same binaries */
    /* clang-format off */
    char *cmd = cm_xasprintf(
        "env -u KAFKA_BOOTSTRAP LINKTR_RUN_DIR='%s' LINKTR_BUILD_DIR='%s' "
        "LINKTR_READY_PATH=/readyz RATE_LIMITS=off LOG_LEVEL=warn REFERRAL_DAILY_CAP=1000 "
        "KAFKA_PARTITIONS=12,mail.dead=2 LINKTR_REPLICAS=referral=%d,mailer=%d "
        "'%s/deploy/local/stack' %s",
        run_dir, build, REPLICAS, REPLICAS, t_repo(), what);
    /* clang-format on */
    free(build);
    return cmd;
}

static int start_stack(void **state)
{
    (void)state;
    char *build = t_stack("BUILD_DIR");
    run_dir = cm_xasprintf("%s/partitions-run", build);
    free(build);
    char *start = stack_cmd("start --free-ports --clean");
    int rc = t_sh(start);
    free(start);
    char *env = cm_xasprintf("%s/stack.env", run_dir);
    setenv(T_STACK_ENV, env, 1); /* every helper of stack.h reads this stack from now on */
    free(env);
    return rc == 0 ? 0 : -1;
}

static int stop_stack(void **state)
{
    (void)state;
    char *stop = stack_cmd("stop");
    int rc = t_sh(stop);
    free(stop);
    free(run_dir);
    return rc == 0 ? 0 : -1;
}

/* The partition count of topic on the stack's broker, from its metadata; -1 if unknown. */
static int partitions_of(const char *topic)
{
    char *bootstrap = t_stack("KAFKA_BOOTSTRAP");
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof err),
                     RD_KAFKA_CONF_OK);
    free(bootstrap);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    assert_non_null(rk);
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int n = -1;
    if (rd_kafka_metadata(rk, 0, t, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
            n = md->topics[0].partition_cnt;
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_destroy(t);
    rd_kafka_destroy(rk);
    return n;
}

static void the_topics_have_the_partitions_the_spec_gives_them(void **state)
{
    (void)state;
    assert_int_equal(partitions_of("user.registered"), 12);
    assert_int_equal(partitions_of("user.verified"), 12);
    assert_int_equal(partitions_of("verify.requested"), 12);
    assert_int_equal(partitions_of("mail.dead"), 2);
}

static void twelve_partitions_over_three_instances_give_every_effect_exactly_once(void **state)
{
    (void)state;
    int64_t t0 = cm_now_mono_ms();
    t_wave_t *w = t_wave_register("p12", WAVE_USERS, 8);
    t_wave_verify(w, 8, NULL, NULL);
    t_wave_assert_exact(w, 0);
    fprintf(stderr, "partitions: %d referred registrations and verifications exact in %lld ms\n",
            WAVE_USERS, (long long)(cm_now_mono_ms() - t0));
    /* The referrer's counts went to several stripe rows and sum to the exact totals. */
    char *rows = t_db_value(
        "SELECT count(*) FROM referral.referral_counter_stripes WHERE user_id = $1::uuid",
        w->referrer_id);
    long long nrows = 0;
    assert_int_equal(cm_strtonum(rows, 2, 16, &nrows), 0);
    free(rows);
    t_assert_every_instance_consumed("REFERRAL_ADMIN_URLS", REPLICAS);
    t_assert_every_instance_consumed("MAILER_ADMIN_URLS", REPLICAS);
    t_wave_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_topics_have_the_partitions_the_spec_gives_them),
        cmocka_unit_test(twelve_partitions_over_three_instances_give_every_effect_exactly_once),
    };
    return cmocka_run_group_tests(tests, start_stack, stop_stack);
}
