/*
 * cm/jwt.h — ES256 access tokens (OpenSSL signs and verifies with keys
 * parsed once; libjwt 1.10 assembles the header and claims; jansson reads
 * them back).
 *
 * Claims: iss, aud, sub (user id), iat, nbf, exp, jti, username, and the
 * optional ref and sid; "kid" in
 * the header. The verifier checks, in this order: the token's size and
 * shape, the header (alg ES256 only, typ JWT or absent, a known kid: a
 * token saying HS256, none, or an unknown kid is refused), the ES256
 * signature over header.payload with that kid's key, and only then decodes
 * and reads the claims. Header and payload JSON are bounded by cm_json_scan
 * (CM_JSON_MAX_DEPTH_TOKEN levels) before jansson parses them, so no token
 * can exhaust a worker thread's stack. Several keys are accepted at once,
 * for rotation. Verified tokens are cached (bounded, keyed by a hash of the
 * whole token, dropped at exp): a hit costs a SHA-256, a miss an ECDSA
 * verification.
 */
#ifndef CM_JWT_H
#define CM_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cm/config.h"
#include "cm/error.h"

/** Longest token accepted by the verifier (bytes). */
#define CM_JWT_MAX_LEN 4096

/** Longest key id (bytes, without the NUL). A kid is 1 to 63 of [A-Za-z0-9._-]. */
#define CM_JWT_KID_MAX 63

typedef struct cm_jwt_signer cm_jwt_signer_t;
typedef struct cm_jwt_verifier cm_jwt_verifier_t;

/** Verified claims; the caller owns the struct. */
typedef struct cm_jwt_claims {
    char sub[64];
    char username[64];
    char jti[64];
    char ref[17]; /* "ref": the user's referral code, "" when the token has none */
    char sid[37]; /* "sid": the session (refresh family) id, "" when the token has none */
    int64_t iat;
    int64_t exp;
} cm_jwt_claims_t;

/**
 * Creates a signer from a PEM EC P-256 private key (at most 16 KiB; parsed
 * here once, the PEM is not kept; the parsed key is cleared on free). Returns NULL with *err (if
 * not NULL) = CM_ECRYPTO when the key is not a P-256 private key, CM_EINVAL for a bad kid, an empty
 * issuer/audience or ttl_s <= 0. Thread-safe to use once made.
 */
cm_jwt_signer_t *cm_jwt_signer_new(const char *pem, size_t len, const char *kid, const char *issuer,
                                   const char *audience, int ttl_s, int *err);

/** Frees and wipes. NULL-safe. */
void cm_jwt_signer_free(cm_jwt_signer_t *s);

/**
 * Signs an access token for sub/username, valid ttl_s seconds from now.
 * On success *token is a new string the caller free()s and *exp (if not
 * NULL) the expiry in Unix seconds. Returns 0, CM_EINVAL (sub empty, sub
 * or username of 64 bytes or more: they must fit cm_jwt_claims_t) or
 * CM_ECRYPTO.
 */
CM_MUST_CHECK int cm_jwt_sign(cm_jwt_signer_t *s, const char *sub, const char *username,
                              char **token, int64_t *exp);

/**
 * Like cm_jwt_sign, and adds the user's referral code as the "ref" claim
 * (left out when ref is NULL or empty), so a service can show the code
 * before it has heard of the user (read-your-writes). CM_EINVAL also when
 * ref is 17 bytes or more.
 */
CM_MUST_CHECK int cm_jwt_sign_ref(cm_jwt_signer_t *s, const char *sub, const char *username,
                                  const char *ref, char **token, int64_t *exp);

/**
 * Like cm_jwt_sign_ref, and adds the session the token belongs to (the
 * refresh family id) as the "sid" claim (left out when sid is NULL or
 * empty), so a service can tell which of a user's sessions is calling.
 * CM_EINVAL also when sid is 37 bytes or more.
 */
CM_MUST_CHECK int cm_jwt_sign_sid(cm_jwt_signer_t *s, const char *sub, const char *username,
                                  const char *ref, const char *sid, char **token, int64_t *exp);

/** The public key as a JWKS document {"keys":[{kty,crv,x,y,kid,use,alg}]}. New reference. */
json_t *cm_jwt_signer_jwks(const cm_jwt_signer_t *s);

/**
 * Creates a verifier for issuer/audience (copied) with a cache of
 * cache_size entries (0 = no cache). Returns NULL if issuer or audience is
 * NULL or empty. Free with cm_jwt_verifier_free().
 */
cm_jwt_verifier_t *cm_jwt_verifier_new(const char *issuer, const char *audience, size_t cache_size);

/** Frees. NULL-safe. */
void cm_jwt_verifier_free(cm_jwt_verifier_t *v);

/**
 * Adds a PEM public key ("BEGIN PUBLIC KEY") under kid (copied). Returns 0,
 * CM_ECRYPTO (not a P-256 public key) or CM_EINVAL (bad kid, kid already
 * present). Safe to call while other threads verify.
 */
CM_MUST_CHECK int cm_jwt_verifier_add_key(cm_jwt_verifier_t *v, const char *kid, const char *pem,
                                          size_t len);

/**
 * Adds keys from a JWT_PUBLIC_KEYS value: comma-separated "kid=path/to.pem"
 * (spaces around entries ignored; each file at most 16 KiB, a PEM public
 * key). Returns 0, CM_EINVAL (bad syntax, bad or repeated kid, no entry),
 * CM_EIO / CM_ETOOBIG (the file) or CM_ECRYPTO (not a P-256 public key).
 * Keys before the failing entry stay added.
 */
CM_MUST_CHECK int cm_jwt_verifier_load(cm_jwt_verifier_t *v, const char *spec);

/**
 * A verifier for the keys in j (JWT_PUBLIC_KEYS, issuer, audience: see
 * cm_cfg_jwt), with a cache of cache_size verified tokens. With no keys
 * listed it starts empty (the caller adds its own). On a bad entry it
 * prints one line in the configuration's format ("linktr-<service>:
 * config: JWT_PUBLIC_KEYS: entry "kid": why") and returns NULL with *err
 * set. The caller frees it with cm_jwt_verifier_free.
 */
cm_jwt_verifier_t *cm_jwt_verifier_from_config(const char *service, const cm_jwt_config_t *j,
                                               size_t cache_size, int *err);

/**
 * Like cm_jwt_verifier_load; on failure also copies the failing entry's kid
 * (cut to fit, NUL-terminated) into bad[bad_len] for the start-up message.
 * bad may be NULL. On success bad is "".
 */
CM_MUST_CHECK int cm_jwt_verifier_load_report(cm_jwt_verifier_t *v, const char *spec, char *bad,
                                              size_t bad_len);

/**
 * Verifies a token (untrusted bytes, not NUL-terminated): size, header
 * (alg ES256 and a known kid), signature (exactly 64 bytes R||S), then
 * iss, aud, nbf/exp (30 s leeway). The payload is not decoded before the
 * signature checks out. Returns 0 and fills *out, or CM_EAUTH. Thread-safe.
 */
CM_MUST_CHECK int cm_jwt_verify(cm_jwt_verifier_t *v, const char *token, size_t len,
                                cm_jwt_claims_t *out);

/**
 * Extracts the token from an Authorization header value ("Bearer <t>",
 * scheme case-insensitive). Returns 0 and a slice into hdr, or CM_EAUTH.
 */
CM_MUST_CHECK int cm_jwt_from_header(const char *hdr, const char **tok, size_t *len);

#endif
