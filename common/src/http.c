#include "cm/http.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <civetweb.h>

#include "cm/jsonscan.h"
#include "cm/log.h"

/*
 * One civetweb context per server with a single catch-all handler: every
 * request gets a cm_req_t on the worker's stack and an arena, is answered
 * by a built-in route (/healthz, /readyz, /metrics), a service route, or a
 * 404/405 problem, and is counted by route pattern, never by raw path.
 *
 * An answer is assembled in one buffer (head and body) and sent with one
 * mg_write: one send per response, no small-packet stalls. The head is
 * built only from fixed text, numbers and header values that
 * cm_reply_header validated (no CR, LF or other control bytes).
 */

#define MAX_EXTRA_HEADERS 16
#define MAX_HEADER_NAME 64
#define MAX_HEADER_VALUE 2048
/* Request heads larger than this are refused by civetweb. */
#define MAX_REQUEST_HEAD "16384"

typedef struct header {
    const char *name;
    const char *value;
} header_t;

struct cm_http {
    struct mg_context *mg;
    char *service;
    size_t max_body;
    int request_timeout_ms;
    const cm_route_t *routes;
    size_t nroutes;
    void *ctx;
    cm_ready_fn ready;
    void *ready_ctx;
    bool health_only; /* of the built-ins, only /healthz (a public listener) */
    cm_metrics_t *metrics;
    cm_metrics_t *own_metrics;
    cm_family_t *requests;
    cm_family_t *duration;
    /* Requests inside on_request; cm_http_drain waits for it to reach 0. */
    atomic_int in_flight;
    /* Set by cm_http_drain: /readyz answers 503 so load balancers move away. */
    atomic_bool draining;
    /* Worker threads (each holds one connection, idle kept-alive ones included). */
    int threads;
    int keepalive_timeout_ms;
    /* Connections a worker holds now: counted by civetweb's init/close callbacks. */
    atomic_int connections;
};

struct cm_req {
    cm_http_t *srv;
    struct mg_connection *conn;
    const struct mg_request_info *ri;
    cm_arena_t *arena;
    const char *path;
    const char *route_label;
    unsigned flags;
    bool no_store;
    bool must_close;
    /* The body was read to its end: civetweb has nothing left to drain. */
    bool body_done;
    /* When the handler started (the head was read): the body's deadline counts from here. */
    int64_t started_ms;
    /* A HEAD request: answers carry the head GET would get, and no body. */
    bool head;
    bool replied;
    int status;
    size_t nextra;
    header_t extra[MAX_EXTRA_HEADERS];
    char id[CM_MAX_REQUEST_ID + 1];
};

/* ---- routing ------------------------------------------------------------------ */

/* Length of p without one trailing slash ("/" itself stays "/"). */
static size_t route_len(const char *p)
{
    size_t n = strlen(p);
    return n > 1 && p[n - 1] == '/' ? n - 1 : n;
}

/*
 * True when route path a matches request path b. A route whose last
 * segment is an asterisk (the gateway's "/r/" + "*") matches exactly one
 * more non-empty segment without a slash ("/r/AB12").
 */
static bool same_path(const char *a, const char *b)
{
    size_t na = route_len(a), nb = route_len(b);
    if (na >= 2 && a[na - 1] == '*' && a[na - 2] == '/')
        return nb > na - 1 && memcmp(a, b, na - 1) == 0 &&
               memchr(b + na - 1, '/', nb - (na - 1)) == NULL;
    return na == nb && memcmp(a, b, na) == 0;
}

/* True when an earlier route with the same path already put method in Allow. */
static bool method_listed(const cm_route_t *routes, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (same_path(routes[j].path, routes[i].path) &&
            strcmp(routes[j].method, routes[i].method) == 0)
            return true;
    return false;
}

/* The first route with exactly this method and path, or NULL. */
static const cm_route_t *match(const cm_route_t *routes, size_t n, const char *method,
                               const char *path)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(routes[i].method, method) == 0 && same_path(routes[i].path, path))
            return &routes[i];
    return NULL;
}

/*
 * Appends the path's methods to allow (table order, each once; HEAD right
 * after GET unless the table routes HEAD itself). True when the path is known.
 */
static bool list_allowed(const cm_route_t *routes, size_t n, const char *path, cm_buf_t *allow)
{
    bool known = false;
    for (size_t i = 0; i < n; i++) {
        if (!same_path(routes[i].path, path))
            continue;
        if (allow && !method_listed(routes, i)) {
            cm_buf_puts(allow, known ? ", " : "");
            cm_buf_puts(allow, routes[i].method);
            if (strcmp(routes[i].method, "GET") == 0 && !match(routes, n, "HEAD", path))
                cm_buf_puts(allow, ", HEAD");
        }
        known = true;
    }
    return known;
}

int cm_route_find(const cm_route_t *routes, size_t n, const char *method, const char *path,
                  const cm_route_t **out, cm_buf_t *allow)
{
    if (out)
        *out = NULL;
    if (!method || !path || (n && !routes))
        return CM_ENOTFOUND;
    const cm_route_t *r = match(routes, n, method, path);
    /* RFC 9110: HEAD is GET without the body; a GET route answers it. */
    if (!r && strcmp(method, "HEAD") == 0)
        r = match(routes, n, "GET", path);
    if (r) {
        if (out)
            *out = r;
        return 0;
    }
    return list_allowed(routes, n, path, allow) ? CM_ESTATE : CM_ENOTFOUND;
}

bool cm_request_id_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, CM_MAX_REQUEST_ID + 1);
    if (n == 0 || n > CM_MAX_REQUEST_ID)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* ---- the request ------------------------------------------------------------------ */

struct mg_connection *cm_req_conn(cm_req_t *rq)
{
    return rq->conn;
}

cm_arena_t *cm_req_arena(cm_req_t *rq)
{
    return rq->arena;
}

const char *cm_req_id(const cm_req_t *rq)
{
    return rq->id;
}

const char *cm_req_method(const cm_req_t *rq)
{
    return rq->ri->request_method;
}

const char *cm_req_path(const cm_req_t *rq)
{
    return rq->path;
}

const char *cm_req_query(const cm_req_t *rq)
{
    return rq->ri->query_string;
}

const char *cm_req_peer(const cm_req_t *rq)
{
    return rq->ri->remote_addr;
}

const char *cm_req_header(const cm_req_t *rq, const char *name)
{
    return name ? mg_get_header(rq->conn, name) : NULL;
}

bool cm_req_replied(const cm_req_t *rq)
{
    return rq->replied;
}

int cm_req_query_param(cm_req_t *rq, const char *name, size_t max_len, const char **out)
{
    const char *q = rq->ri->query_string;
    if (!q || !name || !out)
        return CM_ENOTFOUND;
    size_t qlen = strlen(q);
    /* A decoded value is never longer than the query string itself. */
    size_t cap = (max_len < qlen ? max_len : qlen) + 1;
    char *dst = cm_arena_alloc(rq->arena, cap);
    int r = mg_get_var(q, qlen, name, dst, cap);
    if (r == -1)
        return CM_ENOTFOUND;
    if (r < 0)
        return CM_ETOOBIG;
    *out = dst;
    return 0;
}

/* ---- replies ------------------------------------------------------------------------ */

static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool valid_header_name(const char *s)
{
    size_t n = strnlen(s, MAX_HEADER_NAME + 1);
    if (n == 0 || n > MAX_HEADER_NAME)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar(s[i]))
            return false;
    /* Framing headers belong to this module; a handler must not fake them. */
    static const char *const reserved[] = {"Content-Length", "Content-Type", "Transfer-Encoding",
                                           "Connection"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcasecmp(s, reserved[i]) == 0)
            return false;
    return true;
}

/* Visible ASCII, spaces, tabs and UTF-8 bytes; never CR, LF or other controls. */
static bool valid_header_value(const char *s)
{
    size_t n = strnlen(s, MAX_HEADER_VALUE + 1);
    if (n > MAX_HEADER_VALUE)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

static bool has_extra(const cm_req_t *rq, const char *name)
{
    for (size_t i = 0; i < rq->nextra; i++)
        if (strcasecmp(rq->extra[i].name, name) == 0)
            return true;
    return false;
}

void cm_reply_header(cm_req_t *rq, const char *name, const char *value)
{
    if (rq->replied || !name || !value)
        return;
    if (!valid_header_name(name) || !valid_header_value(value)) {
        CM_ERROR(rq->id, "refused response header %.64s: invalid name or value", name);
        return;
    }
    if (rq->nextra == MAX_EXTRA_HEADERS) {
        CM_ERROR(rq->id, "too many response headers; dropped %s", name);
        return;
    }
    header_t *h = &rq->extra[rq->nextra++];
    h->name = cm_arena_strndup(rq->arena, name, strlen(name));
    h->value = cm_arena_strndup(rq->arena, value, strlen(value));
}

/* RFC 9110: no Content-Length on 204 and 304 answers. */
static bool carries_length(int status)
{
    return status != 204 && status != 304;
}

/* Room reserved for an answer's head (the status line and our headers are ~300 bytes). */
#define REPLY_HEAD_ROOM 512
/* Room reserved for a JSON body before it is serialized (most fit: one allocation). */
#define REPLY_JSON_ROOM 4096

static void build_head(const cm_req_t *rq, int status, const char *ctype, size_t len, cm_buf_t *out)
{
    cm_buf_puts(out, "HTTP/1.1 ");
    cm_buf_put_uint(out, (unsigned)status); /* 200-599: checked by cm_reply_raw */
    cm_buf_puts(out, " ");
    cm_buf_puts(out, mg_get_response_code_text(rq->conn, status));
    cm_buf_puts(out, "\r\nX-Request-Id: ");
    cm_buf_puts(out, rq->id);
    cm_buf_puts(out, "\r\nX-Content-Type-Options: nosniff\r\n");
    /* An HTML page sets its own (still strict) policy and referrer rule; the API keeps these. */
    if (!has_extra(rq, "Content-Security-Policy"))
        cm_buf_puts(out, "Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\n");
    if (!has_extra(rq, "Referrer-Policy"))
        cm_buf_puts(out, "Referrer-Policy: no-referrer\r\n");
    if (ctype) {
        cm_buf_puts(out, "Content-Type: ");
        cm_buf_puts(out, ctype);
        cm_buf_puts(out, "\r\n");
    }
    if (carries_length(status)) {
        cm_buf_puts(out, "Content-Length: ");
        cm_buf_put_uint(out, len);
        cm_buf_puts(out, "\r\n");
    }
    bool no_store = (rq->flags & CM_ROUTE_NO_STORE) || rq->no_store;
    if (no_store)
        cm_buf_puts(out, "Cache-Control: no-store\r\n");
    if (rq->must_close)
        cm_buf_puts(out, "Connection: close\r\n");
    for (size_t i = 0; i < rq->nextra; i++) {
        /* no-store wins: an error or a secret must not be cached whatever a handler set. */
        if (no_store && strcasecmp(rq->extra[i].name, "Cache-Control") == 0)
            continue;
        cm_buf_puts(out, rq->extra[i].name);
        cm_buf_puts(out, ": ");
        cm_buf_puts(out, rq->extra[i].value);
        cm_buf_puts(out, "\r\n");
    }
    cm_buf_puts(out, "\r\n");
}

/*
 * A kept-alive connection holds its worker thread while it idles (up to
 * keep_alive_timeout_ms, 75 s by default), and the next request's head
 * gets that long too. Anyone can open connections, send one quick request
 * each and idle: with every answer kept alive, as many such connections as
 * there are workers would leave none for anyone else for 75 s. So once
 * half the workers hold a connection, answers stop keeping connections
 * alive: idle holders can take at most half the workers, and the other
 * half serve one request per connection until the pressure is gone.
 */
static bool workers_scarce(cm_http_t *srv)
{
    /* An idle time no longer than the request deadline holds a worker no longer than a slow
     * client may: no cap needed (and busy clients keep their connections). */
    if (srv->keepalive_timeout_ms <= srv->request_timeout_ms)
        return false;
    return atomic_load(&srv->connections) * 2 > srv->threads;
}

/* True when the request announces a body (RFC 9112: Content-Length > 0 or Transfer-Encoding). */
static bool announces_body(const cm_req_t *rq)
{
    if (mg_get_header(rq->conn, "Transfer-Encoding"))
        return true;
    const char *cl = mg_get_header(rq->conn, "Content-Length");
    return cl && strspn(cl, "0") != strlen(cl);
}

/*
 * After a handler returns, civetweb 1.15 reads and discards whatever is
 * left of the body (discard_unread_request_data) so the connection can
 * carry the next request, unless its connection's must_close flag is set.
 * That drain has no deadline of its own: civetweb's request_timeout_ms
 * only bounds each idle gap, so a client trickling a byte every few
 * seconds would hold the worker for as long as its Content-Length lasts.
 * A "Connection: close" header we write does not set the flag.
 *
 * mg_disable_connection_keep_alive() does: in 1.15 it is exactly
 * `if (conn) conn->must_close = 1;` (the shipped library's function is a
 * NULL check and one store of 1, the same as Debian's own
 * mg_disable_keep_alive; test_http shows the effect). With the flag set, handle_request skips the
 * drain and process_new_connection does not keep the connection alive, so civetweb closes the
 * socket as soon as the answer is written. It is the documented per-connection API for this
 * (civetweb issue 727) and runs on the worker that owns the connection, so unlike closing the
 * socket from here it cannot race civetweb's own use of it.
 *
 * So every answer to a request whose body was refused (too large, bad
 * framing, deadline passed) or simply not read to its end (415, 401, 404,
 * 429 ... before the body) closes the connection instead of draining it.
 */
static void close_unless_drained(cm_req_t *rq)
{
    if (!rq->body_done && announces_body(rq))
        rq->must_close = true;
    if (workers_scarce(rq->srv))
        rq->must_close = true;
    if (rq->must_close)
        mg_disable_connection_keep_alive(rq->conn);
}

void cm_reply_raw(cm_req_t *rq, int status, const char *content_type, const void *body, size_t len)
{
    if (rq->replied) {
        CM_ERROR(rq->id, "second reply (%d) to one request ignored", status);
        return;
    }
    if (status < 200 || status > 599) {
        /* A handler bug: its body and type were meant for another answer, so the
         * client gets the same problem+json 500 as for any other server fault. */
        CM_ERROR(rq->id, "reply with invalid status %d; sending 500", status);
        cm_reply_problem(rq, 500, "Internal Server Error", "The server failed to answer.", NULL);
        return;
    }
    if (!carries_length(status) || !body)
        len = 0;
    if (content_type && !valid_header_value(content_type)) {
        /* The gateway relays upstream types: never let one break the head. */
        CM_ERROR(rq->id, "invalid Content-Type refused; sending application/octet-stream");
        content_type = "application/octet-stream";
    }
    close_unless_drained(rq);
    cm_buf_t msg;
    cm_buf_init(&msg);
    /* One allocation for the whole answer: a head is a few hundred bytes. */
    cm_buf_reserve(&msg, REPLY_HEAD_ROOM + len);
    build_head(rq, status, len || carries_length(status) ? content_type : NULL, len, &msg);
    /* HEAD: the same head, Content-Length included, and no body (RFC 9110, 9.3.2). */
    if (len && !rq->head)
        cm_buf_append(&msg, body, len);
    rq->replied = true;
    rq->status = status;
    if (mg_write(rq->conn, msg.data, msg.len) < (int)msg.len)
        CM_DEBUG(rq->id, "client went away before the answer was sent");
    cm_buf_dispose(&msg);
}

void cm_reply_empty(cm_req_t *rq, int status)
{
    cm_reply_raw(rq, status, NULL, NULL, 0);
}

/* json_dump_callback's sink: appends to a cm_buf. */
static int append_json(const char *chunk, size_t len, void *data)
{
    cm_buf_append(data, chunk, len);
    return 0;
}

void cm_reply_json(cm_req_t *rq, int status, json_t *body)
{
    /* One pass into a buffer reserved for most bodies: json_dumps would grow a
     * string by doubling (a page of 20 referrals: ten reallocations). */
    cm_buf_t text;
    cm_buf_init(&text);
    cm_buf_reserve(&text, REPLY_JSON_ROOM);
    int rc = body ? json_dump_callback(body, append_json, &text, JSON_COMPACT) : -1;
    json_decref(body);
    if (rc != 0 || text.len == 0) {
        cm_buf_dispose(&text);
        CM_ERROR(rq->id, "reply body could not be serialized");
        cm_reply_problem(rq, 500, "Internal Server Error", "The server failed to answer.", NULL);
        return;
    }
    cm_reply_raw(rq, status, "application/json", text.data, text.len);
    cm_buf_dispose(&text);
}

/* Sets key to the text, or leaves it out when the text is not valid UTF-8. */
static void set_text(json_t *o, const char *key, const char *text)
{
    if (text)
        json_object_set_new(o, key, json_string(text));
}

void cm_reply_problem(cm_req_t *rq, int status, const char *title, const char *detail,
                      json_t *errors)
{
    cm_reply_problem_ext(rq, status, title, detail, errors, NULL);
}

void cm_reply_problem_ext(cm_req_t *rq, int status, const char *title, const char *detail,
                          json_t *errors, json_t *ext)
{
    json_t *p = json_object();
    if (json_is_object(ext)) /* first, so the standard members below win a clash */
        json_object_update(p, ext);
    json_decref(ext);
    json_object_set_new(p, "type", json_string("about:blank"));
    set_text(p, "title", title ? title : mg_get_response_code_text(rq->conn, status));
    json_object_set_new(p, "status", json_integer(status));
    set_text(p, "detail", detail);
    set_text(p, "request_id", rq->id);
    if (errors)
        json_object_set_new(p, "errors", errors);
    if (status == 401 && !has_extra(rq, "WWW-Authenticate"))
        cm_reply_header(rq, "WWW-Authenticate", "Bearer");
    if ((status == 429 || status == 503) && !has_extra(rq, "Retry-After"))
        cm_reply_header(rq, "Retry-After", "1");
    rq->no_store = true;
    char *text = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    cm_reply_raw(rq, status, "application/problem+json", text, text ? strlen(text) : 0);
    free(text);
}

void cm_errors_add(json_t *errors, const char *field, const char *msg)
{
    if (!json_is_object(errors) || !field || !msg)
        return;
    json_t *list = json_object_get(errors, field); /* borrowed */
    if (!json_is_array(list)) {
        list = json_array();
        json_object_set_new(errors, field, list);
    }
    json_array_append_new(list, json_string(msg));
}

void cm_reply_invalid(cm_req_t *rq, json_t *errors)
{
    cm_reply_problem(rq, 400, "Validation failed", "One or more fields are invalid.", errors);
}

/* ---- request bodies ------------------------------------------------------------------- */

/* The most linger_discard asks of one mg_read (see there). */
#define LINGER_CHUNK_MAX 64

/*
 * A lingering close, bounded. After a refusal that closes the connection
 * with the body unread, a client that sent its body without waiting for
 * 100-continue is still pushing it; closing a socket with unread bytes
 * makes the kernel send a reset, and the client's next write (or read)
 * fails before it has seen our answer. So the answer is written first and
 * then at most CM_HTTP_LINGER_BYTES of the body are read and thrown away,
 * for at most CM_HTTP_LINGER_MS: a body that fits arrives whole and the
 * close is a clean FIN; a client sending forever is cut off by the bounds.
 *
 * The size of each read: civetweb's mg_read returns only when every byte
 * asked for arrived (or an idle gap of request_timeout_ms passed), so a
 * read of n bytes can last n gaps against a client that trickles. One byte
 * per read (as read_capped does) ends each call within one gap but costs
 * two system calls a byte (~1 s of CPU for 128 KiB, measured). So a read
 * that found its bytes waiting doubles the next one, up to
 * LINGER_CHUNK_MAX, and a read that had to wait goes back to one byte: a
 * trickler meets the deadline within one gap, a fast sender costs a
 * system call per 64 bytes, and a client that switches from fast to slow
 * holds its worker at most 64 gaps — less than an idle kept-alive
 * connection may (75 s), and like those only while fewer than half the
 * workers hold connections (below). Never with Transfer-Encoding:
 * civetweb parses chunk-size lines inside mg_read, past every bound.
 */
static void linger_discard(cm_req_t *rq)
{
    if (mg_get_header(rq->conn, "Transfer-Encoding") ||
        atomic_load(&rq->srv->connections) * 2 > rq->srv->threads)
        return;
    int64_t deadline = cm_now_mono_ms() + CM_HTTP_LINGER_MS;
    char buf[LINGER_CHUNK_MAX];
    size_t chunk = 1, total = 0;
    while (total < CM_HTTP_LINGER_BYTES) {
        int64_t t0 = cm_now_mono_ms();
        if (t0 >= deadline)
            break;
        size_t want = CM_HTTP_LINGER_BYTES - total < chunk ? CM_HTTP_LINGER_BYTES - total : chunk;
        int r = mg_read(rq->conn, buf, want);
        if (r <= 0)
            break;
        total += (size_t)r;
        chunk = cm_now_mono_ms() == t0 ? (chunk * 2 > sizeof buf ? sizeof buf : chunk * 2) : 1;
    }
}

static int reply_too_large(cm_req_t *rq)
{
    /*
     * The rest is not read for the request: civetweb would drain it
     * whole (with no deadline) to keep the connection. Telling the client
     * to close stops it from sending the rest; linger_discard keeps the
     * connection open a bounded while so the answer reaches it.
     */
    rq->must_close = true;
    cm_buf_t detail;
    cm_buf_init(&detail);
    cm_buf_printf(&detail, "The request body must be at most %zu bytes.", rq->srv->max_body);
    cm_reply_problem(rq, 413, "Payload Too Large", detail.data, NULL);
    cm_buf_dispose(&detail);
    linger_discard(rq);
    return CM_ETOOBIG;
}

/* The body's framing is broken: the connection cannot carry another request. */
static int reply_bad_body(cm_req_t *rq, const char *detail)
{
    rq->must_close = true;
    cm_reply_problem(rq, 400, "Bad Request", detail, NULL);
    return CM_EPARSE;
}

/*
 * Reads the declared framing: *declared is the Content-Length (at most
 * max_body), or 0 when the request has none (RFC 9112: no body).
 */
static int body_framing(cm_req_t *rq, long long *declared)
{
    const char *cl = mg_get_header(rq->conn, "Content-Length");
    const char *te = mg_get_header(rq->conn, "Transfer-Encoding");
    *declared = 0;
    if (te && cl)
        return reply_bad_body(rq, "Content-Length and Transfer-Encoding together.");
    if (te) {
        /*
         * civetweb 1.15 parses chunk-size lines inside mg_read, a byte at a
         * time with only the idle-gap timeout: a client trickling one never
         * gives control back, so no deadline could be kept. RFC 9110 lets a
         * server require a Content-Length (411); every client of ours sends one.
         */
        rq->must_close = true;
        cm_reply_problem(rq, 411, "Length Required",
                         "Send the body with a Content-Length; chunked request bodies are not "
                         "accepted.",
                         NULL);
        return CM_EINVAL;
    }
    if (!cl)
        return 0;
    int rc = cm_strtonum(cl, 0, LLONG_MAX, declared);
    if (rc == CM_ERANGE && cl[0] != '-')
        return reply_too_large(rq);
    if (rc != 0) {
        reply_bad_body(rq, "Invalid Content-Length.");
        linger_discard(rq);
        return CM_EPARSE;
    }
    if ((unsigned long long)*declared > rq->srv->max_body)
        return reply_too_large(rq);
    return 0;
}

static int reply_timeout(cm_req_t *rq)
{
    rq->must_close = true;
    cm_reply_problem(rq, 408, "Request Timeout", "The request body did not arrive in time.", NULL);
    return CM_ETIMEDOUT;
}

/*
 * Reads until the body ends, cap bytes arrived or the deadline passed
 * (CM_ETIMEDOUT). One byte per mg_read: civetweb's mg_read returns only
 * when all the bytes asked for arrived (or an idle gap of
 * request_timeout_ms passed), so asking for more would let a client that
 * trickles a byte every few seconds keep one call going for hours; asking
 * for one makes every call end within one gap, and the deadline is checked
 * between calls. Bytes civetweb already holds (a body that came with the
 * head, the common case) are copied from its buffer without a system call.
 */
static int read_capped(cm_req_t *rq, char *buf, size_t cap, int64_t deadline, size_t *got)
{
    size_t n = 0;
    int rc = 0;
    while (n < cap) {
        if (cm_now_mono_ms() >= deadline) {
            rc = CM_ETIMEDOUT;
            break;
        }
        int r = mg_read(rq->conn, buf + n, 1);
        if (r < 0) {
            rc = CM_EIO;
            break;
        }
        if (r == 0) {
            /* The end of the body, or civetweb gave up waiting (an idle gap). */
            if (cm_now_mono_ms() >= deadline)
                rc = CM_ETIMEDOUT;
            break;
        }
        n += (size_t)r;
    }
    *got = n;
    return rc;
}

int cm_req_body_or_reply(cm_req_t *rq, cm_slice_t *out)
{
    long long declared = 0;
    int rc = body_framing(rq, &declared);
    if (rc != 0)
        return rc;
    out->ptr = cm_arena_strndup(rq->arena, "", 0);
    out->len = 0;
    if (declared == 0) {
        rq->body_done = true;
        return 0;
    }
    /* body_framing checked declared against max_body: it fits a size_t. */
    size_t want = (size_t)declared;
    char *buf = cm_arena_alloc(rq->arena, want + 1);
    size_t got = 0;
    rc = read_capped(rq, buf, want, rq->started_ms + rq->srv->request_timeout_ms, &got);
    if (rc == CM_ETIMEDOUT)
        return reply_timeout(rq);
    if (rc != 0)
        return reply_bad_body(rq, "The request body could not be read.");
    if (got != want)
        return reply_bad_body(rq, "The request body is shorter than its Content-Length.");
    rq->body_done = true;
    buf[got] = '\0';
    out->ptr = buf;
    out->len = got;
    return 0;
}

bool cm_content_type_is_json(const char *ct)
{
    static const char want[] = "application/json";
    if (!ct)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, want, sizeof want - 1) != 0)
        return false;
    ct += sizeof want - 1;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

static int reply_malformed_json(cm_req_t *rq, const json_error_t *e)
{
    cm_buf_t d;
    cm_buf_init(&d);
    cm_buf_printf(&d, "Invalid JSON at line %d, column %d (byte %d): %.80s", e->line, e->column,
                  e->position, e->text);
    json_t *probe = json_string(d.data);
    if (!probe) {
        /* The parser's message quoted bytes that are not UTF-8: leave them out. */
        d.len = 0;
        cm_buf_printf(&d, "Invalid JSON at line %d, column %d (byte %d).", e->line, e->column,
                      e->position);
    }
    json_decref(probe);
    cm_reply_problem(rq, 400, "Malformed JSON", d.data, NULL);
    cm_buf_dispose(&d);
    return CM_EPARSE;
}

int cm_req_json_or_reply(cm_req_t *rq, json_t **out)
{
    cm_slice_t raw;
    return cm_req_json_raw_or_reply(rq, &raw, out);
}

int cm_req_json_raw_or_reply(cm_req_t *rq, cm_slice_t *raw, json_t **out)
{
    *out = NULL;
    raw->ptr = NULL;
    raw->len = 0;
    /* The body stays unread: the answer closes the connection rather than drain it. */
    if (!cm_content_type_is_json(mg_get_header(rq->conn, "Content-Type"))) {
        cm_reply_problem(rq, 415, "Unsupported Media Type",
                         "The request body must be application/json.", NULL);
        return CM_EINVAL;
    }
    cm_slice_t body;
    int rc = cm_req_body_or_reply(rq, &body);
    if (rc != 0)
        return rc;
    /* jansson recurses per level and a civetweb worker has 100 KiB of stack: bound it first. */
    size_t deep_at = 0;
    if (cm_json_scan(body.ptr, body.len, body.len, CM_JSON_MAX_DEPTH_BODY, &deep_at) != 0) {
        cm_buf_t d;
        cm_buf_init(&d);
        cm_buf_printf(&d,
                      "The request body is nested too deeply: more than %d levels (at byte %zu).",
                      CM_JSON_MAX_DEPTH_BODY, deep_at);
        cm_reply_problem(rq, 400, "Malformed JSON", d.data, NULL);
        cm_buf_dispose(&d);
        return CM_EPARSE;
    }
    json_error_t e;
    json_t *v = json_loadb(body.ptr, body.len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
    if (!v)
        return reply_malformed_json(rq, &e);
    if (!json_is_object(v)) {
        json_decref(v);
        cm_reply_problem(rq, 400, "Malformed JSON", "The request body must be a JSON object.",
                         NULL);
        return CM_EPARSE;
    }
    *raw = body;
    *out = v;
    return 0;
}

/* ---- built-in routes ------------------------------------------------------------------- */

static void on_healthz(cm_req_t *rq, void *ctx)
{
    (void)ctx;
    cm_reply_json(rq, 200, json_pack("{s:s}", "status", "ok"));
}

static void on_readyz(cm_req_t *rq, void *ctx)
{
    cm_http_t *srv = ctx;
    cm_buf_t why;
    cm_buf_init(&why);
    if (atomic_load(&srv->draining))
        cm_buf_puts(&why, "shutting down");
    if (!atomic_load(&srv->draining) && (!srv->ready || srv->ready(srv->ready_ctx, &why))) {
        cm_reply_json(rq, 200, json_pack("{s:s}", "status", "ready"));
    } else {
        cm_buf_t detail;
        cm_buf_init(&detail);
        cm_buf_puts(&detail, "Not ready: ");
        cm_buf_puts(&detail, why.len ? why.data : "unknown");
        cm_reply_problem(rq, 503, "Service Unavailable", detail.data, NULL);
        cm_buf_dispose(&detail);
    }
    cm_buf_dispose(&why);
}

static void on_metrics(cm_req_t *rq, void *ctx)
{
    cm_http_t *srv = ctx;
    cm_buf_t text;
    cm_buf_init(&text);
    cm_metrics_render(srv->metrics, &text);
    cm_reply_raw(rq, 200, "text/plain; version=0.0.4; charset=utf-8", text.data, text.len);
    cm_buf_dispose(&text);
}

static const cm_route_t builtin_routes[] = {
    {"GET", "/healthz", on_healthz, CM_ROUTE_NO_STORE | CM_ROUTE_QUIET},
    {"GET", "/readyz", on_readyz, CM_ROUTE_NO_STORE | CM_ROUTE_QUIET},
    {"GET", "/metrics", on_metrics, CM_ROUTE_NO_STORE | CM_ROUTE_QUIET},
};

/* ---- dispatch ----------------------------------------------------------------------------- */

static void reply_no_route(cm_req_t *rq, int rc, const cm_buf_t *allow)
{
    if (rc == CM_ESTATE) {
        cm_reply_header(rq, "Allow", allow->data);
        cm_reply_problem(rq, 405, "Method Not Allowed",
                         "This path does not accept that method; see the Allow header.", NULL);
    } else {
        cm_reply_problem(rq, 404, "Not Found", "No such resource.", NULL);
    }
}

static void run_route(cm_req_t *rq, const cm_route_t *r, void *ctx)
{
    rq->route_label = r->path;
    rq->flags = r->flags;
    r->fn(rq, ctx);
}

/*
 * Looks method + path up in the built-in routes, then the service's. *ctx
 * receives what the handler gets. A path the built-ins own (/healthz ...)
 * is never looked up in the service's table.
 */
static int find_route(cm_http_t *srv, const char *method, const char *path, const cm_route_t **r,
                      void **ctx, cm_buf_t *allow)
{
    size_t nbuiltin = srv->health_only ? 1 : sizeof builtin_routes / sizeof builtin_routes[0];
    *ctx = srv;
    int rc = cm_route_find(builtin_routes, nbuiltin, method, path, r, allow);
    if (rc != CM_ENOTFOUND)
        return rc;
    *ctx = srv->ctx;
    return cm_route_find(srv->routes, srv->nroutes, method, path, r, allow);
}

static void dispatch(cm_req_t *rq)
{
    const cm_route_t *r = NULL;
    void *ctx = NULL;
    cm_buf_t allow;
    cm_buf_init(&allow);
    int rc = find_route(rq->srv, rq->ri->request_method, rq->path, &r, &ctx, &allow);
    if (rc == 0)
        run_route(rq, r, ctx);
    else
        reply_no_route(rq, rc, &allow);
    cm_buf_dispose(&allow);
}

static const char *method_label(const char *m)
{
    static const char *const known[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (m && strcmp(m, known[i]) == 0)
            return known[i];
    return "other";
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static void record(const cm_req_t *rq, double secs)
{
    char status[16];
    snprintf(status, sizeof status, "%d", rq->status);
    const char *values[] = {rq->route_label, method_label(rq->ri->request_method), status};
    cm_metric_add(rq->srv->requests, values, 1);
    cm_metric_observe(rq->srv->duration, values, secs);
}

static void req_init(cm_req_t *rq, cm_http_t *srv, struct mg_connection *conn)
{
    memset(rq, 0, sizeof *rq);
    rq->srv = srv;
    rq->conn = conn;
    rq->ri = mg_get_request_info(conn);
    rq->arena = cm_arena_new();
    rq->route_label = "unmatched";
    rq->status = 500;
    rq->started_ms = cm_now_mono_ms();
    const char *p = rq->ri->local_uri ? rq->ri->local_uri : "/";
    rq->path = cm_arena_strndup(rq->arena, p, strlen(p));
    rq->head = rq->ri->request_method && strcmp(rq->ri->request_method, "HEAD") == 0;
    const char *id = mg_get_header(conn, "X-Request-Id");
    if (cm_request_id_valid(id))
        memcpy(rq->id, id, strlen(id) + 1);
    else
        cm_uuid_v4(rq->id);
}

/* One info line per answered request, as fields (probes and scrapes at debug). */
static void access_log(const cm_req_t *rq, double secs)
{
    cm_log_level_t level = rq->flags & CM_ROUTE_QUIET ? CM_LOG_DEBUG : CM_LOG_INFO;
    if (!cm_log_enabled(level))
        return;
    cm_log_request(level, rq->id, method_label(rq->ri->request_method), rq->route_label, rq->status,
                   secs * 1e3);
}

static int on_request(struct mg_connection *conn, void *cbdata)
{
    cm_http_t *srv = cbdata;
    atomic_fetch_add(&srv->in_flight, 1);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cm_req_t rq;
    req_init(&rq, cbdata, conn);
    dispatch(&rq);
    if (!rq.replied) {
        /* A handler bug must not leave the client waiting. */
        CM_ERROR(rq.id, "handler for %s %s returned without replying", rq.ri->request_method,
                 rq.route_label);
        cm_reply_problem(&rq, 500, "Internal Server Error", "The server failed to answer.", NULL);
    }
    double secs = seconds_since(&t0);
    record(&rq, secs);
    access_log(&rq, secs);
    cm_arena_free(rq.arena);
    atomic_fetch_sub(&srv->in_flight, 1);
    return rq.status;
}

/* ---- the server ----------------------------------------------------------------------------- */

/* True if s is an HTTP token (RFC 9110) of 1 to max bytes: what a method name must be. */
static bool is_token(const char *s, size_t max)
{
    size_t n = s ? strnlen(s, max + 1) : 0;
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar(s[i]))
            return false;
    return true;
}

/*
 * civetweb 1.15 parses only the methods it knows (GET, HEAD, POST, PUT,
 * DELETE, OPTIONS, CONNECT, PATCH and a few WebDAV ones). Any other token
 * (TRACE, a made-up one) fails its request-line parser: http_error gets 400
 * before any handler runs, with method, target and version set and no
 * header parsed (num_headers is 0; a broken header line gives -1). Such a
 * request gets what any unrouted method gets: 405 with Allow on a known
 * path, 404 elsewhere. Returns true when it answered.
 */
static bool reply_unknown_method(cm_req_t *rq, int status)
{
    const struct mg_request_info *ri = rq->ri;
    const char *target = ri->request_uri, *v = ri->http_version;
    if (status != 400 || ri->num_headers != 0 || !is_token(ri->request_method, 32) || !target ||
        target[0] != '/' || !v || (strcmp(v, "1.1") != 0 && strcmp(v, "1.0") != 0))
        return false;
    /* The target is at most the request head (16 KiB): it fits an int. */
    size_t len = strcspn(target, "?");
    char *path = cm_arena_alloc(rq->arena, len + 1);
    if (mg_url_decode(target, (int)len, path, (int)len + 1, 0) < 0)
        return false;
    const cm_route_t *r = NULL;
    void *ctx = NULL;
    cm_buf_t allow;
    cm_buf_init(&allow);
    int rc = find_route(rq->srv, ri->request_method, path, &r, &ctx, &allow);
    if (rc != 0) {
        rq->path = path;
        reply_no_route(rq, rc, &allow);
    }
    cm_buf_dispose(&allow);
    return rc != 0; /* a route civetweb never delivers keeps civetweb's 400 */
}

/*
 * Errors civetweb answers itself before any handler runs (a malformed
 * request line, an unknown method, a missing or invalid Content-Length, a
 * head over the size cap) get the same problem+json and security headers
 * as every other answer. civetweb closes the connection afterwards.
 */
static int on_http_error(struct mg_connection *conn, int status, const char *errmsg)
{
    cm_http_t *srv = mg_get_user_data(mg_get_context(conn));
    if (!srv || status < 400 || status > 599)
        return 1;
    cm_req_t rq;
    req_init(&rq, srv, conn);
    rq.must_close = true;
    CM_DEBUG(rq.id, "civetweb refused a request (%d): %.200s", status, errmsg ? errmsg : "");
    if (!reply_unknown_method(&rq, status))
        cm_reply_problem(&rq, status, NULL, "The request could not be processed.", NULL);
    record(&rq, 0);
    cm_arena_free(rq.arena);
    return 0;
}

static int on_connection_open(const struct mg_connection *conn, void **conn_data)
{
    (void)conn_data;
    cm_http_t *srv = mg_get_user_data(mg_get_context(conn));
    if (srv)
        atomic_fetch_add(&srv->connections, 1);
    return 0;
}

static void on_connection_close(const struct mg_connection *conn)
{
    cm_http_t *srv = mg_get_user_data(mg_get_context(conn));
    if (srv)
        atomic_fetch_sub(&srv->connections, 1);
}

static int on_civetweb_log(const struct mg_connection *conn, const char *message)
{
    (void)conn;
    CM_WARN(NULL, "civetweb: %s", message);
    return 1;
}

static bool valid_bind(const char *b)
{
    size_t n = b ? strnlen(b, 64) : 0;
    if (n == 0 || n == 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdefABCDEF.:", b[i]))
            return false;
    return true;
}

static bool valid_config(const cm_http_config_t *cfg)
{
    if (!cfg || !valid_bind(cfg->bind) || cfg->port < 1 || cfg->port > 65535)
        return false;
    /* Debian's libcivetweb 1.15 is built without IPv6: it would fail later, less clearly. */
    if (strchr(cfg->bind, ':') && !mg_check_feature(8)) {
        CM_ERROR(NULL,
                 "cannot listen on %s: this civetweb has no IPv6 support; bind an IPv4 "
                 "address and let the proxy in front take IPv6 clients",
                 cfg->bind);
        return false;
    }
    if (cfg->threads < 0 || cfg->threads > 1024 || cfg->request_timeout_ms < 0 ||
        cfg->keepalive_timeout_ms < 0)
        return false;
    if (cfg->nroutes && !cfg->routes)
        return false;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const cm_route_t *r = &cfg->routes[i];
        if (!r->method || !r->path || r->path[0] != '/' || !r->fn)
            return false;
    }
    return true;
}

static void register_metrics(cm_http_t *srv, cm_metrics_t *shared)
{
    if (!shared)
        srv->own_metrics = shared = cm_metrics_new();
    srv->metrics = shared;
    srv->requests = cm_metrics_counter(
        shared, "linktr_http_requests_total",
        "HTTP requests answered, by route pattern, method and status.", "route,method,status");
    srv->duration =
        cm_metrics_histogram(shared, "linktr_http_request_duration_seconds",
                             "Time to answer an HTTP request, by route pattern.", "route", NULL, 0);
}

static void init_library_once(void)
{
    mg_init_library(0);
}

/*
 * Authorization is the routes' own (bearer tokens, checked by the handlers
 * and the gateway): civetweb's must let every request through. Without a
 * handler of ours, civetweb 1.15 looks for an .htpasswd file on every
 * request (a stat(2) of "/.htpasswd", one system call per request for
 * nothing: issue 16).
 */
static int authorize_all(struct mg_connection *conn, void *cbdata)
{
    (void)conn;
    (void)cbdata;
    return 1;
}

/* Starts civetweb with the catch-all handler. Returns 0 or CM_EIO. */
static int start_civetweb(cm_http_t *srv, const cm_http_config_t *cfg)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_library_once);
    char ports[96], threads[16], timeout[16], keepalive[16];
    if (strchr(cfg->bind, ':'))
        snprintf(ports, sizeof ports, "[%s]:%d", cfg->bind, cfg->port);
    else
        snprintf(ports, sizeof ports, "%s:%d", cfg->bind, cfg->port);
    snprintf(threads, sizeof threads, "%d", srv->threads);
    snprintf(timeout, sizeof timeout, "%d", srv->request_timeout_ms);
    snprintf(keepalive, sizeof keepalive, "%d", srv->keepalive_timeout_ms);
    /*
     * request_timeout_ms: civetweb 1.15's read_message() measures it from
     * the moment a worker starts on a new connection and gives up on a head
     * that is not complete by then (checked after each read, each read
     * waiting at most that long): the head deadline. For the body it only
     * bounds each idle gap; cm_req_body_or_reply adds the total deadline.
     * keep_alive_timeout_ms replaces it for the heads of the requests after
     * the first on a kept-alive connection (idle time and head together).
     */
    const char *options[] = {"listening_ports", ports, "num_threads", threads, "request_timeout_ms",
                             timeout, "keep_alive_timeout_ms", keepalive, "enable_keep_alive",
                             "yes", "max_request_size", MAX_REQUEST_HEAD, "tcp_nodelay", "1",
                             /* Empty: civetweb must not answer CORS preflights
                                itself (with "*"); services decide. */
                             "access_control_allow_origin", "", NULL};
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.log_message = on_civetweb_log;
    cb.http_error = on_http_error;
    cb.init_connection = on_connection_open;
    cb.connection_close = on_connection_close;
    srv->mg = mg_start(&cb, srv, options);
    if (!srv->mg)
        return CM_EIO;
    mg_set_request_handler(srv->mg, "/", on_request, srv);
    mg_set_auth_handler(srv->mg, "/", authorize_all, NULL);
    return 0;
}

cm_http_t *cm_http_start(const cm_http_config_t *cfg, int *err)
{
    int rc = CM_EINVAL;
    cm_http_t *srv = NULL;
    if (!valid_config(cfg))
        goto out;
    srv = cm_xcalloc(1, sizeof *srv);
    srv->service = cm_xstrdup(cfg->service ? cfg->service : "linktr");
    srv->max_body = cfg->max_body ? cfg->max_body : CM_MAX_BODY;
    srv->request_timeout_ms =
        cfg->request_timeout_ms ? cfg->request_timeout_ms : CM_HTTP_REQUEST_TIMEOUT_MS;
    srv->routes = cfg->routes;
    srv->nroutes = cfg->nroutes;
    srv->ctx = cfg->ctx;
    srv->ready = cfg->ready;
    srv->ready_ctx = cfg->ready_ctx;
    srv->health_only = cfg->health_only;
    atomic_init(&srv->in_flight, 0);
    atomic_init(&srv->draining, false);
    atomic_init(&srv->connections, 0);
    srv->threads = cfg->threads ? cfg->threads : 8;
    srv->keepalive_timeout_ms =
        cfg->keepalive_timeout_ms ? cfg->keepalive_timeout_ms : CM_HTTP_KEEPALIVE_TIMEOUT_MS;
    register_metrics(srv, cfg->metrics);
    rc = start_civetweb(srv, cfg);
out:
    if (rc != 0) {
        cm_http_stop(srv);
        srv = NULL;
    }
    if (err)
        *err = rc;
    return srv;
}

bool cm_http_drain(cm_http_t *srv, int timeout_ms)
{
    if (!srv)
        return true;
    atomic_store(&srv->draining, true);
    int64_t deadline = cm_now_mono_ms() + timeout_ms;
    while (atomic_load(&srv->in_flight) > 0 && cm_now_mono_ms() < deadline) {
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    return atomic_load(&srv->in_flight) == 0;
}

int cm_http_in_flight(const cm_http_t *srv)
{
    return srv ? atomic_load(&srv->in_flight) : 0;
}

void cm_http_stop(cm_http_t *srv)
{
    if (!srv)
        return;
    /* civetweb stops writing answers once mg_stop begins: finish first. */
    if (!cm_http_drain(srv, CM_HTTP_DRAIN_MS))
        CM_WARN(NULL, "%s: stopping with requests still in flight after %d ms", srv->service,
                CM_HTTP_DRAIN_MS);
    if (srv->mg)
        mg_stop(srv->mg);
    cm_metrics_free(srv->own_metrics);
    free(srv->service);
    free(srv);
}
