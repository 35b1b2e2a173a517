/*
 * A foreign sleeper for futex.test.ts: sleeps on word 0 of the region
 * inherited as fd 3 (a memfd) the way a C peer written from docs/LAYOUT.md
 * may, with a plain shared FUTEX_WAIT (op 0: no FUTEX_PRIVATE_FLAG, and so
 * the full bitset), while it holds `expected`.
 *
 *   futex_sleeper <expected> <timeout-ms>
 *
 * Prints one line: "woken" (FUTEX_WAIT returned 0), "not-equal" (EAGAIN:
 * the word did not hold `expected`) or "timed-out"; exit 0. Other errors:
 * a message on stderr, exit 2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: futex_sleeper <expected> <timeout-ms>\n");
        return 2;
    }
    uint32_t expected = (uint32_t)strtoul(argv[1], NULL, 0);
    long timeout_ms = strtol(argv[2], NULL, 0);
    uint32_t *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, 3, 0);
    if (word == MAP_FAILED) {
        fprintf(stderr, "mmap of fd 3: %s\n", strerror(errno));
        return 2;
    }
    /* FUTEX_WAIT's timeout is relative; an EINTR retry would restart it, which a test sleeper may. */
    struct timespec timeout = { .tv_sec = timeout_ms / 1000, .tv_nsec = (timeout_ms % 1000) * 1000000L };
    for (;;) {
        long ret = syscall(SYS_futex, word, FUTEX_WAIT, expected, &timeout, NULL, 0);
        if (ret == 0) {
            puts("woken");
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
            puts("not-equal");
            return 0;
        }
        if (errno == ETIMEDOUT) {
            puts("timed-out");
            return 0;
        }
        fprintf(stderr, "futex(FUTEX_WAIT): %s\n", strerror(errno));
        return 2;
    }
}
