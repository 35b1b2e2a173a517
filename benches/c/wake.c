/*
 * wake: what the kernel's wake-up paths cost between two processes after an
 * idle gap, in C: the floor under the event-loop benchmark's idle round trip
 * (benches/src/eventloop.ts), which Node programs pay on top of.
 *
 *   wake <rounds> <idle_us>
 *
 * A parent (the client) and a forked child (the echo), not pinned. Before
 * each round trip the client sleeps idle_us, so both sides are parked when
 * it sends; the echo answers at once. Three ways, interleaved in blocks of
 * BLOCK round trips so that a burst of load on the host hits all of them:
 *
 *   unix-socket     write() 8 bytes on a SOCK_STREAM socketpair; the other
 *                   side sleeps in epoll_wait on its end, then read()s
 *                   (what a Node program's net.Socket does underneath)
 *   io-uring-futex  the rings' protocol (docs/LAYOUT.md): store the word,
 *                   then FUTEX_WAKE; the other side sleeps in epoll_wait on
 *                   an io_uring that holds an IORING_OP_FUTEX_WAIT on the
 *                   word (what the addon's event-loop waits do), then reaps
 *                   the completion
 *   futex           the same store and FUTEX_WAKE; the other side sleeps in
 *                   futex_wait itself (a thread parked outside any loop)
 *
 * Per way: the round trip (client's send to the reply seen), the hop (the
 * client's send to the echo back in user space after its wait), and the
 * send call alone (write() or FUTEX_WAKE, which makes the sleeper
 * runnable). Output: one JSON object on stdout. io-uring-futex is left out,
 * with the reason, where io_uring or its FUTEX_WAIT (Linux >= 6.7) is
 * refused. Ends itself after 120 s (alarm); the child dies with its parent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <linux/futex.h>
#include <linux/io_uring.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef IORING_OP_FUTEX_WAIT
#define IORING_OP_FUTEX_WAIT 51
#endif
#ifndef FUTEX2_SIZE_U32
#define FUTEX2_SIZE_U32 0x02
#endif

/* Where an SQE's addr3 is (the futex bitset of FUTEX_WAIT): 48 bytes in, whatever the headers name it. */
#define SQE_ADDR3_OFFSET 48
_Static_assert(sizeof(struct io_uring_sqe) >= SQE_ADDR3_OFFSET + 8, "an io_uring SQE of 64 bytes");

enum { UNIX_SOCKET, IO_URING_FUTEX, FUTEX_DIRECT, WAYS };
static const char *const NAMES[WAYS] = {"unix-socket", "io-uring-futex", "futex"};
#define BLOCK 25

/* The words each side waits on, each alone on its line, and the echo's stamp. */
struct shared {
  _Alignas(128) _Atomic uint32_t ping; /* written by the client */
  _Alignas(128) _Atomic uint32_t pong; /* written by the echo */
  _Alignas(128) _Atomic uint64_t woke; /* the echo: CLOCK_MONOTONIC ns when its wait returned */
  _Atomic int32_t woke_cpu;            /* the echo: the CPU it ran on then */
  _Atomic int32_t echo_setup;          /* the echo: 0 until set up, then 1 (io_uring too) or 2 (no io_uring) */
};

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static uint64_t percentile(uint64_t *v, long n, int p) {
  qsort(v, (size_t)n, sizeof *v, cmp_u64);
  return v[(n - 1) * p / 100];
}

/* One io_uring of this process, mapped, with its fd in an epoll set. */
struct uring {
  int fd;
  _Atomic unsigned *sq_tail, *cq_head, *cq_tail;
  unsigned sq_mask, *sq_array;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
  unsigned cq_mask;
};

/* Sets up `r`; returns NULL or why it cannot (the way is then skipped). */
static const char *uring_open(struct uring *r) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  r->fd = (int)syscall(SYS_io_uring_setup, 4, &p);
  if (r->fd < 0) return strerror(errno);
  if (!(p.features & IORING_FEAT_SINGLE_MMAP)) return "no IORING_FEAT_SINGLE_MMAP";
  size_t sq = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  size_t cq = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  char *m = mmap(NULL, sq > cq ? sq : cq, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
  if (m == MAP_FAILED) return strerror(errno);
  r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                 IORING_OFF_SQES);
  if (r->sqes == MAP_FAILED) return strerror(errno);
  r->sq_tail = (_Atomic unsigned *)(m + p.sq_off.tail);
  r->sq_mask = *(unsigned *)(m + p.sq_off.ring_mask);
  r->sq_array = (unsigned *)(m + p.sq_off.array);
  r->cq_head = (_Atomic unsigned *)(m + p.cq_off.head);
  r->cq_tail = (_Atomic unsigned *)(m + p.cq_off.tail);
  r->cq_mask = *(unsigned *)(m + p.cq_off.ring_mask);
  r->cqes = (struct io_uring_cqe *)(m + p.cq_off.cqes);
  return NULL;
}

/* Submits a FUTEX_WAIT while *word == expected (shared: no FUTEX2_PRIVATE). */
static int uring_futex_wait(struct uring *r, _Atomic uint32_t *word, uint32_t expected) {
  /* Our own last store: only this process writes the SQ tail. */
  unsigned tail = atomic_load_explicit(r->sq_tail, memory_order_relaxed);
  unsigned i = tail & r->sq_mask;
  struct io_uring_sqe *e = &r->sqes[i];
  memset(e, 0, sizeof *e);
  e->opcode = IORING_OP_FUTEX_WAIT;
  e->fd = FUTEX2_SIZE_U32;
  e->addr = (uint64_t)(uintptr_t)word;
  e->off = expected;
  /* The wait's bitset, in the word headers before Linux 5.19 call __pad2[0]. */
  uint64_t mask = FUTEX_BITSET_MATCH_ANY;
  memcpy((char *)e + SQE_ADDR3_OFFSET, &mask, sizeof mask);
  r->sq_array[i] = i;
  /* Publishes the entry to the kernel, which reads it during io_uring_enter. */
  atomic_store_explicit(r->sq_tail, tail + 1, memory_order_release);
  return (int)syscall(SYS_io_uring_enter, r->fd, 1, 0, 0, NULL, 0);
}

/* Takes the completions posted; returns the result of the last one (0 if none). */
static int uring_reap(struct uring *r) {
  int res = 0;
  /* Our own last store: only this process writes the CQ head. */
  unsigned head = atomic_load_explicit(r->cq_head, memory_order_relaxed);
  /* Observes the kernel's completions (their contents written before the tail). */
  unsigned tail = atomic_load_explicit(r->cq_tail, memory_order_acquire);
  for (; head != tail; head++) res = r->cqes[head & r->cq_mask].res;
  /* Hands the slots back to the kernel. */
  atomic_store_explicit(r->cq_head, head, memory_order_release);
  return res;
}

struct side {
  int sock, ep_sock, ep_ring;
  struct uring ring;
};

static void futex_wake(_Atomic uint32_t *word) {
  syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Parks until *word != seen, the way `way` parks; returns the new value. */
static uint32_t wait_word(struct side *s, int way, _Atomic uint32_t *word, uint32_t seen) {
  struct epoll_event ev;
  uint32_t v;
  /* Each load observes the peer's store before its FUTEX_WAKE. */
  while ((v = atomic_load(word)) == seen) {
    if (way == FUTEX_DIRECT) {
      syscall(SYS_futex, word, FUTEX_WAIT, seen, NULL, NULL, 0);
      continue;
    }
    if (uring_futex_wait(&s->ring, word, seen) < 0) { perror("io_uring_enter"); exit(1); }
    while (epoll_wait(s->ep_ring, &ev, 1, -1) != 1) {}
    uring_reap(&s->ring);
  }
  return v;
}

/* Sends (the socket: 8 bytes; the others: the word and a FUTEX_WAKE). */
static void send_on(struct side *s, int way, _Atomic uint32_t *word, uint32_t value) {
  if (way == UNIX_SOCKET) {
    uint64_t b = value;
    if (write(s->sock, &b, sizeof b) != sizeof b) { perror("write"); exit(1); }
    return;
  }
  /* Publishes the value before the wake (seq_cst: the sleeper's kernel-side check comes after). */
  atomic_store(word, value);
  futex_wake(word);
}

/* Receives on the socket: sleeps in epoll_wait, then reads the 8 bytes. */
static void receive_socket(struct side *s) {
  struct epoll_event ev;
  uint64_t b;
  while (epoll_wait(s->ep_sock, &ev, 1, -1) != 1) {}
  if (read(s->sock, &b, sizeof b) != sizeof b) { perror("read"); exit(1); }
}

static void open_side(struct side *s, int sock, const char **uring_why) {
  struct epoll_event ev = {.events = EPOLLIN};
  s->sock = sock;
  s->ep_sock = epoll_create1(0);
  ev.data.fd = sock;
  epoll_ctl(s->ep_sock, EPOLL_CTL_ADD, sock, &ev);
  *uring_why = uring_open(&s->ring);
  if (*uring_why) return;
  s->ep_ring = epoll_create1(0);
  ev.data.fd = s->ring.fd;
  epoll_ctl(s->ep_ring, EPOLL_CTL_ADD, s->ring.fd, &ev);
}

/* Whether this kernel runs IORING_OP_FUTEX_WAIT: a wait on a word that differs completes with -EAGAIN (else -EINVAL). */
static const char *probe_futex_wait(struct side *s) {
  static _Atomic uint32_t word = 1;
  struct epoll_event ev;
  if (uring_futex_wait(&s->ring, &word, 0) < 0) return strerror(errno);
  while (epoll_wait(s->ep_ring, &ev, 1, -1) != 1) {}
  return uring_reap(&s->ring) == -EAGAIN ? NULL : "IORING_OP_FUTEX_WAIT refused (Linux < 6.7?)";
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: wake <rounds> <idle_us>\n");
    return 2;
  }
  long rounds = atol(argv[1]);
  long idle_us = atol(argv[2]);
  if (rounds < BLOCK || idle_us < 0) {
    fprintf(stderr, "wake: rounds must be >= %d and idle_us >= 0\n", BLOCK);
    return 2;
  }
  alarm(120);
  struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED) { perror("mmap"); return 1; }
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) { perror("socketpair"); return 1; }
  /* Both sides decide alike which ways run: the parent probes io_uring before forking. */
  struct side s;
  const char *uring_why;
  open_side(&s, pair[0], &uring_why);
  if (!uring_why) uring_why = probe_futex_wait(&s);
  int uring_ok = uring_why == NULL;
  long blocks = rounds / BLOCK;
  pid_t child = fork();
  if (child < 0) { perror("fork"); return 1; }
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    close(pair[0]);
    struct side e;
    const char *why;
    open_side(&e, pair[1], &why); /* a ring of its own: each io_uring is its process's */
    /* Publishes whether this side has an io_uring; the parent picks the ways from both. */
    atomic_store(&sh->echo_setup, why == NULL ? 1 : 2);
    if (why != NULL) uring_ok = 0;
    uint32_t seen = 0;
    for (long b = 0; b < blocks * WAYS; b++) {
      int way = (int)(b % WAYS);
      if (way == IO_URING_FUTEX && !uring_ok) continue;
      for (int i = 0; i < BLOCK; i++) {
        if (way == UNIX_SOCKET) receive_socket(&e);
        else seen = wait_word(&e, way, &sh->ping, seen);
        /* Publish when and where this side came back from its wait, before the answer that lets the client read them. */
        atomic_store(&sh->woke_cpu, sched_getcpu());
        atomic_store(&sh->woke, now_ns());
        send_on(&e, way, &sh->pong, seen);
      }
    }
    _exit(0);
  }
  close(pair[1]);
  /* Observes the echo's setup (it runs each way's loop only where both sides have what the way needs). */
  int32_t echo_setup;
  while ((echo_setup = atomic_load(&sh->echo_setup)) == 0) usleep(1000);
  if (echo_setup == 2 && uring_ok) {
    uring_ok = 0;
    uring_why = "the echo process could not set up its io_uring";
  }
  uint64_t *rt[WAYS], *hop[WAYS], *call[WAYS];
  long n[WAYS] = {0}, same_cpu[WAYS] = {0};
  for (int w = 0; w < WAYS; w++) {
    rt[w] = malloc((size_t)blocks * BLOCK * sizeof(uint64_t));
    hop[w] = malloc((size_t)blocks * BLOCK * sizeof(uint64_t));
    call[w] = malloc((size_t)blocks * BLOCK * sizeof(uint64_t));
    if (!rt[w] || !hop[w] || !call[w]) { perror("malloc"); return 1; }
  }
  uint32_t sent = 0;
  struct timespec gap = {.tv_sec = idle_us / 1000000, .tv_nsec = (idle_us % 1000000) * 1000};
  for (long b = 0; b < blocks * WAYS; b++) {
    int way = (int)(b % WAYS);
    if (way == IO_URING_FUTEX && !uring_ok) continue;
    for (int i = 0; i < BLOCK; i++) {
      nanosleep(&gap, NULL);
      sent++;
      int cpu = sched_getcpu();
      uint64_t t0 = now_ns();
      send_on(&s, way, &sh->ping, sent);
      uint64_t t1 = now_ns();
      if (way == UNIX_SOCKET) receive_socket(&s);
      /* Each load observes the echo's answer; the word may still hold an older round's until then. */
      else for (uint32_t v; (v = atomic_load(&sh->pong)) != sent;) wait_word(&s, way, &sh->pong, v);
      uint64_t t2 = now_ns();
      /* Observe the echo's stamp and CPU, both stored before its answer, which we have seen. */
      uint64_t woke = atomic_load(&sh->woke);
      same_cpu[way] += atomic_load(&sh->woke_cpu) == cpu;
      rt[way][n[way]] = t2 - t0;
      hop[way][n[way]] = woke > t0 ? woke - t0 : 0;
      call[way][n[way]] = t1 - t0;
      n[way]++;
    }
  }
  waitpid(child, NULL, 0);
  printf("{\"rounds\":%ld,\"idleUs\":%ld,\"ioUring\":\"%s\",\"ways\":{", n[UNIX_SOCKET], idle_us, uring_ok ? "ok" : uring_why);
  const char *sep = "";
  for (int w = 0; w < WAYS; w++) {
    if (n[w] == 0) continue;
    uint64_t p50 = percentile(rt[w], n[w], 50), p90 = percentile(rt[w], n[w], 90);
    printf("%s\"%s\":{\"rtP50Ns\":%llu,\"rtP90Ns\":%llu,\"hopP50Ns\":%llu,\"sendCallP50Ns\":%llu,\"echoOnClientCpu\":%.3f}", sep,
           NAMES[w], (unsigned long long)p50, (unsigned long long)p90, (unsigned long long)percentile(hop[w], n[w], 50),
           (unsigned long long)percentile(call[w], n[w], 50), (double)same_cpu[w] / (double)n[w]);
    sep = ",";
  }
  printf("}}\n");
  return 0;
}
