/*
 * Keys from auth's JWKS: a published P-256 key becomes a key the verifier
 * accepts tokens for; known kids, other key types, malformed coordinates
 * and points off the curve are skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "cm/util.h"
#include "jwks.h"

static cm_jwt_signer_t *new_signer(const char *kid)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    int err = 0;
    cm_jwt_signer_t *s = cm_jwt_signer_new(data, (size_t)n, kid, "linktr", "linktr", 900, &err);
    assert_non_null(s);
    BIO_free(b);
    EVP_PKEY_free(k);
    return s;
}

static int verify_with(cm_jwt_verifier_t *v, cm_jwt_signer_t *s)
{
    char *tok = NULL;
    assert_int_equal(cm_jwt_sign(s, "00000000-0000-4000-8000-000000000001", "ada", &tok, NULL), 0);
    cm_jwt_claims_t c;
    int rc = cm_jwt_verify(v, tok, strlen(tok), &c);
    free(tok);
    return rc;
}

static void a_published_key_verifies_tokens_once_added(void **state)
{
    (void)state;
    cm_jwt_signer_t *s = new_signer("k2");
    cm_jwt_verifier_t *v = cm_jwt_verifier_new("linktr", "linktr", 0);
    assert_int_equal(verify_with(v, s), CM_EAUTH);
    json_t *doc = cm_jwt_signer_jwks(s);
    assert_int_equal(gw_jwks_add(v, doc), 1);
    assert_int_equal(verify_with(v, s), 0);
    /* The same document again adds nothing. */
    assert_int_equal(gw_jwks_add(v, doc), 0);
    json_decref(doc);
    cm_jwt_verifier_free(v);
    cm_jwt_signer_free(s);
}

/* A copy of s's JWK with one member replaced. */
static json_t *jwks_with(cm_jwt_signer_t *s, const char *key, json_t *value)
{
    json_t *doc = cm_jwt_signer_jwks(s);
    json_t *jwk = json_array_get(json_object_get(doc, "keys"), 0); /* borrowed */
    json_object_set_new(jwk, key, value);
    return doc;
}

static void unusable_keys_are_skipped(void **state)
{
    (void)state;
    cm_jwt_signer_t *s = new_signer("k3");
    cm_jwt_verifier_t *v = cm_jwt_verifier_new("linktr", "linktr", 0);
    json_t *doc = cm_jwt_signer_jwks(s);
    const char *y =
        json_string_value(json_object_get(json_array_get(json_object_get(doc, "keys"), 0), "y"));
    char *bent = cm_xstrdup(y);
    bent[5] = bent[5] == 'A' ? 'B' : 'A'; /* almost surely no longer on the curve */
    json_t *bad[] = {
        jwks_with(s, "crv", json_string("P-384")), jwks_with(s, "kty", json_string("RSA")),
        jwks_with(s, "x", json_string("AAAA")),    jwks_with(s, "y", json_string(bent)),
        jwks_with(s, "use", json_string("enc")),   jwks_with(s, "kid", json_string("bad kid!")),
        jwks_with(s, "x", json_integer(7)),
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(gw_jwks_add(v, bad[i]), 0);
        json_decref(bad[i]);
    }
    assert_int_equal(verify_with(v, s), CM_EAUTH);
    free(bent);
    json_decref(doc);
    cm_jwt_verifier_free(v);
    cm_jwt_signer_free(s);
}

static void documents_that_are_not_jwks_are_refused(void **state)
{
    (void)state;
    cm_jwt_verifier_t *v = cm_jwt_verifier_new("linktr", "linktr", 0);
    json_t *docs[] = {NULL, json_object(), json_pack("{s:s}", "keys", "x"), json_array()};
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        assert_int_equal(gw_jwks_add(v, docs[i]), CM_EPARSE);
        json_decref(docs[i]);
    }
    assert_null(gw_jwk_to_pem(NULL));
    cm_jwt_verifier_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_published_key_verifies_tokens_once_added),
        cmocka_unit_test(unusable_keys_are_skipped),
        cmocka_unit_test(documents_that_are_not_jwks_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
