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

/** Number of messages in MAIL_DIR/new that contain both a and b (an address and a subject). */
int t_mails_with(const char *a, const char *b);

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

/**
 * Runs deploy/local/stack with args ("kill referral KILL", "respawn
 * referral") against the stack this test uses; returns its exit status.
 */
int t_stack_cmd(const char *args);

/**
 * Starts again every instance in the NULL-terminated names that is not
 * running ("stack respawn --if-stopped"): the teardown of a fault test, so
 * one that failed between its kill and its respawn does not leave every
 * later test of the run without that service. Returns 0 when all run.
 */
int t_stack_heal(const char *const *names);

/**
 * The sum of every series of the metric family name (e.g.
 * "linktr_consumer_messages_total") on the /metrics of the admin listener
 * at base; 0 when it cannot be read.
 */
double t_metric_sum(const char *base, const char *name);

/**
 * Asserts that each of the instances listed in stack.env's key (comma-
 * separated admin URLs, e.g. REFERRAL_ADMIN_URLS) consumed at least a
 * quarter of an even split of the messages all of them consumed (a share of
 * the work, whichever topics carried it), and that there are exactly
 * instances of them.
 */
void t_assert_every_instance_consumed(const char *key, int instances);

/**
 * Waits (up to 60 s) until every instance at the comma-separated admin
 * URLs in the stack file's key holds at least one partition
 * (linktr_consumer_assigned_partitions): after a (re)start the consumer
 * group needs a rebalance or two before the work is shared. Fails the test
 * when one never gets any.
 */
void t_wait_every_instance_assigned(const char *key, int instances);

#endif

/* ---- a wave of referred users: the scale-out and fault tests ------------ */

/** One referrer and the users it referred, registered through the gateway. */
typedef struct t_wave {
    int n;
    json_t *referrer;        /* the referrer's user object (owned) */
    const char *referrer_id; /* borrowed from referrer */
    char *referrer_access;   /* owned */
    char **ids;              /* n user ids (owned) */
    char **emails;           /* n addresses (owned) */
} t_wave_t;

/**
 * Registers a referrer and n users referred by it, with `threads` clients
 * at once (registrations that get 503/429 are retried). Asserts every 201.
 */
t_wave_t *t_wave_register(const char *tag, int n, int threads);

/**
 * Waits (bounded) for every user's verify mail and verifies each through
 * the gateway with `threads` clients. When midway is not NULL it is called
 * once, after half of the verifications were answered, while the rest go
 * on (to break something mid-stream).
 */
void t_wave_verify(t_wave_t *w, int threads, void (*midway)(void *arg), void *arg);

/**
 * Waits (bounded) until the referral service counted every success, then
 * asserts each effect exactly once: n successful referrals and nothing
 * else, the referrer's counters and rewards (a credit per success and the
 * milestones), one welcome credit per user, and per user one verify mail
 * and one reward mail. A mail delivered again with the same Message-ID
 * (the mailer was killed after the SMTP server took it but before its
 * ledger commit) counts once; at most max_copies such copies are allowed
 * (0 unless a mailer was killed: one in-flight send per killed mailer).
 */
void t_wave_assert_exact(t_wave_t *w, int max_copies);

/** Frees the wave. NULL-safe. */
void t_wave_free(t_wave_t *w);
