/*
 * consumer.h — the mailer's Kafka handler: one event, at most one mail.
 *
 * Topics: user.registered (contact row + verify-your-email mail),
 * reset.requested (reset-your-password mail), password.changed (your
 * password was changed), reward.granted (you earned a reward; the
 * address comes from the contacts table), email.change.requested (the
 * confirm link, to the new address), email.change.notice (the cancel link,
 * to the old address) and user.email.changed (no mail: the contact moves to
 * the new address, ordered by the change's time, so a redelivered or older
 * change writes nothing), signin.new (a sign-in from a new device and
 * network) and user.deleted (one goodbye to the contact's address; in the
 * same transaction the contact is deleted, a tombstone written and the
 * ledger's addresses for the user blanked; later events about a deleted
 * user send nothing). Sealed tokens are opened with
 * the mailer's key pair, used in the link and wiped; they are never
 * logged. The ledger row (sent, unique event id) is inserted, the message
 * delivered and the transaction committed in that order, so a redelivered
 * event sends nothing and a failed delivery leaves no ledger row (the
 * message is retried).
 *
 * A reward mail for a user whose contact is not known yet (its
 * user.registered is behind on another topic) is parked in the database,
 * not retried in place, and sent when the registration arrives.
 *
 * Failures: a server that cannot be reached makes the handler return
 * CM_EUNAVAIL (the consumer retries later; nothing is lost while SMTP is
 * down). A temporary refusal of one message (4xx) is retried here with
 * exponential backoff and jitter, MAIL_MAX_ATTEMPTS tries in all, so one
 * recipient cannot hold up the partition for long; after the last try, or
 * at once for a permanent refusal (5xx), the event goes to mail.dead and
 * its ledger row is marked dead.
 */
#ifndef MAIL_CONSUMER_H
#define MAIL_CONSUMER_H

#include <stddef.h>

#include "cm/consumer.h"
#include "cm/db.h"
#include "cm/metrics.h"
#include "config.h"

/**
 * Publishes a dead letter to the mail.dead topic: key is the user id, value
 * a mail.dead envelope (proto/events/mail.dead.schema.json: event_id,
 * event_type, recipient_user_id, reason, attempts, at). Returns 0 once the
 * broker has it, or a CM_E* code (then the event is retried later).
 */
typedef int (*mail_dead_fn)(void *ctx, const char *key, const char *value, size_t len);

/** What the handler needs; the caller owns it and everything it points to. */
typedef struct mail_ctx {
    const mail_config_t *cfg; /* borrowed */
    cm_db_pool_t *pool;       /* borrowed */
    cm_family_t *sent;        /* linktr_mails_sent_total{template}; NULL for none */
    cm_family_t *failed;      /* linktr_mails_failed_total{template}; NULL for none */
    cm_family_t *dead_total;  /* linktr_mails_dead_total{template}; NULL for none */
    /* linktr_mail_send_duration_seconds{transport,result}: one SMTP or Maildir delivery */
    cm_family_t *send_duration;
    mail_dead_fn dead; /* where undeliverable mails go */
    void *dead_ctx;
} mail_ctx_t;

/** The topics the mailer consumes (NULL-terminated, static storage). */
extern const char *const mail_topics[];

/**
 * Handles one event envelope (untrusted bytes). Returns 0 when the mail
 * was delivered and recorded, or dead-lettered, or was already recorded,
 * or the event type is not one the mailer sends for; CM_EPARSE for an event that can never
 * be mailed (malformed envelope or data, a token not sealed for us);
 * another CM_E* code when it should be retried (database or transport
 * down).
 */
CM_MUST_CHECK int mail_handle_event(mail_ctx_t *ctx, const char *bytes, size_t len);

/** cm_consume_fn adapter for cm_consumer_start; ctx is a mail_ctx_t. */
int mail_consume(const cm_kmsg_t *msg, void *ctx);

#endif
