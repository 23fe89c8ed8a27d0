#include "proxy.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

/* One base URL, taken apart once. */
typedef struct gw_addr {
    const char *url; /* borrowed from the upstream's urls */
    bool curl;       /* https (or a form our parser leaves to curl) */
    char *host;      /* for getaddrinfo: no brackets around an IPv6 literal */
    char *port;      /* decimal */
    char *authority; /* the Host header: host[:port] as configured */
    char *prefix;    /* the path before the request's, "" for none */
    /* The host's addresses, guarded by the upstream's mu: resolved once for an IP literal,
     * else again every GW_RESOLVE_EVERY_MS by one thread while the others use the last answer. */
    struct addrinfo *ai;
    int64_t resolved_ms;
    bool numeric, resolving;
} gw_addr_t;

/* How long a resolved host name is used before it is asked again. */
#define GW_RESOLVE_EVERY_MS 30000
/* Addresses of one host tried per new connection. */
#define GW_MAX_TARGETS 4

/* Copies of a host's addresses for one dial, so no lock is held while connecting. */
typedef struct gw_targets {
    struct sockaddr_storage sa[GW_MAX_TARGETS];
    socklen_t len[GW_MAX_TARGETS];
    int family[GW_MAX_TARGETS];
    size_t n;
} gw_targets_t;

/* An idle kept-alive socket to addrs[addr], in the pool since since_ms. */
typedef struct gw_conn {
    int fd;
    size_t addr;
    int64_t since_ms;
} gw_conn_t;

/*
 * A request waiting for a slot: on its own stack, woken alone when the slot
 * passes to it (slots go to waiters first come, first served).
 */
typedef struct slot_waiter {
    pthread_cond_t wake;
    bool granted;
    struct slot_waiter *next;
} slot_waiter_t;

struct gw_upstream {
    char *name;
    gw_list_t urls;
    gw_addr_t *addrs; /* one per url */
    atomic_uint next; /* round-robin cursor */
    int connect_timeout_ms;
    int timeout_ms;
    pthread_mutex_t mu;      /* guards everything below */
    pthread_condattr_t mono; /* waiters' condition variables time out on CLOCK_MONOTONIC */
    slot_waiter_t *first;    /* requests waiting for a slot, in arrival order */
    slot_waiter_t *last;
    size_t nwaiting;      /* how many */
    cm_family_t *waiting; /* gauge of nwaiting by upstream (borrowed), or NULL */
    size_t busy;          /* requests in flight */
    size_t cap;           /* most requests in flight, so most connections per address */
    CURL **idle;          /* libcurl handles not lent out (https addresses) */
    size_t nidle;
    gw_conn_t *conns; /* idle sockets (http addresses), oldest first */
    size_t nconns;
    size_t conns_cap; /* cap per address */
};

static const char *const FORWARDED[] = {"Content-Type", "Authorization", "Accept", "User-Agent",
                                        NULL};

/* ---- addresses ----------------------------------------------------------- */

static bool valid_port(const char *p, size_t n)
{
    long long v = 0;
    if (n == 0 || n > 5)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (p[i] - '0');
    }
    return v >= 1 && v <= 65535;
}

/* Splits "http://host[:port][/prefix]"; false leaves the address to curl. */
static bool split_http_url(const char *url, gw_addr_t *a)
{
    if (strncasecmp(url, "http://", 7) != 0)
        return false;
    const char *auth = url + 7;
    size_t alen = strcspn(auth, "/?#");
    const char *rest = auth + alen;
    if (alen == 0 || memchr(auth, '@', alen) || *rest == '?' || *rest == '#')
        return false;
    const char *host = auth, *colon = NULL;
    size_t hlen;
    if (auth[0] == '[') {
        const char *close = memchr(auth, ']', alen);
        if (!close)
            return false;
        host = auth + 1;
        hlen = (size_t)(close - host);
        colon = close + 1 < auth + alen ? close + 1 : NULL;
        if (colon && *colon != ':')
            return false;
    } else {
        colon = memchr(auth, ':', alen);
        hlen = colon ? (size_t)(colon - auth) : alen;
    }
    size_t plen = colon ? (size_t)(auth + alen - colon - 1) : 0;
    if (hlen == 0 || (colon && !valid_port(colon + 1, plen)))
        return false;
    a->host = cm_xstrndup(host, hlen);
    a->port = colon ? cm_xstrndup(colon + 1, plen) : cm_xstrdup("80");
    a->authority = cm_xstrndup(auth, alen);
    size_t rlen = strlen(rest);
    while (rlen > 0 && rest[rlen - 1] == '/')
        rlen--;
    a->prefix = cm_xstrndup(rest, rlen);
    return true;
}

static void addr_dispose(gw_addr_t *a)
{
    if (a->ai)
        freeaddrinfo(a->ai);
    free(a->host);
    free(a->port);
    free(a->authority);
    free(a->prefix);
}

static int resolve(const gw_addr_t *a, int flags, struct addrinfo **res)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV | flags};
    return getaddrinfo(a->host, a->port, &hints, res) == 0 ? 0 : CM_EUNAVAIL;
}

/* An IP literal is resolved here, once; a host name when first needed (targets_for). */
static void resolve_numeric(gw_addr_t *a)
{
    if (!a->curl && resolve(a, AI_NUMERICHOST, &a->ai) == 0)
        a->numeric = true;
}

/* ---- pool ------------------------------------------------------------------ */

gw_upstream_t *gw_upstream_new(const char *name, const gw_list_t *urls, int connect_timeout_ms,
                               int timeout_ms, size_t max_conns)
{
    gw_upstream_t *u = cm_xcalloc(1, sizeof *u);
    u->name = cm_xstrdup(name);
    u->urls.items = cm_xcalloc(urls->n ? urls->n : 1, sizeof *u->urls.items);
    u->addrs = cm_xcalloc(urls->n ? urls->n : 1, sizeof *u->addrs);
    for (size_t i = 0; i < urls->n; i++) {
        u->urls.items[i] = cm_xstrdup(urls->items[i]);
        u->addrs[i].url = u->urls.items[i];
        u->addrs[i].curl = !split_http_url(u->urls.items[i], &u->addrs[i]);
        resolve_numeric(&u->addrs[i]);
    }
    u->urls.n = urls->n;
    atomic_init(&u->next, 0);
    u->connect_timeout_ms = connect_timeout_ms;
    u->timeout_ms = timeout_ms;
    pthread_mutex_init(&u->mu, NULL);
    pthread_condattr_init(&u->mono);
    pthread_condattr_setclock(&u->mono, CLOCK_MONOTONIC);
    u->cap = max_conns ? max_conns : 1;
    u->idle = cm_xcalloc(u->cap, sizeof *u->idle);
    u->conns_cap = u->cap * (urls->n ? urls->n : 1);
    u->conns = cm_xcalloc(u->conns_cap, sizeof *u->conns);
    return u;
}

void gw_upstream_free(gw_upstream_t *u)
{
    if (!u)
        return;
    for (size_t i = 0; i < u->nidle; i++)
        curl_easy_cleanup(u->idle[i]);
    free(u->idle);
    for (size_t i = 0; i < u->nconns; i++)
        close(u->conns[i].fd);
    free(u->conns);
    for (size_t i = 0; i < u->urls.n; i++)
        addr_dispose(&u->addrs[i]);
    free(u->addrs);
    pthread_condattr_destroy(&u->mono);
    pthread_mutex_destroy(&u->mu);
    gw_list_dispose(&u->urls);
    free(u->name);
    free(u);
}

const char *gw_upstream_name(const gw_upstream_t *u)
{
    return u->name;
}

size_t gw_upstream_waiting(gw_upstream_t *u)
{
    pthread_mutex_lock(&u->mu);
    size_t n = u->nwaiting;
    pthread_mutex_unlock(&u->mu);
    return n;
}

void gw_upstream_export_waiting(gw_upstream_t *u, cm_family_t *gauge)
{
    pthread_mutex_lock(&u->mu);
    u->waiting = gauge;
    cm_metric_set(gauge, (const char *const[]){u->name}, (double)u->nwaiting);
    pthread_mutex_unlock(&u->mu);
}

/* Counts a waiter in or out (delta +1 or -1) and updates the gauge. Call with mu held. */
static void count_waiting(gw_upstream_t *u, int delta)
{
    u->nwaiting = delta > 0 ? u->nwaiting + 1 : u->nwaiting - 1;
    cm_metric_set(u->waiting, (const char *const[]){u->name}, (double)u->nwaiting);
}

/* The monotonic clock at ms, as pthread_cond_timedwait wants it. */
static struct timespec mono_at(int64_t ms)
{
    return (struct timespec){.tv_sec = (time_t)(ms / 1000),
                             .tv_nsec = (long)(ms % 1000) * 1000000L};
}

/* Puts w (on its thread's stack) last in the queue of waiters. Call with mu held; w leaves the
 * queue before its thread returns (given the slot, or unqueue). */
static void enqueue(gw_upstream_t *u, slot_waiter_t *w)
{
    if (u->last)
        u->last->next = w;
    else
        u->first = w;
    u->last = w;
    count_waiting(u, +1);
}

/* Takes w out of the queue of waiters (it timed out). Call with mu held. */
static void unqueue(gw_upstream_t *u, slot_waiter_t *w)
{
    slot_waiter_t *prev = NULL;
    for (slot_waiter_t *q = u->first; q; prev = q, q = q->next) {
        if (q != w)
            continue;
        if (prev)
            prev->next = q->next;
        else
            u->first = q->next;
        if (u->last == q)
            u->last = prev;
        count_waiting(u, -1);
        return;
    }
}

/*
 * Takes a slot (one of cap requests in flight), waiting until deadline_ms
 * (monotonic) at most. Waiters are served in arrival order: a returned slot
 * passes straight to the oldest waiter (give_slot), so a request arriving
 * while others wait queues behind them instead of taking the slot first.
 * With a plain condition variable any thread could take a freed slot, and
 * at 64 connections over 8 slots a few unlucky requests waited ten times
 * as long as the rest (issue 16: p99).
 */
static bool take_slot(gw_upstream_t *u, int64_t deadline_ms)
{
    pthread_mutex_lock(&u->mu);
    if (u->busy < u->cap && !u->first) {
        u->busy++;
        pthread_mutex_unlock(&u->mu);
        return true;
    }
    slot_waiter_t w = {.granted = false, .next = NULL};
    pthread_cond_init(&w.wake, &u->mono);
    enqueue(u, &w);
    while (!w.granted && cm_now_mono_ms() < deadline_ms) {
        struct timespec ts = mono_at(deadline_ms);
        pthread_cond_timedwait(&w.wake, &u->mu, &ts);
    }
    if (!w.granted)
        unqueue(u, &w);
    pthread_mutex_unlock(&u->mu);
    pthread_cond_destroy(&w.wake);
    return w.granted;
}

/* Returns a slot: to the oldest waiter when there is one (busy stays), else to the pool. */
static void give_slot(gw_upstream_t *u)
{
    pthread_mutex_lock(&u->mu);
    slot_waiter_t *w = u->first;
    if (w) {
        u->first = w->next;
        if (!u->first)
            u->last = NULL;
        count_waiting(u, -1);
        w->granted = true;
        /* Under mu: w lives on its thread's stack until that thread sees granted. */
        pthread_cond_signal(&w->wake);
    } else {
        u->busy--;
    }
    pthread_mutex_unlock(&u->mu);
}

/* Lends an idle libcurl handle (with its warm connections) or makes one; the caller holds a slot.
 */
static CURL *take_handle(gw_upstream_t *u)
{
    CURL *h = NULL;
    pthread_mutex_lock(&u->mu);
    if (u->nidle > 0)
        h = u->idle[--u->nidle];
    pthread_mutex_unlock(&u->mu);
    if (!h && !(h = curl_easy_init()))
        abort(); /* out of memory, like cm_xmalloc */
    return h;
}

static void give_handle(gw_upstream_t *u, CURL *h)
{
    pthread_mutex_lock(&u->mu);
    u->idle[u->nidle++] = h; /* handles <= slots <= cap, so there is always room */
    pthread_mutex_unlock(&u->mu);
}

/* Drops idle sockets past GW_UPSTREAM_IDLE_MS (the oldest come first). Call with mu held. */
static void prune_conns(gw_upstream_t *u, int64_t now)
{
    size_t stale = 0;
    while (stale < u->nconns && now - u->conns[stale].since_ms >= GW_UPSTREAM_IDLE_MS)
        close(u->conns[stale++].fd);
    if (stale == 0)
        return;
    memmove(u->conns, u->conns + stale, (u->nconns - stale) * sizeof *u->conns);
    u->nconns -= stale;
}

/* The most recently used idle socket to addrs[addr], or -1. */
static int take_conn(gw_upstream_t *u, size_t addr)
{
    int fd = -1;
    pthread_mutex_lock(&u->mu);
    prune_conns(u, cm_now_mono_ms());
    for (size_t i = u->nconns; i-- > 0;) {
        if (u->conns[i].addr != addr)
            continue;
        fd = u->conns[i].fd;
        memmove(u->conns + i, u->conns + i + 1, (u->nconns - i - 1) * sizeof *u->conns);
        u->nconns--;
        break;
    }
    pthread_mutex_unlock(&u->mu);
    return fd;
}

/* Puts a socket back for the next request, or closes it when the pool is full. */
static void give_conn(gw_upstream_t *u, size_t addr, int fd)
{
    pthread_mutex_lock(&u->mu);
    int64_t now = cm_now_mono_ms();
    prune_conns(u, now);
    size_t same = 0;
    for (size_t i = 0; i < u->nconns; i++)
        same += u->conns[i].addr == addr;
    if (same < u->cap && u->nconns < u->conns_cap) {
        u->conns[u->nconns++] = (gw_conn_t){fd, addr, now};
        fd = -1;
    }
    pthread_mutex_unlock(&u->mu);
    if (fd >= 0)
        close(fd);
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
    /* Never reuse a connection the upstream may be closing (curl counts whole seconds). */
    curl_easy_setopt(h, CURLOPT_MAXAGE_CONN, 1L);
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

/* One attempt per address through libcurl while the request never reached a service. */
static int forward_curl(gw_upstream_t *u, size_t ai, int64_t deadline, const gw_fwd_request_t *rq,
                        gw_fwd_response_t *out, bool *never)
{
    CURL *h = take_handle(u);
    CURLcode code = perform_once(u, h, u->addrs[ai].url, deadline, rq, out);
    *never = code != CURLE_OK && never_connected(h, code);
    give_handle(u, h);
    return code == CURLE_OK ? 0 : map_code(code, out);
}

/* ---- the answer's head ------------------------------------------------------ */

size_t gw_resp_head_end(const char *buf, size_t len)
{
    for (size_t i = 3; i < len; i++)
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r')
            return i + 1;
    return 0;
}

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Field-value bytes (RFC 9110): visible, space, tab, obs-text; no other control byte. */
static bool value_ok(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

static bool name_is(cm_slice_t name, const char *want)
{
    return name.len == strlen(want) && strncasecmp(name.ptr, want, name.len) == 0;
}

/* Copies a relayed header's value when it fits its field. */
static void keep_value(cm_slice_t v, char *dst, size_t cap)
{
    if (v.len == 0 || v.len >= cap)
        return;
    memcpy(dst, v.ptr, v.len);
    dst[v.len] = '\0';
}

/* "HTTP/1.x NNN reason": fills out->status (200-599 only) and whether 1.1 keeps alive. */
static int parse_status_line(cm_slice_t line, gw_fwd_response_t *out, bool *http11)
{
    const char *l = line.ptr;
    if (line.len < 12 || memcmp(l, "HTTP/1.", 7) != 0 || (l[7] != '0' && l[7] != '1') ||
        l[8] != ' ' || (line.len > 12 && l[12] != ' '))
        return CM_EPARSE;
    long st = 0;
    for (int i = 9; i < 12; i++) {
        if (l[i] < '0' || l[i] > '9')
            return CM_EPARSE;
        st = st * 10 + (l[i] - '0');
    }
    if (st < 200 || st > 599 || !value_ok(l + 12, line.len - 12))
        return CM_EPARSE; /* interim answers are refused: we never ask for 100-continue */
    out->status = st;
    *http11 = l[7] == '1';
    return 0;
}

/* Content-Length: digits only, once; past GW_MAX_RESPONSE is too big. */
static int parse_length(cm_slice_t v, bool *seen, size_t *len, gw_fwd_response_t *out)
{
    if (*seen || v.len == 0)
        return CM_EPARSE;
    *seen = true;
    size_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.ptr[i] < '0' || v.ptr[i] > '9')
            return CM_EPARSE;
        if (n > GW_MAX_RESPONSE) {
            out->too_big = true;
            return CM_ETOOBIG;
        }
        n = n * 10 + (size_t)(v.ptr[i] - '0');
    }
    if (n > GW_MAX_RESPONSE) {
        out->too_big = true;
        return CM_ETOOBIG;
    }
    *len = n;
    return 0;
}

/* True when a Connection value lists the token "close". */
static bool says_close(cm_slice_t v)
{
    for (size_t i = 0; i + 5 <= v.len; i++)
        if (strncasecmp(v.ptr + i, "close", 5) == 0 && (i == 0 || strchr(" ,\t", v.ptr[i - 1])) &&
            (i + 5 == v.len || strchr(" ,\t", v.ptr[i + 5])))
            return true;
    return false;
}

typedef struct head_state {
    bool seen_length, close;
    size_t length;
} head_state_t;

/* One "Name: value" line; the framing headers and the four relayed ones are read. */
static int parse_field(cm_slice_t line, head_state_t *st, gw_fwd_response_t *out)
{
    const char *colon = memchr(line.ptr, ':', line.len);
    if (!colon || colon == line.ptr)
        return CM_EPARSE; /* also refuses obs-fold: a leading space is no tchar */
    cm_slice_t name = {line.ptr, (size_t)(colon - line.ptr)};
    for (size_t i = 0; i < name.len; i++)
        if (!is_tchar((unsigned char)name.ptr[i]))
            return CM_EPARSE;
    cm_slice_t v = {colon + 1, line.len - name.len - 1};
    while (v.len > 0 && (v.ptr[0] == ' ' || v.ptr[0] == '\t')) {
        v.ptr++;
        v.len--;
    }
    while (v.len > 0 && (v.ptr[v.len - 1] == ' ' || v.ptr[v.len - 1] == '\t'))
        v.len--;
    if (!value_ok(v.ptr, v.len))
        return CM_EPARSE;
    if (name_is(name, "Content-Length"))
        return parse_length(v, &st->seen_length, &st->length, out);
    if (name_is(name, "Transfer-Encoding"))
        return CM_EPARSE; /* chunked (or anything else): not what our services send */
    if (name_is(name, "Connection"))
        st->close = st->close || says_close(v);
    else if (name_is(name, "Content-Type"))
        keep_value(v, out->content_type, sizeof out->content_type);
    else if (name_is(name, "Retry-After"))
        keep_value(v, out->retry_after, sizeof out->retry_after);
    else if (name_is(name, "WWW-Authenticate"))
        keep_value(v, out->www_authenticate, sizeof out->www_authenticate);
    else if (name_is(name, "Cache-Control"))
        keep_value(v, out->cache_control, sizeof out->cache_control);
    return 0;
}

/* The next CRLF-ended line at *pos of buf[0..end); bare CR or LF inside is refused. */
static int next_line(const char *buf, size_t end, size_t *pos, cm_slice_t *line)
{
    const char *p = buf + *pos;
    const char *lf = memchr(p, '\n', end - *pos);
    if (!lf || lf == p || lf[-1] != '\r' || memchr(p, '\r', (size_t)(lf - p) - 1))
        return CM_EPARSE;
    *line = (cm_slice_t){p, (size_t)(lf - p) - 1};
    *pos = (size_t)(lf - buf) + 1;
    return 0;
}

int gw_resp_head_parse(const char *buf, size_t head_len, gw_fwd_response_t *out,
                       gw_resp_framing_t *f)
{
    out->status = 0;
    out->content_type[0] = out->retry_after[0] = out->www_authenticate[0] = '\0';
    out->cache_control[0] = '\0';
    *f = (gw_resp_framing_t){0};
    if (head_len < 4 || gw_resp_head_end(buf, head_len) != head_len)
        return CM_EPARSE;
    head_state_t st = {0};
    bool http11 = false;
    size_t pos = 0;
    cm_slice_t line;
    int rc = next_line(buf, head_len, &pos, &line);
    if (rc == 0)
        rc = parse_status_line(line, out, &http11);
    while (rc == 0 && pos < head_len - 2) {
        rc = next_line(buf, head_len, &pos, &line);
        if (rc == 0)
            rc = parse_field(line, &st, out);
    }
    bool bodiless = out->status == 204 || out->status == 304;
    if (rc == 0 && !st.seen_length && !bodiless)
        rc = CM_EPARSE; /* no Content-Length: the end would be the close, which proves nothing */
    if (rc != 0) {
        out->status = 0;
        return rc;
    }
    f->head_len = head_len;
    f->content_length = bodiless ? 0 : st.length;
    /* A 204/304 that announces a body is broken: do not read it, do not reuse the socket. */
    f->keep_alive = http11 && !st.close && !(bodiless && st.length > 0);
    return 0;
}

/* ---- our HTTP/1.1 client for http:// upstreams ------------------------------ */

/* Waits for events on fd until deadline_ms; CM_ETIMEDOUT when it passes. */
static int wait_fd(int fd, short events, int64_t deadline_ms)
{
    for (;;) {
        int64_t left = deadline_ms - cm_now_mono_ms();
        if (left <= 0)
            return CM_ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return CM_EIO;
    }
}

/* One TCP connection to one resolved address, within deadline_ms. */
static int dial_one(int family, const struct sockaddr *sa, socklen_t len, int64_t deadline_ms,
                    int *out)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return CM_EIO;
    int rc = 0;
    if (connect(fd, sa, len) != 0) {
        rc = errno == EINPROGRESS ? wait_fd(fd, POLLOUT, deadline_ms) : CM_EUNAVAIL;
        int err = 0;
        socklen_t elen = sizeof err;
        if (rc == 0 && (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0))
            rc = CM_EUNAVAIL;
    }
    if (rc != 0) {
        close(fd);
        return rc;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *out = fd;
    return 0;
}

/* Copies what a->ai holds into t. Call with the upstream's mu held. */
static void copy_targets(const gw_addr_t *a, gw_targets_t *t)
{
    t->n = 0;
    for (const struct addrinfo *ai = a->ai; ai && t->n < GW_MAX_TARGETS; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof t->sa[0])
            continue;
        memcpy(&t->sa[t->n], ai->ai_addr, ai->ai_addrlen);
        t->len[t->n] = ai->ai_addrlen;
        t->family[t->n++] = ai->ai_family;
    }
}

/*
 * The addresses to connect to. A host name is resolved again when its
 * answer is older than GW_RESOLVE_EVERY_MS, by one thread at a time; the
 * others (and that one, if the resolver fails) use the last good answer,
 * so a slow or failing DNS blocks at most one request per interval.
 */
static int targets_for(gw_upstream_t *u, size_t i, gw_targets_t *t)
{
    gw_addr_t *a = &u->addrs[i];
    if (a->numeric) {
        /* A numeric address is resolved once, at start, and never again: nothing to guard. */
        copy_targets(a, t);
        return t->n ? 0 : CM_EUNAVAIL;
    }
    int64_t now = cm_now_mono_ms();
    pthread_mutex_lock(&u->mu);
    bool stale = !a->ai || now - a->resolved_ms >= GW_RESOLVE_EVERY_MS;
    bool mine = stale && (!a->resolving || !a->ai);
    a->resolving = a->resolving || mine;
    copy_targets(a, t);
    pthread_mutex_unlock(&u->mu);
    if (!mine)
        return t->n ? 0 : CM_EUNAVAIL;
    struct addrinfo *res = NULL;
    int rc = resolve(a, 0, &res);
    pthread_mutex_lock(&u->mu);
    a->resolving = false;
    if (rc == 0) {
        if (a->ai)
            freeaddrinfo(a->ai);
        a->ai = res;
        a->resolved_ms = now;
    }
    copy_targets(a, t);
    pthread_mutex_unlock(&u->mu);
    return t->n ? 0 : CM_EUNAVAIL;
}

/*
 * A new connection to addrs[i], within the connect timeout and the
 * request's deadline. Returns CM_EUNAVAIL or CM_ETIMEDOUT when none could
 * be made (the request never left, so the caller may try another address).
 */
static int dial(gw_upstream_t *u, size_t i, int64_t deadline_ms, int *fd)
{
    int64_t until = cm_now_mono_ms() + u->connect_timeout_ms;
    if (until > deadline_ms)
        until = deadline_ms;
    gw_targets_t t;
    int rc = targets_for(u, i, &t);
    for (size_t k = 0; k < t.n; k++) {
        rc = dial_one(t.family[k], (const struct sockaddr *)&t.sa[k], t.len[k], until, fd);
        if (rc == 0 || rc == CM_ETIMEDOUT)
            break;
    }
    return rc;
}

/* True when an idle socket is still open and quiet (no close, no stray bytes from the upstream). */
static bool still_usable(int fd)
{
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Text a request line may carry: visible ASCII, no space. */
static bool line_safe(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* Headers this client writes itself (framing and hop-by-hop); a caller's copy is dropped. */
static bool own_header(const char *line)
{
    static const char *const own[] = {"Host:",       "Content-Length:", "Transfer-Encoding:",
                                      "Connection:", "Expect:",         "Keep-Alive:",
                                      "TE:",         "Upgrade:",        NULL};
    for (int i = 0; own[i]; i++)
        if (strncasecmp(line, own[i], strlen(own[i])) == 0)
            return true;
    return false;
}

/* The whole request, head and body, to be written at once. */
static int build_request(const gw_addr_t *a, const gw_fwd_request_t *rq, cm_buf_t *out)
{
    if (!line_safe(rq->method) || !line_safe(rq->path) || rq->path[0] != '/' ||
        !line_safe(rq->query) || !rq->method[0] || strcmp(rq->method, "HEAD") == 0)
        return CM_EINVAL; /* HEAD would answer a length without a body: routes send GET */
    cm_buf_puts(out, rq->method);
    cm_buf_puts(out, " ");
    cm_buf_puts(out, a->prefix);
    cm_buf_puts(out, rq->path);
    if (rq->query && rq->query[0]) {
        cm_buf_puts(out, "?");
        cm_buf_puts(out, rq->query);
    }
    cm_buf_puts(out, " HTTP/1.1\r\nHost: ");
    cm_buf_puts(out, a->authority);
    cm_buf_puts(out, "\r\n");
    for (const struct curl_slist *h = rq->headers; h; h = h->next) {
        const char *colon = strchr(h->data, ':');
        /* "Name:" alone is curl's way to say "do not send"; our client sends nothing anyway. */
        if (!colon || colon[1] == '\0' || own_header(h->data) || strpbrk(h->data, "\r\n"))
            continue;
        cm_buf_puts(out, h->data);
        cm_buf_puts(out, "\r\n");
    }
    if (strcmp(rq->method, "GET") != 0) {
        cm_buf_puts(out, "Content-Length: ");
        cm_buf_put_uint(out, rq->body.len);
        cm_buf_puts(out, "\r\n");
    }
    cm_buf_puts(out, "\r\n");
    if (rq->body.len)
        cm_buf_append(out, rq->body.ptr, rq->body.len);
    return 0;
}

/* Writes all of req; *failed tells whether the socket refused it (then nothing was processed). */
static int send_all(int fd, const cm_buf_t *req, int64_t deadline_ms, bool *failed)
{
    size_t off = 0;
    while (off < req->len) {
        ssize_t n = send(fd, req->data + off, req->len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(fd, POLLOUT, deadline_ms);
            if (rc != 0)
                return rc;
            continue;
        }
        *failed = off == 0;
        return CM_EIO;
    }
    return 0;
}

/* Room for want more bytes after b->len (and the NUL cm_buf keeps). */
static void reserve(cm_buf_t *b, size_t want)
{
    if (b->cap - b->len > want)
        return;
    size_t cap = b->len + want + 1;
    b->data = cm_xreallocarray(b->data, cap, 1);
    b->cap = cap;
}

/*
 * Reads one answer into out: the head parsed, the body (exactly
 * Content-Length bytes) in out->body. *got tells whether any byte came;
 * *reusable whether the socket may carry the next request.
 */
static int read_answer(int fd, int64_t deadline_ms, gw_fwd_response_t *out, bool *got,
                       bool *reusable)
{
    cm_buf_t *b = &out->body;
    gw_resp_framing_t f = {0};
    size_t need = 0; /* head + body once the head is known */
    for (;;) {
        size_t want = need ? need - b->len : 4096;
        if (!need && b->len + want > GW_MAX_RESPONSE_HEAD)
            want = GW_MAX_RESPONSE_HEAD - b->len;
        reserve(b, want);
        int rc = wait_fd(fd, POLLIN, deadline_ms);
        if (rc != 0)
            return rc;
        ssize_t n = recv(fd, b->data + b->len, want, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            continue;
        if (n <= 0)
            return CM_EIO; /* closed or reset before the answer was whole */
        *got = true;
        size_t before = b->len;
        b->len += (size_t)n;
        if (!need) {
            size_t from = before > 3 ? before - 3 : 0;
            size_t end = gw_resp_head_end(b->data + from, b->len - from);
            if (!end) {
                if (b->len >= GW_MAX_RESPONSE_HEAD)
                    return CM_EPARSE;
                continue;
            }
            if ((rc = gw_resp_head_parse(b->data, from + end, out, &f)) != 0)
                return rc;
            need = f.head_len + f.content_length;
            if (b->len > need)
                return CM_EPARSE; /* bytes past the announced body: a broken upstream */
        }
        if (b->len == need)
            break;
    }
    memmove(b->data, b->data + f.head_len, f.content_length);
    b->len = f.content_length;
    b->data[b->len] = '\0';
    /* One recv at a time of at most what is owed, so nothing of a next answer was read. */
    *reusable = f.keep_alive;
    return 0;
}
/* Empties what an attempt left in out, so the next one starts clean. */
static void answer_reset(gw_fwd_response_t *out)
{
    out->status = 0;
    out->body.len = 0;
    out->content_type[0] = out->retry_after[0] = out->www_authenticate[0] = '\0';
    out->cache_control[0] = '\0';
    out->too_big = false;
}

/*
 * One request over a socket to addrs[ai]: a kept-alive one when the pool
 * has it, else a new one. A kept-alive socket that fails before any answer
 * byte gets one more try on a new socket when that cannot run the request
 * twice: the write failed, or it is a GET. *never is set when no
 * connection could be made at all (the caller tries the next address).
 */
static int forward_plain(gw_upstream_t *u, size_t ai, int64_t deadline, const gw_fwd_request_t *rq,
                         gw_fwd_response_t *out, bool *never)
{
    const gw_addr_t *a = &u->addrs[ai];
    cm_buf_t req;
    cm_buf_init(&req);
    reserve(&req, 1024 + rq->body.len); /* the head of a proxied request fits in one allocation */
    int rc = build_request(a, rq, &req);
    int fd = rc == 0 ? take_conn(u, ai) : -1;
    for (int tries = 0; rc == 0 && tries < 2; tries++) {
        bool reused = fd >= 0, write_failed = false, got = false, reusable = false;
        if (reused && !still_usable(fd)) {
            close(fd);
            fd = -1;
            reused = false;
        }
        if (!reused && (rc = dial(u, ai, deadline, &fd)) != 0) {
            *never = true;
            break;
        }
        answer_reset(out);
        rc = send_all(fd, &req, deadline, &write_failed);
        if (rc == 0)
            rc = read_answer(fd, deadline, out, &got, &reusable);
        if (rc == 0 && reusable) {
            give_conn(u, ai, fd);
        } else {
            close(fd);
        }
        fd = -1;
        bool stale = rc == CM_EIO && reused && !got;
        if (!stale || !(write_failed || strcmp(rq->method, "GET") == 0))
            break;
        rc = 0; /* the kept-alive socket had died under us: once more on a new one */
    }
    if (fd >= 0)
        close(fd);
    cm_buf_dispose(&req);
    return rc;
}

int gw_upstream_forward(gw_upstream_t *u, const gw_fwd_request_t *rq, gw_fwd_response_t *out)
{
    memset(out, 0, sizeof *out);
    cm_buf_init(&out->body);
    if (u->urls.n == 0)
        return CM_EUNAVAIL;
    /* UPSTREAM_TIMEOUT_MS bounds everything: the wait for a slot and every attempt. */
    int64_t deadline = cm_now_mono_ms() + u->timeout_ms;
    /* A slot that came with no time left is as good as none: busy, not unavailable. */
    if (!take_slot(u, deadline))
        return CM_EBUSY;
    if (cm_now_mono_ms() >= deadline) {
        give_slot(u);
        return CM_EBUSY;
    }
    unsigned start = atomic_fetch_add(&u->next, 1u);
    int rc = CM_EUNAVAIL;
    for (size_t i = 0; i < u->urls.n && cm_now_mono_ms() < deadline; i++) {
        size_t ai = (start + i) % u->urls.n;
        bool never = false;
        rc = u->addrs[ai].curl ? forward_curl(u, ai, deadline, rq, out, &never)
                               : forward_plain(u, ai, deadline, rq, out, &never);
        if (!never)
            break;
        rc = CM_EUNAVAIL;
    }
    give_slot(u);
    if (rc != 0) {
        bool too_big = out->too_big;
        answer_reset(out);
        out->too_big = too_big;
    }
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
    /* One line per header, on the stack when it fits (most do): this runs for every request. */
    size_t nlen = strlen(name), vlen = strlen(value);
    char small[512];
    char *line = nlen + vlen + 3 <= sizeof small ? small : cm_xmalloc(nlen + vlen + 3);
    memcpy(line, name, nlen);
    line[nlen] = ':';
    /* "Name:" with nothing after it removes a header curl would add itself. */
    size_t at = nlen + 1;
    if (vlen)
        line[at++] = ' ';
    memcpy(line + at, value, vlen + 1);
    struct curl_slist *n = curl_slist_append(l, line);
    if (line != small)
        free(line);
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
