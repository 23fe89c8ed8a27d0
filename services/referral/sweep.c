/* sweep.c — expiring old pending referrals (see sweep.h). */
#include "sweep.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "cm/log.h"
#include "cm/util.h"
#include "consumer.h"
#include "store.h"

struct ref_sweep {
    const ref_config_t *cfg;
    cm_db_pool_t *pool;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
};

typedef struct batch {
    const ref_config_t *cfg;
    int expired;
} batch_t;

/* One transaction: lock a batch of old pending referrals and expire each. */
static int expire_batch_tx(cm_db_t *db, void *arg)
{
    batch_t *b = arg;
    b->expired = 0;
    char ids[REF_SWEEP_BATCH][37];
    int n = 0;
    int rc = ref_store_expirable(db, b->cfg->ttl_days, REF_SWEEP_BATCH, ids, &n);
    if (rc != 0)
        return rc;
    char at[32];
    cm_format_time(cm_now_us(), at);
    for (int i = 0; rc == 0 && i < n; i++) {
        rc = ref__convert(db, b->cfg, ids[i], REF_EXPIRED, "ttl", at, NULL);
        if (rc == CM_ENOTFOUND)
            rc = 0; /* decided meanwhile */
        else if (rc == 0)
            b->expired++;
    }
    return rc;
}

int ref_sweep_once(const ref_config_t *cfg, cm_db_pool_t *pool, int *expired)
{
    int total = 0, rc = 0;
    batch_t b = {.cfg = cfg};
    do {
        rc = cm_db_tx(pool, expire_batch_tx, &b);
        if (rc == 0)
            total += b.expired;
    } while (rc == 0 && b.expired == REF_SWEEP_BATCH);
    if (expired)
        *expired = total;
    return rc;
}

static void *run(void *arg)
{
    ref_sweep_t *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        pthread_mutex_unlock(&s->mu);
        int n = 0;
        int rc = ref_sweep_once(s->cfg, s->pool, &n);
        if (rc != 0)
            CM_WARN(NULL, "referral: expiry sweep: %s", cm_strerror(rc));
        else if (n > 0)
            CM_INFO(NULL, "referral: expired %d referrals", n);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += s->cfg->sweep_interval_s;
        pthread_mutex_lock(&s->mu);
        while (!s->stopping && pthread_cond_timedwait(&s->cv, &s->mu, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

ref_sweep_t *ref_sweep_start(const ref_config_t *cfg, cm_db_pool_t *pool, int *err)
{
    if (!cfg || !pool || cfg->sweep_interval_s < 1) {
        *err = CM_EINVAL;
        return NULL;
    }
    ref_sweep_t *s = cm_xcalloc(1, sizeof *s);
    s->cfg = cfg;
    s->pool = pool;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thread, NULL, run, s) != 0) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        *err = CM_ENOMEM;
        return NULL;
    }
    return s;
}

void ref_sweep_stop(ref_sweep_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
