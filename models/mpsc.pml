/*
 * MpscRing (docs/LAYOUT.md "MpscRing (KIND 4)"; packages/ringbuf/src/mpsc.ts):
 * many producers claim space by a CAS on the tail and publish each record
 * through its own LENGTH word; one consumer polls LENGTH at its head, reads,
 * zeroes what it consumed and only then releases it (stores the head).
 *
 *   producer: t = load(TAIL); room from its cached head, reloading HEAD only
 *             when the cache says full; needed = size, or toEnd + size when
 *             the record would straddle the end; CAS(TAIL, t, t + needed);
 *             on a wrap: LEN[0] = -size (claimed), TYP[idx] = PAD,
 *             LEN[idx] = toEnd (padding committed), the record goes to 0;
 *             else LEN[idx] = -size; write TYP (the value) and the payload;
 *             LEN[idx] = +size (commit: a release store, or a CAS from
 *             -size; the two are one step: the assert below checks that
 *             nothing else wrote the header, a take-back included). A
 *             shorter commit (a 2-unit claim committed as 1 unit, SHORT)
 *             first makes the unit after the record a padding record
 *             (TYP = PAD, LEN = 1), then commits LEN[idx] = +1.
 *   consumer: l = load(LEN[head]); l <= 0: nothing yet (blocks until it
 *             changes); read TYP and payload; zero the record's units;
 *             store(HEAD, head + l). With TAKEBACK, a claim (l < 0) is
 *             also timed: its TYP when first seen is kept (stuck mark);
 *             at any later look (the timeout passed) the consumer reads
 *             TYP again and, if it is a mark, the one first seen, and its
 *             thread is gone, takes the record back (CAS of LEN from l to
 *             0). Every producer here lives, and the thread-id test is
 *             exact for marks (a live claimer's mark is alive), so no
 *             take-back may ever happen: one is an assertion failure.
 *             Marks are ~tid (MARK(p) here, outside the message values);
 *             a value that is no live thread's mark counts as gone.
 *
 * Abstractions (see models/README.md): one unit is 8 bytes; CAP units; a
 * record is 1 unit (header only, its value in TYP) or 2 (header and one
 * payload unit, the value in both TYP and PAY, so a torn read shows); the
 * size of producer p's message s alternates so the wrap needs padding;
 * positions wrap modulo PMOD (>= 2 CAP, for 2^32) starting INIT before the
 * wrap; negative LENGTHs are stored as NEG + size; every shared access is
 * one atomic step; a full producer (an empty consumer) blocks until HEAD
 * (the LENGTH it polls) changes: that the wake-up arrives is waiting.pml's
 * business. Dead claimers (the unblock) are not modelled.
 *
 * Ghosts: busy[u] (unit u belongs to a claim the consumer has not finished
 * reading). Properties: no claim covers a busy unit; the consumer reads
 * each message complete (TYP == PAY) and exactly once, in order per
 * producer; every side finishes (no invalid end state: nothing lost).
 *
 * Mutants (spin -DMUTANT=n; each must be rejected):
 *  1  the producer commits LENGTH before writing the value (TYP, PAY)
 *  2  the consumer stores HEAD before zeroing the record
 *  3  the producer claims with a load and a store of TAIL, not a CAS
 *  4  a shorter commit leaves the rest of its claim without a padding record
 *  5  (TAKEBACK) marks are thread ids as they are, > 0: any TYP > 0 but
 *     padding reads as a mark (the encoding before marks were negated), so
 *     a message value first seen between its claimer's TYP and LENGTH
 *     stores passes for a dead thread's id
 */

#ifndef CAP
#define CAP 4
#endif
#ifndef NP
#define NP 3
#endif
#ifndef MSGS
#define MSGS 1
#endif
#ifndef MUTANT
#define MUTANT 0
#endif
#ifndef SHORT
#define SHORT 0           /* 1: a producer may commit a 2-unit claim as 1 unit (commit with a length) */
#endif
#ifndef TAKEBACK
#define TAKEBACK 0        /* 1: the consumer applies the unblock rule to the claims it finds at its head */
#endif

#define MASK (CAP - 1)
#define PMOD (4 * CAP)
#define PMASK (PMOD - 1)
#define INIT (PMOD - 3)
#define TOTAL (NP * MSGS)
#define PAD 15            /* PADDING_TYPE */
#define MARK(p) (100 + (p))  /* producer p's claim mark in TYP while claimed (~tid: no message value) */
#if MUTANT == 5
#define ISMARK(x) ((x) > 0 && (x) != PAD)      /* marks as thread ids: a message value reads as one */
#else
#define ISMARK(x) ((x) >= 100)                 /* marks only: ~tid <= -2, apart from types and PADDING_TYPE */
#endif
#define GONE(x) ((x) < 100 || (x) >= 100 + NP)  /* no live producer's mark: the thread test says gone */
#define NEG 8             /* LEN >= NEG: claimed, size LEN - NEG (a negative LENGTH) */
#define SIZE(p, s) (1 + (((p) + (s)) % 2))
#define VALUE(p, s) ((p) * MSGS + (s) + 1)

/* Shared memory */
byte TAIL = INIT;
byte HEAD = INIT;
byte LEN[CAP];
byte TYP[CAP];
byte PAY[CAP];

/* Ghosts */
bit busy[CAP];
byte nextSeq[NP];
byte received = 0;

#define USED(t, h) (((t) - (h)) & PMASK)

proctype Producer(byte p) {
  byte s = 0, t, h, ch = INIT, idx, toEnd, size, needed, u, committed;
  do
  :: s == MSGS -> break
  :: else ->
    size = SIZE(p, s);
retry:
    t = TAIL;                                         /* load(TAIL) */
    idx = t & MASK;
    toEnd = CAP - idx;
    needed = (size <= toEnd -> size : toEnd + size);
    if
    :: CAP - USED(t, ch) < needed || USED(t, ch) > CAP ->
      h = HEAD;                                       /* load(HEAD): only when the cache says full */
      if
      :: USED(t, h) > CAP -> goto retry               /* our t is older than h */
      :: else -> ch = h
      fi;
      if
      :: CAP - USED(t, ch) < needed ->
        (HEAD != h);                                  /* full: park until the consumer releases */
        goto retry
      :: else -> skip
      fi
    :: else -> skip
    fi;
#if MUTANT == 3
    if
    :: TAIL == t -> skip                              /* a load ... */
    :: else -> goto retry
    fi;
    TAIL = (t + needed) & PMASK;                      /* ... and a store: no CAS */
#else
    atomic {                                          /* CAS(TAIL, t, t + needed) */
      if
      :: TAIL == t -> TAIL = (t + needed) & PMASK
      :: else -> goto retry
      fi
    }
#endif
    /* The claim owns [idx, idx + needed) modulo CAP: none of it may be unread. */
    u = 0;
    do
    :: u < needed -> assert(!busy[(idx + u) & MASK]); busy[(idx + u) & MASK] = 1; u++
    :: else -> break
    od;
    if
    :: size > toEnd ->
      TYP[0] = MARK(p);
      LEN[0] = NEG + size;                            /* claimed, at 0 */
      TYP[idx] = PAD;
      LEN[idx] = toEnd;                               /* commit the padding */
      idx = 0
    :: else ->
      TYP[idx] = MARK(p);
      LEN[idx] = NEG + size                           /* claimed */
    fi;
#if MUTANT == 1
    atomic { assert(LEN[idx] == NEG + size); LEN[idx] = size };  /* commit first ... */
#endif
    TYP[idx] = VALUE(p, s);
    if
    :: size == 2 -> PAY[idx + 1] = VALUE(p, s)
    :: else -> skip
    fi;
    committed = size;
#if SHORT
    if
    :: size == 2 ->                                   /* commit a 1-unit message: the rest becomes padding */
#if MUTANT != 4
      TYP[idx + 1] = PAD;
      LEN[idx + 1] = 1;
#endif
      committed = 1
    :: true -> skip
    fi;
#endif
#if MUTANT != 1
    atomic { assert(LEN[idx] == NEG + size); LEN[idx] = committed };  /* commit: store (or CAS from -size) of +committed */
#endif
    s++
  od
}

proctype Consumer() {
  byte head = INIT, idx, l, ty, pv, p, s, u;
#if TAKEBACK
  byte stuckAt = PMOD, stuckLen, stuckMark, mk;   /* the claim being timed (PMOD: none) */
#endif
  do
  :: received == TOTAL -> break
  :: else ->
    idx = head & MASK;
    l = LEN[idx];                                     /* load(LEN): observe the commit */
    if
#if TAKEBACK
    :: l >= NEG ->
      if
      :: stuckAt != head || stuckLen != l ->
        stuckAt = head; stuckLen = l; stuckMark = TYP[idx]  /* first seen stuck: TYP after LEN */
      :: else -> skip
      fi;
      if
      :: (LEN[idx] != l)                              /* wait for the commit ... */
      :: true ->                                      /* ... or the timeout passed: the unblock rule */
        mk = TYP[idx];
        if
        :: ISMARK(mk) && mk == stuckMark && GONE(mk) ->
          atomic {                                    /* CAS(LEN, l, 0): take the record back */
            if
            :: LEN[idx] == l -> assert(false)         /* a live claimer's record taken back: lost */
            :: else -> skip
            fi
          }
        :: else -> skip                               /* a claimer at work, or alive */
        fi
      fi
    :: l == 0 -> (LEN[idx] != l)                      /* nothing claimed yet: wait for it */
#else
    :: l == 0 || l >= NEG -> (LEN[idx] != l)         /* nothing committed yet: wait for it */
#endif
    :: else ->
      assert(idx + l <= CAP && l <= USED(TAIL, head));  /* the bounds checks never fire */
      ty = TYP[idx];
      if
      :: ty == PAD -> skip
      :: else ->
        assert(ty >= 1 && ty <= TOTAL);
        if
        :: l == 2 -> pv = PAY[idx + 1]; assert(pv == ty)  /* no torn read */
        :: else -> skip
        fi;
        p = (ty - 1) / MSGS;
        s = (ty - 1) % MSGS;
        assert(s == nextSeq[p]);                      /* exactly once, in order per producer */
        assert(SIZE(p, s) == l || (SHORT && SIZE(p, s) == 2 && l == 1));  /* its size, or a shorter commit's */
        nextSeq[p]++;
        received++
      fi;
      /* done reading: the units are the ring's again */
      u = 0;
      do
      :: u < l -> busy[idx + u] = 0; u++
      :: else -> break
      od;
#if MUTANT == 2
      HEAD = (head + l) & PMASK;                      /* release before zeroing */
#endif
      u = 0;
      do
      :: u < l -> LEN[idx + u] = 0; TYP[idx + u] = 0; PAY[idx + u] = 0; u++
      :: else -> break
      od;
      head = (head + l) & PMASK;
#if MUTANT != 2
      HEAD = head                                     /* store(HEAD): release the zeroed space */
#endif
    fi
  od;
  /* Nothing is left: every claim was a message or padding, and all were read. */
  assert(TOTAL == received)
}

init {
  byte i;
  atomic {
    i = 0;
    do
    :: i < NP -> run Producer(i); i++
    :: else -> break
    od;
    run Consumer()
  }
}
