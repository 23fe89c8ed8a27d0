/*
 * jwt.c — ES256 access tokens: libjwt signs and checks signatures, OpenSSL
 * parses and validates the PEM keys (and gives x/y for the JWKS), jansson
 * reads the header ourselves so the algorithm and key id are pinned before
 * libjwt sees the token.
 */
#include "cm/jwt.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <sodium.h>

#include "cm/crypto.h"
#include "cm/util.h"

/* Clock skew tolerated on exp and nbf. */
#define LEEWAY_S 30
/* Largest PEM key accepted (also what cm_jwt_verifier_load reads). */
#define MAX_PEM 16384
/* A JOSE header of ours is ~60 bytes; anything this large is not ours. */
#define MAX_HEADER_B64 1024
/* Cache sets share this many locks (set i uses lock i % CACHE_STRIPES). */
#define CACHE_STRIPES 16
/*
 * Entries per cache set. With one entry per slot, two live tokens whose
 * hashes share a slot evict each other on every request: with 1,000 tokens
 * in 4,096 slots about a fifth of the requests paid the full ES256 check.
 * Four ways make that rare; a full set gives up its soonest-expiring entry.
 */
#define CACHE_WAYS 4
/* base64url of a 32-byte coordinate, plus NUL. */
#define COORD_B64 44

struct cm_jwt_signer {
    char *pem; /* private key; wiped on free */
    size_t pem_len;
    char kid[CM_JWT_KID_MAX + 1];
    char *issuer;
    char *audience;
    int ttl_s;
    char x[COORD_B64], y[COORD_B64];
};

/* One accepted public key. Never removed before the verifier is freed, so
 * a pointer found under the read lock stays valid after it is released. */
typedef struct vkey {
    char kid[CM_JWT_KID_MAX + 1];
    char *pem;
    size_t pem_len;
} vkey_t;

typedef struct cache_entry {
    bool used;
    uint8_t hash[crypto_hash_sha256_BYTES];
    cm_jwt_claims_t claims; /* claims.exp is when the entry dies */
} cache_entry_t;

struct cm_jwt_verifier {
    char *issuer;
    char *audience;
    pthread_rwlock_t keys_lock;
    vkey_t **keys;
    size_t nkeys;
    cache_entry_t *cache; /* cache_size entries (a multiple of CACHE_WAYS), or NULL */
    size_t cache_size;
    pthread_mutex_t stripes[CACHE_STRIPES];
};

/* ---- keys ------------------------------------------------------------------- */

static bool kid_valid(const char *kid, size_t len)
{
    if (len == 0 || len > CM_JWT_KID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = kid[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* Refuses encrypted PEM keys instead of prompting on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* Parses a PEM key (private or public); NULL unless it is an EC P-256 key. */
static EVP_PKEY *parse_p256(const char *pem, size_t len, bool private_key)
{
    if (!pem || len == 0 || len > MAX_PEM)
        return NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio)
        return NULL;
    EVP_PKEY *key = private_key ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL)
                                : PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    char group[64] = "";
    if (!key || EVP_PKEY_get_base_id(key) != EVP_PKEY_EC ||
        !EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                        NULL) ||
        strcmp(group, SN_X9_62_prime256v1) != 0) {
        EVP_PKEY_free(key);
        return NULL;
    }
    return key;
}

/* Writes one affine coordinate of the public point as 43 base64url chars. */
static int coord_b64(const EVP_PKEY *key, const char *param, char out[COORD_B64])
{
    BIGNUM *bn = NULL;
    uint8_t raw[32];
    if (!EVP_PKEY_get_bn_param(key, param, &bn))
        return CM_ECRYPTO;
    int n = BN_bn2binpad(bn, raw, sizeof raw);
    BN_free(bn);
    if (n != (int)sizeof raw)
        return CM_ECRYPTO;
    sodium_bin2base64(out, COORD_B64, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return 0;
}

/* ---- signer ------------------------------------------------------------------- */

static bool signer_args_ok(const char *pem, size_t len, const char *kid, const char *issuer,
                           const char *audience, int ttl_s)
{
    return pem && len > 0 && len <= MAX_PEM && kid && kid_valid(kid, strlen(kid)) && issuer &&
           *issuer && audience && *audience && ttl_s > 0;
}

cm_jwt_signer_t *cm_jwt_signer_new(const char *pem, size_t len, const char *kid, const char *issuer,
                                   const char *audience, int ttl_s, int *err)
{
    int dummy = 0;
    err = err ? err : &dummy;
    *err = CM_EINVAL;
    if (!signer_args_ok(pem, len, kid, issuer, audience, ttl_s))
        return NULL;
    *err = CM_ECRYPTO;
    EVP_PKEY *key = parse_p256(pem, len, true);
    if (!key)
        return NULL;
    cm_jwt_signer_t *s = cm_xcalloc(1, sizeof *s);
    if (coord_b64(key, OSSL_PKEY_PARAM_EC_PUB_X, s->x) != 0 ||
        coord_b64(key, OSSL_PKEY_PARAM_EC_PUB_Y, s->y) != 0) {
        EVP_PKEY_free(key);
        free(s);
        return NULL;
    }
    EVP_PKEY_free(key);
    s->pem = cm_xstrndup(pem, len);
    s->pem_len = len;
    memcpy(s->kid, kid, strlen(kid) + 1);
    s->issuer = cm_xstrdup(issuer);
    s->audience = cm_xstrdup(audience);
    s->ttl_s = ttl_s;
    *err = 0;
    return s;
}

void cm_jwt_signer_free(cm_jwt_signer_t *s)
{
    if (!s)
        return;
    if (s->pem) {
        sodium_memzero(s->pem, s->pem_len);
        free(s->pem);
    }
    free(s->issuer);
    free(s->audience);
    free(s);
}

/* Adds every claim of a new token; 0 or a libjwt errno. */
static int add_claims(const cm_jwt_signer_t *s, jwt_t *jwt, const char *sub, const char *username,
                      int64_t now)
{
    char jti[37];
    cm_uuid_v4(jti);
    int rc = jwt_add_header(jwt, "kid", s->kid);
    rc = rc ? rc : jwt_add_grant(jwt, "iss", s->issuer);
    rc = rc ? rc : jwt_add_grant(jwt, "aud", s->audience);
    rc = rc ? rc : jwt_add_grant(jwt, "sub", sub);
    rc = rc ? rc : jwt_add_grant(jwt, "username", username);
    rc = rc ? rc : jwt_add_grant(jwt, "jti", jti);
    rc = rc ? rc : jwt_add_grant_int(jwt, "iat", (long)now);
    rc = rc ? rc : jwt_add_grant_int(jwt, "nbf", (long)now);
    rc = rc ? rc : jwt_add_grant_int(jwt, "exp", (long)(now + s->ttl_s));
    return rc;
}

int cm_jwt_sign(cm_jwt_signer_t *s, const char *sub, const char *username, char **token,
                int64_t *exp)
{
    if (!s || !sub || !*sub || strlen(sub) >= sizeof((cm_jwt_claims_t *)0)->sub || !username ||
        strlen(username) >= sizeof((cm_jwt_claims_t *)0)->username || !token)
        return CM_EINVAL;
    *token = NULL;
    int rc = CM_ECRYPTO;
    jwt_t *jwt = NULL;
    int64_t now = cm_now_us() / 1000000;
    if (jwt_new(&jwt) != 0)
        goto out;
    /* libjwt copies the key and scrubs its copy in jwt_free(). */
    if (jwt_set_alg(jwt, JWT_ALG_ES256, (const unsigned char *)s->pem, (int)s->pem_len) != 0)
        goto out;
    if (add_claims(s, jwt, sub, username, now) != 0)
        goto out;
    *token = jwt_encode_str(jwt);
    if (!*token)
        goto out;
    if (exp)
        *exp = now + s->ttl_s;
    rc = 0;
out:
    jwt_free(jwt);
    return rc;
}

json_t *cm_jwt_signer_jwks(const cm_jwt_signer_t *s)
{
    if (!s)
        return NULL;
    json_t *key = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x",
                            s->x, "y", s->y, "kid", s->kid, "use", "sig", "alg", "ES256");
    if (!key)
        return NULL;
    return json_pack("{s:[o]}", "keys", key);
}

/* ---- verifier: keys -------------------------------------------------------------- */

cm_jwt_verifier_t *cm_jwt_verifier_new(const char *issuer, const char *audience, size_t cache_size)
{
    if (!issuer || !*issuer || !audience || !*audience)
        return NULL;
    cm_jwt_verifier_t *v = cm_xcalloc(1, sizeof *v);
    v->issuer = cm_xstrdup(issuer);
    v->audience = cm_xstrdup(audience);
    pthread_rwlock_init(&v->keys_lock, NULL);
    for (int i = 0; i < CACHE_STRIPES; i++)
        pthread_mutex_init(&v->stripes[i], NULL);
    if (cache_size > 0) {
        size_t sets = (cache_size + CACHE_WAYS - 1) / CACHE_WAYS;
        v->cache = cm_xcalloc(sets * CACHE_WAYS, sizeof *v->cache);
        v->cache_size = sets * CACHE_WAYS;
    }
    return v;
}

void cm_jwt_verifier_free(cm_jwt_verifier_t *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->nkeys; i++) {
        free(v->keys[i]->pem);
        free(v->keys[i]);
    }
    free(v->keys);
    if (v->cache) {
        /* The cache holds user ids and token hashes: not secrets, but no reason to leave them. */
        sodium_memzero(v->cache, v->cache_size * sizeof *v->cache);
        free(v->cache);
    }
    pthread_rwlock_destroy(&v->keys_lock);
    for (int i = 0; i < CACHE_STRIPES; i++)
        pthread_mutex_destroy(&v->stripes[i]);
    free(v->issuer);
    free(v->audience);
    free(v);
}

/* Finds a key by kid (a slice from the token header); caller holds keys_lock. */
static const vkey_t *find_key_locked(const cm_jwt_verifier_t *v, const char *kid, size_t len)
{
    for (size_t i = 0; i < v->nkeys; i++)
        if (strlen(v->keys[i]->kid) == len && memcmp(v->keys[i]->kid, kid, len) == 0)
            return v->keys[i];
    return NULL;
}

int cm_jwt_verifier_add_key(cm_jwt_verifier_t *v, const char *kid, const char *pem, size_t len)
{
    if (!v || !kid || !kid_valid(kid, strlen(kid)) || !pem || len == 0 || len > MAX_PEM)
        return CM_EINVAL;
    EVP_PKEY *key = parse_p256(pem, len, false);
    if (!key)
        return CM_ECRYPTO;
    EVP_PKEY_free(key);
    vkey_t *k = cm_xcalloc(1, sizeof *k);
    memcpy(k->kid, kid, strlen(kid) + 1);
    k->pem = cm_xstrndup(pem, len);
    k->pem_len = len;
    int rc = 0;
    pthread_rwlock_wrlock(&v->keys_lock);
    if (find_key_locked(v, kid, strlen(kid))) {
        rc = CM_EINVAL; /* two keys under one kid would make the kid meaningless */
    } else {
        v->keys = cm_xreallocarray(v->keys, v->nkeys + 1, sizeof(vkey_t *)); /* pointers to keys */
        v->keys[v->nkeys++] = k;
        k = NULL;
    }
    pthread_rwlock_unlock(&v->keys_lock);
    if (k) {
        free(k->pem);
        free(k);
    }
    return rc;
}

/* Copies the kid of a spec entry into bad (if given), cut to fit. */
static void report_bad(char *bad, size_t bad_len, const char *kid, size_t kid_len)
{
    if (!bad || bad_len == 0)
        return;
    size_t n = kid_len < bad_len - 1 ? kid_len : bad_len - 1;
    memcpy(bad, kid, n);
    bad[n] = '\0';
}

/* Loads one "kid=path" entry (a slice of the spec, spaces trimmed). */
static int load_entry(cm_jwt_verifier_t *v, const char *e, size_t len, char *bad, size_t bad_len)
{
    const char *eq = memchr(e, '=', len);
    size_t kid_len = eq ? (size_t)(eq - e) : len;
    report_bad(bad, bad_len, e, kid_len);
    if (!eq || !kid_valid(e, kid_len) || eq + 1 == e + len)
        return CM_EINVAL;
    char kid[CM_JWT_KID_MAX + 1];
    memcpy(kid, e, kid_len);
    kid[kid_len] = '\0';
    char *path = cm_xstrndup(eq + 1, (size_t)(e + len - eq - 1));
    char *pem = NULL;
    size_t pem_len = 0;
    int rc = cm_read_file(path, MAX_PEM, &pem, &pem_len);
    if (rc == 0)
        rc = cm_jwt_verifier_add_key(v, kid, pem, pem_len);
    free(pem);
    free(path);
    return rc;
}

int cm_jwt_verifier_load_report(cm_jwt_verifier_t *v, const char *spec, char *bad, size_t bad_len)
{
    report_bad(bad, bad_len, "", 0);
    if (!v || !spec)
        return CM_EINVAL;
    int loaded = 0;
    for (const char *p = spec; *p;) {
        const char *end = strchr(p, ',');
        end = end ? end : p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t' || *a == '\n'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\n'))
            b--;
        if (a < b) {
            int rc = load_entry(v, a, (size_t)(b - a), bad, bad_len);
            if (rc != 0)
                return rc;
            loaded++;
        }
        p = *end ? end + 1 : end;
    }
    report_bad(bad, bad_len, "", 0);
    return loaded > 0 ? 0 : CM_EINVAL;
}

int cm_jwt_verifier_load(cm_jwt_verifier_t *v, const char *spec)
{
    return cm_jwt_verifier_load_report(v, spec, NULL, 0);
}

/* ---- verifier: the cache ----------------------------------------------------------- */

/* The index of the first entry of the set this hash belongs to. */
static size_t cache_set(const cm_jwt_verifier_t *v, const uint8_t hash[32])
{
    uint64_t h;
    memcpy(&h, hash, sizeof h);
    return (size_t)(h % (v->cache_size / CACHE_WAYS)) * CACHE_WAYS;
}

static pthread_mutex_t *cache_lock(cm_jwt_verifier_t *v, size_t set)
{
    return &v->stripes[(set / CACHE_WAYS) % CACHE_STRIPES];
}

/* The entry holding hash in its set, or NULL. The set's lock is held. */
static cache_entry_t *cache_find(cm_jwt_verifier_t *v, size_t set, const uint8_t hash[32])
{
    for (size_t w = 0; w < CACHE_WAYS; w++) {
        cache_entry_t *e = &v->cache[set + w];
        if (e->used && memcmp(e->hash, hash, 32) == 0)
            return e;
    }
    return NULL;
}

/* True (and *out filled) when a live entry for this hash exists; expired ones are dropped. */
static bool cache_get(cm_jwt_verifier_t *v, const uint8_t hash[32], int64_t now,
                      cm_jwt_claims_t *out)
{
    if (!v->cache)
        return false;
    size_t set = cache_set(v, hash);
    bool hit = false;
    pthread_mutex_lock(cache_lock(v, set));
    cache_entry_t *e = cache_find(v, set, hash);
    if (e && e->claims.exp > now - LEEWAY_S) {
        *out = e->claims;
        hit = true;
    } else if (e) {
        memset(e, 0, sizeof *e);
    }
    pthread_mutex_unlock(cache_lock(v, set));
    return hit;
}

/* Stores verified claims in a free entry of the set, else over its soonest-expiring one. */
static void cache_put(cm_jwt_verifier_t *v, const uint8_t hash[32], const cm_jwt_claims_t *c)
{
    if (!v->cache)
        return;
    size_t set = cache_set(v, hash);
    pthread_mutex_lock(cache_lock(v, set));
    cache_entry_t *slot = cache_find(v, set, hash);
    for (size_t w = 0; !slot && w < CACHE_WAYS; w++)
        if (!v->cache[set + w].used)
            slot = &v->cache[set + w];
    if (!slot) {
        slot = &v->cache[set];
        for (size_t w = 1; w < CACHE_WAYS; w++)
            if (v->cache[set + w].claims.exp < slot->claims.exp)
                slot = &v->cache[set + w];
    }
    slot->used = true;
    memcpy(slot->hash, hash, 32);
    slot->claims = *c;
    pthread_mutex_unlock(cache_lock(v, set));
}

/* ---- verifier: the checks ------------------------------------------------------------ */

static bool is_b64url(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Three non-empty base64url segments split by two dots; *hdr_len is the first's length. */
static bool token_shape_ok(const char *t, size_t len, size_t *hdr_len)
{
    size_t dots = 0, seg = 0;
    for (size_t i = 0; i < len; i++) {
        if (t[i] == '.') {
            if (seg == 0 || ++dots > 2)
                return false;
            if (dots == 1)
                *hdr_len = i;
            seg = 0;
        } else if (is_b64url(t[i])) {
            seg++;
        } else {
            return false;
        }
    }
    return dots == 2 && seg > 0;
}

/* Reads the JOSE header; pins alg ES256, typ JWT (or absent) and a known kid. */
static const vkey_t *pin_header(cm_jwt_verifier_t *v, const char *b64, size_t len)
{
    uint8_t raw[MAX_HEADER_B64];
    size_t n = 0;
    const char *end = NULL;
    if (len > MAX_HEADER_B64 ||
        sodium_base642bin(raw, sizeof raw, b64, len, NULL, &n, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        end != b64 + len)
        return NULL;
    json_t *h = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
    json_t *alg = json_object_get(h, "alg"); /* borrowed, as are typ and kid */
    json_t *typ = json_object_get(h, "typ");
    json_t *kid = json_object_get(h, "kid");
    const vkey_t *key = NULL;
    if (json_is_object(h) && json_is_string(alg) && strcmp(json_string_value(alg), "ES256") == 0 &&
        json_string_length(alg) == 5 &&
        (!typ || (json_is_string(typ) && strcmp(json_string_value(typ), "JWT") == 0 &&
                  json_string_length(typ) == 3)) &&
        json_is_string(kid)) {
        pthread_rwlock_rdlock(&v->keys_lock);
        key = find_key_locked(v, json_string_value(kid), json_string_length(kid));
        pthread_rwlock_unlock(&v->keys_lock);
    }
    json_decref(h);
    return key;
}

/* Copies a string claim into dst; false if absent, not a string, too long or (if required) empty.
 */
static bool copy_claim(json_t *claims, const char *name, char *dst, size_t cap, bool required)
{
    json_t *c = json_object_get(claims, name); /* borrowed */
    dst[0] = '\0';
    if (!c)
        return !required;
    if (!json_is_string(c) || json_string_length(c) >= cap ||
        strlen(json_string_value(c)) != json_string_length(c))
        return false;
    memcpy(dst, json_string_value(c), json_string_length(c) + 1);
    return !required || dst[0] != '\0';
}

static bool string_claim_is(json_t *claims, const char *name, const char *want)
{
    json_t *c = json_object_get(claims, name); /* borrowed */
    return json_is_string(c) && json_string_length(c) == strlen(want) &&
           strcmp(json_string_value(c), want) == 0;
}

/* iss, aud, sub, username, jti, iat, nbf, exp. */
static bool check_claims(const cm_jwt_verifier_t *v, json_t *claims, int64_t now,
                         cm_jwt_claims_t *out)
{
    json_t *iat = json_object_get(claims, "iat"); /* borrowed, as are nbf and exp */
    json_t *nbf = json_object_get(claims, "nbf");
    json_t *exp = json_object_get(claims, "exp");
    if (!json_is_object(claims) || !string_claim_is(claims, "iss", v->issuer) ||
        !string_claim_is(claims, "aud", v->audience) ||
        !copy_claim(claims, "sub", out->sub, sizeof out->sub, true) ||
        !copy_claim(claims, "username", out->username, sizeof out->username, false) ||
        !copy_claim(claims, "jti", out->jti, sizeof out->jti, false))
        return false;
    if (!json_is_integer(iat) || !json_is_integer(exp) || (nbf && !json_is_integer(nbf)))
        return false;
    if (json_integer_value(exp) <= now - LEEWAY_S)
        return false;
    if (nbf && json_integer_value(nbf) > now + LEEWAY_S)
        return false;
    out->iat = json_integer_value(iat);
    out->exp = json_integer_value(exp);
    return true;
}

/* Signature (libjwt, with the pinned key) and claims of a NUL-terminated token. */
static int verify_full(cm_jwt_verifier_t *v, const char *tok, const vkey_t *key, int64_t now,
                       cm_jwt_claims_t *out)
{
    jwt_t *jwt = NULL;
    char *grants = NULL;
    json_t *claims = NULL;
    int rc = CM_EAUTH;
    if (jwt_decode(&jwt, tok, (const unsigned char *)key->pem, (int)key->pem_len) != 0 || !jwt)
        goto out;
    if (jwt_get_alg(jwt) != JWT_ALG_ES256)
        goto out;
    grants = jwt_get_grants_json(jwt, NULL);
    if (!grants)
        goto out;
    claims = json_loads(grants, JSON_REJECT_DUPLICATES, NULL);
    if (check_claims(v, claims, now, out))
        rc = 0;
out:
    json_decref(claims);
    free(grants);
    jwt_free(jwt);
    return rc;
}

int cm_jwt_verify(cm_jwt_verifier_t *v, const char *token, size_t len, cm_jwt_claims_t *out)
{
    size_t hdr_len = 0;
    if (!v || !token || !out || len == 0 || len > CM_JWT_MAX_LEN ||
        !token_shape_ok(token, len, &hdr_len))
        return CM_EAUTH;
    int64_t now = cm_now_us() / 1000000;
    uint8_t hash[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(hash, (const unsigned char *)token, len);
    cm_jwt_claims_t claims;
    memset(&claims, 0, sizeof claims);
    if (cache_get(v, hash, now, &claims)) {
        *out = claims;
        return 0;
    }
    const vkey_t *key = pin_header(v, token, hdr_len);
    if (!key)
        return CM_EAUTH;
    char tok[CM_JWT_MAX_LEN + 1];
    memcpy(tok, token, len);
    tok[len] = '\0';
    if (verify_full(v, tok, key, now, &claims) != 0)
        return CM_EAUTH;
    cache_put(v, hash, &claims);
    *out = claims;
    return 0;
}

/* ---- the Authorization header --------------------------------------------------------- */

int cm_jwt_from_header(const char *hdr, const char **tok, size_t *len)
{
    static const char scheme[] = "Bearer ";
    const size_t slen = sizeof scheme - 1;
    if (!hdr || !tok || !len)
        return CM_EAUTH;
    size_t n = strnlen(hdr, slen + CM_JWT_MAX_LEN + 1);
    if (n <= slen || n > slen + CM_JWT_MAX_LEN || strncasecmp(hdr, scheme, slen) != 0)
        return CM_EAUTH;
    for (size_t i = slen; i < n; i++)
        if (!is_b64url(hdr[i]) && hdr[i] != '.')
            return CM_EAUTH;
    *tok = hdr + slen;
    *len = n - slen;
    return 0;
}
