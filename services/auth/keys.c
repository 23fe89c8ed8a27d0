/* The JWT key pair and what derives from it (see keys.h). */
#include "keys.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
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

/* Older keys first (JWT_PUBLIC_KEYS, during a rotation), then our own. */
static int make_verifier(auth_app_t *app, const char *pem, size_t len)
{
    const auth_config_t *cfg = app->cfg;
    char *pub = NULL;
    size_t plen = 0;
    int rc = 0;
    app->verifier = cm_service_verifier_new("auth", &cfg->jwt, VERIFY_CACHE, &rc);
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
    if (rc == 0)
        auth_derive_refresh_key(app, pem, len);
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
}
