/*
 * fuzz.h — the libFuzzer entry points every harness defines, and small
 * helpers the harnesses share.
 *
 * A harness must be deterministic (same bytes, same path), free everything
 * it allocates, and abort() when an invariant of the code under test
 * breaks, so a wrong answer is a crash libFuzzer records, not just a
 * memory error.
 *
 * The production context: the code under test runs on civetweb worker
 * threads (and consumer threads), not on the 8 MiB main thread. A harness
 * therefore writes its body as `static int fuzz_one(const uint8_t *, size_t)`
 * and ends with FUZZ_ENTRY(fuzz_one): every input, under libFuzzer and in
 * the ctest corpus replay alike, then runs on a fresh thread whose stack is
 * a civetweb worker's, so a recursion that fits 8 MiB but not 100 KiB
 * crashes here instead of in production.
 */
#ifndef LINKTR_FUZZ_H
#define LINKTR_FUZZ_H

#include <pthread.h>
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

/**
 * The stack of a civetweb 1.15 worker thread: Debian's libcivetweb calls
 * pthread_attr_setstacksize(0x19000) (100 KiB) and has no option to change
 * it. ctest's fuzz.worker_stack starts a real civetweb server and fails if
 * a handler's thread no longer has exactly this stack.
 */
#define FUZZ_CIVETWEB_STACK 0x19000

/**
 * Stack civetweb itself has used when it calls our handler (its worker
 * loop, request parsing, handler dispatch: 18.3 KiB measured with 1.15, see
 * fuzz.worker_stack, which fails if it grows past this). The harness thread
 * sets this much aside before running the input, so the input gets what a
 * request handler gets, not the whole 100 KiB.
 */
#define FUZZ_CIVETWEB_USED (20 * 1024)

/*
 * Under AddressSanitizer our instrumented frames grow (redzones around
 * every local whose address is taken: about twice the bytes, as the ASan
 * documentation warns), so the sanitizer builds scale the stack by 2. What
 * the bound is for, jansson's recursion, lives in the uninstrumented system
 * library and costs the same bytes in either build; the normal build's
 * replay (gcc, no sanitizer) runs at exactly FUZZ_CIVETWEB_STACK and is the
 * one that catches a deep parse.
 */
#if defined(__SANITIZE_ADDRESS__)
#define FUZZ_STACK_SCALE 2
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUZZ_STACK_SCALE 2
#endif
#endif
#ifndef FUZZ_STACK_SCALE
#define FUZZ_STACK_SCALE 1
#endif

/** The stack every harness input runs on. */
#define FUZZ_WORKER_STACK ((size_t)FUZZ_CIVETWEB_STACK * FUZZ_STACK_SCALE)

typedef int (*fuzz_fn)(const uint8_t *data, size_t size);

typedef struct fuzz_job {
    fuzz_fn fn;
    const uint8_t *data;
    size_t size;
} fuzz_job_t;

static inline void *fuzz__thread(void *arg)
{
    /* What civetweb has used before a handler runs; volatile so it stays on the stack. */
    volatile char civetweb[FUZZ_CIVETWEB_USED];
    civetweb[0] = 0;
    civetweb[sizeof civetweb - 1] = 0;
    fuzz_job_t *job = arg;
    job->fn(job->data, job->size);
    /* Touched after the call, so the call cannot become a tail call that frees the frame. */
    civetweb[1] = civetweb[0];
    return NULL;
}

/**
 * Runs fn(data, size) on a new thread with FUZZ_WORKER_STACK bytes of stack, FUZZ_CIVETWEB_USED
 * of them set aside first, and waits for it.
 */
static inline void fuzz_on_worker_stack(fuzz_fn fn, const uint8_t *data, size_t size)
{
    fuzz_job_t job = {fn, data, size};
    pthread_attr_t attr;
    pthread_t t;
    FUZZ_CHECK(pthread_attr_init(&attr) == 0);
    FUZZ_CHECK(pthread_attr_setstacksize(&attr, FUZZ_WORKER_STACK) == 0);
    FUZZ_CHECK(pthread_create(&t, &attr, fuzz__thread, &job) == 0);
    FUZZ_CHECK(pthread_join(t, NULL) == 0);
    pthread_attr_destroy(&attr);
}

/** Defines LLVMFuzzerTestOneInput as fn run on a civetweb-sized stack. */
#define FUZZ_ENTRY(fn)                                                                             \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)                                   \
    {                                                                                              \
        fuzz_on_worker_stack(fn, data, size);                                                      \
        return 0;                                                                                  \
    }

#endif
