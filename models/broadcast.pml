/*
 * broadcast.pml: the Broadcast publication, lap check and join protocol
 * (docs/LAYOUT.md, "Broadcast (KIND 5)"; packages/ringbuf/src/broadcast.ts).
 *
 * How to run: models/check.sh broadcast. By hand:
 *   spin -a -DNSUBS=2 models/broadcast.pml && cc -O2 -DSAFETY -o pan pan.c && ./pan -m300000
 *
 * The model: one publisher publishes MSGS records into a ring of CAP
 * record-sized cells (every record one cell: variable lengths and padding
 * records are left out; they change which bytes a record covers, not the
 * order of the counters). Positions are exact (the 64-bit counters), so
 * position m is the end of record m and record m lives in cell (m-1) % CAP.
 * A record is two words, both written with its number: a copy whose words
 * differ, or differ from the number the subscriber expects, is torn (or out
 * of order). NSUBS subscribers join at any moment (a late join is an
 * interleaving), read, and may leave (LEAVE), each step atomic, in program
 * order (sequential consistency: Atomics, and x86-64 TSO for the plain
 * accesses).
 *
 * Publisher, record m:  [lossless: if m - slowest > CAP (its cached bound),
 * rescan the slots (slowest = min(TAIL, live cursors)) until there is room]
 * INTENT = m; COUNT = m; write word 0; write word 1; LATEST = m - 1; TAIL = m.
 * Subscriber: t = TAIL; if t != cursor: copy the two words of the cell,
 * then load INTENT; INTENT - cursor > CAP means lapped: take a quiescent
 * snapshot (INTENT, TAIL, COUNT, LATEST, INTENT; equal intents, TAIL ==
 * INTENT) and resume at LATEST as record COUNT - 1, lost += what it skipped.
 * Joining: (lossless) provisional CURSOR = TAIL, then OWNER = 1, then the
 * snapshot's tail is the start (and the CURSOR). A lossless subscriber
 * stores its CURSOR after it has copied the record.
 *
 * Claims (asserts): a subscriber never hands out a torn record, and hands
 * them out in order (each one is the record after the previous one or
 * after a counted skip); at the end, received + lost = records published
 * since it joined; lossless: it is never lapped (lost stays 0).
 *
 * Mutants (-DMUTANT=n), each rejected:
 *   1  the publisher stores INTENT after writing the record's words: a
 *      subscriber's lap check passes over a copy being overwritten (torn).
 *   2  the subscriber loads INTENT before it copies: the publisher laps it
 *      during the copy (torn).
 *   3  lossless: the subscriber stores its CURSOR past a record before it
 *      copies it: the publisher, free to reuse the cell, overwrites the
 *      record under the copy (torn; run with LOSSLESS=1).
 */

#ifndef MUTANT
#define MUTANT 0
#endif
#ifndef NSUBS
#define NSUBS 2
#endif
#ifndef CAP
#define CAP 2
#endif
#ifndef MSGS
#define MSGS 4
#endif
#ifndef LOSSLESS
#define LOSSLESS 0
#endif
#ifndef LEAVE
#define LEAVE 0
#endif

byte w0[CAP];
byte w1[CAP];
byte intent = 0;
byte count = 0;
byte latest = 0;
byte tail = 0;
bool owner[NSUBS];
byte cursorOf[NSUBS];
bool done = false;

proctype publisher() {
  byte m = 1;
  byte slowest = 0;
  byte i, c;
  bool o;
  do
  :: m > MSGS -> break
  :: else ->
#if LOSSLESS
     /* The cached bound says full: rescan until there is room (a parked publisher, woken by each cursor store). */
     do
     :: m - slowest <= CAP -> break
     :: else ->
        slowest = tail;
        i = 0;
        do
        :: i < NSUBS ->
           o = owner[i];        /* OWNER, then CURSOR: each loaded once */
           c = cursorOf[i];
           if
           :: o && c < slowest -> slowest = c
           :: else -> skip
           fi;
           i++
        :: else -> break
        od
     od;
#endif
#if MUTANT != 1
     intent = m;
#endif
     count = m;
     w0[(m - 1) % CAP] = m;
     w1[(m - 1) % CAP] = m;
#if MUTANT == 1
     intent = m;
#endif
     latest = m - 1;
     tail = m;
     m++
  od;
  done = true
}

proctype subscriber(byte s) {
  byte cursor;
  byte number;       /* number of the record at the cursor: records published before it */
  byte first;        /* number at join */
  byte received = 0;
  byte lost = 0;
  byte t, i1, i2, k, l, a, b, seen;

  /* Join: a slot with a provisional cursor before OWNER, then the starting snapshot. */
#if LOSSLESS
  cursorOf[s] = tail;
  owner[s] = true;
#endif
join:
  i1 = intent; t = tail; k = count; i2 = intent;
  if
  :: i1 == i2 && t == i1 -> cursor = t; number = k; first = k
  :: else -> goto join
  fi;
#if LOSSLESS
  cursorOf[s] = cursor;
#endif

  do
  :: t = tail;
     if
     :: t == cursor ->
        if
        :: done && tail == cursor -> break
        :: else -> skip
        fi
     :: t != cursor ->
#if MUTANT == 2
        seen = intent;
#endif
#if LOSSLESS && MUTANT == 3
        cursorOf[s] = cursor + 1;
#endif
        a = w0[cursor % CAP];
        b = w1[cursor % CAP];
#if MUTANT != 2
        seen = intent;
#endif
        if
        :: seen - cursor > CAP ->
           /* lapped: the copy is dropped; resume at the newest record of a quiescent snapshot */
           assert(!LOSSLESS);
snap:
           i1 = intent; t = tail; k = count; l = latest; i2 = intent;
           if
           :: i1 == i2 && t == i1 ->
              assert(k - 1 >= number && l >= cursor);
              lost = lost + (k - 1 - number);
              number = k - 1;
              cursor = l
           :: else -> goto snap
           fi
        :: else ->
           /* hand it out: whole, and the record after the previous one */
           assert(a == b && a == number + 1);
           received++;
           number++;
           cursor++;
#if LOSSLESS
           cursorOf[s] = cursor
#endif
        fi
     fi
  :: s == NSUBS - 1 && LEAVE -> goto leave   /* the last subscriber may leave at any time */
  od;
  assert(received + lost == MSGS - first);
leave:
#if LOSSLESS
  owner[s] = false;
#endif
  skip
}

init {
  byte s = 0;
  atomic {
    run publisher();
    do
    :: s < NSUBS -> run subscriber(s); s++
    :: else -> break
    od
  }
}
