/*
 * fuzz_rules.c — the referral service's rule parsers (services/referral/
 * rules.c): the reward rules file, the disposable-domain list, and the
 * email canonicalisation behind the self-referral alias check, which runs
 * on addresses from user.registered events.
 *
 * The first byte picks the target; the rest is:
 *   0: a rules document for ref_rules_parse. Accepted rules have
 *      non-negative amounts and strictly ascending milestones; a refusal
 *      always says why.
 *   1: a domain list for ref_domains_parse. An accepted set is sorted and
 *      lower-case, and every member matches itself and its subdomains.
 *   2: two addresses "a\nb" for ref_email_canonical / ref_email_alias: the
 *      canonical form is lower-case, fits, and is a fixed point; alias is
 *      symmetric and reflexive.
 */
#include <string.h>

#include "cm/util.h"
#include "fuzz.h"
#include "rules.h"

static void fuzz_rules_doc(const uint8_t *data, size_t size)
{
    ref_rules_t r;
    ref_rules_defaults(&r);
    char why[128];
    memset(why, 'x', sizeof why);
    if (ref_rules_parse((const char *)data, size, &r, why, sizeof why) != 0) {
        FUZZ_CHECK(memchr(why, '\0', sizeof why) && why[0] != '\0');
        return;
    }
    FUZZ_CHECK(r.referrer_credit >= 0 && r.welcome_credit >= 0);
    FUZZ_CHECK(r.nmilestones <= REF_MAX_MILESTONES);
    for (size_t i = 0; i < r.nmilestones; i++) {
        FUZZ_CHECK(r.milestones[i].at > 0 && r.milestones[i].amount >= 0);
        FUZZ_CHECK(i == 0 || r.milestones[i].at > r.milestones[i - 1].at);
    }
}

static bool has_upper(const char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            return true;
    return false;
}

static void fuzz_domains(const char *text)
{
    ref_domains_t d;
    memset(&d, 0, sizeof d);
    if (ref_domains_parse(text, &d) == 0) {
        for (size_t i = 0; i < d.n; i++) {
            FUZZ_CHECK(!has_upper(d.v[i]) && d.v[i][0] != '\0');
            FUZZ_CHECK(i == 0 || strcmp(d.v[i - 1], d.v[i]) <= 0);
            char *email = cm_xasprintf("someone@%s", d.v[i]);
            FUZZ_CHECK(ref_domains_match(&d, email));
            free(email);
            if (strlen(d.v[i]) + 3 > 253) /* "mx." + it would not be a domain */
                continue;
            email = cm_xasprintf("someone@mx.%s", d.v[i]);
            FUZZ_CHECK(ref_domains_match(&d, email));
            free(email);
        }
    }
    ref_domains_dispose(&d);
}

static void check_canonical(const char *email)
{
    char out[320], again[320];
    if (ref_email_canonical(email, out, sizeof out) != 0)
        return;
    FUZZ_CHECK(strlen(out) < sizeof out && !has_upper(out) && strchr(out, '@'));
    FUZZ_CHECK(ref_email_canonical(out, again, sizeof again) == 0);
    FUZZ_CHECK(strcmp(out, again) == 0);
    FUZZ_CHECK(ref_email_alias(email, email));
    FUZZ_CHECK(ref_email_alias(email, out));
}

static void fuzz_emails(const char *s)
{
    const char *nl = strchr(s, '\n');
    char *a = cm_xstrndup(s, nl ? (size_t)(nl - s) : strlen(s));
    const char *b = nl ? nl + 1 : "";
    check_canonical(a);
    check_canonical(b);
    FUZZ_CHECK(ref_email_alias(a, b) == ref_email_alias(b, a));
    free(a);
}

static int fuzz_one(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    char *s = cm_xstrndup((const char *)data + 1, size - 1);
    switch (data[0] % 3) {
    case 0:
        fuzz_rules_doc(data + 1, size - 1);
        break;
    case 1:
        fuzz_domains(s);
        break;
    default:
        fuzz_emails(s);
        break;
    }
    free(s);
    return 0;
}

FUZZ_ENTRY(fuzz_one)
