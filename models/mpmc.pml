/*
 * MpmcQueue (docs/LAYOUT.md "MpmcQueue"; packages/ringbuf/src/mpmc.ts):
 * Vyukov's bounded queue with 32-bit positions and per-slot sequences.
 *
 *   producer: p = load(PRODUCER_POSITION); loop { lag = SEQ[p] - p;
 *             0: CAS(PRODUCER_POSITION, p, p+1) wins -> own the slot; < 0: full;
 *             > 0: reload p }  write the slot; SEQ = p + 1; unpark(READ)
 *   consumer: p = load(CONSUMER_POSITION); loop { lag = SEQ[p] - (p+1); ... }
 *             read the slot; SEQ = p + CAP; unpark(WRITE)
 *
 * NP producers each write MSGS messages; NC consumers each read a fixed
 * share of them (the shares add up to all of them).
 *
 * Abstractions: CAP slots; positions and sequences wrap modulo PMOD (for
 * 2^32) and are compared by the signed difference, as the code does; the
 * run starts INIT positions before the wrap (slot sequences as after INIT
 * messages), so the counters wrap during the run; a slot's LENGTH, TYPE and
 * payload are one word, its OWNER and the rosters (dead-side recovery) are
 * not modelled; every shared access is one atomic step.
 *
 * A side that finds the queue full (empty) blocks until the sequence it
 * looked at changes; with -DWAIT it parks with the protocol of waiting.ts
 * instead (WAITERS count, SIGNAL snapshot, re-check, futex wait; unpark
 * after each publication wakes one sleeper, n = 1, as mpmc.ts does), with
 * several sleepers per wait block. -DWAKE_ALL=1 makes unpark of the read
 * block wake every sleeper, 2 the write block's, 3 both.
 *
 * Ghosts: wip[s] (a producer is writing slot s), unread[s] (slot s holds a
 * complete message its consumer has not finished reading), expectAt[p] (the
 * message the winner of position p writes).
 * Properties: the consumer of position p reads exactly the message written
 * for p, complete (no torn read); no producer writes a slot that is unread;
 * each message is delivered exactly once, and per producer in order of
 * consumer position; the CORRUPT check of #reload never fires; every side
 * finishes (no invalid end state).
 *
 * Mutants (spin -DMUTANT=n; each must be rejected):
 *  1  the producer stores SEQ = p + 1 before writing the slot
 *  2  the consumer frees the slot (SEQ = p + CAP) before reading it
 *  3  the producer claims the position before checking the slot's sequence
 */

#ifndef CAP
#define CAP 2
#endif
#ifndef NP
#define NP 3
#endif
#ifndef NC
#define NC 2
#endif
#ifndef MSGS
#define MSGS 1
#endif
#ifndef MUTANT
#define MUTANT 0
#endif
#ifndef WAIT
#define WAIT 0
#endif
#ifndef WAKE_ALL
#define WAKE_ALL 0
#endif

#define MASK (CAP - 1)
#define PMOD 16
#define PMASK (PMOD - 1)
#define INIT (PMOD - 3)
#define TOTAL (NP * MSGS)

/* (int32)(a - b) with PMOD standing for 2^32 */
#define SDIFF(a, b) ((((a) - (b)) & PMASK) >= PMOD / 2 -> (((a) - (b)) & PMASK) - PMOD : (((a) - (b)) & PMASK))

/* Shared memory */
byte PRODUCER_POSITION = INIT;
byte CONSUMER_POSITION = INIT;
byte SEQ[CAP];
byte DATA[CAP];
#if WAIT
#define RD 0
#define WR 1
byte WAITERS[2];
byte SIGNAL[2];
byte Q[2];                /* the kernel's queue of each SIGNAL word: a bit per process */
#endif

/* Ghosts */
bit wip[CAP];
bit unread[CAP];
byte expectAt[PMOD];
byte deliveredAt[NP * MSGS];   /* the consumer position (ordinal from INIT) of each message */
byte delivered = 0;

#define VAL(i, k) ((i) * MSGS + (k) + 1)

#if WAIT
inline futex_wait(b, me, s) {
  atomic {
    if
    :: SIGNAL[b] == s -> Q[b] = Q[b] | (1 << me)
    :: else -> skip
    fi
  };
  ((Q[b] & (1 << me)) == 0)
}

/* FUTEX_WAKE with n = 1 (one of the queued sleepers, any one), or all of them where WAKE_ALL says so. */
inline futex_wake(b) {
  atomic {
    if
    :: Q[b] == 0 -> skip
    :: else ->
      if
      :: (WAKE_ALL >> b) & 1 -> Q[b] = 0    /* n = INT_MAX */
      :: else ->
        wk = 0;
        do
        :: (Q[b] >> wk) & 1 -> Q[b] = Q[b] & ~(1 << wk); break
        :: (Q[b] >> (wk + 1)) != 0 -> wk++
        od
      fi
    fi
  }
}

inline unpark(b) {
  w = WAITERS[b];
  if
  :: w != 0 -> SIGNAL[b]++; futex_wake(b)
  :: else
  fi
}
#else
#define unpark(b) skip
#endif

/* tryWrite: ok = 1 if the message went in, 0 if the queue was full (seq: the sequence that said so). */
inline try_write(ok) {
  pos = PRODUCER_POSITION;                  /* observes the latest producer claim */
#if MUTANT == 3
  do                                        /* MUTANT: claims without looking at the slot's sequence */
  :: atomic {
      if
      :: PRODUCER_POSITION == pos -> PRODUCER_POSITION = (pos + 1) & PMASK; won = 1; expectAt[pos] = VAL(me, k)
      :: else -> pos = PRODUCER_POSITION; won = 0
      fi
    };
    if
    :: won -> slot = pos & MASK; ok = 1; break
    :: else
    fi
  od;
#else
  do
  :: slot = pos & MASK;
    seq = SEQ[slot];                        /* observes the consumer's release of the slot */
    lag = SDIFF(seq, pos);
    if
    :: lag == 0 ->
      atomic {                              /* CAS(PRODUCER_POSITION, pos, pos + 1) */
        if
        :: PRODUCER_POSITION == pos -> PRODUCER_POSITION = (pos + 1) & PMASK; won = 1; expectAt[pos] = VAL(me, k)
        :: else -> pos = PRODUCER_POSITION; won = 0
        fi
      };
      if
      :: won -> ok = 1; break
      :: else
      fi
    :: lag < 0 -> ok = 0; break             /* full: the slot holds the previous lap's message */
    :: lag > 0 ->                           /* #reload: another producer got ahead */
      seen = PRODUCER_POSITION;
      assert(seen != pos);                  /* else ERR_SHMRING_CORRUPT */
      pos = seen
    fi
  od;
#endif
  if
  :: ok ->
#if MUTANT == 1
    SEQ[slot] = (pos + 1) & PMASK;          /* MUTANT: published before the slot is written */
#endif
    d_step {                                /* LENGTH, TYPE, payload */
      assert(!unread[slot] && !wip[slot]);  /* nobody else's message is in the slot */
      wip[slot] = 1;
      DATA[slot] = VAL(me, k)
    };
    d_step {
#if MUTANT != 1
      SEQ[slot] = (pos + 1) & PMASK;        /* publishes the slot to the consumer of pos */
#endif
      wip[slot] = 0; unread[slot] = 1
    };
    unpark(RD)
  :: else
  fi
}

/* tryRead: ok = 1 if a message was read, 0 if the queue was empty. */
inline try_read(ok) {
  pos = CONSUMER_POSITION;                  /* observes the latest consumer claim */
  do
  :: slot = pos & MASK;
    seq = SEQ[slot];                        /* observes the producer's publication */
    lag = SDIFF(seq, (pos + 1) & PMASK);
    if
    :: lag == 0 ->
      atomic {
        if
        :: CONSUMER_POSITION == pos -> CONSUMER_POSITION = (pos + 1) & PMASK; won = 1
        :: else -> pos = CONSUMER_POSITION; won = 0
        fi
      };
      if
      :: won -> ok = 1; break
      :: else
      fi
    :: lag < 0 -> ok = 0; break             /* not yet published: empty */
    :: lag > 0 ->
      seen = CONSUMER_POSITION;
      assert(seen != pos);                  /* else ERR_SHMRING_CORRUPT */
      pos = seen
    fi
  od;
  if
  :: ok ->
#if MUTANT == 2
    SEQ[slot] = (pos + CAP) & PMASK;        /* MUTANT: freed before it is read */
#endif
    d_step {
      assert(unread[slot] && !wip[slot]);   /* complete, and not yet freed */
      v = DATA[slot];
      assert(v == expectAt[pos]);           /* the message written for this position */
      assert(v >= 1 && v <= TOTAL && deliveredAt[v - 1] == 0);  /* exactly once */
      deliveredAt[v - 1] = ((pos - INIT) & PMASK) + 1;
      delivered++;
      unread[slot] = 0
    };
#if MUTANT != 2
    SEQ[slot] = (pos + CAP) & PMASK;        /* frees the slot for the producer one lap later */
#endif
    unpark(WR)
  :: else
  fi
}

#if WAIT
/* parkSteps on block b with attempt ATTEMPT (one sleeper of several). */
#define PARK(b, ATTEMPT) \
  do \
  :: s = SIGNAL[b]; \
    WAITERS[b]++; \
    ATTEMPT(ok); \
    if \
    :: !ok -> futex_wait(b, me, s) \
    :: else \
    fi; \
    WAITERS[b]--; \
    if \
    :: ok -> break \
    :: else \
    fi \
  od
#endif

proctype Producer(byte me) {
  byte k = 0, pos, slot, seq, seen, w, wk, s;
  short lag;
  bit ok, won;
  do
  :: k == MSGS -> break
  :: else ->
    try_write(ok);
    if
    :: ok -> skip
#if WAIT
    :: else -> PARK(WR, try_write)          /* writeSync */
#else
    :: else -> (SEQ[slot] != seq)           /* full: wait for the slot's release */
#endif
    fi;
    if
    :: ok -> k++
    :: else
    fi
  od
}

proctype Consumer(byte me; byte quota) {
  byte got = 0, pos, slot, seq, seen, v, w, wk, s;
  short lag;
  bit ok, won;
  do
  :: got == quota -> break
  :: else ->
    try_read(ok);
    if
    :: ok -> skip
#if WAIT
    :: else -> PARK(RD, try_read)           /* readSync / read */
#else
    :: else -> (SEQ[slot] != seq)           /* empty: wait for the slot's publication */
#endif
    fi;
    if
    :: ok -> got++
    :: else
    fi
  od
}

init {
  byte i = 0, k;
  d_step {
    do
    :: i < CAP -> SEQ[(INIT + i) & MASK] = (INIT + i) & PMASK; i++
    :: else -> break
    od
  };
  atomic {
    i = 0;
    do
    :: i < NP -> run Producer(i); i++
    :: else -> break
    od;
    run Consumer(NP, TOTAL - (NC - 1) * (TOTAL / NC));
    i = 1;
    do
    :: i < NC -> run Consumer(NP + i, TOTAL / NC); i++
    :: else -> break
    od
  };
  (_nr_pr == 1);
  /* every message once, and each producer's in the order it wrote them */
  assert(delivered == TOTAL);
  i = 0;
  do
  :: i < NP ->
    k = 1;
    do
    :: k < MSGS -> assert(deliveredAt[i * MSGS + k - 1] < deliveredAt[i * MSGS + k]); k++
    :: else -> break
    od;
    i++
  :: else -> break
  od
}
