/*
 * cm/events.h — the event envelope of DESIGN.md ("Events").
 *
 *   {"id": "uuid", "type": "user.registered", "version": 1,
 *    "occurred_at": "2026-11-27T10:00:00.123Z", "source": "auth", "data": {...},
 *    "correlation_id": "the X-Request-Id of the request that caused it"}
 *
 * correlation_id is optional: an event caused by an HTTP request carries
 * that request's id, and an event caused by another event carries that
 * event's, so one registration can be followed through every service's
 * logs. On Kafka the message also carries a W3C "traceparent" header
 * derived from it (cm_event_traceparent).
 *
 * Topics are named after the event type; the Kafka key is the user id the
 * event is about. proto/events/<type>.schema.json describes each data.
 */
#ifndef CM_EVENTS_H
#define CM_EVENTS_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "cm/error.h"

#define CM_EV_USER_REGISTERED "user.registered"
#define CM_EV_USER_VERIFIED "user.verified"
#define CM_EV_VERIFY_REQUESTED "verify.requested"
#define CM_EV_RESET_REQUESTED "reset.requested"
#define CM_EV_PASSWORD_CHANGED "password.changed"
#define CM_EV_REFERRAL_CONVERTED "referral.converted"
#define CM_EV_REWARD_GRANTED "reward.granted"
#define CM_EV_MAIL_DEAD "mail.dead"
#define CM_EV_USER_DELETED "user.deleted"
/* Email change (issue 15): the confirm mail to the new address, the notice with the
 * cancel link to the old one, and the change itself once confirmed. */
#define CM_EV_EMAIL_CHANGE_REQUESTED "email.change.requested"
#define CM_EV_EMAIL_CHANGE_NOTICE "email.change.notice"
#define CM_EV_USER_EMAIL_CHANGED "user.email.changed"
#define CM_EV_SIGNIN_NEW "signin.new"

/* The longest username and email a consumer takes from an event (the
 * producer's own limits are 30 and 254; a longer value is not ours). */
#define CM_EV_USERNAME_MAX 64
#define CM_EV_EMAIL_MAX 254

/** Largest envelope accepted by cm_event_parse (bytes). */
#define CM_EVENT_MAX_BYTES (64 * 1024)

/** Longest correlation id (the longest request id cm/http.h accepts). */
#define CM_EVENT_MAX_CORRELATION 64
/** Length of a traceparent header value: "00-<32 hex>-<16 hex>-01". */
#define CM_TRACEPARENT_LEN 55

/** A parsed envelope. The struct is the caller's; data is a reference it owns. */
typedef struct cm_event {
    char id[37];
    char type[64];
    int version;
    char occurred_at[32];
    char source[32];
    json_t *data;                                      /* owned: released by cm_event_dispose() */
    char correlation_id[CM_EVENT_MAX_CORRELATION + 1]; /* "" when the envelope has none */
} cm_event_t;

/** True if s is an acceptable correlation id: 1-64 of [A-Za-z0-9._-] (a request id). */
bool cm_event_correlation_valid(const char *s);

/**
 * Sets env's correlation_id to id. Returns 0; CM_EINVAL when env is not an
 * object or id is not valid (cm_event_correlation_valid), and then env is
 * unchanged. A NULL or empty id is no correlation: 0, nothing set.
 */
int cm_event_set_correlation(json_t *env, const char *id);

/**
 * Writes the W3C trace context header value for an event into out
 * ("00-" trace id "-" parent id "-01", NUL-terminated): the trace id is
 * the correlation id's 32 hex digits when it is a UUID, else the first 16
 * bytes of its BLAKE2b hash; the parent id is the event id's first 16 hex
 * digits. Returns 0, or CM_EINVAL for an invalid correlation id or an
 * event id that is not a UUID.
 */
int cm_event_traceparent(const char *correlation_id, const char *event_id,
                         char out[CM_TRACEPARENT_LEN + 1]);

/**
 * Builds a new envelope with a fresh id and the current time. data is
 * stolen (its reference passes to the envelope). Returns a new reference;
 * the caller json_decref()s it. NULL if type/source are not valid.
 */
json_t *cm_event_new(const char *type, const char *source, json_t *data);

/**
 * Parses and validates an envelope from untrusted bytes (not NUL-terminated).
 * Returns 0 and fills *out, or CM_ETOOBIG / CM_EPARSE (not JSON, a missing
 * or mistyped member, an id that is not a UUID, data not an object).
 * On failure *out holds nothing to dispose.
 */
CM_MUST_CHECK int cm_event_parse(const char *bytes, size_t len, cm_event_t *out);

/** Releases what cm_event_parse put into ev. NULL-safe and idempotent. */
void cm_event_dispose(cm_event_t *ev);

/* ---- reading the fields of an event's data ---------------------------------- */

/**
 * Returns obj[key] when it is a string of 1..max bytes with no NUL and no
 * control character (below 0x20, or 0x7f), else NULL (also for a missing
 * key or an obj that is NULL or not an object). The string is borrowed
 * from obj: it lives as long as obj does.
 */
const char *cm_event_text(const json_t *obj, const char *key, size_t max);

/**
 * Returns obj[key] when it is a UUID in canonical text form (any version,
 * any case), else NULL; borrowed from obj like cm_event_text().
 */
const char *cm_event_uuid(const json_t *obj, const char *key);

#endif
