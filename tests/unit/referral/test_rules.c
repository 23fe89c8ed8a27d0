/* Tests for services/referral/rules.c: reward rules, disposable domains, email aliases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rules.h"

static int parse(const char *json, ref_rules_t *r)
{
    char why[128] = "";
    ref_rules_defaults(r);
    return ref_rules_parse(json, strlen(json), r, why, sizeof why);
}

static void default_rules_pay_10_5_and_milestones_at_5_10_25(void **state)
{
    (void)state;
    ref_rules_t r;
    ref_rules_defaults(&r);
    assert_int_equal(r.referrer_credit, 10);
    assert_int_equal(r.welcome_credit, 5);
    assert_int_equal(r.nmilestones, 3);
    assert_int_equal(r.milestones[0].at, 5);
    assert_int_equal(r.milestones[1].at, 10);
    assert_int_equal(r.milestones[2].at, 25);
}

static void a_rules_file_overrides_only_what_it_names(void **state)
{
    (void)state;
    ref_rules_t r;
    assert_int_equal(parse("{\"referrer_credit\": 7}", &r), 0);
    assert_int_equal(r.referrer_credit, 7);
    assert_int_equal(r.welcome_credit, 5);
    assert_int_equal(r.nmilestones, 3);
    assert_int_equal(parse("{\"milestones\": [{\"at\": 2, \"amount\": 3}]}", &r), 0);
    assert_int_equal(r.nmilestones, 1);
    assert_int_equal(r.milestones[0].at, 2);
    assert_int_equal(r.milestones[0].amount, 3);
    assert_int_equal(parse("{\"milestones\": []}", &r), 0);
    assert_int_equal(r.nmilestones, 0);
}

static void bad_rules_are_refused_with_a_reason(void **state)
{
    (void)state;
    const char *bad[] = {
        "not json",
        "[]",
        "{\"referrer_credit\": -1}",
        "{\"welcome_credit\": 2.5}",
        "{\"welcome_credit\": \"5\"}",
        "{\"milestones\": {\"at\": 5}}",
        "{\"milestones\": [{\"at\": 5}]}",
        "{\"milestones\": [{\"at\": 10, \"amount\": 1}, {\"at\": 5, \"amount\": 1}]}",
        "{\"milestones\": [{\"at\": 0, \"amount\": 1}]}",
        "{\"referrer_credit\": 1, \"referrer_credit\": 2}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ref_rules_t r;
        char why[128] = "";
        ref_rules_defaults(&r);
        assert_int_equal(ref_rules_parse(bad[i], strlen(bad[i]), &r, why, sizeof why), CM_EPARSE);
        assert_true(why[0] != '\0');
    }
}

static void disposable_domains_match_case_insensitively_and_by_parent(void **state)
{
    (void)state;
    ref_domains_t d;
    assert_int_equal(
        ref_domains_parse("# comment\n\nMailinator.com  # inline\n yopmail.fr\r\n", &d), 0);
    assert_int_equal(d.n, 2);
    assert_true(ref_domains_match(&d, "x@mailinator.com"));
    assert_true(ref_domains_match(&d, "x@MAILINATOR.COM"));
    assert_true(ref_domains_match(&d, "x@eu.mailinator.com"));
    assert_true(ref_domains_match(&d, "x@yopmail.fr"));
    assert_false(ref_domains_match(&d, "x@notmailinator.com"));
    assert_false(ref_domains_match(&d, "x@example.com"));
    assert_false(ref_domains_match(&d, "no-at-sign"));
    ref_domains_dispose(&d);
    assert_int_equal(ref_domains_parse("not a domain\n", &d), CM_EPARSE);
    assert_int_equal(ref_domains_parse(ref_default_disposable, &d), 0);
    assert_true(d.n >= 20);
    assert_true(ref_domains_match(&d, "a@guerrillamail.com"));
    ref_domains_dispose(&d);
}

static void email_aliases_fold_case_dots_and_tags_at_webmail_only(void **state)
{
    (void)state;
    assert_true(ref_email_alias("Ada.Lovelace@gmail.com", "adalovelace+ref@googlemail.com"));
    assert_true(ref_email_alias("ada+a@outlook.com", "ADA+b@Outlook.com"));
    assert_true(ref_email_alias("Ada@Example.com", "ada@example.com"));
    /* Dots are significant outside gmail, tags outside the webmail list. */
    assert_false(ref_email_alias("a.da@outlook.com", "ada@outlook.com"));
    assert_false(ref_email_alias("ada+x@example.com", "ada@example.com"));
    assert_false(ref_email_alias("ada@gmail.com", "bob@gmail.com"));
    assert_false(ref_email_alias("ada@gmail.com", "ada@gmail.co"));
    char out[300];
    assert_int_equal(ref_email_canonical("A.b.C+tag@GMAIL.com", out, sizeof out), 0);
    assert_string_equal(out, "abc@gmail.com");
    assert_int_equal(ref_email_canonical("no-at", out, sizeof out), CM_EPARSE);
    assert_int_equal(ref_email_canonical("@example.com", out, sizeof out), CM_EPARSE);
}

static void a_local_part_that_strips_to_nothing_is_refused_and_aliases_nobody(void **state)
{
    (void)state;
    char out[300];
    memset(out, 'x', sizeof out);
    assert_int_equal(ref_email_canonical("+x@GMail.com", out, sizeof out), CM_EPARSE);
    assert_int_equal(ref_email_canonical("..+tag@googlemail.com", out, sizeof out), CM_EPARSE);
    assert_int_equal(ref_email_canonical("+ref@outlook.com", out, sizeof out), CM_EPARSE);
    /* Before the fix both were "@gmail.com": every such address aliased every other. */
    assert_false(ref_email_alias("+x@gmail.com", "+y@gmail.com"));
    assert_false(ref_email_alias("+x@gmail.com", "ada@gmail.com"));
    /* Outside the webmail list a +tag is part of the mailbox name and stays. */
    assert_int_equal(ref_email_canonical("+x@Example.com", out, sizeof out), 0);
    assert_string_equal(out, "+x@example.com");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(default_rules_pay_10_5_and_milestones_at_5_10_25),
        cmocka_unit_test(a_rules_file_overrides_only_what_it_names),
        cmocka_unit_test(bad_rules_are_refused_with_a_reason),
        cmocka_unit_test(disposable_domains_match_case_insensitively_and_by_parent),
        cmocka_unit_test(email_aliases_fold_case_dots_and_tags_at_webmail_only),
        cmocka_unit_test(a_local_part_that_strips_to_nothing_is_refused_and_aliases_nobody),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
