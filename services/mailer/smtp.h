/*
 * smtp.h — the SMTP transport (libcurl), and the retry schedule.
 *
 * SMTP_URL is smtp://host[:port] (STARTTLS when SMTP_STARTTLS is on, then
 * required) or smtps://host[:port] (TLS from the start); a user and
 * password come from the URL or from SMTP_USER / SMTP_PASSWORD. Results
 * are sorted by what the caller can do about them:
 *
 *   0            accepted by the server
 *   CM_EUNAVAIL  the server could not be reached or dropped us (retry
 *                later; every message would fail the same way)
 *   CM_EBUSY     the server refused this message for now (4xx): retry it
 *                with backoff, up to a limit
 *   CM_EIO       the server refused it for good (5xx): do not retry
 */
#ifndef MAIL_SMTP_H
#define MAIL_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/error.h"

/** How to reach the server; strings borrowed. */
typedef struct mail_smtp {
    const char *url;      /* smtp:// or smtps:// */
    const char *user;     /* NULL: none, or from the URL */
    const char *password; /* NULL: none, or from the URL */
    bool starttls;        /* require STARTTLS on smtp:// */
    int timeout_ms;       /* whole transaction */
} mail_smtp_t;

/**
 * Sends len bytes of msg (a whole RFC 5322 message with CRLF line ends)
 * from the address inside from ("name <addr>" or "addr") to the address
 * to. Returns one of the codes above, or CM_EINVAL for bad arguments.
 */
CM_MUST_CHECK int mail_smtp_send(const mail_smtp_t *s, const char *from, const char *to,
                                 const char *msg, size_t len);

/**
 * The wait before retry number attempt (1 = the first retry): base_ms
 * doubled per attempt, capped at cap_ms, with "equal jitter" (half fixed,
 * half random from rnd), so a burst of failures does not retry in step.
 */
int64_t mail_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint32_t rnd);

#endif
