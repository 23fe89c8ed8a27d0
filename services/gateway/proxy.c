#include "proxy.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <arpa/inet.h>
#include <curl/curl.h>

struct gw_upstream {
    char *name;
    gw_list_t urls;
    atomic_uint next; /* round-robin cursor */
    int connect_timeout_ms;
    int timeout_ms;
    pthread_mutex_t mu;  /* guards idle, nidle and total */
    pthread_cond_t room; /* signalled when a handle comes back */
    CURL **idle;
    size_t nidle;
    size_t total; /* handles in existence: idle plus lent out */
    size_t cap;   /* most handles, so most connections per address */
};

static const char *const FORWARDED[] = {"Content-Type", "Authorization", "Accept", "User-Agent",
                                        NULL};

/* ---- pool ------------------------------------------------------------------ */

gw_upstream_t *gw_upstream_new(const char *name, const gw_list_t *urls, int connect_timeout_ms,
                               int timeout_ms, size_t max_conns)
{
    gw_upstream_t *u = cm_xcalloc(1, sizeof *u);
    u->name = cm_xstrdup(name);
    u->urls.items = cm_xcalloc(urls->n ? urls->n : 1, sizeof *u->urls.items);
    for (size_t i = 0; i < urls->n; i++)
        u->urls.items[i] = cm_xstrdup(urls->items[i]);
    u->urls.n = urls->n;
    atomic_init(&u->next, 0);
    u->connect_timeout_ms = connect_timeout_ms;
    u->timeout_ms = timeout_ms;
    pthread_mutex_init(&u->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&u->room, &ca);
    pthread_condattr_destroy(&ca);
    u->cap = max_conns ? max_conns : 1;
    u->idle = cm_xcalloc(u->cap, sizeof *u->idle);
    return u;
}

void gw_upstream_free(gw_upstream_t *u)
{
    if (!u)
        return;
    for (size_t i = 0; i < u->nidle; i++)
        curl_easy_cleanup(u->idle[i]);
    free(u->idle);
    pthread_cond_destroy(&u->room);
    pthread_mutex_destroy(&u->mu);
    gw_list_dispose(&u->urls);
    free(u->name);
    free(u);
}

const char *gw_upstream_name(const gw_upstream_t *u)
{
    return u->name;
}

/* Waits until the pool may lend a handle or deadline_ms (monotonic) passes. Call with mu held. */
static bool wait_for_room(gw_upstream_t *u, int64_t deadline_ms)
{
    while (u->nidle == 0 && u->total >= u->cap) {
        int64_t left = deadline_ms - cm_now_mono_ms();
        if (left <= 0)
            return false;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t)(left / 1000);
        ts.tv_nsec += (long)(left % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&u->room, &u->mu, &ts);
    }
    return true;
}

/*
 * Lends an idle handle (with its warm connections), or makes a new one
 * while fewer than cap exist. Returns NULL when none frees up before
 * deadline_ms: the upstream is saturated.
 */
static CURL *take_handle(gw_upstream_t *u, int64_t deadline_ms)
{
    CURL *h = NULL;
    bool make = false;
    pthread_mutex_lock(&u->mu);
    if (wait_for_room(u, deadline_ms)) {
        if (u->nidle > 0) {
            h = u->idle[--u->nidle];
        } else {
            u->total++;
            make = true;
        }
    }
    pthread_mutex_unlock(&u->mu);
    if (make && !(h = curl_easy_init()))
        abort(); /* out of memory, like cm_xmalloc */
    return h;
}

static void give_handle(gw_upstream_t *u, CURL *h)
{
    pthread_mutex_lock(&u->mu);
    u->idle[u->nidle++] = h; /* total <= cap, so there is always room */
    pthread_cond_signal(&u->room);
    pthread_mutex_unlock(&u->mu);
}

/* ---- one exchange --------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    gw_fwd_response_t *r = ud;
    size_t len = size * n;
    if (len > GW_MAX_RESPONSE - r->body.len) {
        r->too_big = true;
        return 0; /* aborts the transfer */
    }
    cm_buf_append(&r->body, data, len);
    return len;
}

/* Copies a header value if its name matches and it fits; a value with CR/LF inside is refused. */
static void take_value(const char *line, size_t len, const char *name, char *dst, size_t cap)
{
    size_t nlen = strlen(name);
    if (len <= nlen || line[nlen] != ':' || strncasecmp(line, name, nlen) != 0)
        return;
    const char *v = line + nlen + 1;
    size_t vlen = len - nlen - 1;
    while (vlen > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vlen--;
    }
    while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
        vlen--;
    if (vlen == 0 || vlen >= cap || memchr(v, '\r', vlen) || memchr(v, '\n', vlen))
        return;
    memcpy(dst, v, vlen);
    dst[vlen] = '\0';
}

static size_t on_header(char *line, size_t size, size_t n, void *ud)
{
    gw_fwd_response_t *r = ud;
    size_t len = size * n;
    if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        /* A new status line (after a 100 Continue): forget the interim headers. */
        r->content_type[0] = r->retry_after[0] = r->www_authenticate[0] = '\0';
        r->cache_control[0] = '\0';
        return len;
    }
    take_value(line, len, "Content-Type", r->content_type, sizeof r->content_type);
    take_value(line, len, "Retry-After", r->retry_after, sizeof r->retry_after);
    take_value(line, len, "WWW-Authenticate", r->www_authenticate, sizeof r->www_authenticate);
    take_value(line, len, "Cache-Control", r->cache_control, sizeof r->cache_control);
    return len;
}

static void response_reset(gw_fwd_response_t *r)
{
    r->status = 0;
    r->body.len = 0;
    if (r->body.data)
        r->body.data[0] = '\0';
    r->content_type[0] = r->retry_after[0] = r->www_authenticate[0] = '\0';
    r->cache_control[0] = '\0';
    r->too_big = false;
}

static void set_common(CURL *h, const char *url, long connect_ms, long total_ms,
                       gw_fwd_response_t *out)
{
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, total_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, out);
}

static CURLcode perform_once(gw_upstream_t *u, CURL *h, const char *base, int64_t deadline_ms,
                             const gw_fwd_request_t *rq, gw_fwd_response_t *out)
{
    cm_buf_t url;
    cm_buf_init(&url);
    cm_buf_puts(&url, base);
    cm_buf_puts(&url, rq->path);
    if (rq->query && rq->query[0]) {
        cm_buf_puts(&url, "?");
        cm_buf_puts(&url, rq->query);
    }
    /* Reset options but keep live connections (curl_easy_reset keeps them). */
    curl_easy_reset(h);
    int64_t left = deadline_ms - cm_now_mono_ms();
    set_common(h, url.data, u->connect_timeout_ms, left > 1 ? (long)left : 1L, out);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, rq->headers);
    if (strcmp(rq->method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
        /* POST, and PATCH/PUT/DELETE with the body the client sent (maybe none). */
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body.len);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body.ptr ? rq->body.ptr : "");
        if (strcmp(rq->method, "POST") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method);
    }
    response_reset(out);
    CURLcode code = curl_easy_perform(h);
    cm_buf_dispose(&url);
    if (code == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
    return code;
}

/* True when the request never reached a service, so another address may take it. */
static bool never_connected(CURL *h, CURLcode code)
{
    if (code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST)
        return true;
    curl_off_t pre = 0;
    curl_easy_getinfo(h, CURLINFO_PRETRANSFER_TIME_T, &pre);
    return code == CURLE_OPERATION_TIMEDOUT && pre == 0;
}

static int map_code(CURLcode code, const gw_fwd_response_t *out)
{
    if (code == CURLE_OPERATION_TIMEDOUT)
        return CM_ETIMEDOUT;
    if (code == CURLE_WRITE_ERROR && out->too_big)
        return CM_ETOOBIG;
    return CM_EIO;
}

int gw_upstream_forward(gw_upstream_t *u, const gw_fwd_request_t *rq, gw_fwd_response_t *out)
{
    memset(out, 0, sizeof *out);
    cm_buf_init(&out->body);
    if (u->urls.n == 0)
        return CM_EUNAVAIL;
    /* UPSTREAM_TIMEOUT_MS bounds everything: the wait for a handle and every attempt. */
    int64_t deadline = cm_now_mono_ms() + u->timeout_ms;
    CURL *h = take_handle(u, deadline);
    if (!h)
        return CM_EBUSY;
    unsigned start = atomic_fetch_add(&u->next, 1u);
    int rc = CM_EUNAVAIL;
    for (size_t i = 0; i < u->urls.n && cm_now_mono_ms() < deadline; i++) {
        const char *base = u->urls.items[(start + i) % u->urls.n];
        CURLcode code = perform_once(u, h, base, deadline, rq, out);
        if (code == CURLE_OK) {
            rc = 0;
            break;
        }
        if (!never_connected(h, code)) {
            rc = map_code(code, out);
            break;
        }
    }
    give_handle(u, h);
    return rc;
}

void gw_fwd_response_dispose(gw_fwd_response_t *r)
{
    if (r)
        cm_buf_dispose(&r->body);
}

/* ---- headers ---------------------------------------------------------------- */

bool gw_header_forwardable(const char *name)
{
    for (int i = 0; name && FORWARDED[i]; i++)
        if (strcasecmp(name, FORWARDED[i]) == 0)
            return true;
    return false;
}

static struct curl_slist *add_header(struct curl_slist *l, const char *name, const char *value)
{
    if (!value || strpbrk(value, "\r\n"))
        return l;
    cm_buf_t line;
    cm_buf_init(&line);
    cm_buf_puts(&line, name);
    /* "Name:" with nothing after it removes a header curl would add itself. */
    cm_buf_puts(&line, value[0] ? ": " : ":");
    cm_buf_puts(&line, value);
    struct curl_slist *n = curl_slist_append(l, line.data);
    cm_buf_dispose(&line);
    if (!n)
        abort();
    return n;
}

struct curl_slist *gw_upstream_headers(gw_header_fn get, const void *src, const char *request_id,
                                       const char *xff, const char *client_ip)
{
    struct curl_slist *l = NULL;
    for (int i = 0; FORWARDED[i]; i++)
        l = add_header(l, FORWARDED[i], get(src, FORWARDED[i]));
    /* Stop curl from adding its own defaults (a form Content-Type on an empty POST). */
    if (!get(src, "Content-Type"))
        l = add_header(l, "Content-Type", "");
    if (!get(src, "Accept"))
        l = add_header(l, "Accept", "");
    l = add_header(l, "X-Request-Id", request_id);
    l = add_header(l, "X-Forwarded-For", xff);
    l = add_header(l, "X-Real-IP", client_ip);
    l = add_header(l, "Expect", "");
    return l;
}
