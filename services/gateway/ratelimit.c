#include "ratelimit.h"

#include <arpa/inet.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/util.h"

#define NSHARDS 16
#define NSLOTS 1024
#define MAX_IP GW_CLIENT_KEY_MAX

typedef struct entry {
    struct entry *next;
    gw_rate_class_t cls;
    char ip[MAX_IP];
    gw_bucket_t bucket;
} entry_t;

typedef struct shard {
    pthread_mutex_t mu;
    entry_t *slots[NSLOTS];
    size_t n;
} shard_t;

struct gw_limiter {
    gw_rate_t rates[GW_RL_COUNT];
    int ipv6_prefix;
    size_t max_per_shard;
    shard_t shards[NSHARDS];
};

bool gw_bucket_take(gw_bucket_t *b, const gw_rate_t *r, int64_t now_ms, int64_t *retry_after_s)
{
    double cap = (double)r->burst;
    double per_ms = cap / ((double)r->period_s * 1000.0);
    if (now_ms > b->last_ms) {
        b->tokens += (double)(now_ms - b->last_ms) * per_ms;
        b->last_ms = now_ms;
    }
    if (b->tokens > cap)
        b->tokens = cap;
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return true;
    }
    double wait_s = (1.0 - b->tokens) / per_ms / 1000.0;
    int64_t s = (int64_t)ceil(wait_s);
    *retry_after_s = s < 1 ? 1 : s;
    return false;
}

static bool is_v4_mapped(const struct in6_addr *a)
{
    static const unsigned char prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(a->s6_addr, prefix, sizeof prefix) == 0;
}

static int v4_key(const void *addr4, char key[GW_CLIENT_KEY_MAX])
{
    char text[INET_ADDRSTRLEN];
    if (!inet_ntop(AF_INET, addr4, text, sizeof text))
        return CM_EINVAL;
    snprintf(key, GW_CLIENT_KEY_MAX, "4:%s", text);
    return 0;
}

int gw_client_key(const char *ip, int ipv6_prefix, char key[GW_CLIENT_KEY_MAX])
{
    key[0] = '\0';
    if (!ip || ipv6_prefix < 32 || ipv6_prefix > 128 || strnlen(ip, MAX_IP) >= MAX_IP)
        return CM_EINVAL;
    struct in_addr a4;
    if (inet_pton(AF_INET, ip, &a4) == 1)
        return v4_key(&a4, key);
    struct in6_addr a6;
    if (inet_pton(AF_INET6, ip, &a6) != 1)
        return CM_EINVAL;
    if (is_v4_mapped(&a6))
        return v4_key(&a6.s6_addr[12], key);
    /* Clear every bit past the prefix: all addresses of the network give one key. */
    for (int bit = ipv6_prefix; bit < 128; bit++)
        a6.s6_addr[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
    char text[INET6_ADDRSTRLEN];
    if (!inet_ntop(AF_INET6, &a6, text, sizeof text))
        return CM_EINVAL;
    snprintf(key, GW_CLIENT_KEY_MAX, "6:%s/%d", text, ipv6_prefix);
    return 0;
}

gw_limiter_t *gw_limiter_new(const gw_rate_t rates[GW_RL_COUNT], size_t max_entries,
                             int ipv6_prefix)
{
    gw_limiter_t *l = cm_xcalloc(1, sizeof *l);
    memcpy(l->rates, rates, sizeof l->rates);
    l->ipv6_prefix = ipv6_prefix >= 32 && ipv6_prefix <= 128 ? ipv6_prefix : 64;
    l->max_per_shard = max_entries / NSHARDS ? max_entries / NSHARDS : 1;
    for (int i = 0; i < NSHARDS; i++)
        pthread_mutex_init(&l->shards[i].mu, NULL);
    return l;
}

void gw_limiter_free(gw_limiter_t *l)
{
    if (!l)
        return;
    for (int i = 0; i < NSHARDS; i++) {
        for (size_t s = 0; s < NSLOTS; s++) {
            for (entry_t *e = l->shards[i].slots[s], *next; e; e = next) {
                next = e->next;
                free(e);
            }
        }
        pthread_mutex_destroy(&l->shards[i].mu);
    }
    free(l);
}

/* FNV-1a over the class and the address. */
static uint64_t key_hash(gw_rate_class_t c, const char *ip)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)c;
    for (const unsigned char *p = (const unsigned char *)ip; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

/* Drops buckets that would be full by now: a full bucket is the same as no bucket. */
static void sweep(gw_limiter_t *l, shard_t *sh, int64_t now_ms)
{
    for (size_t s = 0; s < NSLOTS; s++) {
        for (entry_t **pp = &sh->slots[s]; *pp;) {
            entry_t *e = *pp;
            const gw_rate_t *r = &l->rates[e->cls];
            double refill = (double)(now_ms - e->bucket.last_ms) * (double)r->burst /
                            ((double)r->period_s * 1000.0);
            if (e->bucket.tokens + refill >= (double)r->burst) {
                *pp = e->next;
                free(e);
                sh->n--;
            } else {
                pp = &e->next;
            }
        }
    }
}

static entry_t *find_or_add(gw_limiter_t *l, shard_t *sh, size_t slot, gw_rate_class_t c,
                            const char *ip, int64_t now_ms)
{
    for (entry_t *e = sh->slots[slot]; e; e = e->next)
        if (e->cls == c && strcmp(e->ip, ip) == 0)
            return e;
    if (sh->n >= l->max_per_shard)
        sweep(l, sh, now_ms);
    if (sh->n >= l->max_per_shard)
        return NULL;
    entry_t *e = cm_xcalloc(1, sizeof *e);
    e->cls = c;
    memcpy(e->ip, ip, strlen(ip) + 1);
    e->bucket.tokens = (double)l->rates[c].burst;
    e->bucket.last_ms = now_ms;
    e->next = sh->slots[slot];
    sh->slots[slot] = e;
    sh->n++;
    return e;
}

bool gw_limiter_take(gw_limiter_t *l, gw_rate_class_t c, const char *ip, int64_t now_ms,
                     int64_t *retry_after_s)
{
    if ((unsigned)c >= GW_RL_COUNT || !ip || strnlen(ip, MAX_IP) >= MAX_IP)
        return true; /* not an address we could have made; the caller passes peers only */
    char key[GW_CLIENT_KEY_MAX];
    if (gw_client_key(ip, l->ipv6_prefix, key) == 0)
        ip = key;
    uint64_t h = key_hash(c, ip);
    shard_t *sh = &l->shards[h % NSHARDS];
    size_t slot = (size_t)((h / NSHARDS) % NSLOTS);
    pthread_mutex_lock(&sh->mu);
    entry_t *e = find_or_add(l, sh, slot, c, ip, now_ms);
    bool ok = e ? gw_bucket_take(&e->bucket, &l->rates[c], now_ms, retry_after_s) : true;
    pthread_mutex_unlock(&sh->mu);
    return ok;
}

size_t gw_limiter_size(gw_limiter_t *l)
{
    size_t n = 0;
    for (int i = 0; i < NSHARDS; i++) {
        pthread_mutex_lock(&l->shards[i].mu);
        n += l->shards[i].n;
        pthread_mutex_unlock(&l->shards[i].mu);
    }
    return n;
}
