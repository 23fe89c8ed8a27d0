#include "jwks.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <sodium.h>

#include "cm/util.h"

#define COORD_LEN 32

/* Decodes one base64url (unpadded) P-256 coordinate. */
static bool coord(const json_t *jwk, const char *name, unsigned char out[COORD_LEN])
{
    const char *s = json_string_value(json_object_get(jwk, name)); /* borrowed */
    size_t n = 0;
    return s &&
           sodium_base642bin(out, COORD_LEN, s, strlen(s), NULL, &n, NULL,
                             sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0 &&
           n == COORD_LEN;
}

static bool string_is(const json_t *o, const char *key, const char *want)
{
    const char *v = json_string_value(json_object_get(o, key)); /* borrowed */
    return v && strcmp(v, want) == 0;
}

/* Builds an EC key from an uncompressed point; OpenSSL refuses points off the curve. */
static EVP_PKEY *point_to_key(unsigned char *point, size_t len)
{
    char group[] = "prime256v1";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, len),
        OSSL_PARAM_construct_end(),
    };
    EVP_PKEY *key = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) != 1)
        key = NULL;
    EVP_PKEY_CTX_free(ctx);
    return key;
}

char *gw_jwk_to_pem(const json_t *jwk)
{
    if (!json_is_object(jwk) || !string_is(jwk, "kty", "EC") || !string_is(jwk, "crv", "P-256"))
        return NULL;
    unsigned char point[1 + 2 * COORD_LEN] = {0x04};
    if (!coord(jwk, "x", point + 1) || !coord(jwk, "y", point + 1 + COORD_LEN))
        return NULL;
    EVP_PKEY *key = point_to_key(point, sizeof point);
    if (!key)
        return NULL;
    char *pem = NULL;
    BIO *b = BIO_new(BIO_s_mem());
    if (b && PEM_write_bio_PUBKEY(b, key) == 1) {
        char *data = NULL;
        long n = BIO_get_mem_data(b, &data);
        if (n > 0)
            pem = cm_xstrndup(data, (size_t)n);
    }
    BIO_free(b);
    EVP_PKEY_free(key);
    return pem;
}

int gw_jwks_add(cm_jwt_verifier_t *v, const json_t *doc)
{
    const json_t *keys = json_object_get(doc, "keys"); /* borrowed */
    if (!json_is_array(keys))
        return CM_EPARSE;
    int added = 0;
    for (size_t i = 0; i < json_array_size(keys); i++) {
        const json_t *jwk = json_array_get(keys, i); /* borrowed */
        const char *kid = json_string_value(json_object_get(jwk, "kid"));
        const char *use = json_string_value(json_object_get(jwk, "use"));
        if (!kid || (use && strcmp(use, "sig") != 0))
            continue;
        char *pem = gw_jwk_to_pem(jwk);
        /* CM_EINVAL here means a kid we already have (or a malformed one): skip it. */
        if (pem && cm_jwt_verifier_add_key(v, kid, pem, strlen(pem)) == 0)
            added++;
        free(pem);
    }
    return added;
}
