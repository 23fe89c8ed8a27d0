/* jwt_cost.c — the CPU cost of one ES256 access-token sign and verify, the
 * way libjwt 1.10 does them (jwt_encode_str / jwt_decode: the PEM key parsed
 * on every call) against common/src/jwt.c (OpenSSL with keys parsed once),
 * measured in one run on the same key and claims.
 *
 *   linktr-bench-jwt [tokens]        (default 2000 per batch, 5 batches)
 *
 * Prints one line per path: the median over the batches of the mean time
 * per operation, in microseconds. The verifier runs with its cache off, so
 * every verify pays the header check, the signature and the claims; a last
 * line times a verify that the cache answers (what the gateway and referral
 * pay for a token they have seen: the shape check and the entry's hash).
 * Exit 0 on success, 1 on a bad argument, 2 when a sign or verify fails. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "cm/crypto.h"
#include "cm/jwt.h"
#include "cm/util.h"

#define BATCHES 5
#define SUB "7d1f6a52-3c55-4a77-9a0e-1b2c3d4e5f60"

typedef struct keys {
    char *priv, *pub;
    size_t priv_len, pub_len;
} keys_t;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static char *pem_of(EVP_PKEY *k, int private_key, size_t *len)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (private_key)
        PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    else
        PEM_write_bio_PUBKEY(b, k);
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    char *out = cm_xstrndup(data, (size_t)n);
    *len = (size_t)n;
    BIO_free(b);
    return out;
}

static char *libjwt_sign(const keys_t *k)
{
    jwt_t *jwt = NULL;
    long now = (long)time(NULL);
    char *tok = NULL;
    if (jwt_new(&jwt) == 0 &&
        jwt_set_alg(jwt, JWT_ALG_ES256, (const unsigned char *)k->priv, (int)k->priv_len) == 0 &&
        jwt_add_header(jwt, "kid", "k1") == 0 && jwt_add_grant(jwt, "iss", "linktr") == 0 &&
        jwt_add_grant(jwt, "aud", "linktr") == 0 && jwt_add_grant(jwt, "sub", SUB) == 0 &&
        jwt_add_grant(jwt, "username", "ada") == 0 && jwt_add_grant(jwt, "jti", "j") == 0 &&
        jwt_add_grant_int(jwt, "iat", now) == 0 && jwt_add_grant_int(jwt, "nbf", now) == 0 &&
        jwt_add_grant_int(jwt, "exp", now + 900) == 0)
        tok = jwt_encode_str(jwt);
    jwt_free(jwt);
    return tok;
}

static int libjwt_verify(const keys_t *k, const char *tok)
{
    jwt_t *jwt = NULL;
    int rc = jwt_decode(&jwt, tok, (const unsigned char *)k->pub, (int)k->pub_len);
    jwt_free(jwt);
    return rc;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct run {
    const keys_t *k;
    cm_jwt_signer_t *s;
    cm_jwt_verifier_t *v, *cached;
    const char *ours, *theirs;
    int bad;
} run_t;

static void op_libjwt_sign(run_t *r)
{
    char *t = libjwt_sign(r->k);
    r->bad |= !t;
    free(t);
}

static void op_openssl_sign(run_t *r)
{
    char *t = NULL;
    r->bad |= cm_jwt_sign(r->s, SUB, "ada", &t, NULL) != 0;
    free(t);
}

static void op_libjwt_verify(run_t *r)
{
    r->bad |= libjwt_verify(r->k, r->theirs) != 0;
}

static void op_openssl_verify(run_t *r)
{
    cm_jwt_claims_t c;
    r->bad |= cm_jwt_verify(r->v, r->ours, strlen(r->ours), &c) != 0;
}

static void op_cached_verify(run_t *r)
{
    cm_jwt_claims_t c;
    r->bad |= cm_jwt_verify(r->cached, r->ours, strlen(r->ours), &c) != 0;
}

/* Runs op n times per batch; returns the median batch's microseconds per op. */
static double time_it(int n, void (*op)(run_t *), run_t *r)
{
    double per[BATCHES];
    for (int b = 0; b < BATCHES; b++) {
        double t0 = now_us();
        for (int i = 0; i < n; i++)
            op(r);
        per[b] = (now_us() - t0) / n;
    }
    qsort(per, BATCHES, sizeof *per, cmp);
    return per[BATCHES / 2];
}

int main(int argc, char **argv)
{
    long long n = 2000;
    if (argc > 1 && cm_strtonum(argv[1], 1, 1000000, &n) != 0) {
        fprintf(stderr, "usage: %s [tokens]\n", argv[0]);
        return 1;
    }
    if (cm_crypto_init() != 0) /* as every service does first: libsodium picks its code paths */
        return 2;
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    keys_t k;
    k.priv = pem_of(key, 1, &k.priv_len);
    k.pub = pem_of(key, 0, &k.pub_len);
    int err = 0;
    cm_jwt_signer_t *s = cm_jwt_signer_new(k.priv, k.priv_len, "k1", "linktr", "linktr", 900, &err);
    cm_jwt_verifier_t *v = cm_jwt_verifier_new("linktr", "linktr", 0);
    cm_jwt_verifier_t *cached = cm_jwt_verifier_new("linktr", "linktr", 1000);
    if (!s || !v || !cached || cm_jwt_verifier_add_key(v, "k1", k.pub, k.pub_len) != 0 ||
        cm_jwt_verifier_add_key(cached, "k1", k.pub, k.pub_len) != 0)
        return 2;
    char *ours = NULL, *theirs = libjwt_sign(&k);
    if (cm_jwt_sign(s, SUB, "ada", &ours, NULL) != 0 || !theirs)
        return 2;
    run_t r = {&k, s, v, cached, ours, theirs, 0};
    double lsign = time_it((int)n, op_libjwt_sign, &r);
    double osign = time_it((int)n, op_openssl_sign, &r);
    double lverify = time_it((int)n, op_libjwt_verify, &r);
    double overify = time_it((int)n, op_openssl_verify, &r);
    op_cached_verify(&r); /* the first verify fills the entry */
    double hit = time_it((int)n, op_cached_verify, &r);
    if (r.bad)
        return 2;
    printf("sign   libjwt (PEM per call) %.1f us   openssl (key parsed once) %.1f us   %.2fx\n",
           lsign, osign, lsign / osign);
    printf("verify libjwt (PEM per call) %.1f us   openssl (key parsed once) %.1f us   %.2fx\n",
           lverify, overify, lverify / overify);
    printf("verify from the cache (a %zu-byte token seen before) %.2f us\n", strlen(ours), hit);
    free(ours);
    free(theirs);
    cm_jwt_verifier_free(v);
    cm_jwt_verifier_free(cached);
    cm_jwt_signer_free(s);
    free(k.priv);
    free(k.pub);
    EVP_PKEY_free(key);
    return 0;
}
