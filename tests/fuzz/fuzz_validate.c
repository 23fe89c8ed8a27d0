/*
 * fuzz_validate.c — the registration validators of services/auth/validate.c:
 * username, email and password, fed the bytes of a JSON string (which may
 * hold NUL and any UTF-8).
 *
 * The first byte picks the validator (username, email, password, or the
 * referral code normaliser of services/auth/code.c); for the password the rest is
 * "password\nusername\nemail" (the last two as NUL-terminated strings, as
 * the routes pass them). Checks beyond memory safety: a rejection always
 * comes with a message; an accepted username, email or password obeys the
 * documented shape, checked here independently of the implementation.
 */
#include <string.h>
#include <strings.h>

#include "cm/util.h"
#include "fuzz.h"
#include "code.h"
#include "validate.h"

static bool username_shape(const char *s, size_t len)
{
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-";
    if (len < AUTH_USERNAME_MIN || len > AUTH_USERNAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\0' || !strchr(ok, s[i]))
            return false;
    return true;
}

/* Necessary, not sufficient: one '@', no NUL, no space, a dot in the domain. */
static bool email_plausible(const char *s, size_t len)
{
    const char *at = memchr(s, '@', len);
    if (len > AUTH_EMAIL_MAX || !at || at == s || memchr(at + 1, '@', len - (size_t)(at - s) - 1))
        return false;
    if (memchr(s, '\0', len) || memchr(s, ' ', len) || at - s > 64)
        return false;
    return memchr(at + 1, '.', len - (size_t)(at - s) - 1) != NULL && s[len - 1] != '.';
}

static size_t code_points(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            n++;
    return n;
}

static void fuzz_password(const char *p, size_t len)
{
    const char *nl = memchr(p, '\n', len);
    size_t pwlen = nl ? (size_t)(nl - p) : len;
    char *user = NULL, *email = NULL;
    if (nl) {
        const char *rest = nl + 1;
        size_t rlen = len - pwlen - 1;
        const char *nl2 = memchr(rest, '\n', rlen);
        user = cm_xstrndup(rest, nl2 ? (size_t)(nl2 - rest) : rlen);
        if (nl2)
            email = cm_xstrndup(nl2 + 1, rlen - (size_t)(nl2 - rest) - 1);
    }
    const char *msg = NULL;
    int rc = auth_validate_password(p, pwlen, user, email, &msg);
    FUZZ_CHECK(rc == 0 || (rc == CM_EINVAL && msg && *msg));
    if (rc == 0) {
        size_t n = code_points(p, pwlen);
        FUZZ_CHECK(n >= AUTH_PASSWORD_MIN && n <= AUTH_PASSWORD_MAX);
        FUZZ_CHECK(!memchr(p, '\0', pwlen));
        size_t digits = 0; /* p is not NUL-terminated: no strspn */
        while (digits < pwlen && p[digits] >= '0' && p[digits] <= '9')
            digits++;
        FUZZ_CHECK(digits < pwlen);
        FUZZ_CHECK(!user || strlen(user) < 3 || strlen(user) != pwlen ||
                   strncasecmp(user, p, pwlen) != 0);
    }
    free(user);
    free(email);
}

/* A normalised code is the input upper-cased, 8 characters of the alphabet. */
static void fuzz_code(const char *s, size_t len)
{
    char out[AUTH_CODE_LEN + 1];
    memset(out, 'x', sizeof out);
    if (!auth_code_normalize(s, len, out)) {
        FUZZ_CHECK(out[0] == '\0');
        return;
    }
    FUZZ_CHECK(len == AUTH_CODE_LEN && strlen(out) == AUTH_CODE_LEN);
    FUZZ_CHECK(strspn(out, AUTH_CODE_ALPHABET) == AUTH_CODE_LEN);
    FUZZ_CHECK(strncasecmp(out, s, len) == 0);
}

static int fuzz_one(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* An exact-size copy, so a read past the value is caught. */
    size_t len = size - 1;
    char *s = cm_xmalloc(len ? len : 1);
    memcpy(s, data + 1, len);
    const char *msg = NULL;
    int rc;
    switch (data[0] % 4) {
    case 0:
        rc = auth_validate_username(s, len, &msg);
        FUZZ_CHECK((rc == 0) == username_shape(s, len));
        FUZZ_CHECK(rc == 0 || (rc == CM_EINVAL && msg && *msg));
        break;
    case 1:
        rc = auth_validate_email(s, len, &msg);
        FUZZ_CHECK(rc == 0 || (rc == CM_EINVAL && msg && *msg));
        FUZZ_CHECK(rc != 0 || email_plausible(s, len));
        break;
    case 2:
        fuzz_password(s, len);
        break;
    default:
        fuzz_code(s, len);
        break;
    }
    free(s);
    return 0;
}

FUZZ_ENTRY(fuzz_one)
