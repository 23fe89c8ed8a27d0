/* The JWT key pair and what derives from it (see keys.h). */
#include "keys.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>

#include "cm/crypto.h"
#include "cm/log.h"
#include "cm/service.h"
#include "cm/util.h"

/* A PEM key file is a few hundred bytes; anything this large is not one. */
#define MAX_KEY_FILE (64 * 1024)
/* Verified access tokens kept so repeated requests skip the ES256 check. */
#define VERIFY_CACHE 4096

int auth_public_pem(const char *priv, size_t len, char **out, size_t *out_len)
{
    int rc = CM_ECRYPTO;
    EVP_PKEY *key = NULL;
    BIO *wr = NULL, *rd = BIO_new_mem_buf(priv, (int)len);
    if (!rd || len > MAX_KEY_FILE)
        goto out;
    key = PEM_read_bio_PrivateKey(rd, NULL, NULL, NULL);
    wr = BIO_new(BIO_s_mem());
    if (!key || !wr || PEM_write_bio_PUBKEY(wr, key) != 1)
        goto out;
    char *data = NULL;
    long n = BIO_get_mem_data(wr, &data);
    if (n <= 0)
        goto out;
    *out = cm_xstrndup(data, (size_t)n);
    *out_len = (size_t)n;
    rc = 0;
out:
    EVP_PKEY_free(key);
    BIO_free(rd);
    BIO_free(wr);
    return rc;
}

/* The private scalar of an EC P-256 key, big-endian, left-padded to 32 bytes. */
static int private_scalar(const char *pem, size_t len, unsigned char out[32])
{
    int rc = CM_ECRYPTO;
    BIGNUM *d = NULL;
    EVP_PKEY *key = NULL;
    BIO *rd = len <= MAX_KEY_FILE ? BIO_new_mem_buf(pem, (int)len) : NULL;
    if (!rd || !(key = PEM_read_bio_PrivateKey(rd, NULL, NULL, NULL)))
        goto out;
    if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &d) != 1 ||
        BN_bn2binpad(d, out, 32) != 32)
        goto out;
    rc = 0;
out:
    BN_clear_free(d);
    EVP_PKEY_free(key);
    BIO_free(rd);
    return rc;
}

/* A 32-byte key for one purpose (context) from the scalar d: keyed BLAKE2b. */
static void derive(const unsigned char d[32], const char *context, uint8_t out[32])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, (const unsigned char *)context, strlen(context), 32);
    crypto_generichash_update(&st, d, 32);
    crypto_generichash_final(&st, out, 32);
    sodium_memzero(&st, sizeof st);
}

int auth_derive_refresh_key(auth_app_t *app, const char *pem, size_t len)
{
    /* The scalar, not the file: the same key as SEC1 or PKCS#8 PEM, with or without
     * comments, gives every replica the same successor for a retried refresh. */
    unsigned char d[32];
    int rc = private_scalar(pem, len, d);
    if (rc != 0)
        return rc;
    derive(d, "linktr refresh successor v2", app->refresh_key);
    derive(d, "linktr login throttle v1", app->throttle_key);
    sodium_memzero(d, sizeof d);
    return 0;
}

/* Older keys first (JWT_PUBLIC_KEYS, during a rotation), then our own. */
static int make_verifier(auth_app_t *app, const char *pem, size_t len)
{
    const auth_config_t *cfg = app->cfg;
    char *pub = NULL;
    size_t plen = 0;
    int rc = 0;
    app->verifier = cm_jwt_verifier_from_config("auth", &cfg->jwt, VERIFY_CACHE, &rc);
    if (!app->verifier)
        return rc;
    if ((rc = auth_public_pem(pem, len, &pub, &plen)) != 0) {
        CM_ERROR(NULL, "config: JWT_PRIVATE_KEY_FILE: not a PEM private key");
        return rc;
    }
    rc = cm_jwt_verifier_add_key(app->verifier, cfg->jwt_key_id, pub, plen);
    free(pub);
    if (rc == CM_EINVAL && cfg->jwt.public_keys) /* our kid is listed too: theirs stands */
        rc = 0;
    if (rc != 0)
        CM_ERROR(NULL, "config: JWT_PRIVATE_KEY_FILE: not an EC P-256 key (%s)", cm_errname(rc));
    return rc;
}

int auth_keys_load(auth_app_t *app)
{
    const auth_config_t *cfg = app->cfg;
    char *pem = NULL;
    size_t len = 0;
    int rc = cm_read_file(cfg->jwt_private_key_file, MAX_KEY_FILE, &pem, &len);
    if (rc != 0) {
        CM_ERROR(NULL, "config: JWT_PRIVATE_KEY_FILE: cannot read %s (%s)",
                 cfg->jwt_private_key_file, cm_strerror(rc));
        return rc;
    }
    app->signer = cm_jwt_signer_new(pem, len, cfg->jwt_key_id, cfg->jwt.issuer, cfg->jwt.audience,
                                    cfg->access_ttl_s, &rc);
    if (!app->signer) {
        rc = rc ? rc : CM_ECRYPTO;
        CM_ERROR(NULL, "config: JWT_PRIVATE_KEY_FILE: not an EC P-256 private key");
    } else {
        rc = make_verifier(app, pem, len);
    }
    if (rc == 0 && (rc = auth_derive_refresh_key(app, pem, len)) != 0)
        CM_ERROR(NULL, "config: JWT_PRIVATE_KEY_FILE: no private scalar to derive from");
    sodium_memzero(pem, len);
    free(pem);
    if (rc != 0)
        auth_keys_dispose(app);
    return rc;
}

void auth_keys_dispose(auth_app_t *app)
{
    cm_jwt_signer_free(app->signer);
    cm_jwt_verifier_free(app->verifier);
    app->signer = NULL;
    app->verifier = NULL;
    sodium_memzero(app->refresh_key, sizeof app->refresh_key);
    sodium_memzero(app->throttle_key, sizeof app->throttle_key);
}

void auth_refresh_child(const auth_app_t *app, const char *token, size_t len,
                        char out[CM_TOKEN_CHARS])
{
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256(mac, (const unsigned char *)token, len, app->refresh_key);
    sodium_bin2base64(out, CM_TOKEN_CHARS, mac, sizeof mac,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(mac, sizeof mac);
}
