/*
 * signin.h — what a session remembers about where it started: a coarse
 * class of the client's User-Agent ("Firefox on Linux", "curl", "Other")
 * and the network of its address (IPv4 /24, IPv6 /64). Both are pure
 * functions of request data, chosen from fixed tables or recomputed from a
 * parsed address, so what they return never carries the client's bytes:
 * it is safe in a listing, an event and a mail.
 */
#ifndef AUTH_SIGNIN_H
#define AUTH_SIGNIN_H

#include <stddef.h>

/** Room for a user agent class, NUL included ("Samsung Internet on Android" and longer). */
#define AUTH_UA_CLASS_MAX 48
/** Room for a network key (an address as text, "/64", NUL included). */
#define AUTH_NET_KEY_MAX 52
/** Bytes of a User-Agent header the classifier looks at; the rest is ignored. */
#define AUTH_UA_SCAN_MAX 512

/**
 * Classifies a User-Agent header value (NULL or empty: "Other") as
 * "<browser> on <system>" (Firefox, Chrome, Edge, Opera, Safari, Samsung
 * Internet; Windows, macOS, Linux, Android, iOS, ChromeOS), "<browser>"
 * when the system is unknown, "curl", "Wget", or "Other" (bots, libraries,
 * anything else). Returns static storage.
 */
const char *auth_ua_class(const char *ua);

/**
 * Writes the network key of ip into out: "a.b.c.0/24" for IPv4 (an
 * IPv4-mapped IPv6 address counts as IPv4), "<first 64 bits>::/64" for
 * IPv6, "unknown" when ip is NULL, empty or not an address.
 */
void auth_net_key(const char *ip, char out[AUTH_NET_KEY_MAX]);

#endif
