/*
 * cm/jsonscan.h — a bound on untrusted JSON before a recursive parser sees it.
 *
 * jansson parses recursively: each level of nesting costs about 80 bytes of
 * stack, and its own cap is 2,048 levels. civetweb's worker threads have a
 * fixed 100 KiB stack (Debian's libcivetweb 1.15 sets 0x19000 and offers no
 * option), so a 1 KB body of '[' repeated 1,000 times, or a token payload
 * like it, overflows the stack and kills the whole process. cm_json_scan
 * walks the bytes once, in a loop with constant stack, and refuses input
 * nested deeper or larger than the caller allows, so the parse that follows
 * is bounded.
 *
 * The scan is not a validator: it counts '[' and '{' outside strings
 * (a string ends at an unescaped '"'; a backslash escapes the next byte),
 * and leaves every syntax error to the parser, which names it better. A
 * stray ']' or '}' never takes the depth below zero.
 *
 * Call it before every json_loadb() of bytes from the network, a token or
 * a Kafka message on a thread whose stack is not the 8 MiB main thread's.
 * Where the tree parses JSON, and why each is bounded or not:
 *   - request bodies: cm_req_json_raw_or_reply (http.c), 64 levels;
 *   - token header and signed payload: jwt.c, 4 levels;
 *   - Kafka event envelopes: cm_event_parse (events.c), 16 levels;
 *   - auth's JWKS answer fetched by the gateway: routes.c, 32 levels;
 *   - auth's and referral's answers gathered by the gateway's export:
 *     export.c, 32 levels;
 *   - not bounded: referral's REFERRAL_RULES_FILE (rules.c; a local file
 *     the operator wrote, read once on the 8 MiB main thread at start-up)
 *     and librdkafka's statistics JSON (kafka.c on_stats; written by
 *     librdkafka itself, a fixed shape a few levels deep), and the sessions
 *     array auth's export reads back from PostgreSQL (store.c
 *     auth_store_sessions_export; jsonb_agg over flat objects that our own
 *     query builds, two levels deep).
 */
#ifndef CM_JSONSCAN_H
#define CM_JSONSCAN_H

#include <stddef.h>

#include "cm/error.h"

/** Deepest nesting accepted in a request body (objects and arrays count alike). */
#define CM_JSON_MAX_DEPTH_BODY 64

/** Deepest nesting accepted in a JWT header or payload: ours are flat objects (depth 1). */
#define CM_JSON_MAX_DEPTH_TOKEN 4

/** Deepest nesting accepted in a Kafka event envelope (the data object sits at level 2). */
#define CM_JSON_MAX_DEPTH_EVENT 16

/** Deepest nesting accepted in an upstream's answer or JWKS read by the gateway. */
#define CM_JSON_MAX_DEPTH_UPSTREAM 32

/**
 * Scans len bytes of untrusted JSON (not NUL-terminated; NUL bytes are just
 * bytes) and checks that they are at most max_bytes long and nested at most
 * max_depth levels ("[]" and "{}" are one level; a scalar is level 0).
 * Returns 0, CM_ETOOBIG (len > max_bytes) or CM_ERANGE (nested deeper).
 * On CM_ERANGE *where (if not NULL) is the offset of the bracket that went
 * one level too deep; otherwise it is len. bytes may be NULL only when len
 * is 0. Uses constant stack and one pass; never reads past len.
 */
CM_MUST_CHECK int cm_json_scan(const char *bytes, size_t len, size_t max_bytes, int max_depth,
                               size_t *where);

#endif
