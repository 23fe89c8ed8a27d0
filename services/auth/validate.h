/*
 * validate.h — the pure validation rules of registration and password
 * reset (API.md, "Validation rules"). No I/O, no allocation that outlives a
 * call; every function takes untrusted bytes as pointer + length (a JSON
 * string may contain NUL) and, on rejection, points *msg at a static,
 * user-facing sentence for the problem+json "errors" member.
 *
 * Password strength uses libzxcvbn (Debian's libzxcvbn-dev), which returns
 * an entropy estimate in bits. API.md asks for "zxcvbn score >= 2", i.e. at
 * least 10^6 guesses: log2(10^6) = 19.93, so a password needs at least
 * AUTH_PASSWORD_MIN_BITS bits. The username, the email and its local part
 * are passed to zxcvbn as user dictionary words, so "ada_lovelace1" for
 * user ada_lovelace scores near zero and is reported as too similar.
 */
#ifndef AUTH_VALIDATE_H
#define AUTH_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

#include "cm/error.h"

#define AUTH_USERNAME_MIN 3
#define AUTH_USERNAME_MAX 30
#define AUTH_EMAIL_MAX 254
#define AUTH_PASSWORD_MIN 8
#define AUTH_PASSWORD_MAX 128
/** zxcvbn entropy (bits) a password needs: score 2 starts at 10^6 guesses. */
#define AUTH_PASSWORD_MIN_BITS 20.0

/**
 * Checks a username: 3–30 characters of [A-Za-z0-9_.-]. Returns 0, or
 * CM_EINVAL with *msg set.
 */
CM_MUST_CHECK int auth_validate_username(const char *s, size_t len, const char **msg);

/**
 * Checks an email address: at most 254 characters, one '@', a local part
 * of 1–64 characters (letters, digits, !#$%&'*+/=?^_`{|}~- and dots that do
 * not start, end or double), a domain of at least two dot-separated labels
 * of letters, digits and inner hyphens (1–63 each), the last alphabetic.
 * Returns 0, or CM_EINVAL with *msg set.
 */
CM_MUST_CHECK int auth_validate_email(const char *s, size_t len, const char **msg);

/**
 * Checks a password: 8–128 characters (UTF-8 code points, no NUL), not all
 * digits, not equal to / too similar to username or email (both may be
 * NULL when unknown), and at least AUTH_PASSWORD_MIN_BITS of zxcvbn entropy.
 * Returns 0, or CM_EINVAL with *msg set.
 */
CM_MUST_CHECK int auth_validate_password(const char *pw, size_t len, const char *username,
                                         const char *email, const char **msg);

/** True if s (len bytes) looks like one of our 256-bit tokens: 43 base64url characters. */
bool auth_token_well_formed(const char *s, size_t len);

#endif
