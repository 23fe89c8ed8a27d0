/* Registration and password rules (see validate.h). */
#include "validate.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <zxcvbn.h>

#include "cm/crypto.h"
#include "cm/util.h"

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int auth_validate_username(const char *s, size_t len, const char **msg)
{
    if (len < AUTH_USERNAME_MIN || len > AUTH_USERNAME_MAX) {
        *msg = "Username must be 3 to 30 characters long.";
        return CM_EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        if (!is_alnum(s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-') {
            *msg = "Username may contain only letters, digits, '_', '.' and '-'.";
            return CM_EINVAL;
        }
    }
    return 0;
}

static bool local_part_ok(const char *s, size_t len)
{
    static const char specials[] = "!#$%&'*+/=?^_`{|}~-";
    if (len == 0 || len > 64 || s[0] == '.' || s[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '.' && s[i + 1] == '.')
            return false;
        if (!is_alnum(c) && c != '.' && (c == '\0' || !strchr(specials, c)))
            return false;
    }
    return true;
}

/* One DNS label: 1–63 of [A-Za-z0-9-], no hyphen at either end. */
static bool label_ok(const char *s, size_t len)
{
    if (len == 0 || len > 63 || s[0] == '-' || s[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_alnum(s[i]) && s[i] != '-')
            return false;
    return true;
}

static bool domain_ok(const char *s, size_t len)
{
    size_t start = 0, labels = 0, last = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '.')
            continue;
        if (!label_ok(s + start, i - start))
            return false;
        last = start;
        labels++;
        start = i + 1;
    }
    if (labels < 2)
        return false;
    for (size_t i = last; i < len; i++) /* the top-level domain is alphabetic */
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')))
            return false;
    return len - last >= 2;
}

int auth_validate_email(const char *s, size_t len, const char **msg)
{
    *msg = "Enter a valid email address.";
    if (len == 0 || len > AUTH_EMAIL_MAX) {
        if (len > AUTH_EMAIL_MAX)
            *msg = "Email address must be at most 254 characters long.";
        return CM_EINVAL;
    }
    const char *at = memchr(s, '@', len);
    if (!at)
        return CM_EINVAL;
    size_t local = (size_t)(at - s);
    if (!local_part_ok(s, local) || !domain_ok(at + 1, len - local - 1))
        return CM_EINVAL;
    return 0;
}

/* Counts UTF-8 code points; false when the bytes hold a NUL. */
static bool count_chars(const char *s, size_t len, size_t *n)
{
    *n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\0')
            return false;
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            (*n)++;
    }
    return true;
}

static void lower_copy(char *dst, const char *src, size_t len)
{
    for (size_t i = 0; i < len; i++)
        dst[i] = (src[i] >= 'A' && src[i] <= 'Z') ? (char)(src[i] - 'A' + 'a') : src[i];
    dst[len] = '\0';
}

/* True if a (lower-cased) contains b case-insensitively, b at least 3 long. */
static bool contains_word(const char *lower_pw, const char *word, size_t wlen)
{
    if (!word || wlen < 3 || wlen > AUTH_EMAIL_MAX)
        return false;
    char w[AUTH_EMAIL_MAX + 1];
    lower_copy(w, word, wlen);
    return strstr(lower_pw, w) != NULL;
}

typedef struct strength {
    double bits;
    bool user_match; /* zxcvbn matched a user dictionary word */
} strength_t;

/* Runs zxcvbn on a NUL-terminated copy with the user's words as dictionary. */
static strength_t measure(const char *pw, const char *username, const char *email)
{
    char local[AUTH_EMAIL_MAX + 1] = "";
    if (email) {
        size_t n = strcspn(email, "@");
        if (n > AUTH_EMAIL_MAX)
            n = AUTH_EMAIL_MAX;
        memcpy(local, email, n);
        local[n] = '\0';
    }
    const char *dict[4] = {NULL, NULL, NULL, NULL};
    size_t k = 0;
    if (username && *username)
        dict[k++] = username;
    if (email && *email)
        dict[k++] = email;
    if (local[0])
        dict[k++] = local;
    ZxcMatch_t *info = NULL;
    strength_t st = {ZxcvbnMatch(pw, dict, &info), false};
    for (ZxcMatch_t *m = info; m; m = m->Next) {
        int t = (int)m->Type & ~MULTIPLE_MATCH;
        if (t == USER_MATCH || t == USER_LEET_MATCH)
            st.user_match = true;
    }
    ZxcvbnFreeInfo(info);
    return st;
}

/* The checks that need the whole password as a C string (lower is lower-cased). */
static int check_similarity(const char *pw, const char *lower, const char *username,
                            const char *email, const char **msg)
{
    size_t ulen = username ? strlen(username) : 0;
    size_t elen = email ? strlen(email) : 0;
    size_t llen = email ? strcspn(email, "@") : 0;
    /* The password made mostly of the username or the email: Django's rule, simplified. */
    bool similar = (contains_word(lower, username, ulen) && ulen * 2 >= strlen(lower)) ||
                   (contains_word(lower, email, llen) && llen * 2 >= strlen(lower)) ||
                   contains_word(lower, email, elen);
    strength_t st = measure(pw, username, email);
    if (similar || (st.user_match && st.bits < AUTH_PASSWORD_MIN_BITS)) {
        *msg = "Password is too similar to the username or email.";
        return CM_EINVAL;
    }
    if (st.bits < AUTH_PASSWORD_MIN_BITS) {
        *msg = "Password is too common or too easy to guess.";
        return CM_EINVAL;
    }
    return 0;
}

int auth_validate_password(const char *pw, size_t len, const char *username, const char *email,
                           const char **msg)
{
    size_t nchars = 0;
    if (!count_chars(pw, len, &nchars)) {
        *msg = "Password must not contain NUL characters.";
        return CM_EINVAL;
    }
    if (nchars < AUTH_PASSWORD_MIN || nchars > AUTH_PASSWORD_MAX) {
        *msg = "Password must be 8 to 128 characters long.";
        return CM_EINVAL;
    }
    size_t digits = 0;
    while (digits < len && pw[digits] >= '0' && pw[digits] <= '9')
        digits++;
    if (digits == len) {
        *msg = "Password must not be entirely numeric.";
        return CM_EINVAL;
    }
    char *copy = cm_xstrndup(pw, len);
    char *lower = cm_xstrndup(pw, len);
    lower_copy(lower, pw, len);
    int rc = check_similarity(copy, lower, username, email, msg);
    sodium_memzero(copy, len);
    sodium_memzero(lower, len);
    free(copy);
    free(lower);
    return rc;
}

bool auth_token_well_formed(const char *s, size_t len)
{
    if (!s || len != CM_TOKEN_CHARS - 1)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}
