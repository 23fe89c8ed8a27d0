/*
 * clientaddr.h — who the client is.
 *
 * The gateway alone decides the client address (DESIGN.md, HTTP edge): the
 * rightmost X-Forwarded-For hop that is not a trusted proxy, believed only
 * from a TRUSTED_PROXIES peer. It sends the decision on as X-Real-IP (and a
 * cleaned X-Forwarded-For); the services believe X-Real-IP only from the
 * gateway's addresses. Address parsing itself is common (cm/netaddr.h).
 */
#ifndef GW_CLIENTADDR_H
#define GW_CLIENTADDR_H

#include <stdbool.h>

#include "cm/util.h"
#include "config.h"

/** Longest X-Forwarded-For value believed from a trusted proxy. */
#define GW_MAX_XFF 512

/**
 * True if ip (text) equals one of the addresses or lies in one of the
 * ranges in trusted (TRUSTED_PROXIES entries, see cm_cidr_match).
 */
bool gw_ip_trusted(const char *ip, const gw_list_t *trusted);

/**
 * Decides the client address and the X-Forwarded-For to send. An incoming
 * X-Forwarded-For is believed only when the peer is a trusted proxy and
 * every entry is an IP address: then the client is the rightmost entry
 * that is not itself a trusted proxy, and the chain sent on is the client,
 * the proxies after it and the peer appended (entries left of the client
 * were written by the client and are dropped, so the first entry is always
 * the client). Otherwise the client is the peer and the chain is just the
 * peer: a client's own X-Forwarded-For is never passed on. Every address
 * is written in canonical text (IPv4-mapped IPv6 as IPv4, IPv6 compressed
 * and lower case), so the first entry of *xff is exactly *client_ip.
 * *client_ip and *xff are allocated in the arena.
 */
void gw_client_addr(cm_arena_t *a, const char *peer, const char *incoming_xff,
                    const gw_list_t *trusted, const char **client_ip, const char **xff);

#endif
