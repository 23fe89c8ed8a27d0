/*
 * instance.h — a private linktr-auth next to the integration stack, with
 * its own settings (a small hash pool, other argon2 parameters, another
 * client-address policy), on the stack's database and broker.
 */
#ifndef LINKTR_INSTANCE_H
#define LINKTR_INSTANCE_H

#include <sys/types.h>

/** A running private instance. */
typedef struct t_instance {
    pid_t pid;     /* 0 once stopped */
    char base[64]; /* http://127.0.0.1:PORT */
} t_instance_t;

/**
 * Starts the linktr-auth built next to this test on the stack's database,
 * broker and keys (stack.env), on free ports, with the NULL-terminated
 * VAR=VALUE overrides (borrowed; they must outlive the call), and waits
 * for its /healthz. Fails the test when it does not come up in 20 s.
 */
void t_auth_start(t_instance_t *in, const char *const *overrides);

/** Stops it with SIGTERM and asserts a clean exit 0 (clean under ASan too). */
void t_instance_stop(t_instance_t *in);

/** For teardowns: SIGKILL and reap, if it still runs. NULL-safe. */
void t_instance_kill(t_instance_t *in);

#endif
