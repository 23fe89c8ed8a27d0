/*
 * raw_client.h — plain TCP clients for tests that must misbehave the way
 * no HTTP library will: heads and bodies sent a byte at a time, bodies
 * shorter than announced, and a clock on when the server hangs up.
 *
 * Every call is bounded by a timeout; none aborts the test on a network
 * error (the server closing early is what these tests look for).
 */
#ifndef LINKTR_RAW_CLIENT_H
#define LINKTR_RAW_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/util.h"

/**
 * Connects to a numeric address (IPv4 or IPv6) and port. When local is not
 * NULL the socket is bound to that address first (to speak from an extra
 * loopback address). Returns the socket, or -1.
 */
int t_raw_connect(const char *addr, int port, const char *local);

/** Sends all of data unless the server closed (then returns false). */
bool t_raw_send(int s, const void *data, size_t len);

/** What a trickle saw: the bytes the server sent and when it hung up. */
typedef struct t_trickle {
    cm_buf_t got;      /* everything the server sent (NUL-terminated) */
    int64_t closed_ms; /* ms from the start until EOF or reset; -1 while open */
    size_t sent;       /* bytes of the trickle that were sent */
} t_trickle_t;

/**
 * Sends bytes (cycling through them) one every interval_ms while reading
 * whatever the server sends, until the server closes the connection or
 * max_ms pass. Fills *out (dispose with t_trickle_dispose).
 */
void t_raw_trickle(int s, const char *bytes, int interval_ms, int max_ms, t_trickle_t *out);

/** Frees what t_raw_trickle filled in. */
void t_trickle_dispose(t_trickle_t *t);

/**
 * Reads until the server closes or timeout_ms pass, sending nothing.
 * Returns the ms waited until the close, or -1 when it stayed open; the
 * bytes read are appended to got when it is not NULL.
 */
int64_t t_raw_wait_close(int s, int timeout_ms, cm_buf_t *got);

/** The status code of the first answer in text ("HTTP/1.1 408 ..."), or 0. */
int t_raw_status(const char *text);

#endif
