/*
 * fuzz.h — the libFuzzer entry points every harness defines, and small
 * helpers the harnesses share.
 *
 * A harness must be deterministic (same bytes, same path), free everything
 * it allocates, and abort() when an invariant of the code under test
 * breaks, so a wrong answer is a crash libFuzzer records, not just a
 * memory error.
 */
#ifndef LINKTR_FUZZ_H
#define LINKTR_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/** Runs one input. Returns 0 (libFuzzer reserves other values). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/** Optional one-time set-up; replay.c calls it when a harness defines it. */
int LLVMFuzzerInitialize(int *argc, char ***argv);

/** Aborts with a message naming the broken invariant. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
