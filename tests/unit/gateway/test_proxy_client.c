/*
 * The gateway's own HTTP/1.1 client (proxy.c) for http:// upstreams: the
 * answer-head parser on its own, then gw_upstream_forward against a tiny
 * scripted server in this process on 127.0.0.1 (real sockets, one thread
 * per connection): keep-alive reuse and its idle age, the bound on
 * connections, what it refuses from a broken upstream, the deadline, and
 * the one retry on a kept-alive socket that died.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proxy.h"

/* ---- the head parser --------------------------------------------------------- */

static int parse(const char *head, gw_fwd_response_t *r, gw_resp_framing_t *f)
{
    memset(r, 0, sizeof *r);
    memset(f, 0, sizeof *f);
    size_t len = strlen(head);
    size_t end = gw_resp_head_end(head, len);
    if (end != len)
        return -1000; /* the test's head is not one complete head */
    return gw_resp_head_parse(head, len, r, f);
}

static void parses_a_content_length_answer_and_keeps_the_relayed_headers(void **state)
{
    (void)state;
    gw_fwd_response_t r;
    gw_resp_framing_t f;
    const char *h = "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/problem+json\r\n"
                    "Retry-After:  7 \r\nWWW-Authenticate: Bearer\r\ncache-control: no-store\r\n"
                    "X-Other: x\r\nContent-Length: 42\r\n\r\n";
    assert_int_equal(parse(h, &r, &f), 0);
    assert_int_equal(r.status, 429);
    assert_string_equal(r.content_type, "application/problem+json");
    assert_string_equal(r.retry_after, "7");
    assert_string_equal(r.www_authenticate, "Bearer");
    assert_string_equal(r.cache_control, "no-store");
    assert_int_equal(f.content_length, 42);
    assert_int_equal(f.head_len, strlen(h));
    assert_true(f.keep_alive);
}

static void refuses_chunked_and_missing_content_length_but_not_on_204_and_304(void **state)
{
    (void)state;
    gw_fwd_response_t r;
    gw_resp_framing_t f;
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &r, &f),
                     CM_EPARSE);
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3"
                           "\r\n\r\n",
                           &r, &f),
                     CM_EPARSE);
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nContent-Type: a/b\r\n\r\n", &r, &f), CM_EPARSE);
    assert_int_equal(r.status, 0);
    assert_int_equal(parse("HTTP/1.1 204 No Content\r\n\r\n", &r, &f), 0);
    assert_int_equal(f.content_length, 0);
    assert_true(f.keep_alive);
    assert_int_equal(parse("HTTP/1.1 304 Not Modified\r\n\r\n", &r, &f), 0);
    /* A 204 announcing a body is broken: nothing is read, the socket is not reused. */
    assert_int_equal(parse("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", &r, &f), 0);
    assert_int_equal(f.content_length, 0);
    assert_false(f.keep_alive);
}

static void refuses_repeated_signed_listed_and_oversized_content_length(void **state)
{
    (void)state;
    gw_fwd_response_t r;
    gw_resp_framing_t f;
    const char *bad[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(parse(bad[i], &r, &f), CM_EPARSE);
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nContent-Length: 1048577\r\n\r\n", &r, &f),
                     CM_ETOOBIG);
    assert_true(r.too_big);
    assert_int_equal(
        parse("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999999\r\n\r\n", &r, &f),
        CM_ETOOBIG);
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n", &r, &f), 0);
    assert_int_equal(f.content_length, GW_MAX_RESPONSE);
}

static void refuses_garbage_status_lines_and_interim_answers(void **state)
{
    (void)state;
    gw_fwd_response_t r;
    gw_resp_framing_t f;
    const char *bad[] = {
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.1 101 Switching\r\n\r\n",
        "HTTP/1.1 600 Nope\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 099 x\r\nContent-Length: 0\r\n\r\n",
        "HTTP/2 200\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 20x OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 2000\r\nContent-Length: 0\r\n\r\n",
        "ICY 200 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n",
        "\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(parse(bad[i], &r, &f), CM_EPARSE);
        assert_int_equal(r.status, 0);
    }
    assert_int_equal(parse("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", &r, &f), 0);
}

static void refuses_folded_bare_and_nameless_header_lines(void **state)
{
    (void)state;
    gw_fwd_response_t r;
    gw_resp_framing_t f;
    const char *bad[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: 1\r\n folded\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: 1\nX-B: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: 1\rX-B: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n: nameless\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nno colon\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nBad Name: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: a\x7f\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(parse(bad[i], &r, &f), CM_EPARSE);
}

static void close_and_http10_answers_are_not_kept_alive(void **state)
{
    (void)state;
    gw_fwd_response_t r;
    gw_resp_framing_t f;
    assert_int_equal(
        parse("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n", &r,
              &f),
        0);
    assert_false(f.keep_alive);
    assert_int_equal(parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", &r, &f), 0);
    assert_false(f.keep_alive);
    assert_int_equal(
        parse("HTTP/1.1 200 OK\r\nConnection: closed\r\nContent-Length: 0\r\n\r\n", &r, &f), 0);
    assert_true(f.keep_alive);
}

static void values_too_long_for_their_field_are_left_out(void **state)
{
    (void)state;
    gw_fwd_response_t r;
    gw_resp_framing_t f;
    char h[1024];
    char longv[300];
    memset(longv, 'a', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    snprintf(h, sizeof h, "HTTP/1.1 401 No\r\nWWW-Authenticate: %s\r\nContent-Length: 0\r\n\r\n",
             longv);
    assert_int_equal(parse(h, &r, &f), 0);
    assert_string_equal(r.www_authenticate, "");
}

static void head_end_is_the_first_blank_line(void **state)
{
    (void)state;
    const char *s = "HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody\r\n\r\n";
    assert_int_equal(gw_resp_head_end(s, strlen(s)), strlen("HTTP/1.1 200 OK\r\nA: b\r\n\r\n"));
    assert_int_equal(gw_resp_head_end(s, 20), 0);
    assert_int_equal(gw_resp_head_end("\r\n\r", 3), 0);
}

/* ---- a scripted upstream on 127.0.0.1 ------------------------------------------ */

typedef enum mode {
    M_OK,          /* 200 with {"n":<requests so far>} */
    M_RAW,         /* srv->raw, then close when srv->close_after */
    M_SILENT,      /* read, never answer */
    M_DROP_SECOND, /* the second request on a connection: close without answering */
    M_DELAY,       /* like M_OK after 50 ms */
} mode_t_;

#define MAX_CONNS 64

typedef struct server {
    int lfd, port;
    mode_t_ mode;
    const char *raw;
    bool close_after;
    atomic_bool stop;
    atomic_int accepts, requests, posts, open, most_open;
    pthread_mutex_t mu;
    char last_head[4096];
    pthread_t acceptor, conns[MAX_CONNS];
    int fds[MAX_CONNS];
    atomic_int nconns;
} server_t;

typedef struct conn_arg {
    server_t *s;
    int fd;
} conn_arg_t;

/* strcasestr without _GNU_SOURCE. */
static const char *find_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return hay;
    return NULL;
}

/* Reads one request (head and Content-Length body); false at EOF or on stop. */
static bool read_request(server_t *s, int fd)
{
    char buf[8192];
    size_t len = 0;
    buf[0] = '\0';
    while (!strstr(buf, "\r\n\r\n")) {
        struct pollfd p = {fd, POLLIN, 0};
        if (atomic_load(&s->stop) || len + 1 >= sizeof buf)
            return false;
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t n = recv(fd, buf + len, sizeof buf - len - 1, 0);
        if (n <= 0)
            return false;
        len += (size_t)n;
        buf[len] = '\0';
    }
    char *end = strstr(buf, "\r\n\r\n") + 4;
    size_t head = (size_t)(end - buf);
    const char *cl = find_ci(buf, "\r\nContent-Length: ");
    size_t body = cl && cl < end ? strtoul(cl + 18, NULL, 10) : 0;
    while (len < head + body) {
        ssize_t n = recv(fd, buf + len, sizeof buf - len - 1, 0);
        if (n <= 0)
            return false;
        len += (size_t)n;
    }
    pthread_mutex_lock(&s->mu);
    snprintf(s->last_head, sizeof s->last_head, "%.*s", (int)head, buf);
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_add(&s->requests, 1);
    if (strncmp(buf, "POST ", 5) == 0)
        atomic_fetch_add(&s->posts, 1);
    return true;
}

static void send_text(int fd, const char *t)
{
    size_t off = 0, len = strlen(t);
    while (off < len) {
        ssize_t n = send(fd, t + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            return;
        off += (size_t)n;
    }
}

static void *conn_main(void *p)
{
    conn_arg_t a = *(conn_arg_t *)p;
    free(p);
    server_t *s = a.s;
    int now = atomic_fetch_add(&s->open, 1) + 1;
    for (int m = atomic_load(&s->most_open); now > m;)
        if (atomic_compare_exchange_weak(&s->most_open, &m, now))
            break;
    for (int nth = 1; read_request(s, a.fd); nth++) {
        if (s->mode == M_SILENT)
            continue;
        if (s->mode == M_DROP_SECOND && nth == 2)
            break;
        if (s->mode == M_RAW) {
            send_text(a.fd, s->raw);
            if (s->close_after)
                break;
            continue;
        }
        if (s->mode == M_DELAY)
            nanosleep(&(struct timespec){0, 50 * 1000000L}, NULL);
        char body[32], out[256];
        int blen = snprintf(body, sizeof body, "{\"n\":%d}", atomic_load(&s->requests));
        snprintf(
            out, sizeof out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
            blen, body);
        send_text(a.fd, out);
    }
    atomic_fetch_sub(&s->open, 1);
    shutdown(a.fd, SHUT_RDWR);
    return NULL;
}

static void *accept_main(void *p)
{
    server_t *s = p;
    while (!atomic_load(&s->stop)) {
        struct pollfd pf = {s->lfd, POLLIN, 0};
        if (poll(&pf, 1, 50) <= 0)
            continue;
        int fd = accept(s->lfd, NULL, NULL);
        int i = atomic_load(&s->nconns);
        if (fd < 0 || i >= MAX_CONNS) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        atomic_fetch_add(&s->accepts, 1);
        conn_arg_t *a = malloc(sizeof *a);
        *a = (conn_arg_t){s, fd};
        s->fds[i] = fd;
        pthread_create(&s->conns[i], NULL, conn_main, a);
        atomic_store(&s->nconns, i + 1);
    }
    return NULL;
}

static server_t *server_start(mode_t_ mode)
{
    server_t *s = calloc(1, sizeof *s);
    s->mode = mode;
    pthread_mutex_init(&s->mu, NULL);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(s->lfd, 64), 0);
    getsockname(s->lfd, (struct sockaddr *)&sa, &sl);
    s->port = ntohs(sa.sin_port);
    pthread_create(&s->acceptor, NULL, accept_main, s);
    return s;
}

static void server_stop(server_t *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->acceptor, NULL);
    for (int i = 0; i < atomic_load(&s->nconns); i++) {
        shutdown(s->fds[i], SHUT_RDWR);
        pthread_join(s->conns[i], NULL);
        close(s->fds[i]);
    }
    close(s->lfd);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* A port nothing listens on (bound, then closed). */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static gw_upstream_t *upstream_for(int port_a, int port_b, int timeout_ms, size_t max_conns)
{
    char a[64], b[64];
    snprintf(a, sizeof a, "http://127.0.0.1:%d", port_a);
    snprintf(b, sizeof b, "http://127.0.0.1:%d", port_b);
    char *items[] = {a, b};
    gw_list_t urls = {items, port_b ? 2 : 1};
    return gw_upstream_new("test", &urls, 500, timeout_ms, max_conns);
}

static int call(gw_upstream_t *u, const char *method, const char *body, gw_fwd_response_t *r)
{
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    h = curl_slist_append(h, "Expect:");
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Transfer-Encoding: chunked"); /* a caller's framing header */
    gw_fwd_request_t rq = {.method = method,
                           .path = "/api/x",
                           .query = "a=1",
                           .body = {body, body ? strlen(body) : 0},
                           .headers = h};
    int rc = gw_upstream_forward(u, &rq, r);
    curl_slist_free_all(h);
    return rc;
}

/* One request; returns its rc and disposes the answer. */
static int call_once(gw_upstream_t *u, const char *method)
{
    gw_fwd_response_t r;
    int rc = call(u, method, method[0] == 'P' ? "{}" : NULL, &r);
    gw_fwd_response_dispose(&r);
    return rc;
}

static void sequential_requests_share_one_kept_alive_connection(void **state)
{
    (void)state;
    server_t *s = server_start(M_OK);
    gw_upstream_t *u = upstream_for(s->port, 0, 5000, 4);
    for (int i = 1; i <= 20; i++) {
        gw_fwd_response_t r;
        assert_int_equal(call(u, i % 2 ? "GET" : "POST", "{\"a\":1}", &r), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.content_type, "application/json");
        char want[32];
        snprintf(want, sizeof want, "{\"n\":%d}", i);
        assert_int_equal(r.body.len, strlen(want));
        assert_memory_equal(r.body.data, want, r.body.len);
        gw_fwd_response_dispose(&r);
    }
    assert_int_equal(atomic_load(&s->accepts), 1);
    gw_upstream_free(u);
    server_stop(s);
}

static void the_request_carries_host_and_length_and_no_framing_from_the_caller(void **state)
{
    (void)state;
    server_t *s = server_start(M_OK);
    gw_upstream_t *u = upstream_for(s->port, 0, 5000, 1);
    gw_fwd_response_t r;
    assert_int_equal(call(u, "POST", "{\"k\":2}", &r), 0);
    gw_fwd_response_dispose(&r);
    char host[64];
    snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%d\r\n", s->port);
    assert_true(strncmp(s->last_head, "POST /api/x?a=1 HTTP/1.1\r\n", 26) == 0);
    assert_non_null(strstr(s->last_head, host));
    assert_non_null(strstr(s->last_head, "\r\nContent-Length: 7\r\n"));
    assert_non_null(strstr(s->last_head, "\r\nAccept: application/json\r\n"));
    assert_null(find_ci(s->last_head, "Transfer-Encoding"));
    assert_null(find_ci(s->last_head, "Expect"));
    assert_int_equal(call(u, "GET", NULL, &r), 0);
    gw_fwd_response_dispose(&r);
    assert_null(find_ci(s->last_head, "Content-Length"));
    gw_upstream_free(u);
    server_stop(s);
}

static void an_idle_connection_past_its_age_is_not_reused(void **state)
{
    (void)state;
    server_t *s = server_start(M_OK);
    gw_upstream_t *u = upstream_for(s->port, 0, 5000, 2);
    assert_int_equal(call_once(u, "GET"), 0);
    nanosleep(&(struct timespec){0, (GW_UPSTREAM_IDLE_MS + 100) * 1000000L}, NULL);
    assert_int_equal(call_once(u, "GET"), 0);
    assert_int_equal(atomic_load(&s->accepts), 2);
    gw_upstream_free(u);
    server_stop(s);
}

typedef struct job {
    gw_upstream_t *u;
    int rc;
} job_t;

/* Three GETs in a row; rc is the first failure or 0. */
static void *job_main(void *p)
{
    job_t *j = p;
    for (int i = 0; i < 3 && j->rc == 0; i++)
        j->rc = call_once(j->u, "GET");
    return NULL;
}

static void no_more_connections_than_max_conns_under_parallel_load(void **state)
{
    (void)state;
    server_t *s = server_start(M_DELAY);
    gw_upstream_t *u = upstream_for(s->port, 0, 10000, 2);
    pthread_t t[8];
    job_t jobs[8];
    for (int i = 0; i < 8; i++) {
        jobs[i] = (job_t){u, 0};
        pthread_create(&t[i], NULL, job_main, &jobs[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(jobs[i].rc, 0);
    }
    assert_true(atomic_load(&s->most_open) <= 2);
    assert_int_equal(atomic_load(&s->requests), 8 * 3);
    gw_upstream_free(u);
    server_stop(s);
}

/* One GET; its place in the order of finishing. */
typedef struct queued {
    gw_upstream_t *u;
    atomic_int *finished;
    int place, rc;
} queued_t;

static void *queued_main(void *p)
{
    queued_t *q = p;
    q->rc = call_once(q->u, "GET");
    q->place = atomic_fetch_add(q->finished, 1);
    return NULL;
}

static void requests_waiting_for_a_slot_are_served_in_arrival_order(void **state)
{
    (void)state;
    server_t *s = server_start(M_DELAY); /* 50 ms per request */
    gw_upstream_t *u = upstream_for(s->port, 0, 10000, 1);
    enum { N = 8 };
    atomic_int finished = 0;
    queued_t q[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        q[i] = (queued_t){u, &finished, -1, -1};
        pthread_create(&t[i], NULL, queued_main, &q[i]);
        /* The next one arrives only once this one holds the slot or waits in the queue. */
        if (i == 0)
            while (atomic_load(&s->requests) == 0)
                nanosleep(&(struct timespec){0, 1000000L}, NULL);
        else
            while (gw_upstream_waiting(u) < (size_t)i && atomic_load(&finished) == 0)
                nanosleep(&(struct timespec){0, 200000L}, NULL);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(q[i].rc, 0);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(q[i].place, i);
    gw_upstream_free(u);
    server_stop(s);
}

static void *one_get(void *p)
{
    job_t *j = p;
    j->rc = call_once(j->u, "GET");
    return NULL;
}

static void waiters_that_time_out_leave_the_queue_and_the_slot_still_works(void **state)
{
    (void)state;
    server_t *s = server_start(M_DELAY);
    gw_upstream_t *u = upstream_for(s->port, 0, 200, 1); /* room for four 50 ms requests */
    cm_metrics_t *m = cm_metrics_new();
    cm_family_t *gauge = cm_metrics_gauge(m, "waiting", "Waiting.", "upstream");
    gw_upstream_export_waiting(u, gauge);
    enum { N = 10 };
    pthread_t t[N];
    job_t jobs[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = (job_t){u, -1};
        pthread_create(&t[i], NULL, one_get, &jobs[i]);
    }
    /* The gauge shows the queue while it is there (nine wait behind the first at most). */
    double most = 0;
    for (int spin = 0; spin < 2000 && most == 0; spin++) {
        cm_buf_t text;
        cm_buf_init(&text);
        cm_metrics_render(m, &text);
        const char *at = strstr(text.data, "waiting{upstream=\"test\"} ");
        if (at)
            most = strtod(at + strlen("waiting{upstream=\"test\"} "), NULL);
        cm_buf_dispose(&text);
        nanosleep(&(struct timespec){0, 100000L}, NULL);
    }
    assert_true(most >= 1 && most <= N - 1);
    int ok = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        ok += jobs[i].rc == 0;
        /* No slot within the deadline is busy (503 at the edge); a slot with too little time
         * left to connect or for the answer is unavailable (503) or a timeout (504). */
        if (jobs[i].rc != 0 && jobs[i].rc != CM_EBUSY && jobs[i].rc != CM_EUNAVAIL &&
            jobs[i].rc != CM_ETIMEDOUT)
            fail_msg("request %d: %s", i, cm_strerror(jobs[i].rc));
    }
    assert_true(ok <= 4);
    /* Nobody left in the queue, no slot lost: the next requests run at once. */
    assert_int_equal(gw_upstream_waiting(u), 0);
    cm_buf_t text;
    cm_buf_init(&text);
    cm_metrics_render(m, &text);
    assert_non_null(strstr(text.data, "waiting{upstream=\"test\"} 0\n"));
    cm_buf_dispose(&text);
    assert_int_equal(call_once(u, "GET"), 0);
    assert_int_equal(call_once(u, "GET"), 0);
    gw_upstream_free(u);
    cm_metrics_free(m);
    server_stop(s);
}

/* What one raw answer from the upstream becomes. */
static int raw_answer(const char *raw, bool close_after, gw_fwd_response_t *r)
{
    server_t *s = server_start(M_RAW);
    s->raw = raw;
    s->close_after = close_after;
    gw_upstream_t *u = upstream_for(s->port, 0, 3000, 1);
    int rc = call(u, "GET", NULL, r);
    gw_upstream_free(u);
    server_stop(s);
    return rc;
}

static void broken_answers_are_refused_and_nothing_hangs(void **state)
{
    (void)state;
    static const struct {
        const char *raw;
        bool close_after;
        int rc;
    } cases[] = {
        {"garbage\r\n\r\n", false, CM_EPARSE},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false,
         CM_EPARSE},
        {"HTTP/1.1 200 OK\r\nContent-Type: a/b\r\n\r\nuntil close", true, CM_EPARSE},
        {"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..", true, CM_EIO},
        {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing junk", false, CM_EPARSE},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n", false, CM_ETOOBIG},
        {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false,
         CM_EPARSE},
        {"HTTP/1.1 200 OK\r\n", true, CM_EIO},
        {"", true, CM_EIO},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gw_fwd_response_t r;
        int rc = raw_answer(cases[i].raw, cases[i].close_after, &r);
        if (rc != cases[i].rc)
            fail_msg("case %zu: rc %d, want %d", i, rc, cases[i].rc);
        assert_int_equal(r.status, 0);
        assert_int_equal(r.body.len, 0);
        gw_fwd_response_dispose(&r);
    }
}

static void a_head_past_the_cap_is_refused(void **state)
{
    (void)state;
    size_t n = GW_MAX_RESPONSE_HEAD + 100;
    char *raw = malloc(n + 1);
    memcpy(raw, "HTTP/1.1 200 OK\r\nX-Pad: ", 24);
    memset(raw + 24, 'a', n - 24);
    raw[n] = '\0';
    gw_fwd_response_t r;
    assert_int_equal(raw_answer(raw, false, &r), CM_EPARSE);
    gw_fwd_response_dispose(&r);
    free(raw);
}

static void a_silent_upstream_times_out_within_the_deadline(void **state)
{
    (void)state;
    server_t *s = server_start(M_SILENT);
    gw_upstream_t *u = upstream_for(s->port, 0, 300, 1);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_int_equal(call_once(u, "GET"), CM_ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    assert_true(secs < 5.0); /* generous: the bound is 0.3 s */
    gw_upstream_free(u);
    server_stop(s);
}

static void a_dead_address_is_skipped_and_all_dead_is_unavailable(void **state)
{
    (void)state;
    server_t *s = server_start(M_OK);
    gw_upstream_t *u = upstream_for(closed_port(), s->port, 3000, 2);
    for (int i = 0; i < 4; i++)
        assert_int_equal(call_once(u, "POST"), 0);
    assert_int_equal(atomic_load(&s->posts), 4);
    gw_upstream_free(u);
    server_stop(s);
    u = upstream_for(closed_port(), closed_port(), 3000, 2);
    assert_int_equal(call_once(u, "GET"), CM_EUNAVAIL);
    gw_upstream_free(u);
}

static void a_kept_alive_socket_that_dies_retries_a_get_once_but_never_a_post(void **state)
{
    (void)state;
    /* The upstream reads the second request of every connection and closes without a word. */
    server_t *s = server_start(M_DROP_SECOND);
    gw_upstream_t *u = upstream_for(s->port, 0, 3000, 1);
    assert_int_equal(call_once(u, "GET"), 0);
    assert_int_equal(call_once(u, "GET"), 0); /* dropped, then again on a new connection */
    assert_int_equal(atomic_load(&s->accepts), 2);
    assert_int_equal(atomic_load(&s->requests), 3);
    assert_int_equal(call_once(u, "POST"), CM_EIO); /* it reached the service: no second try */
    assert_int_equal(atomic_load(&s->posts), 1);
    gw_upstream_free(u);
    server_stop(s);
}

static void an_upstream_that_closed_an_idle_socket_is_not_used(void **state)
{
    (void)state;
    server_t *s = server_start(M_RAW);
    s->raw = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    s->close_after = true; /* closes after answering, without saying so */
    gw_upstream_t *u = upstream_for(s->port, 0, 3000, 1);
    assert_int_equal(call_once(u, "POST"), 0);
    nanosleep(&(struct timespec){0, 50 * 1000000L}, NULL); /* the FIN arrives */
    assert_int_equal(call_once(u, "POST"), 0);
    assert_int_equal(atomic_load(&s->posts), 2);
    assert_int_equal(atomic_load(&s->accepts), 2);
    gw_upstream_free(u);
    server_stop(s);
}

static void a_host_name_is_resolved_and_its_connection_kept(void **state)
{
    (void)state;
    server_t *s = server_start(M_OK);
    char url[64];
    snprintf(url, sizeof url, "http://localhost:%d/", s->port);
    char *items[] = {url};
    gw_list_t urls = {items, 1};
    gw_upstream_t *u = gw_upstream_new("named", &urls, 500, 5000, 2);
    for (int i = 0; i < 5; i++)
        assert_int_equal(call_once(u, "GET"), 0);
    assert_int_equal(atomic_load(&s->accepts), 1);
    char host[64];
    snprintf(host, sizeof host, "\r\nHost: localhost:%d\r\n", s->port);
    assert_non_null(strstr(s->last_head, host));
    assert_true(strncmp(s->last_head, "GET /api/x?a=1 HTTP/1.1\r\n", 25) == 0);
    gw_upstream_free(u);
    server_stop(s);
}

static void request_lines_with_spaces_or_controls_are_refused(void **state)
{
    (void)state;
    server_t *s = server_start(M_OK);
    gw_upstream_t *u = upstream_for(s->port, 0, 3000, 1);
    const char *paths[] = {"/a b", "/a\r\nX: y", "noslash"};
    for (size_t i = 0; i < 3; i++) {
        gw_fwd_request_t rq = {.method = "GET", .path = paths[i]};
        gw_fwd_response_t r;
        assert_int_equal(gw_upstream_forward(u, &rq, &r), CM_EINVAL);
        gw_fwd_response_dispose(&r);
    }
    assert_int_equal(atomic_load(&s->requests), 0);
    gw_upstream_free(u);
    server_stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_a_content_length_answer_and_keeps_the_relayed_headers),
        cmocka_unit_test(refuses_chunked_and_missing_content_length_but_not_on_204_and_304),
        cmocka_unit_test(refuses_repeated_signed_listed_and_oversized_content_length),
        cmocka_unit_test(refuses_garbage_status_lines_and_interim_answers),
        cmocka_unit_test(refuses_folded_bare_and_nameless_header_lines),
        cmocka_unit_test(close_and_http10_answers_are_not_kept_alive),
        cmocka_unit_test(values_too_long_for_their_field_are_left_out),
        cmocka_unit_test(head_end_is_the_first_blank_line),
        cmocka_unit_test(sequential_requests_share_one_kept_alive_connection),
        cmocka_unit_test(the_request_carries_host_and_length_and_no_framing_from_the_caller),
        cmocka_unit_test(an_idle_connection_past_its_age_is_not_reused),
        cmocka_unit_test(no_more_connections_than_max_conns_under_parallel_load),
        cmocka_unit_test(broken_answers_are_refused_and_nothing_hangs),
        cmocka_unit_test(a_head_past_the_cap_is_refused),
        cmocka_unit_test(requests_waiting_for_a_slot_are_served_in_arrival_order),
        cmocka_unit_test(waiters_that_time_out_leave_the_queue_and_the_slot_still_works),
        cmocka_unit_test(a_silent_upstream_times_out_within_the_deadline),
        cmocka_unit_test(a_dead_address_is_skipped_and_all_dead_is_unavailable),
        cmocka_unit_test(a_kept_alive_socket_that_dies_retries_a_get_once_but_never_a_post),
        cmocka_unit_test(an_upstream_that_closed_an_idle_socket_is_not_used),
        cmocka_unit_test(a_host_name_is_resolved_and_its_connection_kept),
        cmocka_unit_test(request_lines_with_spaces_or_controls_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
