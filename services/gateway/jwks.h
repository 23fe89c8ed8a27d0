/*
 * jwks.h — public keys from a JWKS document (auth's /.well-known/jwks.json).
 *
 * JWT_PUBLIC_KEYS gives the keys the gateway starts with. When auth rotates
 * to a new key, tokens arrive with a kid the gateway has not seen: the
 * gateway then fetches auth's JWKS (at most once per GW_JWKS_MIN_INTERVAL_MS,
 * so a flood of forged tokens costs one fetch per interval) and adds the
 * P-256 keys it does not know yet. Keys are only ever added.
 */
#ifndef GW_JWKS_H
#define GW_JWKS_H

#include <jansson.h>

#include "cm/jwt.h"

/** Shortest time between two JWKS fetches. */
#define GW_JWKS_MIN_INTERVAL_MS 30000

/**
 * Converts one JWK ({"kty":"EC","crv":"P-256","x","y"}, base64url
 * coordinates) into a PEM public key. Returns a new string the caller
 * free()s, or NULL when the JWK is not a valid P-256 public key.
 */
char *gw_jwk_to_pem(const json_t *jwk);

/**
 * Adds every usable key of a JWKS document ({"keys":[...]}, borrowed) to v
 * under its kid; keys whose kid is already known, malformed keys and other
 * key types are skipped. Returns how many were added, or CM_EPARSE when
 * doc is not a JWKS document.
 */
int gw_jwks_add(cm_jwt_verifier_t *v, const json_t *doc);

#endif
