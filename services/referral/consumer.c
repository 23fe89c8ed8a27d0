/* consumer.c — user events to members and referrals, idempotently (see consumer.h). */
#include "consumer.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cm/events.h"
#include "cm/log.h"
#include "cm/outbox.h"
#include "cm/util.h"
#include "rules.h"
#include "store.h"

const char *const ref_topics[] = {CM_EV_USER_REGISTERED, CM_EV_USER_VERIFIED,
                                  CM_EV_USER_EMAIL_CHANGED, CM_EV_USER_DELETED, NULL};

#define MAX_CODE 16

/* What one event asks for; strings borrowed from the event's JSON. */
typedef struct plan {
    const ref_config_t *cfg;
    const char *event_id;
    const char *correlation_id; /* the event's, or NULL */
    ref_member_t member;        /* user.registered */
    const char *user_id;        /* user.verified, user.deleted */
    const char *verified_at;
    const char *deleted_at;
    const char *new_email; /* user.email.changed */
} plan_t;

static bool digits(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* The number written in the n digits at s, when it is within [min, max]; else -1. */
static int time_field(const char *s, int n, int min, int max)
{
    char text[5];
    long long v = 0;
    if (n >= (int)sizeof text || !digits(s, n))
        return -1;
    memcpy(text, s, (size_t)n);
    text[n] = '\0';
    return cm_strtonum(text, min, max, &v) == 0 ? (int)v : -1;
}

/* The end of an RFC 3339 time after the seconds: optional fraction, then Z or ±hh:mm. */
static bool time_tail_ok(const char *p)
{
    if (*p == '.') {
        size_t n = strspn(p + 1, "0123456789");
        if (n < 1 || n > 9)
            return false;
        p += 1 + n;
    }
    return ((*p == 'Z' || *p == 'z') && p[1] == '\0') ||
           ((*p == '+' || *p == '-') && digits(p + 1, 2) && p[3] == ':' && digits(p + 4, 2) &&
            p[6] == '\0');
}

/* RFC 3339 date-time ("2026-11-27T10:00:00.123Z", or with ±hh:mm) whose
 * fields form a real calendar time, so PostgreSQL will accept it. */
static const char *get_time(json_t *obj, const char *key)
{
    const char *s = cm_event_text(obj, key, 40);
    if (!s || strlen(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':' || !time_tail_ok(s + 19))
        return NULL;
    int y = time_field(s, 4, 1970, 9999), mo = time_field(s + 5, 2, 1, 12);
    int d = time_field(s + 8, 2, 1, 31);
    struct tm tm = {.tm_hour = time_field(s + 11, 2, 0, 23),
                    .tm_min = time_field(s + 14, 2, 0, 59),
                    .tm_sec = time_field(s + 17, 2, 0, 59)};
    if (y < 0 || mo < 0 || d < 0 || tm.tm_hour < 0 || tm.tm_min < 0 || tm.tm_sec < 0)
        return NULL;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    /* timegm normalises 2026-02-30 to March 2: reading it back catches days past the month. */
    time_t t = timegm(&tm);
    struct tm back;
    if (!gmtime_r(&t, &back) || back.tm_year + 1900 != y || back.tm_mon + 1 != mo ||
        back.tm_mday != d)
        return NULL;
    return s;
}

static int plan_registered(plan_t *p, json_t *data)
{
    ref_member_t *m = &p->member;
    m->user_id = cm_event_uuid(data, "user_id");
    m->username = cm_event_text(data, "username", CM_EV_USERNAME_MAX);
    m->email = cm_event_text(data, "email", CM_EV_EMAIL_MAX);
    m->referral_code = cm_event_text(data, "referral_code", MAX_CODE);
    m->registered_at = get_time(data, "registered_at");
    if (!m->user_id || !m->username || !m->email || !m->referral_code || !m->registered_at)
        return CM_EPARSE;
    json_t *by = json_object_get(data, "referred_by"); /* borrowed */
    if (by && !json_is_null(by)) {
        m->referred_by = json_is_object(by) ? cm_event_uuid(by, "user_id") : NULL;
        if (!m->referred_by)
            return CM_EPARSE;
    }
    return 0;
}

static int plan_verified(plan_t *p, json_t *data)
{
    p->user_id = cm_event_uuid(data, "user_id");
    p->verified_at = get_time(data, "verified_at");
    return p->user_id && p->verified_at ? 0 : CM_EPARSE;
}

static int plan_email_changed(plan_t *p, json_t *data)
{
    p->user_id = cm_event_uuid(data, "user_id");
    p->new_email = cm_event_text(data, "new_email", CM_EV_EMAIL_MAX);
    return p->user_id && p->new_email && strchr(p->new_email, '@') ? 0 : CM_EPARSE;
}

static int plan_deleted(plan_t *p, json_t *data)
{
    p->user_id = cm_event_uuid(data, "user_id");
    p->deleted_at = get_time(data, "deleted_at");
    return p->user_id && p->deleted_at ? 0 : CM_EPARSE;
}

/* Writes an event (data stolen) keyed by key into the outbox, in the caller's transaction,
 * with the correlation id of the event that caused it (NULL: none, as for the expiry sweep). */
static int emit(cm_db_t *db, const char *type, const char *key, const char *correlation_id,
                json_t *data)
{
    json_t *env = cm_event_new(type, "referral", data);
    if (!env)
        return CM_EINVAL;
    /* The consumed envelope's id passed the parser's check: never refused here. */
    if (correlation_id && cm_event_set_correlation(env, correlation_id) != 0)
        CM_WARN(NULL, "referral: correlation id not kept on %s", type);
    int rc = cm_outbox_add(db, REF_OUTBOX_CHANNEL, key, env);
    json_decref(env);
    return rc;
}

/* Writes referral.converted for a change into the outbox, in the caller's transaction. */
static int emit_converted(cm_db_t *db, const ref_conversion_t *c, const char *referred_id,
                          const char *status, const char *reason, const char *correlation_id)
{
    json_t *data =
        json_pack("{s:s, s:s, s:s, s:s, s:o, s:s}", "referral_id", c->referral_id, "referrer_id",
                  c->referrer_id, "referred_id", referred_id, "status", status, "reason",
                  reason ? json_string(reason) : json_null(), "at", c->at);
    return emit(db, CM_EV_REFERRAL_CONVERTED, c->referrer_id, correlation_id, data);
}

/* Grants one reward and announces it (reward.granted through the outbox).
 * A rule that already paid for this referral pays nothing. */
static int grant(cm_db_t *db, const ref_grant_t *g, const char *correlation_id)
{
    if (g->amount <= 0)
        return 0;
    char reward_id[37];
    int rc = ref_store_grant(db, g, reward_id);
    if (rc == CM_ESTATE)
        return 0;
    if (rc != 0)
        return rc;
    json_t *data = json_pack(
        "{s:s, s:s, s:s, s:I, s:s, s:o, s:s}", "reward_id", reward_id, "user_id", g->user_id,
        "kind", g->kind, "amount", (json_int_t)g->amount, "reason", g->reason, "referral_id",
        g->referral_id ? json_string(g->referral_id) : json_null(), "at", g->at);
    return emit(db, CM_EV_REWARD_GRANTED, g->user_id, correlation_id, data);
}

/* The reward engine, run in the transaction that made a referral successful. */
static int pay_rewards(cm_db_t *db, const ref_rules_t *rules, const ref_conversion_t *c,
                       const char *referred_id, const char *correlation_id)
{
    ref_grant_t g = {.user_id = c->referrer_id,
                     .kind = "credit",
                     .amount = rules->referrer_credit,
                     .reason = "A friend you referred joined",
                     .rule = "referrer_credit",
                     .referral_id = c->referral_id,
                     .at = c->at,
                     .stripe = c->stripe};
    int rc = grant(db, &g, correlation_id);
    if (rc == 0) {
        g = (ref_grant_t){.user_id = referred_id,
                          .kind = "credit",
                          .amount = rules->welcome_credit,
                          .reason = "Welcome to linktr",
                          .rule = "welcome_credit",
                          .referral_id = c->referral_id,
                          .at = c->at};
        rc = grant(db, &g, correlation_id);
    }
    for (size_t i = 0; rc == 0 && i < rules->nmilestones; i++) {
        if (rules->milestones[i].at != c->successful)
            continue;
        char rule[40], reason[80];
        snprintf(rule, sizeof rule, "milestone_%lld", rules->milestones[i].at);
        snprintf(reason, sizeof reason, "%lld friends joined through your link",
                 rules->milestones[i].at);
        g = (ref_grant_t){.user_id = c->referrer_id,
                          .kind = "milestone",
                          .amount = rules->milestones[i].amount,
                          .reason = reason,
                          .rule = rule,
                          .referral_id = c->referral_id,
                          .at = c->at,
                          .stripe = c->stripe};
        rc = grant(db, &g, correlation_id);
    }
    return rc;
}

/* The largest milestone of the rules; 0 when there is none. */
static long long last_milestone(const ref_rules_t *rules)
{
    long long last = 0;
    for (size_t i = 0; i < rules->nmilestones; i++)
        if (rules->milestones[i].at > last)
            last = rules->milestones[i].at;
    return last;
}

/*
 * Sets c->successful, the referrer's successful count after c, for the
 * milestone rules. A milestone is paid by the conversion that makes the
 * count equal to it, so that count must be exact, yet striped conversions
 * do not see each other until they commit. The count read after our own
 * increment sees ours and every committed one: while that is not past the
 * last milestone, the conversion takes the referrer's milestone lock and
 * reads again. Every conversion that can still reach a milestone holds
 * that lock to commit, so those are serialised and each reads its exact
 * ordinal. Once the committed count has passed the last milestone (a viral
 * referrer after its first few dozen friends) no milestone can fall due,
 * conversions go without the lock, and c->successful is a lower bound above
 * every milestone. A holder of the lock asks for no other row of its
 * referrer than the stripe it holds already (its rewards go there too), so
 * the lock cannot close a wait cycle.
 */
static int milestone_count(cm_db_t *db, const ref_rules_t *rules, ref_conversion_t *c)
{
    long long last = last_milestone(rules);
    c->successful = 0;
    if (last == 0)
        return 0;
    int rc = ref_store_successful(db, c->referrer_id, &c->successful);
    if (rc == 0 && c->successful - 1 < last) {
        rc = ref_store_lock_milestones(db, c->referrer_id);
        if (rc == 0)
            rc = ref_store_successful(db, c->referrer_id, &c->successful);
    }
    return rc;
}

int ref__convert(cm_db_t *db, const ref_config_t *cfg, const char *referred_id, const char *status,
                 const char *reason, const char *at, const char *correlation_id)
{
    ref_conversion_t c;
    int rc = ref_store_convert(db, referred_id, status, reason, at, &c);
    if (rc == 0 && strcmp(status, REF_SUCCESSFUL) == 0)
        rc = milestone_count(db, &cfg->rules, &c);
    if (rc != 0)
        return rc;
    rc = emit_converted(db, &c, referred_id, status, reason, correlation_id);
    if (rc == 0 && strcmp(status, REF_SUCCESSFUL) == 0)
        rc = pay_rewards(db, &cfg->rules, &c, referred_id, correlation_id);
    return rc;
}

/* pending → successful for user_id's referral, if it has a pending one. */
static int apply_verified(cm_db_t *db, const plan_t *p, const char *user_id, const char *at)
{
    int rc = ref__convert(db, p->cfg, user_id, REF_SUCCESSFUL, NULL, at, p->correlation_id);
    return rc == CM_ENOTFOUND ? 0 : rc; /* not referred, or already decided */
}

/* The fraud rules for a new referral; the reason to reject it, or NULL. */
static const char *fraud_reason(cm_db_t *db, const plan_t *p, int *rc)
{
    const ref_member_t *m = &p->member;
    char referrer_email[255];
    *rc = ref_store_member_email(db, m->referred_by, referrer_email);
    if (*rc == 0 && ref_email_alias(referrer_email, m->email))
        return REF_REASON_ALIAS;
    if (*rc != 0 && *rc != CM_ENOTFOUND)
        return NULL;
    *rc = 0; /* a referrer not seen yet cannot be compared: the other rules still apply */
    if (ref_domains_match(&p->cfg->disposable, m->email))
        return REF_REASON_DISPOSABLE;
    int cap = p->cfg->daily_cap;
    int recent = ref_store_recent_referrals(db, m->referred_by, m->registered_at,
                                            cap < INT_MAX ? cap + 1 : cap);
    if (recent < 0) {
        *rc = recent;
        return NULL;
    }
    /* The new referral is already counted: more than the cap is too many. */
    return recent > cap ? REF_REASON_DAILY_CAP : NULL;
}

/* Creates the referral of a new member, rejected at once when a fraud rule says so. */
static int add_referral(cm_db_t *db, const plan_t *p)
{
    const ref_member_t *m = &p->member;
    /* Held to commit: the next referral of this referrer counts this one. */
    int rc = ref_store_lock_referrer(db, m->referred_by);
    if (rc == 0)
        rc = ref_store_add_referral(db, m->referred_by, m->user_id, m->registered_at);
    if (rc == CM_ESTATE)
        return 0;
    const char *reason = rc == 0 ? fraud_reason(db, p, &rc) : NULL;
    if (rc == 0 && reason)
        rc = ref__convert(db, p->cfg, m->user_id, REF_REJECTED, reason, m->registered_at,
                          p->correlation_id);
    return rc;
}

static int registered_tx(cm_db_t *db, void *arg)
{
    const plan_t *p = arg;
    const ref_member_t *m = &p->member;
    int rc = ref_store_lock_user(db, m->user_id);
    if (rc == 0)
        rc = ref_store_mark_processed(db, p->event_id);
    if (rc == CM_ECONFLICT)
        return 0; /* redelivered: nothing to do */
    /* Deleted before its registration got here (another topic): the referral still
     * counts for the referrer, but the member (name, address, code) is never stored. */
    int gone = rc == 0 ? ref_store_deleted(db, m->user_id) : rc;
    if (gone != 0 && gone != CM_ENOTFOUND)
        return gone;
    if (gone == CM_ENOTFOUND)
        rc = ref_store_add_member(db, m);
    if (rc == CM_ESTATE)
        return 0; /* the member is known (another event for the same user) */
    if (rc == CM_ECONFLICT) {
        CM_WARN(NULL, "referral: event %s: referral code taken by another member", p->event_id);
        return CM_EPARSE;
    }
    /* A self-referral is never a referral; auth refuses it, this is the backstop. */
    if (rc == 0 && m->referred_by && strcmp(m->referred_by, m->user_id) != 0)
        rc = add_referral(db, p);
    if (rc == 0 && gone == CM_ENOTFOUND)
        rc = ref_store_apply_parked_email(db, m->user_id);
    char at[40];
    if (rc == 0 && (rc = ref_store_take_parked(db, m->user_id, at)) == 0)
        rc = apply_verified(db, p, m->user_id, at);
    return rc == CM_ENOTFOUND ? 0 : rc;
}

static int verified_tx(cm_db_t *db, void *arg)
{
    const plan_t *p = arg;
    int rc = ref_store_lock_user(db, p->user_id);
    if (rc == 0)
        rc = ref_store_mark_processed(db, p->event_id);
    if (rc == CM_ECONFLICT)
        return 0;
    if (rc == 0)
        rc = ref_store_member_exists(db, p->user_id);
    if (rc == CM_ENOTFOUND && ref_store_deleted(db, p->user_id) == 0)
        rc = 0; /* deleted: no member to wait for, the referrer's count still moves */
    if (rc == CM_ENOTFOUND)
        return ref_store_park_verification(db, p->user_id, p->verified_at);
    if (rc != 0)
        return rc;
    return apply_verified(db, p, p->user_id, p->verified_at);
}

/*
 * The member's address follows the account's. A change that overtakes its
 * registration (another topic) is parked, the newest per user, and applied
 * when the registration arrives (registered_tx): applied first it would be
 * lost, and the registration would bring back the old address. A deleted
 * account's change is done with: its member never comes back.
 */
static int email_changed_tx(cm_db_t *db, void *arg)
{
    const plan_t *p = arg;
    int rc = ref_store_lock_user(db, p->user_id);
    if (rc == 0)
        rc = ref_store_mark_processed(db, p->event_id);
    if (rc == CM_ECONFLICT)
        return 0;
    if (rc == 0)
        rc = ref_store_member_set_email(db, p->user_id, p->new_email);
    if (rc != CM_ENOTFOUND)
        return rc;
    rc = ref_store_deleted(db, p->user_id);
    if (rc == 0)
        return 0; /* the account is gone: no member will ever come to take the address */
    return rc == CM_ENOTFOUND ? ref_store_park_email(db, p->user_id, p->new_email) : rc;
}

/* user.deleted: anonymise once; a replay (same or another event id) changes nothing. */
static int deleted_tx(cm_db_t *db, void *arg)
{
    const plan_t *p = arg;
    int rc = ref_store_lock_user(db, p->user_id);
    if (rc == 0)
        rc = ref_store_mark_processed(db, p->event_id);
    if (rc == CM_ECONFLICT)
        return 0;
    bool first = false;
    if (rc == 0)
        rc = ref_store_forget_member(db, p->user_id, p->deleted_at, &first);
    if (rc == 0 && first)
        CM_INFO(NULL, "referral: user %s deleted: member anonymised", p->user_id);
    return rc;
}

/* The transaction body and its plan, for guarded_tx. */
typedef struct guarded {
    cm_db_tx_fn fn;
    plan_t *plan;
} guarded_t;

/* Data PostgreSQL itself refuses (class 22 data exception, 23 integrity)
 * will be refused again on every retry: the event is unprocessable. */
static int guarded_tx(cm_db_t *db, void *arg)
{
    guarded_t *g = arg;
    int rc = g->fn(db, g->plan);
    if (rc == CM_EDB) {
        const char *state = cm_db_sqlstate(db);
        if (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0)
            rc = CM_EPARSE;
    }
    return rc;
}

int ref_handle_event(ref_ctx_t *ctx, const char *bytes, size_t len)
{
    cm_event_t ev;
    if (cm_event_parse(bytes, len, &ev) != 0)
        return CM_EPARSE;
    plan_t p = {.cfg = ctx->cfg,
                .event_id = ev.id,
                .correlation_id = ev.correlation_id[0] ? ev.correlation_id : NULL};
    cm_db_tx_fn fn = NULL;
    int rc = 0;
    if (strcmp(ev.type, CM_EV_USER_REGISTERED) == 0) {
        rc = plan_registered(&p, ev.data);
        fn = registered_tx;
    } else if (strcmp(ev.type, CM_EV_USER_VERIFIED) == 0) {
        rc = plan_verified(&p, ev.data);
        fn = verified_tx;
    } else if (strcmp(ev.type, CM_EV_USER_DELETED) == 0) {
        rc = plan_deleted(&p, ev.data);
        fn = deleted_tx;
    } else if (strcmp(ev.type, CM_EV_USER_EMAIL_CHANGED) == 0) {
        rc = plan_email_changed(&p, ev.data);
        fn = email_changed_tx;
    }
    if (rc == 0 && fn)
        rc = cm_db_tx(ctx->pool, guarded_tx, &(guarded_t){fn, &p});
    if (rc != 0)
        CM_WARN(p.correlation_id, "referral: event %s (%s): %s", ev.id, ev.type, cm_strerror(rc));
    cm_event_dispose(&ev);
    return rc;
}

int ref_consume(const cm_kmsg_t *msg, void *ctx)
{
    return ref_handle_event(ctx, msg->value, msg->len);
}
