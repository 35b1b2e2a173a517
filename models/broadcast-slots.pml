/*
 * broadcast-slots.pml: claiming a Broadcast subscriber slot where the
 * region has no file to lock ('sab', 'sysv'), against a lossless
 * publisher's sweep of dead subscribers' slots (docs/LAYOUT.md,
 * "Subscriber slots" and "Lossless"; packages/ringbuf/src/broadcast.ts,
 * BroadcastSubscriber.join and BroadcastPublisher.#freeDeadSlots).
 *
 * How to run: models/check.sh broadcast-slots. By hand:
 *   spin -a models/broadcast-slots.pml && cc -O2 -DSAFETY -o pan pan.c && ./pan -m300000
 *
 * The model: one slot (OWNER, PID; START goes with PID and is left out),
 * NCLAIM claimants with ids 1..NCLAIM and tokens 10 + id, and a publisher
 * that sweeps the slot SWEEPS times. A claimant tries once to claim the
 * slot: it loads OWNER; taken, it judges that owner as a sweep does and
 * goes away if it lives; then CAS(OWNER, seen, -id) ("registering": from
 * 0, or from the dead owner), PID = id, CAS(OWNER, -id, token); holding
 * it, it may leave (CAS(OWNER, token, 0), PID stays). It
 * may die after any step, for good (alive[id] = false). PID 0 names
 * nobody, which a sweep takes for dead (a SharedArrayBuffer's rule: no
 * such thread). A sweep loads OWNER; 0: nothing; negative: dead if that
 * id is dead; a token: loads PID, dead if PID is dead; dead: CAS(OWNER,
 * seen, 0). Each step is atomic, in program order (Atomics are
 * sequentially consistent).
 *
 * Claim (assert): a sweep frees a slot, and a claimant takes a taken one,
 * only from a dead claimant: the tenure its CAS ends (the claimant whose
 * -id or token it replaced) is dead. A claimant that stays alive keeps its
 * slot until it leaves.
 *
 * Assumed, not modelled: claimants' tokens differ. broadcast.ts counts
 * them up from a random start in each thread: two subscribers, of two
 * threads or processes, draw the same token with a chance of about one in
 * 2^31, and a sweep's CAS that frees one's slot could then hit the
 * other's (ABA). The claim order checked here is not about that.
 *
 * Mutants (-DMUTANT=n), each rejected:
 *   1  the claim CASes OWNER from 0 to the token and stores PID after it
 *      (the code before this model): a sweep between the two sees the
 *      token with no PID, or a PID a previous owner left (it left, then
 *      died), judges the live claimant dead and frees its slot.
 *   2  the sweep judges a negative OWNER by PID too, not by its id: the
 *      same wrong judgment, from the other side.
 *   3  a claimant judges a taken slot's negative OWNER by PID too: the
 *      same wrong judgment, by a newcomer that then takes the live
 *      claimant's slot.
 */

#ifndef MUTANT
#define MUTANT 0
#endif
#ifndef NCLAIM
#define NCLAIM 2
#endif
#ifndef SWEEPS
#define SWEEPS 3
#endif

#define TOKEN(id) (10 + (id))
#define ID_OF(o) ((o) < 0 -> -(o) : (o) - 10)

short owner = 0;
byte slotpid = 0; /* PID */
bool alive[NCLAIM + 1];

/* A claimant may die after any step: its later steps never happen. */
#define MAY_DIE if :: skip :: alive[id] = false; goto out fi

proctype Claimant(byte id) {
  short o;
  byte p;
  /* Claim: one try, at any moment (a late try may come after another claimant left). */
  o = owner;
  if
  :: o == 0 -> skip
#if MUTANT == 3
  :: o != 0 -> p = slotpid; if :: p == 0 || !alive[p] -> skip :: else -> goto out fi
#else
  :: o < 0 -> if :: !alive[-o] -> skip :: else -> goto out fi
  :: o > 0 -> p = slotpid; if :: p == 0 || !alive[p] -> skip :: else -> goto out fi
#endif
  fi;
  atomic {
    if
#if MUTANT == 1
    :: owner == 0 && o == 0 -> owner = TOKEN(id)
#else
    :: owner == o -> assert(o == 0 || !alive[ID_OF(o)]); owner = -id
#endif
    :: else -> goto out
    fi
  }
  MAY_DIE;
  slotpid = id; /* START, then PID */
  MAY_DIE;
#if MUTANT != 1
  /* The token, after PID: fails only if the slot was freed under us. */
  atomic {
    if
    :: owner == -id -> owner = TOKEN(id)
    :: else -> goto out
    fi
  }
  MAY_DIE;
#endif
  /* Holding the slot: may leave (PID stays, for the next claimant to find). */
  if
  :: atomic { owner == TOKEN(id) -> owner = 0 }
  :: skip
  fi;
  MAY_DIE;
out:
  skip
}

proctype Sweeper() {
  short o;
  byte p;
  bool dead;
  byte n = 0;
  do
  :: n < SWEEPS ->
    o = owner;
    dead = false;
    if
    :: o == 0 -> skip
#if MUTANT == 2
    :: o != 0 -> p = slotpid; dead = (p == 0 || !alive[p])
#else
    :: o < 0 -> dead = !alive[-o]
    :: o > 0 -> p = slotpid; dead = (p == 0 || !alive[p])
#endif
    fi;
    if
    :: dead ->
      atomic {
        if
        :: owner == o -> owner = 0; assert(!alive[ID_OF(o)])
        :: else -> skip
        fi
      }
    :: else -> skip
    fi;
    n++
  :: else -> break
  od
}

init {
  byte i = 1;
  do
  :: i <= NCLAIM -> alive[i] = true; i++
  :: else -> break
  od;
  atomic {
    i = 1;
    do
    :: i <= NCLAIM -> run Claimant(i); i++
    :: else -> break
    od;
    run Sweeper()
  }
}
