/*
 * fuzz_jwt.c — the access-token checks of common/src/jwt.c that run on
 * bytes from the Authorization header before (and around) libjwt.
 *
 * jwt.c is included so its static pre-checks can be driven directly
 * (STYLE.md: "To test a static function, include the .c file"). The
 * verifier holds one test public key (kid "fuzz-key"); its private half
 * only signed the committed seeds and was then thrown away. The cache is
 * off, so every input takes the same path each time.
 *
 * The first byte picks the target; the rest is:
 *   0: a token for cm_jwt_verify (shape, header pin, signature, claims);
 *   1: an Authorization header value for cm_jwt_from_header;
 *   2: a JOSE header as raw JSON, base64url-encoded here, for pin_header;
 *   3: a claims object as raw JSON for load_claims (the depth bound and
 *      parse of a signed payload) and check_claims at a fixed "now".
 * Every input runs on a thread with a civetweb worker's stack (fuzz.h).
 * Each answer is checked against the contract in cm/jwt.h and DESIGN.md
 * (ES256 only, known kid only, iss/aud exact, exp/nbf with 30 s leeway).
 */
#include "jwt.c"

#include "fuzz.h"

#define ISSUER "linktr"
#define AUDIENCE "linktr"
#define KID "fuzz-key"
/* A fixed clock for check_claims: 2027-01-15. */
#define NOW 1800000000

static const char test_key[] = "-----BEGIN PUBLIC KEY-----\n"
                               "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE/J8srH31JbitjTyN/KWgn1abBVaH\n"
                               "qJJKCugxhy+ifa1WTWXH+aXDBMQcggHtPa6325WlYUAztsvqSFeN8OmVuQ==\n"
                               "-----END PUBLIC KEY-----\n";

/* Built once; read-only afterwards (cache off), freed at exit. */
static cm_jwt_verifier_t *verifier;

static void free_verifier(void)
{
    cm_jwt_verifier_free(verifier);
    verifier = NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    verifier = cm_jwt_verifier_new(ISSUER, AUDIENCE, 0);
    FUZZ_CHECK(verifier != NULL);
    FUZZ_CHECK(cm_jwt_verifier_add_key(verifier, KID, test_key, sizeof test_key - 1) == 0);
    atexit(free_verifier);
    return 0;
}

static bool str_member_is(json_t *o, const char *name, const char *want)
{
    json_t *v = json_object_get(o, name); /* borrowed */
    return json_is_string(v) && json_string_length(v) == strlen(want) &&
           memcmp(json_string_value(v), want, strlen(want)) == 0;
}

static void fuzz_verify(const char *tok, size_t len)
{
    cm_jwt_claims_t c;
    memset(&c, 0, sizeof c);
    int rc = cm_jwt_verify(verifier, tok, len, &c);
    FUZZ_CHECK(rc == 0 || rc == CM_EAUTH);
    if (rc == 0) {
        size_t hdr = 0;
        FUZZ_CHECK(len <= CM_JWT_MAX_LEN && token_shape_ok(tok, len, &hdr));
        FUZZ_CHECK(memchr(c.sub, '\0', sizeof c.sub) && c.sub[0] != '\0');
        FUZZ_CHECK(memchr(c.username, '\0', sizeof c.username));
        FUZZ_CHECK(c.exp > cm_now_us() / 1000000 - LEEWAY_S - 5);
    }
    cm_jwt_claims_t again;
    FUZZ_CHECK(cm_jwt_verify(verifier, tok, len, &again) == rc);
}

static void fuzz_header(const char *hdr)
{
    const char *tok = NULL;
    size_t len = 0;
    if (cm_jwt_from_header(hdr, &tok, &len) != 0)
        return;
    FUZZ_CHECK(strncasecmp(hdr, "Bearer ", 7) == 0);
    FUZZ_CHECK(tok == hdr + 7 && len == strlen(hdr) - 7 && len >= 1 && len <= CM_JWT_MAX_LEN);
    for (size_t i = 0; i < len; i++)
        FUZZ_CHECK(is_b64url(tok[i]) || tok[i] == '.');
}

static void fuzz_pin(const uint8_t *raw, size_t len)
{
    if (len > 700) /* the base64 must fit MAX_HEADER_B64 to reach the JSON */
        return;
    char b64[MAX_HEADER_B64 + 1];
    sodium_bin2base64(b64, sizeof b64, raw, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    const vkey_t *key = pin_header(verifier, b64, strlen(b64));
    if (!key)
        return;
    json_t *h = json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, NULL);
    FUZZ_CHECK(json_is_object(h));
    FUZZ_CHECK(str_member_is(h, "alg", "ES256") && str_member_is(h, "kid", KID));
    FUZZ_CHECK(!json_object_get(h, "typ") || str_member_is(h, "typ", "JWT"));
    FUZZ_CHECK(strcmp(key->kid, KID) == 0);
    json_decref(h);
}

static void fuzz_claims(const uint8_t *raw, size_t len)
{
    /* Through load_claims, as cm_jwt_verify reads a signed payload: depth-bounded first. */
    size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *b64 = cm_xmalloc(cap);
    sodium_bin2base64(b64, cap, raw, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    json_t *claims = load_claims(b64, strlen(b64));
    free(b64);
    if (claims)
        FUZZ_CHECK(cm_json_scan((const char *)raw, len, len, CM_JSON_MAX_DEPTH_TOKEN, NULL) == 0);
    cm_jwt_claims_t c;
    memset(&c, 0, sizeof c);
    if (check_claims(verifier, claims, NOW, &c)) {
        FUZZ_CHECK(str_member_is(claims, "iss", ISSUER) && str_member_is(claims, "aud", AUDIENCE));
        FUZZ_CHECK(c.sub[0] != '\0' && memchr(c.sub, '\0', sizeof c.sub));
        FUZZ_CHECK(strlen(c.sub) == json_string_length(json_object_get(claims, "sub")));
        FUZZ_CHECK(c.exp > NOW - LEEWAY_S);
        json_t *nbf = json_object_get(claims, "nbf"); /* borrowed */
        FUZZ_CHECK(!nbf || json_integer_value(nbf) <= NOW + LEEWAY_S);
    }
    json_decref(claims);
}

static int fuzz_one(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *rest = data + 1;
    size_t len = size - 1;
    /* A NUL-terminated copy for the header; the token gets an exact-size one. */
    char *copy = cm_xmalloc(len + 1);
    memcpy(copy, rest, len);
    copy[len] = '\0';
    switch (data[0] % 4) {
    case 0: {
        char *exact = cm_xmalloc(len ? len : 1);
        memcpy(exact, rest, len);
        fuzz_verify(exact, len);
        free(exact);
        break;
    }
    case 1:
        fuzz_header(copy);
        break;
    case 2:
        fuzz_pin(rest, len);
        break;
    default:
        fuzz_claims(rest, len);
        break;
    }
    free(copy);
    return 0;
}

FUZZ_ENTRY(fuzz_one)
