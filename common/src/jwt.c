/*
 * jwt.c — ES256 access tokens.
 *
 * Who does what:
 *   - libjwt 1.10 assembles what we sign: jwt_new, jwt_add_header and
 *     jwt_add_grant* build the header and the claim set, and
 *     jwt_get_headers_json / jwt_get_grants_json give them as JSON.
 *   - OpenSSL parses each PEM key once (the signer's private key, each
 *     kid's public key) into an EVP_PKEY, and signs and verifies ES256
 *     with it (EVP_DigestSign/EVP_DigestVerify, SHA-256, the JOSE raw
 *     R||S signature converted to and from DER).
 *   - jansson reads the header and, only after the signature is good, the
 *     claims, each first bounded by cm_json_scan.
 *
 * Two libjwt calls were replaced, and why:
 *   - jwt_decode parsed the payload (recursively, with jansson) BEFORE it
 *     checked the signature, so an unsigned payload of 1,500 '[' under our
 *     kid overflowed a civetweb worker's 100 KiB stack and killed the
 *     process. Now the signature over header.payload is checked first and
 *     nothing of the payload is parsed before that.
 *   - jwt_set_alg + jwt_encode_str / jwt_decode parsed the PEM key on every
 *     call (~0.4 ms of a sign or verify); the keys are now parsed once.
 * The tests check interoperability both ways: a token signed by libjwt's
 * jwt_encode_str verifies here, and one signed here passes jwt_decode.
 */
#include "cm/jwt.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <sodium.h>

#include "cm/crypto.h"
#include "cm/jsonscan.h"
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
/* An ES256 JOSE signature: R and S, 32 bytes each, big-endian (RFC 7518, 3.4). */
#define SIG_RAW 64
/* base64url of SIG_RAW bytes, without padding. */
#define SIG_B64_LEN 86

struct cm_jwt_signer {
    EVP_PKEY *key; /* private key, parsed once; OpenSSL clears it on free */
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
    EVP_PKEY *key; /* parsed once at load; shared read-only by verifying threads */
} vkey_t;

/*
 * A cache entry is found by a keyed BLAKE2b-256 of the whole token
 * (libsodium's crypto_generichash, a random key per verifier): as
 * collision-resistant as the SHA-256 it replaced and a fraction of its cost
 * (bench/jwt_cost.c times a cached verify), paid on every authenticated
 * request at the gateway and in referral. The key means nobody can compute
 * offline which tokens share a cache set.
 */
#define CACHE_HASH_BYTES 32

typedef struct cache_entry {
    bool used;
    uint8_t hash[CACHE_HASH_BYTES];
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
    uint8_t cache_key[crypto_generichash_KEYBYTES]; /* random, for the entries' hashes */
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
    s->key = key;
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
    EVP_PKEY_free(s->key);
    free(s->issuer);
    free(s->audience);
    free(s);
}

/* Adds the header and every claim of a new token; 0 or a libjwt errno. */
static int add_claims(const cm_jwt_signer_t *s, jwt_t *jwt, const char *sub, const char *username,
                      const char *ref, const char *sid, int64_t now)
{
    char jti[37];
    cm_uuid_v4(jti);
    int rc = jwt_add_header(jwt, "alg", "ES256");
    rc = rc ? rc : jwt_add_header(jwt, "typ", "JWT");
    rc = rc ? rc : jwt_add_header(jwt, "kid", s->kid);
    rc = rc ? rc : jwt_add_grant(jwt, "iss", s->issuer);
    rc = rc ? rc : jwt_add_grant(jwt, "aud", s->audience);
    rc = rc ? rc : jwt_add_grant(jwt, "sub", sub);
    rc = rc ? rc : jwt_add_grant(jwt, "username", username);
    if (ref && *ref)
        rc = rc ? rc : jwt_add_grant(jwt, "ref", ref);
    if (sid && *sid)
        rc = rc ? rc : jwt_add_grant(jwt, "sid", sid);
    rc = rc ? rc : jwt_add_grant(jwt, "jti", jti);
    rc = rc ? rc : jwt_add_grant_int(jwt, "iat", (long)now);
    rc = rc ? rc : jwt_add_grant_int(jwt, "nbf", (long)now);
    rc = rc ? rc : jwt_add_grant_int(jwt, "exp", (long)(now + s->ttl_s));
    return rc;
}

/* Appends base64url (no padding) of len bytes to b. */
static void put_b64url(cm_buf_t *b, const void *bytes, size_t len)
{
    size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = cm_xmalloc(cap);
    sodium_bin2base64(out, cap, bytes, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    cm_buf_puts(b, out);
    free(out);
}

/* Signs msg with ES256 and writes the JOSE signature: R then S, each left-padded to 32 bytes. */
static int es256_sign(EVP_PKEY *key, const char *msg, size_t len, uint8_t raw[SIG_RAW])
{
    int rc = CM_ECRYPTO;
    uint8_t der[80]; /* a DER ECDSA-P256 signature is at most 72 bytes */
    size_t der_len = sizeof der;
    ECDSA_SIG *sig = NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(ctx, der, &der_len, (const unsigned char *)msg, len) != 1)
        goto out;
    const unsigned char *p = der;
    sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    if (!sig || BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, 32) != 32 ||
        BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + 32, 32) != 32)
        goto out;
    rc = 0;
out:
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* header.payload from libjwt's JSON of the header and claims, then the signature. */
static int encode_signed(const cm_jwt_signer_t *s, jwt_t *jwt, char **token)
{
    char *head = jwt_get_headers_json(jwt, NULL);
    char *body = jwt_get_grants_json(jwt, NULL);
    int rc = CM_ECRYPTO;
    cm_buf_t b;
    cm_buf_init(&b);
    if (!head || !body)
        goto out;
    put_b64url(&b, head, strlen(head));
    cm_buf_puts(&b, ".");
    put_b64url(&b, body, strlen(body));
    uint8_t raw[SIG_RAW];
    if (es256_sign(s->key, b.data, b.len, raw) != 0)
        goto out;
    cm_buf_puts(&b, ".");
    put_b64url(&b, raw, sizeof raw);
    *token = cm_buf_steal(&b);
    rc = 0;
out:
    cm_buf_dispose(&b);
    free(head);
    free(body);
    return rc;
}

int cm_jwt_sign(cm_jwt_signer_t *s, const char *sub, const char *username, char **token,
                int64_t *exp)
{
    return cm_jwt_sign_ref(s, sub, username, NULL, token, exp);
}

int cm_jwt_sign_ref(cm_jwt_signer_t *s, const char *sub, const char *username, const char *ref,
                    char **token, int64_t *exp)
{
    return cm_jwt_sign_sid(s, sub, username, ref, NULL, token, exp);
}

int cm_jwt_sign_sid(cm_jwt_signer_t *s, const char *sub, const char *username, const char *ref,
                    const char *sid, char **token, int64_t *exp)
{
    if (!s || !sub || !*sub || strlen(sub) >= sizeof((cm_jwt_claims_t *)0)->sub || !username ||
        strlen(username) >= sizeof((cm_jwt_claims_t *)0)->username || !token ||
        (ref && strlen(ref) >= sizeof((cm_jwt_claims_t *)0)->ref) ||
        (sid && strlen(sid) >= sizeof((cm_jwt_claims_t *)0)->sid))
        return CM_EINVAL;
    *token = NULL;
    int rc = CM_ECRYPTO;
    jwt_t *jwt = NULL;
    int64_t now = cm_now_us() / 1000000;
    /* No jwt_set_alg: libjwt only assembles the JSON; the key never reaches it. */
    if (jwt_new(&jwt) != 0 || add_claims(s, jwt, sub, username, ref, sid, now) != 0)
        goto out;
    if (encode_signed(s, jwt, token) != 0)
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
        randombytes_buf(v->cache_key, sizeof v->cache_key);
    }
    return v;
}

void cm_jwt_verifier_free(cm_jwt_verifier_t *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->nkeys; i++) {
        EVP_PKEY_free(v->keys[i]->key);
        free(v->keys[i]);
    }
    free(v->keys);
    if (v->cache) {
        /* The cache holds user ids and token hashes: not secrets, but no reason to leave them. */
        sodium_memzero(v->cache, v->cache_size * sizeof *v->cache);
        sodium_memzero(v->cache_key, sizeof v->cache_key);
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
    vkey_t *k = cm_xcalloc(1, sizeof *k);
    memcpy(k->kid, kid, strlen(kid) + 1);
    k->key = key;
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
        EVP_PKEY_free(k->key);
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

cm_jwt_verifier_t *cm_jwt_verifier_from_config(const char *service, const cm_jwt_config_t *j,
                                               size_t cache_size, int *err)
{
    *err = 0;
    cm_jwt_verifier_t *v = cm_jwt_verifier_new(j->issuer, j->audience, cache_size);
    if (!v) {
        *err = CM_EINVAL;
        return NULL;
    }
    if (!j->public_keys)
        return v;
    char bad[CM_JWT_KID_MAX + 1] = "";
    int rc = cm_jwt_verifier_load_report(v, j->public_keys, bad, sizeof bad);
    if (rc != 0) {
        fprintf(stderr, "linktr-%s: config: JWT_PUBLIC_KEYS: entry \"%s\": %s\n", service, bad,
                cm_strerror(rc));
        cm_jwt_verifier_free(v);
        *err = rc;
        return NULL;
    }
    return v;
}

int cm_jwt_verifier_load(cm_jwt_verifier_t *v, const char *spec)
{
    return cm_jwt_verifier_load_report(v, spec, NULL, 0);
}

/* ---- verifier: the cache ----------------------------------------------------------- */

/* The token's cache hash (see cache_entry_t). */
static void cache_hash(const cm_jwt_verifier_t *v, const char *token, size_t len,
                       uint8_t out[CACHE_HASH_BYTES])
{
    crypto_generichash(out, CACHE_HASH_BYTES, (const unsigned char *)token, len, v->cache_key,
                       sizeof v->cache_key);
}

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
        end != b64 + len ||
        cm_json_scan((const char *)raw, n, sizeof raw, CM_JSON_MAX_DEPTH_TOKEN, NULL) != 0)
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

/* iss, aud, sub, username, jti, ref, sid, iat, nbf, exp. */
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
        !copy_claim(claims, "jti", out->jti, sizeof out->jti, false) ||
        !copy_claim(claims, "ref", out->ref, sizeof out->ref, false) ||
        !copy_claim(claims, "sid", out->sid, sizeof out->sid, false))
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

/* The JOSE signature (R||S, exactly 64 bytes as 86 base64url chars) as DER; 0 or CM_EAUTH. */
static int sig_to_der(const char *b64, size_t len, uint8_t der[80], size_t *der_len)
{
    uint8_t raw[SIG_RAW];
    size_t n = 0;
    const char *end = NULL;
    if (len != SIG_B64_LEN ||
        sodium_base642bin(raw, sizeof raw, b64, len, NULL, &n, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        n != SIG_RAW || end != b64 + len)
        return CM_EAUTH;
    int rc = CM_EAUTH;
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, 32, NULL), *s = BN_bin2bn(raw + 32, 32, NULL);
    if (!sig || !r || !s || ECDSA_SIG_set0(sig, r, s) != 1)
        goto out;
    r = s = NULL; /* now owned by sig */
    unsigned char *p = der;
    int w = i2d_ECDSA_SIG(sig, NULL);
    if (w <= 0 || w > 80 || i2d_ECDSA_SIG(sig, &p) != w)
        goto out;
    *der_len = (size_t)w;
    rc = 0;
out:
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return rc;
}

/* ES256 over the signed part (header.payload) with the pinned key; 0 or CM_EAUTH. */
static int verify_sig(const vkey_t *key, const char *signed_part, size_t signed_len,
                      const char *sig_b64, size_t sig_len)
{
    uint8_t der[80];
    size_t der_len = 0;
    if (sig_to_der(sig_b64, sig_len, der, &der_len) != 0)
        return CM_EAUTH;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok =
        ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key->key) == 1 &&
        EVP_DigestVerify(ctx, der, der_len, (const unsigned char *)signed_part, signed_len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : CM_EAUTH;
}

/* Decodes and parses the (signed) payload, depth-bounded; a new reference or NULL. */
static json_t *load_claims(const char *b64, size_t len)
{
    uint8_t raw[CM_JWT_MAX_LEN];
    size_t n = 0;
    const char *end = NULL;
    if (sodium_base642bin(raw, sizeof raw, b64, len, NULL, &n, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        end != b64 + len ||
        cm_json_scan((const char *)raw, n, sizeof raw, CM_JSON_MAX_DEPTH_TOKEN, NULL) != 0)
        return NULL;
    return json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
}

/*
 * The signature first, then the claims. Nothing of the payload is decoded
 * or parsed before the signature over header.payload checks out, so a
 * forged payload costs one ECDSA verification and no parse.
 */
static int verify_full(cm_jwt_verifier_t *v, const char *tok, size_t len, const vkey_t *key,
                       int64_t now, cm_jwt_claims_t *out)
{
    const char *d1 = memchr(tok, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(tok + len - d1 - 1)) : NULL;
    if (!d1 || !d2)
        return CM_EAUTH;
    if (verify_sig(key, tok, (size_t)(d2 - tok), d2 + 1, (size_t)(tok + len - d2 - 1)) != 0)
        return CM_EAUTH;
    json_t *claims = load_claims(d1 + 1, (size_t)(d2 - d1 - 1));
    int rc = check_claims(v, claims, now, out) ? 0 : CM_EAUTH;
    json_decref(claims);
    return rc;
}

int cm_jwt_verify(cm_jwt_verifier_t *v, const char *token, size_t len, cm_jwt_claims_t *out)
{
    size_t hdr_len = 0;
    if (!v || !token || !out || len == 0 || len > CM_JWT_MAX_LEN ||
        !token_shape_ok(token, len, &hdr_len))
        return CM_EAUTH;
    int64_t now = cm_now_us() / 1000000;
    uint8_t hash[CACHE_HASH_BYTES];
    cache_hash(v, token, len, hash);
    cm_jwt_claims_t claims;
    memset(&claims, 0, sizeof claims);
    if (cache_get(v, hash, now, &claims)) {
        *out = claims;
        return 0;
    }
    const vkey_t *key = pin_header(v, token, hdr_len);
    if (!key)
        return CM_EAUTH;
    if (verify_full(v, token, len, key, now, &claims) != 0)
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
