/*
 * config.h — the auth service's configuration, read once from the
 * environment at start-up (cm/config.h) and then only read.
 */
#ifndef AUTH_CONFIG_H
#define AUTH_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/config.h"
#include "cm/error.h"
#include "cm/netaddr.h"

/** At most this many entries in GATEWAY_ADDRESSES. */
#define AUTH_GATEWAY_NETS_MAX 32

/** One address or CIDR block as cm_cidr_check accepts it ("10.0.0.0/8", "::1"). */
typedef struct auth_net {
    char cidr[CM_IP_TEXT_MAX + 4]; /* the address, "/" and up to 3 digits */
} auth_net_t;

/** Every setting of linktr-auth; strings are owned by the struct. */
typedef struct auth_config {
    cm_service_config_t svc;    /* PORT 8001, HTTP_THREADS 16, DB_POOL_SIZE 10, ... */
    cm_jwt_config_t jwt;        /* JWT_PUBLIC_KEYS (optional: older keys), ISSUER, AUDIENCE */
    char *jwt_private_key_file; /* JWT_PRIVATE_KEY_FILE, required (PEM P-256) */
    char *jwt_key_id;           /* JWT_KEY_ID, dev-1 */
    int access_ttl_s;           /* ACCESS_TTL_S, 900 */
    int refresh_ttl_days;       /* REFRESH_TTL_DAYS, 30 */
    int refresh_grace_s;        /* REFRESH_GRACE_S, 10 */
    uint8_t mailer_seal_pk[32]; /* MAILER_SEAL_PUBLIC_KEY, required */
    unsigned long long argon2_opslimit; /* ARGON2_OPSLIMIT, 2 */
    size_t argon2_memlimit;             /* ARGON2_MEMLIMIT_KIB (19456) in bytes */
    int hash_workers;                   /* HASH_WORKERS, 0 = cores */
    int hash_queue;                     /* HASH_QUEUE, 64 */
    /* GATEWAY_ADDRESSES, "127.0.0.1/32,::1/128": peers whose X-Real-IP is believed. */
    auth_net_t gateway_nets[AUTH_GATEWAY_NETS_MAX];
    int gateway_nets_count;
    int email_change_ttl_s; /* EMAIL_CHANGE_TTL_S, 86400: how long email-change links work */
} auth_config_t;

/**
 * Parses a comma-separated list of addresses and CIDR blocks ("10.0.0.0/8,
 * ::1") into out (room for cap entries); an address alone is a /32 or
 * /128. Returns 0 with *n set, or CM_EINVAL naming nothing (the caller
 * names the variable) on a malformed entry, an empty list or too many.
 */
CM_MUST_CHECK int auth_nets_parse(const char *list, auth_net_t *out, int cap, int *n);

/**
 * True if the textual address ip (IPv4, IPv6 or IPv4-mapped IPv6) lies in
 * one of the n blocks of nets.
 */
bool auth_nets_contain(const auth_net_t *nets, int n, const char *ip);

/**
 * Reads and validates every variable into *cfg. On a problem prints one
 * line per bad variable (naming it) to stderr and returns CM_EINVAL; then
 * *cfg holds nothing to dispose.
 */
CM_MUST_CHECK int auth_config_load(auth_config_t *cfg);

/** Frees the strings of a loaded config. NULL-safe and idempotent. */
void auth_config_dispose(auth_config_t *cfg);

#endif
