/*
 * MpscRing commits without a fence (docs/LAYOUT.md "MpscRing (KIND 4)",
 * FLAG_LIGHT_COMMITS; packages/ringbuf/src/mpsc.ts #publish and
 * MPSC_READ_BLOCK; @shmring/core membarrier): the waking of a parked
 * consumer when a producer's commit store may sit in its CPU's store
 * buffer while it loads READ_WAITERS (x86-64's TSO lets a load pass an
 * earlier store), and membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) by the
 * consumer, between its announcement and its re-check, flushes it.
 *
 *   light producer                        consumer (parking)
 *   OR(FLAGS, LIGHT)   -- once, first     s = load(SIGNAL)
 *   claim (CAS: drains its buffer)        add(WAITERS, 1)    -- announce
 *   LEN[slot] = 1      -- buffered        if load(FLAGS) & LIGHT: membarrier
 *   if load(WAITERS) != 0:                if LEN[head] != 0: take it, done
 *      add(SIGNAL, 1)  -- drains          futex_wait(SIGNAL, s)
 *      futex_wake(SIGNAL, 1)              sub(WAITERS, 1)
 *
 * A fenced producer (FENCED=1: SHMRING_MEMBARRIER=off, or a kernel that
 * refuses membarrier) sets no flag and drains its buffer (a locked add on
 * a word of its own) between its store and its load.
 *
 * Memory: every access is sequentially consistent except a producer's
 * commit store, which goes to its store buffer (one entry: the claim CAS
 * and any locked instruction drain it first) and reaches memory at a
 * moment of the CPU's choosing (the Cpu process) or when something drains
 * it. membarrier drains every producer's buffer in one step: it returns
 * only once every running thread of a registered process has executed a
 * full barrier. The futex is the kernel's, as in waiting.pml. The record
 * bytes, the wrap and take-backs are mpsc.pml's business; here a record is
 * its LENGTH word, slots do not wrap.
 *
 * Properties: no invalid end state (the consumer gets all NP * MSGS
 * records; it never stays parked with a record committed and nobody left
 * to wake it), each record read once.
 *
 * Mutants (spin -DMUTANT=n; each must be rejected):
 *  1  the consumer leaves out the membarrier
 *  2  the consumer loads FLAGS before it announces itself
 *  3  the producer sets LIGHT only after its first commit and wake check
 */

#ifndef NP
#define NP 2
#endif
#ifndef MSGS
#define MSGS 2
#endif
#ifndef FENCED
#define FENCED 0          /* 1: the last producer is a fenced one */
#endif
#ifndef MUTANT
#define MUTANT 0
#endif

#define TOTAL (NP * MSGS)
#define NONE 255

/* Shared memory */
byte TAIL = 0;            /* claims: the next slot */
bit LEN[TOTAL];           /* a record's LENGTH: 1 once committed (in memory) */
bit LIGHT = 0;            /* FLAGS & FLAG_LIGHT_COMMITS */
byte WAITERS = 0;
byte SIGNAL = 0;

/* Each producer's store buffer: the slot whose commit is not yet in memory, or NONE. */
byte sb[NP];

/* The kernel: whether the consumer is queued on SIGNAL. */
bit queued = 0;

byte received = 0;

/* The buffered commit of producer p reaches memory. */
inline drain(p) {
  if
  :: sb[p] != NONE -> LEN[sb[p]] = 1; sb[p] = NONE
  :: else
  fi
}

/* membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED): a full barrier on every producer's CPU. */
inline heavy_fence() {
  atomic {
    q = 0;
    do
    :: q < NP -> drain(q); q++
    :: else -> break
    od
  }
}

/* The CPU of producer p: its store buffer drains whenever the hardware gets to it. */
proctype Cpu(byte p) {
end:
  do
  :: atomic { sb[p] != NONE -> drain(p) }
  od
}

proctype Producer(byte p) {
  byte slot, w, n = 0;
  bit light = (FENCED == 0 || p != NP - 1);
#if MUTANT != 3
  if
  :: light -> LIGHT = 1                    /* Atomics.or(FLAGS, LIGHT) at registration: before any commit */
  :: else
  fi;
#endif
  do
  :: n == MSGS -> break
  :: else ->
    atomic { drain(p); slot = TAIL; TAIL++ };        /* the claim CAS: a locked instruction drains first */
    sb[p] = slot;                                     /* commit: a plain store, buffered */
    if
    :: !light -> atomic { drain(p) }                 /* Atomics.add(FENCE): drains */
    :: else
    fi;
    w = WAITERS;                                      /* unpark: Atomics.load(WAITERS), a plain mov */
    if
    :: w != 0 ->
      atomic {
        drain(p);                                     /* Atomics.add(SIGNAL, 1): locked, drains */
        SIGNAL++
      };
      queued = 0                                      /* futex_wake(SIGNAL, 1) */
    :: else
    fi;
#if MUTANT == 3
    if
    :: light && n == 0 -> atomic { drain(p); LIGHT = 1 }  /* MUTANT: the flag after the first commit */
    :: else
    fi;
#endif
    n++
  od
}

proctype Consumer() {
  byte head = 0, seen, q;
  bit flag;
  do
  :: head == TOTAL -> break
  :: else ->
    if
    :: LEN[head] -> head++; received++       /* tryRead: one try first */
    :: else ->
      seen = SIGNAL;                          /* snapshot before announcing */
#if MUTANT == 2
      flag = LIGHT;                           /* MUTANT: FLAGS before the announcement */
#endif
      WAITERS++;                              /* announce */
#if MUTANT != 2
      flag = LIGHT;                           /* afterAnnounce: Atomics.load(FLAGS) */
#endif
#if MUTANT != 1
      if
      :: flag -> heavy_fence()
      :: else
      fi;
#endif
      if
      :: LEN[head] -> head++; received++     /* the re-check */
      :: else ->
        atomic {                              /* futex_wait(SIGNAL, seen): compare and queue */
          if
          :: SIGNAL == seen -> queued = 1
          :: else
          fi
        };
        (queued == 0)
      fi;
      WAITERS--                               /* withdraw */
    fi
  od;
  assert(received == TOTAL)
}

init {
  byte i = 0;
  do
  :: i < NP -> sb[i] = NONE; i++
  :: else -> break
  od;
  atomic {
    i = 0;
    do
    :: i < NP -> run Cpu(i); run Producer(i); i++
    :: else -> break
    od;
    run Consumer()
  }
}
