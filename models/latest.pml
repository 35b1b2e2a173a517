/*
 * latest.pml: the LatestValue publication and waiting protocol
 * (docs/LAYOUT.md, "LatestValue"; packages/ringbuf/src/latest.ts).
 *
 * How to run: models/check.sh latest (the checks models/check.sh lists:
 * one reader with a writer death, two readers without; each mutant). By
 * hand, from the repository root, the full model (two readers, a death):
 *
 *   spin -a models/latest.pml && cc -O2 -DCOLLAPSE -o pan pan.c && ./pan -m1000000
 *       -> "errors: 0": every claim below holds in every interleaving
 *          (about 32 M states, 75 s on one core of the development VM)
 *   spin -a -DMUTANT=1 models/latest.pml && cc -O2 -o pan pan.c && ./pan -m1000000
 *       -> "errors: 1": the mutant is caught (a second or two; also MUTANT=2, 3)
 *   spin -t -p models/latest.pml          (after a failing run: print the trail)
 *
 * Mutants (-DMUTANT=n; the default 0 is the protocol as specified):
 *   1  the reader keeps a whole copy without checking that the slot holds
 *      the version PUBLISHED named: a writer that laps it makes version
 *      p + 2 whole before it publishes it, and the reader's next read
 *      (still PUBLISHED = p + 1) goes back a version. (The bug the
 *      cross-process stress test found; caught here by the monotonicity
 *      assertion.)
 *   2  the writer wakes parked readers before it stores PUBLISHED: a reader
 *      that re-checks between the two parks again and is never woken (a
 *      lost wake-up: an invalid end state).
 *   3  a writer that takes over from one that died mid-publish (SEQ odd)
 *      begins with SEQ + 1, which is even: a slot being written then looks
 *      whole, and a reader keeps or retries on what it should not (caught
 *      as a retry that finds PUBLISHED unmoved, or a torn value).
 *
 * The model: one writer role, held by a writer that may die in the middle
 * of a publish (after step 1, between the value's words, before step 3),
 * up to MAXCRASH times, each time succeeded by a new writer that starts
 * from PUBLISHED (as a new role holder does); NREADERS readers that each
 * read() READS times and then wait for a change (changed()) if a newer
 * version is still to come. Every access is one atomic step, in program
 * order: sequential consistency, what JavaScript's Atomics give and what
 * the TypeScript side gets for its plain accesses on x86-64 (TSO).
 * A value is DW words; the writer of version v writes v into each, so a
 * whole copy of version v is DW words equal to v. The futex is modelled
 * by its contract: futex_wait(SIGNAL, seen) returns once SIGNAL != seen
 * (the writer bumps SIGNAL before futex_wake; spurious wake-ups only cost a
 * re-check and are left out).
 *
 * Claims: a reader never returns a torn value, nor a version older than one
 * it returned before; a parked reader is always woken by a later publish
 * (no invalid end state); the published slot is never the one being
 * written (a retry always finds PUBLISHED moved).
 */

#ifndef MUTANT
#define MUTANT 0
#endif
#define MAXV 3        /* versions published in all (1..MAXV): enough for a writer to lap a reader */
#ifndef NREADERS
#define NREADERS 2
#endif
#define READS 2       /* read() calls per reader before it waits */
#define DW 2          /* words of a value (the copies below are written out for 2) */
#ifndef MAXCRASH
#define MAXCRASH 1
#endif

byte published = 0;   /* PUBLISHED: the newest complete version; it lives in slot published % 2 */
byte seq[2];          /* each slot's SEQ: odd while the writer rewrites it */
byte ver[2];          /* each slot's VERSION */
byte data[4];         /* slot s's words: data[s * DW + i] */
byte waiters = 0;     /* READ_WAITERS */
byte signal = 0;      /* READ_SIGNAL */
byte crashes = 0;

/* The writer may die here (its successor starts over from shared memory). */
#define MAYBE_DIE  if :: crashes < MAXCRASH -> crashes++; goto takeRole :: true -> skip fi

active proctype Writer() {
  byte v, s, q, b;
takeRole:
  /* A writer takes the role: its version is the published slot's, which must agree with PUBLISHED. */
  v = ver[published % 2];
  assert(v == published);
  do
  :: v < MAXV ->
     v++;
     s = v % 2;
     q = seq[s];
#if MUTANT == 3
     b = q + 1;
#else
     if :: q % 2 == 1 -> b = q + 2 :: else -> b = q + 1 fi;
#endif
     seq[s] = b;                                   /* 1. begin: odd */
     MAYBE_DIE;
     data[s * DW] = v;                             /* 2. the value, one word at a time */
     MAYBE_DIE;
     data[s * DW + 1] = v;
     MAYBE_DIE;
     ver[s] = v;                                   /*    then its version */
     MAYBE_DIE;
     seq[s] = b + 1;                               /* 3. end: even, the slot is whole */
     d_step { q = 0; b = 0 }
#if MUTANT == 2
     if :: waiters > 0 -> signal++ :: else -> skip fi;
     published = v;
#else
     published = v;                                /* 4. publish */
     if :: waiters > 0 -> signal++ :: else -> skip fi   /* 5. unpark: bump SIGNAL (then futex_wake) */
#endif
  :: else -> break
  od
}

proctype Reader() {
  byte p, s, q1, q2, lo, last = 0, reads = 0, seen;
  byte copy[DW];
  do
  :: reads < READS ->
     reads++;
     p = published;                                /* SYNC POINT with step 4 */
retry:
     s = p % 2;
     q1 = seq[s];                                  /* SYNC POINT with steps 1 and 3 */
     if
     :: q1 % 2 == 0 ->
        lo = ver[s];
        copy[0] = data[s * DW];                    /* the copy, one word at a time */
        copy[1] = data[s * DW + 1];
        q2 = seq[s];                               /* unchanged: no write began during the copy */
#if MUTANT == 1
        if :: q2 == q1 -> goto got :: else -> skip fi
#else
        if :: q2 == q1 && lo == p -> goto got :: else -> skip fi
#endif
     :: else -> skip
     fi;
     q2 = published;
     assert(q2 != p);                              /* lapped: PUBLISHED has moved on */
     p = q2;
     goto retry;
got: skip;
     d_step {
       assert(copy[0] == lo && copy[1] == lo);     /* never torn */
       assert(lo >= last);                         /* never back a version */
       last = lo; copy[0] = 0; copy[1] = 0; q1 = 0; q2 = 0; s = 0; p = 0
     }
  :: else -> break
  od;
  /* changed(last): park until PUBLISHED differs, if a newer version is still to come. */
  if
  :: last < MAXV ->
     do
     :: seen = signal;
        waiters++;                                 /* announce */
        if
        :: published != last -> waiters--; break   /* the re-check after announcing */
        :: else -> (signal != seen); waiters--     /* futex_wait(SIGNAL, seen), then withdraw */
        fi
     od
  :: else -> skip
  fi
}

init {
  byte n = 0;
  atomic {
    do
    :: n < NREADERS -> run Reader(); n++
    :: else -> break
    od
  }
}
