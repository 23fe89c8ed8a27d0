/*
 * Tests for services/referral/store.c against the real PostgreSQL: what
 * each ref_store_* function writes and the row structs it returns
 * (counters, pages and their cursors, empty results, NULL columns).
 * Every test runs in one transaction that is rolled back at its end, so
 * nothing it writes is seen by another test or another test program.
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

extern const cm_migration_t referral_migrations[];
extern const size_t referral_migrations_count;

/* 2026-01-01T00:00:00Z in microseconds since the epoch. */
#define JAN1_US (1767225600LL * 1000000LL)

typedef t_pg_tx_t fixture_t;

static int group_setup(void **state)
{
    fixture_t *f = cm_xcalloc(1, sizeof *f);
    f->pool = t_pg_pool("REFERRAL_DATABASE_URL", 2, referral_migrations, referral_migrations_count);
    *state = f;
    return 0;
}

/* A member of the test: its id, a unique code, a name and an address. */
typedef struct user {
    char id[37];
    char code[9];
    char name[32];
    char email[64];
} user_t;

static void new_user(user_t *u)
{
    cm_uuid_v4(u->id);
    snprintf(u->code, sizeof u->code, "%.8s", u->id + 28);
    for (char *p = u->code; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    snprintf(u->name, sizeof u->name, "user_%.8s", u->id);
    snprintf(u->email, sizeof u->email, "%s@example.com", u->name);
}

static int add_member(fixture_t *f, const user_t *u, const user_t *referrer)
{
    ref_member_t m = {.user_id = u->id,
                      .username = u->name,
                      .email = u->email,
                      .referral_code = u->code,
                      .referred_by = referrer ? referrer->id : NULL,
                      .registered_at = "2026-01-01T00:00:00Z"};
    return ref_store_add_member(f->db, &m);
}

/* A referral of a fresh user (not a member) by referrer at `at`; its referred id into id. */
static void refer_at(fixture_t *f, const user_t *referrer, const char *at, char id[37])
{
    cm_uuid_v4(id);
    assert_int_equal(ref_store_add_referral(f->db, referrer->id, id, at), 0);
}

/* "2026-01-01T00:00:<s>Z" for 0 <= s < 60. */
static void second(int s, char out[32])
{
    snprintf(out, 32, "2026-01-01T00:00:%02dZ", s);
}

static void assert_counters(fixture_t *f, const user_t *u, long long total, long long pending,
                            long long successful, long long rejected, long long expired)
{
    ref_stats_t s;
    assert_int_equal(ref_store_stats(f->db, u->id, &s), 0);
    assert_int_equal(s.total, total);
    assert_int_equal(s.pending, pending);
    assert_int_equal(s.successful, successful);
    assert_int_equal(s.rejected, rejected);
    assert_int_equal(s.expired, expired);
}

static void an_event_id_is_new_once_then_a_conflict(void **state)
{
    fixture_t *f = *state;
    char ev[37];
    cm_uuid_v4(ev);
    assert_int_equal(ref_store_mark_processed(f->db, ev), 0);
    assert_int_equal(ref_store_mark_processed(f->db, ev), CM_ECONFLICT);
    assert_int_equal(ref_store_lock_user(f->db, ev), 0);
}

static void a_member_is_added_once_with_zero_counters_and_its_code(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u);
    assert_int_equal(ref_store_member_exists(f->db, u.id), CM_ENOTFOUND);
    assert_int_equal(add_member(f, &u, NULL), 0);
    assert_int_equal(add_member(f, &u, NULL), CM_ESTATE);
    assert_int_equal(ref_store_member_exists(f->db, u.id), 0);
    ref_stats_t s;
    memset(&s, 0x5a, sizeof s);
    assert_int_equal(ref_store_stats(f->db, u.id, &s), 0);
    assert_string_equal(s.referral_code, u.code);
    assert_int_equal(s.total + s.pending + s.successful + s.rejected + s.expired, 0);
    assert_int_equal(s.credits, 0);
    assert_int_equal(s.rewards_count, 0);
    char email[255];
    assert_int_equal(ref_store_member_email(f->db, u.id, email), 0);
    assert_string_equal(email, u.email);
    /* Another user with the same code violates the unique index (the
     * transaction is aborted then: this is the test's last statement). */
    user_t twin;
    new_user(&twin);
    memcpy(twin.code, u.code, sizeof twin.code);
    assert_int_equal(add_member(f, &twin, NULL), CM_ECONFLICT);
}

static void an_unknown_user_has_zero_stats_an_empty_code_and_no_email(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u);
    ref_stats_t s;
    memset(&s, 0x5a, sizeof s);
    assert_int_equal(ref_store_stats(f->db, u.id, &s), 0);
    assert_string_equal(s.referral_code, "");
    assert_int_equal(s.total, 0);
    assert_int_equal(s.credits, 0);
    assert_int_equal(s.rewards_count, 0);
    char email[255] = "untouched";
    assert_int_equal(ref_store_member_email(f->db, u.id, email), CM_ENOTFOUND);
    assert_int_equal(ref_store_recent_referrals(f->db, u.id, "2026-01-01T00:00:00Z", 50), 0);
}

static void a_referral_is_counted_pending_and_only_once_per_referred_user(void **state)
{
    fixture_t *f = *state;
    user_t ref, kid;
    new_user(&ref);
    new_user(&kid);
    assert_int_equal(add_member(f, &ref, NULL), 0);
    assert_int_equal(ref_store_add_referral(f->db, ref.id, kid.id, "2026-01-01T00:00:00Z"), 0);
    assert_counters(f, &ref, 1, 1, 0, 0, 0);
    assert_int_equal(ref_store_add_referral(f->db, ref.id, kid.id, "2026-01-01T00:00:01Z"),
                     CM_ESTATE);
    assert_counters(f, &ref, 1, 1, 0, 0, 0);
}

static void a_conversion_moves_one_count_and_reports_the_referral(void **state)
{
    fixture_t *f = *state;
    user_t ref;
    new_user(&ref);
    char a[37], b[37];
    refer_at(f, &ref, "2026-01-01T00:00:00Z", a);
    refer_at(f, &ref, "2026-01-01T00:00:01Z", b);
    ref_conversion_t c;
    assert_int_equal(
        ref_store_convert(f->db, a, REF_SUCCESSFUL, NULL, "2026-01-02T03:04:05.678Z", &c), 0);
    assert_true(cm_is_uuid(c.referral_id, strlen(c.referral_id)));
    assert_string_equal(c.referrer_id, ref.id);
    assert_string_equal(c.at, "2026-01-02T03:04:05.678Z");
    assert_int_equal(c.successful, 0); /* the consumer's to fill: see ref_store_successful */
    long long successful = -1;
    assert_int_equal(ref_store_successful(f->db, ref.id, &successful), 0);
    assert_int_equal(successful, 1);
    assert_counters(f, &ref, 2, 1, 1, 0, 0);
    /* Decided already: nothing more changes. */
    assert_int_equal(ref_store_convert(f->db, a, REF_REJECTED, "late", "2026-01-03T00:00:00Z", &c),
                     CM_ENOTFOUND);
    assert_int_equal(
        ref_store_convert(f->db, b, REF_REJECTED, "self_referral", "2026-01-03T00:00:00Z", &c), 0);
    assert_int_equal(ref_store_successful(f->db, ref.id, &successful), 0);
    assert_int_equal(successful, 1); /* the successful count, not the rejected one */
    assert_counters(f, &ref, 2, 0, 1, 1, 0);
    char nobody[37];
    cm_uuid_v4(nobody);
    assert_int_equal(
        ref_store_convert(f->db, nobody, REF_EXPIRED, "ttl", "2026-01-03T00:00:00Z", &c),
        CM_ENOTFOUND);
}

static void a_parked_verification_is_taken_once_and_the_first_one_wins(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u);
    char at[40];
    assert_int_equal(ref_store_take_parked(f->db, u.id, at), CM_ENOTFOUND);
    assert_int_equal(ref_store_park_verification(f->db, u.id, "2026-01-01T10:00:00Z"), 0);
    assert_int_equal(ref_store_park_verification(f->db, u.id, "2026-01-01T11:00:00Z"), 0);
    assert_int_equal(ref_store_take_parked(f->db, u.id, at), 0);
    assert_string_equal(at, "2026-01-01T10:00:00.000Z");
    assert_int_equal(ref_store_take_parked(f->db, u.id, at), CM_ENOTFOUND);
}

static void recent_referrals_count_from_24_hours_before_at_later_ones_included(void **state)
{
    fixture_t *f = *state;
    user_t ref;
    new_user(&ref);
    char id[37];
    refer_at(f, &ref, "2026-01-01T11:00:00Z", id); /* 25 h before: outside */
    refer_at(f, &ref, "2026-01-01T12:00:00Z", id); /* exactly 24 h before: outside */
    refer_at(f, &ref, "2026-01-01T12:00:01Z", id);
    refer_at(f, &ref, "2026-01-02T11:00:00Z", id);
    refer_at(f, &ref, "2026-01-02T12:00:00Z", id); /* at itself: inside */
    /* After: inside too (events of one referrer arrive out of order). */
    refer_at(f, &ref, "2026-01-02T12:00:01Z", id);
    assert_int_equal(ref_store_recent_referrals(f->db, ref.id, "2026-01-02T12:00:00Z", 50), 4);
    /* The count stops at the limit: the cap check needs no more than cap + 1. */
    assert_int_equal(ref_store_recent_referrals(f->db, ref.id, "2026-01-02T12:00:00Z", 2), 2);
}

static void a_grant_pays_once_per_rule_and_adds_to_the_counters(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u);
    char referral[37], reward[37], again[37];
    cm_uuid_v4(referral);
    ref_grant_t g = {.user_id = u.id,
                     .kind = "credit",
                     .amount = 10,
                     .reason = "A friend joined",
                     .rule = "referrer_credit",
                     .referral_id = referral,
                     .at = "2026-01-01T00:00:00Z"};
    assert_int_equal(ref_store_grant(f->db, &g, reward), 0);
    assert_true(cm_is_uuid(reward, strlen(reward)));
    assert_int_equal(ref_store_grant(f->db, &g, again), CM_ESTATE);
    ref_grant_t m = {.user_id = u.id,
                     .kind = "milestone",
                     .amount = 25,
                     .reason = "5 friends joined through your link",
                     .rule = "milestone_5",
                     .referral_id = NULL,
                     .at = "2026-01-01T00:00:01Z"};
    assert_int_equal(ref_store_grant(f->db, &m, again), 0);
    assert_int_equal(ref_store_grant(f->db, &m, again), CM_ESTATE);
    ref_stats_t s;
    assert_int_equal(ref_store_stats(f->db, u.id, &s), 0);
    assert_int_equal(s.credits, 35);
    assert_int_equal(s.rewards_count, 2);
    assert_string_equal(s.referral_code, ""); /* counters exist, the member not yet */
}

/* The referred ids of every row of every page of ref_store_list, in order. */
static size_t list_all(fixture_t *f, const user_t *ref, const char *status, int limit,
                       char ids[][37], size_t cap, size_t *pages)
{
    size_t n = 0;
    ref_cursor_t cur;
    bool more = true, first = true;
    *pages = 0;
    while (more) {
        ref_referral_page_t p;
        assert_int_equal(ref_store_list(f->db, ref->id, status, first ? NULL : &cur, limit, &p), 0);
        assert_true(p.n <= (size_t)limit);
        assert_true(p.more ? p.n == (size_t)limit : true);
        for (size_t i = 0; i < p.n; i++) {
            assert_true(n < cap);
            memcpy(ids[n++], p.rows[i].referred_id, 37);
        }
        more = p.more;
        if (more) {
            /* The cursor is the position of the page's last row. */
            assert_string_equal(p.next.id, p.rows[p.n - 1].id);
            assert_int_equal(p.next.created_us, p.rows[p.n - 1].created_us);
            cur = p.next;
        }
        first = false;
        (*pages)++;
        ref_referral_page_dispose(&p);
        assert_null(p.rows);
        assert_int_equal(p.n, 0);
    }
    return n;
}

static void the_list_pages_newest_first_through_its_cursors(void **state)
{
    fixture_t *f = *state;
    user_t ref, other;
    new_user(&ref);
    new_user(&other);
    char ids[5][37], at[32], stray[37];
    for (int i = 0; i < 5; i++) {
        second(i, at);
        refer_at(f, &ref, at, ids[i]);
    }
    refer_at(f, &other, "2026-01-01T00:00:30Z", stray); /* another referrer's */
    ref_referral_page_t p;
    assert_int_equal(ref_store_list(f->db, ref.id, NULL, NULL, 2, &p), 0);
    assert_int_equal(p.n, 2);
    assert_true(p.more);
    assert_string_equal(p.rows[0].referred_id, ids[4]);
    assert_string_equal(p.rows[1].referred_id, ids[3]);
    assert_int_equal(p.rows[0].created_us, JAN1_US + 4000000LL);
    assert_string_equal(p.rows[0].created_at, "2026-01-01T00:00:04.000Z");
    assert_int_equal(p.next.created_us, JAN1_US + 3000000LL);
    assert_string_equal(p.next.id, p.rows[1].id);
    ref_referral_page_dispose(&p);

    char got[8][37];
    size_t pages = 0;
    assert_int_equal(list_all(f, &ref, NULL, 2, got, 8, &pages), 5);
    assert_int_equal(pages, 3);
    for (int i = 0; i < 5; i++)
        assert_string_equal(got[i], ids[4 - i]);
    /* A page that ends exactly at the last row says there is no more. */
    assert_int_equal(list_all(f, &ref, NULL, 5, got, 8, &pages), 5);
    assert_int_equal(pages, 1);
}

static void rows_created_in_the_same_microsecond_page_by_id_without_loss(void **state)
{
    fixture_t *f = *state;
    user_t ref;
    new_user(&ref);
    char id[37];
    for (int i = 0; i < 7; i++)
        refer_at(f, &ref, "2026-01-01T00:00:00Z", id);
    char got[8][37];
    size_t pages = 0;
    assert_int_equal(list_all(f, &ref, NULL, 3, got, 8, &pages), 7);
    assert_int_equal(pages, 3);
    for (int i = 0; i < 7; i++)
        for (int j = i + 1; j < 7; j++)
            assert_string_not_equal(got[i], got[j]);
}

static void the_list_filters_by_status_on_every_page(void **state)
{
    fixture_t *f = *state;
    user_t ref;
    new_user(&ref);
    char ids[6][37], at[32];
    ref_conversion_t c;
    for (int i = 0; i < 6; i++) {
        second(i, at);
        refer_at(f, &ref, at, ids[i]);
    }
    for (int i = 0; i < 6; i += 2)
        assert_int_equal(
            ref_store_convert(f->db, ids[i], REF_SUCCESSFUL, NULL, "2026-01-02T00:00:00Z", &c), 0);
    char got[8][37];
    size_t pages = 0;
    assert_int_equal(list_all(f, &ref, REF_SUCCESSFUL, 2, got, 8, &pages), 3);
    assert_string_equal(got[0], ids[4]);
    assert_string_equal(got[1], ids[2]);
    assert_string_equal(got[2], ids[0]);
    assert_int_equal(list_all(f, &ref, REF_PENDING, 1, got, 8, &pages), 3);
    assert_int_equal(pages, 3);
    assert_string_equal(got[0], ids[5]);
    assert_int_equal(list_all(f, &ref, REF_EXPIRED, 2, got, 8, &pages), 0);
    assert_int_equal(pages, 1);
}

static void list_rows_carry_null_columns_as_null_or_empty(void **state)
{
    fixture_t *f = *state;
    user_t ref, known;
    new_user(&ref);
    new_user(&known);
    assert_int_equal(add_member(f, &known, &ref), 0);
    assert_int_equal(ref_store_add_referral(f->db, ref.id, known.id, "2026-01-01T00:00:01Z"), 0);
    char stranger[37];
    refer_at(f, &ref, "2026-01-01T00:00:00Z", stranger);
    ref_conversion_t c;
    assert_int_equal(ref_store_convert(f->db, known.id, REF_REJECTED, "disposable_email",
                                       "2026-01-01T05:00:00Z", &c),
                     0);
    ref_referral_page_t p;
    assert_int_equal(ref_store_list(f->db, ref.id, NULL, NULL, 10, &p), 0);
    assert_int_equal(p.n, 2);
    assert_false(p.more);
    const ref_referral_t *r = &p.rows[0]; /* the known member, rejected */
    assert_string_equal(r->referred_id, known.id);
    assert_string_equal(r->referred_username, known.name);
    assert_string_equal(r->status, REF_REJECTED);
    assert_string_equal(r->reason, "disposable_email");
    assert_string_equal(r->converted_at, "2026-01-01T05:00:00.000Z");
    assert_string_equal(r->id, c.referral_id);
    r = &p.rows[1]; /* not a member yet, still pending */
    assert_string_equal(r->referred_id, stranger);
    assert_null(r->referred_username);
    assert_string_equal(r->status, REF_PENDING);
    assert_null(r->reason);
    assert_string_equal(r->converted_at, "");
    ref_referral_page_dispose(&p);
}

static void an_empty_list_is_an_empty_last_page_and_a_bad_limit_is_einval(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u);
    ref_referral_page_t p;
    assert_int_equal(ref_store_list(f->db, u.id, NULL, NULL, 20, &p), 0);
    assert_int_equal(p.n, 0);
    assert_false(p.more);
    ref_referral_page_dispose(&p);
    ref_reward_page_t r;
    assert_int_equal(ref_store_rewards(f->db, u.id, NULL, 20, &r), 0);
    assert_int_equal(r.n, 0);
    assert_false(r.more);
    ref_reward_page_dispose(&r);
    assert_int_equal(ref_store_list(f->db, u.id, NULL, NULL, 0, &p), CM_EINVAL);
    assert_int_equal(p.n, 0);
    assert_null(p.rows);
    assert_int_equal(ref_store_rewards(f->db, u.id, NULL, -1, &r), CM_EINVAL);
    assert_null(r.rows);
    ref_referral_page_dispose(NULL);
    ref_reward_page_dispose(NULL);
}

static void rewards_page_newest_first_with_their_referral_or_none(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u);
    char referral[37], rid[3][37];
    cm_uuid_v4(referral);
    ref_grant_t g[3] = {
        {u.id, "credit", 10, "A friend joined", "referrer_credit", referral, "2026-01-01T00:00:00Z",
         "3"},
        {u.id, "milestone", 25, "5 friends joined", "milestone_5", NULL, "2026-01-01T00:00:01Z",
         "15"},
        {u.id, "credit", 7, "Welcome", "welcome_credit", referral, "2026-01-01T00:00:02Z", NULL},
    };
    for (int i = 0; i < 3; i++)
        assert_int_equal(ref_store_grant(f->db, &g[i], rid[i]), 0);
    ref_reward_page_t p;
    assert_int_equal(ref_store_rewards(f->db, u.id, NULL, 2, &p), 0);
    assert_int_equal(p.n, 2);
    assert_true(p.more);
    assert_string_equal(p.rows[0].id, rid[2]);
    assert_string_equal(p.rows[0].kind, "credit");
    assert_int_equal(p.rows[0].amount, 7);
    assert_string_equal(p.rows[0].reason, "Welcome");
    assert_string_equal(p.rows[0].referral_id, referral);
    assert_string_equal(p.rows[0].created_at, "2026-01-01T00:00:02.000Z");
    assert_int_equal(p.rows[0].created_us, JAN1_US + 2000000LL);
    assert_string_equal(p.rows[1].id, rid[1]);
    assert_string_equal(p.rows[1].kind, "milestone");
    assert_int_equal(p.rows[1].amount, 25);
    assert_string_equal(p.rows[1].referral_id, ""); /* SQL NULL */
    assert_string_equal(p.next.id, rid[1]);
    assert_int_equal(p.next.created_us, JAN1_US + 1000000LL);
    ref_cursor_t next = p.next;
    ref_reward_page_dispose(&p);
    assert_int_equal(ref_store_rewards(f->db, u.id, &next, 2, &p), 0);
    assert_int_equal(p.n, 1);
    assert_false(p.more);
    assert_string_equal(p.rows[0].id, rid[0]);
    assert_int_equal(p.rows[0].amount, 10);
    ref_reward_page_dispose(&p);
}

/* Whole days from 1989-01-01 to now: a TTL that makes only older rows
 * expirable (test_sweep works on the 1990s, other tests on recent times). */
static int days_since_1989(void)
{
    return (int)((cm_now_us() / 1000000LL - 599616000LL) / 86400LL);
}

static void expirable_lists_old_pending_referrals_oldest_first_up_to_the_limit(void **state)
{
    fixture_t *f = *state;
    user_t ref;
    new_user(&ref);
    char a[37], b[37], c[37], decided[37], young[37];
    refer_at(f, &ref, "1988-03-01T00:00:00Z", b);
    refer_at(f, &ref, "1988-01-01T00:00:00Z", a);
    refer_at(f, &ref, "1988-06-01T00:00:00Z", c);
    refer_at(f, &ref, "1987-01-01T00:00:00Z", decided);
    refer_at(f, &ref, "1989-06-01T00:00:00Z", young);
    ref_conversion_t conv;
    assert_int_equal(
        ref_store_convert(f->db, decided, REF_SUCCESSFUL, NULL, "1987-01-02T00:00:00Z", &conv), 0);
    int ttl = days_since_1989();
    char ids[8][37];
    int n = -1;
    assert_int_equal(ref_store_expirable(f->db, ttl, 2, ids, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(ids[0], a);
    assert_string_equal(ids[1], b);
    assert_int_equal(ref_store_expirable(f->db, ttl, 8, ids, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(ids[2], c);
    /* A TTL reaching back before the oldest pending row: nothing. */
    assert_int_equal(ref_store_expirable(f->db, ttl + 400, 8, ids, &n), 0);
    assert_int_equal(n, 0);
}

static const char HASH_A[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char HASH_B[] = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

static void clicks_count_once_per_client_and_hour_and_only_for_known_codes(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u);
    assert_int_equal(add_member(f, &u, NULL), 0);
    bool counted = true;
    ref_click_t c = {.code = u.code,
                     .client_hash = HASH_A,
                     .ua_class = "mobile",
                     .referrer_host = "social.example",
                     .count = true};
    assert_int_equal(ref_store_click(f->db, &c, &counted), 0);
    assert_true(counted);
    assert_int_equal(ref_store_click(f->db, &c, &counted), 0); /* same client, same hour */
    assert_false(counted);
    c.client_hash = HASH_B;
    c.referrer_host = NULL;
    c.count = false; /* a HEAD or a crawler: only asks */
    assert_int_equal(ref_store_click(f->db, &c, &counted), 0);
    assert_false(counted);
    c.count = true;
    assert_int_equal(ref_store_click(f->db, &c, &counted), 0);
    assert_true(counted);
    c.code = "ZZZZZZZZ";
    assert_int_equal(ref_store_click(f->db, &c, &counted), CM_ENOTFOUND);
    assert_false(counted);
    ref_stats_t s;
    assert_int_equal(ref_store_stats(f->db, u.id, &s), 0);
    assert_int_equal(s.clicks, 2);
    assert_string_equal(s.referral_code, u.code);
}

static void the_daily_series_has_one_entry_per_day_today_last(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u);
    assert_int_equal(add_member(f, &u, NULL), 0);
    bool counted = false;
    ref_click_t c = {.code = u.code, .client_hash = HASH_A, .ua_class = "desktop", .count = true};
    assert_int_equal(ref_store_click(f->db, &c, &counted), 0);
    char now[32], id[37];
    cm_format_time(cm_now_us(), now);
    refer_at(f, &u, now, id);
    ref_day_t days[REF_MAX_DAYS];
    assert_int_equal(ref_store_daily(f->db, u.id, REF_MAX_DAYS, days), 0);
    for (int i = 0; i < REF_MAX_DAYS - 1; i++) {
        assert_true(strcmp(days[i].date, days[i + 1].date) < 0);
        assert_int_equal(days[i].clicks + days[i].signups + days[i].successful, 0);
    }
    assert_int_equal(days[REF_MAX_DAYS - 1].clicks, 1);
    assert_int_equal(days[REF_MAX_DAYS - 1].signups, 1);
    assert_int_equal(strncmp(days[REF_MAX_DAYS - 1].date, now, 10), 0);
    /* A conversion counts on the day it happens. */
    ref_conversion_t conv;
    assert_int_equal(ref_store_convert(f->db, id, REF_SUCCESSFUL, NULL, now, &conv), 0);
    assert_int_equal(ref_store_daily(f->db, u.id, 1, days), 0);
    assert_int_equal(days[0].successful, 1);
    assert_int_equal(days[0].signups, 1);
}

/* ---- one statement per authenticated read (issue 16) ---------------------------------- */

static void every_read_of_a_deleted_account_is_eauth_even_with_nothing_to_show(void **state)
{
    fixture_t *f = *state;
    user_t u, bare;
    new_user(&u);
    new_user(&bare);
    assert_int_equal(add_member(f, &u, NULL), 0);
    char at[32], id[37];
    second(1, at);
    refer_at(f, &u, at, id);
    second(2, at);
    refer_at(f, &u, at, id);
    bool first = false;
    assert_int_equal(ref_store_forget_member(f->db, u.id, "2026-01-02T00:00:00Z", &first), 0);
    /* bare never had a row anywhere: its empty pages must not read as "not deleted". */
    assert_int_equal(ref_store_forget_member(f->db, bare.id, "2026-01-02T00:00:00Z", &first), 0);
    const user_t *who[] = {&u, &bare};
    ref_cursor_t cur = {.created_us = JAN1_US + 9000000LL};
    memcpy(cur.id, id, sizeof cur.id);
    for (size_t i = 0; i < 2; i++) {
        ref_stats_t s;
        ref_referral_page_t p;
        ref_reward_page_t r;
        ref_day_t days[REF_MAX_DAYS];
        assert_int_equal(ref_store_stats(f->db, who[i]->id, &s), CM_EAUTH);
        assert_int_equal(ref_store_list(f->db, who[i]->id, NULL, NULL, 20, &p), CM_EAUTH);
        assert_null(p.rows);
        assert_null(p.res);
        assert_int_equal(ref_store_list(f->db, who[i]->id, NULL, &cur, 20, &p), CM_EAUTH);
        assert_int_equal(ref_store_list(f->db, who[i]->id, REF_PENDING, NULL, 1, &p), CM_EAUTH);
        assert_int_equal(ref_store_list(f->db, who[i]->id, REF_PENDING, &cur, 1, &p), CM_EAUTH);
        assert_int_equal(ref_store_rewards(f->db, who[i]->id, NULL, 20, &r), CM_EAUTH);
        assert_int_equal(ref_store_rewards(f->db, who[i]->id, &cur, 20, &r), CM_EAUTH);
        assert_int_equal(ref_store_daily(f->db, who[i]->id, 7, days), CM_EAUTH);
        assert_int_equal(ref_store_set_optin(f->db, who[i]->id, true), CM_EAUTH);
        char *opt = t_pg_value(
            f->db, "SELECT count(*) FROM leaderboard_optin WHERE user_id = $1::uuid", who[i]->id);
        assert_string_equal(opt, "0");
        free(opt);
    }
    /* The referrals stay (they are the referrer's counts) and another user still reads. */
    user_t other;
    new_user(&other);
    ref_stats_t s;
    assert_int_equal(ref_store_stats(f->db, other.id, &s), 0);
    assert_int_equal(ref_store_set_optin(f->db, other.id, true), 0);
}

/* The default page size runs statements of its own (a literal LIMIT): they
 * must page exactly as the parameterized ones, with and without a status. */
static void default_size_pages_match_other_sizes_with_and_without_a_status(void **state)
{
    fixture_t *f = *state;
    user_t ref;
    new_user(&ref);
    enum { N = 45 };
    char ids[N][37], at[32];
    ref_conversion_t c;
    for (int i = 0; i < N; i++) {
        second(i, at);
        refer_at(f, &ref, at, ids[i]);
        if (i % 3 == 0)
            assert_int_equal(
                ref_store_convert(f->db, ids[i], REF_SUCCESSFUL, NULL, "2026-01-02T00:00:00Z", &c),
                0);
    }
    static char dflt[N][37], other[N][37];
    const char *statuses[] = {NULL, REF_SUCCESSFUL, REF_PENDING};
    const size_t want[] = {N, 15, 30}, want_pages[] = {3, 1, 2};
    for (size_t k = 0; k < 3; k++) {
        size_t pages = 0, other_pages = 0;
        assert_int_equal(list_all(f, &ref, statuses[k], REF_PAGE_DEFAULT, dflt, N, &pages),
                         want[k]);
        assert_int_equal(pages, want_pages[k]);
        assert_int_equal(list_all(f, &ref, statuses[k], 7, other, N, &other_pages), want[k]);
        for (size_t i = 0; i < want[k]; i++)
            assert_string_equal(dflt[i], other[i]);
    }
    assert_string_equal(dflt[0], ids[N - 1]); /* the pending ones, newest first */
}

/* Every reward of u, paged by limit, into ids (newest first); returns how many. */
static size_t rewards_all(fixture_t *f, const user_t *u, int limit, char ids[][37], size_t cap,
                          size_t *pages)
{
    size_t n = 0;
    ref_cursor_t cur;
    bool more = true, first = true;
    *pages = 0;
    while (more) {
        ref_reward_page_t p;
        assert_int_equal(ref_store_rewards(f->db, u->id, first ? NULL : &cur, limit, &p), 0);
        assert_true(p.more ? p.n == (size_t)limit : p.n <= (size_t)limit);
        for (size_t i = 0; i < p.n; i++) {
            assert_true(n < cap);
            memcpy(ids[n++], p.rows[i].id, 37);
        }
        more = p.more;
        cur = p.next;
        first = false;
        (*pages)++;
        ref_reward_page_dispose(&p);
    }
    return n;
}

/* Rewards pages have default-size statements too (a literal LIMIT). */
static void default_size_reward_pages_match_other_sizes(void **state)
{
    fixture_t *f = *state;
    user_t u;
    new_user(&u);
    enum { N = 45 };
    char granted[N][37], at[32], referral[37];
    for (int i = 0; i < N; i++) {
        second(i, at);
        cm_uuid_v4(referral);
        ref_grant_t g = {u.id,     "credit", 1,   "A friend joined", "referrer_credit",
                         referral, at,       NULL};
        assert_int_equal(ref_store_grant(f->db, &g, granted[i]), 0);
    }
    static char dflt[N][37], other[N][37];
    size_t pages = 0, other_pages = 0;
    assert_int_equal(rewards_all(f, &u, REF_PAGE_DEFAULT, dflt, N, &pages), N);
    assert_int_equal(pages, 3);
    assert_int_equal(rewards_all(f, &u, 7, other, N, &other_pages), N);
    assert_int_equal(other_pages, 7);
    for (size_t i = 0; i < N; i++) {
        assert_string_equal(dflt[i], granted[N - 1 - i]); /* newest first */
        assert_string_equal(other[i], dflt[i]);
    }
}

/* The username a page shows for the only referral of referrer. */
static char *listed_username(fixture_t *f, const user_t *referrer)
{
    ref_referral_page_t p;
    assert_int_equal(ref_store_list(f->db, referrer->id, NULL, NULL, 10, &p), 0);
    assert_int_equal(p.n, 1);
    char *name = p.rows[0].referred_username ? cm_xstrdup(p.rows[0].referred_username) : NULL;
    ref_referral_page_dispose(&p);
    return name;
}

/* Migration 008: the page reads the username from the referral's own copy,
 * which follows the member whichever of the two rows comes first. */
static void
the_listed_username_follows_its_member_in_either_order_and_leaves_on_delete(void **state)
{
    fixture_t *f = *state;
    user_t ref, ref2, early, late;
    new_user(&ref);
    new_user(&ref2);
    new_user(&early);
    new_user(&late);
    /* The member first, then its referral. */
    assert_int_equal(add_member(f, &early, &ref), 0);
    assert_int_equal(ref_store_add_referral(f->db, ref.id, early.id, "2026-01-01T00:00:01Z"), 0);
    char *name = listed_username(f, &ref);
    assert_string_equal(name, early.name);
    free(name);
    /* The referral first (its member not known yet), then the member. */
    assert_int_equal(ref_store_add_referral(f->db, ref2.id, late.id, "2026-01-01T00:00:02Z"), 0);
    assert_null(listed_username(f, &ref2));
    assert_int_equal(add_member(f, &late, &ref2), 0);
    name = listed_username(f, &ref2);
    assert_string_equal(name, late.name);
    free(name);
    /* The referred account deleted: its name leaves the referrer's list, the referral stays. */
    bool first = false;
    assert_int_equal(ref_store_forget_member(f->db, late.id, "2026-01-02T00:00:00Z", &first), 0);
    assert_null(listed_username(f, &ref2));
}

/* to_char's text of us, the way the pages used to read their times. */
static void pg_time_text(fixture_t *f, int64_t us, char out[REF_TIME_MAX])
{
    char v[24];
    snprintf(v, sizeof v, "%lld", (long long)us);
    const char *p[1] = {v};
    PGresult *res = NULL;
    assert_int_equal(cm_db_exec(f->db,
                                /* Seconds and the rest apart: an interval times a bigint
                                 * goes through a double, inexact beyond 2^53 µs. */
                                "SELECT to_char(('epoch'::timestamptz + ($1::bigint / 1000000) "
                                "* interval '1 second' + ($1::bigint % 1000000) * "
                                "interval '1 microsecond') AT TIME ZONE 'UTC', "
                                "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
                                1, p, &res),
                     0);
    snprintf(out, REF_TIME_MAX, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

static void times_read_the_same_as_postgresqls_to_char_wrote_them(void **state)
{
    fixture_t *f = *state;
    int64_t cases[64] = {
        0,
        -1,
        1,
        999,
        1000,
        999999,
        1000000,
        -999999,
        -1000000,
        -1000001,
        JAN1_US + 123456,
        -62135596800000000LL, /* 0001-01-01 */
        253402300799999999LL, /* 9999-12-31T23:59:59.999999 */
        951782400000000LL,    /* 2000-02-29 */
        951868799999999LL,    /* 2000-02-29T23:59:59.999999 */
        4107542400000000LL,   /* 2100-03-01 */
        -2203934399999500LL,  /* 1900-02-28T12:00:00.0005 */
        -12219292800000000LL, /* 1582-10-15 */
        1796555842520900LL,   /* 2026-12-06T11:17:22.5209 */
    };
    size_t n = 19;
    /* And pseudo-random ones over the whole range (a fixed LCG: the same every run). */
    uint64_t x = 88172645463325252ULL;
    for (; n < sizeof cases / sizeof cases[0]; n++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        cases[n] = -62135596800000000LL + (int64_t)(x % 315537897599999999ULL);
    }
    for (size_t i = 0; i < n; i++) {
        char want[REF_TIME_MAX], got[REF_TIME_MAX];
        pg_time_text(f, cases[i], want);
        ref_time_text(cases[i], got);
        assert_string_equal(got, want);
    }
}

/* ---- the monthly leaderboard (migration 006) ----------------------------------------- */

/* A member registered at `at`, with n referrals converted successful at `when` each. */
static void board_member(fixture_t *f, user_t *u, const char *at, int n, const char *when)
{
    new_user(u);
    ref_member_t m = {.user_id = u->id,
                      .username = u->name,
                      .email = u->email,
                      .referral_code = u->code,
                      .registered_at = at};
    assert_int_equal(ref_store_add_member(f->db, &m), 0);
    for (int i = 0; i < n; i++) {
        char id[37];
        ref_conversion_t c;
        refer_at(f, u, when, id);
        assert_int_equal(ref_store_convert(f->db, id, REF_SUCCESSFUL, NULL, when, &c), 0);
    }
}

static void the_leaderboard_ranks_one_months_successes_ties_to_the_earlier_member(void **state)
{
    fixture_t *f = *state;
    user_t a, b, c, d, e;
    /* March 1999: a month no other test writes to. */
    board_member(f, &a, "1999-01-05T00:00:00Z", 3, "1999-03-10T12:00:00Z");
    board_member(f, &c, "1999-01-02T00:00:00Z", 2, "1999-03-31T23:59:59Z");
    board_member(f, &b, "1999-01-01T00:00:00Z", 2, "1999-03-01T00:00:00Z");
    board_member(f, &d, "1999-01-01T00:00:00Z", 9, "1999-02-28T23:59:59Z"); /* last month */
    board_member(f, &e, "1999-01-01T00:00:00Z", 0, NULL);
    char pending[37];
    refer_at(f, &e, "1999-03-02T00:00:00Z", pending); /* pending: no success */
    assert_int_equal(ref_store_set_optin(f->db, b.id, true), 0);
    assert_int_equal(ref_store_set_optin(f->db, c.id, true), 0);
    assert_int_equal(ref_store_set_optin(f->db, c.id, false), 0); /* changed its mind */
    ref_board_row_t rows[REF_BOARD_MAX];
    int n = -1;
    assert_int_equal(ref_store_leaderboard(f->db, "1999-03-01", 20, rows, &n), 0);
    assert_int_equal(n, 3);
    const user_t *want[] = {&a, &b, &c};
    const long long counts[] = {3, 2, 2};
    const bool shown[] = {false, true, false};
    for (int i = 0; i < 3; i++) {
        assert_string_equal(rows[i].user_id, want[i]->id);
        assert_string_equal(rows[i].username, want[i]->name);
        assert_int_equal(rows[i].successful, counts[i]);
        assert_int_equal(rows[i].show, shown[i]);
    }
    /* The limit cuts the list; February has only d; a bad limit is refused. */
    assert_int_equal(ref_store_leaderboard(f->db, "1999-03-01", 1, rows, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].user_id, a.id);
    assert_int_equal(ref_store_leaderboard(f->db, "1999-02-01", 20, rows, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].user_id, d.id);
    assert_int_equal(rows[0].successful, 9);
    assert_int_equal(ref_store_leaderboard(f->db, "1999-04-01", 20, rows, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ref_store_leaderboard(f->db, "1999-03-01", 0, rows, &n), CM_EINVAL);
    assert_int_equal(ref_store_leaderboard(f->db, "1999-03-01", REF_BOARD_MAX + 1, rows, &n),
                     CM_EINVAL);
}

#define T(name) cmocka_unit_test_setup_teardown(name, t_pg_begin, t_pg_rollback)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(an_event_id_is_new_once_then_a_conflict),
        T(a_member_is_added_once_with_zero_counters_and_its_code),
        T(an_unknown_user_has_zero_stats_an_empty_code_and_no_email),
        T(a_referral_is_counted_pending_and_only_once_per_referred_user),
        T(a_conversion_moves_one_count_and_reports_the_referral),
        T(a_parked_verification_is_taken_once_and_the_first_one_wins),
        T(recent_referrals_count_from_24_hours_before_at_later_ones_included),
        T(a_grant_pays_once_per_rule_and_adds_to_the_counters),
        T(the_list_pages_newest_first_through_its_cursors),
        T(rows_created_in_the_same_microsecond_page_by_id_without_loss),
        T(the_list_filters_by_status_on_every_page),
        T(list_rows_carry_null_columns_as_null_or_empty),
        T(an_empty_list_is_an_empty_last_page_and_a_bad_limit_is_einval),
        T(rewards_page_newest_first_with_their_referral_or_none),
        T(expirable_lists_old_pending_referrals_oldest_first_up_to_the_limit),
        T(clicks_count_once_per_client_and_hour_and_only_for_known_codes),
        T(the_daily_series_has_one_entry_per_day_today_last),
        T(the_leaderboard_ranks_one_months_successes_ties_to_the_earlier_member),
        T(every_read_of_a_deleted_account_is_eauth_even_with_nothing_to_show),
        T(times_read_the_same_as_postgresqls_to_char_wrote_them),
        T(the_listed_username_follows_its_member_in_either_order_and_leaves_on_delete),
        T(default_size_pages_match_other_sizes_with_and_without_a_status),
        T(default_size_reward_pages_match_other_sizes),
    };
    return cmocka_run_group_tests(tests, group_setup, t_pg_tx_free);
}
