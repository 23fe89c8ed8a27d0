/*
 * proxy.h — forwarding to an upstream service with libcurl.
 *
 * An upstream is one or more base URLs (replicas) chosen round-robin; a
 * request whose connection could not be made is tried on the next address
 * (it never reached a service, so retrying cannot repeat a side effect).
 * Each upstream keeps a bounded pool of CURL easy handles: a handle keeps
 * its connections alive, so a worker thread that takes one reuses a warm
 * connection. The pool is guarded by a mutex; a handle is used by one
 * thread at a time. The bound matters: a civetweb upstream gives each
 * kept-alive connection a worker thread of its own, so more connections
 * than its workers would leave the extra ones queued behind idle ones.
 *
 * Only an allow-list of client headers is forwarded (Content-Type,
 * Authorization, Accept, User-Agent); hop-by-hop headers and any client-
 * supplied identity header (X-User-Id, X-Forwarded-User, X-Real-IP, ...)
 * are dropped by construction. The gateway adds X-Request-Id,
 * X-Forwarded-For and X-Real-IP (the client address it decided on).
 */
#ifndef GW_PROXY_H
#define GW_PROXY_H

#include <stdbool.h>
#include <stddef.h>

#include "cm/error.h"
#include "cm/util.h"
#include "config.h"

struct curl_slist;

/** Largest upstream answer relayed; bigger ones end as 502. */
#define GW_MAX_RESPONSE (1024 * 1024)
/** Longest query string forwarded. */
#define GW_MAX_QUERY 2048

typedef struct gw_upstream gw_upstream_t;

/** Reads one client header by name (case-insensitive); NULL when absent. */
typedef const char *(*gw_header_fn)(const void *src, const char *name);

/** What to send upstream. Every pointer is borrowed for the call. */
typedef struct gw_fwd_request {
    const char *method;         /* "GET" or "POST" */
    const char *path;           /* starts with '/' */
    const char *query;          /* without '?', or NULL */
    cm_slice_t body;            /* POST body; {NULL, 0} for none */
    struct curl_slist *headers; /* from gw_upstream_headers() */
} gw_fwd_request_t;

/** What came back. The caller disposes it with gw_fwd_response_dispose(). */
typedef struct gw_fwd_response {
    long status;
    cm_buf_t body;
    char content_type[128];
    char retry_after[32];
    char www_authenticate[256];
    char cache_control[128];
    bool too_big; /* the body passed GW_MAX_RESPONSE */
} gw_fwd_response_t;

/**
 * Creates an upstream named name ("auth") over the base URLs in urls
 * (copied), with connect and total timeouts in milliseconds and at most
 * max_conns handles (so at most max_conns requests in flight and as many
 * kept-alive connections per address). Returns a new upstream;
 * gw_upstream_free().
 */
gw_upstream_t *gw_upstream_new(const char *name, const gw_list_t *urls, int connect_timeout_ms,
                               int timeout_ms, size_t max_conns);

/** Frees the upstream and its pooled handles. NULL-safe; no request may be in flight. */
void gw_upstream_free(gw_upstream_t *u);

/** The upstream's name (borrowed). */
const char *gw_upstream_name(const gw_upstream_t *u);

/**
 * Forwards one request. Returns 0 with *out filled (any HTTP status, the
 * upstream's own errors included), CM_EUNAVAIL when no address accepted
 * a connection, CM_ETIMEDOUT when the answer did not come in time,
 * CM_EBUSY when all max_conns handles stayed busy for the whole timeout,
 * CM_ETOOBIG when the answer was too large, CM_EIO for other transport
 * failures. *out is initialized in every case and must be disposed.
 */
CM_MUST_CHECK int gw_upstream_forward(gw_upstream_t *u, const gw_fwd_request_t *rq,
                                      gw_fwd_response_t *out);

/** Frees a response's body. */
void gw_fwd_response_dispose(gw_fwd_response_t *r);

/* ---- headers (pure, for the handler and the tests) ---------------------- */

/** True if a client header of this name is passed upstream (the allow-list). */
bool gw_header_forwardable(const char *name);

/**
 * Builds the upstream header list: the allow-listed client headers read
 * through get(src, name), then X-Request-Id, X-Forwarded-For (xff) and
 * X-Real-IP (client_ip), and an empty Expect (no 100-continue round trip).
 * Values holding CR or LF are skipped. Returns a new list the caller frees
 * with curl_slist_free_all().
 */
struct curl_slist *gw_upstream_headers(gw_header_fn get, const void *src, const char *request_id,
                                       const char *xff, const char *client_ip);

#endif
