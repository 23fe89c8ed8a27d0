/*
 * Hostile input against the real binaries of the stack (the linktr_stack
 * fixture): JSON nested deep enough to exhaust a civetweb worker's 100 KiB
 * stack inside a recursive parser, in every JSON input the services read
 * from outside (request bodies through the gateway and straight to auth
 * and referral, access tokens' header and payload, Kafka event envelopes),
 * and tokens with huge or non-UTF-8 segments. Each must get its 4xx
 * problem+json answer (or, for events, be skipped) and every service must
 * still answer /healthz afterwards: before cm_json_scan, a 1 KB body of
 * '[' or a forged token with 1,500 '[' as payload killed the gateway.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <jwt.h>
#include <sodium.h>

#include "cm/crypto.h"
#include "cm/events.h"
#include "cm/producer.h"
#include "cm/util.h"
#include "cm/http.h"
#include "http_client.h"
#include "raw_client.h"
#include "stack.h"
#include "testenv.h"

/* A registered user's event crosses Kafka to referral: bounded, so a wedged consumer fails. */
#define EVENT_DEADLINE_MS 30000

static const char *const SERVICES[] = {"GATEWAY_URL", "AUTH_URL", "REFERRAL_URL", "MAILER_URL"};

/* base_key's URL from stack.env plus path; caller frees. */
static char *at(const char *base_key, const char *path)
{
    char *base = t_stack(base_key);
    char *u = cm_xasprintf("%s%s", base, path);
    free(base);
    return u;
}

/* Every service of the stack answers GET /healthz with 200. */
static void assert_all_healthy(void)
{
    for (size_t i = 0; i < sizeof SERVICES / sizeof *SERVICES; i++) {
        char *u = at(SERVICES[i], "/healthz");
        t_resp_t r;
        int rc = t_http("GET", u, NULL, NULL, 0, NULL, &r);
        if (rc != 0 || r.status != 200)
            fprintf(stderr, "healthz: %s answered %ld\n", SERVICES[i], r.status);
        assert_int_equal(rc, 0);
        assert_int_equal(r.status, 200);
        t_resp_dispose(&r);
        free(u);
    }
}

/* The answer is a problem+json object with this status (and, for 401, a Bearer challenge). */
static void assert_problem(const t_resp_t *r, long status)
{
    if (r->status != status)
        fprintf(stderr, "expected %ld, got %ld: %.300s\n", status, r->status, r->body);
    assert_int_equal(r->status, status);
    assert_non_null(r->content_type);
    assert_string_equal(r->content_type, "application/problem+json");
    assert_true(json_is_object(r->json));
    assert_int_equal(json_integer_value(json_object_get(r->json, "status")), status);
    if (status == 401) {
        char *www = t_resp_header(r, "WWW-Authenticate");
        assert_non_null(www);
        assert_true(strncmp(www, "Bearer", 6) == 0);
        free(www);
    }
}

/* ---- hostile bodies ------------------------------------------------------------------ */

typedef enum shape { ARRAYS, OBJECTS, MIXED, IN_STRING } shape_t;

/* A body nested `levels` deep in the given shape (unclosed: the depth is what matters). */
static char *deep_body(shape_t shape, size_t levels, size_t *len)
{
    cm_buf_t b;
    cm_buf_init(&b);
    if (shape == IN_STRING)
        cm_buf_puts(&b, "{\"username_or_email\":\"");
    for (size_t i = 0; i < levels; i++) {
        if (shape == ARRAYS || shape == IN_STRING || (shape == MIXED && i % 2))
            cm_buf_puts(&b, "[");
        else
            cm_buf_puts(&b, "{\"a\":");
    }
    if (shape == IN_STRING)
        cm_buf_puts(&b, "\",\"password\":\"x\"}");
    *len = b.len;
    return cm_buf_steal(&b);
}

/*
 * POSTs a JSON body to base_key + path; returns the answer (caller disposes).
 * A body past the 16 KiB cap goes with Expect: 100-continue, as HTTP clients
 * send large bodies: the server refuses it (413) and closes after reading
 * at most CM_HTTP_LINGER_BYTES of it, and the 100,000-level bodies here
 * (up to 500 KB) are past that, so a client still pushing them may see the
 * reset before the answer. Bodies within the linger are tested below.
 */
static t_resp_t post_raw(const char *base_key, const char *path, const char *body, size_t len)
{
    static const char *const expect[] = {"Expect: 100-continue", NULL};
    char *u = at(base_key, path);
    t_resp_t r;
    assert_int_equal(
        t_http("POST", u, "application/json", body, len, len > 16384 ? expect : NULL, &r), 0);
    free(u);
    return r;
}

/* Each deep body at each target gets `status` as problem+json; the stack stays up. */
static void send_deep_bodies(size_t levels, long status)
{
    static const struct {
        const char *base, *path;
    } targets[] = {{"GATEWAY_URL", "/api/login/"},
                   {"GATEWAY_URL", "/api/register/"},
                   {"AUTH_URL", "/api/login"},
                   {"AUTH_URL", "/api/reset-password"}};
    const shape_t shapes[] = {ARRAYS, OBJECTS, MIXED};
    for (size_t t = 0; t < sizeof targets / sizeof *targets; t++) {
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            size_t len = 0;
            char *body = deep_body(shapes[s], levels, &len);
            t_resp_t r = post_raw(targets[t].base, targets[t].path, body, len);
            assert_problem(&r, status);
            t_resp_dispose(&r);
            free(body);
        }
    }
    assert_all_healthy();
}

static void a_body_nested_1000_deep_gets_400_from_the_gateway_and_auth_and_nobody_dies(void **state)
{
    (void)state;
    send_deep_bodies(1000, 400);
    /* The detail names the cause. */
    size_t len = 0;
    char *body = deep_body(ARRAYS, 1000, &len);
    t_resp_t r = post_raw("GATEWAY_URL", "/api/login/", body, len);
    const char *detail = json_string_value(json_object_get(r.json, "detail"));
    assert_non_null(detail);
    assert_non_null(strstr(detail, "nested too deeply"));
    t_resp_dispose(&r);
    free(body);
}

static void a_body_nested_up_to_the_size_cap_gets_400_and_100000_deep_gets_413(void **state)
{
    (void)state;
    /* The deepest body that fits the 16 KiB cap (objects take 5 bytes a level). */
    send_deep_bodies(3000, 400);
    /* 100,000 levels are past the body cap, which answers first. */
    send_deep_bodies(100000, 413);
}

static void brackets_inside_a_string_are_text_not_nesting(void **state)
{
    (void)state;
    size_t len = 0;
    char *body = deep_body(IN_STRING, 10000, &len);
    /* A well-formed login whose name is 10,000 '[': refused by validation, not by depth. */
    t_resp_t r = post_raw("GATEWAY_URL", "/api/login/", body, len);
    assert_true(r.status >= 400 && r.status < 500);
    assert_string_equal(r.content_type, "application/problem+json");
    const char *detail = json_string_value(json_object_get(r.json, "detail"));
    assert_true(!detail || !strstr(detail, "nested too deeply"));
    t_resp_dispose(&r);
    free(body);
    assert_all_healthy();
}

static void a_deep_body_sent_to_referral_is_refused_and_referral_stays_up(void **state)
{
    (void)state;
    /* Referral takes no bodies: its routes answer 405 whatever the body holds. */
    size_t len = 0;
    char *body = deep_body(ARRAYS, 1000, &len);
    t_resp_t r = post_raw("REFERRAL_URL", "/api/referral-stats", body, len);
    assert_true(r.status >= 400 && r.status < 500);
    assert_string_equal(r.content_type, "application/problem+json");
    t_resp_dispose(&r);
    free(body);
    assert_all_healthy();
}

/* ---- hostile tokens ---------------------------------------------------------------------- */

static char *b64url(const void *bytes, size_t len)
{
    size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = cm_xmalloc(cap);
    sodium_bin2base64(out, cap, bytes, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

/* header.payload.sig from raw header and payload bytes and a literal signature segment. */
static char *token_of(const char *hdr, size_t hlen, const char *payload, size_t plen,
                      const char *sig)
{
    char *h = b64url(hdr, hlen), *p = b64url(payload, plen);
    char *t = cm_xasprintf("%s.%s.%s", h, p, sig);
    free(h);
    free(p);
    return t;
}

/* The stack's own header: ES256 and the kid the services trust. */
static char *our_header(void)
{
    char *kid = t_stack("JWT_KEY_ID");
    char *h = cm_xasprintf("{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", kid);
    free(kid);
    return h;
}

static char *repeat(const char *unit, size_t n)
{
    cm_buf_t b;
    cm_buf_init(&b);
    for (size_t i = 0; i < n; i++)
        cm_buf_puts(&b, unit);
    return cm_buf_steal(&b);
}

/* A token signed with the stack's real private key (via libjwt) whose claims are `claims`. */
static char *signed_with_stack_key(const char *claims_json)
{
    char *path = t_stack("JWT_PRIVATE_KEY_FILE");
    char *kid = t_stack("JWT_KEY_ID");
    char *pem = NULL;
    size_t pem_len = 0;
    assert_int_equal(cm_read_file(path, 16384, &pem, &pem_len), 0);
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_set_alg(jwt, JWT_ALG_ES256, (const unsigned char *)pem, (int)pem_len), 0);
    assert_int_equal(jwt_add_header(jwt, "kid", kid), 0);
    assert_int_equal(jwt_add_grants_json(jwt, claims_json), 0);
    char *tok = jwt_encode_str(jwt);
    assert_non_null(tok);
    jwt_free(jwt);
    sodium_memzero(pem, pem_len);
    free(pem);
    free(kid);
    free(path);
    return tok;
}

/* The token is refused with 401 problem+json by the gateway, auth and referral. */
static void assert_refused_everywhere(const char *tok)
{
    static const struct {
        const char *base, *path;
    } targets[] = {{"GATEWAY_URL", "/api/me/"},
                   {"GATEWAY_URL", "/api/referral-stats/"},
                   {"AUTH_URL", "/api/me"},
                   {"REFERRAL_URL", "/api/referral-stats"}};
    for (size_t i = 0; i < sizeof targets / sizeof *targets; i++) {
        char *u = at(targets[i].base, targets[i].path);
        t_resp_t r;
        assert_int_equal(t_get(u, tok, &r), 0);
        assert_problem(&r, 401);
        t_resp_dispose(&r);
        free(u);
    }
}

static void a_forged_token_with_a_1500_deep_payload_gets_401_and_nobody_dies(void **state)
{
    (void)state;
    char *hdr = our_header();
    char *arrays = repeat("[", 1500), *objects = repeat("{\"a\":", 600);
    char *t1 = token_of(hdr, strlen(hdr), arrays, strlen(arrays), "AAAA");
    char *t2 = token_of(hdr, strlen(hdr), objects, strlen(objects), "AAAA");
    assert_refused_everywhere(t1);
    assert_refused_everywhere(t2);
    assert_all_healthy();
    free(t2);
    free(t1);
    free(objects);
    free(arrays);
    free(hdr);
}

static void a_deep_payload_signed_with_the_real_key_still_gets_401(void **state)
{
    (void)state;
    /* Only a stolen key could make this; the services must still not parse it unbounded. */
    char *open = repeat("[", 600), *close = repeat("]", 600);
    char *claims = cm_xasprintf("{\"sub\":\"x\",\"deep\":%s1%s}", open, close);
    char *tok = signed_with_stack_key(claims);
    if (strlen(tok) > 4096)
        fprintf(stderr, "signed deep token: %zu bytes\n", strlen(tok));
    assert_true(strlen(tok) <= 4096);
    assert_refused_everywhere(tok);
    assert_all_healthy();
    free(tok);
    free(claims);
    free(close);
    free(open);
}

static void a_forged_token_with_a_deep_header_gets_401(void **state)
{
    (void)state;
    char *kid = t_stack("JWT_KEY_ID");
    char *arrays = repeat("[", 700);
    char *hdr = cm_xasprintf("{\"alg\":\"ES256\",\"kid\":\"%s\",\"x\":%s}", kid, arrays);
    char *t1 = token_of(arrays, strlen(arrays), "{}", 2, "AAAA");
    char *t2 = token_of(hdr, strlen(hdr), "{}", 2, "AAAA");
    assert_refused_everywhere(t1);
    assert_refused_everywhere(t2);
    assert_all_healthy();
    free(t2);
    free(t1);
    free(hdr);
    free(arrays);
    free(kid);
}

static void tokens_with_huge_segments_get_401(void **state)
{
    (void)state;
    char *hdr = our_header();
    /* A 3,900-character payload segment (under the 4 KiB token cap), a 2,000-character header,
     * a 3,000-character signature, and a token past the cap. */
    char *pad = repeat("A", 3900);
    char *h = b64url(hdr, strlen(hdr));
    char *big_payload = cm_xasprintf("%s.%s.AAAA", h, pad);
    pad[2000] = '\0';
    char *big_header = cm_xasprintf("%s.e30.AAAA", pad);
    pad[2000] = 'A';
    pad[3000] = '\0';
    char *big_sig = cm_xasprintf("%s.e30.%s", h, pad);
    pad[3000] = 'A';
    char *over = cm_xasprintf("%s.%s.%s", h, pad, pad);
    const char *toks[] = {big_payload, big_header, big_sig, over};
    for (size_t i = 0; i < sizeof toks / sizeof *toks; i++)
        assert_refused_everywhere(toks[i]);
    assert_all_healthy();
    free(over);
    free(big_sig);
    free(big_header);
    free(big_payload);
    free(h);
    free(pad);
    free(hdr);
}

static void tokens_with_invalid_utf8_segments_get_401(void **state)
{
    (void)state;
    char *hdr = our_header();
    static const char bad_payload[] = "{\"sub\":\"\xc3\x28\",\"exp\":9999999999}";
    char *t1 = token_of(hdr, strlen(hdr), bad_payload, sizeof bad_payload - 1, "AAAA");
    char *kid = t_stack("JWT_KEY_ID");
    char *bad_hdr =
        cm_xasprintf("{\"alg\":\"ES256\",\"kid\":\"%s\",\"x\":\"\xed\xa0\x80\xff\"}", kid);
    char *t2 = token_of(bad_hdr, strlen(bad_hdr), "{}", 2, "AAAA");
    /* Non-UTF-8 claims carrying a real signature (of another payload): refused, not parsed. */
    char *t3 = signed_with_stack_key("{\"sub\":\"ok\"}");
    char *d1 = strchr(t3, '.'), *d2 = strrchr(t3, '.');
    assert_true(d1 && d2 && d2 > d1);
    char *t4 = token_of(hdr, strlen(hdr), bad_payload, sizeof bad_payload - 1, d2 + 1);
    const char *toks[] = {t1, t2, t4};
    for (size_t i = 0; i < sizeof toks / sizeof *toks; i++)
        assert_refused_everywhere(toks[i]);
    assert_all_healthy();
    free(t4);
    free(t3);
    free(t2);
    free(bad_hdr);
    free(kid);
    free(t1);
    free(hdr);
}

/* ---- hostile events ------------------------------------------------------------------------ */

typedef struct member_wait {
    const char *user_id;
} member_wait_t;

static bool member_present(void *arg)
{
    member_wait_t *m = arg;
    return t_db_count("SELECT 1 FROM referral.members WHERE user_id = $1::uuid", m->user_id,
                      NULL) == 1;
}

static void deep_event_envelopes_are_skipped_and_the_consumers_keep_going(void **state)
{
    (void)state;
    char *bootstrap = t_stack("KAFKA_BOOTSTRAP");
    int err = 0;
    cm_producer_t *p = cm_producer_new(bootstrap, "test-hostile", &err);
    assert_non_null(p);
    /* 60,000 '[' (under the 64 KiB event cap) and a real envelope whose data is 5,000 deep. */
    char *arrays = repeat("[", 60000);
    char *inner = repeat("[", 5000);
    char id[37], when[32];
    cm_uuid_v4(id);
    cm_format_time(cm_now_us(), when);
    char *env = cm_xasprintf("{\"id\":\"%s\",\"type\":\"%s\",\"version\":1,\"occurred_at\":\"%s\","
                             "\"source\":\"auth\",\"data\":%s",
                             id, CM_EV_USER_REGISTERED, when, inner);
    const char *topics[] = {CM_EV_USER_REGISTERED, CM_EV_USER_VERIFIED};
    for (size_t i = 0; i < sizeof topics / sizeof *topics; i++) {
        assert_int_equal(cm_producer_send(p, topics[i], id, arrays, strlen(arrays), 30000), 0);
        assert_int_equal(cm_producer_send(p, topics[i], id, env, strlen(env), 30000), 0);
    }
    /* A real registration after them still reaches referral: the consumer skipped, not stuck. */
    json_t *body = t_user_body("hostev", NULL);
    json_t *user = t_register(body);
    json_decref(body);
    member_wait_t m = {json_string_value(json_object_get(user, "id"))};
    assert_non_null(m.user_id);
    assert_true(t_wait(member_present, &m, EVENT_DEADLINE_MS));
    assert_all_healthy();
    json_decref(user);
    free(env);
    free(inner);
    free(arrays);
    cm_producer_free(p);
    free(bootstrap);
}

/* ---- a lingering close after a refused body ------------------------------------------ */

/* The port of a stack URL ("http://127.0.0.1:PORT"). */
static int url_port(const char *key)
{
    char *url = t_stack(key);
    const char *colon = strrchr(url, ':');
    long long port = 0;
    int rc = colon ? cm_strtonum(colon + 1, 1, 65535, &port) : CM_EINVAL;
    if (rc != 0)
        fail_msg("%s %s has no port", key, url);
    free(url);
    return (int)port;
}

/* A POST head announcing a JSON body of length bytes; caller frees. */
static char *post_head(const char *path, unsigned long long length)
{
    return cm_xasprintf("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        "Content-Type: application/json\r\nContent-Length: %llu\r\n\r\n",
                        path, length);
}

/*
 * Sends a 100 KB body with its head in one write, as a client that does
 * not wait for 100-continue does, then reads until the server closes.
 * Returns what the server sent (caller disposes).
 */
static cm_buf_t send_100kb(const char *key, const char *path)
{
    enum { BODY = 100 * 1000 };
    char *head = post_head(path, BODY);
    cm_buf_t req;
    cm_buf_init(&req);
    cm_buf_puts(&req, head);
    cm_buf_puts(&req, "{\"username_or_email\":\"");
    while (req.len < strlen(head) + BODY - 2)
        cm_buf_puts(&req, "a");
    cm_buf_puts(&req, "\"}");
    assert_int_equal(req.len, strlen(head) + BODY);
    int s = t_raw_connect("127.0.0.1", url_port(key), NULL);
    assert_true(s >= 0);
    /* A small send buffer, as over a real network: loopback's own would take the whole
     * body at once, and the client would be done sending before the server closes. */
    int sndbuf = 4096;
    assert_int_equal(setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf), 0);
    cm_buf_t got;
    cm_buf_init(&got);
    cm_buf_puts(&got, "");
    /* A client whose write fails gives up (curl does): the whole body must go out. */
    bool sent = t_raw_send(s, req.data, req.len);
    if (!sent)
        fprintf(stderr, "%s%s: the send failed (%s)\n", key, path, strerror(errno));
    assert_true(sent);
    int64_t closed = t_raw_wait_close(s, 10000, &got);
    assert_true(closed >= 0);
    close(s);
    cm_buf_dispose(&req);
    free(head);
    return got;
}

static void a_100_kb_body_sent_without_100_continue_gets_its_413_every_time(void **state)
{
    (void)state;
    static const struct {
        const char *key, *path;
    } targets[] = {{"GATEWAY_URL", "/api/login/"}, {"AUTH_URL", "/api/login"}};
    /* Twenty times over a raw socket (the whole body written before reading), so a
     * reset that sometimes beats the answer shows. */
    for (int i = 0; i < 20; i++) {
        cm_buf_t got = send_100kb(targets[i % 2].key, targets[i % 2].path);
        if (t_raw_status(got.data) != 413)
            fprintf(stderr, "round %d, %s: got %.200s\n", i, targets[i % 2].key, got.data);
        assert_int_equal(t_raw_status(got.data), 413);
        assert_non_null(strstr(got.data, "application/problem+json"));
        assert_non_null(strstr(got.data, "Connection: close"));
        cm_buf_dispose(&got);
    }
    /* And through an HTTP client told not to wait for 100-continue. */
    size_t len = 100 * 1000;
    char *body = cm_xcalloc(len + 1, 1);
    memset(body, '[', len);
    for (int i = 0; i < 10; i++) {
        char *u = at(targets[i % 2].key, targets[i % 2].path);
        t_resp_t r;
        assert_int_equal(t_http("POST", u, "application/json", body, len, NULL, &r), 0);
        assert_problem(&r, 413);
        t_resp_dispose(&r);
        free(u);
    }
    free(body);
    assert_all_healthy();
}

/*
 * Writes as fast as the server reads, reading whatever it answers, until
 * it closes the connection (EOF or reset) or max_ms pass. Returns the ms
 * until the close, or -1.
 */
static int64_t flood_until_closed(int s, int max_ms, cm_buf_t *got)
{
    char chunk[16384];
    memset(chunk, 'a', sizeof chunk);
    int64_t t0 = cm_now_mono_ms();
    while (cm_now_mono_ms() - t0 < max_ms) {
        struct pollfd p = {.fd = s, .events = POLLIN | POLLOUT};
        if (poll(&p, 1, 50) <= 0)
            continue;
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            char buf[4096];
            ssize_t n = recv(s, buf, sizeof buf, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                return cm_now_mono_ms() - t0;
            if (n > 0)
                cm_buf_append(got, buf, (size_t)n);
        }
        if ((p.revents & POLLOUT) &&
            send(s, chunk, sizeof chunk, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN &&
            errno != EINTR)
            return cm_now_mono_ms() - t0;
    }
    return -1;
}

static void a_client_that_keeps_sending_after_its_413_is_cut_off(void **state)
{
    (void)state;
    /* Generous: the linger ends within CM_HTTP_LINGER_MS plus one request timeout. */
    const int bound_ms = 2 * CM_HTTP_LINGER_MS + 2 * CM_HTTP_REQUEST_TIMEOUT_MS;
    char *head = post_head("/api/login/", 100000000ULL);
    /* As fast as it can: the byte bound ends the linger. */
    int s = t_raw_connect("127.0.0.1", url_port("GATEWAY_URL"), NULL);
    assert_true(s >= 0);
    assert_true(t_raw_send(s, head, strlen(head)));
    cm_buf_t got;
    cm_buf_init(&got);
    cm_buf_puts(&got, "");
    int64_t flood_ms = flood_until_closed(s, 15000, &got);
    close(s);
    fprintf(stderr, "flood: closed after %lld ms\n", (long long)flood_ms);
    assert_true(flood_ms >= 0 && flood_ms < bound_ms);
    cm_buf_dispose(&got);
    /* A byte every 100 ms: the time bound ends it, and the answer came first. */
    s = t_raw_connect("127.0.0.1", url_port("GATEWAY_URL"), NULL);
    assert_true(s >= 0);
    assert_true(t_raw_send(s, head, strlen(head)));
    t_trickle_t t;
    t_raw_trickle(s, "a", 100, 15000, &t);
    close(s);
    fprintf(stderr, "trickle: closed after %lld ms, %zu bytes sent\n", (long long)t.closed_ms,
            t.sent);
    assert_true(t.closed_ms >= 0 && t.closed_ms < bound_ms);
    assert_int_equal(t_raw_status(t.got.data), 413);
    /* The server kept reading after its answer (a byte every 100 ms for about a second). */
    assert_true(t.sent >= 3);
    t_trickle_dispose(&t);
    free(head);
    assert_all_healthy();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            a_body_nested_1000_deep_gets_400_from_the_gateway_and_auth_and_nobody_dies),
        cmocka_unit_test(a_body_nested_up_to_the_size_cap_gets_400_and_100000_deep_gets_413),
        cmocka_unit_test(brackets_inside_a_string_are_text_not_nesting),
        cmocka_unit_test(a_deep_body_sent_to_referral_is_refused_and_referral_stays_up),
        cmocka_unit_test(a_forged_token_with_a_1500_deep_payload_gets_401_and_nobody_dies),
        cmocka_unit_test(a_deep_payload_signed_with_the_real_key_still_gets_401),
        cmocka_unit_test(a_forged_token_with_a_deep_header_gets_401),
        cmocka_unit_test(tokens_with_huge_segments_get_401),
        cmocka_unit_test(tokens_with_invalid_utf8_segments_get_401),
        cmocka_unit_test(deep_event_envelopes_are_skipped_and_the_consumers_keep_going),
        cmocka_unit_test(a_100_kb_body_sent_without_100_continue_gets_its_413_every_time),
        cmocka_unit_test(a_client_that_keeps_sending_after_its_413_is_cut_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
