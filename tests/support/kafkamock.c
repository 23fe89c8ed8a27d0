/* kafkamock.c — librdkafka's mock cluster and a recording consumer for tests (see kafkamock.h). */
#include "kafkamock.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm/events.h"
#include "cm/util.h"
#include "testenv.h"

/* ---- fixture: one mock cluster per test --------------------------------------- */

int t_kafka_setup(void **state)
{
    t_kafka_t *f = cm_xcalloc(1, sizeof *f);
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof errstr);
    f->helper = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_non_null(f->helper);
    f->mock = rd_kafka_mock_cluster_new(f->helper, 1);
    assert_non_null(f->mock);
    f->bootstrap = rd_kafka_mock_cluster_bootstraps(f->mock);
    const char *topics[] = {"t.orders", CM_EV_USER_VERIFIED, CM_EV_USER_REGISTERED};
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(rd_kafka_mock_topic_create(f->mock, topics[i], 3, 1), 0);
    *state = f;
    return 0;
}

int t_kafka_teardown(void **state)
{
    t_kafka_t *f = *state;
    rd_kafka_mock_cluster_destroy(f->mock);
    rd_kafka_destroy(f->helper);
    free(f);
    return 0;
}

char *t_closed_port_bootstrap(void)
{
    return cm_xasprintf("127.0.0.1:%d", t_free_port());
}

/* ---- a recording consumer callback ------------------------------------------- */

void t_seen_init(t_seen_t *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
}

void t_seen_dispose(t_seen_t *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->values[i]);
        free(s->keys[i]);
    }
    pthread_mutex_destroy(&s->mu);
}

int t_seen_record(const cm_kmsg_t *m, void *ctx)
{
    t_seen_t *s = ctx;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    s->calls++;
    if (m->len >= 3 && memcmp(m->value, "bad", 3) == 0)
        rc = CM_EPARSE;
    else if (s->fail_first > 0 && s->fail_first-- > 0)
        rc = CM_EUNAVAIL;
    else if (s->always && m->len == strlen(s->always) && memcmp(m->value, s->always, m->len) == 0)
        rc = CM_EUNAVAIL;
    else if (s->n < T_MAX_SEEN) {
        s->values[s->n] = cm_xstrndup(m->value, m->len);
        s->keys[s->n] = cm_xstrndup(m->key ? m->key : "", m->key ? m->key_len : 0);
        s->n++;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int t_seen_wait(t_seen_t *s, int n, int timeout_ms)
{
    int64_t until = cm_now_mono_ms() + timeout_ms;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int have = s->n;
        pthread_mutex_unlock(&s->mu);
        if (have >= n || cm_now_mono_ms() > until)
            return have;
        t_sleep_ms(20);
    }
}

cm_consumer_t *t_start_consumer(t_kafka_t *f, const char *group, const char *topic, t_seen_t *s,
                                cm_metrics_t *m)
{
    const char *topics[] = {topic, NULL};
    /* The mock broker holds every fetch for fetch.wait.max.ms (cm/consumer.h). */
    cm_consumer_config_t cfg = {f->bootstrap, group, topics, t_seen_record, s, m, 25};
    int err = 0;
    cm_consumer_t *c = cm_consumer_start(&cfg, &err);
    assert_int_equal(err, 0);
    assert_non_null(c);
    return c;
}

void t_send_all(cm_producer_t *p, const char *topic, const char *key, const char *const *values)
{
    for (size_t i = 0; values[i]; i++)
        assert_int_equal(cm_producer_send(p, topic, key, values[i], strlen(values[i]), 10000), 0);
}

int t_seen_count(t_seen_t *s, const char *v)
{
    pthread_mutex_lock(&s->mu);
    int n = 0;
    for (int i = 0; i < s->n; i++)
        n += strcmp(s->values[i], v) == 0;
    pthread_mutex_unlock(&s->mu);
    return n;
}

int t_seen_index(t_seen_t *s, const char *v)
{
    pthread_mutex_lock(&s->mu);
    int at = -1;
    for (int i = 0; i < s->n && at < 0; i++)
        if (strcmp(s->values[i], v) == 0)
            at = i;
    pthread_mutex_unlock(&s->mu);
    return at;
}

bool t_seen_wait_value(t_seen_t *s, const char *v, int timeout_ms)
{
    int64_t until = cm_now_mono_ms() + timeout_ms;
    while (t_seen_count(s, v) == 0 && cm_now_mono_ms() < until)
        t_sleep_ms(20);
    return t_seen_count(s, v) > 0;
}

bool t_wait_metric(cm_metrics_t *m, const char *needle, int timeout_ms)
{
    int64_t until = cm_now_mono_ms() + timeout_ms;
    for (;;) {
        cm_buf_t text;
        cm_buf_init(&text);
        cm_metrics_render(m, &text);
        bool found = strstr(text.data, needle) != NULL;
        cm_buf_dispose(&text);
        if (found || cm_now_mono_ms() >= until)
            return found;
        t_sleep_ms(100);
    }
}

int t_seen_calls(t_seen_t *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->calls;
    pthread_mutex_unlock(&s->mu);
    return n;
}
