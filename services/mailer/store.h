/*
 * store.h — every SQL statement of the mailer (schema "mailer").
 *
 * All functions run on a connection the caller holds, inside the caller's
 * transaction where it matters (the claim and the delivery must commit
 * together).
 */
#ifndef MAIL_STORE_H
#define MAIL_STORE_H

#include <stddef.h>

#include "cm/db.h"
#include "cm/error.h"

/**
 * Inserts or updates the contact row of user_id. The address of a contact
 * that an email change moved (email_changed_at set) is kept. Returns 0,
 * CM_ESTATE when the user was deleted (no contact is made again), or a
 * CM_E* code.
 */
CM_MUST_CHECK int mail_store_contact_put(cm_db_t *db, const char *user_id, const char *email,
                                         const char *username);

/**
 * Looks up a contact. On 0, *email and *username are new strings the
 * caller free()s. Returns CM_ENOTFOUND when the user is unknown.
 */
CM_MUST_CHECK int mail_store_contact_get(cm_db_t *db, const char *user_id, char **email,
                                         char **username);

/**
 * Claims event_id in the sent ledger for one mail to recipient, sent on
 * try number attempts. Returns 0
 * when this transaction owns the send (commit after delivering), or
 * CM_ECONFLICT when a mail for this event was already recorded (a
 * redelivery: send nothing). A concurrent claim of the same event waits
 * for the first transaction, so two consumers never both send.
 */
CM_MUST_CHECK int mail_store_claim(cm_db_t *db, const char *event_id, const char *recipient,
                                   const char *template_name, int attempts);

/** Marks the claimed ledger row of event_id dead, with the reason. Returns 0 or a CM_E* code. */
CM_MUST_CHECK int mail_store_mark_dead(cm_db_t *db, const char *event_id, const char *reason);

/** Parks the event (its envelope text) until user_id's contact is known. Returns 0 or a CM_E* code.
 */
CM_MUST_CHECK int mail_store_park(cm_db_t *db, const char *event_id, const char *user_id,
                                  const char *payload);

/** One parked event. */
typedef struct mail_parked {
    char event_id[37];
    char *payload; /* the envelope text as received; owned */
} mail_parked_t;

/** The events parked for one user; the caller owns it and calls mail_parked_list_dispose. */
typedef struct mail_parked_list {
    mail_parked_t *rows; /* n rows, oldest parked first */
    size_t n;
} mail_parked_list_t;

/**
 * Lists the events parked for user_id (at most MAIL_PARKED_BATCH, oldest
 * first) into *out, which is left empty on failure. Returns 0 or a CM_E*
 * code.
 */
CM_MUST_CHECK int mail_store_parked(cm_db_t *db, const char *user_id, mail_parked_list_t *out);

/** At most this many parked events are listed (and released) at a time. */
#define MAIL_PARKED_BATCH 100

/** Frees the rows and payloads of l and empties it. NULL-safe. */
void mail_parked_list_dispose(mail_parked_list_t *l);

/** Drops one parked event. Returns 0 or a CM_E* code. */
CM_MUST_CHECK int mail_store_unpark(cm_db_t *db, const char *event_id);

/** Number of ledger rows for event_id (0 or 1), for tests. Returns >= 0 or a CM_E* code. */
int mail_store_sent_count(cm_db_t *db, const char *event_id);

/**
 * Applies user.email.changed (issue 15): the contact of user_id gets email,
 * unless a change at or after changed_at (RFC 3339) is recorded already, so
 * a redelivered or older change does nothing. A contact not known yet is
 * created with it (username from the event); the user.registered arriving
 * later then keeps this address (mail_store_contact_put). A deleted user's
 * contact is not made again. Returns 0 or a
 * CM_E* code.
 */
CM_MUST_CHECK int mail_store_contact_email(cm_db_t *db, const char *user_id, const char *email,
                                           const char *username, const char *changed_at);

/* ---- account deletion (issue 15) ---------------------------------------------- */

/**
 * mail_store_claim for a mail to user_id (may be NULL): the ledger row
 * names its user, so the user's deletion finds it whatever the address.
 */
CM_MUST_CHECK int mail_store_claim_for(cm_db_t *db, const char *event_id, const char *user_id,
                                       const char *recipient, const char *template_name,
                                       int attempts);

/**
 * Forgets a deleted user in the caller's transaction: a tombstone, the
 * contact row deleted, the address blanked in every ledger row for user_id
 * or sent to email (NULL: by user id only), the user's parked mails
 * deleted. Returns 0 or a CM_E* code.
 */
CM_MUST_CHECK int mail_store_forget(cm_db_t *db, const char *user_id, const char *email);

/** Returns 0 when user_id was deleted, CM_ENOTFOUND when not, or a CM_E* code. */
CM_MUST_CHECK int mail_store_deleted(cm_db_t *db, const char *user_id);

#endif
