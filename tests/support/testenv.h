/*
 * testenv.h — what tests need to find the real servers they run against.
 *
 * The fixtures write KEY=VALUE files (pg.env for the unit-test PostgreSQL,
 * stack.env for the integration stack); the file's path reaches a test in
 * an environment variable set by ctest.
 */
#ifndef LINKTR_TESTENV_H
#define LINKTR_TESTENV_H

/**
 * Returns the value of key in the KEY=VALUE file named by the environment
 * variable file_var, as a new string the caller free()s. Aborts the test
 * program with a clear message when the variable, file or key is missing.
 */
char *t_env(const char *file_var, const char *key);

/** Like t_env but returns NULL instead of aborting when the key is absent. */
char *t_env_opt(const char *file_var, const char *key);

/** A unique suffix for names made in a test run ("u1700000000123456"): pid + time. */
const char *t_unique(void);

/**
 * Sleeps for ms milliseconds (0 or less returns at once), resuming after a
 * signal. Tests use it instead of usleep, which POSIX lets fail with EINVAL
 * for a second or more.
 */
void t_sleep_ms(int ms);

/**
 * A loopback TCP port that was free a moment ago (bound to port 0, read
 * back, closed). Another process can take it before the caller binds it:
 * fine for tests that run alone. Aborts the test when no socket can be had.
 */
int t_free_port(void);

#endif
