/*
 * An LD_PRELOAD shim that counts the process's fsync and fdatasync calls, for the test that
 * the spool's acknowledgements wait for a durable commit (tests/tests/e2e/spool.rs). After each
 * call it writes the running counts, as decimal text, to the file TRIBUTARY_FSYNC_COUNT_FILE
 * names: "<both> <fsync only>\n". The calls themselves go through to libc unchanged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static atomic_long calls;
static atomic_long fsyncs;

static void record(int is_fsync) {
    long n = atomic_fetch_add(&calls, 1) + 1;
    long f = is_fsync ? atomic_fetch_add(&fsyncs, 1) + 1 : atomic_load(&fsyncs);
    const char *path = getenv("TRIBUTARY_FSYNC_COUNT_FILE");
    if (path == NULL) {
        return;
    }
    char text[48];
    int len = snprintf(text, sizeof text, "%ld %ld\n", n, f);
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
    record(0);
    return result;
}

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    }
    int result = real(fd);
    record(1);
    return result;
}
