/*
 * cm/crypto.h — passwords, random tokens, hashing and sealing (libsodium).
 *
 * Passwords are hashed with argon2id (crypto_pwhash_str_alg) on a bounded
 * pool: one worker per core and a bounded queue. A full queue answers
 * CM_EBUSY at once (the service replies 503 with Retry-After) instead of
 * growing memory under a burst.
 */
#ifndef CM_CRYPTO_H
#define CM_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "cm/error.h"
#include "cm/metrics.h"

/** Call once at start-up, before threads start. Returns 0 or CM_ECRYPTO. */
CM_MUST_CHECK int cm_crypto_init(void);

/* ---- the password hashing pool ---------------------------------------------- */

typedef struct cm_hashpool cm_hashpool_t;

typedef struct cm_hashpool_config {
    int workers;                 /* 0 → one per CPU the process may use (cm_cpu_count) */
    int queue_cap;               /* jobs waiting at most; 0 → 4 × workers */
    unsigned long long opslimit; /* argon2id t; 0 → OWASP default 2 */
    size_t memlimit;             /* bytes; 0 → OWASP default 19 MiB */
    /* Where the pool counts its work (borrowed, may be NULL): every finished
     * hash or verify in linktr_hashpool_jobs_total and the CPU time its
     * worker spent on it (the thread's CPU clock, so time preempted by other
     * work is not counted) in linktr_hashpool_cpu_seconds_total. Their
     * quotient is what one argon2id costs on this host right now, with
     * whatever else runs beside it (bench/auth and bench/compare print it
     * next to the hash-bound ceiling). */
    cm_metrics_t *metrics;
} cm_hashpool_config_t;

/** Longest password the pool accepts (bytes); longer input is CM_EINVAL without hashing. */
#define CM_PASSWORD_MAX_LEN 4096

/**
 * Starts the workers and makes the dummy hash (one hash, on the caller's
 * thread). Returns NULL with *err (if not NULL) = CM_EINVAL for a bad
 * config (negative counts, argon2id limits out of range) or CM_ECRYPTO.
 */
cm_hashpool_t *cm_hashpool_new(const cm_hashpool_config_t *cfg, int *err);

/** Finishes queued jobs, joins the workers, frees. NULL-safe. */
void cm_hashpool_free(cm_hashpool_t *p);

/**
 * Hashes a password (len bytes, borrowed; not copied, the caller wipes it)
 * into out (NUL-terminated, crypto_pwhash_STRBYTES). Blocks the caller
 * until done. Returns 0, CM_EBUSY (queue full), CM_EINVAL (NULL or longer
 * than CM_PASSWORD_MAX_LEN) or CM_ECRYPTO.
 */
CM_MUST_CHECK int cm_password_hash(cm_hashpool_t *p, const char *pw, size_t len,
                                   char out[crypto_pwhash_STRBYTES]);

/**
 * Verifies a password against a stored hash. hash NULL spends one verify
 * against a fixed dummy hash and fails, so an unknown account costs the
 * same time. Returns 0 on a match (then *needs_rehash says whether the
 * hash used other parameters than the pool's), CM_EAUTH on a mismatch or
 * a malformed hash, CM_EBUSY when the queue is full, CM_EINVAL as for
 * cm_password_hash. needs_rehash may be NULL; it is false unless 0.
 */
CM_MUST_CHECK int cm_password_verify(cm_hashpool_t *p, const char *hash, const char *pw, size_t len,
                                     bool *needs_rehash);

/** Jobs waiting in the queue, not counting those being hashed (for metrics). Thread-safe. */
int cm_hashpool_depth(cm_hashpool_t *p);

/* ---- tokens ------------------------------------------------------------------- */

/** Base64url (no padding) length of a 256-bit token, plus NUL. */
#define CM_TOKEN_CHARS 44

/** Writes a new random 256-bit token as base64url without padding. */
void cm_token_new(char out[CM_TOKEN_CHARS]);

/** SHA-256 of bytes as lower-case hex (what is stored for tokens). */
void cm_sha256_hex(const void *data, size_t len, char out[65]);

/* ---- sealing one-time tokens for the mailer ---------------------------------------- */

/**
 * Decodes a standard base64 32-byte key (MAILER_SEAL_PUBLIC_KEY or the
 * contents of the secret key file, surrounding white space ignored).
 * Returns 0 or CM_EPARSE.
 */
CM_MUST_CHECK int cm_key_decode(const char *b64, size_t len, uint8_t key[32]);

/**
 * Seals msg for the holder of pk (crypto_box_seal). *out is a new
 * base64url string the caller free()s. Returns 0, CM_EINVAL (NULL, or
 * msg longer than 64 KiB) or CM_ECRYPTO.
 */
CM_MUST_CHECK int cm_seal(const uint8_t pk[32], const char *msg, size_t len, char **out);

/**
 * Opens a sealed base64url text with the key pair. *out is a new
 * NUL-terminated string the caller wipes (sodium_memzero) and free()s.
 * Returns 0, CM_EPARSE (not base64url) or CM_ECRYPTO (not sealed for us).
 */
CM_MUST_CHECK int cm_unseal(const uint8_t pk[32], const uint8_t sk[32], const char *sealed,
                            size_t len, char **out);

#endif
