/*
 * Tests for common/src/kafka.c: what the producer, the outbox relay and the
 * consumer share at the librdkafka boundary (kafka_int.h). The modules
 * themselves are tested in test_producer.c, test_outbox.c, test_consumer.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../../common/src/kafka_int.h"
#include "cm/log.h"

static void librdkafka_timeouts_become_etimedout_and_other_errors_ekafka(void **state)
{
    (void)state;
    assert_int_equal(cm__kafka_err(RD_KAFKA_RESP_ERR_NO_ERROR), 0);
    assert_int_equal(cm__kafka_err(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT), CM_ETIMEDOUT);
    assert_int_equal(cm__kafka_err(RD_KAFKA_RESP_ERR__TIMED_OUT), CM_ETIMEDOUT);
    assert_int_equal(cm__kafka_err(RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT), CM_ETIMEDOUT);
    assert_int_equal(cm__kafka_err(RD_KAFKA_RESP_ERR__TRANSPORT), CM_EKAFKA);
    assert_int_equal(cm__kafka_err(RD_KAFKA_RESP_ERR__FATAL), CM_EKAFKA);
    assert_int_equal(cm__kafka_err(RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART), CM_EKAFKA);
}

static void topic_names_are_plain_names_of_1_to_249_bytes(void **state)
{
    (void)state;
    char longest[251];
    memset(longest, 'a', 249);
    longest[249] = '\0';
    assert_true(cm__kafka_valid_topic("user.registered"));
    assert_true(cm__kafka_valid_topic("A-z_0.9"));
    assert_true(cm__kafka_valid_topic(longest));
    longest[249] = 'a';
    longest[250] = '\0';
    assert_false(cm__kafka_valid_topic(longest));
    assert_false(cm__kafka_valid_topic(NULL));
    assert_false(cm__kafka_valid_topic(""));
    assert_false(cm__kafka_valid_topic("^user.*"));
    assert_false(cm__kafka_valid_topic("user registered"));
    assert_false(cm__kafka_valid_topic("user/registered"));
    assert_false(cm__kafka_valid_topic("caf\xc3\xa9"));
}

static void conf_set_all_sets_every_pair_and_refuses_an_unknown_key(void **state)
{
    (void)state;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *const good[][2] = {{"client.id", "t"}, {"linger.ms", "7"}, {NULL, NULL}};
    assert_int_equal(cm__kafka_conf_set_all(conf, good), 0);
    char v[16];
    size_t len = sizeof v;
    assert_int_equal(rd_kafka_conf_get(conf, "linger.ms", v, &len), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "7");
    const char *const bad[][2] = {{"client.id", "t"}, {"no.such.key", "1"}, {NULL, NULL}};
    assert_int_equal(cm__kafka_conf_set_all(conf, bad), CM_EINVAL);
    const char *const bad_value[][2] = {{"linger.ms", "soon"}, {NULL, NULL}};
    assert_int_equal(cm__kafka_conf_set_all(conf, bad_value), CM_EINVAL);
    rd_kafka_conf_destroy(conf);
}

int main(void)
{
    cm_log_init("test_kafka", CM_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(librdkafka_timeouts_become_etimedout_and_other_errors_ekafka),
        cmocka_unit_test(topic_names_are_plain_names_of_1_to_249_bytes),
        cmocka_unit_test(conf_set_all_sets_every_pair_and_refuses_an_unknown_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
