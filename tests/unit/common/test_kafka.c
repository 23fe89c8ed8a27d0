/*
 * Tests for common/src/kafka.c: producer, consumer and the outbox relay,
 * against librdkafka's mock cluster running in this process as a real
 * broker (real sockets on 127.0.0.1) and a real PostgreSQL.
 *
 * LINKTR_TEST_NEEDS: postgres
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "cm/db.h"
#include "cm/events.h"
#include "cm/kafka.h"
#include "cm/log.h"
#include "cm/metrics.h"
#include "cm/util.h"
#include "schema.h"
#include "testenv.h"

#define MAX_SEEN 256

/* ---- fixture: one mock cluster per test --------------------------------------- */

typedef struct fixture {
    rd_kafka_t *helper; /* owns the mock cluster */
    rd_kafka_mock_cluster_t *mock;
    const char *bootstrap;
} fixture_t;

static int setup_mock(void **state)
{
    fixture_t *f = cm_xcalloc(1, sizeof *f);
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

static int teardown_mock(void **state)
{
    fixture_t *f = *state;
    rd_kafka_mock_cluster_destroy(f->mock);
    rd_kafka_destroy(f->helper);
    free(f);
    return 0;
}

/* A loopback port nothing listens on: bound, then closed. */
static char *closed_port_bootstrap(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
    close(s);
    return cm_xasprintf("127.0.0.1:%d", ntohs(a.sin_port));
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- a recording consumer callback ------------------------------------------- */

typedef struct seen {
    pthread_mutex_t mu;
    int n;
    char *values[MAX_SEEN];
    char *keys[MAX_SEEN];
    int calls;
    int fail_first;     /* fail this many calls with CM_EUNAVAIL */
    const char *always; /* a value that always fails with CM_EUNAVAIL */
} seen_t;

static void seen_init(seen_t *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
}

static void seen_dispose(seen_t *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->values[i]);
        free(s->keys[i]);
    }
    pthread_mutex_destroy(&s->mu);
}

/* Values starting with "bad" are permanently malformed. */
static int record(const cm_kmsg_t *m, void *ctx)
{
    seen_t *s = ctx;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    s->calls++;
    if (m->len >= 3 && memcmp(m->value, "bad", 3) == 0)
        rc = CM_EPARSE;
    else if (s->fail_first > 0 && s->fail_first-- > 0)
        rc = CM_EUNAVAIL;
    else if (s->always && m->len == strlen(s->always) && memcmp(m->value, s->always, m->len) == 0)
        rc = CM_EUNAVAIL;
    else if (s->n < MAX_SEEN) {
        s->values[s->n] = cm_xstrndup(m->value, m->len);
        s->keys[s->n] = cm_xstrndup(m->key ? m->key : "", m->key ? m->key_len : 0);
        s->n++;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* Waits until at least n values were recorded; returns how many there are. */
static int wait_seen(seen_t *s, int n, int timeout_ms)
{
    int64_t until = cm_now_mono_ms() + timeout_ms;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int have = s->n;
        pthread_mutex_unlock(&s->mu);
        if (have >= n || cm_now_mono_ms() > until)
            return have;
        sleep_ms(20);
    }
}

static cm_consumer_t *start_consumer(fixture_t *f, const char *group, const char *topic, seen_t *s,
                                     cm_metrics_t *m)
{
    const char *topics[] = {topic, NULL};
    cm_consumer_config_t cfg = {f->bootstrap, group, topics, record, s, m};
    int err = 0;
    cm_consumer_t *c = cm_consumer_start(&cfg, &err);
    assert_int_equal(err, 0);
    assert_non_null(c);
    return c;
}

static void send_all(cm_producer_t *p, const char *topic, const char *key,
                     const char *const *values)
{
    for (size_t i = 0; values[i]; i++)
        assert_int_equal(cm_producer_send(p, topic, key, values[i], strlen(values[i]), 10000), 0);
}

/* The offsets the group committed on the three partitions of topic (asked as a non-member); a
 * partition without a commit reads as 0. */
static void committed_offsets(fixture_t *f, const char *group, const char *topic, int64_t out[3])
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
static int64_t committed_total(fixture_t *f, const char *group, const char *topic)
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
static rd_kafka_t *raw_producer(fixture_t *f, int *failed)
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

/* ---- producer ---------------------------------------------------------------- */

static void producer_send_is_acknowledged_and_ping_answers(void **state)
{
    fixture_t *f = *state;
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
    char *bootstrap = closed_port_bootstrap();
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
    fixture_t *f = *state;
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
    seen_t s;
    seen_init(&s);
    cm_consumer_t *c = start_consumer(f, "g.many", "t.orders", &s, NULL);
    assert_int_equal(wait_seen(&s, 100, 20000), 100);
    sleep_ms(300);
    cm_consumer_stop(c);
    assert_int_equal(s.n, 100);
    seen_dispose(&s);
    cm_producer_free(p);
}

/* ---- consumer ----------------------------------------------------------------- */

static void consumer_commits_so_a_new_member_of_the_group_does_not_see_it_again(void **state)
{
    fixture_t *f = *state;
    cm_producer_t *p = cm_producer_new(f->bootstrap, "test", NULL);
    const char *first[] = {"one", "two", "three", NULL};
    send_all(p, "t.orders", "user-1", first);
    cm_metrics_t *m = cm_metrics_new();
    seen_t s;
    seen_init(&s);
    cm_consumer_t *c = start_consumer(f, "g.commit", "t.orders", &s, m);
    assert_int_equal(wait_seen(&s, 3, 20000), 3);
    assert_string_equal(s.values[0], "one");
    assert_string_equal(s.values[2], "three");
    assert_string_equal(s.keys[1], "user-1");
    int64_t until = cm_now_mono_ms() + 10000;
    while (!cm_consumer_healthy(c) && cm_now_mono_ms() < until)
        sleep_ms(50);
    assert_true(cm_consumer_healthy(c));
    cm_buf_t text;
    cm_buf_init(&text);
    /* The lag comes from librdkafka's statistics, every 2 s. */
    until = cm_now_mono_ms() + 10000;
    do {
        cm_buf_dispose(&text);
        cm_metrics_render(m, &text);
        if (strstr(text.data, "linktr_consumer_lag{topic=\"t.orders\"} 0\n"))
            break;
        sleep_ms(100);
    } while (cm_now_mono_ms() < until);
    assert_non_null(strstr(text.data, "linktr_consumer_lag{topic=\"t.orders\"} 0\n"));
    cm_consumer_stop(c);
    assert_non_null(
        strstr(text.data, "linktr_consumer_messages_total{topic=\"t.orders\",result=\"ok\"} 3"));
    cm_buf_dispose(&text);

    const char *later[] = {"four", NULL};
    send_all(p, "t.orders", "user-1", later);
    seen_t s2;
    seen_init(&s2);
    c = start_consumer(f, "g.commit", "t.orders", &s2, NULL);
    assert_int_equal(wait_seen(&s2, 1, 20000), 1);
    sleep_ms(500);
    cm_consumer_stop(c);
    assert_int_equal(s2.n, 1);
    assert_string_equal(s2.values[0], "four");
    seen_dispose(&s);
    seen_dispose(&s2);
    cm_metrics_free(m);
    cm_producer_free(p);
}

static void malformed_messages_are_skipped_once_and_committed_past(void **state)
{
    fixture_t *f = *state;
    cm_producer_t *p = cm_producer_new(f->bootstrap, "test", NULL);
    const char *values[] = {"bad-1", "good-1", "bad-2", "good-2", NULL};
    send_all(p, "t.orders", "user-2", values);
    seen_t s;
    seen_init(&s);
    cm_consumer_t *c = start_consumer(f, "g.parse", "t.orders", &s, NULL);
    assert_int_equal(wait_seen(&s, 2, 20000), 2);
    sleep_ms(300);
    cm_consumer_stop(c);
    assert_int_equal(s.calls, 4); /* each malformed message was tried once */
    assert_string_equal(s.values[0], "good-1");
    assert_string_equal(s.values[1], "good-2");
    /* The group's committed position is past all four, malformed ones included. */
    assert_int_equal(committed_total(f, "g.parse", "t.orders"), 4);
    seen_dispose(&s);
    cm_producer_free(p);
}

static void failing_handler_is_retried_until_it_succeeds_keeping_order(void **state)
{
    fixture_t *f = *state;
    cm_producer_t *p = cm_producer_new(f->bootstrap, "test", NULL);
    const char *values[] = {"m1", "m2", "m3", NULL};
    send_all(p, "t.orders", "user-3", values);
    seen_t s;
    seen_init(&s);
    s.fail_first = 3;
    int64_t t0 = cm_now_mono_ms();
    cm_consumer_t *c = start_consumer(f, "g.retry", "t.orders", &s, NULL);
    assert_int_equal(wait_seen(&s, 3, 20000), 3);
    int64_t took = cm_now_mono_ms() - t0;
    cm_consumer_stop(c);
    assert_int_equal(s.calls, 6); /* m1 four times, then m2 and m3 */
    assert_string_equal(s.values[0], "m1");
    assert_string_equal(s.values[1], "m2");
    assert_string_equal(s.values[2], "m3");
    assert_true(took >= 100 + 200 + 400); /* backed off between tries */
    seen_dispose(&s);
    cm_producer_free(p);
}

static void a_message_still_failing_at_stop_is_not_committed(void **state)
{
    fixture_t *f = *state;
    cm_producer_t *p = cm_producer_new(f->bootstrap, "test", NULL);
    const char *values[] = {"ok-1", "stuck", "ok-2", NULL};
    send_all(p, "t.orders", "user-4", values);
    seen_t s;
    seen_init(&s);
    s.always = "stuck";
    cm_consumer_t *c = start_consumer(f, "g.stuck", "t.orders", &s, NULL);
    assert_int_equal(wait_seen(&s, 1, 20000), 1);
    sleep_ms(500);
    int64_t t0 = cm_now_mono_ms();
    cm_consumer_stop(c);
    assert_true(cm_now_mono_ms() - t0 < 3000); /* a stop interrupts the backoff */
    assert_int_equal(s.n, 1);
    assert_true(s.calls >= 3); /* ok-1 once, "stuck" retried */
    /* Committed just past ok-1: the group's next member starts again at "stuck". */
    assert_int_equal(committed_total(f, "g.stuck", "t.orders"), 1);
    seen_dispose(&s);
    cm_producer_free(p);
}

/* How many recorded values equal v. */
static int seen_count(seen_t *s, const char *v)
{
    pthread_mutex_lock(&s->mu);
    int n = 0;
    for (int i = 0; i < s->n; i++)
        n += strcmp(s->values[i], v) == 0;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* The index of the first recorded value equal to v, or -1. */
static int seen_index(seen_t *s, const char *v)
{
    pthread_mutex_lock(&s->mu);
    int at = -1;
    for (int i = 0; i < s->n && at < 0; i++)
        if (strcmp(s->values[i], v) == 0)
            at = i;
    pthread_mutex_unlock(&s->mu);
    return at;
}

/* Waits until v was recorded at least once; returns whether it was. */
static bool wait_value(seen_t *s, const char *v, int timeout_ms)
{
    int64_t until = cm_now_mono_ms() + timeout_ms;
    while (seen_count(s, v) == 0 && cm_now_mono_ms() < until)
        sleep_ms(20);
    return seen_count(s, v) > 0;
}

/* Waits until the rendered metrics contain needle (the consumer's come from librdkafka's
 * statistics, every 2 s); returns whether they did. */
static bool wait_metric(cm_metrics_t *m, const char *needle, int timeout_ms)
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
        sleep_ms(100);
    }
}

static int calls_of(seen_t *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->calls;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void failing_partition_is_held_back_while_other_partitions_keep_flowing(void **state)
{
    fixture_t *f = *state;
    int failed = 0;
    rd_kafka_t *prod = raw_producer(f, &failed);
    produce_to(prod, &failed, "t.orders", 0, "stuck");
    produce_to(prod, &failed, "t.orders", 0, "p0-after");
    produce_to(prod, &failed, "t.orders", 1, "p1-a");
    cm_metrics_t *m = cm_metrics_new();
    seen_t s;
    seen_init(&s);
    s.always = "stuck"; /* fails until released below */
    cm_consumer_t *c = start_consumer(f, "g.hold", "t.orders", &s, m);
    assert_true(wait_value(&s, "p1-a", 20000));
    /* While "stuck" keeps failing, what arrives on partition 1 is handled at once. */
    const char *later[] = {"p1-b", "p1-c", "p1-d"};
    for (size_t i = 0; i < 3; i++) {
        produce_to(prod, &failed, "t.orders", 1, later[i]);
        int64_t t0 = cm_now_mono_ms();
        assert_true(wait_value(&s, later[i], 5000));
        assert_true(cm_now_mono_ms() - t0 < 2000);
        sleep_ms(700);
    }
    int tries = calls_of(&s) - 4; /* every call but the four partition-1 messages */
    assert_true(tries >= 3);      /* "stuck" was retried, with backoff (100, 200, 400 ms ...) */
    assert_true(tries <= 12);     /* ... not in a busy loop */
    assert_int_equal(seen_count(&s, "p0-after"), 0); /* nothing past it: order is kept */
    assert_true(cm_consumer_healthy(c));
    /* The two messages held back on partition 0 (never committed there) are the lag. */
    assert_true(wait_metric(m, "linktr_consumer_lag{topic=\"t.orders\"} 2\n", 8000));
    pthread_mutex_lock(&s.mu);
    s.always = NULL; /* the database is back */
    pthread_mutex_unlock(&s.mu);
    assert_true(wait_value(&s, "p0-after", 15000));
    assert_true(wait_metric(m, "linktr_consumer_lag{topic=\"t.orders\"} 0\n", 8000));
    cm_consumer_stop(c);
    assert_int_equal(seen_count(&s, "stuck"), 1);
    assert_int_equal(seen_count(&s, "p0-after"), 1);
    assert_true(seen_index(&s, "stuck") < seen_index(&s, "p0-after"));
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(seen_count(&s, later[i]), 1);
    int64_t off[3];
    committed_offsets(f, "g.hold", "t.orders", off);
    assert_int_equal(off[0], 2);
    assert_int_equal(off[1], 4);
    assert_int_equal(off[2], 0);
    assert_true(
        wait_metric(m, "linktr_consumer_messages_total{topic=\"t.orders\",result=\"ok\"} 6\n", 0));
    assert_true(
        wait_metric(m, "linktr_consumer_messages_total{topic=\"t.orders\",result=\"retry\"}", 0));

    /* A new member of the group starts after them: nothing is handled twice. */
    produce_to(prod, &failed, "t.orders", 0, "p0-final");
    seen_t s2;
    seen_init(&s2);
    c = start_consumer(f, "g.hold", "t.orders", &s2, NULL);
    assert_true(wait_value(&s2, "p0-final", 20000));
    sleep_ms(500);
    cm_consumer_stop(c);
    assert_int_equal(s2.n, 1);
    seen_dispose(&s);
    seen_dispose(&s2);
    cm_metrics_free(m);
    rd_kafka_destroy(prod);
}

static void consumer_is_not_healthy_without_a_broker(void **state)
{
    (void)state;
    char *bootstrap = closed_port_bootstrap();
    fixture_t dead = {NULL, NULL, bootstrap};
    seen_t s;
    seen_init(&s);
    cm_consumer_t *c = start_consumer(&dead, "g.dead", "t.orders", &s, NULL);
    sleep_ms(2500);
    assert_false(cm_consumer_healthy(c));
    cm_consumer_stop(c);
    seen_dispose(&s);
    free(bootstrap);
}

static void consumer_start_refuses_a_bad_config(void **state)
{
    fixture_t *f = *state;
    seen_t s;
    seen_init(&s);
    const char *regex[] = {"^t.*", NULL};
    const char *none[] = {NULL};
    const char *ok[] = {"t.orders", NULL};
    cm_consumer_config_t bad[] = {
        {f->bootstrap, "g", regex, record, &s, NULL},
        {f->bootstrap, "g", none, record, &s, NULL},
        {f->bootstrap, "", ok, record, &s, NULL},
        {f->bootstrap, "g", ok, NULL, &s, NULL},
        {NULL, "g", ok, record, &s, NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int err = 0;
        assert_null(cm_consumer_start(&bad[i], &err));
        assert_int_equal(err, CM_EINVAL);
    }
    assert_null(cm_consumer_start(NULL, NULL));
    seen_dispose(&s);
}

/* ---- outbox relay (PostgreSQL) ------------------------------------------------- */

typedef struct pgfix {
    fixture_t *kafka;
    char *schema;
    char *admin;    /* ADMIN_DATABASE_URL */
    char *conninfo; /* admin URL with search_path = schema */
    cm_db_pool_t *pool;
    cm_outbox_relay_t *relay; /* the running relay, stopped by teardown if a test failed */
} pgfix_t;

/* Runs sql as the superuser; returns the first value of the result (or NULL), which the caller
 * free()s. */
/* Runs sql with at most one text parameter as the superuser; the first value or NULL. */
static char *admin_query1(const char *url, const char *sql, const char *param)
{
    PGconn *c = PQconnectdb(url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    const char *params[1] = {param};
    /* Without a parameter: PQexec, so set-up DDL may hold several statements. */
    PGresult *r = param ? PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0) : PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    char *v = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? cm_xstrdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    PQfinish(c);
    return v;
}

static char *admin_query(const char *url, const char *sql)
{
    return admin_query1(url, sql, NULL);
}

static void admin_exec(const char *url, const char *sql)
{
    free(admin_query(url, sql));
}

static int setup_pg(void **state)
{
    setup_mock(state);
    pgfix_t *g = cm_xcalloc(1, sizeof *g);
    g->kafka = *state;
    static int n;
    g->schema = cm_xasprintf("kt_%s_%d", t_unique(), ++n);
    g->admin = t_env("LINKTR_PG_ENV_FILE", "ADMIN_DATABASE_URL");
    g->conninfo = cm_xasprintf("%s%soptions=-csearch_path%%3D%s&application_name=%s", g->admin,
                               strchr(g->admin, '?') ? "&" : "?", g->schema, g->schema);
    /* Test set-up only: the schema name is made here, never from input. */
    char *sql = cm_xasprintf(
        "CREATE SCHEMA %s; CREATE TABLE %s.outbox (id bigserial primary key, event_id uuid not "
        "null unique, topic text not null, key text not null, payload text not null, created_at "
        "timestamptz not null default now(), sent_at timestamptz)",
        g->schema, g->schema);
    admin_exec(g->admin, sql);
    free(sql);
    cm_db_config_t cfg = {g->conninfo, 4, 5000, 5, 0};
    int err = 0;
    g->pool = cm_db_pool_new(&cfg, &err);
    assert_non_null(g->pool);
    *state = g;
    return 0;
}

static int teardown_pg(void **state)
{
    pgfix_t *g = *state;
    cm_outbox_relay_stop(g->relay);
    cm_db_pool_free(g->pool);
    char *sql = cm_xasprintf("DROP SCHEMA %s CASCADE", g->schema);
    admin_exec(g->admin, sql);
    free(sql);
    void *k = g->kafka;
    teardown_mock(&k);
    free(g->schema);
    free(g->admin);
    free(g->conninfo);
    free(g);
    return 0;
}

static json_t *verified_event(char user_id[37])
{
    cm_uuid_v4(user_id);
    char at[32];
    cm_format_time(cm_now_us(), at);
    return cm_event_new(CM_EV_USER_VERIFIED, "auth",
                        json_pack("{s:s, s:s}", "user_id", user_id, "verified_at", at));
}

/* Adds the events in one transaction and commits (or rolls back). */
static void add_events(pgfix_t *g, json_t **events, const char **keys, int n, bool commit)
{
    cm_db_t *db = NULL;
    assert_int_equal(cm_db_acquire(g->pool, &db), 0);
    assert_int_equal(cm_db_begin(db), 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(cm_outbox_add(db, "kt_outbox", keys[i], events[i]), 0);
    if (commit)
        assert_int_equal(cm_db_commit(db), 0);
    else
        cm_db_rollback(db);
    cm_db_release(db);
}

#define UNSENT "SELECT count(*) FROM outbox WHERE sent_at IS NULL"
#define SENT "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"
#define ALL "SELECT count(*) FROM outbox"

static long long count_rows(pgfix_t *g, const char *sql)
{
    cm_db_t *db = NULL;
    PGresult *res = NULL;
    assert_int_equal(cm_db_acquire(g->pool, &db), 0);
    assert_int_equal(cm_db_exec(db, sql, 0, NULL, &res), 0);
    long long v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    cm_db_release(db);
    return v;
}

static cm_outbox_relay_t *start_relay(pgfix_t *g, cm_producer_t *p, cm_metrics_t *m)
{
    cm_outbox_config_t cfg = {g->conninfo, "kt_outbox", g->pool, p, 0, m};
    int err = -1;
    cm_outbox_relay_t *r = cm_outbox_relay_start(&cfg, &err);
    assert_int_equal(err, 0);
    assert_non_null(r);
    g->relay = r;
    return r;
}

static void stop_relay(pgfix_t *g)
{
    cm_outbox_relay_stop(g->relay);
    g->relay = NULL;
}

/* Checks each received value is a schema-valid envelope keyed by its user id. */
static void assert_envelopes(seen_t *s)
{
    for (int i = 0; i < s->n; i++) {
        json_t *ev = json_loads(s->values[i], 0, NULL);
        char err[256];
        if (!t_schema_validate_event(ev, err, sizeof err))
            fail_msg("emitted event does not match its schema: %s", err);
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(ev, "data"), "user_id")), s->keys[i]);
        json_decref(ev);
    }
}

static void committed_outbox_rows_are_published_and_marked_sent(void **state)
{
    pgfix_t *g = *state;
    cm_producer_t *p = cm_producer_new(g->kafka->bootstrap, "test", NULL);
    cm_metrics_t *m = cm_metrics_new();
    cm_outbox_relay_t *r = start_relay(g, p, m);
    sleep_ms(300); /* the relay is idle, listening */
    char u1[37], u2[37];
    json_t *events[] = {verified_event(u1), verified_event(u2)};
    const char *keys[] = {u1, u2};
    add_events(g, events, keys, 2, true);
    int64_t t0 = cm_now_mono_ms();
    while (count_rows(g, UNSENT) > 0 && cm_now_mono_ms() - t0 < 10000)
        sleep_ms(20);
    assert_int_equal(count_rows(g, SENT), 2);
    seen_t s;
    seen_init(&s);
    cm_consumer_t *c = start_consumer(g->kafka, "g.outbox", CM_EV_USER_VERIFIED, &s, NULL);
    assert_int_equal(wait_seen(&s, 2, 20000), 2);
    cm_consumer_stop(c);
    assert_envelopes(&s);
    cm_outbox_relay_kick(r); /* one more round refreshes the backlog gauge */
    sleep_ms(300);
    stop_relay(g);
    cm_buf_t text;
    cm_buf_init(&text);
    cm_metrics_render(m, &text);
    assert_non_null(strstr(text.data, "linktr_outbox_published_total 2"));
    assert_non_null(strstr(text.data, "linktr_outbox_backlog 0"));
    cm_buf_dispose(&text);
    seen_dispose(&s);
    json_decref(events[0]);
    json_decref(events[1]);
    cm_metrics_free(m);
    cm_producer_free(p);
}

static void notify_wakes_the_relay_before_its_safety_net_timer(void **state)
{
    pgfix_t *g = *state;
    cm_producer_t *p = cm_producer_new(g->kafka->bootstrap, "test", NULL);
    start_relay(g, p, NULL);
    sleep_ms(500); /* first round done, now waiting for up to 2 s */
    /* Three commits at different points of the 2 s timer: each goes out at once. */
    for (int i = 0; i < 3; i++) {
        char u[37];
        json_t *events[] = {verified_event(u)};
        const char *keys[] = {u};
        add_events(g, events, keys, 1, true);
        int64_t t0 = cm_now_mono_ms();
        while (count_rows(g, UNSENT) > 0 && cm_now_mono_ms() - t0 < 10000)
            sleep_ms(10);
        int64_t took = cm_now_mono_ms() - t0;
        assert_int_equal(count_rows(g, UNSENT), 0);
        assert_true(took < 700);
        json_decref(events[0]);
        sleep_ms(300);
    }
    stop_relay(g);
    cm_producer_free(p);
}

static void rolled_back_outbox_insert_publishes_nothing(void **state)
{
    pgfix_t *g = *state;
    cm_producer_t *p = cm_producer_new(g->kafka->bootstrap, "test", NULL);
    cm_outbox_relay_t *r = start_relay(g, p, NULL);
    char u1[37], u2[37];
    json_t *events[] = {verified_event(u1), verified_event(u2)};
    const char *keys[] = {u1, u2};
    add_events(g, events, keys, 1, false); /* rolled back */
    add_events(g, events + 1, keys + 1, 1, true);
    seen_t s;
    seen_init(&s);
    cm_consumer_t *c = start_consumer(g->kafka, "g.rollback", CM_EV_USER_VERIFIED, &s, NULL);
    assert_int_equal(wait_seen(&s, 1, 20000), 1);
    cm_outbox_relay_kick(r);
    sleep_ms(1000);
    cm_consumer_stop(c);
    stop_relay(g);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.keys[0], u2);
    assert_int_equal(count_rows(g, ALL), 1);
    seen_dispose(&s);
    json_decref(events[0]);
    json_decref(events[1]);
    cm_producer_free(p);
}

static void rows_wait_while_kafka_is_down_and_go_out_once_it_is_back(void **state)
{
    pgfix_t *g = *state;
    char *dead_bootstrap = closed_port_bootstrap();
    cm_producer_t *dead = cm_producer_new(dead_bootstrap, "test", NULL);
    cm_metrics_t *m = cm_metrics_new();
    start_relay(g, dead, m);
    char u1[37], u2[37];
    json_t *events[] = {verified_event(u1), verified_event(u2)};
    const char *keys[] = {u1, u2};
    add_events(g, events, keys, 2, true);
    sleep_ms(2500);
    assert_int_equal(count_rows(g, UNSENT), 2);
    /* The gauge shows them while the relay still waits for the broker's answer. */
    assert_true(wait_metric(m, "linktr_outbox_backlog 2\n", 0));
    int64_t t0 = cm_now_mono_ms();
    stop_relay(g);
    assert_true(cm_now_mono_ms() - t0 < 1000); /* stop does not wait for the broker */
    assert_int_equal(count_rows(g, UNSENT), 2);
    cm_producer_free(dead);
    cm_buf_t text;
    cm_buf_init(&text);
    cm_metrics_render(m, &text);
    assert_non_null(strstr(text.data, "linktr_outbox_backlog 2"));
    cm_buf_dispose(&text);

    cm_producer_t *p = cm_producer_new(g->kafka->bootstrap, "test", NULL);
    start_relay(g, p, m);
    seen_t s;
    seen_init(&s);
    cm_consumer_t *c = start_consumer(g->kafka, "g.down", CM_EV_USER_VERIFIED, &s, NULL);
    assert_true(wait_seen(&s, 2, 20000) >= 2);
    cm_consumer_stop(c);
    t0 = cm_now_mono_ms();
    while (count_rows(g, UNSENT) > 0 && cm_now_mono_ms() - t0 < 10000)
        sleep_ms(20);
    stop_relay(g);
    assert_int_equal(count_rows(g, UNSENT), 0);
    assert_envelopes(&s);
    bool got1 = false, got2 = false;
    for (int i = 0; i < s.n; i++) {
        got1 = got1 || strcmp(s.keys[i], u1) == 0;
        got2 = got2 || strcmp(s.keys[i], u2) == 0;
    }
    assert_true(got1 && got2);
    cm_buf_init(&text);
    cm_metrics_render(m, &text);
    assert_non_null(strstr(text.data, "linktr_outbox_backlog 0"));
    assert_non_null(strstr(text.data, "linktr_outbox_published_total 2"));
    cm_buf_dispose(&text);
    seen_dispose(&s);
    json_decref(events[0]);
    json_decref(events[1]);
    cm_metrics_free(m);
    cm_producer_free(p);
    free(dead_bootstrap);
}

/* The pid of the relay's LISTEN backend in this test's schema, or NULL. */
static char *listen_pid(pgfix_t *g)
{
    char *pid = admin_query1(g->admin,
                             "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
                             "AND query LIKE 'LISTEN %'",
                             g->schema);
    return pid;
}

static void relay_listens_again_after_its_connection_is_killed(void **state)
{
    pgfix_t *g = *state;
    cm_producer_t *p = cm_producer_new(g->kafka->bootstrap, "test", NULL);
    start_relay(g, p, NULL);
    char *old = NULL;
    int64_t until = cm_now_mono_ms() + 5000;
    while (!(old = listen_pid(g)) && cm_now_mono_ms() < until)
        sleep_ms(50);
    assert_non_null(old);
    free(admin_query1(g->admin, "SELECT pg_terminate_backend($1::int)", old));
    char *now = NULL;
    until = cm_now_mono_ms() + 8000;
    while (cm_now_mono_ms() < until) {
        free(now);
        now = listen_pid(g);
        if (now && strcmp(now, old) != 0)
            break;
        sleep_ms(50);
    }
    assert_non_null(now);
    assert_string_not_equal(now, old);
    char u[37];
    json_t *events[] = {verified_event(u)};
    const char *keys[] = {u};
    add_events(g, events, keys, 1, true);
    int64_t t0 = cm_now_mono_ms();
    while (count_rows(g, UNSENT) > 0 && cm_now_mono_ms() - t0 < 10000)
        sleep_ms(20);
    assert_int_equal(count_rows(g, UNSENT), 0);
    stop_relay(g);
    json_decref(events[0]);
    free(old);
    free(now);
    cm_producer_free(p);
}

static void outbox_add_refuses_a_bad_channel_key_or_envelope(void **state)
{
    pgfix_t *g = *state;
    char u[37];
    json_t *ev = verified_event(u);
    json_t *no_id = json_deep_copy(ev);
    json_object_del(no_id, "id");
    json_t *bad_type = json_deep_copy(ev);
    json_object_set_new(bad_type, "type", json_string("^user.*"));
    cm_db_t *db = NULL;
    assert_int_equal(cm_db_acquire(g->pool, &db), 0);
    assert_int_equal(cm_outbox_add(db, "kt_outbox; DROP TABLE outbox", u, ev), CM_EINVAL);
    assert_int_equal(cm_outbox_add(db, "Kt", u, ev), CM_EINVAL);
    assert_int_equal(cm_outbox_add(db, "kt_outbox", "", ev), CM_EINVAL);
    assert_int_equal(cm_outbox_add(db, "kt_outbox", u, no_id), CM_EINVAL);
    assert_int_equal(cm_outbox_add(db, "kt_outbox", u, bad_type), CM_EINVAL);
    assert_int_equal(cm_outbox_add(db, "kt_outbox", u, NULL), CM_EINVAL);
    /* The same event twice: the unique event_id says so. */
    assert_int_equal(cm_outbox_add(db, "kt_outbox", u, ev), 0);
    assert_int_equal(cm_outbox_add(db, "kt_outbox", u, ev), CM_ECONFLICT);
    cm_db_release(db);
    assert_int_equal(count_rows(g, ALL), 1);
    json_decref(ev);
    json_decref(no_id);
    json_decref(bad_type);
}

static void relay_start_refuses_a_bad_config(void **state)
{
    pgfix_t *g = *state;
    cm_producer_t *p = cm_producer_new(g->kafka->bootstrap, "test", NULL);
    cm_outbox_config_t bad[] = {
        {g->conninfo, "kt outbox", g->pool, p, 0, NULL},
        {g->conninfo, "1kt", g->pool, p, 0, NULL},
        {g->conninfo, "kt_outbox", NULL, p, 0, NULL},
        {g->conninfo, "kt_outbox", g->pool, NULL, 0, NULL},
        {NULL, "kt_outbox", g->pool, p, 0, NULL},
        {g->conninfo, "kt_outbox", g->pool, p, -1, NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int err = 0;
        assert_null(cm_outbox_relay_start(&bad[i], &err));
        assert_int_equal(err, CM_EINVAL);
    }
    cm_producer_free(p);
}

int main(void)
{
    cm_log_init("test_kafka", CM_LOG_ERROR);
    /* Development aid: run only the tests whose name matches this glob. */
    if (getenv("LINKTR_TEST_FILTER"))
        cmocka_set_test_filter(getenv("LINKTR_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(producer_send_is_acknowledged_and_ping_answers, setup_mock,
                                        teardown_mock),
        cmocka_unit_test(producer_against_a_closed_port_times_out_and_does_not_ping),
        cmocka_unit_test(producer_new_refuses_a_bad_config),
        cmocka_unit_test_setup_teardown(several_threads_can_send_at_once_and_every_message_arrives,
                                        setup_mock, teardown_mock),
        cmocka_unit_test_setup_teardown(
            consumer_commits_so_a_new_member_of_the_group_does_not_see_it_again, setup_mock,
            teardown_mock),
        cmocka_unit_test_setup_teardown(malformed_messages_are_skipped_once_and_committed_past,
                                        setup_mock, teardown_mock),
        cmocka_unit_test_setup_teardown(failing_handler_is_retried_until_it_succeeds_keeping_order,
                                        setup_mock, teardown_mock),
        cmocka_unit_test_setup_teardown(a_message_still_failing_at_stop_is_not_committed,
                                        setup_mock, teardown_mock),
        cmocka_unit_test_setup_teardown(
            failing_partition_is_held_back_while_other_partitions_keep_flowing, setup_mock,
            teardown_mock),
        cmocka_unit_test(consumer_is_not_healthy_without_a_broker),
        cmocka_unit_test_setup_teardown(consumer_start_refuses_a_bad_config, setup_mock,
                                        teardown_mock),
        cmocka_unit_test_setup_teardown(committed_outbox_rows_are_published_and_marked_sent,
                                        setup_pg, teardown_pg),
        cmocka_unit_test_setup_teardown(notify_wakes_the_relay_before_its_safety_net_timer,
                                        setup_pg, teardown_pg),
        cmocka_unit_test_setup_teardown(rolled_back_outbox_insert_publishes_nothing, setup_pg,
                                        teardown_pg),
        cmocka_unit_test_setup_teardown(rows_wait_while_kafka_is_down_and_go_out_once_it_is_back,
                                        setup_pg, teardown_pg),
        cmocka_unit_test_setup_teardown(relay_listens_again_after_its_connection_is_killed,
                                        setup_pg, teardown_pg),
        cmocka_unit_test_setup_teardown(outbox_add_refuses_a_bad_channel_key_or_envelope, setup_pg,
                                        teardown_pg),
        cmocka_unit_test_setup_teardown(relay_start_refuses_a_bad_config, setup_pg, teardown_pg),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
