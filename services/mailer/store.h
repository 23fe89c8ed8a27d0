/*
 * store.h — every SQL statement of the mailer (schema "mailer").
 *
 * All functions run on a connection the caller holds, inside the caller's
 * transaction where it matters (the claim and the delivery must commit
 * together).
 */
#ifndef MAIL_STORE_H
#define MAIL_STORE_H

#include "cm/db.h"
#include "cm/error.h"

/** Inserts or updates the contact row of user_id. Returns 0 or a CM_E* code. */
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

/**
 * Lists the events parked for user_id: *res has columns event_id and
 * payload; the caller PQclear()s it.
 */
CM_MUST_CHECK int mail_store_parked(cm_db_t *db, const char *user_id, PGresult **res);

/** Drops one parked event. Returns 0 or a CM_E* code. */
CM_MUST_CHECK int mail_store_unpark(cm_db_t *db, const char *event_id);

/** Number of ledger rows for event_id (0 or 1), for tests. Returns >= 0 or a CM_E* code. */
int mail_store_sent_count(cm_db_t *db, const char *event_id);

#endif
