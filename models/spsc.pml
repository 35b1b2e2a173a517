/*
 * SpscRing publication, layout version 2 (docs/LAYOUT.md "Records (version 2)"
 * and "SpscRing"; packages/ringbuf/src/spsc.ts).
 *
 * The record header publishes the record: the consumer polls the LENGTH word
 * at its own position (0 = nothing published there yet). The producer writes
 * payload and TYPE, stores 0 into the LENGTH word just past the record (the
 * "zero-ahead"), then stores the record's LENGTH; it always leaves one unit
 * (8 bytes) free, so the zeroed word is never an unread header. A record that
 * wraps is published completely at index 0 first; the padding's LENGTH then
 * publishes both. A corking producer defers the first header of a batch (the
 * rest of the batch is published as usual behind it); a flush stores it.
 * The consumer writes nothing in the data area; it frees space with its
 * position (once per record, or once per drained batch).
 *
 * Abstractions (models/README.md says more):
 *  - One "unit" is 8 bytes (records are 8-aligned). CAP units of data area;
 *    a record is 1 unit (a zero-length message: its header) or 2 (header
 *    and one payload unit); the largest record is CAP/2 units, as
 *    spscMaxMessage() allows. LEN is kept in units: the record's units, or
 *    for a padding the units up to the end; 0 = unpublished.
 *  - Positions wrap modulo PMOD (>= 2 CAP), standing in for 2^32.
 *  - Every shared access is one atomic step (JS Atomics are sequentially
 *    consistent; the plain record writes and reads are ordered by the
 *    LENGTH store / load that publish them).
 *  - A full producer or an empty consumer blocks until the other side moves:
 *    that the wake-up arrives is models/waiting.pml's business. A blocked
 *    consumer that is never published to is an invalid end state (so a
 *    deferred header that is never stored is caught).
 *  - PRODUCER_POSITION is left out: in version 2 the consumer never reads
 *    it (the hand-over to a new producer is tested in spsc.property.test.ts).
 *
 * Ghost state (not in the ring, only for the assertions):
 *  wip[u]    the producer is writing the record (or padding) that covers u
 *  unread[u] u holds a complete record the consumer has not finished with
 * Properties (assertions; and a valid end state: both sides finish):
 *  - the consumer only reads a header that is published, and only units
 *    that are complete (no stale or torn read),
 *  - the producer only writes units the consumer has finished with (the
 *    zero-ahead word included),
 *  - messages arrive exactly once, in order, with their length and type,
 *  - no correct run trips one of the consumer's corruption checks.
 *
 * Mutants (spin -DMUTANT=n; each must be rejected):
 *  1  the zero-ahead is stored after the record's LENGTH (the consumer can
 *     read a stale header from the previous lap past the record)
 *  2  the record's LENGTH is stored before its payload and TYPE
 *  3  no 8-byte reserve: a completely full ring, whose zero-ahead wipes the
 *     header of a record the consumer has not read
 *  4  a wrapping record: the padding's LENGTH is stored before the record's
 *     at index 0
 *  5  the consumer stores its position before copying the payload
 */

#ifndef CAP
#define CAP 4
#endif
#ifndef N
#define N 8
#endif
#ifndef MUTANT
#define MUTANT 0
#endif
#define MASK (CAP - 1)
#define PMOD (2 * CAP)
#define PMASK (PMOD - 1)
#define MAXREC (CAP / 2)
#define PAD 255           /* PADDING_TYPE */
#define NONE 255          /* no deferred header / no padding */

/* Shared memory */
byte CONSUMER_POSITION = 0;
byte LEN[CAP];            /* creation zeroes LENGTH at index 0; init leaves junk in the others */
byte TYP[CAP];            /* a message's type is its id, 1..N; a fresh ring reads 0 */
byte PAY[CAP];

/* Ghosts */
bit wip[CAP];
bit unread[CAP];
byte sentSize[N + 1];
byte delivered = 0;

/* (a - b) mod PMOD: the used units, compared by difference as the code does. */
#define DIFF(a, b) (((a) - (b)) & PMASK)

/* The producer starts to write unit u. */
#define WRITE_UNIT(u) assert(!unread[u]); wip[u] = 1
/* The consumer reads unit u. */
#define READ_UNIT(u) assert(unread[u] && !wip[u])
/* Units [a, b) (b may be 0 for the end) are complete: the consumer may read them once their header is published. */
#define COMPLETE(a, b) u = a; do :: u != (b) -> wip[u] = 0; unread[u] = 1; u = (u + 1) & MASK :: else -> break od

proctype Producer() {
  byte P = 0;            /* #producerPosition */
  byte Cc = 0;           /* #cachedConsumerPosition */
  byte id = 1;
  byte size, index, toEnd, needed, used, at, pad, e, u;
  byte deferred = NONE;  /* #deferredI32: the corked batch's first header */
  byte deferredLen = 0;

  do
  :: id > N -> break
  :: else ->
    if
    :: size = 1
    :: size = 2
    fi;
    sentSize[id] = size;
retry:
    /* #reserve: writes nothing in the ring */
    index = P & MASK;
    toEnd = CAP - index;
    needed = (size <= toEnd -> size : toEnd + size);
#if MUTANT != 3
    needed = needed + 1;                      /* RECORD_RESERVE: the zeroed word after the record */
#endif
    if
    :: CAP - DIFF(P, Cc) < needed ->
      Cc = CONSUMER_POSITION;                 /* Atomics.load(CONSUMER_POSITION) */
      used = DIFF(P, Cc);
      assert(used <= CAP);                    /* else corrupt */
      if
      :: CAP - used < needed ->
        if
        :: deferred != NONE ->                /* corked and full: flush */
          LEN[deferred] = deferredLen;
          deferred = NONE
        :: else
        fi;
        /* full: writeSync parks until the consumer releases */
        (CONSUMER_POSITION != Cc);
        goto retry
      :: else
      fi
    :: else
    fi;
    if
    :: size > toEnd -> at = 0; pad = index
    :: else -> at = index; pad = NONE
    fi;
    e = (at + size) & MASK;
    d_step {
      WRITE_UNIT(at);
      if :: size == 2 -> WRITE_UNIT(at + 1) :: else fi;
      if
      :: pad != NONE -> u = pad; do :: u < CAP -> WRITE_UNIT(u); u++ :: else -> break od
      :: else
      fi
    };
#if MUTANT == 2
    LEN[at] = size;                           /* MUTANT: published before the payload and TYPE */
#endif
    if
    :: size == 2 -> PAY[at + 1] = id          /* data.set(bytes) / the claim's payload */
    :: else
    fi;
    TYP[at] = id;
#if MUTANT != 1
    d_step { assert(!unread[e]); LEN[e] = 0 } /* zero-ahead: the consumer will stop at e */
#endif
    if
    :: pad == NONE ->
      if
      :: deferred == NONE ->                  /* corked: this header opens the batch; not stored yet */
        d_step { COMPLETE(at, e); deferred = at; deferredLen = size }
      :: else ->                              /* Atomics.store(LENGTH): publishes */
        d_step { COMPLETE(at, e); LEN[at] = size }
      fi
    :: else ->
#if MUTANT == 4
      d_step { COMPLETE(pad, 0); TYP[pad] = PAD; LEN[pad] = toEnd };   /* MUTANT: the padding first */
      d_step { COMPLETE(at, e); LEN[at] = size };
#else
      d_step { COMPLETE(at, e); LEN[at] = size };   /* the record at 0, complete, before the padding */
      TYP[pad] = PAD;
      if
      :: deferred == NONE ->
        d_step { COMPLETE(pad, 0); deferred = pad; deferredLen = toEnd }
      :: else ->
        d_step { COMPLETE(pad, 0); LEN[pad] = toEnd }    /* publishes both */
      fi;
#endif
    fi;
    P = (P + needed
#if MUTANT != 3
      - 1
#endif
      ) & PMASK;
    if
    :: deferred != NONE ->                    /* uncork: the deferred store publishes the batch */
      d_step { LEN[deferred] = deferredLen; deferred = NONE }
    :: true                                   /* stay corked (or not corked: nothing deferred) */
    fi;
#if MUTANT == 1
    LEN[e] = 0;                               /* MUTANT: zero-ahead after the publication */
#endif
    id++
  od;
  if
  :: deferred != NONE -> LEN[deferred] = deferredLen   /* uncork / close */
  :: else
  fi
}

proctype Consumer() {
  byte C = 0;            /* #consumerPosition */
  byte R = 0;            /* #releasedPosition: the last CONSUMER_POSITION store */
  byte expect = 1;
  byte index, rlen, typ, pay, skipped, size, start, u;

  do
  :: expect > N -> break
  :: else ->
    /* #nextRecord */
    index = C & MASK;
    start = index;
    skipped = 0;
    /* Atomics.load(LENGTH) at our position: 0 is empty (readSync parks until it is not) */
    atomic { LEN[index] != 0 -> rlen = LEN[index]; READ_UNIT(index) };
    d_step { READ_UNIT(index); typ = TYP[index] };
    if
    :: typ == PAD ->
      skipped = CAP - index;
      assert(rlen == skipped);                /* else corrupt */
      index = 0;
      d_step { rlen = LEN[0]; assert(rlen != 0); READ_UNIT(0) };   /* published before the padding */
      d_step { READ_UNIT(0); typ = TYP[0] }
    :: else
    fi;
    size = rlen;
    /* else corrupt: bounds, and no more than the producer can have published since our last release */
    assert(size >= 1 && size <= MAXREC && index + size <= CAP && typ != PAD);
    assert(DIFF(C + skipped + size, R) <= CAP - 1);
    /* exactly once, in order, with its length and type */
    assert(typ == expect && size == sentSize[expect]);
    C = (C + skipped + size) & PMASK;
#if MUTANT == 5
    CONSUMER_POSITION = C; R = C;             /* MUTANT: released before the copy */
#endif
    if
    :: size == 2 -> d_step { READ_UNIT(index + 1); pay = PAY[index + 1] }; assert(pay == expect)
    :: else
    fi;
    /* done with the record (and the padding before it) */
    d_step {
      u = start;
      do
      :: u != ((index + size) & MASK) -> unread[u] = 0; u = (u + 1) & MASK
      :: else -> break
      od;
      delivered++
    };
    expect++;
#if MUTANT != 5
    if
    :: CONSUMER_POSITION = C; R = C           /* #release: frees the space */
    :: atomic { LEN[C & MASK] != 0 && expect <= N -> skip }   /* drain: the next record is there; released after the batch */
    fi
#else
    skip
#endif
  od;
  CONSUMER_POSITION = C
}

init {
  byte j = 1;
  atomic {
    /* Junk in the data area before creation (a region used before): create() zeroes LENGTH at index 0 only. */
    do
    :: j < CAP -> LEN[j] = 1 + (j & 1); TYP[j] = j; j++
    :: else -> break
    od;
    run Producer();
    run Consumer()
  };
  (_nr_pr == 1);
  assert(delivered == N)
}
