/*
 * The waiting protocol (docs/LAYOUT.md "Waiting"; packages/ringbuf/src/
 * waiting.ts parkSteps / unpark / unparkAll; queue.ts readSync / writeSync /
 * close), driving an SpscRing of K messages: a reader that parks on an
 * empty ring in the READ wait block, a writer that parks on a full ring in
 * the WRITE wait block, each waking the other after every publication.
 *
 *   sleeper                                   publisher
 *   s = load(SIGNAL)                          store the position
 *   add(WAITERS, 1)          -- announce      if load(WAITERS) != 0:
 *   if attempt() succeeds: done                  add(SIGNAL, 1)
 *   futex_wait(SIGNAL, s)                        futex_wake(SIGNAL, 1)
 *   sub(WAITERS, 1)          -- finally
 *
 * The futex is modelled as the kernel gives it: futex_wait compares SIGNAL
 * with s and queues the caller in one atomic step ('not-equal' if it
 * differs), then blocks until a futex_wake dequeues it; futex_wake dequeues
 * the sleepers queued on that word at that moment.
 *
 * Abstractions: a message is one position step (models/spsc.pml checks the
 * bytes); positions do not wrap; SIGNAL does not wrap either (the 2^32-bump
 * ABA window is documented as unguarded); waits have no timeout and no
 * spurious wake-up (a timeout would turn a lost wake-up into a delay and
 * hide it: Promise waits have none; Sync waits nap a quarter of
 * peerTimeoutMs); the bounded spin before parking is left out (it is more
 * attempts without an announcement); one sleeper per wait block.
 *
 * Properties: no invalid end state (both sides finish: a side never stays
 * parked with its condition true and nobody left to wake it), the LTL
 * property no_lost_wakeup, and with -DCLOSE the reader gets every message
 * before it sees the end.
 *
 * Mutants (spin -DMUTANT=n; each must be rejected):
 *  1  the publisher checks WAITERS before it stores its position
 *  2  the sleeper takes its SIGNAL snapshot after its re-check
 *  3  the sleeper announces itself (WAITERS) after its re-check
 *  4  (with -DCLOSE) a reader that finds the ring empty and then sees the
 *     closed flag ends without reading once more
 *  5  (with -DOBSERVER) the observer does not pass its wake-up on
 *
 * With -DOBSERVER=1 (and -DCLOSE=1, which ends the observer's wait once
 * the messages are taken), a second sleeper shares the READ block: an
 * observer (a select, a waitReadable: LAYOUT.md, "A sleeper that takes
 * nothing passes its wake-up on") that parks until a message is there or
 * the ring is closed, takes nothing, and then passes its wake-up on. A
 * FUTEX_WAKE of one then dequeues either sleeper, as the kernel may.
 */

#ifndef K
#define K 1
#endif
#ifndef N
#define N 3
#endif
#ifndef MUTANT
#define MUTANT 0
#endif
#ifndef CLOSE
#define CLOSE 0
#endif
#ifndef OBSERVER
#define OBSERVER 0
#endif

#define RD 0              /* READ wait block: readers parked on an empty ring */
#define WR 1              /* WRITE wait block: writers parked on a full ring */

/* Shared memory */
byte PRODUCER_POSITION = 0;
byte CONSUMER_POSITION = 0;
bit FLAGS = 0;            /* FLAG_CLOSED */
byte WAITERS[2];
byte SIGNAL[2];

/* The kernel: who is queued on each block's SIGNAL word (the reader or the writer; and the observer on READ). */
bit queued[2];
bit oqueued = 0;

byte received = 0;

/* futex(&SIGNAL[b], FUTEX_WAIT, s): compare and queue atomically, then sleep until dequeued. */
inline futex_wait(b, s) {
  atomic {
    if
    :: SIGNAL[b] == s -> queued[b] = 1
    :: else -> skip                         /* 'not-equal': returns at once */
    fi
  };
  (queued[b] == 0)
}

/* futex(&SIGNAL[b], FUTEX_WAKE, 1): dequeues one of the sleepers queued, whichever the kernel picks. */
inline futex_wake(b) {
  if
  :: queued[b] -> queued[b] = 0
  :: b == RD && oqueued -> oqueued = 0
  :: else -> skip
  fi
}

/* unpark(ctl, block, 1): after every publication. */
inline unpark(b) {
  w = WAITERS[b];                           /* Atomics.load(WAITERS) */
  if
  :: w != 0 ->
    SIGNAL[b]++;                            /* Atomics.add(SIGNAL, 1) */
    futex_wake(b)
  :: else
  fi
}

/* unparkAll(ctl, block): close(), unconditionally, every sleeper (n = INT_MAX). */
inline unpark_all(b) {
  SIGNAL[b]++;
  atomic {
    queued[b] = 0;
    if
    :: b == RD -> oqueued = 0
    :: else
    fi
  }
}

/* ---- the reader: SpscRing tryRead and Queue#readAttempt ---- */

inline try_read(ok) {
  if
  :: C == Pc -> Pc = PRODUCER_POSITION      /* #available: the cache says empty */
  :: else
  fi;
  if
  :: Pc != C ->
    C++;
    CONSUMER_POSITION = C;                  /* #release */
    unpark(WR);
    received++;
    ok = 1
  :: else -> ok = 0
  fi
}

inline read_attempt(ok) {
  try_read(ok);
#if CLOSE
  if
  :: !ok && FLAGS ->
#if MUTANT != 4
    try_read(ok);                           /* the writer may have published before its close */
#endif
    ended = !ok                             /* throws ERR_SHMRING_CLOSED */
  :: else
  fi
#endif
}

/* ---- the writer: SpscRing tryWrite and Queue#writeAttempt ---- */

inline try_write(ok) {
  if
  :: P - Cc >= K -> Cc = CONSUMER_POSITION  /* #reserve: the cache says full */
  :: else
  fi;
  if
  :: P - Cc < K ->
    P++;
#if MUTANT == 1
    unpark(RD);                             /* MUTANT: checks WAITERS before the store */
#endif
    PRODUCER_POSITION = P;                  /* #store */
#if MUTANT != 1
    unpark(RD);
#endif
    ok = 1
  :: else -> ok = 0
  fi
}

/* parkSteps: the loop of one parked side on block b, calling ATTEMPT. */
#if MUTANT == 2
#define SNAPSHOT_EARLY(b) skip
#define SNAPSHOT_LATE(b) seen = SIGNAL[b]
#else
#define SNAPSHOT_EARLY(b) seen = SIGNAL[b]
#define SNAPSHOT_LATE(b) skip
#endif
#if MUTANT == 3
#define ANNOUNCE_EARLY(b) skip
#define ANNOUNCE_LATE(b) WAITERS[b]++
#else
#define ANNOUNCE_EARLY(b) WAITERS[b]++
#define ANNOUNCE_LATE(b) skip
#endif

proctype Reader() {
  byte C = 0, Pc = 0, seen, w;
  bit ok, ended = 0;
  do
  :: !CLOSE && received == N -> break
  :: else ->
    try_read(ok);                           /* readSync: one try first */
    if
    :: ok -> skip
    :: else ->
      do                                    /* parkSync -> parkSteps */
      :: SNAPSHOT_EARLY(RD);
        ANNOUNCE_EARLY(RD);
        read_attempt(ok);                   /* the re-check after announcing */
        SNAPSHOT_LATE(RD);
        ANNOUNCE_LATE(RD);
        if
        :: !ok && !ended -> futex_wait(RD, seen)
        :: else
        fi;
        WAITERS[RD]--;                      /* finally: withdraw */
        if
        :: ok || ended -> break
        :: else
        fi
      od;
      if
      :: ended -> break
      :: else
      fi
    fi
  od;
  assert(received == N)
}

proctype Writer() {
  byte P = 0, Cc = 0, sent = 0, seen, w;
  bit ok;
  do
  :: sent == N -> break
  :: else ->
    try_write(ok);                          /* writeSync: one try first */
    if
    :: ok -> skip
    :: else ->
      do
      :: SNAPSHOT_EARLY(WR);
        ANNOUNCE_EARLY(WR);
        try_write(ok);                      /* #writeAttempt (the ring is closed only by this writer) */
        SNAPSHOT_LATE(WR);
        ANNOUNCE_LATE(WR);
        if
        :: !ok -> futex_wait(WR, seen)
        :: else
        fi;
        WAITERS[WR]--;
        if
        :: ok -> break
        :: else
        fi
      od
    fi;
    sent++
  od;
#if CLOSE
  FLAGS = 1;                                /* close(): Atomics.or(FLAGS, FLAG_CLOSED) */
  unpark_all(RD);
  unpark_all(WR)
#endif
}

#if OBSERVER
/*
 * A sleeper that takes nothing (select, waitReadable) on the READ block:
 * parks until a message is there or the ring is closed, then passes its
 * wake-up on if it slept (select.ts handOn, waiting.ts passOn).
 */
proctype Observer() {
  byte seen, w;
  bit ready = 0, slept = 0;
  do
  :: seen = SIGNAL[RD];
    WAITERS[RD]++;
    ready = (PRODUCER_POSITION != CONSUMER_POSITION || FLAGS);   /* the re-check: readable, or closed */
    if
    :: !ready ->
      atomic {
        if
        :: SIGNAL[RD] == seen -> oqueued = 1
        :: else
        fi
      };
      (oqueued == 0);
      slept = 1
    :: else
    fi;
    WAITERS[RD]--;
    if
    :: ready -> break
    :: else
    fi
  od;
#if MUTANT != 5
  if
  :: slept && PRODUCER_POSITION != CONSUMER_POSITION -> unpark(RD)   /* passOn: after withdrawing */
  :: else
  fi
#endif
}
#endif

init {
  atomic {
    run Reader();
    run Writer()
#if OBSERVER
    ; run Observer()
#endif
  }
}

/*
 * A side parked while its condition holds (a message published for the
 * reader, room for the writer) is woken. A deadlock stutters forever, so it
 * violates this too.
 */
ltl no_lost_wakeup {
  [] (((queued[RD] && PRODUCER_POSITION != CONSUMER_POSITION) -> <> !queued[RD])
   && ((queued[WR] && PRODUCER_POSITION - CONSUMER_POSITION < K) -> <> !queued[WR]))
}
