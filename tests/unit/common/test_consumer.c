/*
 * Tests for common/src/consumer.c: the consumer loop (commits, skips,
 * retries, held partitions, health, lag), against librdkafka's mock cluster
 * running in this process as a real broker (real sockets on 127.0.0.1).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>

#include <librdkafka/rdkafka.h>

#include "cm/consumer.h"
#include "cm/log.h"
#include "cm/metrics.h"
#include "cm/producer.h"
#include "cm/util.h"
#include "kafkamock.h"
#include "testenv.h"

/* The offsets the group committed on the three partitions of topic (asked as a non-member); a
 * partition without a commit reads as 0. */
static void committed_offsets(t_kafka_t *f, const char *group, const char *topic, int64_t out[3])
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(
        rd_kafka_conf_set(conf, "bootstrap.servers", f->bootstrap, errstr, sizeof errstr), 0);
    assert_int_equal(rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof errstr), 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    assert_non_null(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(3);
    for (int32_t i = 0; i < 3; i++)
        rd_kafka_topic_partition_list_add(l, topic, i);
    assert_int_equal(rd_kafka_committed(rk, l, 10000), 0);
    for (int i = 0; i < 3; i++)
        out[l->elems[i].partition] = l->elems[i].offset > 0 ? l->elems[i].offset : 0;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
}

/* Sums the offsets the group committed on the three partitions of topic. */
static int64_t committed_total(t_kafka_t *f, const char *group, const char *topic)
{
    int64_t off[3];
    committed_offsets(f, group, topic, off);
    return off[0] + off[1] + off[2];
}

/* ---- producing to one chosen partition (cm_producer_send lets the key choose) ---- */

static void count_failed_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR)
        (*(int *)opaque)++;
}

/* A plain producer whose opaque counts failed deliveries (into *failed). */
static rd_kafka_t *raw_producer(t_kafka_t *f, int *failed)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(
        rd_kafka_conf_set(conf, "bootstrap.servers", f->bootstrap, errstr, sizeof errstr), 0);
    rd_kafka_conf_set_dr_msg_cb(conf, count_failed_delivery);
    rd_kafka_conf_set_opaque(conf, failed);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_non_null(rk);
    return rk;
}

/* Produces value onto topic/partition and waits until the broker has it. */
static void produce_to(rd_kafka_t *rk, int *failed, const char *topic, int32_t partition,
                       const char *value)
{
    assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                       RD_KAFKA_V_VALUE((void *)(uintptr_t)value, strlen(value)),
                                       RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_flush(rk, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(*failed, 0);
}

static void consumer_commits_so_a_new_member_of_the_group_does_not_see_it_again(void **state)
{
    t_kafka_t *f = *state;
    cm_producer_t *p = cm_producer_new(f->bootstrap, "test", NULL);
    const char *first[] = {"one", "two", "three", NULL};
    t_send_all(p, "t.orders", "user-1", first);
    cm_metrics_t *m = cm_metrics_new();
    t_seen_t s;
    t_seen_init(&s);
    cm_consumer_t *c = t_start_consumer(f, "g.commit", "t.orders", &s, m);
    assert_int_equal(t_seen_wait(&s, 3, T_KAFKA_WAIT_MS), 3);
    assert_string_equal(s.values[0], "one");
    assert_string_equal(s.values[2], "three");
    assert_string_equal(s.keys[1], "user-1");
    int64_t until = cm_now_mono_ms() + T_KAFKA_WAIT_MS;
    while (!cm_consumer_healthy(c) && cm_now_mono_ms() < until)
        t_sleep_ms(50);
    assert_true(cm_consumer_healthy(c));
    /* The lag comes from librdkafka's statistics, every 2 s. */
    assert_true(
        t_wait_metric(m, "linktr_consumer_lag_messages{topic=\"t.orders\"} 0\n", T_KAFKA_WAIT_MS));
    assert_true(
        t_wait_metric(m, "linktr_consumer_messages_total{topic=\"t.orders\",result=\"ok\"} 3", 0));
    cm_consumer_stop(c);

    const char *later[] = {"four", NULL};
    t_send_all(p, "t.orders", "user-1", later);
    t_seen_t s2;
    t_seen_init(&s2);
    c = t_start_consumer(f, "g.commit", "t.orders", &s2, NULL);
    assert_int_equal(t_seen_wait(&s2, 1, T_KAFKA_WAIT_MS), 1);
    t_sleep_ms(500);
    cm_consumer_stop(c);
    assert_int_equal(s2.n, 1);
    assert_string_equal(s2.values[0], "four");
    t_seen_dispose(&s);
    t_seen_dispose(&s2);
    cm_metrics_free(m);
    cm_producer_free(p);
}

static void malformed_messages_are_skipped_once_and_committed_past(void **state)
{
    t_kafka_t *f = *state;
    cm_producer_t *p = cm_producer_new(f->bootstrap, "test", NULL);
    const char *values[] = {"bad-1", "good-1", "bad-2", "good-2", NULL};
    t_send_all(p, "t.orders", "user-2", values);
    t_seen_t s;
    t_seen_init(&s);
    cm_consumer_t *c = t_start_consumer(f, "g.parse", "t.orders", &s, NULL);
    assert_int_equal(t_seen_wait(&s, 2, T_KAFKA_WAIT_MS), 2);
    t_sleep_ms(300);
    cm_consumer_stop(c);
    assert_int_equal(s.calls, 4); /* each malformed message was tried once */
    assert_string_equal(s.values[0], "good-1");
    assert_string_equal(s.values[1], "good-2");
    /* The group's committed position is past all four, malformed ones included. */
    assert_int_equal(committed_total(f, "g.parse", "t.orders"), 4);
    t_seen_dispose(&s);
    cm_producer_free(p);
}

static void failing_handler_is_retried_until_it_succeeds_keeping_order(void **state)
{
    t_kafka_t *f = *state;
    cm_producer_t *p = cm_producer_new(f->bootstrap, "test", NULL);
    const char *values[] = {"m1", "m2", "m3", NULL};
    t_send_all(p, "t.orders", "user-3", values);
    t_seen_t s;
    t_seen_init(&s);
    s.fail_first = 3;
    int64_t t0 = cm_now_mono_ms();
    cm_consumer_t *c = t_start_consumer(f, "g.retry", "t.orders", &s, NULL);
    assert_int_equal(t_seen_wait(&s, 3, T_KAFKA_WAIT_MS), 3);
    int64_t took = cm_now_mono_ms() - t0;
    cm_consumer_stop(c);
    assert_int_equal(s.calls, 6); /* m1 four times, then m2 and m3 */
    assert_string_equal(s.values[0], "m1");
    assert_string_equal(s.values[1], "m2");
    assert_string_equal(s.values[2], "m3");
    assert_true(took >= 100 + 200 + 400); /* backed off between tries */
    t_seen_dispose(&s);
    cm_producer_free(p);
}

static void a_message_still_failing_at_stop_is_not_committed(void **state)
{
    t_kafka_t *f = *state;
    cm_producer_t *p = cm_producer_new(f->bootstrap, "test", NULL);
    const char *values[] = {"ok-1", "stuck", "ok-2", NULL};
    t_send_all(p, "t.orders", "user-4", values);
    t_seen_t s;
    t_seen_init(&s);
    s.always = "stuck";
    cm_consumer_t *c = t_start_consumer(f, "g.stuck", "t.orders", &s, NULL);
    assert_int_equal(t_seen_wait(&s, 1, T_KAFKA_WAIT_MS), 1);
    t_sleep_ms(500);
    int64_t t0 = cm_now_mono_ms();
    cm_consumer_stop(c);
    assert_true(cm_now_mono_ms() - t0 < 3000); /* a stop interrupts the backoff */
    assert_int_equal(s.n, 1);
    assert_true(s.calls >= 3); /* ok-1 once, "stuck" retried */
    /* Committed just past ok-1: the group's next member starts again at "stuck". */
    assert_int_equal(committed_total(f, "g.stuck", "t.orders"), 1);
    t_seen_dispose(&s);
    cm_producer_free(p);
}

static void failing_partition_is_held_back_while_other_partitions_keep_flowing(void **state)
{
    t_kafka_t *f = *state;
    int failed = 0;
    rd_kafka_t *prod = raw_producer(f, &failed);
    produce_to(prod, &failed, "t.orders", 0, "stuck");
    produce_to(prod, &failed, "t.orders", 0, "p0-after");
    produce_to(prod, &failed, "t.orders", 1, "p1-a");
    cm_metrics_t *m = cm_metrics_new();
    t_seen_t s;
    t_seen_init(&s);
    s.always = "stuck"; /* fails until released below */
    cm_consumer_t *c = t_start_consumer(f, "g.hold", "t.orders", &s, m);
    assert_true(t_seen_wait_value(&s, "p1-a", T_KAFKA_WAIT_MS));
    /* While "stuck" keeps failing, what arrives on partition 1 is handled at once. */
    const char *later[] = {"p1-b", "p1-c", "p1-d"};
    for (size_t i = 0; i < 3; i++) {
        produce_to(prod, &failed, "t.orders", 1, later[i]);
        int64_t t0 = cm_now_mono_ms();
        assert_true(t_seen_wait_value(&s, later[i], T_KAFKA_WAIT_MS));
        assert_true(cm_now_mono_ms() - t0 < 2000);
        t_sleep_ms(700);
    }
    int tries = t_seen_calls(&s) - 4; /* every call but the four partition-1 messages */
    assert_true(tries >= 3);          /* "stuck" was retried, with backoff (100, 200, 400 ms ...) */
    assert_true(tries <= 12);         /* ... not in a busy loop */
    assert_int_equal(t_seen_count(&s, "p0-after"), 0); /* nothing past it: order is kept */
    assert_true(cm_consumer_healthy(c));
    /* The two messages held back on partition 0 (never committed there) are the lag. */
    assert_true(
        t_wait_metric(m, "linktr_consumer_lag_messages{topic=\"t.orders\"} 2\n", T_KAFKA_WAIT_MS));
    pthread_mutex_lock(&s.mu);
    s.always = NULL; /* the database is back */
    pthread_mutex_unlock(&s.mu);
    assert_true(t_seen_wait_value(&s, "p0-after", T_KAFKA_WAIT_MS));
    assert_true(
        t_wait_metric(m, "linktr_consumer_lag_messages{topic=\"t.orders\"} 0\n", T_KAFKA_WAIT_MS));
    cm_consumer_stop(c);
    assert_int_equal(t_seen_count(&s, "stuck"), 1);
    assert_int_equal(t_seen_count(&s, "p0-after"), 1);
    assert_true(t_seen_index(&s, "stuck") < t_seen_index(&s, "p0-after"));
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(t_seen_count(&s, later[i]), 1);
    int64_t off[3];
    committed_offsets(f, "g.hold", "t.orders", off);
    assert_int_equal(off[0], 2);
    assert_int_equal(off[1], 4);
    assert_int_equal(off[2], 0);
    assert_true(t_wait_metric(
        m, "linktr_consumer_messages_total{topic=\"t.orders\",result=\"ok\"} 6\n", 0));
    assert_true(
        t_wait_metric(m, "linktr_consumer_messages_total{topic=\"t.orders\",result=\"retry\"}", 0));

    /* A new member of the group starts after them: nothing is handled twice. */
    produce_to(prod, &failed, "t.orders", 0, "p0-final");
    t_seen_t s2;
    t_seen_init(&s2);
    c = t_start_consumer(f, "g.hold", "t.orders", &s2, NULL);
    assert_true(t_seen_wait_value(&s2, "p0-final", T_KAFKA_WAIT_MS));
    t_sleep_ms(500);
    cm_consumer_stop(c);
    assert_int_equal(s2.n, 1);
    t_seen_dispose(&s);
    t_seen_dispose(&s2);
    cm_metrics_free(m);
    rd_kafka_destroy(prod);
}

static void consumer_is_not_healthy_without_a_broker(void **state)
{
    (void)state;
    char *bootstrap = t_closed_port_bootstrap();
    t_kafka_t dead = {NULL, NULL, bootstrap};
    t_seen_t s;
    t_seen_init(&s);
    cm_consumer_t *c = t_start_consumer(&dead, "g.dead", "t.orders", &s, NULL);
    t_sleep_ms(2500);
    assert_false(cm_consumer_healthy(c));
    cm_consumer_stop(c);
    t_seen_dispose(&s);
    free(bootstrap);
}

static void consumer_start_refuses_a_bad_config(void **state)
{
    t_kafka_t *f = *state;
    t_seen_t s;
    t_seen_init(&s);
    const char *regex[] = {"^t.*", NULL};
    const char *none[] = {NULL};
    const char *ok[] = {"t.orders", NULL};
    cm_consumer_config_t bad[] = {
        {f->bootstrap, "g", regex, t_seen_record, &s, NULL, 0},
        {f->bootstrap, "g", none, t_seen_record, &s, NULL, 0},
        {f->bootstrap, "", ok, t_seen_record, &s, NULL, 0},
        {f->bootstrap, "g", ok, NULL, &s, NULL, 0},
        {NULL, "g", ok, t_seen_record, &s, NULL, 0},
        {f->bootstrap, "g", ok, t_seen_record, &s, NULL, -1},
        {f->bootstrap, "g", ok, t_seen_record, &s, NULL, 300001},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int err = 0;
        assert_null(cm_consumer_start(&bad[i], &err));
        assert_int_equal(err, CM_EINVAL);
    }
    assert_null(cm_consumer_start(NULL, NULL));
    t_seen_dispose(&s);
}

int main(void)
{
    cm_log_init("test_consumer", CM_LOG_ERROR);
    /* Development aid: run only the tests whose name matches this glob. */
    if (getenv("LINKTR_TEST_FILTER"))
        cmocka_set_test_filter(getenv("LINKTR_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            consumer_commits_so_a_new_member_of_the_group_does_not_see_it_again, t_kafka_setup,
            t_kafka_teardown),
        cmocka_unit_test_setup_teardown(malformed_messages_are_skipped_once_and_committed_past,
                                        t_kafka_setup, t_kafka_teardown),
        cmocka_unit_test_setup_teardown(failing_handler_is_retried_until_it_succeeds_keeping_order,
                                        t_kafka_setup, t_kafka_teardown),
        cmocka_unit_test_setup_teardown(a_message_still_failing_at_stop_is_not_committed,
                                        t_kafka_setup, t_kafka_teardown),
        cmocka_unit_test_setup_teardown(
            failing_partition_is_held_back_while_other_partitions_keep_flowing, t_kafka_setup,
            t_kafka_teardown),
        cmocka_unit_test(consumer_is_not_healthy_without_a_broker),
        cmocka_unit_test_setup_teardown(consumer_start_refuses_a_bad_config, t_kafka_setup,
                                        t_kafka_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
