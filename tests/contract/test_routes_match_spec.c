/*
 * The gateway's route table and proto/openapi.yaml list the same operations,
 * so neither drifts: every public route is documented, every documented
 * operation is routed (or is one of cm_http's built-in probes), and both
 * agree on which operations need a Bearer token.
 *
 * The spec is read with a small line parser that relies on the layout rules
 * written at the top of openapi.yaml (paths at two spaces, methods at four,
 * a flow-style "security:" at six). A document that breaks them fails here
 * with a message, rather than being misread. Paths are compared without a
 * trailing slash, as cm_route_find() matches them, and a templated segment
 * ("{id}") is the gateway's "*".
 *
 * Usage: contract_test_routes_match_spec <path to openapi.yaml>
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm/util.h"
#include "routes.h"

#define MAX_OPS 64
#define MAX_PATH 128
#define MAX_SPEC_BYTES (1024 * 1024)

/* One operation of the spec. */
typedef struct spec_op {
    char method[8];      /* upper case */
    char path[MAX_PATH]; /* without a trailing slash */
    int line;
    int security; /* -1 not declared, 0 none, 1 Bearer */
} spec_op_t;

typedef struct spec {
    spec_op_t ops[MAX_OPS];
    size_t n;
    char error[256]; /* the first layout problem, "" if none */
} spec_t;

/*
 * Answered by cm_http itself before the route table on the public port (see
 * cm/http.h); /readyz, /metrics and /version live on the admin port.
 */
static const struct {
    const char *method, *path;
} BUILTINS[] = {{"GET", "/healthz"}};

/* ---- the spec parser --------------------------------------------------------------- */

static void spec_fail(spec_t *s, int line, const char *what)
{
    if (!s->error[0])
        snprintf(s->error, sizeof s->error, "openapi.yaml:%d: %s", line, what);
}

static size_t indent_of(const char *l, size_t len)
{
    size_t i = 0;
    while (i < len && l[i] == ' ')
        i++;
    return i;
}

/* Copies a path key ("/api/me/:" or "'/api/me/':") without quotes, colon or trailing slash. */
static int path_key(const char *l, size_t len, char out[MAX_PATH])
{
    while (len > 0 && (l[len - 1] == ' ' || l[len - 1] == '\r'))
        len--;
    if (len < 2 || l[len - 1] != ':')
        return -1;
    len--;
    if (len >= 2 && (l[0] == '\'' || l[0] == '"') && l[len - 1] == l[0]) {
        l++;
        len -= 2;
    }
    if (len > 1 && l[len - 1] == '/')
        len--;
    if (len == 0 || len >= MAX_PATH || l[0] != '/')
        return -1;
    memcpy(out, l, len);
    out[len] = '\0';
    return 0;
}

/*
 * Writes a templated segment ("/api/sessions/{id}") the way the gateway
 * spells it: "*", the route segment that matches exactly one segment.
 */
static void template_to_star(char path[MAX_PATH])
{
    char out[MAX_PATH];
    size_t o = 0;
    for (const char *p = path; *p && o + 1 < sizeof out;) {
        const char *end = strchr(p + 1, '/');
        size_t seg = end ? (size_t)(end - p) : strlen(p);
        if (p[0] == '/' && seg >= 3 && p[1] == '{' && p[seg - 1] == '}') {
            out[o++] = '/';
            out[o++] = '*';
        } else {
            for (size_t i = 0; i < seg && o + 1 < sizeof out; i++)
                out[o++] = p[i];
        }
        p += seg;
    }
    out[o] = '\0';
    memcpy(path, out, o + 1);
}

/* Returns the upper-case method when the line is "<method>:", else NULL. */
static const char *method_key(const char *l, size_t len)
{
    static const char *const methods[] = {"get",   "put",     "post", "delete",
                                          "patch", "options", "head", "trace"};
    static const char *const upper[] = {"GET",   "PUT",     "POST", "DELETE",
                                        "PATCH", "OPTIONS", "HEAD", "TRACE"};
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        size_t m = strlen(methods[i]);
        if (len > m && strncmp(l, methods[i], m) == 0 && l[m] == ':')
            return upper[i];
    }
    return NULL;
}

/* Reads "security: []" or "security: [{bearerAuth: []}]" into the current operation. */
static void security_line(spec_t *s, const char *l, size_t len, int line)
{
    static const char key[] = "security:";
    if (len < sizeof key - 1 || strncmp(l, key, sizeof key - 1) != 0 || s->n == 0)
        return;
    char v[64] = "";
    size_t vl = len - (sizeof key - 1);
    const char *p = l + sizeof key - 1;
    while (vl > 0 && *p == ' ')
        p++, vl--;
    while (vl > 0 && (p[vl - 1] == ' ' || p[vl - 1] == '\r'))
        vl--;
    if (vl < sizeof v)
        memcpy(v, p, vl);
    spec_op_t *op = &s->ops[s->n - 1];
    if (strcmp(v, "[]") == 0)
        op->security = 0;
    else if (strcmp(v, "[{bearerAuth: []}]") == 0)
        op->security = 1;
    else
        spec_fail(s, line, "security must be [] or [{bearerAuth: []}] in flow style");
}

/* One line inside "paths:"; cur holds the current path key. */
static void paths_line(spec_t *s, const char *l, size_t len, int line, char cur[MAX_PATH])
{
    size_t ind = indent_of(l, len);
    const char *t = l + ind;
    size_t tl = len - ind;
    if (ind == 2) {
        if (path_key(t, tl, cur) != 0)
            spec_fail(s, line, "a path key must be \"/...:\" at two spaces");
        else
            template_to_star(cur);
    } else if (ind == 4 && method_key(t, tl)) {
        if (!cur[0] || s->n == MAX_OPS) {
            spec_fail(s, line, "an operation outside a path, or too many operations");
            return;
        }
        spec_op_t *op = &s->ops[s->n++];
        snprintf(op->method, sizeof op->method, "%s", method_key(t, tl));
        snprintf(op->path, sizeof op->path, "%s", cur);
        op->line = line;
        op->security = -1;
    } else if (ind == 6) {
        security_line(s, t, tl, line);
    }
}

/* Parses the operations of an OpenAPI document laid out as openapi.yaml says. */
static void spec_parse(const char *text, spec_t *s)
{
    memset(s, 0, sizeof *s);
    bool in_paths = false;
    char cur[MAX_PATH] = "";
    int line = 0;
    for (const char *l = text; *l;) {
        const char *nl = strchr(l, '\n');
        size_t len = nl ? (size_t)(nl - l) : strlen(l);
        line++;
        size_t ind = indent_of(l, len);
        bool blank = ind == len || l[ind] == '#';
        if (!blank && ind == 0)
            in_paths = len >= 6 && strncmp(l, "paths:", 6) == 0;
        else if (!blank && in_paths)
            paths_line(s, l, len, line, cur);
        l = nl ? nl + 1 : l + len;
    }
    for (size_t i = 0; i < s->n; i++)
        if (s->ops[i].security < 0)
            spec_fail(s, s->ops[i].line, "the operation declares no security");
    if (s->n == 0)
        spec_fail(s, line, "no operations under paths:");
}

/* ---- the comparison ---------------------------------------------------------------- */

static const spec_op_t *spec_find(const spec_t *s, const char *method, const char *path)
{
    char want[MAX_PATH];
    size_t len = strlen(path);
    if (len > 1 && path[len - 1] == '/')
        len--;
    snprintf(want, sizeof want, "%.*s", (int)len, path);
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->ops[i].method, method) == 0 && strcmp(s->ops[i].path, want) == 0)
            return &s->ops[i];
    return NULL;
}

static bool is_builtin(const char *method, const char *path)
{
    for (size_t i = 0; i < sizeof BUILTINS / sizeof BUILTINS[0]; i++)
        if (strcmp(BUILTINS[i].method, method) == 0 && strcmp(BUILTINS[i].path, path) == 0)
            return true;
    return false;
}

/* Appends one mismatch to report (at most a few KiB) and counts it. */
static int mismatch(char *report, size_t cap, const char *fmt, ...)
{
    size_t used = strlen(report);
    if (used + 1 < cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(report + used, cap - used, fmt, ap);
        va_end(ap);
    }
    return 1;
}

/* Gateway → spec: each route documented, with the same token policy. */
static int routes_in_spec(const spec_t *s, const gw_route_t *routes, size_t n, char *report,
                          size_t cap)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        const spec_op_t *op = spec_find(s, routes[i].method, routes[i].path);
        if (!op)
            bad += mismatch(report, cap, "gateway route %s %s is not in the spec\n",
                            routes[i].method, routes[i].path);
        else if (op->security != (routes[i].needs_token ? 1 : 0))
            bad += mismatch(report, cap, "%s %s: the gateway %s a token, the spec says %s\n",
                            routes[i].method, routes[i].path,
                            routes[i].needs_token ? "requires" : "does not require",
                            op->security ? "bearerAuth" : "security: []");
    }
    return bad;
}

/* Spec → gateway: each operation routed (or built in), and listed once. */
static int spec_in_routes(const spec_t *s, const gw_route_t *routes, size_t n, char *report,
                          size_t cap)
{
    int bad = 0;
    for (size_t i = 0; i < s->n; i++) {
        const spec_op_t *op = &s->ops[i];
        bool routed = false;
        for (size_t j = 0; j < n && !routed; j++)
            routed =
                strcmp(routes[j].method, op->method) == 0 && strcmp(routes[j].path, op->path) == 0;
        if (is_builtin(op->method, op->path) && op->security != 0)
            bad += mismatch(report, cap, "%s %s is a public probe: security must be []\n",
                            op->method, op->path);
        else if (!routed && !is_builtin(op->method, op->path))
            bad += mismatch(report, cap, "spec operation %s %s (line %d) has no gateway route\n",
                            op->method, op->path, op->line);
        if (spec_find(s, op->method, op->path) != op)
            bad += mismatch(report, cap, "spec lists %s %s twice (line %d)\n", op->method, op->path,
                            op->line);
    }
    return bad;
}

static int compare(const spec_t *s, const gw_route_t *routes, size_t n, char *report, size_t cap)
{
    report[0] = '\0';
    return routes_in_spec(s, routes, n, report, cap) + spec_in_routes(s, routes, n, report, cap);
}

/* ---- helpers for the tests --------------------------------------------------------- */

/* Parses the spec whose path is the test's state (argv[1]) into s; fails the test on errors. */
static void parse_real_spec(void **state, spec_t *s)
{
    const char *path = *state;
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    char *text = cm_xcalloc(MAX_SPEC_BYTES + 1, 1);
    size_t n = fread(text, 1, MAX_SPEC_BYTES + 1, f);
    fclose(f);
    if (n > 0 && n <= MAX_SPEC_BYTES)
        spec_parse(text, s);
    free(text);
    if (n == 0 || n > MAX_SPEC_BYTES)
        fail_msg("%s is empty or larger than %d bytes", path, MAX_SPEC_BYTES);
    if (s->error[0])
        fail_msg("%s", s->error);
}

/* ---- tests --------------------------------------------------------------------------- */

static void spec_and_gateway_list_the_same_operations(void **state)
{
    spec_t s;
    parse_real_spec(state, &s);
    size_t n = 0;
    const gw_route_t *routes = gw_routes(&n);
    char report[4096];
    int bad = compare(&s, routes, n, report, sizeof report);
    if (bad)
        fail_msg("%d difference(s) between the gateway and proto/openapi.yaml:\n%s", bad, report);
}

static void every_spec_path_is_matched_by_the_gateway_router_with_a_trailing_slash(void **state)
{
    spec_t s;
    parse_real_spec(state, &s);
    for (size_t i = 0; i < s.n; i++) {
        const spec_op_t *op = &s.ops[i];
        if (is_builtin(op->method, op->path))
            continue;
        char slashed[MAX_PATH + 1];
        snprintf(slashed, sizeof slashed, "%s/", op->path);
        const gw_route_t *r = NULL;
        if (gw_route_find(op->method, slashed, &r, NULL) != 0)
            fail_msg("the gateway does not route %s %s\n", op->method, slashed);
        assert_string_equal(r->path, op->path);
    }
}

static const char MINI_SPEC[] = "openapi: 3.1.0\n"
                                "paths:\n"
                                "  /api/login/:\n"
                                "    post:\n"
                                "      security: []\n"
                                "  /api/me/:\n"
                                "    get:\n"
                                "      # a comment\n"
                                "      security: [{bearerAuth: []}]\n"
                                "  /api/extra:\n"
                                "    delete:\n"
                                "      security: []\n"
                                "components:\n"
                                "  /not/a/path:\n"
                                "    get:\n";

static const gw_route_t MINI_ROUTES[] = {
    {"POST", "/api/login", GW_UP_AUTH, false, GW_RL_LOGIN, GW_CACHE_NO_STORE},
    {"GET", "/api/me", GW_UP_AUTH, false, GW_RL_OTHER, GW_CACHE_NO_STORE},
    {"GET", "/api/referrals", GW_UP_REFERRAL, true, GW_RL_OTHER, GW_CACHE_UPSTREAM},
};

static void parser_reads_paths_methods_and_security_only_under_paths(void **state)
{
    (void)state;
    spec_t s;
    spec_parse(MINI_SPEC, &s);
    assert_string_equal(s.error, "");
    assert_int_equal(s.n, 3);
    assert_string_equal(s.ops[0].method, "POST");
    assert_string_equal(s.ops[0].path, "/api/login");
    assert_int_equal(s.ops[0].security, 0);
    assert_string_equal(s.ops[1].path, "/api/me");
    assert_int_equal(s.ops[1].security, 1);
    assert_string_equal(s.ops[2].method, "DELETE");
}

static void comparison_reports_missing_extra_and_token_mismatches(void **state)
{
    (void)state;
    spec_t s;
    spec_parse(MINI_SPEC, &s);
    char report[1024];
    int bad = compare(&s, MINI_ROUTES, 3, report, sizeof report);
    assert_int_equal(bad, 3);
    assert_non_null(strstr(report, "gateway route GET /api/referrals is not in the spec"));
    assert_non_null(strstr(report, "GET /api/me: the gateway does not require a token"));
    assert_non_null(strstr(report, "spec operation DELETE /api/extra (line 11) has no gateway"));
}

static void comparison_reports_an_operation_listed_with_and_without_the_slash(void **state)
{
    (void)state;
    spec_t s;
    spec_parse("paths:\n  /api/login/:\n    post:\n      security: []\n"
               "  /api/login:\n    post:\n      security: []\n",
               &s);
    assert_string_equal(s.error, "");
    char report[1024];
    assert_int_equal(compare(&s, MINI_ROUTES, 1, report, sizeof report), 1);
    assert_non_null(strstr(report, "spec lists POST /api/login twice (line 6)"));
}

static void parser_refuses_an_operation_without_security(void **state)
{
    (void)state;
    spec_t s;
    spec_parse("paths:\n  /api/me/:\n    get:\n      summary: x\n", &s);
    assert_non_null(strstr(s.error, "openapi.yaml:3: the operation declares no security"));
    spec_parse("paths:\n  /api/me/:\n    get:\n      security:\n        - bearerAuth: []\n", &s);
    assert_non_null(strstr(s.error, "openapi.yaml:4: security must be"));
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s <openapi.yaml>\n", argv[0]);
        return 2;
    }
    void *spec_file = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(spec_and_gateway_list_the_same_operations, spec_file),
        cmocka_unit_test_prestate(
            every_spec_path_is_matched_by_the_gateway_router_with_a_trailing_slash, spec_file),
        cmocka_unit_test(parser_reads_paths_methods_and_security_only_under_paths),
        cmocka_unit_test(comparison_reports_missing_extra_and_token_mismatches),
        cmocka_unit_test(comparison_reports_an_operation_listed_with_and_without_the_slash),
        cmocka_unit_test(parser_refuses_an_operation_without_security),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
