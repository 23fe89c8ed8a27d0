/*
 * fuzz_http.c — a whole request through common/src/http.c: request id,
 * routing, body framing (Content-Length, Transfer-Encoding, short bodies,
 * the size cap), the JSON body reader, query parameters, response headers
 * and the problem+json answers.
 *
 * http.c is included with the few civetweb calls it makes on a connection
 * renamed (the #defines below) to a fake connection that serves the request
 * from the fuzz input and records what is written, so no socket or thread
 * is involved and every run is deterministic. mg_get_var (the query string
 * decoder) is civetweb's own.
 *
 * Input: "METHOD TARGET\n", then "Name: value\n" header lines, an empty
 * line, and the body. A leading '!' instead hands the request to
 * on_http_error as civetweb does when its own parser refuses a request line
 * (an unknown method): status 400, no headers. Every answer is checked: one well-formed HTTP/1.1
 * head (no stray CR/LF/control byte: no header injection), a matching
 * Content-Length, the request id echoed, and every error a problem+json
 * object naming its status.
 */
#include <stdint.h>

#define mg_get_header fz_mg_get_header
#define mg_read fz_mg_read
#define mg_write fz_mg_write
#define mg_get_request_info fz_mg_get_request_info
#define mg_get_response_code_text fz_mg_get_response_code_text
#define mg_get_context fz_mg_get_context
#define mg_get_user_data fz_mg_get_user_data
#define mg_disable_connection_keep_alive fz_mg_disable_connection_keep_alive
#include "http.c"
#undef mg_get_response_code_text

#include "fuzz.h"

/* The server's body cap here: small, so 413 is within reach of short inputs. */
#define FUZZ_MAX_BODY 1024

/* civetweb's own, called by the fake below with no connection. */
const char *mg_get_response_code_text(const struct mg_connection *conn, int status);

struct mg_context {
    cm_http_t *srv;
};

struct mg_connection {
    struct mg_context *ctx;
    struct mg_request_info ri;
    char *uri; /* ri.request_uri's storage */
    const uint8_t *body;
    size_t readable; /* what mg_read hands out: the body, cut at a Content-Length */
    size_t pos;
    cm_buf_t out;
    int writes;
    bool must_close; /* http.c asked civetweb to close instead of draining */
};

const char *fz_mg_get_header(const struct mg_connection *conn, const char *name)
{
    for (int i = 0; i < conn->ri.num_headers; i++)
        if (strcasecmp(conn->ri.http_headers[i].name, name) == 0)
            return conn->ri.http_headers[i].value;
    return NULL;
}

/* Short reads of varying size, as a socket gives them. */
int fz_mg_read(struct mg_connection *conn, void *buf, size_t len)
{
    size_t n = conn->readable - conn->pos;
    size_t chunk = 1 + conn->pos % 61;
    n = n < len ? n : len;
    n = n < chunk ? n : chunk;
    memcpy(buf, conn->body + conn->pos, n);
    conn->pos += n;
    return (int)n;
}

void fz_mg_disable_connection_keep_alive(struct mg_connection *conn)
{
    conn->must_close = true;
}

int fz_mg_write(struct mg_connection *conn, const void *buf, size_t len)
{
    cm_buf_append(&conn->out, buf, len);
    conn->writes++;
    return (int)len;
}

const struct mg_request_info *fz_mg_get_request_info(const struct mg_connection *conn)
{
    return &conn->ri;
}

struct mg_context *fz_mg_get_context(const struct mg_connection *conn)
{
    return conn->ctx;
}

void *fz_mg_get_user_data(const struct mg_context *ctx)
{
    return ctx->srv;
}

const char *fz_mg_get_response_code_text(const struct mg_connection *conn, int status)
{
    (void)conn;
    return mg_get_response_code_text(NULL, status);
}

/* ---- the routes the fuzzed server offers ----------------------------------------- */

static void on_json(cm_req_t *rq, void *ctx)
{
    (void)ctx;
    json_t *body = NULL;
    if (cm_req_json_or_reply(rq, &body) != 0)
        return;
    FUZZ_CHECK(json_is_object(body));
    cm_reply_json(rq, 200, body);
}

static void on_raw(cm_req_t *rq, void *ctx)
{
    (void)ctx;
    cm_slice_t body;
    if (cm_req_body_or_reply(rq, &body) != 0)
        return;
    FUZZ_CHECK(body.len <= FUZZ_MAX_BODY && body.ptr[body.len] == '\0');
    cm_reply_raw(rq, 200, "application/octet-stream", body.ptr, body.len);
}

static void on_query(cm_req_t *rq, void *ctx)
{
    (void)ctx;
    static const char *const names[] = {"limit", "cursor", "status"};
    json_t *errors = json_object();
    for (size_t i = 0; i < 3; i++) {
        const char *v = NULL;
        int rc = cm_req_query_param(rq, names[i], 16, &v);
        FUZZ_CHECK(rc == 0 || rc == CM_ENOTFOUND || rc == CM_ETOOBIG);
        FUZZ_CHECK(rc != 0 || (v && strlen(v) <= 16));
        long long limit = 0;
        if (rc == CM_ETOOBIG || (rc == 0 && i == 0 && cm_strtonum(v, 1, 100, &limit) != 0))
            cm_errors_add(errors, names[i], "Invalid value.");
    }
    if (json_object_size(errors)) {
        cm_reply_invalid(rq, errors);
        return;
    }
    json_decref(errors);
    cm_reply_empty(rq, 204);
}

/* Copies X-Echo into the answer and answers with the status in X-Status. */
static void on_echo(cm_req_t *rq, void *ctx)
{
    (void)ctx;
    const char *echo = cm_req_header(rq, "X-Echo");
    const char *name = cm_req_header(rq, "X-Echo-Name");
    if (echo)
        cm_reply_header(rq, name ? name : "X-Echo", echo);
    long long status = 200;
    const char *s = cm_req_header(rq, "X-Status");
    if (s && cm_strtonum(s, 200, 599, &status) != 0)
        status = 200;
    /* A 405 must carry Allow, which only the router knows; 408, 411 and 413 are
     * cm_http's own answers to a body it refused, which always close the
     * connection (checked below), not statuses a handler picks. */
    if (status == 405 || status == 408 || status == 411 || status == 413)
        status = 400;
    if (status >= 400)
        cm_reply_problem(rq, (int)status, NULL, "As asked.", NULL);
    else
        cm_reply_json(rq, (int)status, json_object());
}

static const cm_route_t fuzz_routes[] = {
    {"POST", "/api/json/", on_json, CM_ROUTE_NO_STORE},
    {"PUT", "/api/json", on_json, 0},
    {"POST", "/api/raw", on_raw, 0},
    {"GET", "/api/query/", on_query, 0},
    {"GET", "/api/echo", on_echo, 0},
    {"POST", "/api/echo", on_echo, 0},
};

/* ---- the input ---------------------------------------------------------------------- */

/* Splits the request line and headers in place; returns where the body starts. */
static size_t parse_head(char *text, size_t size, struct mg_connection *conn)
{
    char *end = text + size;
    char *line = text;
    char *nl = memchr(line, '\n', (size_t)(end - line));
    char *stop = nl ? nl : end;
    *stop = '\0';
    char *sp = strchr(line, ' ');
    conn->ri.request_method = line;
    conn->ri.local_uri = "/";
    conn->ri.http_version = "1.1";
    if (sp) {
        *sp = '\0';
        /* civetweb keeps the raw target too; the decoded path is its own copy. */
        conn->uri = cm_xstrdup(sp + 1);
        conn->ri.request_uri = conn->uri;
        char *q = strchr(sp + 1, '?');
        if (q) {
            *q = '\0';
            conn->ri.query_string = q + 1;
        }
        conn->ri.local_uri = sp + 1;
    }
    line = nl ? nl + 1 : end;
    while (line < end && *line != '\n' && conn->ri.num_headers < MG_MAX_HEADERS) {
        nl = memchr(line, '\n', (size_t)(end - line));
        stop = nl ? nl : end;
        *stop = '\0';
        char *colon = strchr(line, ':');
        if (colon) {
            *colon = '\0';
            char *v = colon + 1;
            while (*v == ' ')
                v++;
            struct mg_header *h = &conn->ri.http_headers[conn->ri.num_headers++];
            h->name = line;
            h->value = v;
        }
        line = nl ? nl + 1 : end;
    }
    if (line < end && *line == '\n')
        line++;
    return (size_t)(line - text);
}

/* mg_read stops at a Content-Length the way civetweb does. */
static void set_readable(struct mg_connection *conn, size_t body_len)
{
    conn->readable = body_len;
    const char *cl = fz_mg_get_header(conn, "Content-Length");
    long long n = 0;
    if (cl && !fz_mg_get_header(conn, "Transfer-Encoding") &&
        cm_strtonum(cl, 0, LLONG_MAX, &n) == 0 && (unsigned long long)n < body_len)
        conn->readable = (size_t)n;
}

/* ---- checks on the answer --------------------------------------------------------- */

/* Returns the value of header name in head (a copy, caller frees), or NULL. */
static char *find_header(const char *head, const char *name)
{
    size_t n = strlen(name);
    for (const char *l = strstr(head, "\r\n"); l && l[2] != '\r'; l = strstr(l + 2, "\r\n")) {
        if (strncasecmp(l + 2, name, n) == 0 && l[2 + n] == ':') {
            const char *v = l + 2 + n + 2;
            return cm_xstrndup(v, (size_t)(strstr(v, "\r\n") - v));
        }
    }
    return NULL;
}

/* Only CRLF line ends, no other control byte but TAB, and "Name: value" lines. */
static void check_head_bytes(const char *head, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)head[i];
        if (c == '\r')
            FUZZ_CHECK(i + 1 < len && head[i + 1] == '\n');
        else if (c == '\n')
            FUZZ_CHECK(i > 0 && head[i - 1] == '\r');
        else
            FUZZ_CHECK((c >= 0x20 && c != 0x7f) || c == '\t');
    }
    for (const char *l = strstr(head, "\r\n"); l && l + 2 < head + len; l = strstr(l + 2, "\r\n")) {
        const char *colon = strchr(l + 2, ':');
        FUZZ_CHECK(colon && colon > l + 2 && colon < strstr(l + 2, "\r\n"));
        for (const char *p = l + 2; p < colon; p++)
            FUZZ_CHECK(is_tchar(*p));
    }
}

static void check_problem(const char *body, size_t len, int status)
{
    json_t *p = json_loadb(body, len, 0, NULL);
    FUZZ_CHECK(json_is_object(p));
    FUZZ_CHECK(json_integer_value(json_object_get(p, "status")) == status);
    FUZZ_CHECK(json_is_string(json_object_get(p, "title")));
    FUZZ_CHECK(json_is_string(json_object_get(p, "request_id")));
    json_decref(p);
}

static void check_answer(const struct mg_connection *conn, const char *client_id)
{
    bool head_request = strcmp(conn->ri.request_method, "HEAD") == 0;
    FUZZ_CHECK(conn->writes == 1);
    const char *out = conn->out.data;
    FUZZ_CHECK(out && strncmp(out, "HTTP/1.1 ", 9) == 0);
    int status = (int)strtol(out + 9, NULL, 10);
    FUZZ_CHECK(status >= 200 && status <= 599);
    const char *end = strstr(out, "\r\n\r\n");
    FUZZ_CHECK(end != NULL);
    size_t head_len = (size_t)(end - out) + 2;
    char *head = cm_xstrndup(out, head_len);
    check_head_bytes(head, head_len);
    const char *body = end + 4;
    size_t body_len = conn->out.len - head_len - 2;
    char *cl = find_header(head, "Content-Length");
    if (head_request)
        FUZZ_CHECK(body_len == 0); /* RFC 9110: GET's head, Content-Length included, no body */
    else if (cl)
        FUZZ_CHECK((size_t)strtoull(cl, NULL, 10) == body_len);
    else
        FUZZ_CHECK((status == 204 || status == 304) && body_len == 0);
    FUZZ_CHECK(cl || status == 204 || status == 304);
    char *id = find_header(head, "X-Request-Id");
    FUZZ_CHECK(id && (cm_request_id_valid(client_id) ? strcmp(id, client_id) == 0
                                                     : cm_is_uuid(id, strlen(id))));
    char *ctype = find_header(head, "Content-Type");
    if (status >= 400) {
        FUZZ_CHECK(ctype && strcmp(ctype, "application/problem+json") == 0);
        if (!head_request)
            check_problem(body, body_len, status);
    }
    char *allow = find_header(head, "Allow");
    FUZZ_CHECK(status != 405 || allow);
    char *www = find_header(head, "WWW-Authenticate");
    FUZZ_CHECK(status != 401 || www);
    char *retry = find_header(head, "Retry-After");
    FUZZ_CHECK((status != 429 && status != 503) || retry);
    /* Told to close means civetweb closes too (no drain), and the other way round. */
    char *connection = find_header(head, "Connection");
    FUZZ_CHECK(conn->must_close == (connection && strcmp(connection, "close") == 0));
    /* A body refused or left unread is never drained: 411, 413, 408 and bad framing close. */
    FUZZ_CHECK(!(status == 411 || status == 413 || status == 408) || conn->must_close);
    free(connection);
    free(retry);
    free(www);
    free(allow);
    free(ctype);
    free(id);
    free(cl);
    free(head);
}

static int fuzz_one(const uint8_t *data, size_t size)
{
    bool refused_by_civetweb = size > 0 && data[0] == '!';
    size_t skip = refused_by_civetweb ? 1 : 0;
    char *text = cm_xmalloc(size + 1);
    memcpy(text, data + skip, size - skip);
    text[size - skip] = '\0';
    struct mg_connection conn;
    memset(&conn, 0, sizeof conn);
    cm_buf_init(&conn.out);
    size_t body_at = parse_head(text, size - skip, &conn);
    conn.body = data + skip + body_at;
    set_readable(&conn, size - skip - body_at);
    const char *client_id = fz_mg_get_header(&conn, "X-Request-Id");

    cm_http_t *srv = cm_xcalloc(1, sizeof *srv);
    srv->service = cm_xstrdup("fuzz");
    srv->max_body = FUZZ_MAX_BODY;
    /* Reads never wait here: a deadline far away keeps runs independent of the clock. */
    srv->request_timeout_ms = 3600 * 1000;
    srv->threads = 8;
    srv->routes = fuzz_routes;
    srv->nroutes = sizeof fuzz_routes / sizeof fuzz_routes[0];
    register_metrics(srv, NULL);

    struct mg_context ctx = {srv};
    conn.ctx = &ctx;
    if (refused_by_civetweb) {
        conn.ri.num_headers = 0; /* civetweb stops before the headers */
        FUZZ_CHECK(on_http_error(&conn, 400, "fuzz") == 0);
        client_id = NULL;
    } else {
        on_request(&conn, srv);
    }
    check_answer(&conn, client_id);

    cm_http_stop(srv);
    free(conn.uri);
    cm_buf_dispose(&conn.out);
    free(text);
    return 0;
}

FUZZ_ENTRY(fuzz_one)
