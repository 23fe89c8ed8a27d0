/*
 * fuzz_config.c — cm_strtonum and the cm_cfg_* readers of environment
 * variables (common/src/util.c, common/src/config.c).
 *
 * The first byte picks the target; the rest is the text (cut at its first
 * NUL, as an environment value would be):
 *   0: cm_strtonum, compared with a reference parser written here
 *      (bounds from the 16 bytes after the mode byte);
 *   1..5: the value of a variable read by cm_cfg_int, _bool, _choice,
 *      _url and _str_required; each must either return a value inside its
 *      contract or record exactly one error naming the variable, and a URL
 *      error must never echo the value (it may hold a password).
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <strings.h>

#include "cm/config.h"
#include "cm/util.h"
#include "fuzz.h"

#define VAR "LINKTR_FUZZ_VALUE"

/* ^[+-]?[0-9]+$ in [min, max]; the answer cm_strtonum must give. */
static int reference_strtonum(const char *s, long long min, long long max, long long *out)
{
    if (min > max)
        return CM_EPARSE;
    const char *p = s;
    bool neg = *p == '-';
    if (*p == '-' || *p == '+')
        p++;
    if (*p == '\0' || strspn(p, "0123456789") != strlen(p))
        return CM_EPARSE;
    unsigned long long mag = 0;
    bool overflow = false;
    for (; *p; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (mag > (ULLONG_MAX - d) / 10)
            overflow = true;
        else
            mag = mag * 10 + d;
    }
    unsigned long long limit =
        neg ? (unsigned long long)LLONG_MAX + 1 : (unsigned long long)LLONG_MAX;
    if (overflow || mag > limit)
        return CM_ERANGE;
    long long v = neg ? (long long)(0 - mag) : (long long)mag;
    if (v < min || v > max)
        return CM_ERANGE;
    *out = v;
    return 0;
}

static void fuzz_strtonum(const uint8_t *data, size_t size)
{
    if (size < 16)
        return;
    long long min, max;
    memcpy(&min, data, sizeof min);
    memcpy(&max, data + 8, sizeof max);
    char *s = cm_xstrndup((const char *)data + 16, size - 16);
    long long got = 7, want = 7;
    int rc = cm_strtonum(s, min, max, &got);
    int ref = reference_strtonum(s, min, max, &want);
    FUZZ_CHECK(rc == ref);
    FUZZ_CHECK(got == want);
    free(s);
}

/* Checks the one recorded error, frees it and resets the collector. */
static void take_error(cm_cfg_t *c, const char *exact)
{
    FUZZ_CHECK(c->nerrors == 1);
    FUZZ_CHECK(strncmp(c->errors[0], VAR ": ", sizeof VAR + 1) == 0);
    if (exact)
        FUZZ_CHECK(strcmp(c->errors[0], exact) == 0);
    free(c->errors[0]);
    c->errors[0] = NULL;
    c->nerrors = 0;
}

static bool is_word(const char *v, const char *const *words)
{
    for (size_t i = 0; words[i]; i++)
        if (strcasecmp(v, words[i]) == 0)
            return true;
    return false;
}

static void read_int(cm_cfg_t *c, const char *v)
{
    long long got = cm_cfg_int(c, VAR, 42, -1000, 100000);
    long long want = 0;
    bool ok = !*v || reference_strtonum(v, -1000, 100000, &want) == 0;
    FUZZ_CHECK(got >= -1000 && got <= 100000);
    FUZZ_CHECK(ok ? (got == (*v ? want : 42)) : got == 42);
    if (!ok)
        take_error(c, NULL);
}

static void read_bool(cm_cfg_t *c, const char *v)
{
    static const char *const yes[] = {"1", "true", "yes", "on", NULL};
    static const char *const no[] = {"0", "false", "no", "off", NULL};
    bool got = cm_cfg_bool(c, VAR, true);
    if (*v && !is_word(v, yes) && !is_word(v, no))
        take_error(c, NULL);
    else
        FUZZ_CHECK(got == (!*v || is_word(v, yes)));
}

static void read_choice(cm_cfg_t *c, const char *v)
{
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    int got = cm_cfg_choice(c, VAR, "info", levels);
    FUZZ_CHECK(got >= 0 && got < 4);
    if (*v && !is_word(v, levels))
        take_error(c, NULL);
    else
        FUZZ_CHECK(strcasecmp(*v ? v : "info", levels[got]) == 0);
}

static void read_url(cm_cfg_t *c, const char *v)
{
    static const char *const schemes[] = {"http", "https", NULL};
    char *got = cm_cfg_url(c, VAR, "http://127.0.0.1:8001", schemes);
    FUZZ_CHECK(got && strcmp(got, *v ? v : "http://127.0.0.1:8001") == 0);
    if (c->nerrors)
        take_error(c, VAR ": must be a URL starting with http:// (or another supported scheme)");
    free(got);
}

static void read_required(cm_cfg_t *c, const char *v)
{
    char *got = cm_cfg_str_required(c, VAR);
    FUZZ_CHECK(*v ? got && strcmp(got, v) == 0 : got == NULL);
    if (!*v)
        take_error(c, VAR ": is required but not set");
    free(got);
}

static int fuzz_one(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned mode = data[0] % 6;
    if (mode == 0) {
        fuzz_strtonum(data + 1, size - 1);
        return 0;
    }
    char *v = cm_xstrndup((const char *)data + 1, size - 1);
    FUZZ_CHECK(setenv(VAR, v, 1) == 0);
    cm_cfg_t c;
    cm_cfg_init(&c, "fuzz");
    void (*readers[])(cm_cfg_t *, const char *) = {read_int, read_bool, read_choice, read_url,
                                                   read_required};
    readers[mode - 1](&c, v);
    FUZZ_CHECK(cm_cfg_finish(&c) == 0);
    unsetenv(VAR);
    free(v);
    return 0;
}

FUZZ_ENTRY(fuzz_one)
