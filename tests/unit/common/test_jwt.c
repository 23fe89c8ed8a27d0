/*
 * Tests for common/src/jwt.c. Keys are made fresh with OpenSSL for each
 * run; hostile tokens are built with libjwt itself, the way an attacker
 * would. The .c file is included so the cache tests can look at entries.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../../common/src/jwt.c"

#define ISS "linktr-auth"
#define AUD "linktr"
#define SUB "7d1f6a52-3c55-4a77-9a0e-1b2c3d4e5f60"

typedef struct keypair {
    char *priv; /* PEM, private */
    size_t priv_len;
    char *pub; /* PEM, SubjectPublicKeyInfo */
    size_t pub_len;
    EVP_PKEY *key;
} keypair_t;

typedef struct fixture {
    keypair_t a, b;
    cm_jwt_signer_t *sa, *sb;
} fixture_t;

static char *bio_text(BIO *bio, size_t *len)
{
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    assert_true(n > 0);
    *len = (size_t)n;
    return cm_xstrndup(data, (size_t)n);
}

static void make_keypair(keypair_t *kp, const char *curve)
{
    kp->key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
    assert_non_null(kp->key);
    BIO *priv = BIO_new(BIO_s_mem()), *pub = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_PrivateKey(priv, kp->key, NULL, NULL, 0, NULL, NULL));
    assert_true(PEM_write_bio_PUBKEY(pub, kp->key));
    kp->priv = bio_text(priv, &kp->priv_len);
    kp->pub = bio_text(pub, &kp->pub_len);
    BIO_free(priv);
    BIO_free(pub);
}

static void free_keypair(keypair_t *kp)
{
    free(kp->priv);
    free(kp->pub);
    EVP_PKEY_free(kp->key);
}

static int setup(void **state)
{
    fixture_t *f = cm_xcalloc(1, sizeof *f);
    make_keypair(&f->a, "P-256");
    make_keypair(&f->b, "P-256");
    int err = 1;
    f->sa = cm_jwt_signer_new(f->a.priv, f->a.priv_len, "k1", ISS, AUD, 900, &err);
    assert_int_equal(err, 0);
    f->sb = cm_jwt_signer_new(f->b.priv, f->b.priv_len, "k2", ISS, AUD, 900, &err);
    assert_int_equal(err, 0);
    *state = f;
    return f->sa && f->sb ? 0 : -1;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    cm_jwt_signer_free(f->sa);
    cm_jwt_signer_free(f->sb);
    free_keypair(&f->a);
    free_keypair(&f->b);
    free(f);
    return 0;
}

/* A verifier that knows key a as "k1" (and key b as "k2" if both). */
static cm_jwt_verifier_t *verifier(const fixture_t *f, bool both, size_t cache)
{
    cm_jwt_verifier_t *v = cm_jwt_verifier_new(ISS, AUD, cache);
    assert_non_null(v);
    assert_int_equal(cm_jwt_verifier_add_key(v, "k1", f->a.pub, f->a.pub_len), 0);
    if (both)
        assert_int_equal(cm_jwt_verifier_add_key(v, "k2", f->b.pub, f->b.pub_len), 0);
    return v;
}

static int verify(cm_jwt_verifier_t *v, const char *tok, cm_jwt_claims_t *c)
{
    return cm_jwt_verify(v, tok, strlen(tok), c);
}

/* Builds a token the way anyone with libjwt could: any alg, key, kid and claims. */
static char *forge(jwt_alg_t alg, const char *key, size_t key_len, const char *kid,
                   json_t *claims /* stolen */)
{
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_set_alg(jwt, alg, (const unsigned char *)key, (int)key_len), 0);
    if (kid)
        assert_int_equal(jwt_add_header(jwt, "kid", kid), 0);
    char *text = json_dumps(claims, JSON_COMPACT);
    assert_int_equal(jwt_add_grants_json(jwt, text), 0);
    free(text);
    json_decref(claims);
    char *tok = jwt_encode_str(jwt);
    assert_non_null(tok);
    jwt_free(jwt);
    return tok;
}

static int64_t now_s(void)
{
    return cm_now_us() / 1000000;
}

/* Valid claims with exp/nbf/iat shifted by the given offsets from now. */
static json_t *claims_at(long exp_off, long nbf_off)
{
    int64_t now = now_s();
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "iss", ISS, "aud", AUD, "sub", SUB,
                     "username", "ada", "jti", "j-1", "iat", (json_int_t)now, "nbf",
                     (json_int_t)now + nbf_off, "exp", (json_int_t)now + exp_off);
}

/* ---- signing and verifying ---------------------------------------------------------- */

/* Read-your-writes: the referral code travels in the access token. */
static void a_token_carries_the_referral_code_when_given_one(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 0);
    char *tok = NULL, *plain = NULL, *none = NULL;
    assert_int_equal(cm_jwt_sign_ref(f->sa, SUB, "ada", "7KQ2M9XD", &tok, NULL), 0);
    cm_jwt_claims_t c;
    assert_int_equal(verify(v, tok, &c), 0);
    assert_string_equal(c.ref, "7KQ2M9XD");
    assert_int_equal(cm_jwt_sign(f->sa, SUB, "ada", &plain, NULL), 0);
    assert_int_equal(verify(v, plain, &c), 0);
    assert_string_equal(c.ref, "");
    assert_int_equal(cm_jwt_sign_ref(f->sa, SUB, "ada", "ABCDEFGHJKMNPQRST", &none, NULL),
                     CM_EINVAL);
    assert_null(none);
    free(tok);
    free(plain);
    cm_jwt_verifier_free(v);
}

/* The session id travels in the access token, so auth can mark the caller's session. */
static void a_token_carries_the_session_id_when_given_one(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 0);
    static const char sid[] = "0b6d0c39-5b7e-4c1e-9a51-2f5d3c7e8a10";
    char *tok = NULL, *plain = NULL, *none = NULL;
    assert_int_equal(cm_jwt_sign_sid(f->sa, SUB, "ada", "7KQ2M9XD", sid, &tok, NULL), 0);
    cm_jwt_claims_t c;
    assert_int_equal(verify(v, tok, &c), 0);
    assert_string_equal(c.sid, sid);
    assert_string_equal(c.ref, "7KQ2M9XD");
    assert_int_equal(cm_jwt_sign_ref(f->sa, SUB, "ada", "7KQ2M9XD", &plain, NULL), 0);
    assert_int_equal(verify(v, plain, &c), 0);
    assert_string_equal(c.sid, "");
    assert_int_equal(cm_jwt_sign_sid(f->sa, SUB, "ada", NULL,
                                     "0b6d0c39-5b7e-4c1e-9a51-2f5d3c7e8a10-and-more", &none, NULL),
                     CM_EINVAL);
    assert_null(none);
    free(tok);
    free(plain);
    cm_jwt_verifier_free(v);
}

static void a_signed_token_verifies_with_its_claims(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 0);
    char *tok = NULL;
    int64_t exp = 0;
    assert_int_equal(cm_jwt_sign(f->sa, SUB, "ada", &tok, &exp), 0);
    cm_jwt_claims_t c;
    assert_int_equal(verify(v, tok, &c), 0);
    assert_string_equal(c.sub, SUB);
    assert_string_equal(c.username, "ada");
    assert_true(cm_is_uuid(c.jti, strlen(c.jti)));
    assert_int_equal(c.exp, exp);
    assert_int_equal(c.exp - c.iat, 900);
    assert_true(c.iat >= now_s() - 5 && c.iat <= now_s());
    char *tok2 = NULL;
    assert_int_equal(cm_jwt_sign(f->sa, SUB, "ada", &tok2, NULL), 0);
    cm_jwt_claims_t c2;
    assert_int_equal(verify(v, tok2, &c2), 0);
    assert_string_not_equal(c.jti, c2.jti);
    char *none = NULL;
    assert_int_equal(cm_jwt_sign(f->sa, "", "ada", &none, NULL), CM_EINVAL);
    char long_name[65];
    memset(long_name, 'n', 64);
    long_name[64] = '\0';
    assert_int_equal(cm_jwt_sign(f->sa, SUB, long_name, &none, NULL), CM_EINVAL);
    assert_null(none);
    free(tok);
    free(tok2);
    cm_jwt_verifier_free(v);
}

static void an_expired_token_is_refused_but_clock_skew_within_30s_is_not(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 16);
    cm_jwt_claims_t c;
    char *old = forge(JWT_ALG_ES256, f->a.priv, f->a.priv_len, "k1", claims_at(-31, -900));
    assert_int_equal(verify(v, old, &c), CM_EAUTH);
    char *skewed = forge(JWT_ALG_ES256, f->a.priv, f->a.priv_len, "k1", claims_at(-10, -900));
    assert_int_equal(verify(v, skewed, &c), 0);
    char *future = forge(JWT_ALG_ES256, f->a.priv, f->a.priv_len, "k1", claims_at(900, 60));
    assert_int_equal(verify(v, future, &c), CM_EAUTH);
    free(old);
    free(skewed);
    free(future);
    cm_jwt_verifier_free(v);
}

static void a_token_for_another_audience_or_issuer_is_refused(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 16);
    cm_jwt_verifier_t *other_aud = cm_jwt_verifier_new(ISS, "billing", 16);
    cm_jwt_verifier_t *other_iss = cm_jwt_verifier_new("evil", AUD, 16);
    assert_int_equal(cm_jwt_verifier_add_key(other_aud, "k1", f->a.pub, f->a.pub_len), 0);
    assert_int_equal(cm_jwt_verifier_add_key(other_iss, "k1", f->a.pub, f->a.pub_len), 0);
    char *tok = NULL;
    assert_int_equal(cm_jwt_sign(f->sa, SUB, "ada", &tok, NULL), 0);
    cm_jwt_claims_t c;
    assert_int_equal(verify(v, tok, &c), 0);
    assert_int_equal(verify(other_aud, tok, &c), CM_EAUTH);
    assert_int_equal(verify(other_iss, tok, &c), CM_EAUTH);
    free(tok);
    cm_jwt_verifier_free(v);
    cm_jwt_verifier_free(other_aud);
    cm_jwt_verifier_free(other_iss);
}

static void a_token_missing_sub_or_iat_or_with_wrong_claim_types_is_refused(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 0);
    cm_jwt_claims_t c;
    const char *drop[] = {"sub", "iat", "exp", "iss", "aud"};
    for (size_t i = 0; i < sizeof drop / sizeof *drop; i++) {
        json_t *cl = claims_at(900, 0);
        json_object_del(cl, drop[i]);
        char *tok = forge(JWT_ALG_ES256, f->a.priv, f->a.priv_len, "k1", cl);
        assert_int_equal(verify(v, tok, &c), CM_EAUTH);
        free(tok);
    }
    json_t *cl = claims_at(900, 0);
    json_object_set_new(cl, "exp", json_string("9999999999"));
    char *tok = forge(JWT_ALG_ES256, f->a.priv, f->a.priv_len, "k1", cl);
    assert_int_equal(verify(v, tok, &c), CM_EAUTH);
    free(tok);
    cl = claims_at(900, 0);
    json_object_set_new(cl, "sub", json_string(""));
    tok = forge(JWT_ALG_ES256, f->a.priv, f->a.priv_len, "k1", cl);
    assert_int_equal(verify(v, tok, &c), CM_EAUTH);
    free(tok);
    cm_jwt_verifier_free(v);
}

static void a_token_with_an_unknown_or_missing_kid_is_refused(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 16);
    cm_jwt_claims_t c;
    char *tok = forge(JWT_ALG_ES256, f->a.priv, f->a.priv_len, "k9", claims_at(900, 0));
    assert_int_equal(verify(v, tok, &c), CM_EAUTH);
    free(tok);
    tok = forge(JWT_ALG_ES256, f->a.priv, f->a.priv_len, NULL, claims_at(900, 0));
    assert_int_equal(verify(v, tok, &c), CM_EAUTH);
    free(tok);
    /* A kid that merely starts like a known one is not that one. */
    tok = forge(JWT_ALG_ES256, f->a.priv, f->a.priv_len, "k1x", claims_at(900, 0));
    assert_int_equal(verify(v, tok, &c), CM_EAUTH);
    free(tok);
    cm_jwt_verifier_free(v);
}

static void an_hs256_token_keyed_with_the_public_pem_is_refused(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 16);
    char *tok = forge(JWT_ALG_HS256, f->a.pub, f->a.pub_len, "k1", claims_at(900, 0));
    /* The attack is real: libjwt 1.10 on its own accepts this token. */
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_decode(&jwt, tok, (const unsigned char *)f->a.pub, (int)f->a.pub_len), 0);
    jwt_free(jwt);
    cm_jwt_claims_t c;
    assert_int_equal(verify(v, tok, &c), CM_EAUTH);
    free(tok);
    cm_jwt_verifier_free(v);
}

static void an_alg_none_token_is_refused_with_or_without_a_signature(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 16);
    char *tok = forge(JWT_ALG_NONE, NULL, 0, "k1", claims_at(900, 0));
    cm_jwt_claims_t c;
    assert_int_equal(verify(v, tok, &c), CM_EAUTH);
    /* Give it a signature segment so only the header check can stop it. */
    char *padded = cm_xasprintf("%sAAAA", tok);
    assert_int_equal(verify(v, padded, &c), CM_EAUTH);
    free(padded);
    free(tok);
    cm_jwt_verifier_free(v);
}

/* Replaces the middle segment of tok with base64url(payload). */
static char *swap_payload(const char *tok, const char *payload)
{
    const char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    char b64[1024];
    sodium_bin2base64(b64, sizeof b64, (const unsigned char *)payload, strlen(payload),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    cm_buf_t b;
    cm_buf_init(&b);
    cm_buf_append(&b, tok, (size_t)(d1 - tok) + 1);
    cm_buf_puts(&b, b64);
    cm_buf_puts(&b, d2);
    return cm_buf_steal(&b);
}

static void a_token_with_a_tampered_payload_is_refused(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 16);
    char *tok = NULL;
    assert_int_equal(cm_jwt_sign(f->sa, SUB, "ada", &tok, NULL), 0);
    json_t *cl = claims_at(900, 0);
    json_object_set_new(cl, "sub", json_string("00000000-0000-4000-8000-000000000000"));
    char *text = json_dumps(cl, JSON_COMPACT);
    char *bad = swap_payload(tok, text);
    cm_jwt_claims_t c;
    assert_int_equal(verify(v, bad, &c), CM_EAUTH);
    /* And a flipped bit in the signature. */
    size_t n = strlen(tok);
    tok[n - 5] = tok[n - 5] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(v, tok, &c), CM_EAUTH);
    free(bad);
    free(text);
    json_decref(cl);
    free(tok);
    cm_jwt_verifier_free(v);
}

static void a_token_signed_by_another_key_under_a_known_kid_is_refused(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 16);
    char *tok = forge(JWT_ALG_ES256, f->b.priv, f->b.priv_len, "k1", claims_at(900, 0));
    cm_jwt_claims_t c;
    assert_int_equal(verify(v, tok, &c), CM_EAUTH);
    free(tok);
    cm_jwt_verifier_free(v);
}

static void garbage_oversized_and_misshapen_tokens_are_refused(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 16);
    cm_jwt_claims_t c;
    char *tok = NULL;
    assert_int_equal(cm_jwt_sign(f->sa, SUB, "ada", &tok, NULL), 0);
    assert_int_equal(verify(v, tok, &c), 0);
    const char *bad[] = {
        "",       "abc",     "a.b",        "a.b.c.d", "a..c",
        ".b.c",   "a.b.",    "a b.c.d",    "a.b.c=",  "eyJhbGciOiJFUzI1NiJ9.e30.AAAA",
        "%%.%.%", "a.b.c\n", "e30.e30.e30"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(verify(v, bad[i], &c), CM_EAUTH);
    /* A valid token followed by more bytes, or cut short, is not valid. */
    size_t n = strlen(tok);
    char *longer = cm_xasprintf("%s.x", tok);
    assert_int_equal(verify(v, longer, &c), CM_EAUTH);
    assert_int_equal(cm_jwt_verify(v, tok, n - 1, &c), CM_EAUTH);
    char *with_nul = cm_xasprintf("%s?", tok);
    with_nul[n] = '\0';
    assert_int_equal(cm_jwt_verify(v, with_nul, n + 1, &c), CM_EAUTH);
    char *huge = cm_xmalloc(CM_JWT_MAX_LEN + 2);
    memset(huge, 'A', CM_JWT_MAX_LEN + 1);
    huge[10] = '.';
    huge[20] = '.';
    huge[CM_JWT_MAX_LEN + 1] = '\0';
    assert_int_equal(verify(v, huge, &c), CM_EAUTH);
    assert_int_equal(cm_jwt_verify(v, NULL, 0, &c), CM_EAUTH);
    free(huge);
    free(with_nul);
    free(longer);
    free(tok);
    cm_jwt_verifier_free(v);
}

static void tokens_from_both_rotation_keys_are_accepted(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *only_k1 = verifier(f, false, 16);
    cm_jwt_verifier_t *v = verifier(f, true, 16);
    char *t1 = NULL, *t2 = NULL;
    assert_int_equal(cm_jwt_sign(f->sa, SUB, "ada", &t1, NULL), 0);
    assert_int_equal(cm_jwt_sign(f->sb, SUB, "ada", &t2, NULL), 0);
    cm_jwt_claims_t c;
    assert_int_equal(verify(v, t1, &c), 0);
    assert_int_equal(verify(v, t2, &c), 0);
    assert_int_equal(verify(only_k1, t2, &c), CM_EAUTH);
    /* A second key under a kid already present is refused. */
    assert_int_equal(cm_jwt_verifier_add_key(v, "k1", f->b.pub, f->b.pub_len), CM_EINVAL);
    free(t1);
    free(t2);
    cm_jwt_verifier_free(only_k1);
    cm_jwt_verifier_free(v);
}

/* ---- the cache ------------------------------------------------------------------------- */

static cache_entry_t *entry_for(cm_jwt_verifier_t *v, const char *tok)
{
    uint8_t hash[CACHE_HASH_BYTES];
    cache_hash(v, tok, strlen(tok), hash);
    return cache_find(v, cache_set(v, hash), hash);
}

/* A hash that lands in set 0 (its first 8 bytes are zero), told apart by its last byte. */
static void set0_hash(uint8_t hash[32], uint8_t n)
{
    memset(hash, 0, 32);
    hash[31] = n;
}

static void a_full_cache_set_gives_up_its_soonest_expiring_entry(void **state)
{
    (void)state;
    cm_jwt_verifier_t *v = cm_jwt_verifier_new(ISS, AUD, 16);
    assert_int_equal(v->cache_size % CACHE_WAYS, 0);
    int64_t now = now_s();
    uint8_t h[32];
    cm_jwt_claims_t c;
    memset(&c, 0, sizeof c);
    /* Four tokens sharing a set all stay cached (one way per slot evicted each other). */
    for (uint8_t n = 0; n < CACHE_WAYS; n++) {
        set0_hash(h, n);
        c.exp = now + 600 + (n == 2 ? -300 : n); /* entry 2 expires first */
        cache_put(v, h, &c);
    }
    cm_jwt_claims_t out;
    for (uint8_t n = 0; n < CACHE_WAYS; n++) {
        set0_hash(h, n);
        assert_true(cache_get(v, h, now, &out));
    }
    /* A fifth replaces the soonest-expiring one, and only that one. */
    set0_hash(h, 9);
    c.exp = now + 900;
    cache_put(v, h, &c);
    assert_true(cache_get(v, h, now, &out));
    for (uint8_t n = 0; n < CACHE_WAYS; n++) {
        set0_hash(h, n);
        assert_int_equal(cache_get(v, h, now, &out), n != 2);
    }
    cm_jwt_verifier_free(v);
}

static void a_cache_hit_returns_the_same_claims(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 64);
    char *tok = NULL;
    assert_int_equal(cm_jwt_sign(f->sa, SUB, "ada", &tok, NULL), 0);
    assert_null(entry_for(v, tok));
    cm_jwt_claims_t first, second;
    assert_int_equal(verify(v, tok, &first), 0);
    assert_non_null(entry_for(v, tok));
    assert_int_equal(verify(v, tok, &second), 0);
    assert_string_equal(first.sub, second.sub);
    assert_string_equal(first.username, second.username);
    assert_string_equal(first.jti, second.jti);
    assert_string_equal(first.ref, second.ref);
    assert_int_equal(first.iat, second.iat);
    assert_int_equal(first.exp, second.exp);
    /* Refused tokens are never cached. */
    char *bad = forge(JWT_ALG_ES256, f->b.priv, f->b.priv_len, "k1", claims_at(900, 0));
    assert_int_equal(verify(v, bad, &second), CM_EAUTH);
    assert_null(entry_for(v, bad));
    free(bad);
    free(tok);
    cm_jwt_verifier_free(v);
}

static void a_cache_hit_skips_the_signature_but_an_expired_entry_is_never_served(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 64);
    char *tok = NULL;
    assert_int_equal(cm_jwt_sign(f->sa, SUB, "ada", &tok, NULL), 0);
    cm_jwt_claims_t c;
    assert_int_equal(verify(v, tok, &c), 0);
    cache_entry_t *e = entry_for(v, tok);
    assert_non_null(e);
    /* Mark the entry: a hit hands back what the cache holds. */
    strcpy(e->claims.username, "from-cache");
    assert_int_equal(verify(v, tok, &c), 0);
    assert_string_equal(c.username, "from-cache");
    /* Once its exp (plus leeway) has passed the entry is dropped, not served. */
    e->claims.exp = now_s() - 31;
    assert_int_equal(verify(v, tok, &c), 0);
    assert_string_equal(c.username, "ada"); /* checked again from the token itself */
    assert_true(c.exp > now_s());
    e = entry_for(v, tok);
    assert_non_null(e);
    assert_int_equal(e->claims.exp, c.exp);
    free(tok);
    cm_jwt_verifier_free(v);
}

typedef struct race {
    cm_jwt_verifier_t *v;
    char *tok[4];
    int failures;
} race_t;

static void *verify_many(void *arg)
{
    race_t *r = arg;
    cm_jwt_claims_t c;
    for (int i = 0; i < 200; i++)
        if (verify(r->v, r->tok[i % 4], &c) != 0 || strcmp(c.sub, SUB) != 0)
            r->failures++;
    return NULL;
}

static void concurrent_verifies_through_a_tiny_cache_all_succeed(void **state)
{
    fixture_t *f = *state;
    race_t r[3];
    cm_jwt_verifier_t *v = verifier(f, true, 2); /* four tokens fight over two slots */
    char *tok[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(cm_jwt_sign(i % 2 ? f->sb : f->sa, SUB, "ada", &tok[i], NULL), 0);
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        r[i] = (race_t){.v = v};
        memcpy(r[i].tok, tok, sizeof tok);
        assert_int_equal(pthread_create(&t[i], NULL, verify_many, &r[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(r[i].failures, 0);
    }
    for (int i = 0; i < 4; i++)
        free(tok[i]);
    cm_jwt_verifier_free(v);
}

/* ---- keys, JWKS, loading ------------------------------------------------------------------ */

static void the_jwks_holds_the_kid_and_the_public_point(void **state)
{
    fixture_t *f = *state;
    json_t *jwks = cm_jwt_signer_jwks(f->sa);
    assert_non_null(jwks);
    json_t *keys = json_object_get(jwks, "keys");
    assert_int_equal(json_array_size(keys), 1);
    json_t *k = json_array_get(keys, 0);
    assert_string_equal(json_string_value(json_object_get(k, "kid")), "k1");
    assert_string_equal(json_string_value(json_object_get(k, "kty")), "EC");
    assert_string_equal(json_string_value(json_object_get(k, "crv")), "P-256");
    assert_string_equal(json_string_value(json_object_get(k, "alg")), "ES256");
    assert_string_equal(json_string_value(json_object_get(k, "use")), "sig");
    const char *names[] = {"x", "y"};
    const char *params[] = {OSSL_PKEY_PARAM_EC_PUB_X, OSSL_PKEY_PARAM_EC_PUB_Y};
    for (int i = 0; i < 2; i++) {
        const char *got = json_string_value(json_object_get(k, names[i]));
        assert_non_null(got);
        assert_int_equal(strlen(got), 43);
        char want[COORD_B64];
        assert_int_equal(coord_b64(f->a.key, params[i], want), 0);
        assert_string_equal(got, want);
        uint8_t raw[32];
        size_t n = 0;
        assert_int_equal(sodium_base642bin(raw, sizeof raw, got, 43, NULL, &n, NULL,
                                           sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                         0);
        assert_int_equal(n, 32);
    }
    json_decref(jwks);
}

static void keys_that_are_not_p256_are_refused(void **state)
{
    fixture_t *f = *state;
    keypair_t p384;
    make_keypair(&p384, "P-384");
    int err = 0;
    assert_null(cm_jwt_signer_new(p384.priv, p384.priv_len, "k3", ISS, AUD, 900, &err));
    assert_int_equal(err, CM_ECRYPTO);
    assert_null(cm_jwt_signer_new("garbage", 7, "k3", ISS, AUD, 900, &err));
    assert_int_equal(err, CM_ECRYPTO);
    /* A public key is not a signing key. */
    assert_null(cm_jwt_signer_new(f->a.pub, f->a.pub_len, "k3", ISS, AUD, 900, &err));
    assert_int_equal(err, CM_ECRYPTO);
    assert_null(cm_jwt_signer_new(f->a.priv, f->a.priv_len, "bad kid", ISS, AUD, 900, &err));
    assert_int_equal(err, CM_EINVAL);
    cm_jwt_verifier_t *v = cm_jwt_verifier_new(ISS, AUD, 0);
    assert_int_equal(cm_jwt_verifier_add_key(v, "k3", p384.pub, p384.pub_len), CM_ECRYPTO);
    assert_int_equal(cm_jwt_verifier_add_key(v, "k3", f->a.priv, f->a.priv_len), CM_ECRYPTO);
    assert_int_equal(cm_jwt_verifier_add_key(v, "k/3", f->a.pub, f->a.pub_len), CM_EINVAL);
    cm_jwt_verifier_free(v);
    free_keypair(&p384);
}

static char *write_temp(const char *data, size_t len)
{
    char *path = cm_xstrdup("/tmp/linktr-test-jwt-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
    return path;
}

static void load_reads_kid_path_pairs_and_names_the_bad_entry(void **state)
{
    fixture_t *f = *state;
    char *pa = write_temp(f->a.pub, f->a.pub_len), *pb = write_temp(f->b.pub, f->b.pub_len);
    char *priv = write_temp(f->a.priv, f->a.priv_len);
    char *spec = cm_xasprintf(" k1=%s , k2=%s", pa, pb);
    cm_jwt_verifier_t *v = cm_jwt_verifier_new(ISS, AUD, 0);
    char bad[64] = "x";
    assert_int_equal(cm_jwt_verifier_load_report(v, spec, bad, sizeof bad), 0);
    assert_string_equal(bad, "");
    char *tok = NULL;
    cm_jwt_claims_t c;
    assert_int_equal(cm_jwt_sign(f->sb, SUB, "ada", &tok, NULL), 0);
    assert_int_equal(verify(v, tok, &c), 0);
    free(tok);
    cm_jwt_verifier_free(v);

    struct {
        const char *spec;
        int rc;
        const char *bad;
    } cases[] = {{"k1", CM_EINVAL, "k1"},
                 {"k1=", CM_EINVAL, "k1"},
                 {"", CM_EINVAL, ""},
                 {"k4=/nonexistent/key.pem", CM_EIO, "k4"},
                 {"=x", CM_EINVAL, ""}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        v = cm_jwt_verifier_new(ISS, AUD, 0);
        assert_int_equal(cm_jwt_verifier_load_report(v, cases[i].spec, bad, sizeof bad),
                         cases[i].rc);
        assert_string_equal(bad, cases[i].bad);
        cm_jwt_verifier_free(v);
    }
    char *private_spec = cm_xasprintf("k1=%s,k5=%s", pa, priv);
    v = cm_jwt_verifier_new(ISS, AUD, 0);
    assert_int_equal(cm_jwt_verifier_load_report(v, private_spec, bad, sizeof bad), CM_ECRYPTO);
    assert_string_equal(bad, "k5");
    cm_jwt_verifier_free(v);
    v = cm_jwt_verifier_new(ISS, AUD, 0);
    char *dup = cm_xasprintf("k1=%s,k1=%s", pa, pb);
    assert_int_equal(cm_jwt_verifier_load(v, dup), CM_EINVAL);
    cm_jwt_verifier_free(v);
    unlink(pa);
    unlink(pb);
    unlink(priv);
    free(dup);
    free(private_spec);
    free(spec);
    free(pa);
    free(pb);
    free(priv);
}

/* ---- hostile tokens, the signature path, libjwt interop ---------------------------------- */

/* civetweb 1.15's worker stack (tests/fuzz/worker_stack.c checks Debian's library still sets it).
 */
#define WORKER_STACK 0x19000

/* header.payload.signature from raw header and payload bytes, signed with key (ES256). */
static char *sign_raw(EVP_PKEY *key, const void *hdr, size_t hlen, const void *body, size_t blen)
{
    cm_buf_t b;
    cm_buf_init(&b);
    put_b64url(&b, hdr, hlen);
    cm_buf_puts(&b, ".");
    put_b64url(&b, body, blen);
    uint8_t raw[SIG_RAW];
    assert_int_equal(es256_sign(key, b.data, b.len, raw), 0);
    cm_buf_puts(&b, ".");
    put_b64url(&b, raw, sizeof raw);
    return cm_buf_steal(&b);
}

static const char our_header[] = "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k1\"}";

/* n copies of c, NUL-terminated. */
static char *repeat(char c, size_t n)
{
    char *s = cm_xmalloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

typedef struct deep_case {
    cm_jwt_verifier_t *v;
    char *tok[4];
    int results[4];
} deep_case_t;

static void *verify_deep(void *arg)
{
    deep_case_t *d = arg;
    cm_jwt_claims_t c;
    for (int i = 0; i < 4; i++)
        d->results[i] = verify(d->v, d->tok[i], &c);
    return NULL;
}

static void a_deep_payload_under_our_kid_is_refused_on_a_worker_sized_stack(void **state)
{
    fixture_t *f = *state;
    deep_case_t d = {.v = verifier(f, false, 16)};
    char *brackets = repeat('[', 1500);
    cm_buf_t ob;
    cm_buf_init(&ob);
    for (int i = 0; i < 700; i++)
        cm_buf_puts(&ob, "{\"a\":");
    /* The attack as found: our header, a deep unsigned payload, a dummy signature. */
    cm_buf_t t;
    cm_buf_init(&t);
    put_b64url(&t, our_header, strlen(our_header));
    cm_buf_puts(&t, ".");
    put_b64url(&t, brackets, 1500);
    cm_buf_puts(&t, ".AAAA");
    d.tok[0] = cm_buf_steal(&t);
    /* Properly signed deep payloads (a stolen key must not crash us either). */
    d.tok[1] = sign_raw(f->a.key, our_header, strlen(our_header), brackets, 1500);
    d.tok[2] = sign_raw(f->a.key, our_header, strlen(our_header), ob.data, ob.len);
    /* A deep header: refused before the kid is even looked up. */
    char *deep_hdr = repeat('[', 700);
    d.tok[3] = sign_raw(f->a.key, deep_hdr, 700, "{}", 2);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    assert_int_equal(pthread_attr_setstacksize(&attr, WORKER_STACK), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, &attr, verify_deep, &d), 0);
    pthread_join(th, NULL);
    pthread_attr_destroy(&attr);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(d.results[i], CM_EAUTH);
        free(d.tok[i]);
    }
    free(deep_hdr);
    cm_buf_dispose(&ob);
    free(brackets);
    cm_jwt_verifier_free(d.v);
}

/* tok with its signature segment replaced by base64url of n bytes of sig. */
static char *with_signature(const char *tok, const uint8_t *sig, size_t n)
{
    cm_buf_t b;
    cm_buf_init(&b);
    cm_buf_append(&b, tok, (size_t)(strrchr(tok, '.') - tok) + 1);
    put_b64url(&b, sig, n);
    return cm_buf_steal(&b);
}

static void a_signature_that_is_not_64_bytes_of_r_and_s_is_refused(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 0);
    char *tok = NULL;
    assert_int_equal(cm_jwt_sign(f->sa, SUB, "ada", &tok, NULL), 0);
    const char *sig = strrchr(tok, '.') + 1;
    assert_int_equal(strlen(sig), SIG_B64_LEN);
    uint8_t raw[SIG_RAW + 8];
    size_t n = 0;
    assert_int_equal(sodium_base642bin(raw, sizeof raw, sig, strlen(sig), NULL, &n, NULL,
                                       sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                     0);
    assert_int_equal(n, SIG_RAW);
    cm_jwt_claims_t c;
    assert_int_equal(verify(v, tok, &c), 0);
    /* One byte short, one byte more, the same R||S with a zero byte in front. */
    size_t lens[] = {63, 65, 32, 0};
    raw[64] = 0;
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        char *bad = with_signature(tok, raw, lens[i]);
        assert_int_equal(verify(v, bad, &c), CM_EAUTH);
        free(bad);
    }
    /* The same signature as DER (what OpenSSL makes) is not JOSE's form. */
    uint8_t der[80];
    size_t der_len = 0;
    assert_int_equal(sig_to_der(sig, strlen(sig), der, &der_len), 0);
    char *as_der = with_signature(tok, der, der_len);
    assert_int_equal(verify(v, as_der, &c), CM_EAUTH);
    /* Zero R and S, and all-ones (larger than the group order). */
    memset(raw, 0, SIG_RAW);
    char *zero = with_signature(tok, raw, SIG_RAW);
    assert_int_equal(verify(v, zero, &c), CM_EAUTH);
    memset(raw, 0xff, SIG_RAW);
    char *ones = with_signature(tok, raw, SIG_RAW);
    assert_int_equal(verify(v, ones, &c), CM_EAUTH);
    free(ones);
    free(zero);
    free(as_der);
    free(tok);
    cm_jwt_verifier_free(v);
}

static void a_token_signed_here_by_another_key_under_our_kid_is_refused(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, true, 16);
    int err = 0;
    /* Key b, but claiming to be k1 (key a's kid). */
    cm_jwt_signer_t *liar = cm_jwt_signer_new(f->b.priv, f->b.priv_len, "k1", ISS, AUD, 900, &err);
    assert_non_null(liar);
    char *tok = NULL;
    assert_int_equal(cm_jwt_sign(liar, SUB, "ada", &tok, NULL), 0);
    cm_jwt_claims_t c;
    assert_int_equal(verify(v, tok, &c), CM_EAUTH);
    free(tok);
    cm_jwt_signer_free(liar);
    cm_jwt_verifier_free(v);
}

static void huge_and_invalid_utf8_segments_are_refused(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 16);
    cm_jwt_claims_t c;
    /* Valid JSON claims but one string is not UTF-8, correctly signed. */
    char claims[512];
    int64_t now = now_s();
    int w = snprintf(claims, sizeof claims,
                     "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"" SUB
                     "\",\"username\":\"\xc3\x28\xff\",\"iat\":%lld,\"exp\":%lld}",
                     (long long)now, (long long)now + 900);
    assert_true(w > 0 && (size_t)w < sizeof claims);
    char *bad_utf8 = sign_raw(f->a.key, our_header, strlen(our_header), claims, (size_t)w);
    assert_int_equal(verify(v, bad_utf8, &c), CM_EAUTH);
    const char bad_hdr[] = "{\"alg\":\"ES256\",\"kid\":\"k1\",\"x\":\"\xed\xa0\x80\"}";
    char *bad_utf8_hdr = sign_raw(f->a.key, bad_hdr, sizeof bad_hdr - 1, "{}", 2);
    assert_int_equal(verify(v, bad_utf8_hdr, &c), CM_EAUTH);
    /* The same claims in UTF-8 verify: only the bytes made the difference. */
    claims[strstr(claims, "\xc3\x28\xff") - claims + 1] = '\xa9';
    claims[strstr(claims, "\xc3\xa9\xff") - claims + 2] = 'a';
    char *good = sign_raw(f->a.key, our_header, strlen(our_header), claims, (size_t)w);
    assert_int_equal(verify(v, good, &c), 0);
    assert_string_equal(c.username, "\xc3\xa9"
                                    "a");
    /* Huge segments: a 2,900-byte payload of nothing (signed), a 2,000-byte header, 4,097 in all.
     */
    char *big = repeat(' ', 2900);
    big[0] = '{';
    big[1] = '}';
    char *huge_payload = sign_raw(f->a.key, our_header, strlen(our_header), big, 2900);
    assert_true(strlen(huge_payload) <= CM_JWT_MAX_LEN);
    assert_int_equal(verify(v, huge_payload, &c), CM_EAUTH);
    char *huge_header = sign_raw(f->a.key, big, 2000, "{}", 2);
    assert_int_equal(verify(v, huge_header, &c), CM_EAUTH);
    char *over = repeat('A', CM_JWT_MAX_LEN + 1);
    over[100] = '.';
    over[200] = '.';
    assert_int_equal(verify(v, over, &c), CM_EAUTH);
    free(over);
    free(huge_header);
    free(huge_payload);
    free(big);
    free(good);
    free(bad_utf8_hdr);
    free(bad_utf8);
    cm_jwt_verifier_free(v);
}

static void libjwt_and_this_path_verify_each_others_tokens(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 0);
    /* libjwt signs (the path this module used before), we verify. */
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(
        jwt_set_alg(jwt, JWT_ALG_ES256, (const unsigned char *)f->a.priv, (int)f->a.priv_len), 0);
    assert_int_equal(jwt_add_header(jwt, "kid", "k1"), 0);
    json_t *cl = claims_at(900, 0);
    char *text = json_dumps(cl, JSON_COMPACT);
    json_decref(cl);
    assert_int_equal(jwt_add_grants_json(jwt, text), 0);
    free(text);
    char *theirs = jwt_encode_str(jwt);
    assert_non_null(theirs);
    jwt_free(jwt);
    cm_jwt_claims_t c;
    assert_int_equal(verify(v, theirs, &c), 0);
    assert_string_equal(c.sub, SUB);
    /* We sign, libjwt verifies with the public PEM and reads the same claims. */
    char *ours = NULL;
    assert_int_equal(cm_jwt_sign(f->sa, SUB, "ada", &ours, NULL), 0);
    jwt = NULL;
    assert_int_equal(jwt_decode(&jwt, ours, (const unsigned char *)f->a.pub, (int)f->a.pub_len), 0);
    assert_int_equal(jwt_get_alg(jwt), JWT_ALG_ES256);
    assert_string_equal(jwt_get_grant(jwt, "sub"), SUB);
    assert_string_equal(jwt_get_header(jwt, "kid"), "k1");
    jwt_free(jwt);
    /* And libjwt refuses ours under key b: the signature is really key a's. */
    jwt = NULL;
    assert_int_not_equal(jwt_decode(&jwt, ours, (const unsigned char *)f->b.pub, (int)f->b.pub_len),
                         0);
    jwt_free(jwt);
    free(ours);
    free(theirs);
    cm_jwt_verifier_free(v);
}

static void an_r_or_s_with_leading_zero_bytes_is_left_padded_and_verifies(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 0);
    /* About one signature in 128 has a zero first byte in R or S; look for one. */
    char *tok = NULL;
    bool padded = false;
    for (int i = 0; i < 5000 && !padded; i++) {
        free(tok);
        tok = sign_raw(f->a.key, our_header, strlen(our_header), "{}", 2);
        const char *sig = strrchr(tok, '.') + 1;
        uint8_t raw[SIG_RAW];
        assert_int_equal(sodium_base642bin(raw, sizeof raw, sig, strlen(sig), NULL, NULL, NULL,
                                           sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                         0);
        padded = raw[0] == 0 || raw[32] == 0;
    }
    assert_true(padded);
    uint8_t der[80];
    size_t der_len = 0;
    const char *sig = strrchr(tok, '.') + 1;
    assert_int_equal(sig_to_der(sig, strlen(sig), der, &der_len), 0);
    assert_int_equal(verify_sig(v->keys[0], tok, (size_t)(sig - 1 - tok), sig, strlen(sig)), 0);
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_decode(&jwt, tok, (const unsigned char *)f->a.pub, (int)f->a.pub_len), 0);
    jwt_free(jwt);
    free(tok);
    cm_jwt_verifier_free(v);
}

typedef struct signing {
    cm_jwt_signer_t *s;
    cm_jwt_verifier_t *v;
    int failures;
} signing_t;

static void *sign_many(void *arg)
{
    signing_t *g = arg;
    for (int i = 0; i < 50; i++) {
        char *tok = NULL;
        cm_jwt_claims_t c;
        if (cm_jwt_sign(g->s, SUB, "ada", &tok, NULL) != 0 || verify(g->v, tok, &c) != 0)
            g->failures++;
        free(tok);
    }
    return NULL;
}

static void threads_sharing_one_parsed_key_sign_and_verify_at_once(void **state)
{
    fixture_t *f = *state;
    cm_jwt_verifier_t *v = verifier(f, false, 0);
    signing_t g[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        g[i] = (signing_t){.s = f->sa, .v = v};
        assert_int_equal(pthread_create(&t[i], NULL, sign_many, &g[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(g[i].failures, 0);
    }
    cm_jwt_verifier_free(v);
}

/* ---- the Authorization header ---------------------------------------------------------------- */

static void from_header_takes_a_bearer_token_and_nothing_else(void **state)
{
    (void)state;
    const char *tok = NULL;
    size_t len = 0;
    assert_int_equal(cm_jwt_from_header("Bearer ab.c-d.e_f", &tok, &len), 0);
    assert_int_equal(len, 10);
    assert_memory_equal(tok, "ab.c-d.e_f", 10);
    assert_int_equal(cm_jwt_from_header("bEARER x.y.z", &tok, &len), 0);
    assert_int_equal(len, 5);
    const char *bad[] = {"Bearer",        "Bearer ",
                         "Bearer  a.b.c", "Basic dXNlcjpwYXNz",
                         "Bearer a b",    "Bearer a.b\t",
                         "Bearer a+b/c=", "Bearera.b.c",
                         " Bearer a.b",   "Bearer a\r\nX-Admin: 1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(cm_jwt_from_header(bad[i], &tok, &len), CM_EAUTH);
    assert_int_equal(cm_jwt_from_header(NULL, &tok, &len), CM_EAUTH);
    char *huge = cm_xmalloc(CM_JWT_MAX_LEN + 16);
    memcpy(huge, "Bearer ", 7);
    memset(huge + 7, 'a', CM_JWT_MAX_LEN + 1);
    huge[7 + CM_JWT_MAX_LEN + 1] = '\0';
    assert_int_equal(cm_jwt_from_header(huge, &tok, &len), CM_EAUTH);
    huge[7 + CM_JWT_MAX_LEN] = '\0';
    assert_int_equal(cm_jwt_from_header(huge, &tok, &len), 0);
    assert_int_equal(len, CM_JWT_MAX_LEN);
    free(huge);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_signed_token_verifies_with_its_claims),
        cmocka_unit_test(a_token_carries_the_referral_code_when_given_one),
        cmocka_unit_test(a_token_carries_the_session_id_when_given_one),
        cmocka_unit_test(an_expired_token_is_refused_but_clock_skew_within_30s_is_not),
        cmocka_unit_test(a_token_for_another_audience_or_issuer_is_refused),
        cmocka_unit_test(a_token_missing_sub_or_iat_or_with_wrong_claim_types_is_refused),
        cmocka_unit_test(a_token_with_an_unknown_or_missing_kid_is_refused),
        cmocka_unit_test(an_hs256_token_keyed_with_the_public_pem_is_refused),
        cmocka_unit_test(an_alg_none_token_is_refused_with_or_without_a_signature),
        cmocka_unit_test(a_token_with_a_tampered_payload_is_refused),
        cmocka_unit_test(a_token_signed_by_another_key_under_a_known_kid_is_refused),
        cmocka_unit_test(garbage_oversized_and_misshapen_tokens_are_refused),
        cmocka_unit_test(tokens_from_both_rotation_keys_are_accepted),
        cmocka_unit_test(a_cache_hit_returns_the_same_claims),
        cmocka_unit_test(a_full_cache_set_gives_up_its_soonest_expiring_entry),
        cmocka_unit_test(a_cache_hit_skips_the_signature_but_an_expired_entry_is_never_served),
        cmocka_unit_test(concurrent_verifies_through_a_tiny_cache_all_succeed),
        cmocka_unit_test(the_jwks_holds_the_kid_and_the_public_point),
        cmocka_unit_test(keys_that_are_not_p256_are_refused),
        cmocka_unit_test(load_reads_kid_path_pairs_and_names_the_bad_entry),
        cmocka_unit_test(from_header_takes_a_bearer_token_and_nothing_else),
        cmocka_unit_test(a_deep_payload_under_our_kid_is_refused_on_a_worker_sized_stack),
        cmocka_unit_test(a_signature_that_is_not_64_bytes_of_r_and_s_is_refused),
        cmocka_unit_test(a_token_signed_here_by_another_key_under_our_kid_is_refused),
        cmocka_unit_test(huge_and_invalid_utf8_segments_are_refused),
        cmocka_unit_test(libjwt_and_this_path_verify_each_others_tokens),
        cmocka_unit_test(an_r_or_s_with_leading_zero_bytes_is_left_padded_and_verifies),
        cmocka_unit_test(threads_sharing_one_parsed_key_sign_and_verify_at_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
