/*
 * The hardware floor for shmring's benchmarks, in plain C (built by the
 * benchmark with `cc -O2`):
 *
 *   floor pingpong <round-trips>   two processes bounce one cache line through a
 *                                  shared anonymous mapping, each spinning on an
 *                                  atomic load, pinned to different CPUs when the
 *                                  machine has two; prints round-trip percentiles (ns)
 *   floor stream <bytes> <capacity> <ms>
 *                                  the same SPSC ring as shmring's (8-byte record
 *                                  header, 8-byte alignment, positions in their own
 *                                  128-byte blocks, published per record with a
 *                                  release store) streaming <bytes> messages from
 *                                  one pinned process to another; the consumer reads
 *                                  each record in place (its sequence number, and one
 *                                  32-bit word of each cache line of its payload, summed
 *                                  as the JavaScript consumers do) and releases once
 *                                  per batch; prints messages/s
 *   floor memcpy <bytes> <area> <ms>
 *                                  memcpy bandwidth for blocks of <bytes> from one
 *                                  source, written round-robin over <area> bytes
 *                                  (like messages copied into a ring of that
 *                                  capacity); prints bytes/s
 *
 * Output: one JSON object on stdout. Both modes end themselves after 60 s
 * (alarm), and the forked child dies with its parent (PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CACHE_LINE 64

/* Two counters, each alone in a 128-byte block (two lines: adjacent-line prefetch). */
struct shared {
  _Alignas(128) _Atomic uint32_t ping; /* written by the parent */
  _Alignas(128) _Atomic uint32_t pong; /* written by the child */
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof set, &set); /* best effort: ignored if the CPU is not ours */
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static uint64_t percentile(const uint64_t *sorted, size_t n, double p) {
  size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
  return sorted[i < n ? i : n - 1];
}

static int pingpong(long rounds) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  struct shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (s == MAP_FAILED) { perror("mmap"); return 1; }
  uint64_t *samples = malloc((size_t)rounds * sizeof *samples);
  if (!samples) { perror("malloc"); return 1; }
  long warmup = rounds / 10;
  pid_t child = fork();
  if (child < 0) { perror("fork"); return 1; }
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (cpus >= 2) pin(1);
    for (uint32_t seen = 0;;) {
      uint32_t v;
      /* Observes the parent's ping (acquire); answers with the same number (release). */
      while ((v = atomic_load_explicit(&s->ping, memory_order_acquire)) == seen) {}
      seen = v;
      atomic_store_explicit(&s->pong, v, memory_order_release);
      if (v == UINT32_MAX) _exit(0);
    }
  }
  if (cpus >= 2) pin(0);
  for (long i = -warmup; i < rounds; i++) {
    uint32_t n = (uint32_t)(i + warmup + 1);
    uint64_t t0 = now_ns();
    atomic_store_explicit(&s->ping, n, memory_order_release);
    while (atomic_load_explicit(&s->pong, memory_order_acquire) != n) {}
    uint64_t t1 = now_ns();
    if (i >= 0) samples[i] = t1 - t0;
  }
  atomic_store_explicit(&s->ping, UINT32_MAX, memory_order_release);
  waitpid(child, NULL, 0);
  /* The cost of the two clock reads, to report beside the round trip. */
  uint64_t c0 = now_ns();
  for (int i = 0; i < 100000; i++) (void)now_ns();
  double clock_ns = (double)(now_ns() - c0) / 100000.0;
  double sum = 0;
  for (long i = 0; i < rounds; i++) sum += (double)samples[i];
  qsort(samples, (size_t)rounds, sizeof *samples, cmp_u64);
  printf("{\"mode\":\"pingpong\",\"rounds\":%ld,\"pinned\":%s,\"meanNs\":%.1f,\"p50Ns\":%llu,\"p99Ns\":%llu,"
         "\"p999Ns\":%llu,\"maxNs\":%llu,\"minNs\":%llu,\"clockReadNs\":%.1f}\n",
         rounds, cpus >= 2 ? "true" : "false", sum / (double)rounds,
         (unsigned long long)percentile(samples, rounds, 50), (unsigned long long)percentile(samples, rounds, 99),
         (unsigned long long)percentile(samples, rounds, 99.9), (unsigned long long)samples[rounds - 1],
         (unsigned long long)samples[0], clock_ns);
  return 0;
}

struct ring_ctl {
  _Alignas(128) _Atomic uint32_t producer; /* bytes ever written; written by the producer */
  _Alignas(128) _Atomic uint32_t consumer; /* bytes ever consumed; written by the consumer */
  _Alignas(128) _Atomic uint32_t done;     /* the producer stopped; total messages in `count` */
  uint32_t count;
};

static int stream(size_t size, uint32_t capacity, long ms) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  struct ring_ctl *c = mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  unsigned char *data = mmap(NULL, capacity, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  int *report = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (c == MAP_FAILED || data == MAP_FAILED || report == MAP_FAILED) { perror("mmap"); return 1; }
  memset(data, 0, capacity);
  const uint32_t record = (uint32_t)((size + 8 + 7) & ~(size_t)7), mask = capacity - 1;
  double *result = (double *)report; /* [0] = consumer's messages/s over the steady state */
  pid_t child = fork();
  if (child < 0) { perror("fork"); return 1; }
  if (child == 0) { /* consumer */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (cpus >= 2) pin(1);
    uint32_t pos = 0, count = 0, bad = 0, mark_count = 0;
    uint32_t line_sum = 0; /* one word of each cache line of every payload: reported, so the reads stay */
    uint64_t first = 0, mark = 0;
    for (;;) {
      uint32_t end = atomic_load_explicit(&c->producer, memory_order_acquire);
      if (end == pos) {
        if (atomic_load_explicit(&c->done, memory_order_acquire) && atomic_load_explicit(&c->producer, memory_order_acquire) == pos) break;
        continue;
      }
      while (pos != end) {
        uint32_t at = pos & mask, length;
        memcpy(&length, data + at, 4);
        if (length == UINT32_MAX) { pos += capacity - at; continue; } /* padding to the end */
        uint32_t seq;
        memcpy(&seq, data + at + 8, 4);
        bad += seq != count;
        /* The payload in place: from its first byte, then each next line's start (all 4-byte aligned). */
        for (uint32_t a = at + 8, end_at = at + 8 + length; a < end_at; a = (a | (CACHE_LINE - 1)) + 1) {
          uint32_t word;
          memcpy(&word, data + a, 4);
          line_sum += word;
        }
        count++;
        pos += record;
      }
      atomic_store_explicit(&c->consumer, pos, memory_order_release);
      if ((count & 1023) < 64) {
        uint64_t now = now_ns();
        if (!first) first = now;
        else if (!mark && now - first > 200000000u) { mark = now; mark_count = count; }
      }
    }
    uint64_t t = now_ns();
    result[0] = mark ? (double)(count - mark_count) / ((double)(t - mark) / 1e9) : 0;
    result[1] = bad;
    result[2] = count;
    result[3] = line_sum;
    _exit(0);
  }
  if (cpus >= 2) pin(0);
  unsigned char *message = malloc(size);
  memset(message, 0x5a, size);
  uint32_t pos = 0, cached = 0, seq = 0;
  uint64_t deadline = now_ns() + (uint64_t)ms * 1000000u;
  for (;;) {
    uint32_t at = pos & mask, need = record;
    if (capacity - at < record) need += capacity - at;
    while (capacity - (pos - cached) < need) cached = atomic_load_explicit(&c->consumer, memory_order_acquire);
    if (capacity - at < record) { /* padding record over the rest, then wrap */
      uint32_t pad = UINT32_MAX;
      memcpy(data + at, &pad, 4);
      pos += capacity - at;
      at = 0;
    }
    uint32_t length = (uint32_t)size;
    memcpy(data + at, &length, 4);
    memcpy(data + at + 8, message, size);
    memcpy(data + at + 8, &seq, 4);
    seq++;
    pos += record;
    atomic_store_explicit(&c->producer, pos, memory_order_release); /* publishes the record */
    if ((seq & 1023) == 0 && now_ns() > deadline) break;
  }
  atomic_store_explicit(&c->done, 1, memory_order_release);
  waitpid(child, NULL, 0);
  printf("{\"mode\":\"stream\",\"size\":%zu,\"capacity\":%u,\"sent\":%u,\"received\":%.0f,\"bad\":%.0f,\"messagesPerSecond\":%.0f,"
         "\"lineSum\":%.0f,\"pinned\":%s}\n",
         size, capacity, seq, result[2], result[1], result[0], result[3], cpus >= 2 ? "true" : "false");
  return result[1] == 0 && (uint32_t)result[2] == seq ? 0 : 1;
}

static int bandwidth(size_t block, size_t area, long ms) {
  size_t slots = area / block ? area / block : 1;
  unsigned char *src = malloc(block), *dst = malloc(slots * block);
  if (!src || !dst) { perror("malloc"); return 1; }
  memset(src, 0x5a, block);
  memset(dst, 0, slots * block); /* fault the pages in before timing */
  uint64_t deadline = now_ns() + (uint64_t)ms * 1000000u, t0 = now_ns(), bytes = 0, copies = 0;
  while (now_ns() < deadline) {
    for (int k = 0; k < 8; k++) {
      memcpy(dst + (copies % slots) * block, src, block);
      src[copies & (block - 1)]++; /* keep the compiler from hoisting the copies */
      copies++;
      bytes += block;
    }
  }
  double seconds = (double)(now_ns() - t0) / 1e9;
  unsigned sink = 0;
  for (size_t i = 0; i < slots * block; i += 4096) sink += dst[i];
  printf("{\"mode\":\"memcpy\",\"block\":%zu,\"area\":%zu,\"seconds\":%.3f,\"bytesPerSecond\":%.0f,\"sink\":%u}\n",
         block, area, seconds, (double)bytes / seconds, sink);
  return 0;
}

int main(int argc, char **argv) {
  alarm(60);
  if (argc == 3 && strcmp(argv[1], "pingpong") == 0) return pingpong(atol(argv[2]));
  if (argc == 5 && strcmp(argv[1], "stream") == 0) return stream((size_t)atol(argv[2]), (uint32_t)atol(argv[3]), atol(argv[4]));
  if (argc == 5 && strcmp(argv[1], "memcpy") == 0) return bandwidth((size_t)atol(argv[2]), (size_t)atol(argv[3]), atol(argv[4]));
  fprintf(stderr, "usage: floor pingpong <round-trips> | floor stream <bytes> <capacity> <ms> | floor memcpy <bytes> <area-bytes> <ms>\n");
  return 2;
}
