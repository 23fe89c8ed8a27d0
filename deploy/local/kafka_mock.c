/*
 * linktr-kafka-mock — the embedded Kafka broker of the local stack.
 *
 * It hosts librdkafka's mock cluster (rdkafka_mock.h) in a process of its
 * own, so the services and the tests talk to it over loopback exactly as
 * they would to a real broker. The mock listens on 127.0.0.1 on a port the
 * kernel picks; the address is printed as one line,
 *
 *     KAFKA_BOOTSTRAP=127.0.0.1:NNNNN
 *
 * and, with --bootstrap-file, written (address only) to a file that
 * appears atomically, so a script can wait for it. The broker runs until
 * SIGINT or SIGTERM and then shuts down cleanly.
 *
 * Deliberately standalone (librdkafka only): it must build and run before
 * the rest of the tree does.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "../kafka/partition_spec.h"

#define DEFAULT_TOPICS                                                                             \
    "user.registered,user.verified,reset.requested,password.changed,referral.converted,"           \
    "reward.granted,verify.requested,mail.dead,email.change.requested,email.change.notice,"        \
    "user.email.changed,signin.new,user.deleted"
#define DEFAULT_PARTITIONS 6
#define MAX_PARTITIONS 1000
/* Kafka's own limit on a topic name. */
#define MAX_TOPIC_LEN 249

typedef struct mock_opts {
    const char *topics;         /* comma-separated list */
    const char *partitions;     /* a partition_spec.h spec: "6", "12,mail.dead=1", ... */
    const char *bootstrap_file; /* NULL: stdout only */
    int help;                   /* --help was given */
} mock_opts_t;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: linktr-kafka-mock [--topics a,b,...] [--partitions SPEC]"
            " [--bootstrap-file PATH]\n"
            "  --topics          topics to create (default " DEFAULT_TOPICS ")\n"
            "  --partitions SPEC partitions per topic, 1-%d each (default %d): N for\n"
            "                    every topic, or topic=N,... with an optional bare N\n"
            "                    for the others, e.g. 12,mail.dead=1\n"
            "  --bootstrap-file  also write the broker address to PATH (atomically)\n"
            "Prints KAFKA_BOOTSTRAP=host:port and runs until SIGINT or SIGTERM.\n",
            MAX_PARTITIONS, DEFAULT_PARTITIONS);
}

/* Returns the value of option argv[*i] and advances *i, or NULL if missing. */
static const char *option_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "linktr-kafka-mock: %s needs a value\n", argv[*i]);
        return NULL;
    }
    *i += 1;
    return argv[*i];
}

static int parse_args(int argc, char **argv, mock_opts_t *o)
{
    *o = (mock_opts_t){DEFAULT_TOPICS, NULL, NULL, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            o->help = 1;
        } else if (strcmp(a, "--topics") == 0) {
            if (!(o->topics = option_value(argc, argv, &i)))
                return -1;
        } else if (strcmp(a, "--partitions") == 0) {
            const char *v = option_value(argc, argv, &i);
            if (!v || partition_spec_for(v, "", DEFAULT_PARTITIONS, MAX_PARTITIONS) < 0) {
                fprintf(stderr,
                        "linktr-kafka-mock: --partitions must be N or topic=N,... (N 1-%d)\n",
                        MAX_PARTITIONS);
                return -1;
            }
            o->partitions = v;
        } else if (strcmp(a, "--bootstrap-file") == 0) {
            if (!(o->bootstrap_file = option_value(argc, argv, &i)))
                return -1;
        } else {
            fprintf(stderr, "linktr-kafka-mock: unknown argument '%s'\n", a);
            return -1;
        }
    }
    return 0;
}

/* Kafka topic names: 1-249 characters of [A-Za-z0-9._-]. */
static int valid_topic(const char *name, size_t len)
{
    if (len == 0 || len > MAX_TOPIC_LEN)
        return 0;
    return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") >= len;
}

static int create_topic(rd_kafka_mock_cluster_t *mc, const char *name, size_t len, const char *spec)
{
    char topic[MAX_TOPIC_LEN + 1];
    if (!valid_topic(name, len)) {
        fprintf(stderr, "linktr-kafka-mock: invalid topic name '%.*s'\n", (int)len, name);
        return -1;
    }
    memcpy(topic, name, len);
    topic[len] = '\0';
    int parts = spec ? partition_spec_for(spec, topic, DEFAULT_PARTITIONS, MAX_PARTITIONS)
                     : DEFAULT_PARTITIONS;
    rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(mc, topic, parts, 1);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "linktr-kafka-mock: cannot create topic %s: %s\n", topic,
                rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

/* Creates every topic of the comma-separated list; an empty item is an error. */
static int create_topics(rd_kafka_mock_cluster_t *mc, const char *list, const char *parts)
{
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (create_topic(mc, p, len, parts) != 0)
            return -1;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

/* Writes "addr\n" to path.tmp.PID, then renames it over path. */
static int write_bootstrap_file(const char *path, const char *addr)
{
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    int rc = -1, fd = -1;
    if (!tmp)
        goto out;
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        goto out;
    size_t len = strlen(addr);
    if (write(fd, addr, len) != (ssize_t)len || write(fd, "\n", 1) != 1)
        goto out;
    if (close(fd) != 0) {
        fd = -1;
        goto out;
    }
    fd = -1;
    rc = rename(tmp, path) == 0 ? 0 : -1;
out:
    if (rc != 0)
        fprintf(stderr, "linktr-kafka-mock: cannot write %s: %s\n", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (tmp && rc != 0)
        unlink(tmp);
    free(tmp);
    return rc;
}

/* The client instance that hosts the cluster; it never talks to a broker. */
static rd_kafka_t *new_host(void)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* Keep the host from nagging about its (deliberately) missing bootstrap.servers. */
    if (rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "linktr-kafka-mock: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "linktr-kafka-mock: %s\n", err);
        rd_kafka_conf_destroy(conf); /* still ours when rd_kafka_new fails */
    }
    return rk;
}

/* Prints and publishes the bootstrap address. */
static int announce(const mock_opts_t *o, const char *addr)
{
    if (o->bootstrap_file && write_bootstrap_file(o->bootstrap_file, addr) != 0)
        return -1;
    printf("KAFKA_BOOTSTRAP=%s\n", addr);
    return fflush(stdout) == 0 ? 0 : -1;
}

/* Blocks until SIGINT or SIGTERM; the signals are blocked in every thread. */
static void wait_for_stop(const sigset_t *set)
{
    int sig = 0;
    while (sigwait(set, &sig) != 0)
        ;
    fprintf(stderr, "linktr-kafka-mock: signal %d, shutting down\n", sig);
}

static int serve(const mock_opts_t *o, const sigset_t *stop)
{
    int rc = -1;
    rd_kafka_mock_cluster_t *mc = NULL;
    rd_kafka_t *rk = new_host();
    if (!rk)
        return -1;
    mc = rd_kafka_mock_cluster_new(rk, 1);
    if (!mc) {
        fprintf(stderr, "linktr-kafka-mock: cannot create the mock cluster\n");
        goto out;
    }
    if (create_topics(mc, o->topics, o->partitions) != 0)
        goto out;
    if (announce(o, rd_kafka_mock_cluster_bootstraps(mc)) != 0)
        goto out;
    wait_for_stop(stop);
    rc = 0;
    if (o->bootstrap_file)
        unlink(o->bootstrap_file); /* a stale address would mislead the next reader */
out:
    /* The cluster must go before the instance that hosts it. */
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return rc;
}

int main(int argc, char **argv)
{
    mock_opts_t o;
    sigset_t stop;

    if (parse_args(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    if (o.help) {
        usage(stdout);
        return 0;
    }
    /* Block before librdkafka starts its threads so they inherit the mask
     * and only sigwait() ever sees the signals. */
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    if (pthread_sigmask(SIG_BLOCK, &stop, NULL) != 0) {
        fprintf(stderr, "linktr-kafka-mock: cannot block signals\n");
        return 1;
    }
    return serve(&o, &stop) == 0 ? 0 : 1;
}
