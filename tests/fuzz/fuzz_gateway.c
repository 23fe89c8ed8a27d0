/*
 * fuzz_gateway.c — the gateway's parsers of client-controlled text
 * (services/gateway): X-Forwarded-For handling, the list and RATE_LIMITS
 * configuration syntax, the Content-Type and query-string filters, and the
 * JWKS document it fetches when a token names an unknown kid.
 *
 * The first byte picks the target:
 *   0: gw_client_addr. The next byte picks the peer (trusted or not), the
 *      rest is the incoming X-Forwarded-For. The answer must follow
 *      proxy.h: an untrusted peer's header is ignored; the chain sent on
 *      starts with the client and ends with the peer, and holds addresses
 *      only.
 *   1: gw_list_parse: items are non-empty, trimmed and comma-free.
 *   2: gw_rate_spec_parse: accepted rates are positive.
 *   3: cm_content_type_is_json and gw_query_valid against their contracts.
 *   4: gw_jwks_add on a JWKS document (depth-bounded first, as routes.c
 *      does with auth's answer): an added key verifies as a P-256 public
 *      key, and gw_jwk_to_pem on each entry agrees.
 * Every input runs on a thread with a civetweb worker's stack (fuzz.h).
 */
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "cm/jsonscan.h"
#include "cm/jwt.h"
#include "cm/util.h"
#include "config.h"
#include "fuzz.h"
#include "jwks.h"
#include "clientaddr.h"
#include "cm/netaddr.h"
#include "proxy.h"
#include "routes.h"

static const char *const peers[] = {"127.0.0.1", "10.0.0.2", "192.0.2.7", "::1", "2001:db8::5"};
/* The first, second and fourth peers are trusted proxies. */
static const char trusted_spec[] = "127.0.0.1, 10.0.0.2,0:0:0:0:0:0:0:1";

/* Splits a chain "a, b, c" (as gw_client_addr writes it) and checks each entry. */
static void check_chain(const char *xff, const char *client, const char *peer)
{
    char *copy = cm_xstrdup(xff);
    char *save = NULL;
    const char *first = NULL, *last = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        FUZZ_CHECK(cm_ip_valid(tok));
        first = first ? first : tok;
        last = tok;
    }
#ifdef FUZZ_XFF_BY_ADDRESS
    gw_list_t one = {(char **)&client, 1};
    FUZZ_CHECK(first && gw_ip_trusted(first, &one));
#else
    FUZZ_CHECK(first && strcmp(first, client) == 0);
#endif
    FUZZ_CHECK(last && strcmp(last, peer) == 0);
    free(copy);
}

static void fuzz_client_addr(const uint8_t *data, size_t size)
{
    if (size == 0)
        return;
    const char *peer = peers[data[0] % (sizeof peers / sizeof peers[0])];
    char *incoming = cm_xstrndup((const char *)data + 1, size - 1);
    gw_list_t trusted;
    FUZZ_CHECK(gw_list_parse(trusted_spec, &trusted) == 0);
    cm_arena_t *a = cm_arena_new();
    const char *client = NULL, *xff = NULL;
    gw_client_addr(a, peer, incoming, &trusted, &client, &xff);
    FUZZ_CHECK(client && xff && cm_ip_valid(client));
    if (!gw_ip_trusted(peer, &trusted))
        FUZZ_CHECK(strcmp(client, peer) == 0 && strcmp(xff, peer) == 0);
    check_chain(xff, client, peer);
    cm_arena_free(a);
    gw_list_dispose(&trusted);
    free(incoming);
}

static void fuzz_list(const char *s)
{
    gw_list_t l;
    memset(&l, 0, sizeof l);
    if (gw_list_parse(s, &l) == 0) {
        FUZZ_CHECK(l.n > 0);
        for (size_t i = 0; i < l.n; i++) {
            size_t n = strlen(l.items[i]);
            FUZZ_CHECK(n > 0 && !strchr(l.items[i], ','));
            FUZZ_CHECK(l.items[i][0] != ' ' && l.items[i][n - 1] != ' ');
        }
    }
    gw_list_dispose(&l);
    gw_list_dispose(&l); /* documented as idempotent-safe (NULL-safe) */
}

static void fuzz_rates(const char *s)
{
    gw_rate_t rates[GW_RL_COUNT];
    for (int i = 0; i < GW_RL_COUNT; i++)
        rates[i] = (gw_rate_t){10, 60};
    bool on = true;
    if (gw_rate_spec_parse(s, &on, rates) == 0)
        for (int i = 0; i < GW_RL_COUNT; i++)
            FUZZ_CHECK(rates[i].burst > 0 && rates[i].period_s > 0);
}

static void fuzz_filters(const char *s)
{
    if (cm_content_type_is_json(s)) {
        const char *p = s + strspn(s, " \t");
        FUZZ_CHECK(strncasecmp(p, "application/json", 16) == 0);
        p += 16;
        p += strspn(p, " \t");
        FUZZ_CHECK(*p == '\0' || *p == ';');
    }
    if (gw_query_valid(s))
        for (const char *p = s; *p; p++)
            FUZZ_CHECK((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f && *p != '#');
}

static void fuzz_jwks(const uint8_t *data, size_t size)
{
    /* As routes.c reads auth's answer: bounded by cm_json_scan, then parsed. */
    json_t *doc = NULL;
    if (cm_json_scan((const char *)data, size, 64 * 1024, CM_JSON_MAX_DEPTH_UPSTREAM, NULL) == 0)
        doc = json_loadb((const char *)data, size, 0, NULL);
    cm_jwt_verifier_t *v = cm_jwt_verifier_new("linktr", "linktr", 0);
    int added = gw_jwks_add(v, doc);
    json_t *keys = json_object_get(doc, "keys"); /* borrowed */
    FUZZ_CHECK(added == CM_EPARSE || (added >= 0 && (size_t)added <= json_array_size(keys)));
    size_t i;
    json_t *jwk; /* borrowed */
    json_array_foreach(keys, i, jwk)
    {
        char *pem = gw_jwk_to_pem(jwk);
        if (pem) {
            cm_jwt_verifier_t *one = cm_jwt_verifier_new("linktr", "linktr", 0);
            FUZZ_CHECK(cm_jwt_verifier_add_key(one, "k", pem, strlen(pem)) == 0);
            cm_jwt_verifier_free(one);
        }
        free(pem);
    }
    cm_jwt_verifier_free(v);
    json_decref(doc);
}

static int fuzz_one(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *rest = data + 1;
    size_t len = size - 1;
    char *s = cm_xstrndup((const char *)rest, len);
    switch (data[0] % 5) {
    case 0:
        fuzz_client_addr(rest, len);
        break;
    case 1:
        fuzz_list(s);
        break;
    case 2:
        fuzz_rates(s);
        break;
    case 3:
        fuzz_filters(s);
        break;
    default:
        fuzz_jwks(rest, len);
        break;
    }
    free(s);
    return 0;
}

FUZZ_ENTRY(fuzz_one)
