/*
 * Tests for common/src/http.c: a real server on 127.0.0.1 (one for the
 * group: civetweb takes about two seconds to stop; no test relies on
 * another's requests), called over real HTTP with libcurl, plus raw sockets where curl
 * would not misbehave on purpose (lying Content-Length, chunked bodies,
 * several requests on one kept-alive connection).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <civetweb.h>
#include <cmocka.h>
#include <jansson.h>

#include "cm/http.h"
#include "cm/log.h"
#include "cm/metrics.h"
#include "cm/util.h"
#include "http_client.h"
#include "raw_client.h"
#include "testenv.h"

typedef struct fixture {
    cm_http_t *srv;
    cm_metrics_t *metrics;
    int port;
    bool ready;
    char base[64];
} fixture_t;

/* ---- handlers under test ------------------------------------------------------- */

static void on_hello(cm_req_t *rq, void *ctx)
{
    (void)ctx;
    cm_reply_json(rq, 200, json_pack("{s:s}", "hello", "world"));
}

/* Echoes the JSON object it received, so a test sees what reached the handler. */
static void on_echo(cm_req_t *rq, void *ctx)
{
    (void)ctx;
    json_t *body = NULL;
    if (cm_req_json_or_reply(rq, &body) != 0)
        return;
    cm_reply_json(rq, 200, body);
}

static void on_delete(cm_req_t *rq, void *ctx)
{
    (void)ctx;
    cm_reply_empty(rq, 204);
}

static void on_forgetful(cm_req_t *rq, void *ctx)
{
    (void)rq;
    (void)ctx;
}

static void on_headers(cm_req_t *rq, void *ctx)
{
    (void)ctx;
    cm_reply_header(rq, "X-Good", "fine value");
    cm_reply_header(rq, "X-Evil", "a\r\nSet-Cookie: stolen=1");
    cm_reply_header(rq, "X-Evil2", "b\nX-Injected: 1");
    cm_reply_header(rq, "Bad Name", "x");
    cm_reply_header(rq, "Content-Length", "0");
    cm_reply_raw(rq, 200, "text/plain", "ok", 2);
}

static void on_items(cm_req_t *rq, void *ctx)
{
    (void)ctx;
    const char *limit = NULL;
    int rc = cm_req_query_param(rq, "limit", 8, &limit);
    if (rc == CM_ETOOBIG) {
        json_t *errors = json_object();
        cm_errors_add(errors, "limit", "Too long.");
        cm_reply_invalid(rq, errors);
        return;
    }
    cm_reply_json(rq, 200, json_pack("{s:s?}", "limit", rc == 0 ? limit : NULL));
}

static void on_secret(cm_req_t *rq, void *ctx)
{
    (void)ctx;
    cm_reply_json(rq, 200, json_pack("{s:s}", "secret", "shh"));
}

/* Public data a cache may keep: unless the answer is an error. */
static void on_cacheable(cm_req_t *rq, void *ctx)
{
    (void)ctx;
    const char *fail = NULL;
    cm_reply_header(rq, "Cache-Control", "public, max-age=300");
    if (cm_req_query_param(rq, "fail", 8, &fail) == 0) {
        cm_reply_problem(rq, 503, NULL, "Down.", NULL);
        return;
    }
    cm_reply_json(rq, 200, json_pack("{s:s}", "keys", "public"));
}

/* A handler bug: answers with the status named in ?status= (outside 200-599 in the tests). */
static void on_bad_status(cm_req_t *rq, void *ctx)
{
    (void)ctx;
    const char *text = NULL;
    long long status = 0;
    if (cm_req_query_param(rq, "status", 8, &text) != 0 ||
        cm_strtonum(text, -1000, 1000, &status) != 0) {
        cm_reply_problem(rq, 400, NULL, "status", NULL);
        return;
    }
    cm_reply_header(rq, "X-Handler", "kept");
    cm_reply_raw(rq, (int)status, "text/html", "<b>handler body</b>", 19);
}

static const cm_route_t routes[] = {
    {"GET", "/api/hello/", on_hello, 0},
    {"POST", "/api/echo", on_echo, 0},
    {"DELETE", "/api/echo/", on_delete, 0},
    {"GET", "/api/forgetful", on_forgetful, 0},
    {"GET", "/api/headers", on_headers, 0},
    {"GET", "/api/items", on_items, 0},
    {"GET", "/api/secret", on_secret, CM_ROUTE_NO_STORE},
    {"GET", "/api/counted/", on_hello, 0}, /* only the metrics test calls it */
    {"POST", "/api/counted", on_echo, 0},
    {"GET", "/api/cacheable", on_cacheable, 0},
    {"GET", "/api/secret-cacheable", on_cacheable, CM_ROUTE_NO_STORE},
    {"GET", "/api/bad-status", on_bad_status, 0},
};

static bool is_ready(void *ctx, cm_buf_t *why)
{
    fixture_t *fx = ctx;
    if (__atomic_load_n(&fx->ready, __ATOMIC_SEQ_CST))
        return true;
    cm_buf_puts(why, "database");
    return false;
}

/* ---- fixture -------------------------------------------------------------------- */

static int group_setup(void **state)
{
    fixture_t *fx = cm_xcalloc(1, sizeof *fx);
    fx->ready = true;
    fx->metrics = cm_metrics_new();
    fx->port = t_free_port();
    snprintf(fx->base, sizeof fx->base, "http://127.0.0.1:%d", fx->port);
    cm_http_config_t cfg = {
        .service = "test",
        .bind = "127.0.0.1",
        .port = fx->port,
        .threads = 4,
        .request_timeout_ms = 5000,
        .routes = routes,
        .nroutes = sizeof routes / sizeof routes[0],
        .ready = is_ready,
        .ready_ctx = fx,
        .metrics = fx->metrics,
    };
    int err = 1;
    fx->srv = cm_http_start(&cfg, &err);
    assert_non_null(fx->srv);
    assert_int_equal(err, 0);
    *state = fx;
    return 0;
}

/* Each test starts with a ready service. */
static int reset(void **state)
{
    fixture_t *fx = *state;
    __atomic_store_n(&fx->ready, true, __ATOMIC_SEQ_CST);
    return 0;
}

static int group_teardown(void **state)
{
    fixture_t *fx = *state;
    cm_http_stop(fx->srv);
    cm_metrics_free(fx->metrics);
    free(fx);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------ */

static char *url(const fixture_t *fx, const char *path)
{
    return cm_xasprintf("%s%s", fx->base, path);
}

static void get(const fixture_t *fx, const char *path, const char *const *headers, t_resp_t *r)
{
    char *u = url(fx, path);
    assert_int_equal(t_http("GET", u, NULL, NULL, 0, headers, r), 0);
    free(u);
}

static void post(const fixture_t *fx, const char *path, const char *ctype, const char *body,
                 size_t len, t_resp_t *r)
{
    char *u = url(fx, path);
    assert_int_equal(t_http("POST", u, ctype, body, len, NULL, r), 0);
    free(u);
}

static void assert_security_headers(const t_resp_t *r)
{
    t_assert_header(r, "X-Content-Type-Options", "nosniff");
    t_assert_header(r, "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
    t_assert_header(r, "Referrer-Policy", "no-referrer");
    char *id = t_resp_header(r, "X-Request-Id");
    assert_non_null(id);
    assert_true(cm_request_id_valid(id));
    free(id);
    char *len = t_resp_header(r, "Content-Length");
    assert_non_null(len);
    long long n = -1;
    assert_int_equal(cm_strtonum(len, 0, 1 << 20, &n), 0);
    assert_int_equal((size_t)n, r->len);
    free(len);
}

/* A problem+json answer with the given status, its request id matching the header. */
static void assert_problem(const t_resp_t *r, long status)
{
    assert_int_equal(r->status, status);
    assert_non_null(r->content_type);
    assert_string_equal(r->content_type, "application/problem+json");
    assert_non_null(r->json);
    assert_string_equal(json_string_value(json_object_get(r->json, "type")), "about:blank");
    assert_int_equal(json_integer_value(json_object_get(r->json, "status")), status);
    assert_non_null(json_string_value(json_object_get(r->json, "title")));
    char *id = t_resp_header(r, "X-Request-Id");
    assert_non_null(id);
    assert_string_equal(json_string_value(json_object_get(r->json, "request_id")), id);
    free(id);
    t_assert_header(r, "Cache-Control", "no-store");
    assert_security_headers(r);
}

/* The server is still healthy: used after every bad request. */
static void assert_still_answering(const fixture_t *fx)
{
    t_resp_t r;
    get(fx, "/healthz", NULL, &r);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
}

static const char *detail_of(const t_resp_t *r)
{
    return json_string_value(json_object_get(r->json, "detail"));
}

/* ---- raw sockets ------------------------------------------------------------------------ */

static int raw_connect(const fixture_t *fx)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)fx->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof a), 0);
    return s;
}

static void raw_send(int s, const char *data, size_t len)
{
    while (len) {
        ssize_t n = send(s, data, len, MSG_NOSIGNAL);
        if (n <= 0)
            return; /* the server may close early on purpose */
        data += n;
        len -= (size_t)n;
    }
}

/* Case-insensitive strstr (strcasestr is a GNU extension). */
static const char *find_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return hay;
    return NULL;
}

/* Bytes of body the head announces, or 0. */
static size_t announced_length(const char *head)
{
    const char *p = find_ci(head, "\r\nContent-Length:");
    return p ? (size_t)strtoul(p + 17, NULL, 10) : 0;
}

/*
 * Reads one answer (head and Content-Length body) within timeout_ms.
 * Returns a new string; empty when the server closed without answering.
 */
static char *raw_read_answer(int s, int timeout_ms)
{
    cm_buf_t b;
    cm_buf_init(&b);
    cm_buf_puts(&b, "");
    int64_t deadline = cm_now_mono_ms() + timeout_ms;
    for (;;) {
        const char *end = strstr(b.data, "\r\n\r\n");
        if (end && b.len >= (size_t)(end + 4 - b.data) + announced_length(b.data))
            break;
        struct pollfd p = {.fd = s, .events = POLLIN};
        int left = (int)(deadline - cm_now_mono_ms());
        if (left <= 0 || poll(&p, 1, left) <= 0)
            break;
        char chunk[4096];
        ssize_t n = recv(s, chunk, sizeof chunk, 0);
        if (n <= 0)
            break;
        cm_buf_append(&b, chunk, (size_t)n);
    }
    return cm_buf_steal(&b);
}

/* Reads until the server closes the connection or timeout_ms passes. Returns a new string. */
static char *raw_read_all(int s, int timeout_ms)
{
    cm_buf_t b;
    cm_buf_init(&b);
    cm_buf_puts(&b, "");
    int64_t deadline = cm_now_mono_ms() + timeout_ms;
    for (;;) {
        struct pollfd p = {.fd = s, .events = POLLIN};
        int left = (int)(deadline - cm_now_mono_ms());
        if (left <= 0 || poll(&p, 1, left) <= 0)
            break;
        char chunk[4096];
        ssize_t n = recv(s, chunk, sizeof chunk, 0);
        if (n <= 0)
            break;
        cm_buf_append(&b, chunk, (size_t)n);
    }
    return cm_buf_steal(&b);
}

/* Sends one raw request and returns everything the server sent until it closed. */
static char *raw_exchange(const fixture_t *fx, const char *req)
{
    int s = raw_connect(fx);
    raw_send(s, req, strlen(req));
    char *all = raw_read_all(s, 4000);
    close(s);
    return all;
}

/* The value of header name in a raw answer (a new string), or NULL. */
static char *raw_header(const char *answer, const char *name)
{
    char want[80];
    snprintf(want, sizeof want, "\r\n%s:", name);
    const char *end = strstr(answer, "\r\n\r\n");
    const char *p = find_ci(answer, want);
    if (!p || !end || p > end)
        return NULL;
    p += strlen(want);
    while (*p == ' ')
        p++;
    return cm_xstrndup(p, strcspn(p, "\r"));
}

static void assert_raw_header(const char *answer, const char *name, const char *want)
{
    char *v = raw_header(answer, name);
    if (!v || strcmp(v, want) != 0)
        fail_msg("%s: want \"%s\", got \"%s\" in: %.300s", name, want, v ? v : "(none)", answer);
    free(v);
}

static void assert_status_line(const char *answer, int status)
{
    char want[32];
    snprintf(want, sizeof want, "HTTP/1.1 %d ", status);
    if (strncmp(answer, want, strlen(want)) != 0)
        fail_msg("expected %s, got: %.200s", want, answer);
}

/* ---- pure functions ---------------------------------------------------------------------- */

static void route_find_ignores_one_trailing_slash_on_either_side(void **state)
{
    (void)state;
    const cm_route_t *r = NULL;
    size_t n = sizeof routes / sizeof routes[0];
    assert_int_equal(cm_route_find(routes, n, "GET", "/api/hello", &r, NULL), 0);
    assert_ptr_equal(r, &routes[0]);
    assert_int_equal(cm_route_find(routes, n, "GET", "/api/hello/", &r, NULL), 0);
    assert_int_equal(cm_route_find(routes, n, "POST", "/api/echo/", &r, NULL), 0);
    assert_ptr_equal(r, &routes[1]);
    assert_int_equal(cm_route_find(routes, n, "GET", "/api/hello//", &r, NULL), CM_ENOTFOUND);
    assert_int_equal(cm_route_find(routes, n, "GET", "/api/hell", &r, NULL), CM_ENOTFOUND);
    assert_int_equal(cm_route_find(routes, n, "GET", "/api/hello/x", &r, NULL), CM_ENOTFOUND);
    assert_null(r);
    const cm_route_t root[] = {{"GET", "/", on_hello, 0}};
    assert_int_equal(cm_route_find(root, 1, "GET", "/", &r, NULL), 0);
    assert_int_equal(cm_route_find(root, 1, "GET", "", &r, NULL), CM_ENOTFOUND);
}

static void route_find_reports_other_methods_in_allow(void **state)
{
    (void)state;
    const cm_route_t table[] = {
        {"POST", "/a", on_hello, 0},
        {"DELETE", "/a/", on_hello, 0},
        {"POST", "/a", on_echo, 0},
        {"GET", "/b", on_hello, 0},
    };
    cm_buf_t allow;
    cm_buf_init(&allow);
    const cm_route_t *r = &table[3];
    assert_int_equal(cm_route_find(table, 4, "GET", "/a/", &r, &allow), CM_ESTATE);
    assert_null(r);
    assert_string_equal(allow.data, "POST, DELETE");
    assert_int_equal(cm_route_find(table, 4, "get", "/b", &r, NULL), CM_ESTATE);
    cm_buf_dispose(&allow);
}

static void head_finds_the_get_route_and_allow_lists_head_after_get(void **state)
{
    (void)state;
    const cm_route_t table[] = {
        {"POST", "/a", on_echo, 0},   {"GET", "/a/", on_hello, 0}, {"GET", "/b", on_hello, 0},
        {"HEAD", "/b", on_delete, 0}, {"POST", "/c", on_echo, 0},
    };
    const cm_route_t *r = NULL;
    cm_buf_t allow;
    cm_buf_init(&allow);
    assert_int_equal(cm_route_find(table, 5, "HEAD", "/a", &r, NULL), 0);
    assert_ptr_equal(r, &table[1]);
    /* A table that routes HEAD itself keeps that route. */
    assert_int_equal(cm_route_find(table, 5, "HEAD", "/b/", &r, NULL), 0);
    assert_ptr_equal(r, &table[3]);
    assert_int_equal(cm_route_find(table, 5, "HEAD", "/c", &r, &allow), CM_ESTATE);
    assert_null(r);
    assert_string_equal(allow.data, "POST");
    allow.len = 0;
    assert_int_equal(cm_route_find(table, 5, "DELETE", "/a", &r, &allow), CM_ESTATE);
    assert_string_equal(allow.data, "POST, GET, HEAD");
    allow.len = 0;
    assert_int_equal(cm_route_find(table, 5, "TRACE", "/b", &r, &allow), CM_ESTATE);
    assert_string_equal(allow.data, "GET, HEAD");
    assert_int_equal(cm_route_find(table, 5, "HEAD", "/d", &r, NULL), CM_ENOTFOUND);
    cm_buf_dispose(&allow);
}

static void request_id_accepts_short_safe_tokens_only(void **state)
{
    (void)state;
    assert_true(cm_request_id_valid("abc-123.DEF_x"));
    assert_true(cm_request_id_valid("0f8fad5b-d9cb-469f-a165-70867728950e"));
    char max[CM_MAX_REQUEST_ID + 2];
    memset(max, 'a', sizeof max);
    max[CM_MAX_REQUEST_ID] = '\0';
    assert_true(cm_request_id_valid(max));
    max[CM_MAX_REQUEST_ID] = 'a';
    max[CM_MAX_REQUEST_ID + 1] = '\0';
    assert_false(cm_request_id_valid(max));
    assert_false(cm_request_id_valid(""));
    assert_false(cm_request_id_valid(NULL));
    assert_false(cm_request_id_valid("has space"));
    assert_false(cm_request_id_valid("line\nbreak"));
    assert_false(cm_request_id_valid("quote\""));
    assert_false(cm_request_id_valid("caf\xc3\xa9"));
}

static void start_refuses_a_bad_config_and_a_taken_port(void **state)
{
    fixture_t *fx = *state;
    int err = 0;
    cm_http_config_t cfg = {.bind = "127.0.0.1", .port = 0};
    assert_null(cm_http_start(&cfg, &err));
    assert_int_equal(err, CM_EINVAL);
    cfg.port = 8080;
    cfg.bind = "127.0.0.1; rm -rf /";
    assert_null(cm_http_start(&cfg, &err));
    assert_int_equal(err, CM_EINVAL);
    const cm_route_t no_fn[] = {{"GET", "/x", NULL, 0}};
    cfg.bind = "127.0.0.1";
    cfg.routes = no_fn;
    cfg.nroutes = 1;
    assert_null(cm_http_start(&cfg, &err));
    assert_int_equal(err, CM_EINVAL);
    cm_http_config_t taken = {.bind = "127.0.0.1", .port = fx->port};
    assert_null(cm_http_start(&taken, &err));
    assert_int_equal(err, CM_EIO);
    /* Negative timeouts are refused. */
    cm_http_config_t negative = {
        .bind = "127.0.0.1", .port = t_free_port(), .keepalive_timeout_ms = -1};
    assert_null(cm_http_start(&negative, &err));
    assert_int_equal(err, CM_EINVAL);
    negative.keepalive_timeout_ms = 0;
    negative.request_timeout_ms = -1;
    assert_null(cm_http_start(&negative, &err));
    assert_int_equal(err, CM_EINVAL);
    /* An IPv6 address is refused up front when civetweb was built without IPv6 (feature 8). */
    cm_http_config_t v6 = {.bind = "::1", .port = t_free_port()};
    cm_http_t *srv = cm_http_start(&v6, &err);
    if (mg_check_feature(8)) {
        assert_non_null(srv);
    } else {
        assert_null(srv);
        assert_int_equal(err, CM_EINVAL);
    }
    cm_http_stop(srv);
    assert_still_answering(fx);
}

/* ---- routing over HTTP ---------------------------------------------------------------------- */

static void routes_match_with_and_without_trailing_slash(void **state)
{
    fixture_t *fx = *state;
    const char *paths[] = {"/api/hello", "/api/hello/"};
    for (size_t i = 0; i < 2; i++) {
        t_resp_t r;
        get(fx, paths[i], NULL, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.content_type, "application/json");
        assert_string_equal(json_string_value(json_object_get(r.json, "hello")), "world");
        assert_security_headers(&r);
        t_assert_no_header(&r, "Cache-Control");
        t_resp_dispose(&r);
    }
}

static void unknown_path_is_404_problem_json(void **state)
{
    fixture_t *fx = *state;
    t_resp_t r;
    get(fx, "/api/nope", NULL, &r);
    assert_problem(&r, 404);
    t_resp_dispose(&r);
    assert_still_answering(fx);
}

static void wrong_method_is_405_with_allow(void **state)
{
    fixture_t *fx = *state;
    t_resp_t r;
    get(fx, "/api/echo/", NULL, &r);
    assert_problem(&r, 405);
    t_assert_header(&r, "Allow", "POST, DELETE");
    t_resp_dispose(&r);
    char *u = url(fx, "/healthz");
    assert_int_equal(t_http("POST", u, "application/json", "{}", 2, NULL, &r), 0);
    free(u);
    assert_problem(&r, 405);
    t_assert_header(&r, "Allow", "GET, HEAD");
    t_resp_dispose(&r);
    assert_still_answering(fx);
}

static void no_store_route_and_204_answers_are_well_formed(void **state)
{
    fixture_t *fx = *state;
    t_resp_t r;
    get(fx, "/api/secret", NULL, &r);
    assert_int_equal(r.status, 200);
    t_assert_header(&r, "Cache-Control", "no-store");
    t_resp_dispose(&r);
    char *u = url(fx, "/api/echo");
    assert_int_equal(t_http("DELETE", u, NULL, NULL, 0, NULL, &r), 0);
    free(u);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.len, 0);
    t_assert_header(&r, "X-Content-Type-Options", "nosniff");
    t_assert_no_header(&r, "Content-Length");
    t_resp_dispose(&r);
}

static void head_gets_the_get_head_with_its_length_and_no_body(void **state)
{
    fixture_t *fx = *state;
    t_resp_t g;
    get(fx, "/api/hello", NULL, &g);
    assert_int_equal(g.status, 200);
    char want_len[24];
    snprintf(want_len, sizeof want_len, "%zu", g.len);
    t_resp_dispose(&g);
    /* HEAD then GET on one kept-alive connection: a body after the HEAD answer would be
     * read as the start of the next answer. */
    char *all = raw_exchange(fx, "HEAD /api/hello/ HTTP/1.1\r\nHost: t\r\n\r\n"
                                 "GET /api/hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_status_line(all, 200);
    assert_raw_header(all, "Content-Length", want_len);
    assert_raw_header(all, "Content-Type", "application/json");
    assert_raw_header(all, "X-Content-Type-Options", "nosniff");
    const char *second = strstr(all, "\r\n\r\n") + 4;
    assert_status_line(second, 200);
    assert_non_null(strstr(second, "{\"hello\":\"world\"}"));
    free(all);
    /* The built-ins too; and errors to HEAD carry no body either. */
    all = raw_exchange(fx, "HEAD /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_status_line(all, 200);
    assert_string_equal(strstr(all, "\r\n\r\n"), "\r\n\r\n");
    free(all);
    all = raw_exchange(fx, "HEAD /api/nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_status_line(all, 404);
    assert_raw_header(all, "Content-Type", "application/problem+json");
    assert_string_equal(strstr(all, "\r\n\r\n"), "\r\n\r\n");
    free(all);
    all = raw_exchange(fx, "HEAD /api/echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_status_line(all, 405);
    assert_raw_header(all, "Allow", "POST, DELETE");
    assert_string_equal(strstr(all, "\r\n\r\n"), "\r\n\r\n");
    free(all);
    assert_still_answering(fx);
}

static void methods_civetweb_does_not_know_get_405_with_allow_or_404(void **state)
{
    fixture_t *fx = *state;
    static const struct {
        const char *line;
        int status;
        const char *allow;
    } cases[] = {
        {"TRACE /api/hello HTTP/1.1", 405, "GET, HEAD"},
        {"TRACE /api/echo/?x=1 HTTP/1.1", 405, "POST, DELETE"},
        {"BREW /api/h%65llo HTTP/1.1", 405, "GET, HEAD"},
        {"TRACE /healthz HTTP/1.0", 405, "GET, HEAD"},
        {"CONNECT /api/hello HTTP/1.1", 405, "GET, HEAD"},
        {"TRACE /api/nope HTTP/1.1", 404, NULL},
        {"FOO / HTTP/1.1", 404, NULL},
        /* Not a method token, or no path: still a plain 400. */
        {"TR@CE /api/hello HTTP/1.1", 400, NULL},
        {"TRACE * HTTP/1.1", 400, NULL},
        {"TRACE http://t/api/hello HTTP/1.1", 400, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char req[256];
        snprintf(req, sizeof req, "%s\r\nHost: t\r\nX-Request-Id: m-%zu\r\n\r\n", cases[i].line, i);
        char *all = raw_exchange(fx, req);
        assert_status_line(all, cases[i].status);
        assert_raw_header(all, "Content-Type", "application/problem+json");
        assert_raw_header(all, "X-Content-Type-Options", "nosniff");
        assert_raw_header(all, "Cache-Control", "no-store");
        char *allow = raw_header(all, "Allow");
        if (cases[i].allow)
            assert_raw_header(all, "Allow", cases[i].allow);
        else if (allow)
            fail_msg("%s: unexpected Allow: %s", cases[i].line, allow);
        free(allow);
        const char *body = strstr(all, "\r\n\r\n") + 4;
        json_t *p = json_loads(body, 0, NULL);
        assert_non_null(p);
        assert_int_equal(json_integer_value(json_object_get(p, "status")), cases[i].status);
        json_decref(p);
        free(all);
    }
    assert_still_answering(fx);
}

/* How many header lines named name the answer has. */
static int header_count(const t_resp_t *r, const char *name)
{
    int n = 0;
    size_t len = strlen(name);
    for (const char *l = r->headers; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : "")
        n += strncasecmp(l, name, len) == 0 && l[len] == ':';
    return n;
}

static void cache_control_set_by_a_handler_passes_unless_no_store_applies(void **state)
{
    fixture_t *fx = *state;
    t_resp_t r;
    get(fx, "/api/cacheable", NULL, &r);
    assert_int_equal(r.status, 200);
    t_assert_header(&r, "Cache-Control", "public, max-age=300");
    assert_int_equal(header_count(&r, "Cache-Control"), 1);
    t_resp_dispose(&r);
    /* An error is never cacheable, whatever the handler said before it failed. */
    get(fx, "/api/cacheable?fail=1", NULL, &r);
    assert_problem(&r, 503);
    assert_int_equal(header_count(&r, "Cache-Control"), 1);
    t_resp_dispose(&r);
    get(fx, "/api/secret-cacheable", NULL, &r);
    assert_int_equal(r.status, 200);
    t_assert_header(&r, "Cache-Control", "no-store");
    assert_int_equal(header_count(&r, "Cache-Control"), 1);
    t_resp_dispose(&r);
}

static void handler_that_forgets_to_reply_gets_500_problem(void **state)
{
    fixture_t *fx = *state;
    t_resp_t r;
    get(fx, "/api/forgetful", NULL, &r);
    assert_problem(&r, 500);
    t_resp_dispose(&r);
    assert_still_answering(fx);
}

static void handler_replying_with_a_status_outside_200_to_599_gets_500_problem(void **state)
{
    fixture_t *fx = *state;
    const char *paths[] = {"/api/bad-status?status=0", "/api/bad-status?status=101",
                           "/api/bad-status?status=199", "/api/bad-status?status=600",
                           "/api/bad-status?status=-1"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        t_resp_t r;
        get(fx, paths[i], NULL, &r);
        assert_problem(&r, 500);
        assert_null(strstr(r.body, "handler body"));
        assert_int_equal(json_integer_value(json_object_get(r.json, "status")), 500);
        t_resp_dispose(&r);
    }
    /* The edges of the range are the handler's own answers. */
    t_resp_t r;
    get(fx, "/api/bad-status?status=599", NULL, &r);
    assert_int_equal(r.status, 599);
    assert_string_equal(r.content_type, "text/html");
    assert_string_equal(r.body, "<b>handler body</b>");
    t_resp_dispose(&r);
    assert_still_answering(fx);
}

static void header_values_with_line_breaks_are_refused(void **state)
{
    fixture_t *fx = *state;
    t_resp_t r;
    get(fx, "/api/headers", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok");
    t_assert_header(&r, "X-Good", "fine value");
    t_assert_no_header(&r, "X-Evil");
    t_assert_no_header(&r, "X-Evil2");
    t_assert_no_header(&r, "Set-Cookie");
    t_assert_no_header(&r, "X-Injected");
    t_assert_header(&r, "Content-Length", "2");
    t_resp_dispose(&r);
}

static void query_parameters_are_decoded_and_capped(void **state)
{
    fixture_t *fx = *state;
    t_resp_t r;
    get(fx, "/api/items?x=1&limit=2%200", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "limit")), "2 0");
    t_resp_dispose(&r);
    get(fx, "/api/items?limit=123456789", NULL, &r);
    assert_problem(&r, 400);
    assert_non_null(json_object_get(json_object_get(r.json, "errors"), "limit"));
    t_resp_dispose(&r);
    get(fx, "/api/items", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(json_is_null(json_object_get(r.json, "limit")));
    t_resp_dispose(&r);
}

/* ---- bodies ------------------------------------------------------------------------------------
 */

static void valid_json_body_reaches_the_handler(void **state)
{
    fixture_t *fx = *state;
    const char *types[] = {"application/json", "Application/JSON; charset=utf-8"};
    for (size_t i = 0; i < 2; i++) {
        t_resp_t r;
        const char *body = "{\"name\":\"ada\",\"n\":3,\"nested\":{\"ok\":true}}";
        post(fx, "/api/echo/", types[i], body, strlen(body), &r);
        assert_int_equal(r.status, 200);
        json_t *want = json_loads(body, 0, NULL);
        assert_true(json_equal(r.json, want));
        json_decref(want);
        assert_security_headers(&r);
        t_resp_dispose(&r);
    }
}

/* Bodies around the size cm_reply_json serializes on the stack (4 KiB) come back whole. */
static void json_answers_of_any_size_are_whole_and_their_length_is_exact(void **state)
{
    fixture_t *fx = *state;
    const size_t sizes[] = {10, 4080, 4095, 4096, 4097, 4200, CM_MAX_BODY};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        /* {"s":"xxx..."} is 8 bytes of framing around the string. */
        size_t n = sizes[i] > 8 ? sizes[i] - 8 : 1;
        char *text = cm_xmalloc(n + 1);
        memset(text, 'x', n);
        text[n] = '\0';
        json_t *doc = json_pack("{s:s}", "s", text);
        char *body = json_dumps(doc, JSON_COMPACT);
        t_resp_t r;
        post(fx, "/api/echo/", "application/json", body, strlen(body), &r);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.len, strlen(body));
        assert_memory_equal(r.body, body, r.len);
        char *len = t_resp_header(&r, "Content-Length");
        assert_non_null(len);
        assert_int_equal(strtoull(len, NULL, 10), strlen(body));
        free(len);
        t_resp_dispose(&r);
        free(body);
        json_decref(doc);
        free(text);
    }
}

static void text_plain_body_is_415(void **state)
{
    fixture_t *fx = *state;
    const char *types[] = {"text/plain", "application/jsonx", NULL};
    for (size_t i = 0; i < 3; i++) {
        t_resp_t r;
        post(fx, "/api/echo", types[i], "{}", 2, &r);
        assert_problem(&r, 415);
        t_resp_dispose(&r);
        assert_still_answering(fx);
    }
}

static void body_of_100_kib_is_413(void **state)
{
    fixture_t *fx = *state;
    size_t n = 100 * 1024;
    char *big = cm_xmalloc(n);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    t_resp_t r;
    post(fx, "/api/echo", "application/json", big, n, &r);
    assert_problem(&r, 413);
    t_resp_dispose(&r);
    free(big);
    assert_still_answering(fx);
}

static void lying_content_length_is_413_without_waiting_for_the_body(void **state)
{
    fixture_t *fx = *state;
    int s = raw_connect(fx);
    const char *req = "POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                      "Content-Length: 1000000\r\n\r\n{}";
    int64_t t0 = cm_now_mono_ms();
    raw_send(s, req, strlen(req));
    char *answer = raw_read_answer(s, 4000);
    assert_status_line(answer, 413);
    assert_true(cm_now_mono_ms() - t0 < 2000); /* well before the 5 s request timeout */
    assert_non_null(find_ci(answer, "\r\nContent-Type: application/problem+json"));
    free(answer);
    close(s);
    assert_still_answering(fx);
}

static void short_body_is_400_and_bad_content_length_is_refused(void **state)
{
    fixture_t *fx = *state;
    int s = raw_connect(fx);
    const char *req = "POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                      "Content-Length: 10\r\n\r\n{}";
    raw_send(s, req, strlen(req));
    shutdown(s, SHUT_WR); /* the client gives up after 2 of 10 bytes */
    char *answer = raw_read_answer(s, 4000);
    assert_status_line(answer, 400);
    free(answer);
    close(s);
    s = raw_connect(fx);
    req = "POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
          "Content-Length: -5\r\n\r\n{}";
    raw_send(s, req, strlen(req));
    answer = raw_read_answer(s, 4000);
    assert_true(strncmp(answer, "HTTP/1.1 4", 10) == 0);
    free(answer);
    close(s);
    assert_still_answering(fx);
}

static void chunked_bodies_are_refused_with_411_and_the_connection_closed(void **state)
{
    fixture_t *fx = *state;
    /* Complete, and trickled forever (civetweb would parse its chunk lines beyond any deadline). */
    const char *reqs[] = {"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n"
                          "5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n",
                          "POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n0"};
    for (size_t i = 0; i < 2; i++) {
        int s = raw_connect(fx);
        raw_send(s, reqs[i], strlen(reqs[i]));
        t_trickle_t t;
        t_raw_trickle(s, "0", 200, 4000, &t);
        assert_status_line(t.got.data, 411);
        assert_non_null(find_ci(t.got.data, "\r\nContent-Type: application/problem+json"));
        assert_non_null(find_ci(t.got.data, "\r\nConnection: close"));
        assert_true(t.closed_ms >= 0 && t.closed_ms < 1500);
        t_trickle_dispose(&t);
        close(s);
    }
    assert_still_answering(fx);
}

static void malformed_json_is_400_with_the_position(void **state)
{
    fixture_t *fx = *state;
    t_resp_t r;
    const char *bad = "{\"a\": 1,\n \"b\": }";
    post(fx, "/api/echo", "application/json", bad, strlen(bad), &r);
    assert_problem(&r, 400);
    assert_string_equal(json_string_value(json_object_get(r.json, "title")), "Malformed JSON");
    assert_non_null(strstr(detail_of(&r), "line 2"));
    t_resp_dispose(&r);
    const char *dup = "{\"a\": 1, \"a\": 2}";
    post(fx, "/api/echo", "application/json", dup, strlen(dup), &r);
    assert_problem(&r, 400);
    t_resp_dispose(&r);
    const char *binary = "{\"a\": \"\xff\xfe\"}";
    post(fx, "/api/echo", "application/json", binary, strlen(binary), &r);
    assert_problem(&r, 400);
    t_resp_dispose(&r);
    post(fx, "/api/echo", "application/json", "", 0, &r);
    assert_problem(&r, 400);
    t_resp_dispose(&r);
    assert_still_answering(fx);
}

static void json_that_is_not_an_object_is_400(void **state)
{
    fixture_t *fx = *state;
    const char *bodies[] = {"[1,2,3]", "\"text\"", "42", "null"};
    for (size_t i = 0; i < 4; i++) {
        t_resp_t r;
        post(fx, "/api/echo", "application/json", bodies[i], strlen(bodies[i]), &r);
        assert_problem(&r, 400);
        assert_non_null(strstr(detail_of(&r), "object"));
        t_resp_dispose(&r);
    }
    assert_still_answering(fx);
}

static void unread_body_does_not_poison_a_kept_alive_connection(void **state)
{
    fixture_t *fx = *state;
    int s = raw_connect(fx);
    const char *req = "POST /api/nowhere HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                      "Content-Length: 26\r\n\r\nGET /api/secret HTTP/1.1\r\n"
                      "GET /api/hello HTTP/1.1\r\nHost: t\r\n\r\n";
    raw_send(s, req, strlen(req));
    char *first = raw_read_answer(s, 4000);
    assert_status_line(first, 404);
    char *second = raw_read_answer(s, 4000);
    /* Either the next request is answered properly or the connection is closed. */
    if (second[0])
        assert_status_line(second, 200);
    assert_null(strstr(second, "shh"));
    free(first);
    free(second);
    close(s);
    assert_still_answering(fx);
}

static void requests_civetweb_refuses_still_get_problem_json_and_headers(void **state)
{
    fixture_t *fx = *state;
    const char *reqs[] = {
        "POST /api/echo HTTP/1.1\r\nHost: t\r\nX-Request-Id: bad-length\r\n"
        "Content-Type: application/json\r\nContent-Length: abc\r\n\r\n{}",
        "NOT AN HTTP REQUEST\r\n\r\n",
    };
    for (size_t i = 0; i < 2; i++) {
        int s = raw_connect(fx);
        raw_send(s, reqs[i], strlen(reqs[i]));
        char *answer = raw_read_answer(s, 4000);
        assert_true(strncmp(answer, "HTTP/1.1 4", 10) == 0);
        assert_non_null(find_ci(answer, "\r\nContent-Type: application/problem+json\r\n"));
        assert_non_null(find_ci(answer, "\r\nX-Content-Type-Options: nosniff\r\n"));
        assert_non_null(find_ci(answer, "\r\nX-Request-Id: "));
        if (i == 0)
            assert_non_null(strstr(answer, "\"request_id\":\"bad-length\""));
        free(answer);
        close(s);
    }
    /* A request head over the cap is refused, not buffered without bound. */
    int s = raw_connect(fx);
    size_t n = 40 * 1024;
    char *huge = cm_xmalloc(n);
    memset(huge, 'a', n);
    const char *start = "GET /api/hello HTTP/1.1\r\nHost: t\r\nX-Big: ";
    raw_send(s, start, strlen(start));
    raw_send(s, huge, n);
    raw_send(s, "\r\n\r\n", 4);
    char *answer = raw_read_answer(s, 4000);
    assert_true(strncmp(answer, "HTTP/1.1 4", 10) == 0);
    free(answer);
    free(huge);
    close(s);
    assert_still_answering(fx);
}

/* ---- request ids
 * --------------------------------------------------------------------------------- */

static void valid_request_id_is_passed_through(void **state)
{
    fixture_t *fx = *state;
    const char *hdrs[] = {"X-Request-Id: abc-123.DEF_x", NULL};
    t_resp_t r;
    get(fx, "/api/hello", hdrs, &r);
    t_assert_header(&r, "X-Request-Id", "abc-123.DEF_x");
    t_resp_dispose(&r);
    get(fx, "/api/missing", hdrs, &r);
    assert_problem(&r, 404);
    assert_string_equal(json_string_value(json_object_get(r.json, "request_id")), "abc-123.DEF_x");
    t_resp_dispose(&r);
}

static void odd_request_ids_are_replaced_with_a_uuid(void **state)
{
    fixture_t *fx = *state;
    char long_id[256];
    memcpy(long_id, "X-Request-Id: ", 14);
    memset(long_id + 14, 'a', 200);
    long_id[214] = '\0';
    const char *cases[][2] = {{long_id, NULL}, {"X-Request-Id: has spaces", NULL}, {NULL, NULL}};
    for (size_t i = 0; i < 3; i++) {
        t_resp_t r;
        get(fx, "/api/hello", cases[i][0] ? cases[i] : NULL, &r);
        char *id = t_resp_header(&r, "X-Request-Id");
        assert_non_null(id);
        assert_true(cm_is_uuid(id, strlen(id)));
        free(id);
        t_resp_dispose(&r);
    }
}

/* ---- built-ins
 * ------------------------------------------------------------------------------------ */

static void healthz_and_readyz_answer_ok_when_ready(void **state)
{
    fixture_t *fx = *state;
    t_resp_t r;
    get(fx, "/healthz", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "ok");
    assert_security_headers(&r);
    t_resp_dispose(&r);
    get(fx, "/readyz/", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "ready");
    t_resp_dispose(&r);
}

static void readyz_is_503_naming_what_is_down(void **state)
{
    fixture_t *fx = *state;
    __atomic_store_n(&fx->ready, false, __ATOMIC_SEQ_CST);
    t_resp_t r;
    get(fx, "/readyz", NULL, &r);
    assert_problem(&r, 503);
    assert_non_null(strstr(detail_of(&r), "database"));
    t_assert_header(&r, "Retry-After", "1");
    t_resp_dispose(&r);
    get(fx, "/healthz", NULL, &r);
    assert_int_equal(r.status, 200); /* alive, only not ready */
    t_resp_dispose(&r);
}

/* A public listener (health_only): /healthz stays, /readyz and /metrics are 404 like any path. */
static void a_health_only_server_keeps_healthz_and_hides_readyz_and_metrics(void **state)
{
    (void)state;
    int port = t_free_port();
    cm_http_config_t cfg = {.service = "public",
                            .bind = "127.0.0.1",
                            .port = port,
                            .threads = 2,
                            .request_timeout_ms = 5000,
                            .routes = routes,
                            .nroutes = sizeof routes / sizeof routes[0],
                            .health_only = true};
    int err = 1;
    cm_http_t *srv = cm_http_start(&cfg, &err);
    assert_non_null(srv);
    fixture_t pub = {.port = port};
    snprintf(pub.base, sizeof pub.base, "http://127.0.0.1:%d", port);
    t_resp_t r;
    get(&pub, "/healthz", NULL, &r);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
    const char *hidden[] = {"/readyz", "/readyz/", "/metrics", "/metrics/"};
    for (size_t i = 0; i < sizeof hidden / sizeof hidden[0]; i++) {
        get(&pub, hidden[i], NULL, &r);
        assert_problem(&r, 404);
        t_resp_dispose(&r);
    }
    get(&pub, "/api/hello", NULL, &r);
    assert_int_equal(r.status, 200); /* the service's routes are served as before */
    t_resp_dispose(&r);
    /* The answer reaches the client before the handler's thread leaves on_request. */
    for (int i = 0; i < 100 && cm_http_in_flight(srv) != 0; i++)
        t_sleep_ms(10);
    assert_int_equal(cm_http_in_flight(srv), 0);
    cm_http_stop(srv);
}

static void metrics_count_requests_by_route_pattern_not_raw_path(void **state)
{
    fixture_t *fx = *state;
    t_resp_t r;
    get(fx, "/api/counted", NULL, &r);
    t_resp_dispose(&r);
    get(fx, "/api/counted/", NULL, &r);
    t_resp_dispose(&r);
    get(fx, "/random-7d1f0c", NULL, &r);
    t_resp_dispose(&r);
    post(fx, "/api/counted", "text/plain", "x", 1, &r);
    t_resp_dispose(&r);
    get(fx, "/metrics", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert_security_headers(&r);
    const char *text = r.body;
    assert_non_null(strstr(text, "# TYPE linktr_http_requests_total counter\n"));
    assert_non_null(strstr(text, "# TYPE linktr_http_request_duration_seconds histogram\n"));
    assert_non_null(strstr(text,
                           "\nlinktr_http_requests_total{route=\"/api/counted/\",method=\"GET\","
                           "status=\"200\"} 2\n"));
    assert_non_null(strstr(text,
                           "\nlinktr_http_requests_total{route=\"/api/counted\",method=\"POST\","
                           "status=\"415\"} 1\n"));
    assert_non_null(strstr(text, "\nlinktr_http_requests_total{route=\"unmatched\",method=\"GET\","
                                 "status=\"404\"}"));
    assert_non_null(
        strstr(text, "\nlinktr_http_request_duration_seconds_count{route=\"/api/counted/\"} 2\n"));
    assert_non_null(strstr(text,
                           "\nlinktr_http_request_duration_seconds_bucket{route=\"/api/counted/\","
                           "le=\"+Inf\"} 2\n"));
    assert_null(strstr(text, "random-7d1f0c"));
    t_resp_dispose(&r);
}

/* ---- deadlines and closing (a server of their own with a short deadline) ---------------- */

/* The deadline of the server these tests start; bounds below are generous multiples. */
#define SHORT_DEADLINE_MS 800

static cm_http_t *short_deadline_server(int *port)
{
    *port = t_free_port();
    cm_http_config_t cfg = {.service = "short",
                            .bind = "127.0.0.1",
                            .port = *port,
                            .threads = 2,
                            .request_timeout_ms = SHORT_DEADLINE_MS,
                            .routes = routes,
                            .nroutes = sizeof routes / sizeof routes[0]};
    int err = 1;
    cm_http_t *srv = cm_http_start(&cfg, &err);
    assert_non_null(srv);
    return srv;
}

static void a_body_trickled_past_the_deadline_is_408_and_the_connection_closed(void **state)
{
    (void)state;
    int port;
    cm_http_t *srv = short_deadline_server(&port);
    int s = t_raw_connect("127.0.0.1", port, NULL);
    assert_true(s >= 0);
    const char *head = "POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                       "Content-Length: 40\r\n\r\n{";
    assert_true(t_raw_send(s, head, strlen(head)));
    /* A byte every 200 ms: never an idle gap civetweb would notice, 8 s for the whole body. */
    t_trickle_t t;
    t_raw_trickle(s, " ", 200, 6000, &t);
    assert_int_equal(t_raw_status(t.got.data), 408);
    assert_non_null(strstr(t.got.data, "application/problem+json"));
    assert_non_null(strstr(t.got.data, "Connection: close"));
    assert_true(t.closed_ms >= 0);
    assert_true(t.closed_ms < SHORT_DEADLINE_MS + 1500);
    t_trickle_dispose(&t);
    close(s);
    cm_http_stop(srv);
}

static void a_refused_body_closes_the_connection_instead_of_draining_it(void **state)
{
    (void)state;
    int port;
    cm_http_t *srv = short_deadline_server(&port);
    /* Too large (413), wrong type (415), no route (404): the body is never read. */
    const char *heads[] = {
        "POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000000\r\n\r\n{",
        "POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
        "Content-Length: 500\r\n\r\nx",
        "POST /api/nowhere HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: 500\r\n\r\n{",
    };
    const int want[] = {413, 415, 404};
    for (size_t i = 0; i < 3; i++) {
        int s = t_raw_connect("127.0.0.1", port, NULL);
        assert_true(s >= 0);
        assert_true(t_raw_send(s, heads[i], strlen(heads[i])));
        /* The client keeps trickling: a draining server would read it for minutes. */
        t_trickle_t t;
        t_raw_trickle(s, " ", 100, 5000, &t);
        assert_int_equal(t_raw_status(t.got.data), want[i]);
        assert_non_null(strstr(t.got.data, "Connection: close"));
        if (t.closed_ms < 0 || t.closed_ms > 1500)
            fail_msg("answer %d: connection still open after %lld ms", want[i],
                     (long long)t.closed_ms);
        t_trickle_dispose(&t);
        close(s);
    }
    cm_http_stop(srv);
}

static void a_head_trickled_past_the_deadline_is_cut_off(void **state)
{
    (void)state;
    int port;
    cm_http_t *srv = short_deadline_server(&port);
    int s = t_raw_connect("127.0.0.1", port, NULL);
    assert_true(s >= 0);
    assert_true(t_raw_send(s, "GET /healthz HTTP/1.1\r\nX-Slow: ", 31));
    /* Bytes keep coming faster than the deadline, but the head never ends. */
    t_trickle_t t;
    t_raw_trickle(s, "a", 200, 6000, &t);
    assert_true(t.closed_ms >= 0);
    /* civetweb checks after each read, each read waiting up to the deadline. */
    assert_true(t.closed_ms < 2 * SHORT_DEADLINE_MS + 1000);
    assert_null(strstr(t.got.data, "200 OK"));
    t_trickle_dispose(&t);
    close(s);
    /* The workers are free again. */
    s = t_raw_connect("127.0.0.1", port, NULL);
    const char *req = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_true(t_raw_send(s, req, strlen(req)));
    char *answer = raw_read_answer(s, 2000);
    assert_status_line(answer, 200);
    free(answer);
    close(s);
    cm_http_stop(srv);
}

static void a_body_read_in_time_keeps_the_connection_alive_past_a_second_idle(void **state)
{
    (void)state;
    int port;
    cm_http_t *srv = short_deadline_server(&port);
    int s = t_raw_connect("127.0.0.1", port, NULL);
    assert_true(s >= 0);
    const char *post = "POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                       "Content-Length: 7\r\n\r\n{\"a\":1}";
    assert_true(t_raw_send(s, post, strlen(post)));
    char *answer = raw_read_answer(s, 2000);
    assert_status_line(answer, 200);
    assert_null(find_ci(answer, "Connection: close"));
    free(answer);
    /* civetweb's own keep-alive default (500 ms) would have closed it by now. */
    t_sleep_ms(1500);
    const char *get = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_true(t_raw_send(s, get, strlen(get)));
    answer = raw_read_answer(s, 2000);
    assert_status_line(answer, 200);
    free(answer);
    close(s);
    cm_http_stop(srv);
}

/* Sends GET /healthz on s; returns the answer (new string). */
static char *healthz_on(int s)
{
    const char *get = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_true(t_raw_send(s, get, strlen(get)));
    return raw_read_answer(s, 3000);
}

static void idle_connections_cannot_take_more_than_half_the_workers(void **state)
{
    (void)state;
    int port = t_free_port();
    cm_http_config_t cfg = {.service = "idle",
                            .bind = "127.0.0.1",
                            .port = port,
                            .threads = 4,
                            .keepalive_timeout_ms = 60000};
    int err = 1;
    cm_http_t *srv = cm_http_start(&cfg, &err);
    assert_non_null(srv);
    int s[4];
    for (int i = 0; i < 4; i++) {
        s[i] = t_raw_connect("127.0.0.1", port, NULL);
        assert_true(s[i] >= 0);
        char *answer = healthz_on(s[i]);
        assert_status_line(answer, 200);
        /* Two idle connections may hold two of the four workers; the third is not kept. */
        bool closes = find_ci(answer, "Connection: close") != NULL;
        if (closes != (i >= 2))
            fail_msg("answer %d on its own connection: Connection: close %s", i + 1,
                     closes ? "sent" : "missing");
        free(answer);
    }
    /* The connections told to close are closed; a newcomer is answered at once. */
    assert_true(t_raw_wait_close(s[2], 3000, NULL) >= 0);
    int late = t_raw_connect("127.0.0.1", port, NULL);
    int64_t t0 = cm_now_mono_ms();
    char *answer = healthz_on(late);
    assert_status_line(answer, 200);
    assert_true(cm_now_mono_ms() - t0 < 2000);
    free(answer);
    close(late);
    /* The first two stayed alive all along. */
    answer = healthz_on(s[0]);
    assert_status_line(answer, 200);
    free(answer);
    for (int i = 0; i < 4; i++)
        close(s[i]);
    cm_http_stop(srv);
}

static void json_content_types_are_recognised_and_others_refused(void **state)
{
    (void)state;
    assert_true(cm_content_type_is_json("application/json"));
    assert_true(cm_content_type_is_json("Application/JSON; charset=utf-8"));
    assert_true(cm_content_type_is_json("application/json ;charset=utf-8"));
    assert_false(cm_content_type_is_json(NULL));
    assert_false(cm_content_type_is_json("text/plain"));
    assert_false(cm_content_type_is_json("application/jsonx"));
    assert_false(cm_content_type_is_json("application/x-www-form-urlencoded"));
    assert_false(cm_content_type_is_json("multipart/form-data; boundary=x"));
}

int main(void)
{
    cm_log_init("test_http", CM_LOG_ERROR);
#define T(fn) cmocka_unit_test_setup(fn, reset)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_content_types_are_recognised_and_others_refused),
        cmocka_unit_test(route_find_ignores_one_trailing_slash_on_either_side),
        cmocka_unit_test(route_find_reports_other_methods_in_allow),
        cmocka_unit_test(head_finds_the_get_route_and_allow_lists_head_after_get),
        cmocka_unit_test(request_id_accepts_short_safe_tokens_only),
        T(start_refuses_a_bad_config_and_a_taken_port),
        T(routes_match_with_and_without_trailing_slash),
        T(unknown_path_is_404_problem_json),
        T(wrong_method_is_405_with_allow),
        T(no_store_route_and_204_answers_are_well_formed),
        T(head_gets_the_get_head_with_its_length_and_no_body),
        T(methods_civetweb_does_not_know_get_405_with_allow_or_404),
        T(cache_control_set_by_a_handler_passes_unless_no_store_applies),
        T(handler_that_forgets_to_reply_gets_500_problem),
        T(handler_replying_with_a_status_outside_200_to_599_gets_500_problem),
        T(header_values_with_line_breaks_are_refused),
        T(query_parameters_are_decoded_and_capped),
        T(valid_json_body_reaches_the_handler),
        T(json_answers_of_any_size_are_whole_and_their_length_is_exact),
        T(text_plain_body_is_415),
        T(body_of_100_kib_is_413),
        T(lying_content_length_is_413_without_waiting_for_the_body),
        T(short_body_is_400_and_bad_content_length_is_refused),
        T(chunked_bodies_are_refused_with_411_and_the_connection_closed),
        T(malformed_json_is_400_with_the_position),
        T(json_that_is_not_an_object_is_400),
        T(unread_body_does_not_poison_a_kept_alive_connection),
        T(requests_civetweb_refuses_still_get_problem_json_and_headers),
        T(valid_request_id_is_passed_through),
        T(odd_request_ids_are_replaced_with_a_uuid),
        T(healthz_and_readyz_answer_ok_when_ready),
        T(readyz_is_503_naming_what_is_down),
        T(a_health_only_server_keeps_healthz_and_hides_readyz_and_metrics),
        T(metrics_count_requests_by_route_pattern_not_raw_path),
        cmocka_unit_test(a_body_trickled_past_the_deadline_is_408_and_the_connection_closed),
        cmocka_unit_test(a_refused_body_closes_the_connection_instead_of_draining_it),
        cmocka_unit_test(a_head_trickled_past_the_deadline_is_cut_off),
        cmocka_unit_test(a_body_read_in_time_keeps_the_connection_alive_past_a_second_idle),
        cmocka_unit_test(idle_connections_cannot_take_more_than_half_the_workers),
    };
#undef T
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
