/*
 * capture.h — what a piece of code prints, for tests of logs and
 * configuration errors.
 */
#ifndef LINKTR_CAPTURE_H
#define LINKTR_CAPTURE_H

/**
 * Runs fn(arg) with file descriptor fd (STDOUT_FILENO for logs,
 * STDERR_FILENO for configuration errors) redirected to a temporary file,
 * restores it, and returns everything written as a new NUL-terminated
 * string the caller free()s. Aborts the test when the redirection fails.
 */
char *t_capture(int fd, void (*fn)(void *arg), void *arg);

#endif
