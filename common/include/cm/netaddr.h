/*
 * cm/netaddr.h — IP addresses and ranges (CIDR) in text form.
 *
 * One parser for every place that reads an address: the gateway's
 * TRUSTED_PROXIES and its rate-limit keys, auth's trusted gateways. An
 * IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address it maps,
 * so one client is one address however the socket reports it.
 */
#ifndef CM_NETADDR_H
#define CM_NETADDR_H

#include <stdbool.h>
#include <stddef.h>

#include "cm/error.h"

/** Room for an address in text, NUL included (INET6_ADDRSTRLEN). */
#define CM_IP_TEXT_MAX 46

/** An address in binary: family AF_INET (addr[0..4)) or AF_INET6 (addr[0..16)). */
typedef struct cm_ip {
    int family;
    unsigned char addr[16];
} cm_ip_t;

/** Parses an IPv4 or IPv6 address (no brackets, no zone); IPv4-mapped IPv6 becomes IPv4. */
bool cm_ip_parse(const char *s, cm_ip_t *out);

/** True if s is an IPv4 or IPv6 address in text form. */
bool cm_ip_valid(const char *s);

/**
 * Writes ip in canonical text (IPv6 compressed and lower case) into buf,
 * which holds at least CM_IP_TEXT_MAX bytes. Returns 0 or CM_EINVAL.
 */
CM_MUST_CHECK int cm_ip_format(const cm_ip_t *ip, char *buf, size_t cap);

/**
 * Checks an address or CIDR range such as "10.0.0.0/8" or "fd00::/8" (/0
 * to /32 for IPv4, /0 to /128 for IPv6). An IPv4-mapped IPv6 range
 * (::ffff:10.0.0.0/104) stands for the IPv4 range it maps (10.0.0.0/8) and
 * must be /96 or longer. Returns 0, CM_EPARSE when s is neither an address
 * nor a range, or CM_ERANGE when the range has address bits set after its
 * prefix ("10.0.0.1/8": a typo, not a range).
 */
CM_MUST_CHECK int cm_cidr_check(const char *s);

/**
 * True if ip (text) lies in cidr (an address or range as cm_cidr_check
 * accepts; false for anything it refuses). IPv4-mapped IPv6 addresses are
 * compared as IPv4; IPv6 ranges never match IPv4 addresses, nor the reverse.
 */
bool cm_cidr_match(const char *ip, const char *cidr);

/** True if ip (text) lies in one of the n ranges (as cm_cidr_match; NULL entries skipped). */
bool cm_ip_in_ranges(const char *ip, char *const *ranges, size_t n);

#endif
