/*
 * code.h — referral codes: 8 characters of Crockford base32.
 *
 * The alphabet leaves out I, L, O and U, so a code read aloud or typed from
 * a screen cannot be mistaken (1/I/L, 0/O). Codes are stored upper case;
 * input is normalized the Crockford way (lower case accepted) before lookup.
 */
#ifndef AUTH_CODE_H
#define AUTH_CODE_H

#include <stdbool.h>
#include <stddef.h>

/** Characters in a referral code. */
#define AUTH_CODE_LEN 8

/** The 32 characters of Crockford base32, in value order. */
#define AUTH_CODE_ALPHABET "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

/** Writes a new uniformly random code (8 characters plus NUL) into out. Thread-safe. */
void auth_code_new(char out[AUTH_CODE_LEN + 1]);

/**
 * Normalizes untrusted input (len bytes, not NUL-terminated) into out:
 * upper-cases it and checks it is exactly 8 alphabet characters. Returns
 * true when out holds a well-formed code; false (out emptied) otherwise.
 */
bool auth_code_normalize(const char *in, size_t len, char out[AUTH_CODE_LEN + 1]);

#endif
