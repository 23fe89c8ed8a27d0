/*
 * ratelimit.h — per-client-IP token buckets, one per route class.
 *
 * A bucket holds up to burst tokens and refills at burst per period_s
 * seconds; a request takes one token or is refused with the whole seconds
 * until one is back (the Retry-After). Buckets live in a sharded hash
 * table (a mutex per shard, so worker threads rarely contend). The table
 * is bounded: when a shard is full, buckets that have refilled completely
 * are dropped (they carry no state); if none can be dropped, a new client
 * is let through untracked rather than growing memory without bound.
 *
 * Clients are keyed by network, not by address: an IPv4 address is one
 * client, an IPv6 client is its prefix (a /64 by default: what one
 * subscriber is given, RFC 6177), so the 2^64 addresses of one site share
 * one bucket. An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is IPv4.
 */
#ifndef GW_RATELIMIT_H
#define GW_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/error.h"
#include "config.h"

/** One token bucket. A new bucket is full: tokens = burst, last_ms = now. */
typedef struct gw_bucket {
    double tokens;
    int64_t last_ms;
} gw_bucket_t;

/**
 * Refills b for the time since b->last_ms and takes one token. Returns
 * true when allowed; otherwise false and *retry_after_s (≥ 1) is how long
 * until a token is back. Pure: the caller supplies now_ms.
 */
bool gw_bucket_take(gw_bucket_t *b, const gw_rate_t *r, int64_t now_ms, int64_t *retry_after_s);

typedef struct gw_limiter gw_limiter_t;

/** Longest client key gw_client_key writes, NUL included. */
#define GW_CLIENT_KEY_MAX 64

/**
 * Writes the bucket key of address ip to key (GW_CLIENT_KEY_MAX bytes):
 * "4:a.b.c.d" for IPv4 and IPv4-mapped IPv6, "6:<network>/<prefix>" for
 * IPv6 with the bits past ipv6_prefix (32–128) cleared. Returns 0, or
 * CM_EINVAL when ip is not an IP address or the prefix is out of range.
 */
CM_MUST_CHECK int gw_client_key(const char *ip, int ipv6_prefix, char key[GW_CLIENT_KEY_MAX]);

/**
 * Creates a limiter for the rates (copied) tracking at most max_entries
 * clients, keying IPv6 clients by their first ipv6_prefix bits (32–128;
 * anything else is taken as 64).
 */
gw_limiter_t *gw_limiter_new(const gw_rate_t rates[GW_RL_COUNT], size_t max_entries,
                             int ipv6_prefix);

/** Frees. NULL-safe. */
void gw_limiter_free(gw_limiter_t *l);

/**
 * Takes a token for client ip (an address as text, keyed by gw_client_key)
 * in class c at now_ms. A text that is not an IP address is keyed as it is. Returns true when
 * allowed; otherwise false with *retry_after_s set. Thread-safe.
 */
bool gw_limiter_take(gw_limiter_t *l, gw_rate_class_t c, const char *ip, int64_t now_ms,
                     int64_t *retry_after_s);

/** Number of clients currently tracked (for tests and metrics). */
size_t gw_limiter_size(gw_limiter_t *l);

#endif
