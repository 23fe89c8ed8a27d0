/*
 * jsonwrite.c — JSON string literals into a cm_buf_t (see cm/jsonwrite.h).
 */
#include "cm/jsonwrite.h"

#include "cm/error.h"

#include <string.h>

/* The length of the UTF-8 sequence that starts at s[0] (of at most left
 * bytes), or 0 when it is not one: overlong forms, surrogates and code
 * points past U+10FFFF are refused, as jansson's utf8_check_string does. */
static size_t utf8_len(const unsigned char *s, size_t left)
{
    unsigned c = s[0];
    size_t n;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* The escape of a byte below 0x20, '"' or '\\' into out (NUL-terminated). */
static void escape_byte(unsigned char c, char out[7])
{
    static const char hex[] = "0123456789ABCDEF";
    const char *named = NULL;
    switch (c) {
    case '"':
        named = "\\\"";
        break;
    case '\\':
        named = "\\\\";
        break;
    case '\b':
        named = "\\b";
        break;
    case '\f':
        named = "\\f";
        break;
    case '\n':
        named = "\\n";
        break;
    case '\r':
        named = "\\r";
        break;
    case '\t':
        named = "\\t";
        break;
    default:
        break;
    }
    if (named) {
        memcpy(out, named, 3);
        return;
    }
    memcpy(out, "\\u00", 4);
    out[4] = hex[c >> 4];
    out[5] = hex[c & 0xF];
    out[6] = '\0';
}

int cm_json_put_stringn(cm_buf_t *b, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    cm_buf_reserve(b, len + 2); /* the common case: nothing to escape */
    cm_buf_append(b, "\"", 1);
    size_t run = 0; /* start of the bytes not yet copied */
    size_t i = 0;
    while (i < len) {
        unsigned char c = u[i];
        if (c >= 0x80) {
            size_t n = utf8_len(u + i, len - i);
            if (n == 0)
                return CM_EINVAL;
            i += n;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        cm_buf_append(b, s + run, i - run);
        char esc[7];
        escape_byte(c, esc);
        cm_buf_puts(b, esc);
        run = ++i;
    }
    cm_buf_append(b, s + run, len - run);
    cm_buf_append(b, "\"", 1);
    return 0;
}

int cm_json_put_string_or_null(cm_buf_t *b, const char *s)
{
    if (!s) {
        cm_buf_append(b, "null", 4);
        return 0;
    }
    return cm_json_put_stringn(b, s, strlen(s));
}

void cm_json_put_key(cm_buf_t *b, const char *key)
{
    size_t n = strlen(key);
    cm_buf_reserve(b, n + 3);
    cm_buf_append(b, "\"", 1);
    cm_buf_append(b, key, n);
    cm_buf_append(b, "\":", 2);
}
