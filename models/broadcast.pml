/*
 * broadcast.pml: the Broadcast publication, lap check and join protocol,
 * and the repair of a record a dead publisher left half-written
 * (docs/LAYOUT.md, "Broadcast (KIND 5)"; packages/ringbuf/src/broadcast.ts).
 *
 * How to run: models/check.sh broadcast. By hand:
 *   spin -a -DNSUBS=2 models/broadcast.pml && cc -O2 -DSAFETY -o pan pan.c && ./pan -m300000
 *   spin -a -DNSUBS=2 -DDIE=1 models/broadcast.pml && ...   (a publisher dies; a successor takes over)
 *
 * The model: one publisher role publishes into a ring of CAP record-sized
 * cells (every record one cell: variable lengths and padding records are
 * left out; they change which bytes a record covers, not the order of the
 * counters). Positions are exact (the 64-bit counters) and counted in
 * cells. The publisher keeps P, its position (the tail), and K, its count
 * (the records before P); they part once a repair has jumped. Record
 * K + 1 lives in cell P % CAP and is two words, both written with its
 * number K + 1: a copy whose words differ, or differ from the number the
 * subscriber expects, is torn (or out of order). NSUBS subscribers join
 * at any moment (a late join is an interleaving), read, and may leave
 * (LEAVE). Every access to a shared word is one step, in program order
 * (sequential consistency: Atomics, and x86-64 TSO for the plain
 * accesses); an atomic block below holds at most one such access (ghost
 * variables aside), the rest of it local work.
 *
 * Publisher, one record: [lossless: while P + 1 - slowest > CAP (its
 * cached bound), rescan the slots, slowest = min(TAIL, live cursors),
 * parking between scans]
 *   1 INTENT = P + 1; 2 COUNT = K + 1; 3 word 0 = K + 1, word 1 = K + 1;
 *   4 LATEST = P; 5 TAIL = P + 1; then P = P + 1, K = K + 1.
 * MSGS records are begun in all, by every holder of the role together (a
 * record its publisher died in counts), so positions stay below 16.
 *
 * Subscriber: if TAIL != cursor: copy the two words of the cell, then load
 * INTENT; INTENT - cursor > CAP means lapped: drop the copy, take a
 * quiescent snapshot (i1 = INTENT, t = TAIL, k = COUNT, l = LATEST, then
 * INTENT again; valid if both INTENTs are i1 and t == i1) and resettle as
 * #settle does, with back = t - l:
 *   k - 1 >= number, 0 < back <= CAP and i1 - back >= cursor:
 *     lost += k - 1 - number; cursor = i1 - back; number = k - 1   (the newest record)
 *   otherwise: lost += k - number; cursor = i1; number = k         (the tail)
 * Else hand the copy out: cursor + 1, number + 1. Joining: (lossless) a
 * provisional CURSOR (a load of TAIL, then the store), then OWNER; then
 * cursor = i1 and number = k of a quiescent snapshot. While no snapshot is
 * valid, a joiner with a slot stores TAIL as its provisional CURSOR again
 * after each try (#settle). A lossless subscriber stores its CURSOR after
 * it has copied a record, and after each resettle.
 *
 * Waiting blocks, as parking does, instead of spinning, so a side that
 * would wait for ever ends the run in an invalid end state: without a
 * valid snapshot a subscriber waits until INTENT == TAIL (a joiner with a
 * slot also until TAIL moves); an idle one until TAIL moves or the
 * publisher is done; a full lossless publisher until a CURSOR or OWNER
 * store comes after its scan began (the ghost `kick`, set in the step of
 * each such store while the publisher scans or is parked, stands for the
 * write wait block's wake: it may wake the publisher before the real
 * unpark would, never after).
 *
 * -DDIE=1: the first publisher may die (stop for good) right after any of
 * its stores of a record (after TAIL: the counters stay quiescent), once.
 * A successor takes the role; nobody else writes the counters then, so it
 * reads them in one step:
 *   - quiescent (INTENT == TAIL): it resumes, P = INTENT, K = COUNT;
 *   - otherwise the repair (docs/LAYOUT.md, "A record left half-written:
 *     the repair"): T = TAIL, c = COUNT, asserted valid as the code checks
 *     them (0 < INTENT - T <= 2 CAP, c <= T + 1, which is c x 8 <= T
 *     + 8 in cells) and asserted to be the dead publisher's K or K + 1;
 *     lossless, it first waits until every slot with OWNER set has CURSOR
 *     == T (slot by slot, each an atomic look at OWNER and CURSOR: a scan
 *     passes a slot at such a moment); then J = (T / CAP + 2) x CAP:
 *     INTENT = J, COUNT = c, LATEST = J, TAIL = J, and P = J, K = c;
 * then (lossless) it scans the slots before its first record, and
 * publishes the records left. The ghost `rcounted` counts the dead records
 * a repair kept in COUNT (c = K + 1).
 * -DDIE=2: two deaths; the second may also come between the repair's own
 * stores (after INTENT = J, after COUNT = c, after LATEST = J): the next
 * publisher completes the interrupted jump (see "Found" below).
 *
 * Claims (asserts): a subscriber never hands out a torn record, and hands
 * them out in order (each one is the record after the previous one or
 * after a counted skip); #settle's corruption check (INTENT behind the
 * cursor, COUNT behind the number) never fires; at the end, received +
 * lost = final COUNT - COUNT at the join; lossless: a subscriber is lapped
 * only by a repair's jump, and loses only the dead records a repair kept
 * in COUNT (lost <= rcounted: 0, or 1 with one death); a repair finds
 * valid counters; nobody waits for ever (no invalid end state).
 *
 * Mutants (-DMUTANT=n), each rejected:
 *   1  the publisher stores INTENT after writing the record's words: a
 *      subscriber's lap check passes over a copy being overwritten (torn).
 *   2  the subscriber loads INTENT before it copies: the publisher laps it
 *      during the copy (torn).
 *   3  lossless: the subscriber stores its CURSOR past a record before it
 *      copies it: the publisher, free to reuse the cell, overwrites the
 *      record under the copy (a lap where there can be none).
 *   4  (DIE) the lossy repair does not jump: INTENT = TAIL = T, P = T. A
 *      subscriber at T is handed record c + 1 as the record after K (R's
 *      number skipped, uncounted), or a slow one's lap check passes over a
 *      cell R rewrote.
 *   5  (DIE) the jump goes to the next lap only, J = (T / CAP + 1) x CAP:
 *      J - T <= CAP, so a subscriber at T is not lapped and reads the cell
 *      at T (left by R half-written, or holding an old record) as a new
 *      record. The "+ 2" is needed in the model too, not only for R's
 *      padding: it is what puts J more than a ring past a cursor at T.
 *   6  (DIE, lossless) the repair jumps without waiting for the cursors: a
 *      subscriber behind T is lapped, losing records that were published
 *      (lost > rcounted).
 *   8  (DIE=2) the repair's first bound, INTENT at most CAP + CAP/2 past
 *      the tail: a jump interrupted after its INTENT store is refused
 *      ("Found" below).
 *   7  (DIE, lossless) a joiner that finds no valid snapshot keeps the
 *      provisional CURSOR it stored first (the repair as first specified):
 *      a deadlock (invalid end state). The joiner loaded TAIL = 0 and
 *      stored it; its snapshots failed while record 1 was in flight, then
 *      while record 2 was (TAIL = 1); the publisher died after record 2's
 *      INTENT store. The successor waits for the joiner's CURSOR to be 1,
 *      and the joiner, without a snapshot until the jump, never stores
 *      another. broadcast.ts's #settle now stores TAIL as a joiner's
 *      CURSOR after each failed try, which the model does.
 *
 * Found, and fixed: an interrupted jump was refused. With -DDIE=2 spin
 * found a successor that dies after its INTENT = J store (before TAIL =
 * J): the next publisher read INTENT - TAIL = J - T, which is 2 CAP - (T
 * mod CAP), more than the CAP + CAP/2 the repair first allowed when T mod
 * CAP < CAP/2 (in bytes too), took the counters for impossible
 * (ERR_SHMRING_CORRUPT in the code), and the Broadcast could not be taken
 * over again. The repair now allows INTENT up to 2 CAP past the tail, and
 * the same T gives the same J, so the next publisher completes the jump.
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
#ifndef DIE
#define DIE 0
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
bool scanning = false;  /* ghost: the publisher is scanning the slots or parked after a scan */
bool kick = false;      /* ghost: a CURSOR or OWNER store since the scan began (the write wait block's wake) */
byte deaths = 0;        /* ghost: publishers that died (at most DIE) */
bool jumped = false;    /* ghost: a repair jumped */
byte rcounted = 0;      /* ghost: dead records a repair kept in COUNT (c = K + 1): lossless, all a subscriber may lose */

/* The role's holder may die right after the store it follows (in the same step), DIE times in all: a successor takes the role. */
#if DIE
#define MAYBE_DIE if :: deaths < DIE -> deaths++; goto takeover :: true -> skip fi
#else
#define MAYBE_DIE skip
#endif

/* A lossless subscriber's store of its CURSOR, with the unpark of the write wait block after it. */
#define STORE_CURSOR(v) atomic { cursorOf[s] = v; kick = scanning || kick }

/* Lossless: slowest = min(TAIL, the CURSOR of every slot whose OWNER is set), each word loaded once. */
inline scan() {
  atomic { scanning = true; kick = false; slowest = tail; i = 0 }
  do
  :: i < NSUBS ->
     o = owner[i];        /* OWNER, then CURSOR: each loaded once */
     atomic {
       c = cursorOf[i];
       if
       :: o && c < slowest -> slowest = c
       :: else -> skip
       fi;
       i++; o = false; c = 0
     }
  :: else -> i = 0; break
  od
}

proctype publisher() {
  byte P = 0;        /* position: the tail */
  byte K = 0;        /* count: the records before P */
  byte begun = 0;    /* records begun, by every holder of the role (the bound) */
  byte slowest = 0;  /* lossless: the cached bound of the last scan */
  byte i, c, T;
  bool o, repair;

publish:
  do
  :: begun >= MSGS -> break
  :: else ->
#if LOSSLESS
     /* The cached bound says full: rescan until there is room, parked between scans (woken by cursor stores). */
     do
     :: P + 1 - slowest <= CAP -> atomic { scanning = false; kick = false }; break
     :: else ->
        scan();
        if
        :: P + 1 - slowest <= CAP -> atomic { scanning = false; kick = false }; break
        :: else -> kick     /* parked until a subscriber stores a CURSOR (or leaves) */
        fi
     od;
#endif
#if MUTANT != 1
     atomic { begun++; intent = P + 1; MAYBE_DIE }
     atomic { count = K + 1; MAYBE_DIE }
#else
     atomic { begun++; count = K + 1; MAYBE_DIE }
#endif
     atomic { w0[P % CAP] = K + 1; MAYBE_DIE }
     atomic { w1[P % CAP] = K + 1; MAYBE_DIE }
#if MUTANT == 1
     atomic { intent = P + 1; MAYBE_DIE }
#endif
     atomic { latest = P; MAYBE_DIE }
     atomic { tail = P + 1; P++; K++; MAYBE_DIE }   /* a death here leaves the counters quiescent */
  od;
  done = true;
  goto end;

takeover:
  /* A successor holds the role. It knows only shared memory (K stays, as the ghost of the dead one's count).
   * Nobody else writes the counters now, so their loads are one step: the raw words, no retry. */
  atomic {
    slowest = 0;
    if
    :: intent == tail ->
       /* A quiescent snapshot: resume after the last record published. */
       P = intent; K = count; repair = false
    :: else ->
       /* The repair: the exact tail and the count, checked as the code checks them (INTENT at most two rings
        * past the tail: a record reaches less, an interrupted jump J = (T / CAP + 2) x CAP up to that). */
       T = tail;
       c = count;
#if MUTANT == 8
       assert(intent - T > 0 && intent - T <= CAP + CAP / 2);   /* the first bound: refuses an interrupted jump */
#else
       assert(intent - T > 0 && intent - T <= 2 * CAP);
#endif
       assert(c <= T + 1);                    /* c x 8 <= T + 8, in cells */
       assert(c == K || c == K + 1);          /* the records published, or R counted too */
       if :: c == K + 1 -> rcounted++ :: else fi;
#if MUTANT == 4 && !LOSSLESS
       P = T;                                 /* no jump */
#elif MUTANT == 5
       P = (T / CAP + 1) * CAP;               /* the next lap only */
#else
       P = (T / CAP + 2) * CAP;               /* J: the lap after the one R can reach */
#endif
       K = c; c = 0; repair = true
    fi
  }
  if
  :: repair ->
#if LOSSLESS && MUTANT != 6
     /* Wait until every live subscriber has read up to T (each slot: OWNER unset, or CURSOR == T). */
     i = 0;
     do
     :: i < NSUBS -> (!owner[i] || cursorOf[i] == T); i++
     :: else -> i = 0; break
     od;
#endif
     /* The jump: INTENT, COUNT, LATEST, TAIL (every word of each counter: the dead publisher may have torn them). */
     atomic { jumped = true; intent = P; MAYBE_DIE }
     atomic { count = K; MAYBE_DIE }
     atomic { latest = P; MAYBE_DIE }           /* LATEST == TAIL: no newest record to resume at */
     atomic { tail = P; T = 0; repair = false; MAYBE_DIE }
  :: else -> skip
  fi;
#if LOSSLESS
  scan();   /* before its first record */
#endif
  goto publish;
end:
  skip
}

proctype subscriber(byte s) {
  byte cursor;
  byte number;       /* number of the record at the cursor: records published before it */
  byte first;        /* number at join */
  byte received = 0;
  byte lost = 0;
  byte t, i1, k, l, a, b, back;
  bool valid;

  /* Join: a slot with a provisional cursor (a load of TAIL) before OWNER, then the starting snapshot. */
#if LOSSLESS
  t = tail;
  STORE_CURSOR(t);
  atomic { owner[s] = true; t = 0 }
#endif
join:
  i1 = intent; t = tail; k = count;
  atomic {
    valid = (intent == i1 && t == i1);       /* the second INTENT load */
    if
    :: valid -> cursor = t; number = k; first = k
    :: else
    fi;
    t = 0; i1 = 0; k = 0
  }
  if
  :: valid -> valid = false
  :: else ->
     /* No valid snapshot (a record in flight, or a dead publisher's): retried once the counters are quiescent. */
#if LOSSLESS && MUTANT != 7
     /* Still joining: the provisional CURSOR follows TAIL (a repair waits for every CURSOR to reach the tail). */
     t = tail;
     STORE_CURSOR(t);
     atomic { (intent == tail || tail != t); t = 0 }   /* parked: woken by a TAIL store, or quiescent already */
#else
     (intent == tail);
#endif
     goto join
  fi;
#if LOSSLESS
  STORE_CURSOR(cursor);
#endif

  do
  :: atomic { valid = (tail != cursor) }
     if
     :: !valid ->
        /* nothing to read: parked until TAIL moves (or the end) */
        if
        :: tail != cursor || done ->
           if
           :: done && tail == cursor -> break
           :: else -> skip
           fi
        :: s == NSUBS - 1 && LEAVE -> goto leave
        fi
     :: else ->
#if MUTANT == 2
        atomic { valid = (intent - cursor <= CAP) }
#endif
#if LOSSLESS && MUTANT == 3
        STORE_CURSOR(cursor + 1);
#endif
        a = w0[cursor % CAP];
        b = w1[cursor % CAP];
#if MUTANT != 2
        atomic { valid = (intent - cursor <= CAP) }   /* the lap check, after the copy */
#endif
        if
        :: !valid ->
           /* lapped: the copy is dropped; resettle from a quiescent snapshot (#settle) */
           atomic { assert(!LOSSLESS || jumped); a = 0; b = 0 }
snap:
           i1 = intent; t = tail; k = count; l = latest;
           atomic {
             valid = (intent == i1 && t == i1);   /* the second INTENT load */
             if
             :: valid ->
                assert(i1 >= cursor && k >= number);   /* #settle's corruption check never fires */
                back = t - l;
                if
                :: k - 1 >= number && back > 0 && back <= CAP && i1 - back >= cursor ->
                   lost = lost + (k - 1 - number);     /* resume at the newest record */
                   cursor = i1 - back;
                   number = k - 1
                :: else ->
                   lost = lost + (k - number);         /* resume at the tail */
                   cursor = i1;
                   number = k
                fi;
                assert(!LOSSLESS || lost <= rcounted)
             :: else
             fi;
             t = 0; i1 = 0; k = 0; l = 0; back = 0
           }
           if
           :: valid -> valid = false
           :: else -> (intent == tail); goto snap
           fi;
#if LOSSLESS
           STORE_CURSOR(cursor);
#endif
           skip
        :: else ->
           /* hand it out: whole, and the record after the previous one */
           atomic {
             assert(a == b && a == number + 1);
             received++;
             number++;
             cursor++;
             a = 0; b = 0; valid = false
           }
#if LOSSLESS
           STORE_CURSOR(cursor);
#endif
           skip
        fi
     fi
  :: s == NSUBS - 1 && LEAVE -> goto leave   /* the last subscriber may leave at any time */
  od;
  assert(received + lost == count - first);
  assert(!LOSSLESS || lost <= rcounted);
leave:
#if LOSSLESS
  atomic { owner[s] = false; kick = scanning || kick }
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
