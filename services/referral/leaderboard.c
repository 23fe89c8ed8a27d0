/* leaderboard.c — the monthly leaderboard cache (see leaderboard.h). */
#include "leaderboard.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cm/log.h"
#include "cm/util.h"
#include "store.h"

/* A refresh that saw opt-in changes land during its read reads again, this many times. */
#define REFRESH_TRIES 3

struct ref_board {
    cm_db_pool_t *pool; /* borrowed */
    int refresh_s, size;
    cm_family_t *refreshes, *served, *refreshed; /* owned by the metrics registry */
    pthread_t thread;
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;
    bool stopping, loaded;
    unsigned long changes; /* opt-in changes applied to the cache so far */
    char period[8];        /* "YYYY-MM" of the cached rows */
    int n;
    ref_board_row_t rows[REF_BOARD_MAX];
};

/* The current UTC month as "YYYY-MM" and its first day as "YYYY-MM-01". */
static void this_month(char period[8], char first[11])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    /* Bounded for the compiler too: four digits of year, 1-12. */
    unsigned y = (unsigned)(tm.tm_year + 1900) % 10000u, m = (unsigned)tm.tm_mon % 12u + 1u;
    snprintf(period, 8, "%04u-%02u", y, m);
    snprintf(first, 11, "%04u-%02u-01", y, m);
}

/* Reads the month's ranking into rows; 0 with *n set, or a CM_E* code. */
static int read_rows(ref_board_t *b, const char *first, ref_board_row_t *rows, int *n)
{
    cm_db_t *db = NULL;
    int rc = cm_db_acquire(b->pool, &db);
    if (rc != 0)
        return rc;
    rc = ref_store_leaderboard(db, first, b->size, rows, n);
    cm_db_release(db);
    return rc;
}

int ref_board_refresh(ref_board_t *b)
{
    ref_board_row_t *rows = cm_xcalloc(REF_BOARD_MAX, sizeof *rows);
    char period[8], first[11];
    int rc = 0;
    for (int t = 0; t < REFRESH_TRIES; t++) {
        pthread_mutex_lock(&b->mu);
        unsigned long seen = b->changes;
        pthread_mutex_unlock(&b->mu);
        int n = 0;
        this_month(period, first);
        rc = read_rows(b, first, rows, &n);
        cm_metric_add(b->refreshes, (const char *const[]){rc == 0 ? "ok" : "error"}, 1);
        if (rc != 0)
            break;
        pthread_mutex_lock(&b->mu);
        /* An opt-in stored while we read may be missing from rows: read again,
         * unless someone keeps toggling (then the next refresh catches up). */
        bool swap = b->changes == seen || t == REFRESH_TRIES - 1;
        if (swap) {
            memcpy(b->rows, rows, (size_t)n * sizeof *rows);
            b->n = n;
            memcpy(b->period, period, sizeof b->period);
            b->loaded = true;
        }
        pthread_mutex_unlock(&b->mu);
        if (swap) {
            cm_metric_set(b->refreshed, NULL, (double)time(NULL));
            break;
        }
    }
    free(rows);
    return rc;
}

json_t *ref_board_json(ref_board_t *b)
{
    json_t *results = json_array();
    pthread_mutex_lock(&b->mu);
    bool loaded = b->loaded;
    json_t *period = json_string(b->period);
    for (int i = 0; loaded && i < b->n; i++) {
        const ref_board_row_t *r = &b->rows[i];
        json_t *name = r->show && r->username[0] ? json_string(r->username) : NULL;
        json_array_append_new(results, json_pack("{s:i, s:o, s:I}", "rank", i + 1, "username",
                                                 name ? name : json_null(), "successful",
                                                 (json_int_t)r->successful));
    }
    pthread_mutex_unlock(&b->mu);
    if (!loaded) {
        json_decref(results);
        json_decref(period);
        return NULL;
    }
    cm_metric_add(b->served, NULL, 1);
    return json_pack("{s:o, s:o}", "period", period, "results", results);
}

void ref_board_set_show(ref_board_t *b, const char *user_id, bool show)
{
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < b->n; i++)
        if (strcmp(b->rows[i].user_id, user_id) == 0)
            b->rows[i].show = show;
    b->changes++;
    pthread_mutex_unlock(&b->mu);
}

static void *run(void *arg)
{
    ref_board_t *b = arg;
    pthread_mutex_lock(&b->mu);
    while (!b->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += b->refresh_s;
        while (!b->stopping && pthread_cond_timedwait(&b->cv, &b->mu, &until) != ETIMEDOUT)
            ;
        if (b->stopping)
            break;
        pthread_mutex_unlock(&b->mu);
        int rc = ref_board_refresh(b);
        if (rc != 0)
            CM_WARN(NULL, "referral: leaderboard refresh: %s", cm_strerror(rc));
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

static void register_metrics(ref_board_t *b, cm_metrics_t *m)
{
    if (!m)
        return;
    b->refreshes =
        cm_metrics_counter(m, "linktr_referral_leaderboard_refreshes_total",
                           "Leaderboard reads from the database, by outcome.", "outcome");
    b->served = cm_metrics_counter(m, "linktr_referral_leaderboard_served_total",
                                   "Leaderboard requests answered from the cache.", NULL);
    b->refreshed = cm_metrics_gauge(m, "linktr_referral_leaderboard_refreshed_timestamp_seconds",
                                    "Unix time of the last successful leaderboard refresh.", NULL);
}

ref_board_t *ref_board_start(cm_db_pool_t *pool, int refresh_s, int size, cm_metrics_t *metrics,
                             int *err)
{
    if (!pool || refresh_s < 1 || size < 1 || size > REF_BOARD_MAX) {
        *err = CM_EINVAL;
        return NULL;
    }
    ref_board_t *b = cm_xcalloc(1, sizeof *b);
    b->pool = pool;
    b->refresh_s = refresh_s;
    b->size = size;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    register_metrics(b, metrics);
    int rc = ref_board_refresh(b);
    if (rc != 0)
        CM_WARN(NULL, "referral: first leaderboard refresh: %s (retrying)", cm_strerror(rc));
    if (pthread_create(&b->thread, NULL, run, b) != 0) {
        pthread_cond_destroy(&b->cv);
        pthread_mutex_destroy(&b->mu);
        free(b);
        *err = CM_ENOMEM;
        return NULL;
    }
    return b;
}

void ref_board_stop(ref_board_t *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->stopping = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}
