/*
 * Tests for common/src/producer.c: the idempotent producer, against
 * librdkafka's mock cluster running in this process as a real broker (real
 * sockets on 127.0.0.1).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>

#include "cm/consumer.h"
#include "cm/log.h"
#include "cm/producer.h"
#include "cm/util.h"
#include "kafkamock.h"
#include "testenv.h"

static void producer_send_is_acknowledged_and_ping_answers(void **state)
{
    t_kafka_t *f = *state;
    int err = -1;
    cm_producer_t *p = cm_producer_new(f->bootstrap, "test", &err);
    assert_non_null(p);
    assert_int_equal(err, 0);
    assert_true(cm_producer_ping(p, 5000));
    assert_int_equal(cm_producer_send(p, "t.orders", "k", "v", 1, 10000), 0);
    assert_int_equal(cm_producer_send(p, "t.orders", NULL, "", 0, 10000), 0);
    assert_int_equal(cm_producer_send(p, "^t.*", "k", "v", 1, 1000), CM_EINVAL);
    cm_producer_free(p);
}

static void producer_against_a_closed_port_times_out_and_does_not_ping(void **state)
{
    (void)state;
    char *bootstrap = t_closed_port_bootstrap();
    int err = -1;
    cm_producer_t *p = cm_producer_new(bootstrap, "test", &err);
    assert_non_null(p); /* a broker that is down is not a configuration error */
    assert_false(cm_producer_ping(p, 300));
    int64_t t0 = cm_now_mono_ms();
    assert_int_equal(cm_producer_send(p, "t.orders", "k", "v", 1, 500), CM_ETIMEDOUT);
    assert_true(cm_now_mono_ms() - t0 < 2000);
    cm_producer_free(p);
    free(bootstrap);
}

static void producer_new_refuses_a_bad_config(void **state)
{
    (void)state;
    int err = 0;
    assert_null(cm_producer_new(NULL, "x", &err));
    assert_int_equal(err, CM_EINVAL);
    assert_null(cm_producer_new("", "x", &err));
    assert_int_equal(err, CM_EINVAL);
}

typedef struct sender_arg {
    cm_producer_t *p;
    int id;
    int failures;
} sender_arg_t;

static void *send_25(void *arg)
{
    sender_arg_t *a = arg;
    for (int i = 0; i < 25; i++) {
        char value[32];
        snprintf(value, sizeof value, "%d-%d", a->id, i);
        if (cm_producer_send(a->p, "t.orders", value, value, strlen(value), 10000) != 0)
            a->failures++;
    }
    return NULL;
}

static void several_threads_can_send_at_once_and_every_message_arrives(void **state)
{
    t_kafka_t *f = *state;
    cm_producer_t *p = cm_producer_new(f->bootstrap, "test", NULL);
    pthread_t th[4];
    sender_arg_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (sender_arg_t){p, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, send_25, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    t_seen_t s;
    t_seen_init(&s);
    cm_consumer_t *c = t_start_consumer(f, "g.many", "t.orders", &s, NULL);
    assert_int_equal(t_seen_wait(&s, 100, T_KAFKA_WAIT_MS), 100);
    t_sleep_ms(300);
    cm_consumer_stop(c);
    assert_int_equal(s.n, 100);
    t_seen_dispose(&s);
    cm_producer_free(p);
}

int main(void)
{
    cm_log_init("test_producer", CM_LOG_ERROR);
    /* Development aid: run only the tests whose name matches this glob. */
    if (getenv("LINKTR_TEST_FILTER"))
        cmocka_set_test_filter(getenv("LINKTR_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(producer_send_is_acknowledged_and_ping_answers,
                                        t_kafka_setup, t_kafka_teardown),
        cmocka_unit_test(producer_against_a_closed_port_times_out_and_does_not_ping),
        cmocka_unit_test(producer_new_refuses_a_bad_config),
        cmocka_unit_test_setup_teardown(several_threads_can_send_at_once_and_every_message_arrives,
                                        t_kafka_setup, t_kafka_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
