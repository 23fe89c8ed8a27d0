/*
 * keys.h — the signing key of the auth service and what derives from it:
 * the JWT signer, a verifier for our own public key (plus older keys from
 * JWT_PUBLIC_KEYS during a rotation) and the refresh-successor key.
 */
#ifndef AUTH_KEYS_H
#define AUTH_KEYS_H

#include "cm/error.h"
#include "routes.h"

/**
 * Reads JWT_PRIVATE_KEY_FILE and fills app->signer, app->verifier and
 * app->refresh_key. Returns 0, or a CM_E* code after logging which
 * setting is wrong; then nothing is left to free.
 */
CM_MUST_CHECK int auth_keys_load(auth_app_t *app);

/** * Derives app->refresh_key and app->throttle_key from the private key PEM
 * (len bytes; SEC1 "EC PRIVATE KEY" or PKCS#8 "PRIVATE KEY"): keyed
 * BLAKE2b of the parsed private scalar, one context per key, so every
 * encoding of one key gives the same successors and throttle keys.
 * Returns 0, or CM_ECRYPTO when pem holds no EC private key.
 */
CM_MUST_CHECK int auth_derive_refresh_key(auth_app_t *app, const char *pem, size_t len);

/** Frees the signer and verifier of app. NULL-safe members. */
void auth_keys_dispose(auth_app_t *app);

/**
 * Writes the PEM SubjectPublicKeyInfo of a PEM private key into a new
 * string (*out, caller free()s). Returns 0 or CM_ECRYPTO.
 */
CM_MUST_CHECK int auth_public_pem(const char *priv, size_t len, char **out, size_t *out_len);

/**
 * Writes the successor (the grace window's answer to a retried refresh) of a refresh token:
 * base64url(HMAC-SHA256(key, token)), CM_TOKEN_CHARS bytes with the NUL.
 */
void auth_refresh_child(const auth_app_t *app, const char *token, size_t len,
                        char out[CM_TOKEN_CHARS]);

#endif
