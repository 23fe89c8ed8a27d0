/*
 * The gateway, black-box: the real linktr-gateway binary runs as a child
 * process in front of upstream stand-ins that live in this test process
 * (cm_http servers on free loopback ports whose handlers echo what they
 * received). Nothing here needs the rest of the stack.
 *
 * The binary is found in $LINKTR_BIN_DIR when set, else in bin/, ../bin/ or
 * ../../bin/ from the directory of this test's own executable
 * (/proc/self/exe); in the main build that is <build>/tests/../bin.
 *
 * Three gateways run at once:
 *   main   — auth = [a closed port, the auth echo], referral = the referral
 *            echo, tight forgot-password bucket, one CORS origin;
 *   broken — auth = a closed port only, referral = a socket that accepts
 *            and never answers, UPSTREAM_TIMEOUT_MS short;
 *   patient — referral = the slow stand-in with a long timeout and one
 *            connection, trusting 127.0.0.0/8 as proxies; SIGTERM ends it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <civetweb.h>
#include <cmocka.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cm/http.h"
#include "cm/jwt.h"
#include "cm/util.h"
#include "http_client.h"
#include "testenv.h"

#define SLOW_MS 1500
#define BROKEN_TIMEOUT_MS 600
#define START_DEADLINE_MS 20000

/* ---- upstream stand-ins -------------------------------------------------------- */

typedef struct standin {
    const char *name;
    int delay_ms;
    atomic_int hits;
    atomic_int jwks_fetches;    /* the gateway's own JWKS fetches (no X-Real-IP) */
    atomic_int busy, most_busy; /* handlers running now, and the most at once */
    json_t *jwks;               /* borrowed; served on /.well-known/jwks.json */
    cm_http_t *srv;
    int port;
} standin_t;

static const char *const ECHOED[] = {"Content-Type",     "Authorization",
                                     "Accept",           "User-Agent",
                                     "X-Request-Id",     "X-Forwarded-For",
                                     "X-Real-IP",        "X-User-Id",
                                     "X-Forwarded-User", "Proxy-Authorization",
                                     "Cookie",           "Upgrade",
                                     "X-Forwarded-Host", NULL};

/* Answers the reply=NNN query with a canned upstream error; returns true when it did. */
static bool canned_reply(cm_req_t *rq)
{
    const char *want = NULL;
    if (cm_req_query_param(rq, "reply", 8, &want) != 0)
        return false;
    if (strcmp(want, "429") == 0) {
        cm_reply_header(rq, "Retry-After", "7");
        cm_reply_problem(rq, 429, "Upstream says slow down", NULL, NULL);
    } else if (strcmp(want, "401") == 0) {
        cm_reply_header(rq, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
        cm_reply_problem(rq, 401, "Upstream says no", NULL, NULL);
    } else if (strcmp(want, "204") == 0) {
        cm_reply_empty(rq, 204);
    } else if (strcmp(want, "503bare") == 0 || strcmp(want, "401bare") == 0) {
        /* An error without the headers API.md promises with it. */
        static const char body[] = "{\"title\":\"bare\"}";
        int status = want[0] == '5' ? 503 : 401;
        cm_reply_raw(rq, status, "application/problem+json", body, sizeof body - 1);
    } else if (strcmp(want, "cached") == 0) {
        cm_reply_header(rq, "Cache-Control", "public, max-age=60");
        cm_reply_json(rq, 200, json_pack("{s:[]}", "keys"));
    } else if (strcmp(want, "fixed") == 0) {
        cm_reply_raw(rq, 200, "application/json", "{\"fixed\":\"0123456789\"}", 22);
    } else if (strcmp(want, "big") == 0) {
        size_t n = 2 * 1024 * 1024; /* over the gateway's 1 MiB answer cap */
        char *big = cm_xmalloc(n);
        memset(big, ' ', n);
        big[0] = '{';
        big[n - 1] = '}';
        cm_reply_raw(rq, 200, "application/json", big, n);
        free(big);
    } else {
        return false;
    }
    return true;
}

static void on_echo(cm_req_t *rq, void *ctx)
{
    standin_t *s = ctx;
    bool own_fetch =
        strcmp(cm_req_path(rq), "/.well-known/jwks.json") == 0 && !cm_req_header(rq, "X-Real-IP");
    atomic_fetch_add(own_fetch ? &s->jwks_fetches : &s->hits, 1);
    int now = atomic_fetch_add(&s->busy, 1) + 1;
    for (int m = atomic_load(&s->most_busy); now > m;)
        if (atomic_compare_exchange_weak(&s->most_busy, &m, now))
            break;
    if (s->delay_ms)
        t_sleep_ms(s->delay_ms);
    atomic_fetch_sub(&s->busy, 1);
    cm_slice_t body = {"", 0};
    if (strcmp(cm_req_method(rq), "POST") == 0 && cm_req_body_or_reply(rq, &body) != 0)
        return;
    if (canned_reply(rq))
        return;
    json_t *h = json_object();
    for (int i = 0; ECHOED[i]; i++) {
        const char *v = cm_req_header(rq, ECHOED[i]);
        if (v)
            json_object_set_new(h, ECHOED[i], json_string(v));
    }
    const char *q = cm_req_query(rq);
    int peer_port = mg_get_request_info(cm_req_conn(rq))->remote_port;
    json_t *out = json_pack("{s:s, s:s, s:s, s:s, s:s%, s:o, s:i}", "upstream", s->name, "method",
                            cm_req_method(rq), "path", cm_req_path(rq), "query", q ? q : "", "body",
                            body.ptr, body.len, "headers", h, "peer_port", peer_port);
    /* The JWKS path also carries keys, like auth's real document. */
    if (s->jwks && strcmp(cm_req_path(rq), "/.well-known/jwks.json") == 0)
        json_object_set(out, "keys", json_object_get(s->jwks, "keys"));
    cm_reply_json(rq, 200, out);
}

/* The public API as the stand-ins serve it (both services accept both slash forms). */
static const struct {
    const char *method, *path, *upstream;
    bool token;
} API[] = {
    {"POST", "/api/register/", "auth", false},
    {"POST", "/api/login/", "auth", false},
    {"POST", "/api/token/refresh/", "auth", false},
    {"POST", "/api/logout/", "auth", false},
    {"POST", "/api/forgot-password/", "auth", false},
    {"POST", "/api/reset-password/", "auth", false},
    {"POST", "/api/verify-email/", "auth", false},
    {"POST", "/api/resend-verification/", "auth", true},
    {"GET", "/api/me/", "auth", true},
    {"GET", "/.well-known/jwks.json", "auth", false},
    {"GET", "/api/referrals/", "referral", true},
    {"GET", "/api/referral-stats/", "referral", true},
    {"GET", "/api/rewards/", "referral", true},
    {"GET", "/api/leaderboard/", "referral", true},
    {"PATCH", "/api/me/", "referral", true}, /* GET /api/me/ is auth's: routed by method */
    {"DELETE", "/api/me/", "auth", true},
    {"POST", "/api/email/confirm/", "auth", false},
    {"POST", "/api/email/cancel/", "auth", false},
};
#define NAPI (sizeof API / sizeof API[0])

static cm_route_t ECHO_ROUTES[NAPI];

/* A socket that listens on a free loopback port and never reads or answers. */
static int hung_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 64), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void standin_start(standin_t *s, const char *name, int delay_ms)
{
    s->name = name;
    s->delay_ms = delay_ms;
    atomic_init(&s->hits, 0);
    atomic_init(&s->jwks_fetches, 0);
    atomic_init(&s->busy, 0);
    atomic_init(&s->most_busy, 0);
    for (size_t i = 0; i < NAPI; i++)
        ECHO_ROUTES[i] = (cm_route_t){API[i].method, API[i].path, on_echo, 0};
    for (int attempt = 0; attempt < 5 && !s->srv; attempt++) {
        s->port = t_free_port();
        cm_http_config_t hc = {.service = name,
                               .bind = "127.0.0.1",
                               .port = s->port,
                               .threads = 8,
                               .request_timeout_ms = 10000,
                               .routes = ECHO_ROUTES,
                               .nroutes = NAPI,
                               .ctx = s};
        int err = 0;
        s->srv = cm_http_start(&hc, &err);
    }
    assert_non_null(s->srv);
}

/* ---- keys and tokens ------------------------------------------------------------- */

static char *pem_of(EVP_PKEY *k, bool private_key)
{
    BIO *b = BIO_new(BIO_s_mem());
    int ok = private_key ? PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL)
                         : PEM_write_bio_PUBKEY(b, k);
    assert_int_equal(ok, 1);
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    char *out = cm_xstrndup(data, (size_t)n);
    BIO_free(b);
    return out;
}

/* A signer for a fresh P-256 key under kid; *pub_pem receives the public key. */
static cm_jwt_signer_t *new_signer(const char *kid, char **pub_pem)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    char *priv = pem_of(k, true);
    *pub_pem = pem_of(k, false);
    int err = 0;
    cm_jwt_signer_t *s = cm_jwt_signer_new(priv, strlen(priv), kid, "linktr", "linktr", 900, &err);
    assert_non_null(s);
    free(priv);
    EVP_PKEY_free(k);
    return s;
}

static char *sign(cm_jwt_signer_t *s)
{
    char *tok = NULL;
    assert_int_equal(cm_jwt_sign(s, "00000000-0000-4000-8000-000000000001", "ada", &tok, NULL), 0);
    return tok;
}

/* ---- gateway children -------------------------------------------------------------- */

typedef struct gateway {
    pid_t pid;
    int port;
    char base[64];
    char admin[64]; /* the admin listener: /readyz, /metrics, /version */
} gateway_t;

typedef struct world {
    char dir[64];
    standin_t auth, auth2, referral, slow; /* auth2: a second auth replica */
    int closed_port;
    int hung_fd, hung_port; /* listens (the kernel accepts) but never answers */
    cm_jwt_signer_t *signer, *forger, *stranger, *rotated;
    char *token, *forged, *unknown_kid, *rotated_token;
    json_t *jwks; /* what the auth stand-ins publish: k1 and k2 (not in JWT_PUBLIC_KEYS) */
    gateway_t main, broken, patient;
} world_t;

static char *gateway_binary(void)
{
    const char *dir = getenv("LINKTR_BIN_DIR");
    if (dir && *dir)
        return cm_xasprintf("%s/linktr-gateway", dir);
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    const char *tries[] = {"bin", "../bin", "../../bin"};
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        char *p = cm_xasprintf("%s/%s/linktr-gateway", self, tries[i]);
        if (access(p, X_OK) == 0)
            return p;
        free(p);
    }
    fail_msg("linktr-gateway not found next to %s; set LINKTR_BIN_DIR", self);
    return NULL;
}

static void exec_gateway(const char *bin, const char *log, const char *const *env)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
    for (size_t i = 0; env[i]; i += 2)
        setenv(env[i], env[i + 1], 1);
    if (!freopen(log, "a", stdout) || !freopen(log, "a", stderr))
        _exit(126);
    execl(bin, bin, (char *)NULL);
    _exit(127);
}

static bool gateway_alive(const gateway_t *g)
{
    int st = 0;
    return g->pid > 0 && waitpid(g->pid, &st, WNOHANG) == 0;
}

static void gateway_start(world_t *w, gateway_t *g, const char *name, const char *const *env)
{
    char *bin = gateway_binary();
    char *log = cm_xasprintf("%s/%s.log", w->dir, name);
    g->port = t_free_port();
    char port[16], admin[16];
    snprintf(port, sizeof port, "%d", g->port);
    snprintf(g->base, sizeof g->base, "http://127.0.0.1:%d", g->port);
    int admin_port = t_free_port();
    snprintf(admin, sizeof admin, "%d", admin_port);
    snprintf(g->admin, sizeof g->admin, "http://127.0.0.1:%d", admin_port);
    const char *all[64] = {"PORT",      port,   "ADMIN_PORT",   admin,
                           "LOG_LEVEL", "warn", "HTTP_THREADS", "8"};
    size_t n = 8;
    for (size_t i = 0; env[i] && n < 62; i++)
        all[n++] = env[i];
    g->pid = fork();
    assert_true(g->pid >= 0);
    if (g->pid == 0)
        exec_gateway(bin, log, all);
    char *url = cm_xasprintf("%s/healthz", g->base);
    int64_t deadline = cm_now_mono_ms() + START_DEADLINE_MS;
    long status = 0;
    while (status != 200 && gateway_alive(g) && cm_now_mono_ms() < deadline) {
        t_resp_t r;
        if (t_get(url, NULL, &r) == 0)
            status = r.status;
        t_resp_dispose(&r);
        if (status != 200)
            t_sleep_ms(50);
    }
    if (status != 200)
        fail_msg("gateway %s did not start; see %s", name, log);
    free(url);
    free(log);
    free(bin);
}

static void gateway_stop(gateway_t *g)
{
    if (g->pid <= 0)
        return;
    kill(g->pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 100 && waitpid(g->pid, &st, WNOHANG) == 0; i++)
        t_sleep_ms(50);
    if (waitpid(g->pid, &st, WNOHANG) == 0) {
        kill(g->pid, SIGKILL);
        waitpid(g->pid, &st, 0);
    }
    g->pid = 0;
}

static char *write_file(const char *dir, const char *name, const char *text)
{
    char *path = cm_xasprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void make_keys(world_t *w, char **keys_spec)
{
    char *pub = NULL, *forger_pub = NULL, *stranger_pub = NULL;
    w->signer = new_signer("k1", &pub);
    w->forger = new_signer("k1", &forger_pub);     /* same kid, another key */
    w->stranger = new_signer("k9", &stranger_pub); /* a kid the gateway does not know */
    char *path = write_file(w->dir, "k1.pem", pub);
    *keys_spec = cm_xasprintf("k1=%s", path);
    char *rotated_pub = NULL;
    w->rotated = new_signer("k2", &rotated_pub);
    free(rotated_pub);
    w->jwks = cm_jwt_signer_jwks(w->signer);
    json_t *k2 = cm_jwt_signer_jwks(w->rotated);
    json_array_extend(json_object_get(w->jwks, "keys"), json_object_get(k2, "keys"));
    json_decref(k2);
    w->rotated_token = sign(w->rotated);
    w->token = sign(w->signer);
    w->forged = sign(w->forger);
    w->unknown_kid = sign(w->stranger);
    free(path);
    free(pub);
    free(forger_pub);
    free(stranger_pub);
}

static void start_gateways(world_t *w, const char *keys)
{
    char *auth = cm_xasprintf("http://127.0.0.1:%d,http://127.0.0.1:%d,http://127.0.0.1:%d",
                              w->closed_port, w->auth.port, w->auth2.port);
    char *ref = cm_xasprintf("http://127.0.0.1:%d/", w->referral.port);
    char *closed = cm_xasprintf("http://127.0.0.1:%d", w->closed_port);
    char *slow = cm_xasprintf("http://127.0.0.1:%d", w->slow.port);
    char *hung = cm_xasprintf("http://127.0.0.1:%d", w->hung_port);
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%d", BROKEN_TIMEOUT_MS);
    /* clang-format off */
    const char *main_env[] = {
        "AUTH_URL", auth, "REFERRAL_URL", ref, "JWT_PUBLIC_KEYS", keys,
        "RATE_LIMITS", "forgot-password=3/3", "CORS_ORIGINS", "https://app.example.com",
        "REQUEST_TIMEOUT_MS", "1500", NULL};
    const char *broken_env[] = {
        "AUTH_URL", closed, "REFERRAL_URL", hung, "JWT_PUBLIC_KEYS", keys,
        "UPSTREAM_TIMEOUT_MS", timeout, "RATE_LIMITS", "off", NULL};
    const char *patient_env[] = {
        "AUTH_URL", closed, "REFERRAL_URL", slow, "JWT_PUBLIC_KEYS", keys,
        "UPSTREAM_TIMEOUT_MS", "8000", "UPSTREAM_MAX_CONNECTIONS", "1",
        "TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.0/8", NULL};
    /* clang-format on */
    gateway_start(w, &w->main, "main", main_env);
    gateway_start(w, &w->broken, "broken", broken_env);
    gateway_start(w, &w->patient, "patient", patient_env);
    free(auth);
    free(ref);
    free(closed);
    free(slow);
    free(hung);
}

static int setup(void **state)
{
    world_t *w = cm_xcalloc(1, sizeof *w);
    snprintf(w->dir, sizeof w->dir, "/tmp/linktr-gw-test.XXXXXX");
    assert_non_null(mkdtemp(w->dir));
    standin_start(&w->auth, "auth", 0);
    standin_start(&w->auth2, "auth", 0);
    standin_start(&w->referral, "referral", 0);
    standin_start(&w->slow, "slow", SLOW_MS);
    w->closed_port = t_free_port();
    w->hung_fd = hung_listener(&w->hung_port);
    char *keys = NULL;
    make_keys(w, &keys);
    w->auth.jwks = w->auth2.jwks = w->jwks;
    start_gateways(w, keys);
    free(keys);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world_t *w = *state;
    gateway_stop(&w->main);
    gateway_stop(&w->broken);
    gateway_stop(&w->patient);
    cm_http_stop(w->auth.srv);
    cm_http_stop(w->auth2.srv);
    cm_http_stop(w->referral.srv);
    cm_http_stop(w->slow.srv);
    close(w->hung_fd);
    cm_jwt_signer_free(w->signer);
    cm_jwt_signer_free(w->forger);
    cm_jwt_signer_free(w->stranger);
    cm_jwt_signer_free(w->rotated);
    free(w->rotated_token);
    json_decref(w->jwks);
    free(w->token);
    free(w->forged);
    free(w->unknown_kid);
    char *cmd = cm_xasprintf("rm -rf '%s'", w->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", w->dir);
    free(cmd);
    free(w);
    return 0;
}

/* Requests that reached any stand-in. */
static int total_hits(world_t *w)
{
    return atomic_load(&w->auth.hits) + atomic_load(&w->auth2.hits) +
           atomic_load(&w->referral.hits) + atomic_load(&w->slow.hits);
}

/* ---- helpers ----------------------------------------------------------------------- */

static int call(const gateway_t *g, const char *method, const char *path, const char *ct,
                const char *body, size_t len, const char *const *headers, t_resp_t *r)
{
    char *url = cm_xasprintf("%s%s", g->base, path);
    int rc = t_http(method, url, ct, body, len, headers, r);
    free(url);
    return rc;
}

/* A GET on the gateway's admin listener. */
static int admin_get(const gateway_t *g, const char *path, t_resp_t *r)
{
    char *url = cm_xasprintf("%s%s", g->admin, path);
    int rc = t_get(url, NULL, r);
    free(url);
    return rc;
}

/* Every answer, whatever its status, carries the security headers and a request id. */
static void assert_edge_headers(const t_resp_t *r)
{
    t_assert_header(r, "X-Content-Type-Options", "nosniff");
    t_assert_header(r, "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
    t_assert_header(r, "Referrer-Policy", "no-referrer");
    char *rid = t_resp_header(r, "X-Request-Id");
    assert_non_null(rid);
    free(rid);
}

static void assert_problem(const t_resp_t *r, long status)
{
    if (r->status != status)
        fail_msg("want %ld, got %ld: %s", status, r->status, r->body ? r->body : "");
    assert_edge_headers(r);
    assert_non_null(r->content_type);
    assert_string_equal(r->content_type, "application/problem+json");
    assert_non_null(r->json);
    assert_int_equal(json_integer_value(json_object_get(r->json, "status")), status);
    assert_non_null(json_string_value(json_object_get(r->json, "title")));
    char *rid = t_resp_header(r, "X-Request-Id");
    assert_string_equal(json_string_value(json_object_get(r->json, "request_id")), rid);
    free(rid);
}

static const char *echoed(const t_resp_t *r, const char *name)
{
    return json_string_value(json_object_get(json_object_get(r->json, "headers"), name));
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

/*
 * Sends raw bytes to g (for what curl will not send: HEAD pipelined with
 * another request, methods without a body rule) and returns everything
 * answered until the gateway closed the connection, as a new string.
 */
static char *raw_call(const gateway_t *g, const char *req)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)g->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    for (size_t off = 0, len = strlen(req); off < len;) {
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    cm_buf_t b;
    cm_buf_init(&b);
    cm_buf_puts(&b, "");
    int64_t deadline = cm_now_mono_ms() + 5000;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int left = (int)(deadline - cm_now_mono_ms());
        char chunk[4096];
        ssize_t n = left > 0 && poll(&p, 1, left) > 0 ? recv(fd, chunk, sizeof chunk, 0) : 0;
        if (n <= 0)
            break;
        cm_buf_append(&b, chunk, (size_t)n);
    }
    close(fd);
    return cm_buf_steal(&b);
}

/* The value of header name in the first head of a raw answer (a new string), or NULL. */
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

static void assert_raw(const char *answer, int status, const char *name, const char *want)
{
    char line[32];
    snprintf(line, sizeof line, "HTTP/1.1 %d ", status);
    if (strncmp(answer, line, strlen(line)) != 0)
        fail_msg("want %s, got: %.300s", line, answer);
    if (!name)
        return;
    char *v = raw_header(answer, name);
    if (!v || strcmp(v, want) != 0)
        fail_msg("%s: want \"%s\", got \"%s\"", name, want, v ? v : "(none)");
    free(v);
}

/* The bytes after the first head: what followed the answer on the connection. */
static const char *after_head(const char *answer)
{
    const char *end = strstr(answer, "\r\n\r\n");
    assert_non_null(end);
    return end + 4;
}

/* ---- tests --------------------------------------------------------------------------- */

static void every_public_path_reaches_its_service_with_method_path_query_and_body(void **state)
{
    world_t *w = *state;
    char auth[4200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", w->token);
    const char *hdrs[] = {auth, NULL};
    for (size_t i = 0; i < NAPI; i++) {
        /* Half the paths without their trailing slash: forwarded as the client sent them. */
        size_t len = strlen(API[i].path);
        bool strip = i % 2 == 1 && API[i].path[len - 1] == '/';
        char *path = cm_xstrndup(API[i].path, strip ? len - 1 : len);
        bool post = strcmp(API[i].method, "POST") == 0;
        char *body = cm_xasprintf("{\"n\": %zu, \"s\": \"caf\\u00e9\"}", i);
        char *target = post ? cm_xstrdup(path) : cm_xasprintf("%s?limit=5&cursor=a%%20b", path);
        t_resp_t r;
        assert_int_equal(call(&w->main, API[i].method, target, post ? "application/json" : NULL,
                              post ? body : NULL, post ? strlen(body) : 0,
                              API[i].token ? hdrs : NULL, &r),
                         0);
        if (r.status != 200)
            fail_msg("%s %s: %ld %s", API[i].method, target, r.status, r.body);
        assert_edge_headers(&r);
        assert_string_equal(json_string_value(json_object_get(r.json, "upstream")),
                            API[i].upstream);
        assert_string_equal(json_string_value(json_object_get(r.json, "method")), API[i].method);
        assert_string_equal(json_string_value(json_object_get(r.json, "path")), path);
        assert_string_equal(json_string_value(json_object_get(r.json, "query")),
                            post ? "" : "limit=5&cursor=a%20b");
        assert_string_equal(json_string_value(json_object_get(r.json, "body")), post ? body : "");
        /* Auth answers are never cached, but for the public keys; referral answers carry
         * no such header from us. */
        if (strcmp(API[i].path, "/.well-known/jwks.json") == 0)
            t_assert_header(&r, "Cache-Control", "public, max-age=300");
        else if (strcmp(API[i].upstream, "auth") == 0)
            t_assert_header(&r, "Cache-Control", "no-store");
        else
            t_assert_no_header(&r, "Cache-Control");
        t_resp_dispose(&r);
        free(target);
        free(body);
        free(path);
    }
}

static void request_id_is_passed_on_or_created(void **state)
{
    world_t *w = *state;
    const char *hdrs[] = {"X-Request-Id: test-rid.123_abc", NULL};
    t_resp_t r;
    assert_int_equal(call(&w->main, "GET", "/.well-known/jwks.json", NULL, NULL, 0, hdrs, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(echoed(&r, "X-Request-Id"), "test-rid.123_abc");
    t_assert_header(&r, "X-Request-Id", "test-rid.123_abc");
    t_resp_dispose(&r);

    const char *odd[] = {"X-Request-Id: bad id with spaces", NULL};
    assert_int_equal(call(&w->main, "GET", "/.well-known/jwks.json", NULL, NULL, 0, odd, &r), 0);
    const char *made = echoed(&r, "X-Request-Id");
    assert_non_null(made);
    assert_true(cm_is_uuid(made, strlen(made)));
    char *back = t_resp_header(&r, "X-Request-Id");
    assert_string_equal(back, made);
    free(back);
    t_resp_dispose(&r);
}

static void identity_and_hop_by_hop_headers_are_stripped_and_forwarded_for_set(void **state)
{
    world_t *w = *state;
    const char *hdrs[] = {"X-User-Id: 00000000-0000-0000-0000-000000000001",
                          "X-Forwarded-User: admin",
                          "X-Real-IP: 6.6.6.6",
                          "X-Forwarded-For: 6.6.6.6",
                          "X-Forwarded-Host: evil.example",
                          "Proxy-Authorization: Basic eDp5",
                          "Cookie: session=1",
                          "Accept: application/json",
                          "User-Agent: gateway-test",
                          NULL};
    t_resp_t r;
    assert_int_equal(call(&w->main, "POST", "/api/login/", "application/json", "{}", 2, hdrs, &r),
                     0);
    assert_int_equal(r.status, 200);
    const char *gone[] = {"X-User-Id", "X-Forwarded-User", "X-Forwarded-Host",
                          "Proxy-Authorization", "Cookie"};
    for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++)
        if (echoed(&r, gone[i]))
            fail_msg("%s reached the upstream", gone[i]);
    /* The peer is not a trusted proxy: its X-Forwarded-For is not believed. */
    assert_string_equal(echoed(&r, "X-Forwarded-For"), "127.0.0.1");
    assert_string_equal(echoed(&r, "X-Real-IP"), "127.0.0.1");
    assert_string_equal(echoed(&r, "Accept"), "application/json");
    assert_string_equal(echoed(&r, "User-Agent"), "gateway-test");
    assert_string_equal(echoed(&r, "Content-Type"), "application/json");
    t_resp_dispose(&r);
}

static void routes_needing_a_token_are_refused_at_the_edge(void **state)
{
    world_t *w = *state;
    int before = total_hits(w);
    char forged[4200], stranger[4200];
    snprintf(forged, sizeof forged, "Authorization: Bearer %s", w->forged);
    snprintf(stranger, sizeof stranger, "Authorization: Bearer %s", w->unknown_kid);
    const char *none[] = {NULL};
    const char *garbage[] = {"Authorization: Bearer not.a.jwt", NULL};
    const char *basic[] = {"Authorization: Basic YWRhOnB3", NULL};
    const char *forged_h[] = {forged, NULL};
    const char *stranger_h[] = {stranger, NULL};
    const char *const *cases[] = {none, garbage, basic, forged_h, stranger_h};
    const char *paths[] = {"/api/me/", "/api/referrals/", "/api/rewards", "/api/referral-stats/"};
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            t_resp_t r;
            assert_int_equal(call(&w->main, "GET", paths[p], NULL, NULL, 0, cases[c], &r), 0);
            assert_problem(&r, 401);
            t_assert_header(&r, "WWW-Authenticate", "Bearer");
            t_resp_dispose(&r);
        }
    }
    t_resp_t r;
    assert_int_equal(call(&w->main, "POST", "/api/resend-verification/", "application/json", "{}",
                          2, garbage, &r),
                     0);
    assert_problem(&r, 401);
    t_resp_dispose(&r);
    assert_int_equal(total_hits(w), before);
}

static int jwks_fetches(world_t *w)
{
    return atomic_load(&w->auth.jwks_fetches) + atomic_load(&w->auth2.jwks_fetches);
}

static void a_key_auth_rotated_to_is_fetched_from_its_jwks_once_per_interval(void **state)
{
    world_t *w = *state;
    /* The tokens refused above (unknown kid k9) made the gateway fetch auth's JWKS once,
     * which brought k2; a k2 token now passes without the gateway restarting. */
    char rotated[4200], stranger[4200];
    snprintf(rotated, sizeof rotated, "Authorization: Bearer %s", w->rotated_token);
    snprintf(stranger, sizeof stranger, "Authorization: Bearer %s", w->unknown_kid);
    const char *ok[] = {rotated, NULL};
    const char *bad[] = {stranger, NULL};
    t_resp_t r;
    assert_int_equal(call(&w->main, "GET", "/api/me/", NULL, NULL, 0, ok, &r), 0);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(call(&w->main, "GET", "/api/rewards/", NULL, NULL, 0, bad, &r), 0);
        assert_problem(&r, 401);
        t_resp_dispose(&r);
    }
    assert_int_equal(jwks_fetches(w), 1);
}

static void bad_bodies_get_problem_answers_and_never_reach_the_service(void **state)
{
    world_t *w = *state;
    int before = total_hits(w);
    t_resp_t r;
    assert_int_equal(call(&w->main, "POST", "/api/login/", "text/plain", "hello", 5, NULL, &r), 0);
    assert_problem(&r, 415);
    t_resp_dispose(&r);
    assert_int_equal(call(&w->main, "POST", "/api/login/", "application/x-www-form-urlencoded",
                          "a=b", 3, NULL, &r),
                     0);
    assert_problem(&r, 415);
    t_resp_dispose(&r);

    size_t big = 100 * 1024;
    char *body = cm_xmalloc(big);
    memset(body, ' ', big);
    body[0] = '{';
    body[big - 1] = '}';
    assert_int_equal(
        call(&w->main, "POST", "/api/register/", "application/json", body, big, NULL, &r), 0);
    assert_problem(&r, 413);
    t_resp_dispose(&r);
    free(body);

    const char *bad[] = {"{\"username\": ", "[1, 2]", "\"text\"", "{\"a\": 1, \"a\": 2}",
                         "{\"a\": 1} trailing"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(call(&w->main, "POST", "/api/register/", "application/json", bad[i],
                              strlen(bad[i]), NULL, &r),
                         0);
        assert_problem(&r, 400);
        t_resp_dispose(&r);
    }
    assert_int_equal(total_hits(w), before);
}

static void unknown_paths_are_404_and_wrong_methods_405_with_allow(void **state)
{
    world_t *w = *state;
    int before = total_hits(w);
    const char *missing[] = {"/api/users/", "/api/", "/admin", "/api/login/x", "/internal/users"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        t_resp_t r;
        assert_int_equal(call(&w->main, "GET", missing[i], NULL, NULL, 0, NULL, &r), 0);
        assert_problem(&r, 404);
        t_resp_dispose(&r);
    }
    t_resp_t r;
    assert_int_equal(call(&w->main, "GET", "/api/login/", NULL, NULL, 0, NULL, &r), 0);
    assert_problem(&r, 405);
    char *allow = t_resp_header(&r, "Allow");
    assert_non_null(allow);
    assert_non_null(strstr(allow, "POST"));
    free(allow);
    t_resp_dispose(&r);
    assert_int_equal(call(&w->main, "PUT", "/api/me", NULL, NULL, 0, NULL, &r), 0);
    assert_problem(&r, 405);
    t_resp_dispose(&r);
    assert_int_equal(total_hits(w), before);
}

static void upstream_statuses_and_their_headers_pass_through(void **state)
{
    world_t *w = *state;
    t_resp_t r;
    assert_int_equal(
        call(&w->main, "POST", "/api/login/?reply=429", "application/json", "{}", 2, NULL, &r), 0);
    assert_problem(&r, 429);
    t_assert_header(&r, "Retry-After", "7");
    assert_string_equal(json_string_value(json_object_get(r.json, "title")),
                        "Upstream says slow down");
    t_resp_dispose(&r);
    assert_int_equal(
        call(&w->main, "POST", "/api/logout/?reply=401", "application/json", "{}", 2, NULL, &r), 0);
    assert_problem(&r, 401);
    t_assert_header(&r, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
    t_resp_dispose(&r);
    assert_int_equal(
        call(&w->main, "POST", "/api/logout/?reply=big", "application/json", "{}", 2, NULL, &r), 0);
    assert_problem(&r, 502);
    t_resp_dispose(&r);
    assert_int_equal(
        call(&w->main, "POST", "/api/logout/?reply=204", "application/json", "{}", 2, NULL, &r), 0);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.len, 0);
    assert_edge_headers(&r);
    t_resp_dispose(&r);
}

static void head_is_answered_like_get_without_a_body(void **state)
{
    world_t *w = *state;
    char auth[4200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", w->token);
    const char *hdrs[] = {auth, NULL};
    t_resp_t g;
    assert_int_equal(call(&w->main, "GET", "/api/me/?reply=fixed", NULL, NULL, 0, hdrs, &g), 0);
    assert_int_equal(g.status, 200);
    char len[24];
    snprintf(len, sizeof len, "%zu", g.len);
    t_resp_dispose(&g);
    /* HEAD, then GET on the same connection: a body after the HEAD answer would be read
     * as the start of the next answer. */
    char *req = cm_xasprintf("HEAD /api/me/?reply=fixed HTTP/1.1\r\nHost: t\r\n%s\r\n\r\n"
                             "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                             auth);
    char *all = raw_call(&w->main, req);
    assert_raw(all, 200, "Content-Length", len);
    assert_raw(all, 200, "Content-Type", "application/json");
    assert_raw(all, 200, "Cache-Control", "no-store");
    assert_raw(after_head(all), 200, "Content-Type", "application/json");
    free(all);
    free(req);
    const struct {
        const char *line;
        int status;
        const char *name, *value;
    } cases[] = {
        {"HEAD /api/me/", 401, "WWW-Authenticate", "Bearer"},
        {"HEAD /.well-known/jwks.json", 200, "Cache-Control", "public, max-age=300"},
        {"HEAD /api/login/", 405, "Allow", "POST, OPTIONS"},
        {"HEAD /api/users/", 404, "Content-Type", "application/problem+json"},
        {"HEAD /healthz", 200, "Content-Type", "application/json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        req = cm_xasprintf("%s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", cases[i].line);
        all = raw_call(&w->main, req);
        assert_raw(all, cases[i].status, cases[i].name, cases[i].value);
        char *cl = raw_header(all, "Content-Length");
        assert_non_null(cl);
        assert_true(strcmp(cl, "0") != 0); /* the length GET would have had */
        free(cl);
        if (after_head(all)[0])
            fail_msg("%s: a body came after the head: %s", cases[i].line, after_head(all));
        free(all);
        free(req);
    }
}

static void unknown_methods_are_405_with_allow_or_404_and_never_forwarded(void **state)
{
    world_t *w = *state;
    int before = total_hits(w);
    const struct {
        const char *line;
        int status;
        const char *allow;
    } cases[] = {
        {"TRACE /api/me/ HTTP/1.1", 405, "GET, HEAD, DELETE, PATCH, OPTIONS"},
        {"TRACE /api/login HTTP/1.1", 405, "POST, OPTIONS"},
        {"BREW /.well-known/jwks.json HTTP/1.1", 405, "GET, HEAD, OPTIONS"},
        {"CONNECT /api/rewards/ HTTP/1.1", 405, "GET, HEAD, OPTIONS"},
        {"PROPFIND /api/referrals/ HTTP/1.1", 405, "GET, HEAD, OPTIONS"},
        {"PUT /api/me HTTP/1.1", 405, "GET, HEAD, DELETE, PATCH, OPTIONS"},
        {"TRACE /admin HTTP/1.1", 404, NULL},
        {"TRACE /api/ HTTP/1.1", 404, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *req = cm_xasprintf("%s\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                                 cases[i].line);
        char *all = raw_call(&w->main, req);
        assert_raw(all, cases[i].status, "Content-Type", "application/problem+json");
        assert_raw(all, cases[i].status, "X-Content-Type-Options", "nosniff");
        if (cases[i].allow)
            assert_raw(all, cases[i].status, "Allow", cases[i].allow);
        json_t *p = json_loads(after_head(all), 0, NULL);
        if (!p)
            fail_msg("%s: not a problem: %s", cases[i].line, all);
        assert_int_equal(json_integer_value(json_object_get(p, "status")), cases[i].status);
        json_decref(p);
        free(all);
        free(req);
    }
    assert_int_equal(total_hits(w), before);
}

static void the_public_keys_may_be_cached_and_errors_may_not(void **state)
{
    world_t *w = *state;
    t_resp_t r;
    assert_int_equal(call(&w->main, "GET", "/.well-known/jwks.json", NULL, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    t_assert_header(&r, "Cache-Control", "public, max-age=300");
    t_resp_dispose(&r);
    /* auth's own Cache-Control for its keys is kept. */
    assert_int_equal(
        call(&w->main, "GET", "/.well-known/jwks.json?reply=cached", NULL, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    t_assert_header(&r, "Cache-Control", "public, max-age=60");
    t_resp_dispose(&r);
    /* auth is down behind the broken gateway: the 503 must not be cached. */
    assert_int_equal(call(&w->broken, "GET", "/.well-known/jwks.json", NULL, NULL, 0, NULL, &r), 0);
    assert_problem(&r, 503);
    t_assert_header(&r, "Cache-Control", "no-store");
    t_resp_dispose(&r);
    /* Other auth answers stay no-store, whatever auth says. */
    assert_int_equal(
        call(&w->main, "POST", "/api/login/?reply=cached", "application/json", "{}", 2, NULL, &r),
        0);
    assert_int_equal(r.status, 200);
    t_assert_header(&r, "Cache-Control", "no-store");
    t_resp_dispose(&r);
}

static void upstream_errors_get_the_headers_api_md_promises(void **state)
{
    world_t *w = *state;
    char auth[4200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", w->token);
    const char *hdrs[] = {auth, NULL};
    t_resp_t r;
    assert_int_equal(
        call(&w->main, "POST", "/api/login/?reply=503bare", "application/json", "{}", 2, NULL, &r),
        0);
    assert_int_equal(r.status, 503);
    t_assert_header(&r, "Retry-After", "1");
    t_assert_header(&r, "Cache-Control", "no-store");
    t_resp_dispose(&r);
    assert_int_equal(
        call(&w->main, "GET", "/api/referrals/?reply=401bare", NULL, NULL, 0, hdrs, &r), 0);
    assert_int_equal(r.status, 401);
    t_assert_header(&r, "WWW-Authenticate", "Bearer");
    t_assert_header(&r, "Cache-Control", "no-store");
    t_resp_dispose(&r);
}

static void connections_to_a_service_are_kept_alive_and_reused(void **state)
{
    world_t *w = *state;
    char auth[4200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", w->token);
    const char *hdrs[] = {auth, NULL};
    json_int_t ports[20] = {0};
    size_t distinct = 0;
    for (int i = 0; i < 20; i++) {
        t_resp_t r;
        assert_int_equal(call(&w->main, "GET", "/api/referral-stats/", NULL, NULL, 0, hdrs, &r), 0);
        assert_int_equal(r.status, 200);
        json_int_t port = json_integer_value(json_object_get(r.json, "peer_port"));
        assert_true(port > 0);
        bool seen = false;
        for (size_t k = 0; k < distinct; k++)
            seen = seen || ports[k] == port;
        if (!seen)
            ports[distinct++] = port;
        t_resp_dispose(&r);
    }
    /* One connection per pooled handle: sequential requests share one or two. */
    if (distinct > 2)
        fail_msg("20 sequential requests used %zu upstream connections", distinct);
}

static void a_replica_that_is_down_is_skipped(void **state)
{
    world_t *w = *state;
    for (int i = 0; i < 8; i++) {
        t_resp_t r;
        assert_int_equal(call(&w->main, "GET", "/.well-known/jwks.json", NULL, NULL, 0, NULL, &r),
                         0);
        assert_int_equal(r.status, 200);
        assert_string_equal(json_string_value(json_object_get(r.json, "upstream")), "auth");
        t_resp_dispose(&r);
    }
}

static void requests_keep_succeeding_when_a_replica_dies(void **state)
{
    world_t *w = *state;
    /* Warm connections to both live replicas first, then kill one. */
    for (int i = 0; i < 6; i++) {
        t_resp_t r;
        assert_int_equal(call(&w->main, "GET", "/.well-known/jwks.json", NULL, NULL, 0, NULL, &r),
                         0);
        assert_int_equal(r.status, 200);
        t_resp_dispose(&r);
    }
    assert_true(atomic_load(&w->auth2.hits) > 0);
    cm_http_stop(w->auth2.srv);
    w->auth2.srv = NULL;
    int before = atomic_load(&w->auth.hits);
    for (int i = 0; i < 10; i++) {
        t_resp_t r;
        assert_int_equal(call(&w->main, "GET", "/.well-known/jwks.json", NULL, NULL, 0, NULL, &r),
                         0);
        if (r.status != 200)
            fail_msg("request %d after the replica died: %ld %s", i, r.status, r.body);
        t_resp_dispose(&r);
    }
    assert_int_equal(atomic_load(&w->auth.hits), before + 10);
}

static void a_down_service_gives_503_quickly(void **state)
{
    world_t *w = *state;
    int64_t t0 = cm_now_mono_ms();
    t_resp_t r;
    assert_int_equal(call(&w->broken, "POST", "/api/login/", "application/json", "{}", 2, NULL, &r),
                     0);
    assert_problem(&r, 503);
    char *ra = t_resp_header(&r, "Retry-After");
    assert_non_null(ra);
    free(ra);
    assert_true(cm_now_mono_ms() - t0 < 1500);
    t_resp_dispose(&r);
}

static void a_hung_service_gives_504_within_the_timeout(void **state)
{
    world_t *w = *state;
    char auth[4200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", w->token);
    const char *hdrs[] = {auth, NULL};
    int64_t t0 = cm_now_mono_ms();
    t_resp_t r;
    assert_int_equal(call(&w->broken, "GET", "/api/referrals/", NULL, NULL, 0, hdrs, &r), 0);
    int64_t took = cm_now_mono_ms() - t0;
    assert_problem(&r, 504);
    assert_true(took >= BROKEN_TIMEOUT_MS - 50);
    assert_true(took < BROKEN_TIMEOUT_MS + 800);
    t_resp_dispose(&r);
    assert_int_equal(admin_get(&w->broken, "/metrics", &r), 0);
    assert_non_null(strstr(r.body, "linktr_gateway_upstream_errors_total"));
    assert_non_null(strstr(r.body, "timeout"));
    assert_non_null(strstr(r.body, "unavailable"));
    t_resp_dispose(&r);
}

static void rate_limits_answer_429_with_retry_after_and_recover(void **state)
{
    world_t *w = *state;
    /* forgot-password=3/3: three at once, then one token a second. Forged X-Forwarded-For
     * values from an untrusted peer must not buy fresh buckets. */
    char xff[64];
    const char *hdrs[] = {xff, NULL};
    const char *body = "{\"email\": \"a@example.com\"}";
    t_resp_t r;
    t_sleep_ms(3100); /* the routing test used this bucket: let it fill up again */
    for (int i = 0; i < 3; i++) {
        snprintf(xff, sizeof xff, "X-Forwarded-For: 203.0.113.%d", i + 1);
        assert_int_equal(call(&w->main, "POST", "/api/forgot-password/", "application/json", body,
                              strlen(body), hdrs, &r),
                         0);
        assert_int_equal(r.status, 200);
        t_resp_dispose(&r);
    }
    snprintf(xff, sizeof xff, "X-Forwarded-For: 203.0.113.99");
    assert_int_equal(call(&w->main, "POST", "/api/forgot-password/", "application/json", body,
                          strlen(body), hdrs, &r),
                     0);
    assert_problem(&r, 429);
    char *ra = t_resp_header(&r, "Retry-After");
    assert_non_null(ra);
    long long secs = 0;
    assert_int_equal(cm_strtonum(ra, 1, 3, &secs), 0);
    free(ra);
    t_resp_dispose(&r);
    /* Other classes are not affected. */
    assert_int_equal(call(&w->main, "POST", "/api/login/", "application/json", "{}", 2, NULL, &r),
                     0);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
    t_sleep_ms((int)secs * 1000 + 100);
    assert_int_equal(call(&w->main, "POST", "/api/forgot-password/", "application/json", body,
                          strlen(body), NULL, &r),
                     0);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
}

/* Readiness is the gateway's own: an unreachable upstream must not take every
 * gateway pod out of the load balancer (the routes of the other upstreams
 * still work); it shows per request instead. */
static void readiness_does_not_follow_the_upstreams(void **state)
{
    world_t *w = *state;
    t_resp_t r;
    assert_int_equal(admin_get(&w->main, "/readyz", &r), 0);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
    assert_int_equal(admin_get(&w->broken, "/readyz", &r), 0);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
    /* ...while its requests to the dead upstream fail as such. */
    assert_int_equal(call(&w->broken, "POST", "/api/login/", "application/json", "{}", 2, NULL, &r),
                     0);
    assert_problem(&r, 503);
    t_resp_dispose(&r);
}

/* The public port keeps only /healthz of the built-ins; the admin port has no public route. */
static void readiness_metrics_and_version_are_only_on_the_admin_port(void **state)
{
    world_t *w = *state;
    const char *private_paths[] = {"/readyz", "/metrics", "/version", "/readyz/"};
    t_resp_t r;
    for (size_t i = 0; i < sizeof private_paths / sizeof private_paths[0]; i++) {
        assert_int_equal(call(&w->main, "GET", private_paths[i], NULL, NULL, 0, NULL, &r), 0);
        assert_problem(&r, 404);
        t_resp_dispose(&r);
    }
    assert_int_equal(call(&w->main, "GET", "/healthz", NULL, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
    assert_int_equal(admin_get(&w->main, "/version", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "service")), "gateway");
    t_resp_dispose(&r);
    assert_int_equal(admin_get(&w->main, "/metrics", &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "linktr_http_requests_in_flight"));
    assert_null(strstr(r.body, "\ngateway_"));
    t_resp_dispose(&r);
    assert_int_equal(admin_get(&w->main, "/api/login/", &r), 0);
    assert_int_equal(r.status, 404);
    t_resp_dispose(&r);
}

static void cors_headers_go_only_to_listed_origins(void **state)
{
    world_t *w = *state;
    const char *good[] = {"Origin: https://app.example.com", NULL};
    const char *evil[] = {"Origin: https://evil.example", NULL};
    t_resp_t r;
    assert_int_equal(call(&w->main, "GET", "/.well-known/jwks.json", NULL, NULL, 0, good, &r), 0);
    assert_int_equal(r.status, 200);
    t_assert_header(&r, "Access-Control-Allow-Origin", "https://app.example.com");
    t_assert_header(&r, "Vary", "Origin");
    t_resp_dispose(&r);
    /* Error answers too, or a browser could not read the problem. */
    assert_int_equal(call(&w->main, "GET", "/api/me/", NULL, NULL, 0, good, &r), 0);
    assert_problem(&r, 401);
    t_assert_header(&r, "Access-Control-Allow-Origin", "https://app.example.com");
    t_resp_dispose(&r);
    assert_int_equal(call(&w->main, "GET", "/.well-known/jwks.json", NULL, NULL, 0, evil, &r), 0);
    assert_int_equal(r.status, 200);
    t_assert_no_header(&r, "Access-Control-Allow-Origin");
    /* The answer still varies by Origin: a cache must not hand it to a listed origin. */
    t_assert_header(&r, "Vary", "Origin");
    t_resp_dispose(&r);
    assert_int_equal(call(&w->main, "GET", "/.well-known/jwks.json", NULL, NULL, 0, NULL, &r), 0);
    t_assert_header(&r, "Vary", "Origin");
    t_resp_dispose(&r);
}

static void cors_preflight_is_answered_only_for_listed_origins(void **state)
{
    world_t *w = *state;
    const char *pre[] = {"Origin: https://app.example.com", "Access-Control-Request-Method: POST",
                         NULL};
    t_resp_t r;
    assert_int_equal(call(&w->main, "OPTIONS", "/api/login/", NULL, NULL, 0, pre, &r), 0);
    /* civetweb answers preflights itself with "*" unless cm_http turns that off. */
    char *any = t_resp_header(&r, "Access-Control-Allow-Origin");
    assert_non_null(any);
    assert_string_not_equal(any, "*");
    free(any);
    assert_int_equal(r.status, 204);
    assert_edge_headers(&r);
    t_assert_header(&r, "Access-Control-Allow-Origin", "https://app.example.com");
    t_assert_header(&r, "Access-Control-Allow-Methods", "POST");
    t_resp_dispose(&r);
    const char *evil[] = {"Origin: https://evil.example", "Access-Control-Request-Method: POST",
                          NULL};
    assert_int_equal(call(&w->main, "OPTIONS", "/api/login/", NULL, NULL, 0, evil, &r), 0);
    assert_problem(&r, 403);
    t_assert_no_header(&r, "Access-Control-Allow-Origin");
    t_resp_dispose(&r);
}

static void the_gateways_keep_answering_after_all_of_it(void **state)
{
    world_t *w = *state;
    gateway_t *all[] = {&w->main, &w->broken, &w->patient};
    for (size_t i = 0; i < 3; i++) {
        assert_true(gateway_alive(all[i]));
        t_resp_t r;
        assert_int_equal(call(all[i], "GET", "/healthz", NULL, NULL, 0, NULL, &r), 0);
        assert_int_equal(r.status, 200);
        assert_edge_headers(&r);
        t_resp_dispose(&r);
    }
}

/* Opens a connection and sends half a request head, then nothing. */
static int half_request(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    const char *head = "POST /api/login/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n";
    assert_true(write(fd, head, strlen(head)) > 0);
    return fd;
}

static void slow_clients_cannot_hold_every_worker(void **state)
{
    world_t *w = *state;
    int fds[12]; /* more than the gateway's 8 worker threads */
    for (int i = 0; i < 12; i++)
        fds[i] = half_request(w->main.port);
    t_sleep_ms(200);
    int64_t t0 = cm_now_mono_ms();
    t_resp_t r;
    assert_int_equal(call(&w->main, "GET", "/.well-known/jwks.json", NULL, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    t_resp_dispose(&r);
    /* REQUEST_TIMEOUT_MS=1500 frees the workers; without it this waits for the clients. */
    assert_true(cm_now_mono_ms() - t0 < 6000);
    for (int i = 0; i < 12; i++)
        close(fds[i]);
}

typedef struct slow_call {
    const gateway_t *g;
    const char *token;
    t_resp_t r;
    int rc;
} slow_call_t;

static void *run_slow_call(void *arg)
{
    slow_call_t *c = arg;
    char auth[4200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
    const char *hdrs[] = {auth, NULL};
    c->rc = call(c->g, "GET", "/api/rewards/", NULL, NULL, 0, hdrs, &c->r);
    return NULL;
}

static void forwarded_for_from_a_trusted_proxy_names_the_client(void **state)
{
    world_t *w = *state;
    /* patient trusts 127.0.0.1: the rightmost untrusted entry is the client; what the
     * client wrote left of it is dropped. */
    char auth[4200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", w->token);
    const char *hdrs[] = {auth, "X-Forwarded-For: 6.6.6.6, 198.51.100.7", NULL};
    t_resp_t r;
    assert_int_equal(call(&w->patient, "GET", "/api/rewards/", NULL, NULL, 0, hdrs, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(echoed(&r, "X-Forwarded-For"), "198.51.100.7, 127.0.0.1");
    assert_string_equal(echoed(&r, "X-Real-IP"), "198.51.100.7");
    t_resp_dispose(&r);
}

static void requests_beyond_the_connection_limit_wait_for_a_free_connection(void **state)
{
    world_t *w = *state;
    /* patient: UPSTREAM_MAX_CONNECTIONS=1 in front of a service that takes SLOW_MS. */
    atomic_store(&w->slow.most_busy, 0);
    slow_call_t a = {.g = &w->patient, .token = w->token};
    slow_call_t b = {.g = &w->patient, .token = w->token};
    pthread_t ta, tb;
    int64_t t0 = cm_now_mono_ms();
    assert_int_equal(pthread_create(&ta, NULL, run_slow_call, &a), 0);
    t_sleep_ms(100);
    assert_int_equal(pthread_create(&tb, NULL, run_slow_call, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    int64_t took = cm_now_mono_ms() - t0;
    assert_int_equal(a.rc, 0);
    assert_int_equal(b.rc, 0);
    assert_int_equal(a.r.status, 200);
    assert_int_equal(b.r.status, 200);
    t_resp_dispose(&a.r);
    t_resp_dispose(&b.r);
    assert_int_equal(atomic_load(&w->slow.most_busy), 1);
    assert_true(took >= 2 * SLOW_MS - 100);
}

static void sigterm_lets_an_in_flight_request_finish(void **state)
{
    world_t *w = *state;
    slow_call_t c = {.g = &w->patient, .token = w->token};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_slow_call, &c), 0);
    t_sleep_ms(400); /* the request is now waiting on the slow service */
    assert_int_equal(kill(w->patient.pid, SIGTERM), 0);
    t_sleep_ms(100);
    t_resp_t ready;
    assert_int_equal(admin_get(&w->patient, "/readyz", &ready), 0);
    assert_problem(&ready, 503); /* draining: take me out of the load balancer */
    t_resp_dispose(&ready);
    pthread_join(t, NULL);
    assert_int_equal(c.rc, 0);
    assert_int_equal(c.r.status, 200);
    assert_string_equal(json_string_value(json_object_get(c.r.json, "upstream")), "slow");
    t_resp_dispose(&c.r);
    int st = 0;
    int64_t deadline = cm_now_mono_ms() + 10000;
    pid_t done = 0;
    while ((done = waitpid(w->patient.pid, &st, WNOHANG)) == 0 && cm_now_mono_ms() < deadline)
        t_sleep_ms(20);
    assert_int_equal(done, w->patient.pid);
    w->patient.pid = 0;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_public_path_reaches_its_service_with_method_path_query_and_body),
        cmocka_unit_test(request_id_is_passed_on_or_created),
        cmocka_unit_test(identity_and_hop_by_hop_headers_are_stripped_and_forwarded_for_set),
        cmocka_unit_test(routes_needing_a_token_are_refused_at_the_edge),
        cmocka_unit_test(a_key_auth_rotated_to_is_fetched_from_its_jwks_once_per_interval),
        cmocka_unit_test(bad_bodies_get_problem_answers_and_never_reach_the_service),
        cmocka_unit_test(unknown_paths_are_404_and_wrong_methods_405_with_allow),
        cmocka_unit_test(upstream_statuses_and_their_headers_pass_through),
        cmocka_unit_test(head_is_answered_like_get_without_a_body),
        cmocka_unit_test(unknown_methods_are_405_with_allow_or_404_and_never_forwarded),
        cmocka_unit_test(the_public_keys_may_be_cached_and_errors_may_not),
        cmocka_unit_test(upstream_errors_get_the_headers_api_md_promises),
        cmocka_unit_test(connections_to_a_service_are_kept_alive_and_reused),
        cmocka_unit_test(a_replica_that_is_down_is_skipped),
        cmocka_unit_test(requests_keep_succeeding_when_a_replica_dies),
        cmocka_unit_test(a_down_service_gives_503_quickly),
        cmocka_unit_test(a_hung_service_gives_504_within_the_timeout),
        cmocka_unit_test(rate_limits_answer_429_with_retry_after_and_recover),
        cmocka_unit_test(readiness_does_not_follow_the_upstreams),
        cmocka_unit_test(readiness_metrics_and_version_are_only_on_the_admin_port),
        cmocka_unit_test(cors_headers_go_only_to_listed_origins),
        cmocka_unit_test(cors_preflight_is_answered_only_for_listed_origins),
        cmocka_unit_test(slow_clients_cannot_hold_every_worker),
        cmocka_unit_test(the_gateways_keep_answering_after_all_of_it),
        cmocka_unit_test(forwarded_for_from_a_trusted_proxy_names_the_client),
        cmocka_unit_test(requests_beyond_the_connection_limit_wait_for_a_free_connection),
        cmocka_unit_test(sigterm_lets_an_in_flight_request_finish),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
