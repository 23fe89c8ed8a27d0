/*
 * fuzz_route.c — cm_route_find (the path matching of every service's route
 * table) and cm_request_id_valid (the X-Request-Id filter), from
 * common/src/http.c.
 *
 * The first byte picks the target. For the router the rest is
 * "METHOD path" (split at the first space); the answer is compared with a
 * reference matcher written here from the contract in cm/http.h: exact
 * path, one trailing slash ignored on both sides, the first route with the
 * method wins (HEAD falls back to the path's GET route, RFC 9110), 405
 * (CM_ESTATE) with an Allow list of the path's distinct methods in table
 * order (HEAD right after GET unless the table routes HEAD itself), else
 * 404 (CM_ENOTFOUND).
 */
#include <string.h>

#include "cm/http.h"
#include "cm/util.h"
#include "fuzz.h"

static void on_any(cm_req_t *rq, void *ctx)
{
    (void)rq;
    (void)ctx;
}

/* Shaped like the services' tables: slashes, a root, a method listed twice. */
static const cm_route_t routes[] = {
    {"POST", "/api/register/", on_any, 0},
    {"POST", "/api/login", on_any, 0},
    {"GET", "/api/me/", on_any, 0},
    {"PATCH", "/api/me", on_any, 0},
    {"GET", "/api/me", on_any, 0},
    {"GET", "/.well-known/jwks.json", on_any, 0},
    {"GET", "/", on_any, 0},
    {"DELETE", "/api/referrals/", on_any, 0},
    {"GET", "/api/referrals/", on_any, 0},
    {"GET", "//", on_any, 0},
    {"HEAD", "/api/referrals", on_any, 0},
};
#define NROUTES (sizeof routes / sizeof routes[0])

static size_t norm_len(const char *p)
{
    size_t n = strlen(p);
    return n > 1 && p[n - 1] == '/' ? n - 1 : n;
}

static bool ref_same(const char *a, const char *b)
{
    return norm_len(a) == norm_len(b) && strncmp(a, b, norm_len(a)) == 0;
}

static size_t find_exact(const char *method, const char *path)
{
    for (size_t i = 0; i < NROUTES; i++)
        if (ref_same(routes[i].path, path) && strcmp(routes[i].method, method) == 0)
            return i;
    return NROUTES;
}

/* The reference: returns the rc and fills want (index) and allow. */
static int reference(const char *method, const char *path, size_t *want, cm_buf_t *allow)
{
    *want = find_exact(method, path);
    if (*want == NROUTES && strcmp(method, "HEAD") == 0)
        *want = find_exact("GET", path);
    if (*want < NROUTES)
        return 0;
    bool known = false;
    for (size_t i = 0; i < NROUTES; i++) {
        if (!ref_same(routes[i].path, path))
            continue;
        bool seen = false;
        for (size_t j = 0; j < i; j++)
            seen = seen || (ref_same(routes[j].path, path) &&
                            strcmp(routes[j].method, routes[i].method) == 0);
        if (!seen) {
            cm_buf_puts(allow, known ? ", " : "");
            cm_buf_puts(allow, routes[i].method);
            if (strcmp(routes[i].method, "GET") == 0 && find_exact("HEAD", path) == NROUTES)
                cm_buf_puts(allow, ", HEAD");
        }
        known = true;
    }
    return known ? CM_ESTATE : CM_ENOTFOUND;
}

static void fuzz_router(const char *s)
{
    const char *sp = strchr(s, ' ');
    char *method = cm_xstrndup(s, sp ? (size_t)(sp - s) : strlen(s));
    const char *path = sp ? sp + 1 : "";
    const cm_route_t *found = NULL;
    cm_buf_t allow, want_allow;
    cm_buf_init(&allow);
    cm_buf_init(&want_allow);
    size_t want = NROUTES;
    int rc = cm_route_find(routes, NROUTES, method, path, &found, &allow);
    int ref = reference(method, path, &want, &want_allow);
    FUZZ_CHECK(rc == ref);
    FUZZ_CHECK(rc == 0 ? found == &routes[want] : found == NULL);
    FUZZ_CHECK(allow.len == want_allow.len &&
               (allow.len == 0 || strcmp(allow.data, want_allow.data) == 0));
    /* Without the optional outputs the answer is the same. */
    FUZZ_CHECK(cm_route_find(routes, NROUTES, method, path, NULL, NULL) == rc);
    cm_buf_dispose(&allow);
    cm_buf_dispose(&want_allow);
    free(method);
}

static void fuzz_request_id(const char *s)
{
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
    size_t n = strlen(s);
    bool want = n >= 1 && n <= CM_MAX_REQUEST_ID && strspn(s, ok) == n;
    FUZZ_CHECK(cm_request_id_valid(s) == want);
}

static int fuzz_one(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    char *s = cm_xstrndup((const char *)data + 1, size - 1);
    if (data[0] % 2 == 0)
        fuzz_router(s);
    else
        fuzz_request_id(s);
    free(s);
    return 0;
}

FUZZ_ENTRY(fuzz_one)
