/*
 * Tests for services/auth/keys.c: the public key of our signing key and the
 * refresh-successor key, which must depend on the key itself, not on how
 * its file is encoded. Keys are generated here with OpenSSL.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "cm/crypto.h"
#include "keys.h"
#include "validate.h"

/* A PEM of a key: PKCS#8 ("PRIVATE KEY") or SEC1 ("EC PRIVATE KEY"). Caller free()s. */
static char *pem_of(EVP_PKEY *key, bool pkcs8, size_t *len)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_non_null(b);
    int ok = pkcs8 ? PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)
                   : PEM_write_bio_PrivateKey_traditional(b, key, NULL, NULL, 0, NULL, NULL);
    assert_int_equal(ok, 1);
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    assert_true(n > 0);
    char *out = malloc((size_t)n + 1);
    assert_non_null(out);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;
    BIO_free(b);
    return out;
}

static EVP_PKEY *new_p256(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    assert_non_null(key);
    return key;
}

static void successor(const auth_app_t *app, const char *token, char out[CM_TOKEN_CHARS])
{
    auth_refresh_child(app, token, strlen(token), out);
}

static void one_key_in_two_encodings_gives_the_same_successor(void **state)
{
    (void)state;
    EVP_PKEY *key = new_p256();
    size_t l8 = 0, l1 = 0;
    char *pkcs8 = pem_of(key, true, &l8), *sec1 = pem_of(key, false, &l1);
    assert_non_null(strstr(pkcs8, "-----BEGIN PRIVATE KEY-----"));
    assert_non_null(strstr(sec1, "-----BEGIN EC PRIVATE KEY-----"));
    assert_true(l8 != l1 || memcmp(pkcs8, sec1, l1) != 0);
    auth_app_t a = {0}, b = {0};
    assert_int_equal(auth_derive_refresh_key(&a, pkcs8, l8), 0);
    assert_int_equal(auth_derive_refresh_key(&b, sec1, l1), 0);
    assert_memory_equal(a.refresh_key, b.refresh_key, sizeof a.refresh_key);
    assert_memory_equal(a.throttle_key, b.throttle_key, sizeof a.throttle_key);
    /* One scalar, two purposes: the keys differ. */
    assert_memory_not_equal(a.refresh_key, a.throttle_key, sizeof a.refresh_key);
    char tok[CM_TOKEN_CHARS], ca[CM_TOKEN_CHARS], cb[CM_TOKEN_CHARS];
    cm_token_new(tok);
    successor(&a, tok, ca);
    successor(&b, tok, cb);
    assert_string_equal(ca, cb);
    free(pkcs8), free(sec1);
    EVP_PKEY_free(key);
}

static void different_keys_give_different_successors(void **state)
{
    (void)state;
    EVP_PKEY *k1 = new_p256(), *k2 = new_p256();
    size_t l1 = 0, l2 = 0;
    char *p1 = pem_of(k1, true, &l1), *p2 = pem_of(k2, true, &l2);
    auth_app_t a = {0}, b = {0};
    assert_int_equal(auth_derive_refresh_key(&a, p1, l1), 0);
    assert_int_equal(auth_derive_refresh_key(&b, p2, l2), 0);
    char t1[CM_TOKEN_CHARS], t2[CM_TOKEN_CHARS];
    cm_token_new(t1);
    cm_token_new(t2);
    char c1[CM_TOKEN_CHARS], c1again[CM_TOKEN_CHARS], c2[CM_TOKEN_CHARS], cb[CM_TOKEN_CHARS];
    successor(&a, t1, c1);
    successor(&a, t1, c1again);
    successor(&a, t2, c2);
    successor(&b, t1, cb);
    assert_string_equal(c1, c1again);
    assert_string_not_equal(c1, c2);
    assert_string_not_equal(c1, cb);
    assert_string_not_equal(c1, t1);
    assert_true(auth_token_well_formed(c1, strlen(c1)));
    free(p1), free(p2);
    EVP_PKEY_free(k1), EVP_PKEY_free(k2);
}

static void text_that_is_not_a_private_key_is_refused(void **state)
{
    (void)state;
    auth_app_t a = {0};
    assert_int_equal(auth_derive_refresh_key(&a, "pem one", 7), CM_ECRYPTO);
    EVP_PKEY *key = new_p256();
    size_t len = 0;
    char *pem = pem_of(key, true, &len);
    char *pub = NULL;
    size_t plen = 0;
    assert_int_equal(auth_public_pem(pem, len, &pub, &plen), 0);
    assert_non_null(strstr(pub, "-----BEGIN PUBLIC KEY-----"));
    /* A public key has no scalar to derive from. */
    assert_int_equal(auth_derive_refresh_key(&a, pub, plen), CM_ECRYPTO);
    free(pub), free(pem);
    EVP_PKEY_free(key);
}

static void public_pem_is_the_same_for_both_encodings(void **state)
{
    (void)state;
    EVP_PKEY *key = new_p256();
    size_t l8 = 0, l1 = 0, n8 = 0, n1 = 0;
    char *pkcs8 = pem_of(key, true, &l8), *sec1 = pem_of(key, false, &l1);
    char *pub8 = NULL, *pub1 = NULL;
    assert_int_equal(auth_public_pem(pkcs8, l8, &pub8, &n8), 0);
    assert_int_equal(auth_public_pem(sec1, l1, &pub1, &n1), 0);
    assert_int_equal(n8, n1);
    assert_memory_equal(pub8, pub1, n1);
    assert_int_equal(auth_public_pem("garbage", 7, &pub1, &n1) == 0, 0);
    free(pub8), free(pub1), free(pkcs8), free(sec1);
    EVP_PKEY_free(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_key_in_two_encodings_gives_the_same_successor),
        cmocka_unit_test(different_keys_give_different_successors),
        cmocka_unit_test(text_that_is_not_a_private_key_is_refused),
        cmocka_unit_test(public_pem_is_the_same_for_both_encodings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
