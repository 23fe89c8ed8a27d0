/*
 * proxy.h — forwarding to an upstream service.
 *
 * An upstream is one or more base URLs (replicas) chosen round-robin; a
 * request whose connection could not be made is tried on the next address
 * (it never reached a service, so retrying cannot repeat a side effect).
 * At most max_conns requests per upstream are in flight; the bound matters:
 * a civetweb upstream gives each kept-alive connection a worker thread of
 * its own, so more connections than its workers would leave the extra ones
 * queued behind idle ones.
 *
 * Two clients, chosen per address by its scheme:
 * - http:// goes through our own small HTTP/1.1 client: a pool of kept-alive
 *   sockets (at most max_conns per address, none reused after
 *   GW_UPSTREAM_IDLE_MS idle, which is below the services' 500 ms
 *   KEEPALIVE_TIMEOUT_MS default), one write per request, the answer read
 *   with poll() against the request's deadline; a host name is looked up
 *   again every 30 s by one request while the others use the last answer.
 *   It accepts only what our
 *   services send: an HTTP/1.x status line with a final status (200-599), a
 *   head of at most GW_MAX_RESPONSE_HEAD bytes, and a body framed by
 *   Content-Length (none on 204/304). A chunked answer, a missing or
 *   malformed or repeated Content-Length, folded or malformed header lines
 *   and interim (1xx) answers are refused as a broken answer (CM_EPARSE,
 *   502). A kept-alive socket that failed before any answer byte is retried
 *   once on a fresh connection, only when the request cannot have been
 *   processed twice: the write itself failed, or it is a GET (no side
 *   effect). libcurl cost more CPU per request than the service behind it.
 * - https:// (or an address our parser does not take) goes through libcurl:
 *   a bounded pool of easy handles that keep their connections alive
 *   (CURLOPT_MAXAGE_CONN 1 s: curl counts in seconds, so an https upstream
 *   needs a KEEPALIVE_TIMEOUT_MS above a second, as deploy/k8s sets).
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
#include "cm/metrics.h"
#include "cm/util.h"
#include "config.h"

struct curl_slist;

/** Largest upstream answer relayed; bigger ones end as 502. */
#define GW_MAX_RESPONSE (1024 * 1024)
/** Longest query string forwarded. */
#define GW_MAX_QUERY 2048
/** Largest upstream answer head (status line and headers) our client reads; more is a 502. */
#define GW_MAX_RESPONSE_HEAD (16 * 1024)
/** An idle upstream connection older than this is closed, not reused (services close at 500 ms). */
#define GW_UPSTREAM_IDLE_MS 250

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

/** Requests waiting for one of u's slots now (all of them are in flight). */
size_t gw_upstream_waiting(gw_upstream_t *u);

/**
 * Keeps gauge (labels: upstream; borrowed, must outlive u) at the number of
 * requests waiting for one of u's slots: above zero, the upstream is taking
 * all the connections the gateway may open to it and requests queue at the
 * edge.
 */
void gw_upstream_export_waiting(gw_upstream_t *u, cm_family_t *gauge);

/**
 * Forwards one request. Returns 0 with *out filled (any HTTP status, the
 * upstream's own errors included), CM_EUNAVAIL when no address accepted
 * a connection, CM_ETIMEDOUT when the answer did not come in time,
 * CM_EBUSY when all max_conns slots stayed busy for the whole timeout,
 * CM_ETOOBIG when the answer was too large, CM_EPARSE when the answer was
 * not one our client accepts (see above), CM_EINVAL when the request's
 * method, path or query holds bytes a request line cannot carry, CM_EIO
 * for other transport failures. *out is initialized in every case and
 * must be disposed.
 */
CM_MUST_CHECK int gw_upstream_forward(gw_upstream_t *u, const gw_fwd_request_t *rq,
                                      gw_fwd_response_t *out);

/** Frees a response's body. */
void gw_fwd_response_dispose(gw_fwd_response_t *r);

/* ---- the upstream answer's head (pure, for the client, the tests and the fuzzer) ---- */

/** How a parsed head frames what follows it. */
typedef struct gw_resp_framing {
    size_t head_len;       /* bytes of the head, the blank line included */
    size_t content_length; /* body bytes that follow the head */
    bool keep_alive;       /* the connection may carry the next request */
} gw_resp_framing_t;

/**
 * Finds the end of an answer's head in buf[0..len): returns the head's
 * length (through the CRLF CRLF), or 0 when it is not complete yet.
 */
size_t gw_resp_head_end(const char *buf, size_t len);

/**
 * Parses a complete head buf[0..head_len) (as found by gw_resp_head_end).
 * Fills out->status and its relayed headers (content_type, retry_after,
 * www_authenticate, cache_control; a value too long for its field or
 * holding control bytes is left out) and *f. Returns 0, CM_EPARSE for a
 * head our client refuses (proxy.h's list), or CM_ETOOBIG with
 * out->too_big set when Content-Length passes GW_MAX_RESPONSE. Reads no
 * byte past head_len; needs no NUL terminator.
 */
CM_MUST_CHECK int gw_resp_head_parse(const char *buf, size_t head_len, gw_fwd_response_t *out,
                                     gw_resp_framing_t *f);

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
