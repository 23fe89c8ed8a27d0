/* rules.c — reward rules and fraud checks (see rules.h). */
#include "rules.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "cm/util.h"

#define MAX_AMOUNT 1000000000LL
#define MAX_EMAIL 254

void ref_rules_defaults(ref_rules_t *r)
{
    memset(r, 0, sizeof *r);
    r->referrer_credit = 10;
    r->welcome_credit = 5;
    r->milestones[0] = (ref_milestone_t){5, 25};
    r->milestones[1] = (ref_milestone_t){10, 50};
    r->milestones[2] = (ref_milestone_t){25, 150};
    r->nmilestones = 3;
}

/* An integer member in [min, max] into *out; absent leaves *out alone. */
static bool amount(json_t *o, const char *key, long long min, long long max, long long *out)
{
    json_t *v = json_object_get(o, key); /* borrowed */
    if (!v)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return false;
    *out = json_integer_value(v);
    return true;
}

static int parse_milestones(json_t *list, ref_rules_t *r, char *why, size_t why_len)
{
    if (!json_is_array(list) || json_array_size(list) > REF_MAX_MILESTONES) {
        snprintf(why, why_len, "milestones: a list of at most %d objects", REF_MAX_MILESTONES);
        return CM_EPARSE;
    }
    r->nmilestones = 0;
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *m = json_array_get(list, i); /* borrowed */
        ref_milestone_t ms = {0, 0};
        if (!json_is_object(m) || !json_object_get(m, "at") || !json_object_get(m, "amount") ||
            !amount(m, "at", 1, 1000000, &ms.at) ||
            !amount(m, "amount", 0, MAX_AMOUNT, &ms.amount) ||
            (i > 0 && ms.at <= r->milestones[i - 1].at)) {
            snprintf(why, why_len, "milestones[%zu]: needs at (ascending, >= 1) and amount", i);
            return CM_EPARSE;
        }
        r->milestones[r->nmilestones++] = ms;
    }
    return 0;
}

int ref_rules_parse(const char *json, size_t len, ref_rules_t *r, char *why, size_t why_len)
{
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    int rc = CM_EPARSE;
    if (!json_is_object(doc)) {
        snprintf(why, why_len, "not a JSON object");
        goto out;
    }
    if (!amount(doc, "referrer_credit", 0, MAX_AMOUNT, &r->referrer_credit) ||
        !amount(doc, "welcome_credit", 0, MAX_AMOUNT, &r->welcome_credit)) {
        snprintf(why, why_len, "credits must be whole numbers from 0 to %lld", MAX_AMOUNT);
        goto out;
    }
    json_t *ms = json_object_get(doc, "milestones"); /* borrowed */
    rc = ms ? parse_milestones(ms, r, why, why_len) : 0;
out:
    json_decref(doc);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A domain: 1–253 of [a-z0-9.-] with a dot, not starting or ending with one. */
static bool domain_ok(const char *s, size_t n)
{
    if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.' || !memchr(s, '.', n))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '-'))
            return false;
    return true;
}

int ref_domains_parse(const char *text, ref_domains_t *out)
{
    memset(out, 0, sizeof *out);
    size_t cap = 0;
    for (const char *line = text; *line;) {
        size_t n = strcspn(line, "\n");
        const char *next = line + n + (line[n] == '\n');
        size_t len = strcspn(line, "#\r\n");
        while (len > 0 && isspace((unsigned char)line[len - 1]))
            len--;
        size_t lead = strspn(line, " \t");
        if (lead < len) {
            if (!domain_ok(line + lead, len - lead)) {
                ref_domains_dispose(out);
                return CM_EPARSE;
            }
            if (out->n == cap) {
                cap = cap ? cap * 2 : 64;
                out->v = cm_xreallocarray(out->v, cap, sizeof *out->v);
            }
            char *d = cm_xstrndup(line + lead, len - lead);
            for (char *p = d; *p; p++)
                *p = (char)tolower((unsigned char)*p);
            out->v[out->n++] = d;
        }
        line = next;
    }
    if (out->n > 0)
        qsort(out->v, out->n, sizeof *out->v, cmp_str);
    return 0;
}

void ref_domains_dispose(ref_domains_t *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        free(d->v[i]);
    free(d->v);
    memset(d, 0, sizeof *d);
}

bool ref_domains_match(const ref_domains_t *d, const char *email)
{
    const char *at = strrchr(email, '@');
    if (!at || d->n == 0)
        return false;
    char dom[256];
    size_t n = strlen(at + 1);
    if (n == 0 || n >= sizeof dom)
        return false;
    for (size_t i = 0; i <= n; i++)
        dom[i] = (char)tolower((unsigned char)at[1 + i]);
    /* The domain itself, then each parent: "x.mailinator.com" is disposable too. */
    for (const char *p = dom; p; p = strchr(p, '.') ? strchr(p, '.') + 1 : NULL) {
        const char *key = p;
        if (bsearch(&key, d->v, d->n, sizeof *d->v, cmp_str))
            return true;
    }
    return false;
}

/* Webmail domains whose local parts take +tags; gmail also ignores dots. */
static bool is_webmail(const char *dom)
{
    static const char *const webmail[] = {
        "gmail.com", "googlemail.com", "outlook.com",    "hotmail.com",
        "live.com",  "msn.com",        "yahoo.com",      "icloud.com",
        "me.com",    "proton.me",      "protonmail.com", "fastmail.com",
        "gmx.com",   "gmx.de",         "aol.com",        NULL};
    for (size_t i = 0; webmail[i]; i++)
        if (strcmp(dom, webmail[i]) == 0)
            return true;
    return false;
}

int ref_email_canonical(const char *email, char *out, size_t cap)
{
    size_t n = strnlen(email, MAX_EMAIL + 1);
    const char *at = strrchr(email, '@');
    if (!at || at == email || n > MAX_EMAIL || n >= cap)
        return CM_EPARSE;
    char buf[MAX_EMAIL + 1] = {0};
    for (size_t i = 0; i <= n; i++)
        buf[i] = (char)tolower((unsigned char)email[i]);
    char *dom = buf + (at - email) + 1;
    dom[-1] = '\0';
    bool gmail = strcmp(dom, "gmail.com") == 0 || strcmp(dom, "googlemail.com") == 0;
    size_t k = 0;
    if (is_webmail(dom)) {
        for (const char *p = buf; *p && *p != '+'; p++)
            if (!(gmail && *p == '.'))
                out[k++] = *p;
    } else {
        memcpy(out, buf, (size_t)(dom - 1 - buf));
        k = (size_t)(dom - 1 - buf);
    }
    /* "+x@gmail.com" or ".@gmail.com" would become "@gmail.com", an alias of every
     * other such address: a local part that strips to nothing is not a mailbox. */
    if (k == 0)
        return CM_EPARSE;
    snprintf(out + k, cap - k, "@%s", gmail ? "gmail.com" : dom);
    return 0;
}

bool ref_email_alias(const char *a, const char *b)
{
    char ca[MAX_EMAIL + 1], cb[MAX_EMAIL + 1];
    return ref_email_canonical(a, ca, sizeof ca) == 0 &&
           ref_email_canonical(b, cb, sizeof cb) == 0 && strcmp(ca, cb) == 0;
}
