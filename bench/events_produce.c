/*
 * events_produce.c — linktr-bench-events: produces events straight onto
 * their topics through the project's own producer (cm/producer.h), for
 * bench/events.
 *
 *   linktr-bench-events BOOTSTRAP [THREADS]  < lines
 *
 * Each stdin line is "TYPE<TAB>KEY<TAB>DATA": the event type (also the
 * topic, as everywhere in linktr), the message key (a user id, so one
 * user's events keep their order) and the event's data as one JSON object.
 * Every line becomes an envelope (cm_event_new: fresh id, current time)
 * sent with cm_producer_send from THREADS threads at once (default 32;
 * each send waits for the broker's acknowledgement). Prints
 * "produced N events in S s (R/s)" and exits 0 only if every send succeeded.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cm/events.h"
#include "cm/producer.h"
#include "cm/util.h"

#define MAX_THREADS 256
#define SEND_TIMEOUT_MS 30000

typedef struct line {
    char *type, *key, *data;
} line_t;

typedef struct job {
    cm_producer_t *producer;
    line_t *lines;
    size_t n;
    atomic_size_t next;
    atomic_size_t failed;
} job_t;

/* Splits "TYPE\tKEY\tDATA" in place; 0 when the line has all three. */
static int split_line(char *s, line_t *l)
{
    char *t1 = strchr(s, '\t');
    char *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
    if (!t2)
        return -1;
    *t1 = *t2 = '\0';
    s[strcspn(s, "\n")] = '\0';
    t2[1 + strcspn(t2 + 1, "\n")] = '\0';
    *l = (line_t){s, t1 + 1, t2 + 1};
    return 0;
}

/* One envelope for l through the producer; 0 on an acknowledged send. */
static int send_line(cm_producer_t *p, const line_t *l)
{
    json_error_t jerr;
    json_t *data = json_loads(l->data, 0, &jerr);
    json_t *env = data ? cm_event_new(l->type, "bench", data) : NULL; /* steals data */
    char *text = env ? json_dumps(env, JSON_COMPACT) : NULL;
    int rc = text ? cm_producer_send(p, l->type, l->key, text, strlen(text), SEND_TIMEOUT_MS)
                  : CM_EINVAL;
    free(text);
    json_decref(env);
    return rc;
}

static void *worker(void *arg)
{
    job_t *j = arg;
    for (size_t i; (i = atomic_fetch_add(&j->next, 1)) < j->n;)
        if (send_line(j->producer, &j->lines[i]) != 0)
            atomic_fetch_add(&j->failed, 1);
    return NULL;
}

/* Reads every line of f into *out (the lines own buf's pieces). */
static size_t read_lines(FILE *f, line_t **out, char ***bufs)
{
    size_t n = 0, cap = 0;
    char *s = NULL;
    size_t len = 0;
    *out = NULL;
    *bufs = NULL;
    while (getline(&s, &len, f) > 0) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            *out = cm_xreallocarray(*out, cap, sizeof **out);
            *bufs = cm_xreallocarray(*bufs, cap, sizeof **bufs);
        }
        if (split_line(s, &(*out)[n]) != 0) {
            fprintf(stderr, "linktr-bench-events: line %zu is not TYPE<TAB>KEY<TAB>DATA\n", n + 1);
            exit(2);
        }
        (*bufs)[n++] = s;
        s = NULL;
        len = 0;
    }
    free(s);
    return n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long long threads = 32;
    if (argc < 2 || argc > 3 || (argc == 3 && cm_strtonum(argv[2], 1, MAX_THREADS, &threads))) {
        fprintf(stderr, "usage: linktr-bench-events BOOTSTRAP [THREADS(1-%d)] < lines\n",
                MAX_THREADS);
        return 2;
    }
    int err = 0;
    cm_producer_t *p = cm_producer_new(argv[1], "linktr-bench-events", &err);
    if (!p) {
        fprintf(stderr, "linktr-bench-events: producer: %s\n", cm_strerror(err));
        return 1;
    }
    char **bufs = NULL;
    job_t job = {.producer = p};
    job.n = read_lines(stdin, &job.lines, &bufs);
    pthread_t tid[MAX_THREADS];
    double t0 = now_s();
    for (long long i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, worker, &job);
    for (long long i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    double secs = now_s() - t0;
    size_t failed = atomic_load(&job.failed);
    printf("produced %zu events in %.2f s (%.0f/s), %zu failed\n", job.n - failed, secs,
           secs > 0 ? (double)job.n / secs : 0.0, failed);
    for (size_t i = 0; i < job.n; i++)
        free(bufs[i]);
    free(bufs);
    free(job.lines);
    cm_producer_free(p);
    return failed ? 1 : 0;
}
