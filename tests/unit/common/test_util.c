/* Tests for common/src/util.c (the error table is tested in test_error.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cm/error.h"
#include "cm/util.h"

static void strtonum_accepts_numbers_within_bounds(void **state)
{
    (void)state;
    long long v = 0;
    assert_int_equal(cm_strtonum("8000", 1, 65535, &v), 0);
    assert_int_equal(v, 8000);
    assert_int_equal(cm_strtonum("-5", -10, 10, &v), 0);
    assert_int_equal(v, -5);
}

static void strtonum_rejects_garbage_and_out_of_range(void **state)
{
    (void)state;
    long long v = 42;
    assert_int_equal(cm_strtonum("", 0, 10, &v), CM_EPARSE);
    assert_int_equal(cm_strtonum("12abc", 0, 100, &v), CM_EPARSE);
    assert_int_equal(cm_strtonum(" 12", 0, 100, &v), CM_EPARSE);
    assert_int_equal(cm_strtonum("0x10", 0, 100, &v), CM_EPARSE);
    assert_int_equal(cm_strtonum("101", 0, 100, &v), CM_ERANGE);
    assert_int_equal(cm_strtonum("99999999999999999999999", 0, 100, &v), CM_ERANGE);
    assert_int_equal(cm_strtonum(NULL, 0, 100, &v), CM_EPARSE);
    assert_int_equal(v, 42);
}

static void buffer_grows_and_stays_terminated(void **state)
{
    (void)state;
    cm_buf_t b;
    cm_buf_init(&b);
    for (int i = 0; i < 1000; i++)
        cm_buf_printf(&b, "%d,", i % 10);
    assert_int_equal(b.len, 2000);
    assert_int_equal(b.data[b.len], '\0');
    cm_buf_append(&b, "x\0y", 3);
    assert_int_equal(b.len, 2003);
    char *s = cm_buf_steal(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    free(s);
    cm_buf_dispose(&b);
}

static void arena_allocations_are_aligned_zeroed_and_large_ones_work(void **state)
{
    (void)state;
    cm_arena_t *a = cm_arena_new();
    for (int i = 1; i < 200; i++) {
        unsigned char *p = cm_arena_alloc(a, (size_t)i * 7);
        assert_int_equal((uintptr_t)p % _Alignof(max_align_t), 0);
        for (int j = 0; j < i * 7; j++)
            assert_int_equal(p[j], 0);
        memset(p, 0xab, (size_t)i * 7);
    }
    char *big = cm_arena_alloc(a, 1 << 20);
    big[(1 << 20) - 1] = 'z';
    char *s = cm_arena_strndup(a, "hello world", 5);
    assert_string_equal(s, "hello");
    cm_arena_free(a);
    cm_arena_free(NULL);
}

static int cmp_text(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void uuids_are_version_4_and_distinct(void **state)
{
    (void)state;
    char a[37], b[37];
    cm_uuid_v4(a);
    cm_uuid_v4(b);
    assert_true(cm_is_uuid(a, strlen(a)));
    assert_int_equal(a[14], '4');
    assert_true(strchr("89ab", a[19]) != NULL);
    assert_string_not_equal(a, b);
    /* Across many refills of the per-thread block: every one a v4 UUID, none repeated. */
    enum { N = 1000 };
    char(*many)[37] = calloc(N, 37);
    assert_non_null(many);
    for (int i = 0; i < N; i++) {
        cm_uuid_v4(many[i]);
        assert_true(cm_is_uuid(many[i], strlen(many[i])));
        assert_int_equal(many[i][14], '4');
        assert_non_null(strchr("89ab", many[i][19]));
    }
    qsort(many, N, 37, cmp_text);
    for (int i = 1; i < N; i++)
        assert_string_not_equal(many[i - 1], many[i]);
    free(many);
    assert_false(cm_is_uuid("not-a-uuid", 10));
    assert_false(cm_is_uuid("123e4567-e89b-12d3-a456-42661417400g", 36));
    assert_true(cm_is_uuid("123E4567-E89B-12D3-A456-426614174000", 36));
}

static void times_are_rfc3339_utc_with_milliseconds(void **state)
{
    (void)state;
    char out[32];
    cm_format_time(1795773600123456LL, out);
    assert_string_equal(out, "2026-11-27T10:00:00.123Z");
    cm_format_time(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
}

static void hex_encoding_matches_known_bytes(void **state)
{
    (void)state;
    const uint8_t in[] = {0x00, 0x7f, 0xab, 0xff};
    char out[9];
    cm_hex_encode(in, sizeof in, out);
    assert_string_equal(out, "007fabff");
}

/* ---- files ------------------------------------------------------------------------------- */

static char *write_temp(size_t n)
{
    char *path = cm_xstrdup("/tmp/linktr-test-util-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        fputc('a' + (int)(i % 26), f);
    fclose(f);
    return path;
}

static void read_file_reads_up_to_the_cap_and_refuses_more(void **state)
{
    (void)state;
    char *path = write_temp(10000);
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(cm_read_file(path, 10000, &data, &len), 0);
    assert_int_equal(len, 10000);
    assert_int_equal(strlen(data), 10000);
    assert_int_equal(data[9999], 'a' + 9999 % 26);
    free(data);
    assert_int_equal(cm_read_file(path, 9999, &data, &len), CM_ETOOBIG);
    assert_null(data);
    assert_int_equal(cm_read_file(path, 100, &data, NULL), CM_ETOOBIG);
    unlink(path);
    assert_int_equal(cm_read_file(path, 100, &data, &len), CM_EIO);
    assert_null(data);
    free(path);
}

static void read_file_of_an_empty_file_gives_an_empty_string(void **state)
{
    (void)state;
    char *path = write_temp(0);
    char *data = NULL;
    size_t len = 99;
    assert_int_equal(cm_read_file(path, 16, &data, &len), 0);
    assert_int_equal(len, 0);
    assert_string_equal(data, "");
    free(data);
    unlink(path);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(strtonum_accepts_numbers_within_bounds),
        cmocka_unit_test(strtonum_rejects_garbage_and_out_of_range),
        cmocka_unit_test(buffer_grows_and_stays_terminated),
        cmocka_unit_test(arena_allocations_are_aligned_zeroed_and_large_ones_work),
        cmocka_unit_test(uuids_are_version_4_and_distinct),
        cmocka_unit_test(times_are_rfc3339_utc_with_milliseconds),
        cmocka_unit_test(hex_encoding_matches_known_bytes),
        cmocka_unit_test(read_file_reads_up_to_the_cap_and_refuses_more),
        cmocka_unit_test(read_file_of_an_empty_file_gives_an_empty_string),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
