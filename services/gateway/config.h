/*
 * config.h — the gateway's configuration, read once from the environment.
 *
 * gw_config_load() fills a gw_config_t that the rest of the gateway only
 * reads (it is shared by every civetweb worker thread). Lists such as
 * AUTH_URL, TRUSTED_PROXIES and CORS_ORIGINS are comma-separated; every bad
 * variable is named on stderr by cm_cfg_finish().
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "cm/config.h"
#include "cm/log.h"

/** Route classes, each with its own per-client-IP token bucket. */
typedef enum gw_rate_class {
    GW_RL_LOGIN = 0,
    GW_RL_REGISTER,
    GW_RL_FORGOT,
    GW_RL_OTHER,
    GW_RL_COUNT
} gw_rate_class_t;

/** One class's bucket: up to burst requests at once, refilled at burst per period_s. */
typedef struct gw_rate {
    long long burst;
    long long period_s;
} gw_rate_t;

/** A list of strings parsed from a comma-separated variable; owns its strings. */
typedef struct gw_list {
    char **items;
    size_t n;
} gw_list_t;

typedef struct gw_config {
    cm_service_config_t svc; /* PORT 8000, BIND_ADDRESS, LOG_LEVEL, HTTP_THREADS 32, ... */
    cm_jwt_config_t jwt;     /* JWT_PUBLIC_KEYS (required), JWT_ISSUER, JWT_AUDIENCE */
    gw_list_t auth_urls;     /* base URLs without a trailing slash */
    gw_list_t referral_urls;
    int connect_timeout_ms;
    int upstream_timeout_ms;
    int upstream_max_conns; /* per upstream: requests in flight and kept-alive connections */
    int ipv6_prefix;        /* RATE_LIMIT_IPV6_PREFIX, 64: IPv6 clients keyed by this prefix */
    bool rate_limits;       /* false when RATE_LIMITS=off */
    int rate_replicas;      /* RATE_LIMIT_REPLICAS: rates[] are already this replica's share */
    gw_rate_t rates[GW_RL_COUNT];
    gw_list_t trusted_proxies; /* IP addresses and CIDR ranges as text */
    gw_list_t cors_origins;    /* exact origins, e.g. "https://app.example.com" */
    bool jwks_refresh;         /* fetch auth's JWKS when an unknown kid appears */
    char *pages_secret;        /* PAGES_SECRET: CSRF and click-hash keys; NULL → random */
    char *signup_url;          /* SIGNUP_URL: where /r/<code> sends people; NULL → ours */
    int attribution_days;      /* REFERRAL_ATTRIBUTION_DAYS, 30: the referral cookie's life */
} gw_config_t;

/**
 * Reads the environment into *cfg (the caller owns the storage). Returns 0,
 * or CM_EINVAL after printing one line per bad variable; *cfg must be
 * disposed either way.
 */
CM_MUST_CHECK int gw_config_load(gw_config_t *cfg);

/** Frees everything gw_config_load() allocated. NULL-safe, idempotent. */
void gw_config_dispose(gw_config_t *cfg);

/**
 * Splits a comma-separated value into trimmed, non-empty items (copied
 * into *out, which the caller disposes with gw_list_dispose). Returns 0 or
 * CM_EPARSE when an item is empty ("a,,b") or the list has none.
 */
CM_MUST_CHECK int gw_list_parse(const char *value, gw_list_t *out);

/** Frees a list's items. NULL-safe. */
void gw_list_dispose(gw_list_t *l);

/**
 * Parses a RATE_LIMITS value into *on and rates[] (which must already
 * hold the defaults): "on", "off", or a comma list of class=N/S (N
 * requests per S seconds; classes login, register, forgot-password,
 * other; unnamed classes keep their defaults). Returns 0 or CM_EPARSE.
 */
CM_MUST_CHECK int gw_rate_spec_parse(const char *spec, bool *on, gw_rate_t rates[GW_RL_COUNT]);

/**
 * Turns cluster-wide rates into one replica's share, for replicas gateway
 * replicas that each keep their own buckets (RATE_LIMIT_REPLICAS): each
 * bucket gets burst/replicas tokens (at least 1) and a period stretched so
 * its refill rate is at most burst/(replicas × period). With requests
 * spread over the replicas a client then gets the configured rate in
 * total, never more; when they all land on one replica it gets a
 * replica's share, never less. replicas 1 changes nothing.
 */
void gw_rate_divide(gw_rate_t rates[GW_RL_COUNT], long long replicas);

/** The name of a rate class as written in RATE_LIMITS ("forgot-password"). */
const char *gw_rate_class_name(gw_rate_class_t c);

#endif
