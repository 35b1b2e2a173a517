/*
 * SpscRing publication (docs/LAYOUT.md "SpscRing"; packages/ringbuf/src/spsc.ts).
 *
 * One producer, one consumer, variable-length records with padding at the
 * wrap, positions that wrap around, each side's cached copy of the other's
 * position, a corking producer (several records published by one store) and
 * a draining consumer (several records released by one store).
 *
 * Abstractions (models/README.md says more):
 *  - One "unit" is 8 bytes (records are 8-aligned). CAP units of data area;
 *    a record is 1 unit (a zero-length message: its header) or 2 (header
 *    and one payload unit); the largest record is CAP/2 units, as
 *    spscMaxMessage() allows. LENGTH is kept in units of payload.
 *  - Positions wrap modulo PMOD (>= 2 CAP), standing in for 2^32.
 *  - Every shared access is one atomic step (JS Atomics are sequentially
 *    consistent; the plain record writes and reads are ordered by the
 *    position store / load that publish them).
 *  - A full producer or an empty consumer blocks until the other side's
 *    position moves: that the wake-up arrives is models/waiting.pml's
 *    business.
 *
 * Ghost state (not in the ring, only for the assertions):
 *  wip[u]    the producer is writing the record (or padding) that covers u
 *  unread[u] u holds a complete record the consumer has not finished with
 * Properties (assertions; and a valid end state: both sides finish):
 *  - the consumer only reads units that are complete (no torn read),
 *  - the producer only writes units the consumer has finished with,
 *  - messages arrive exactly once, in order, with their length and type,
 *  - no correct run trips one of the consumer's corruption checks.
 *
 * Mutants (spin -DMUTANT=n; each must be rejected):
 *  1  the producer stores its position before the record's TYPE (publish early)
 *  2  the consumer stores its position before copying the payload (release early)
 *  3  the consumer reads the record header before loading the producer position
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

/* Shared memory */
byte PRODUCER_POSITION = 0;
byte CONSUMER_POSITION = 0;
byte LEN[CAP];
byte TYP[CAP];            /* a message's type is its id, 1..N; a fresh ring reads 0 */
byte PAY[CAP];

/* Ghosts */
bit wip[CAP];
bit unread[CAP];
byte sentSize[N + 1];
byte delivered = 0;

/* (a - b) mod PMOD: the used bytes, compared by difference as the code does. */
#define DIFF(a, b) (((a) - (b)) & PMASK)

/* The producer starts to write unit u. */
#define WRITE_UNIT(u) assert(!unread[u]); wip[u] = 1
/* The consumer reads unit u. */
#define READ_UNIT(u) assert(unread[u] && !wip[u])

proctype Producer() {
  byte P = 0;            /* #producerPosition */
  byte Cc = 0;           /* #cachedConsumerPosition */
  byte id = 1;
  byte size, index, toEnd, needed, used, start, u;
  bit unpublished = 0;   /* corked: records written, position not stored */

  do
  :: id > N -> break
  :: else ->
    if
    :: size = 1
    :: size = 2
    fi;
    sentSize[id] = size;
retry:
    /* #reserve */
    index = P & MASK;
    toEnd = CAP - index;
    needed = (size <= toEnd -> size : toEnd + size);
    if
    :: CAP - DIFF(P, Cc) < needed ->
      Cc = CONSUMER_POSITION;                 /* Atomics.load(CONSUMER_POSITION) */
      used = DIFF(P, Cc);
      assert(used <= CAP);                    /* else corrupt */
      if
      :: CAP - used < needed ->
        if
        :: unpublished ->                     /* corked and full: flush */
          unpublished = 0;
          PRODUCER_POSITION = P
        :: else
        fi;
        /* full: writeSync parks until the consumer releases */
        (CONSUMER_POSITION != Cc);
        goto retry
      :: else
      fi
    :: else
    fi;
    start = index;
    if
    :: size > toEnd ->                        /* padding record over the bytes before the wrap */
      d_step { u = index; do :: u < CAP -> WRITE_UNIT(u); u++ :: else -> break od; LEN[index] = toEnd - 1 };
      TYP[index] = PAD;
      index = 0
    :: else
    fi;
    d_step { WRITE_UNIT(index); if :: size == 2 -> WRITE_UNIT(index + 1) :: else fi; LEN[index] = size - 1 };
    if
    :: size == 2 -> PAY[index + 1] = id       /* data.set(bytes) */
    :: else
    fi;
    P = (P + needed) & PMASK;                 /* #claimEnd */
#if MUTANT == 1
    PRODUCER_POSITION = P;                    /* MUTANT: published before the record is complete */
#endif
    /* #publish: the TYPE completes the record */
    d_step {
      TYP[index] = id;
      u = start;                              /* the padding (if any) and the record: [start, end) */
      do
      :: u != ((index + size) & MASK) -> wip[u] = 0; unread[u] = 1; u = (u + 1) & MASK
      :: else -> break
      od
    };
#if MUTANT != 1
    if
    :: PRODUCER_POSITION = P;                 /* #store: publishes every record up to P */
       unpublished = 0
    :: unpublished = 1                        /* corked: published by a later store or the final uncork */
    fi;
#endif
    id++
  od;
  if
  :: unpublished -> PRODUCER_POSITION = P     /* uncork / close */
  :: else
  fi
}

proctype Consumer() {
  byte C = 0;            /* #consumerPosition */
  byte Pc = 0;           /* #cachedProducerPosition */
  byte expect = 1;
  byte index, rlen, typ, pay, skipped, size, avail, start, u;

  do
  :: expect > N -> break
  :: else ->
#if MUTANT == 3
    index = C & MASK;
    READ_UNIT(index); rlen = LEN[index];       /* MUTANT: the header is read before the position */
    typ = TYP[index];
#endif
    /* #available */
    if
    :: C == Pc ->
      /* empty by the cache: load the producer position; readSync parks until it moves */
      atomic { PRODUCER_POSITION != C -> Pc = PRODUCER_POSITION }
    :: C != Pc -> skip                        /* tryRead: the cache says there is more */
    :: C != Pc -> Pc = PRODUCER_POSITION      /* drain: refreshes at the start of a batch */
    fi;
    avail = DIFF(Pc, C);
    assert(avail <= CAP && avail > 0);
    /* #nextRecord */
    index = C & MASK;
    start = index;
    skipped = 0;
#if MUTANT != 3
    d_step { READ_UNIT(index); rlen = LEN[index] };
    d_step { READ_UNIT(index); typ = TYP[index] };
#endif
    if
    :: typ == PAD ->
      skipped = CAP - index;
      assert(rlen == skipped - 1 && avail >= skipped + 1);   /* else corrupt */
      index = 0;
      d_step { READ_UNIT(index); rlen = LEN[index] };
      d_step { READ_UNIT(index); typ = TYP[index] }
    :: else
    fi;
    size = rlen + 1;
    assert(rlen <= MAXREC - 1 && skipped + size <= avail && index + size <= CAP && typ != PAD);  /* else corrupt */
    /* exactly once, in order, with its length and type */
    assert(typ == expect && size == sentSize[expect]);
    C = (C + skipped + size) & PMASK;
#if MUTANT == 2
    CONSUMER_POSITION = C;                    /* MUTANT: released before the copy */
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
#if MUTANT != 2
    if
    :: CONSUMER_POSITION = C                  /* #release: frees the space */
    :: C != Pc && expect <= N -> skip         /* drain: released once, after the batch */
    fi
#else
    skip
#endif
  od;
  CONSUMER_POSITION = C
}

init {
  atomic {
    run Producer();
    run Consumer()
  };
  (_nr_pr == 1);
  assert(delivered == N)
}
