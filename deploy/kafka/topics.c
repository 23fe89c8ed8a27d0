/*
 * linktr-topics — creates linktr's topics on a real Kafka cluster through
 * librdkafka's admin API, so brokers can run with auto-creation off.
 *
 *   linktr-topics BOOTSTRAP [PARTITIONS [REPLICATION]]
 *
 * PARTITIONS is a partition_spec.h spec: N for every topic (default 6), or
 * topic=N,... with an optional bare N for the others. Existing topics are
 * left as they are (their partition count too); the exit status is 0 when
 * every topic exists afterwards.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "partition_spec.h"

static const char *const topics[] = {
    "user.registered",        "user.verified",       "reset.requested",    "password.changed",
    "referral.converted",     "reward.granted",      "mail.dead",          "verify.requested",
    "email.change.requested", "email.change.notice", "user.email.changed", "signin.new",
    "user.deleted",
};
enum { NTOPICS = sizeof topics / sizeof topics[0], TIMEOUT_MS = 30000 };

static int parse_count(const char *s, int max, int *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 1 || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

static rd_kafka_t *admin_client(const char *bootstrap)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof err) !=
        RD_KAFKA_CONF_OK) {
        fprintf(stderr, "linktr-topics: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk)
        fprintf(stderr, "linktr-topics: %s\n", err);
    return rk;
}

/* Reports each topic's result; "already exists" counts as success. */
static int report(rd_kafka_event_t *ev)
{
    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
    if (!res) {
        fprintf(stderr, "linktr-topics: %s\n", rd_kafka_event_error_string(ev));
        return -1;
    }
    size_t n = 0;
    const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &n);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
        const char *name = rd_kafka_topic_result_name(tr[i]);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
            printf("created %s\n", name);
        else if (e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
            printf("exists  %s\n", name);
        else {
            fprintf(stderr, "linktr-topics: %s: %s\n", name,
                    rd_kafka_topic_result_error_string(tr[i]));
            rc = -1;
        }
    }
    return rc;
}

static int create_all(rd_kafka_t *rk, const char *spec, int replication)
{
    char err[256];
    rd_kafka_NewTopic_t *nt[NTOPICS];
    for (int i = 0; i < NTOPICS; i++) {
        int partitions = partition_spec_for(spec, topics[i], 6, 1000);
        nt[i] = rd_kafka_NewTopic_new(topics[i], partitions, replication, err, sizeof err);
        if (!nt[i]) {
            fprintf(stderr, "linktr-topics: %s: %s\n", topics[i], err);
            rd_kafka_NewTopic_destroy_array(nt, (size_t)i);
            return -1;
        }
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(opts, TIMEOUT_MS, err, sizeof err);
    rd_kafka_CreateTopics(rk, nt, NTOPICS, opts, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, TIMEOUT_MS + 5000);
    int rc = ev ? report(ev) : -1;
    if (!ev)
        fprintf(stderr, "linktr-topics: no answer from %s\n", "the cluster");
    rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy_array(nt, NTOPICS);
    return rc;
}

int main(int argc, char **argv)
{
    int replication = 1;
    const char *spec = argc > 2 ? argv[2] : "6";
    if (argc < 2 || argc > 4 || partition_spec_for(spec, "", 6, 1000) < 0 ||
        (argc > 3 && parse_count(argv[3], 10, &replication) != 0)) {
        fprintf(stderr, "usage: linktr-topics BOOTSTRAP [PARTITIONS [REPLICATION(1-10)]]\n"
                        "  PARTITIONS: N (1-1000) for every topic, or topic=N,... with an\n"
                        "  optional bare N for the others, e.g. 12,mail.dead=1\n");
        return 2;
    }
    rd_kafka_t *rk = admin_client(argv[1]);
    if (!rk)
        return 1;
    int rc = create_all(rk, spec, replication);
    rd_kafka_destroy(rk);
    return rc == 0 ? 0 : 1;
}
