/*
 * kafkamock.h — what the Kafka unit tests share: librdkafka's mock cluster
 * running in the test process as a real broker (real sockets on 127.0.0.1),
 * and a consumer callback that records what it was handed.
 */
#ifndef LINKTR_KAFKAMOCK_H
#define LINKTR_KAFKAMOCK_H

#include <pthread.h>
#include <stdbool.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "cm/consumer.h"
#include "cm/metrics.h"
#include "cm/producer.h"

/**
 * How long a test waits for something that must arrive (a message, a
 * metric). Never a speed check: the wait ends as soon as it arrives. It is
 * long because of how the mock cluster forms a group: a consumer joining
 * after the last member left waits out the rebalance timer (session.timeout.ms
 * less 1 s: 5 s), and when the leaver's LeaveGroup was not seen the mock
 * keeps the departed member until its session times out and rebalances again
 * (11 s on an idle machine, for a consumer destroyed without closing). CI saw
 * a join under the sanitizers take longer than 20 s.
 */
#define T_KAFKA_WAIT_MS 60000

/** How many values a t_seen_t records at most. */
#define T_MAX_SEEN 256

/** One mock cluster (one broker) with the topics the tests use, three partitions each. */
typedef struct t_kafka {
    rd_kafka_t *helper; /* owns the mock cluster */
    rd_kafka_mock_cluster_t *mock;
    const char *bootstrap; /* borrowed from the cluster */
} t_kafka_t;

/**
 * cmocka set-up: starts a mock cluster with the topics "t.orders",
 * user.verified and user.registered, and puts a new t_kafka_t in *state.
 */
int t_kafka_setup(void **state);

/** cmocka tear-down for t_kafka_setup(): destroys the cluster and frees *state. */
int t_kafka_teardown(void **state);

/** A bootstrap list naming a loopback port nothing listens on; the caller free()s it. */
char *t_closed_port_bootstrap(void);

/** What a consumer handed to t_seen_record(); lock mu to read it while the consumer runs. */
typedef struct t_seen {
    pthread_mutex_t mu;
    int n;
    char *values[T_MAX_SEEN]; /* owned copies, n of them */
    char *keys[T_MAX_SEEN];   /* owned copies ("" for no key) */
    int calls;
    int fail_first;     /* fail this many calls with CM_EUNAVAIL */
    const char *always; /* a value that always fails with CM_EUNAVAIL */
} t_seen_t;

/** Initializes s (the caller's storage) to record nothing yet. */
void t_seen_init(t_seen_t *s);

/** Frees the copies s holds and its mutex. */
void t_seen_dispose(t_seen_t *s);

/**
 * A cm_consume_fn over a t_seen_t (ctx): values starting with "bad" are
 * permanently malformed (CM_EPARSE); fail_first and always make it fail
 * with CM_EUNAVAIL; anything else is recorded and returns 0.
 */
int t_seen_record(const cm_kmsg_t *m, void *ctx);

/** Waits until at least n values were recorded; returns how many there are. */
int t_seen_wait(t_seen_t *s, int n, int timeout_ms);

/** How many recorded values equal v. */
int t_seen_count(t_seen_t *s, const char *v);

/** The index of the first recorded value equal to v, or -1. */
int t_seen_index(t_seen_t *s, const char *v);

/** Waits until v was recorded at least once; returns whether it was. */
bool t_seen_wait_value(t_seen_t *s, const char *v, int timeout_ms);

/** How many times the callback was called, failures included. */
int t_seen_calls(t_seen_t *s);

/**
 * Starts a consumer of topic in group on f's cluster that records into s,
 * with metrics m (may be NULL). Fails the test when it does not start; the
 * caller cm_consumer_stop()s it.
 */
cm_consumer_t *t_start_consumer(t_kafka_t *f, const char *group, const char *topic, t_seen_t *s,
                                cm_metrics_t *m);

/** Sends each of the NULL-terminated values with key, failing the test on an error. */
void t_send_all(cm_producer_t *p, const char *topic, const char *key, const char *const *values);

/**
 * Waits until the rendered metrics contain needle (the consumer's come from
 * librdkafka's statistics, every 2 s); returns whether they did.
 */
bool t_wait_metric(cm_metrics_t *m, const char *needle, int timeout_ms);

#endif
