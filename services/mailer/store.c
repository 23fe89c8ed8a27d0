/* store.c — the mailer's SQL, parameterized only (see store.h). */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/util.h"

int mail_store_contact_put(cm_db_t *db, const char *user_id, const char *email,
                           const char *username)
{
    static const char sql[] =
        "INSERT INTO contacts (user_id, email, username) SELECT $1::uuid, $2, $3 "
        "WHERE NOT EXISTS (SELECT 1 FROM deleted_contacts d WHERE d.user_id = $1::uuid) "
        "ON CONFLICT (user_id) DO UPDATE SET email = CASE WHEN contacts.email_changed_at IS NULL "
        "THEN EXCLUDED.email ELSE contacts.email END, "
        "username = EXCLUDED.username, updated_at = now() RETURNING 1";
    const char *p[3] = {user_id, email, username};
    PGresult *res = NULL;
    int rc = cm_db_prepared(db, "mail_contact_put", sql, 3, p, &res);
    if (rc != 0)
        return rc;
    rc = PQntuples(res) == 1 ? 0 : CM_ESTATE;
    PQclear(res);
    return rc;
}

int mail_store_contact_get(cm_db_t *db, const char *user_id, char **email, char **username)
{
    static const char sql[] = "SELECT email, username FROM contacts WHERE user_id = $1::uuid";
    const char *p[1] = {user_id};
    PGresult *res = NULL;
    int rc = cm_db_prepared(db, "mail_contact_get", sql, 1, p, &res);
    if (rc != 0)
        return rc;
    if (PQntuples(res) != 1) {
        rc = CM_ENOTFOUND;
    } else {
        *email = cm_xstrdup(PQgetvalue(res, 0, 0));
        *username = cm_xstrdup(PQgetvalue(res, 0, 1));
    }
    PQclear(res);
    return rc;
}

int mail_store_claim(cm_db_t *db, const char *event_id, const char *recipient,
                     const char *template_name, int attempts)
{
    return mail_store_claim_for(db, event_id, NULL, recipient, template_name, attempts);
}

int mail_store_claim_for(cm_db_t *db, const char *event_id, const char *user_id,
                         const char *recipient, const char *template_name, int attempts)
{
    static const char sql[] =
        "INSERT INTO sent (event_id, recipient, template, attempts, user_id) "
        "VALUES ($1::uuid, $2, $3, $4::int, $5::uuid) ON CONFLICT (event_id) DO NOTHING "
        "RETURNING 1";
    char n[16];
    snprintf(n, sizeof n, "%d", attempts > 0 ? attempts : 1);
    const char *p[5] = {event_id, recipient, template_name, n, user_id};
    PGresult *res = NULL;
    int rc = cm_db_prepared(db, "mail_claim", sql, 5, p, &res);
    if (rc != 0)
        return rc;
    rc = PQntuples(res) == 1 ? 0 : CM_ECONFLICT;
    PQclear(res);
    return rc;
}

int mail_store_mark_dead(cm_db_t *db, const char *event_id, const char *reason)
{
    static const char sql[] =
        "UPDATE sent SET outcome = 'dead', reason = $2 WHERE event_id = $1::uuid";
    const char *p[2] = {event_id, reason};
    return cm_db_prepared(db, "mail_mark_dead", sql, 2, p, NULL);
}

int mail_store_park(cm_db_t *db, const char *event_id, const char *user_id, const char *payload)
{
    static const char sql[] =
        "INSERT INTO parked_mails (event_id, user_id, payload) VALUES ($1::uuid, $2::uuid, $3) "
        "ON CONFLICT (event_id) DO NOTHING";
    const char *p[3] = {event_id, user_id, payload};
    return cm_db_prepared(db, "mail_park", sql, 3, p, NULL);
}

int mail_store_parked(cm_db_t *db, const char *user_id, mail_parked_list_t *out)
{
    static const char sql[] = "SELECT event_id, payload FROM parked_mails "
                              "WHERE user_id = $1::uuid ORDER BY parked_at LIMIT $2::int";
    char lim[16];
    snprintf(lim, sizeof lim, "%d", MAIL_PARKED_BATCH);
    const char *p[2] = {user_id, lim};
    PGresult *res = NULL;
    memset(out, 0, sizeof *out);
    int rc = cm_db_prepared(db, "mail_parked", sql, 2, p, &res);
    if (rc != 0)
        return rc;
    size_t rows = (size_t)PQntuples(res);
    out->rows = cm_xcalloc(rows, sizeof *out->rows);
    for (out->n = 0; out->n < rows; out->n++) {
        mail_parked_t *r = &out->rows[out->n];
        snprintf(r->event_id, sizeof r->event_id, "%s", PQgetvalue(res, (int)out->n, 0));
        r->payload = cm_xstrdup(PQgetvalue(res, (int)out->n, 1));
    }
    PQclear(res);
    return 0;
}

void mail_parked_list_dispose(mail_parked_list_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->rows[i].payload);
    free(l->rows);
    memset(l, 0, sizeof *l);
}

int mail_store_unpark(cm_db_t *db, const char *event_id)
{
    static const char sql[] = "DELETE FROM parked_mails WHERE event_id = $1::uuid";
    const char *p[1] = {event_id};
    return cm_db_prepared(db, "mail_unpark", sql, 1, p, NULL);
}

int mail_store_sent_count(cm_db_t *db, const char *event_id)
{
    static const char sql[] = "SELECT count(*) FROM sent WHERE event_id = $1::uuid";
    const char *p[1] = {event_id};
    PGresult *res = NULL;
    int rc = cm_db_prepared(db, "mail_sent_count", sql, 1, p, &res);
    if (rc != 0)
        return rc;
    long long n = 0;
    if (cm_strtonum(PQgetvalue(res, 0, 0), 0, 1000000, &n) != 0)
        rc = CM_EDB;
    PQclear(res);
    return rc != 0 ? rc : (int)n;
}

/* ---- email change (issue 15) ---------------------------------------------------------- */

int mail_store_contact_email(cm_db_t *db, const char *user_id, const char *email,
                             const char *username, const char *changed_at)
{
    static const char sql[] = "INSERT INTO contacts (user_id, email, username, email_changed_at) "
                              "SELECT $1::uuid, $2, $3, $4::timestamptz "
                              "WHERE NOT EXISTS (SELECT 1 FROM deleted_contacts d "
                              "WHERE d.user_id = $1::uuid) "
                              "ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, "
                              "email_changed_at = EXCLUDED.email_changed_at, updated_at = now() "
                              "WHERE contacts.email_changed_at IS NULL "
                              "OR contacts.email_changed_at < EXCLUDED.email_changed_at";
    const char *p[4] = {user_id, email, username, changed_at};
    return cm_db_prepared(db, "mail_contact_email", sql, 4, p, NULL);
}

/* ---- account deletion (issue 15) ---------------------------------------------- */

int mail_store_forget(cm_db_t *db, const char *user_id, const char *email)
{
    static const struct {
        const char *name, *sql;
        int n;
    } steps[] = {
        {"mail_forget_tomb",
         "INSERT INTO deleted_contacts (user_id) VALUES ($1::uuid) ON CONFLICT DO NOTHING", 1},
        {"mail_forget_contact", "DELETE FROM contacts WHERE user_id = $1::uuid", 1},
        {"mail_forget_sent",
         "UPDATE sent SET recipient = '' WHERE recipient <> '' AND (user_id = $1::uuid "
         "OR ($2::text IS NOT NULL AND lower(recipient) = lower($2::text)))",
         2},
        {"mail_forget_parked", "DELETE FROM parked_mails WHERE user_id = $1::uuid", 1},
    };
    const char *p[2] = {user_id, email};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof steps / sizeof steps[0]; i++)
        rc = cm_db_prepared(db, steps[i].name, steps[i].sql, steps[i].n, p, NULL);
    return rc;
}

int mail_store_deleted(cm_db_t *db, const char *user_id)
{
    static const char sql[] = "SELECT 1 FROM deleted_contacts WHERE user_id = $1::uuid";
    const char *p[1] = {user_id};
    PGresult *res = NULL;
    int rc = cm_db_prepared(db, "mail_deleted", sql, 1, p, &res);
    if (rc != 0)
        return rc;
    rc = PQntuples(res) == 1 ? 0 : CM_ENOTFOUND;
    PQclear(res);
    return rc;
}
