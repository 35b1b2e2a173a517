/*
 * A MpmcQueue write that races a close() (docs/LAYOUT.md, MpmcQueue
 * "Producer" and "The closed flag"; packages/ringbuf/src/mpmc.ts tryWrite
 * and queue.ts's end of a read).
 *
 *   producer: if FLAGS closed: fail (the write's look before it starts)
 *             claim the next position (CAS on PRODUCER_POSITION)
 *             look at FLAGS again: closed -> publish the slot as a skip, fail
 *             else write the message, publish it (SEQ = p + 1): success
 *   consumer: take the slot of CONSUMER_POSITION once published (a skip is
 *             freed, no message); empty and open: wait for a change; empty
 *             and closed: read once more, then end unless a claim is pending
 *             (PRODUCER_POSITION != CONSUMER_POSITION), whose slot it waits for
 *   closer:   sets FLAGS, at any moment (another side's close())
 *
 * Abstractions: NP producers of one message each, CAP >= NP slots (the
 * queue is never full: fullness and wrap-around are mpmc.pml's), one
 * consumer; a slot's LENGTH, TYPE and payload are one word (DATA: the
 * producer's number + 1, or SKIP); every shared access is one atomic step,
 * sequentially consistent, as Atomics' seq_cst loads, stores and CAS are.
 * Waiting is a blocking guard on the words looked at (waiting.pml checks
 * the parking protocol).
 *
 * Property: every write that reported success was delivered, once (checked
 * when every process has ended); nothing but messages is delivered; no
 * invalid end state (the consumer always ends).
 *
 * Mutant (spin -DMUTANT=1; must be rejected):
 *  1  the producer does not look at FLAGS after its claim (it publishes the
 *     message whatever happened): a write claimed after the consumer ended
 *     reports success, and its message is never read
 */
#ifndef NP
#define NP 2
#endif
#ifndef MUTANT
#define MUTANT 0
#endif
#define CAP NP
#define SKIP 255

bit FLAGS;                 /* FLAG_CLOSED */
byte PRODUCER_POSITION;
byte CONSUMER_POSITION;
bit SEQ[CAP];              /* published (SEQ == p + 1); positions never wrap here */
byte DATA[CAP];
/* Ghosts */
bit succeeded[NP];         /* the producer's write reported success */
byte delivered[NP];        /* times the consumer delivered producer i's message */

proctype Producer(byte me) {
  byte pos;
  bit closed;
  if
  :: FLAGS -> goto done    /* the write's own look before it starts: fails, nothing claimed */
  :: else
  fi;
  atomic { pos = PRODUCER_POSITION; PRODUCER_POSITION++ };   /* claim (a CAS that wins: never full) */
#if MUTANT == 1
  closed = 0;              /* MUTANT: no look at FLAGS after the claim */
#else
  closed = FLAGS;          /* SYNC POINT with close()'s store of FLAGS */
#endif
  if
  :: closed -> DATA[pos] = SKIP
  :: else -> DATA[pos] = me + 1
  fi;
  SEQ[pos] = 1;            /* publishes the slot (a skip or the message) */
  if
  :: !closed -> succeeded[me] = 1
  :: else                  /* ERR_SHMRING_CLOSED */
  fi;
done:
  skip
}

proctype Consumer() {
  byte pos, v;
  bit flag;
  do
  :: pos = CONSUMER_POSITION;
    if
    :: pos < CAP && SEQ[pos] ->          /* published: take it */
      v = DATA[pos];
      CONSUMER_POSITION++;
      if
      :: v == SKIP -> skip              /* a producer that found the queue closed: no message */
      :: else -> assert(v >= 1 && v <= NP); delivered[v - 1]++
      fi
    :: else ->                          /* empty */
      flag = FLAGS;
      if
      :: !flag -> (FLAGS || (pos < CAP && SEQ[pos]))   /* wait: a publication or the close */
      :: else ->
        /* Closed: one more read (a publication between the empty look and FLAGS), then the end unless a
         * claim is pending, whose slot it waits for. */
        if
        :: pos < CAP && SEQ[pos] -> skip   /* the loop takes it */
        :: else ->
          if
          :: PRODUCER_POSITION != CONSUMER_POSITION -> (pos < CAP && SEQ[pos])
          :: else -> break                 /* ERR_SHMRING_CLOSED: the end */
          fi
        fi
      fi
    fi
  od
}

proctype Closer() {
  FLAGS = 1
}

init {
  byte i;
  atomic {
    i = 0;
    do
    :: i < NP -> run Producer(i); i++
    :: else -> break
    od;
    run Consumer();
    run Closer()
  };
  (_nr_pr == 1);           /* every other process has ended */
  i = 0;
  do
  :: i < NP ->
    assert(delivered[i] <= 1);                    /* never twice */
    assert(!succeeded[i] || delivered[i] == 1);   /* a write that succeeded was read */
    i++
  :: else -> break
  od
}
