/*
 * cm/http.h — the HTTP server every service runs: a thin layer over civetweb.
 *
 * What it gives a service:
 *   - a route table (method + exact path; a trailing slash is optional),
 *     404 and 405 (with Allow) as problem+json for everything else, methods
 *     civetweb itself does not parse (TRACE, made-up tokens) included;
 *   - HEAD answered by the GET route (RFC 9110): the head GET would get,
 *     Content-Length included, and no body — for errors too;
 *   - a request object with an arena that dies with the request, the
 *     request id (X-Request-Id taken when well-formed, else a new UUID,
 *     echoed on every answer), and the peer address;
 *   - JSON body reading with a size cap (413), a Content-Type check (415)
 *     and parse errors (400), all answered as problem+json;
 *   - reply helpers that add the security headers to every answer;
 *   - GET /healthz, /readyz (a service callback says what is down) and
 *     /metrics (the service's registry plus per-route request counts and
 *     latency histograms), answered before the route table; a public
 *     listener (health_only) keeps only /healthz;
 *   - one access-log line per request at info (method, route pattern,
 *     status, duration_ms and the request id as JSON fields).
 *
 * Handlers run on civetweb worker threads; the route's ctx and the
 * server's state are shared between threads and must be thread-safe.
 * Every reply function may be called at most once per request.
 */
#ifndef CM_HTTP_H
#define CM_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "cm/error.h"
#include "cm/metrics.h"
#include "cm/util.h"

struct mg_connection;

/** Default cap on request bodies (API.md: 16 KiB). */
#define CM_MAX_BODY (16 * 1024)
/** Longest X-Request-Id taken from a client; longer or odd ones are replaced. */
#define CM_MAX_REQUEST_ID 64
/**
 * Default deadline for reading a request (ms): the head, then the body.
 * With a FIFO accept queue, a request queued behind S slow connections on
 * T workers waits about ceil(S / T) x this: 1 s keeps a flood of up to
 * twice the workers in slow connections (the gateway has 128) within 2 s.
 * See README.
 */
#define CM_HTTP_REQUEST_TIMEOUT_MS 1000

/**
 * After an answer that refuses a body and closes the connection (413, 400
 * for a bad Content-Length), at most this many bytes of the body are read
 * and discarded, for at most CM_HTTP_LINGER_MS, so a client that did not
 * wait for 100-continue reads the answer instead of a connection reset.
 * The byte bound covers a mistaken upload of 100 KB; the time bound cuts
 * off a client that sends forever (the linger ends within CM_HTTP_LINGER_MS
 * plus one request timeout). Chunked bodies (411) close at once.
 */
#define CM_HTTP_LINGER_BYTES (128 * 1024)
/** See CM_HTTP_LINGER_BYTES. */
#define CM_HTTP_LINGER_MS 1000
/**
 * Default idle time (ms) a kept-alive connection may wait for its next
 * request: longer than a proxy's usual 60 s upstream idle timeout, so the
 * proxy, not this server, closes idle connections (no request is ever
 * sent on a connection the server has just closed). Each such connection
 * holds a worker thread while it idles.
 */
#define CM_HTTP_KEEPALIVE_TIMEOUT_MS 75000

typedef struct cm_http cm_http_t;
typedef struct cm_req cm_req_t;

/** A route handler. It must reply (any cm_reply_* call) before returning. */
typedef void (*cm_handler_fn)(cm_req_t *rq, void *ctx);

/**
 * Readiness probe. Returns true when ready; otherwise appends to why a
 * short text naming what is down ("database", "kafka").
 */
typedef bool (*cm_ready_fn)(void *ctx, cm_buf_t *why);

/** Route flags. */
enum {
    /** Add Cache-Control: no-store to every answer of this route. */
    CM_ROUTE_NO_STORE = 1u << 0,
    /** Log its requests at debug, not info (probes, scrapes, /version). */
    CM_ROUTE_QUIET = 1u << 1,
};

typedef struct cm_route {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* "/api/register" — matched with or without a trailing slash */
    cm_handler_fn fn;
    unsigned flags;
} cm_route_t;

typedef struct cm_http_config {
    const char *service; /* for logs and metrics */
    const char *bind;    /* listen address, e.g. "127.0.0.1" or "0.0.0.0" */
    int port;            /* 1-65535 */
    int threads;         /* civetweb worker threads */
    size_t max_body;     /* 0 → CM_MAX_BODY */
    /*
     * 0 → CM_HTTP_REQUEST_TIMEOUT_MS. A deadline for the head (counted by
     * civetweb from the moment a worker takes a new connection) and a
     * second one for the body (counted from the end of the head), each
     * this long. A client that misses one is answered 408 (body; civetweb
     * answers a head cut short with 400) and its connection closed: a slow client holds a
     * worker for at most about twice this, however it trickles.
     */
    int request_timeout_ms;
    /*
     * 0 → CM_HTTP_KEEPALIVE_TIMEOUT_MS. How long a kept-alive connection
     * may idle before its next request (civetweb's keep_alive_timeout_ms,
     * which also bounds that next request's head). When it is longer than
     * request_timeout_ms, answers stop keeping connections alive once half
     * the workers hold one, so idle connections never take them all.
     */
    int keepalive_timeout_ms;
    const cm_route_t *routes; /* borrowed; must outlive the server */
    size_t nroutes;
    void *ctx;         /* passed to every handler */
    cm_ready_fn ready; /* NULL → always ready */
    void *ready_ctx;
    /*
     * true: of the built-ins only /healthz is served (a public listener;
     * /readyz and /metrics live on the admin listener, cm/service.h).
     */
    bool health_only;
    cm_metrics_t *metrics; /* borrowed; NULL → a private registry */
    int drain_ms;          /* the service's longest request: what a stop waits for (cm/service.h) */
} cm_http_config_t;

/**
 * True if ct (a Content-Type value, NULL-safe) is application/json in any
 * case, optionally followed by parameters ("application/json; charset=utf-8").
 */
bool cm_content_type_is_json(const char *ct);

/**
 * Starts listening. Returns the server (stop with cm_http_stop) or NULL
 * with *err set (CM_EINVAL for a bad config, CM_EIO when the port cannot
 * be bound).
 */
cm_http_t *cm_http_start(const cm_http_config_t *cfg, int *err);

/** How long cm_http_stop waits for in-flight requests (ms). */
#define CM_HTTP_DRAIN_MS 10000

/**
 * Starts draining: /readyz answers 503 ("shutting down") from now on, and
 * this waits until no request is in flight or timeout_ms passed. New
 * requests are still served meanwhile (a load balancer needs a moment to
 * notice). Returns true when nothing is in flight. NULL-safe.
 */
bool cm_http_drain(cm_http_t *srv, int timeout_ms);

/** Requests being answered right now (for an in-flight gauge). NULL-safe: 0. */
int cm_http_in_flight(const cm_http_t *srv);

/**
 * Drains (up to CM_HTTP_DRAIN_MS), stops civetweb, frees the server.
 * civetweb stops writing answers as soon as mg_stop begins, hence the
 * drain first. NULL-safe.
 */
void cm_http_stop(cm_http_t *srv);

/* ---- routing (pure, exposed for tests and the gateway) ----------------- */

/**
 * Finds the route for method + path. path is the request path without the
 * query string; a single trailing slash is ignored on both sides ("/api/me"
 * matches "/api/me/").
 *
 * Returns 0 and sets *out; CM_ENOTFOUND when no route has the path; or
 * CM_ESTATE when the path exists for other methods (the caller answers
 * 405), and then allow (if not NULL) receives the Allow header's text: the
 * path's methods, each once, in table order ("GET, HEAD, POST").
 *
 * HEAD falls back to GET (RFC 9110: HEAD is GET without the body): when
 * the table has no HEAD route for the path, a HEAD request finds the
 * path's GET route, so *out may have method "GET" for a HEAD and the
 * server sends that handler's headers without its body. For the same
 * reason Allow lists HEAD right after GET for a path that has a GET route
 * and no HEAD route of its own; a table that routes HEAD itself lists it
 * in its own place. A path with no GET route does not answer HEAD.
 */
int cm_route_find(const cm_route_t *routes, size_t n, const char *method, const char *path,
                  const cm_route_t **out, cm_buf_t *allow);

/** True if s is an acceptable client request id (1–64 of [A-Za-z0-9._-]). */
bool cm_request_id_valid(const char *s);

/* ---- the request ------------------------------------------------------- */

/** The civetweb connection, for handlers that stream (the gateway). */
struct mg_connection *cm_req_conn(cm_req_t *rq);
/** Memory freed when the request ends. */
cm_arena_t *cm_req_arena(cm_req_t *rq);
/** The request id (valid until the request ends). */
const char *cm_req_id(const cm_req_t *rq);
/** The request's own method ("HEAD" even when a GET route answers it). */
const char *cm_req_method(const cm_req_t *rq);
/** The path, without the query string. */
const char *cm_req_path(const cm_req_t *rq);
/** The raw query string (without '?'), or NULL. */
const char *cm_req_query(const cm_req_t *rq);
/** The peer's IP address as text. */
const char *cm_req_peer(const cm_req_t *rq);
/** A request header (case-insensitive name), or NULL. Borrowed from civetweb. */
const char *cm_req_header(const cm_req_t *rq, const char *name);

/**
 * Gets a query parameter, URL-decoded into the arena. Returns 0 and sets
 * *out, CM_ENOTFOUND when absent, CM_ETOOBIG when longer than max_len.
 */
int cm_req_query_param(cm_req_t *rq, const char *name, size_t max_len, const char **out);

/**
 * Reads the whole body (at most the server's max_body bytes) into the
 * arena. Checks Content-Length and the bytes actually read, and the
 * server's request deadline. On failure it has already replied (413 too
 * large, 400 unreadable or badly framed, 408 deadline passed) and returns
 * < 0; the connection is then closed after the answer, never drained. A
 * body that no handler read completely closes the connection the same way.
 * Chunked bodies are refused (411 Length Required: civetweb reads chunk
 * framing where no deadline can reach it); a request with neither
 * Content-Length nor Transfer-Encoding has an empty body (RFC 9112). The
 * slice is NUL-terminated (the NUL is not counted in len).
 */
CM_MUST_CHECK int cm_req_body_or_reply(cm_req_t *rq, cm_slice_t *out);

/**
 * Reads a JSON object body. Replies and returns < 0 when the Content-Type
 * is not application/json (415), the body is too large (413), not JSON or
 * not an object (400). On success *out is a new reference the caller
 * json_decref()s.
 */
CM_MUST_CHECK int cm_req_json_or_reply(cm_req_t *rq, json_t **out);

/**
 * Like cm_req_json_or_reply, and also hands back the raw bytes (in the
 * arena) that were parsed, for a caller that forwards them unchanged.
 */
CM_MUST_CHECK int cm_req_json_raw_or_reply(cm_req_t *rq, cm_slice_t *raw, json_t **out);

/* ---- replies (each adds X-Request-Id and the security headers) ----------- */
/* To a HEAD request every reply sends its head only (Content-Length as for GET). */

/**
 * Adds a header to the coming reply (copied). At most 16 extra headers.
 * Logs and drops a header whose name is not an HTTP token or is one this
 * module writes itself (Content-Length, Content-Type, Transfer-Encoding,
 * Connection), or whose value holds CR, LF or another control byte. A
 * Cache-Control set here is left out when the answer is no-store (a
 * CM_ROUTE_NO_STORE route, or any cm_reply_problem): no-store wins.
 */
void cm_reply_header(cm_req_t *rq, const char *name, const char *value);

/** Replies with a JSON body (stolen: decref'd here). */
void cm_reply_json(cm_req_t *rq, int status, json_t *body);

/** Replies with no body (204, 202 ...); 204 and 304 carry no Content-Length (RFC 9110). */
void cm_reply_empty(cm_req_t *rq, int status);

/** Replies with bytes of the given content type. */
void cm_reply_raw(cm_req_t *rq, int status, const char *content_type, const void *body, size_t len);

/**
 * Replies application/problem+json (RFC 9457): type about:blank, title,
 * status, detail, request_id and, when errors is not NULL, "errors" (a
 * JSON object field → [messages]; stolen). 401 adds WWW-Authenticate:
 * Bearer; 429 and 503 add Retry-After: 1 unless a Retry-After header was
 * already set with cm_reply_header.
 */
void cm_reply_problem(cm_req_t *rq, int status, const char *title, const char *detail,
                      json_t *errors);

/**
 * cm_reply_problem with extension members (RFC 9457 section 3.2), e.g.
 * {"code": "token_used"}: ext is a JSON object (stolen; NULL for none)
 * whose members are added unless they clash with a standard one.
 */
void cm_reply_problem_ext(cm_req_t *rq, int status, const char *title, const char *detail,
                          json_t *errors, json_t *ext);

/** Appends msg to errors[field] (creating the list). errors is borrowed. */
void cm_errors_add(json_t *errors, const char *field, const char *msg);

/** Replies 400 "Validation failed" with the errors object (stolen). */
void cm_reply_invalid(cm_req_t *rq, json_t *errors);

/** True once a reply was sent for this request. */
bool cm_req_replied(const cm_req_t *rq);

#endif
