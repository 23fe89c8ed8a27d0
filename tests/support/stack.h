/*
 * stack.h — black-box helpers for tests that run against the local stack
 * (deploy/local/stack): URLs from its stack.env, registering users through
 * the gateway, counting rows and mails, waiting with a deadline, and the
 * fault levers (stopping PostgreSQL or the broker, killing a service).
 *
 * Every wait is bounded: a lost event fails the test instead of hanging it.
 */
#ifndef LINKTR_STACK_H
#define LINKTR_STACK_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

/** The env var that names the stack.env file (set by ctest). */
#define T_STACK_ENV "LINKTR_STACK_ENV"

/** The gateway URL plus path, new string the caller free()s. */
char *t_gw(const char *path);

/** A value from stack.env (new string; aborts when missing). */
char *t_stack(const char *key);

/** A user body {username, email, password[, referral_code]} with unique names. New reference. */
json_t *t_user_body(const char *tag, const char *referral_code);

/**
 * Registers through the gateway; asserts 201 and returns the user object
 * (new reference).
 */
json_t *t_register(json_t *body);

/** Logs in through the gateway; asserts 200 and returns the access token (caller frees). */
char *t_login_access(const char *username, const char *password);

/** Rows an admin query returns for up to two text parameters (NULL = unused); -1 on error. */
int t_db_count(const char *sql, const char *p0, const char *p1);

/** One text value from an admin query (first row, first column), or NULL. Caller frees. */
char *t_db_value(const char *sql, const char *p0);

/** Number of messages in MAIL_DIR/new that contain needle. */
int t_mail_count(const char *needle);

/**
 * The token of the first link "<path>?token=..." in a mail containing
 * needle, or NULL. Caller frees.
 */
char *t_mail_token(const char *needle, const char *path);

/** Polls cond(arg) every 100 ms until it is true or ms pass; returns its last value. */
bool t_wait(bool (*cond)(void *arg), void *arg, int ms);

/** Runs a shell command line; returns its exit status (-1 when it could not run). */
int t_sh(const char *cmdline);

/** The repository root (for deploy/ scripts), static storage. */
const char *t_repo(void);

#endif
