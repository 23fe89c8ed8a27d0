/* Referral codes in Crockford base32 (see code.h). */
#include "code.h"

#include <string.h>

#include <sodium.h>

void auth_code_new(char out[AUTH_CODE_LEN + 1])
{
    static const char alphabet[] = AUTH_CODE_ALPHABET;
    for (size_t i = 0; i < AUTH_CODE_LEN; i++)
        out[i] = alphabet[randombytes_uniform(sizeof alphabet - 1)];
    out[AUTH_CODE_LEN] = '\0';
}

bool auth_code_normalize(const char *in, size_t len, char out[AUTH_CODE_LEN + 1])
{
    out[0] = '\0';
    if (!in || len != AUTH_CODE_LEN)
        return false;
    char tmp[AUTH_CODE_LEN + 1];
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        if (c == '\0' || !strchr(AUTH_CODE_ALPHABET, c))
            return false;
        tmp[i] = c;
    }
    tmp[len] = '\0';
    memcpy(out, tmp, sizeof tmp);
    return true;
}
