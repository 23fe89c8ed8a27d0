/*
 * Tests for services/mailer/store.c against the real PostgreSQL: the
 * contacts row, the sent ledger (claim once, attempts, dead letters) and
 * parked events with the list struct mail_store_parked returns. Every test
 * runs in one transaction rolled back at its end, so nothing it writes is
 * seen by another test or another test program.
 * LINKTR_TEST_NEEDS: postgres
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm/db.h"
#include "cm/util.h"
#include "pg.h"
#include "store.h"
#include "testenv.h"

extern const cm_migration_t mailer_migrations[];
extern const size_t mailer_migrations_count;

typedef t_pg_tx_t fixture_t;

static int group_setup(void **state)
{
    fixture_t *f = cm_xcalloc(1, sizeof *f);
    f->pool = t_pg_pool("MAILER_DATABASE_URL", 2, mailer_migrations, mailer_migrations_count);
    *state = f;
    return 0;
}

static void assert_value(fixture_t *f, const char *sql, const char *param, const char *want)
{
    char *v = t_pg_value(f->db, sql, param);
    assert_string_equal(v, want);
    free(v);
}

#define LEDGER_ROW                                                                                 \
    "SELECT concat_ws('|', recipient, template, attempts, outcome, coalesce(reason, '-')) "        \
    "FROM sent WHERE event_id = $1::uuid"

static void a_contact_is_unknown_then_stored_then_replaced(void **state)
{
    fixture_t *f = *state;
    char uid[37];
    cm_uuid_v4(uid);
    char *email = NULL, *name = NULL;
    assert_int_equal(mail_store_contact_get(f->db, uid, &email, &name), CM_ENOTFOUND);
    assert_null(email);
    assert_null(name);
    assert_int_equal(mail_store_contact_put(f->db, uid, "ann@example.com", "ann"), 0);
    assert_int_equal(mail_store_contact_get(f->db, uid, &email, &name), 0);
    assert_string_equal(email, "ann@example.com");
    assert_string_equal(name, "ann");
    free(email);
    free(name);
    assert_int_equal(mail_store_contact_put(f->db, uid, "o'brien@example.com", "O'Brien \"Ann\""),
                     0);
    assert_int_equal(mail_store_contact_get(f->db, uid, &email, &name), 0);
    assert_string_equal(email, "o'brien@example.com");
    assert_string_equal(name, "O'Brien \"Ann\"");
    free(email);
    free(name);
    assert_value(f, "SELECT count(*) FROM contacts WHERE user_id = $1::uuid", uid, "1");
}

static void a_claim_owns_the_send_once_with_its_recipient_and_attempts(void **state)
{
    fixture_t *f = *state;
    char ev[37];
    cm_uuid_v4(ev);
    assert_int_equal(mail_store_sent_count(f->db, ev), 0);
    assert_int_equal(mail_store_claim(f->db, ev, "ann@example.com", "verify_email", 3), 0);
    assert_int_equal(mail_store_sent_count(f->db, ev), 1);
    assert_value(f, LEDGER_ROW, ev, "ann@example.com|verify_email|3|sent|-");
    /* A redelivery: the ledger already has the event; the first row stays. */
    assert_int_equal(mail_store_claim(f->db, ev, "bob@example.com", "reset_password", 1),
                     CM_ECONFLICT);
    assert_int_equal(mail_store_sent_count(f->db, ev), 1);
    assert_value(f, LEDGER_ROW, ev, "ann@example.com|verify_email|3|sent|-");
    /* Attempts below one are recorded as the first try. */
    char first[37];
    cm_uuid_v4(first);
    assert_int_equal(mail_store_claim(f->db, first, "ann@example.com", "reward_granted", 0), 0);
    assert_value(f, LEDGER_ROW, first, "ann@example.com|reward_granted|1|sent|-");
}

static void a_dead_letter_marks_the_claimed_row_with_its_reason(void **state)
{
    fixture_t *f = *state;
    char ev[37], other[37];
    cm_uuid_v4(ev);
    cm_uuid_v4(other);
    assert_int_equal(mail_store_claim(f->db, ev, "", "password_changed", 5), 0);
    assert_int_equal(mail_store_claim(f->db, other, "x@example.com", "password_changed", 1), 0);
    assert_int_equal(mail_store_mark_dead(f->db, ev, "refused by the mail server on every try"), 0);
    assert_value(f, LEDGER_ROW, ev,
                 "|password_changed|5|dead|refused by the mail server on every try");
    assert_value(f, LEDGER_ROW, other, "x@example.com|password_changed|1|sent|-");
    /* Not an event id: the database refuses it, nothing is claimed (last statement). */
    assert_int_equal(mail_store_claim(f->db, "not-a-uuid", "x@example.com", "verify_email", 1),
                     CM_EDB);
}

/* Parks event ev for uid with payload, dated seconds_ago before now. */
static void park_aged(fixture_t *f, const char *ev, const char *uid, const char *payload,
                      int seconds_ago)
{
    assert_int_equal(mail_store_park(f->db, ev, uid, payload), 0);
    char age[16];
    snprintf(age, sizeof age, "%d", seconds_ago);
    const char *sql = "UPDATE parked_mails SET parked_at = now() - $2::int * interval '1 second' "
                      "WHERE event_id = $1::uuid";
    const char *p[2] = {ev, age};
    assert_int_equal(cm_db_exec(f->db, sql, 2, p, NULL), 0);
}

static void parked_events_are_listed_oldest_first_for_their_user_only(void **state)
{
    fixture_t *f = *state;
    char uid[37], other[37], ev[3][37], stray[37];
    cm_uuid_v4(uid);
    cm_uuid_v4(other);
    const char *payloads[3] = {"{\"n\":\"first\"}", "{\"n\":\"sécond \\\"quoted\\\"\"}",
                               "{\"n\":\"third\"}"};
    for (int i = 0; i < 3; i++) {
        cm_uuid_v4(ev[i]);
        park_aged(f, ev[i], uid, payloads[i], 30 - i * 10);
    }
    cm_uuid_v4(stray);
    park_aged(f, stray, other, "{}", 60);
    /* The same event parked again keeps the first payload. */
    assert_int_equal(mail_store_park(f->db, ev[0], uid, "{\"n\":\"replaced\"}"), 0);

    mail_parked_list_t l;
    assert_int_equal(mail_store_parked(f->db, uid, &l), 0);
    assert_int_equal(l.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(l.rows[i].event_id, ev[i]);
        assert_string_equal(l.rows[i].payload, payloads[i]);
    }
    mail_parked_list_dispose(&l);
    assert_null(l.rows);
    assert_int_equal(l.n, 0);

    assert_int_equal(mail_store_unpark(f->db, ev[1]), 0);
    assert_int_equal(mail_store_unpark(f->db, ev[1]), 0); /* gone already: not an error */
    assert_int_equal(mail_store_parked(f->db, uid, &l), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.rows[0].event_id, ev[0]);
    assert_string_equal(l.rows[1].event_id, ev[2]);
    mail_parked_list_dispose(&l);
}

static void a_user_with_nothing_parked_gets_an_empty_list(void **state)
{
    fixture_t *f = *state;
    char uid[37];
    cm_uuid_v4(uid);
    mail_parked_list_t l;
    memset(&l, 0x5a, sizeof l);
    assert_int_equal(mail_store_parked(f->db, uid, &l), 0);
    assert_int_equal(l.n, 0);
    mail_parked_list_dispose(&l);
    mail_parked_list_dispose(NULL);
}

static void at_most_one_batch_of_parked_events_is_listed(void **state)
{
    fixture_t *f = *state;
    char uid[37], ev[37];
    cm_uuid_v4(uid);
    for (int i = 0; i < MAIL_PARKED_BATCH + 2; i++) {
        cm_uuid_v4(ev);
        assert_int_equal(mail_store_park(f->db, ev, uid, "{}"), 0);
    }
    mail_parked_list_t l;
    assert_int_equal(mail_store_parked(f->db, uid, &l), 0);
    assert_int_equal(l.n, MAIL_PARKED_BATCH);
    for (size_t i = 0; i < l.n; i++)
        assert_true(cm_is_uuid(l.rows[i].event_id, 36));
    mail_parked_list_dispose(&l);
}

/* ---- email change (issue 15) ---------------------------------------------------------- */

static void assert_contact(fixture_t *f, const char *uid, const char *want_email)
{
    char *email = NULL, *name = NULL;
    assert_int_equal(mail_store_contact_get(f->db, uid, &email, &name), 0);
    assert_string_equal(email, want_email);
    free(email);
    free(name);
}

static void an_email_change_moves_the_contact_and_an_older_one_never_undoes_it(void **state)
{
    fixture_t *f = *state;
    char uid[37];
    cm_uuid_v4(uid);
    assert_int_equal(mail_store_contact_put(f->db, uid, "a@example.com", "ann"), 0);
    assert_int_equal(
        mail_store_contact_email(f->db, uid, "b@example.com", "ann", "2026-12-06T10:00:00.000Z"),
        0);
    assert_contact(f, uid, "b@example.com");
    /* A later change wins; a redelivered or older one afterwards changes nothing. */
    assert_int_equal(
        mail_store_contact_email(f->db, uid, "c@example.com", "ann", "2026-12-06T11:00:00.000Z"),
        0);
    assert_int_equal(
        mail_store_contact_email(f->db, uid, "b@example.com", "ann", "2026-12-06T10:00:00.000Z"),
        0);
    assert_int_equal(
        mail_store_contact_email(f->db, uid, "c@example.com", "ann", "2026-12-06T11:00:00.000Z"),
        0);
    assert_contact(f, uid, "c@example.com");
    /* A redelivered registration keeps the changed address (and still updates the name). */
    assert_int_equal(mail_store_contact_put(f->db, uid, "a@example.com", "ann2"), 0);
    assert_contact(f, uid, "c@example.com");
    assert_value(f, "SELECT username FROM contacts WHERE user_id = $1::uuid", uid, "ann2");
}

static void a_change_that_overtakes_its_registration_makes_the_contact(void **state)
{
    fixture_t *f = *state;
    char uid[37];
    cm_uuid_v4(uid);
    assert_int_equal(
        mail_store_contact_email(f->db, uid, "new@example.com", "bob", "2026-12-06T10:00:00.000Z"),
        0);
    assert_contact(f, uid, "new@example.com");
    assert_int_equal(mail_store_contact_put(f->db, uid, "old@example.com", "bob"), 0);
    assert_contact(f, uid, "new@example.com");
}

#define T(name) cmocka_unit_test_setup_teardown(name, t_pg_begin, t_pg_rollback)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(a_contact_is_unknown_then_stored_then_replaced),
        T(a_claim_owns_the_send_once_with_its_recipient_and_attempts),
        T(a_dead_letter_marks_the_claimed_row_with_its_reason),
        T(parked_events_are_listed_oldest_first_for_their_user_only),
        T(a_user_with_nothing_parked_gets_an_empty_list),
        T(at_most_one_batch_of_parked_events_is_listed),
        T(an_email_change_moves_the_contact_and_an_older_one_never_undoes_it),
        T(a_change_that_overtakes_its_registration_makes_the_contact),
    };
    return cmocka_run_group_tests(tests, group_setup, t_pg_tx_free);
}
