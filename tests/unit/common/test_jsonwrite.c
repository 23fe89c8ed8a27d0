/*
 * Tests for common/src/jsonwrite.c: JSON string literals written straight
 * into a buffer, held byte for byte to what jansson itself writes (the real
 * library is the oracle: the same bytes, or the same refusal).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "cm/error.h"
#include "cm/jsonwrite.h"
#include "cm/util.h"

/* What jansson writes for the len bytes of s, or NULL when it refuses them. Caller frees. */
static char *jansson_text(const char *s, size_t len)
{
    json_t *v = json_stringn(s, len);
    if (!v)
        return NULL;
    char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(v);
    assert_non_null(text);
    return text;
}

/* Asserts that our literal for s is jansson's, or that both refuse it. */
static void assert_same_as_jansson(const char *s, size_t len)
{
    char *want = jansson_text(s, len);
    cm_buf_t b;
    cm_buf_init(&b);
    int rc = cm_json_put_stringn(&b, s, len);
    if (want) {
        assert_int_equal(rc, 0);
        assert_int_equal(b.len, strlen(want));
        assert_memory_equal(b.data, want, b.len);
    } else {
        assert_int_equal(rc, CM_EINVAL);
    }
    free(want);
    cm_buf_dispose(&b);
}

static void every_single_byte_is_written_or_refused_as_jansson_does(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        char s[3] = {'a', (char)c, 'z'};
        assert_same_as_jansson(s, sizeof s);
    }
}

static void the_named_escapes_and_the_u00xx_form_match(void **state)
{
    (void)state;
    static const char text[] = "quote \" backslash \\ slash / \b\f\n\r\t \x01\x1f\x7f end";
    assert_same_as_jansson(text, sizeof text - 1);
    cm_buf_t b;
    cm_buf_init(&b);
    assert_int_equal(cm_json_put_stringn(&b, "\x1b", 1), 0);
    assert_string_equal(b.data, "\"\\u001B\"");
    cm_buf_dispose(&b);
}

static void an_embedded_nul_is_escaped_when_the_length_includes_it(void **state)
{
    (void)state;
    assert_same_as_jansson("a\0b", 3);
}

static void valid_utf8_passes_and_every_malformed_form_is_refused(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "caf\xc3\xa9",      /* 2 bytes */
        "\xe2\x82\xac",     /* 3 bytes: euro sign */
        "\xf0\x9f\x98\x80", /* 4 bytes: an emoji */
        "\xf4\x8f\xbf\xbf", /* U+10FFFF, the last code point */
        "\xe2\x80\xa8",     /* U+2028, written as is (as jansson does) */
        "\xc0\x80",         /* overlong NUL */
        "\xc1\xbf",         /* overlong */
        "\xe0\x80\xaf",     /* overlong 3-byte */
        "\xf0\x80\x80\xaf", /* overlong 4-byte */
        "\xed\xa0\x80",     /* a surrogate */
        "\xf4\x90\x80\x80", /* past U+10FFFF */
        "\xf5\x80\x80\x80", /* no such lead byte */
        "\x80",             /* a lone continuation byte */
        "\xc3",             /* cut short at the end */
        "\xe2\x82",         /* cut short */
        "\xe2\x28\xa1",     /* a bad continuation */
        "ok\xff",           /* never valid */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        assert_same_as_jansson(cases[i], strlen(cases[i]));
}

/* xorshift64: the same strings on every run. */
static uint64_t next_random(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void random_strings_match_jansson_byte_for_byte(void **state)
{
    (void)state;
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    static const char *const units[] = {"a",
                                        "b",
                                        "\"",
                                        "\\",
                                        "\n",
                                        "\t",
                                        "\x01",
                                        "/",
                                        "\xc3\xa9",
                                        "\xe2\x82\xac",
                                        "\xf0\x9f\x98\x80"};
    char s[4 * 16];
    size_t accepted = 0;
    for (int n = 0; n < 20000; n++) {
        size_t len = 0, pieces = next_random(&x) % 16;
        for (size_t i = 0; i < pieces; i++) {
            uint64_t r = next_random(&x);
            if (r % 24 == 0) { /* now and then one byte of anything: often not UTF-8 */
                s[len++] = (char)(r >> 8);
                continue;
            }
            const char *u = units[(r >> 8) % (sizeof units / sizeof *units)];
            while (*u)
                s[len++] = *u++;
        }
        char *want = jansson_text(s, len);
        accepted += want != NULL;
        free(want);
        assert_same_as_jansson(s, len);
    }
    /* Both outcomes were exercised, or the comparison proved little. */
    assert_true(accepted > 1000);
    assert_true(accepted < 19000);
}

static void null_is_the_literal_and_keys_are_quoted_with_a_colon(void **state)
{
    (void)state;
    cm_buf_t b;
    cm_buf_init(&b);
    assert_int_equal(cm_json_put_string_or_null(&b, NULL), 0);
    cm_buf_puts(&b, ",");
    cm_json_put_key(&b, "next");
    assert_int_equal(cm_json_put_string_or_null(&b, "x"), 0);
    assert_string_equal(b.data, "null,\"next\":\"x\"");
    cm_buf_dispose(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_single_byte_is_written_or_refused_as_jansson_does),
        cmocka_unit_test(the_named_escapes_and_the_u00xx_form_match),
        cmocka_unit_test(an_embedded_nul_is_escaped_when_the_length_includes_it),
        cmocka_unit_test(valid_utf8_passes_and_every_malformed_form_is_refused),
        cmocka_unit_test(random_strings_match_jansson_byte_for_byte),
        cmocka_unit_test(null_is_the_literal_and_keys_are_quoted_with_a_colon),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
