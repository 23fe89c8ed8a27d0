/*
 * fuzz_cursor.c — ref_cursor_decode, the referral list's keyset cursor:
 * an opaque base64url string taken from the query string of
 * GET /api/referrals/.
 *
 * The first byte picks the mode:
 *   even: the rest is cursor text. A decoded cursor re-encodes to text that
 *         decodes to the same position.
 *   odd:  the rest is a position (8 bytes of time, 16 of id). Every valid
 *         position survives encode + decode unchanged.
 */
#include <string.h>

#include "cm/util.h"
#include "fuzz.h"
#include "routes.h"

/* Largest created_us ref_cursor_decode accepts (the year 9999). */
#define MAX_US 253402300799999999LL

static void fuzz_text(const uint8_t *data, size_t size)
{
    char *s = cm_xstrndup((const char *)data, size);
    ref_cursor_t c;
    memset(&c, 0, sizeof c);
    if (ref_cursor_decode(s, &c) == 0) {
        FUZZ_CHECK(c.created_us >= 0 && c.created_us <= MAX_US);
        FUZZ_CHECK(cm_is_uuid(c.id, strlen(c.id)));
        char text[REF_CURSOR_MAX + 1];
        ref_cursor_encode(&c, text);
        ref_cursor_t again;
        FUZZ_CHECK(ref_cursor_decode(text, &again) == 0);
        FUZZ_CHECK(again.created_us == c.created_us && strcmp(again.id, c.id) == 0);
    }
    free(s);
}

static void fuzz_position(const uint8_t *data, size_t size)
{
    if (size < 24)
        return;
    uint64_t raw;
    memcpy(&raw, data, sizeof raw);
    ref_cursor_t c;
    c.created_us = (int64_t)(raw % (uint64_t)(MAX_US + 1));
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            c.id[k++] = '-';
        c.id[k++] = hex[data[8 + i] >> 4];
        c.id[k++] = hex[data[8 + i] & 15];
    }
    c.id[k] = '\0';
    char text[REF_CURSOR_MAX + 1];
    ref_cursor_encode(&c, text);
    FUZZ_CHECK(strlen(text) <= REF_CURSOR_MAX);
    ref_cursor_t back;
    FUZZ_CHECK(ref_cursor_decode(text, &back) == 0);
    FUZZ_CHECK(back.created_us == c.created_us && strcmp(back.id, c.id) == 0);
}

static int fuzz_one(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] % 2 == 0)
        fuzz_text(data + 1, size - 1);
    else
        fuzz_position(data + 1, size - 1);
    return 0;
}

FUZZ_ENTRY(fuzz_one)
