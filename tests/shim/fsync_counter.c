/*
 * An LD_PRELOAD shim that counts the process's fsync and fdatasync calls, for the test that
 * the spool's acknowledgements wait for a durable commit (tests/tests/e2e/spool.rs). After each
 * call it writes the running count, as decimal text, to the file TRIBUTARY_FSYNC_COUNT_FILE
 * names. The calls themselves go through to libc unchanged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static atomic_long calls;

static void record(void) {
    long n = atomic_fetch_add(&calls, 1) + 1;
    const char *path = getenv("TRIBUTARY_FSYNC_COUNT_FILE");
    if (path == NULL) {
        return;
    }
    char text[32];
    int len = snprintf(text, sizeof text, "%ld\n", n);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
        if (pwrite(fd, text, (size_t)len, 0) < 0) {
            /* A count that cannot be written shows as too low: the test fails, not passes. */
        }
        close(fd);
    }
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    int result = real(fd);
    record();
    return result;
}

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    }
    int result = real(fd);
    record();
    return result;
}
