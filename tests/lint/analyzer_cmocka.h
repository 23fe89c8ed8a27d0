/*
 * analyzer_cmocka.h — force-included (clang -include) into tests/ files by
 * tests/lint/run for clang-tidy only; never part of a build.
 *
 * cmocka's assert_* call functions that return when the check passes and
 * longjmp out of the test when it fails, and none is marked noreturn. The
 * analyzer therefore follows every failed assertion onward and reports
 * "null passed to strlen" after assert_non_null(p), or a double free after
 * skip(). Here each assertion becomes "if (!(check)) _fail(...)" with _fail
 * and _skip declared noreturn (which they are), so the analyzer sees what
 * the test means. cmocka.h is included first so its include guard keeps
 * the test's own #include from restoring the originals.
 */
#ifndef LINKTR_ANALYZER_CMOCKA_H
#define LINKTR_ANALYZER_CMOCKA_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

void _fail(const char *const file, const int line) __attribute__((noreturn));
void _skip(const char *const file, const int line) __attribute__((noreturn));

#define LINKTR__CHECK(c) ((c) ? (void)0 : _fail(__FILE__, __LINE__))

#undef assert_true
#define assert_true(c) LINKTR__CHECK(c)
#undef assert_false
#define assert_false(c) LINKTR__CHECK(!(c))
#undef assert_non_null
#define assert_non_null(p) LINKTR__CHECK((p) != NULL)
#undef assert_null
#define assert_null(p) LINKTR__CHECK((p) == NULL)
#undef assert_int_equal
#define assert_int_equal(a, b) LINKTR__CHECK((intmax_t)(a) == (intmax_t)(b))
#undef assert_int_not_equal
#define assert_int_not_equal(a, b) LINKTR__CHECK((intmax_t)(a) != (intmax_t)(b))
#undef assert_ptr_equal
#define assert_ptr_equal(a, b) LINKTR__CHECK((const void *)(a) == (const void *)(b))
#undef assert_ptr_not_equal
#define assert_ptr_not_equal(a, b) LINKTR__CHECK((const void *)(a) != (const void *)(b))
#undef assert_string_equal
#define assert_string_equal(a, b) LINKTR__CHECK((a) && (b) && strcmp((a), (b)) == 0)
#undef assert_string_not_equal
#define assert_string_not_equal(a, b) LINKTR__CHECK((a) && (b) && strcmp((a), (b)) != 0)
#undef assert_memory_equal
#define assert_memory_equal(a, b, n) LINKTR__CHECK(memcmp((a), (b), (n)) == 0)

#endif
