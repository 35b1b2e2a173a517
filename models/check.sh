#!/usr/bin/env bash
# Model-checks the ring protocols with spin: every model must verify with
# 0 errors, and every mutant (one ordering swapped) must be rejected with
# at least 1. See models/README.md.
#
#   models/check.sh                  every model and mutant
#   models/check.sh spsc waiting     only those models (spsc, waiting, mpmc, latest, broadcast, broadcast-repair, broadcast-slots, mpsc, light-commit;
#                                    broadcast-repair: broadcast.pml's publisher deaths, a group of their own)
#
# Needs spin (Debian's `spin` package) and a C compiler. Prints one line per
# check; exits 1 if any check did not come out as expected, 2 if spin or the
# compiler is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

command -v spin >/dev/null || { echo "check.sh: spin is not installed (apt-get install spin)" >&2; exit 2; }
CC="${CC:-cc}"
command -v "$CC" >/dev/null || { echo "check.sh: no C compiler ($CC) to build spin's verifier" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/shmring-models.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Compile flags for a safety run (assertions and invalid end states; an ltl
# block in the model is left out) and for an LTL run (acceptance cycles). Memory stays bounded: a 2^22-slot hash
# table, state-vector compression, and a search depth that every model here
# stays well below (a search cut short by it counts as a failure).
SAFETY_CC="-DSAFETY -DNOCLAIM -DCOLLAPSE -DVECTORSZ=2048"
LTL_CC="-DCOLLAPSE -DVECTORSZ=2048"
SAFETY_RUN="-m300000 -w22"
LTL_RUN="-m300000 -w22 -a"

failures=0
selected=("$@")

wanted() {
  [ ${#selected[@]} -eq 0 ] && return 0
  local s
  for s in "${selected[@]}"; do [ "$s" = "$1" ] && return 0; done
  return 1
}

# Whether pan's first error ($1) is a property the model states failing: one
# of its assertions ("assertion violated (expr)"), a deadlock ("invalid end
# state") or, in an LTL run, an acceptance cycle or a never claim run to its
# end ("end state in claim reached"). pan's own checks, such as "assertion
# violated - invalid array index", mean a broken model, not a rejected mutant.
violation() {
  [[ "$1" =~ ^(assertion\ violated\ +[^-\ ]|invalid\ end\ state|acceptance\ cycle|end\ state\ in\ claim\ reached) ]]
}

# check MODEL NAME EXPECT "SPIN_DEFINES" "CC_FLAGS" "RUN_FLAGS"
#   EXPECT: pass (0 errors), reject (a mutant: > 0 errors, the first of
#   them a property violation: see violation), or known-bug (the code as it
#   is today, with a bug models/README.md describes: > 0 errors expected
#   until it is fixed; then it must become a pass).
check() {
  # MODEL is a model file's name, or FILE@GROUP: the checks of one file split into groups run on their own.
  local model="${1%@*}" group="${1#*@}" name="$2" expect="$3" defines="$4" ccflags="$5" runflags="$6"
  wanted "$group" || return 0
  local dir="$work/$name"
  mkdir -p "$dir"
  cp "$here/$model.pml" "$dir/"
  local started=$SECONDS
  # shellcheck disable=SC2086
  if ! (cd "$dir" && spin $defines -a "$model.pml" >spin.out 2>&1); then
    echo "FAIL    $name: spin -a failed:"; sed 's/^/        /' "$dir/spin.out"; failures=$((failures + 1)); return
  fi
  # A full search is worth an optimised verifier; a mutant's error comes within seconds anyway.
  local opt=-O0
  [ "$expect" = pass ] && opt=-O2
  # shellcheck disable=SC2086
  if ! (cd "$dir" && $CC $opt -w $ccflags -o pan pan.c >cc.out 2>&1); then
    echo "FAIL    $name: compiling pan failed:"; sed 's/^/        /' "$dir/cc.out"; failures=$((failures + 1)); return
  fi
  # shellcheck disable=SC2086
  (cd "$dir" && ./pan $runflags >pan.out 2>&1) || true
  local out="$dir/pan.out"
  local errors states first
  errors="$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$out" | head -1)"
  states="$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$out" | head -1)"
  first="$(grep -m1 -E '^pan:1:' "$out" | sed 's/^pan:1: //' || true)"
  local took=$((SECONDS - started))
  if [ -z "$errors" ]; then
    echo "FAIL    $name: pan gave no verdict:"; tail -20 "$out" | sed 's/^/        /'; failures=$((failures + 1)); return
  fi
  if grep -qE 'max search depth too small|out of memory|VECTORSZ is too small' "$out"; then
    echo "FAIL    $name: the search was cut short ($(grep -m1 -E 'max search depth too small|out of memory|VECTORSZ' "$out"))"
    failures=$((failures + 1)); return
  fi
  case "$expect" in
    pass)
      if [ "$errors" = 0 ]; then
        echo "ok      $name: 0 errors, $states states, ${took}s"
      else
        echo "FAIL    $name: $errors error(s): $first"
        echo "        replay: cd $here && spin $defines -a $model.pml && $CC $ccflags -o pan pan.c && ./pan $runflags && spin $defines -t -p $model.pml"
        failures=$((failures + 1))
      fi ;;
    reject)
      if [ "$errors" = 0 ]; then
        echo "FAIL    $name: the mutant passed ($states states): this check cannot fail"
        failures=$((failures + 1))
      elif ! violation "$first"; then
        echo "FAIL    $name: the mutant was rejected for something other than a property: $first"
        failures=$((failures + 1))
      else
        echo "ok      $name: rejected: $first (${took}s)"
      fi ;;
    known-bug)
      if [ "$errors" != 0 ] && ! violation "$first"; then
        echo "FAIL    $name: an error other than a property's: $first"
        failures=$((failures + 1))
      elif [ "$errors" != 0 ]; then
        echo "ok      $name: known bug still present: $first (${took}s; see models/README.md)"
      else
        echo "FAIL    $name: the known bug is gone ($states states): make this check a pass in models/check.sh"
        failures=$((failures + 1))
      fi ;;
  esac
}

# ---- SpscRing publication (spsc.pml) ----
# Layout version 2: header publication, zero-ahead, the 8-byte reserve, the wrap; 4 units (every wrap
# has a 1-unit padding) and 8 units (longer paddings, more records in flight).
check spsc spsc                    pass   "-DN=8"            "$SAFETY_CC" "$SAFETY_RUN"
check spsc spsc-cap8               pass   "-DCAP=8 -DN=6"    "$SAFETY_CC" "$SAFETY_RUN"
for m in 1 2 3 4 5; do
  check spsc "spsc-mutant-$m"      reject "-DN=8 -DMUTANT=$m" "$SAFETY_CC" "$SAFETY_RUN"
done

# ---- The waiting protocol (waiting.pml) ----
for close in 0 1; do
  c=""; [ $close = 1 ] && c="-close"
  check waiting "waiting$c"          pass "-DCLOSE=$close" "$SAFETY_CC" "$SAFETY_RUN"
  check waiting "waiting$c-ltl"      pass "-DCLOSE=$close" "$LTL_CC"    "$LTL_RUN -N no_lost_wakeup"
  for m in 1 2 3; do
    check waiting "waiting$c-mutant-$m"     reject "-DCLOSE=$close -DMUTANT=$m" "$SAFETY_CC" "$SAFETY_RUN"
    check waiting "waiting$c-mutant-$m-ltl" reject "-DCLOSE=$close -DMUTANT=$m" "$LTL_CC"    "$LTL_RUN -N no_lost_wakeup"
  done
done
check waiting waiting-close-mutant-4 reject "-DCLOSE=1 -DMUTANT=4" "$SAFETY_CC" "$SAFETY_RUN"
# An observer (a select or waitReadable that takes nothing) sharing the READ block: it passes its wake-up on.
check waiting waiting-observer              pass   "-DCLOSE=1 -DOBSERVER=1"            "$SAFETY_CC" "$SAFETY_RUN"
check waiting waiting-observer-ltl          pass   "-DCLOSE=1 -DOBSERVER=1"            "$LTL_CC"    "$LTL_RUN -N no_lost_wakeup"
check waiting waiting-observer-mutant-5     reject "-DCLOSE=1 -DOBSERVER=1 -DMUTANT=5" "$SAFETY_CC" "$SAFETY_RUN"
check waiting waiting-observer-mutant-5-ltl reject "-DCLOSE=1 -DOBSERVER=1 -DMUTANT=5" "$LTL_CC"    "$LTL_RUN -N no_lost_wakeup"

# ---- MpmcQueue (mpmc.pml) ----
# Exactly once with three producers; per-producer order with two producers of two messages each.
check mpmc mpmc-3p2c               pass   "-DNP=3 -DNC=2 -DMSGS=1" "$SAFETY_CC" "$SAFETY_RUN"
check mpmc mpmc-2p2c-fifo          pass   "-DNP=2 -DNC=2 -DMSGS=2" "$SAFETY_CC" "$SAFETY_RUN"
for m in 1 2 3; do
  check mpmc "mpmc-3p2c-mutant-$m"      reject "-DNP=3 -DNC=2 -DMSGS=1 -DMUTANT=$m" "$SAFETY_CC" "$SAFETY_RUN"
  check mpmc "mpmc-2p2c-fifo-mutant-$m" reject "-DNP=2 -DNC=2 -DMSGS=2 -DMUTANT=$m" "$SAFETY_CC" "$SAFETY_RUN"
done
# Parked sides (the waiting protocol with several sleepers per block).
check mpmc mpmc-wait-1p2c          pass      "-DWAIT=1 -DWAKE_ALL=0 -DNP=1 -DNC=2 -DMSGS=2" "$SAFETY_CC" "$SAFETY_RUN"
check mpmc mpmc-wait-2p2c-wake-one reject    "-DWAIT=1 -DWAKE_ALL=0 -DNP=2 -DNC=2 -DMSGS=1" "$SAFETY_CC" "$SAFETY_RUN"
check mpmc mpmc-wait-2p2c-wake-all pass      "-DWAIT=1 -DWAKE_ALL=3 -DNP=2 -DNC=2 -DMSGS=1" "$SAFETY_CC" "$SAFETY_RUN"
check mpmc mpmc-wait-2p2c-wake-all-mutant-1 reject "-DWAIT=1 -DWAKE_ALL=3 -DNP=2 -DNC=2 -DMSGS=1 -DMUTANT=1" "$SAFETY_CC" "$SAFETY_RUN"

# A write that races a close() (mpmc-close.pml): it gives its slot up as a skip, or its success is read.
check mpmc-close mpmc-close-2p          pass   "-DNP=2"            "$SAFETY_CC" "$SAFETY_RUN"
check mpmc-close mpmc-close-3p          pass   "-DNP=3"            "$SAFETY_CC" "$SAFETY_RUN"
check mpmc-close mpmc-close-3p-mutant-1 reject "-DNP=3 -DMUTANT=1" "$SAFETY_CC" "$SAFETY_RUN"

# ---- LatestValue (latest.pml) ----
# One reader with a writer that dies mid-publish (and its successor); two readers (one wake for all) without deaths.
# (Two readers with a death: ~32 M states, ~100 s, 1.6 GB: by hand, see the model's header.)
check latest latest-1r-crash       pass   "-DNREADERS=1 -DMAXCRASH=1" "$SAFETY_CC" "$SAFETY_RUN"
check latest latest-2r             pass   "-DNREADERS=2 -DMAXCRASH=0" "$SAFETY_CC" "$SAFETY_RUN"
for m in 1 2 3; do
  check latest "latest-1r-crash-mutant-$m" reject "-DNREADERS=1 -DMAXCRASH=1 -DMUTANT=$m" "$SAFETY_CC" "$SAFETY_RUN"
done
check latest latest-2r-mutant-2    reject "-DNREADERS=2 -DMAXCRASH=0 -DMUTANT=2" "$SAFETY_CC" "$SAFETY_RUN"

# ---- Broadcast (broadcast.pml) ----
# Lossy: two subscribers joining at any moment, a ring of 2 records, 4 published (laps happen).
# Lossless: the same, the last subscriber may leave at any moment.
check broadcast broadcast-lossy             pass   "-DNSUBS=2"                      "$SAFETY_CC" "$SAFETY_RUN"
check broadcast broadcast-lossy-mutant-1    reject "-DNSUBS=2 -DMUTANT=1"           "$SAFETY_CC" "$SAFETY_RUN"
check broadcast broadcast-lossy-mutant-2    reject "-DNSUBS=2 -DMUTANT=2"           "$SAFETY_CC" "$SAFETY_RUN"
check broadcast broadcast-lossless-leave    pass   "-DNSUBS=2 -DLOSSLESS=1 -DLEAVE=1" "$SAFETY_CC" "$SAFETY_RUN"
check broadcast broadcast-lossless-mutant-3 reject "-DNSUBS=2 -DLOSSLESS=1 -DMUTANT=3" "$SAFETY_CC" "$SAFETY_RUN"
# A publisher death (-DDIE=1): the first publisher may die after any store of a record; its successor
# resumes from a quiescent snapshot or repairs the counters (the jump). Lossy, and lossless with a leave.
check broadcast@broadcast-repair broadcast-die-lossy              pass   "-DNSUBS=2 -DDIE=1"                                 "$SAFETY_CC" "$SAFETY_RUN"
check broadcast@broadcast-repair broadcast-die-lossy-mutant-4     reject "-DNSUBS=2 -DDIE=1 -DMUTANT=4"                      "$SAFETY_CC" "$SAFETY_RUN"
check broadcast@broadcast-repair broadcast-die-lossy-mutant-5     reject "-DNSUBS=2 -DDIE=1 -DMUTANT=5"                      "$SAFETY_CC" "$SAFETY_RUN"
check broadcast@broadcast-repair broadcast-die-lossless-leave     pass   "-DNSUBS=2 -DDIE=1 -DLOSSLESS=1 -DLEAVE=1"           "$SAFETY_CC" "$SAFETY_RUN"
check broadcast@broadcast-repair broadcast-die-lossless-mutant-6  reject "-DNSUBS=2 -DDIE=1 -DLOSSLESS=1 -DLEAVE=1 -DMUTANT=6" "$SAFETY_CC" "$SAFETY_RUN"
check broadcast@broadcast-repair broadcast-die-lossless-mutant-7  reject "-DNSUBS=2 -DDIE=1 -DLOSSLESS=1 -DLEAVE=1 -DMUTANT=7" "$SAFETY_CC" "$SAFETY_RUN"
# Two deaths, the second possibly inside the repair's own stores: the next publisher completes the jump.
check broadcast@broadcast-repair broadcast-die2-lossy             pass   "-DNSUBS=2 -DDIE=2 -DMSGS=3"                        "$SAFETY_CC" "$SAFETY_RUN"
check broadcast@broadcast-repair broadcast-die2-lossless          pass   "-DNSUBS=2 -DDIE=2 -DMSGS=3 -DLOSSLESS=1"            "$SAFETY_CC" "$SAFETY_RUN"
# The repair's first bound, CAP + CAP/2 past the tail, refused a jump interrupted after its INTENT store.
check broadcast@broadcast-repair broadcast-die2-lossy-mutant-8    reject "-DNSUBS=2 -DDIE=2 -DMSGS=3 -DMUTANT=8"             "$SAFETY_CC" "$SAFETY_RUN"

# ---- Broadcast slots without a file (broadcast-slots.pml) ----
# Two claimants (claim, from a dead owner too; register, maybe leave, maybe die at any step) against a publisher's three sweeps.
check broadcast-slots broadcast-slots          pass   ""            "$SAFETY_CC" "$SAFETY_RUN"
check broadcast-slots broadcast-slots-3c       pass   "-DNCLAIM=3"  "$SAFETY_CC" "$SAFETY_RUN"
for m in 1 2 3; do
  check broadcast-slots "broadcast-slots-mutant-$m" reject "-DMUTANT=$m" "$SAFETY_CC" "$SAFETY_RUN"
done

# ---- MpscRing (mpsc.pml) ----
# Exactly once and no torn read with three producers; per-producer order with two producers of three messages each.
check mpsc mpsc-3p                 pass   "-DNP=3 -DMSGS=1" "$SAFETY_CC" "$SAFETY_RUN"
check mpsc mpsc-2p-fifo            pass   "-DNP=2 -DMSGS=3" "$SAFETY_CC" "$SAFETY_RUN"
check mpsc mpsc-2p-cap8            pass   "-DNP=2 -DMSGS=2 -DCAP=8" "$SAFETY_CC" "$SAFETY_RUN"
# Commits with a length (a 2-unit claim committed as 1 unit, the rest padding), and the padding left out.
check mpsc mpsc-3p-short           pass   "-DNP=3 -DMSGS=1 -DSHORT=1" "$SAFETY_CC" "$SAFETY_RUN"
check mpsc mpsc-2p-fifo-short      pass   "-DNP=2 -DMSGS=3 -DSHORT=1" "$SAFETY_CC" "$SAFETY_RUN"
check mpsc mpsc-3p-short-mutant-4  reject "-DNP=3 -DMSGS=1 -DSHORT=1 -DMUTANT=4" "$SAFETY_CC" "$SAFETY_RUN"
# The unblock rule against live claimers: no take-back of a live claim, however the consumer's looks fall.
check mpsc mpsc-2p-takeback          pass   "-DNP=2 -DMSGS=2 -DTAKEBACK=1" "$SAFETY_CC" "$SAFETY_RUN"
check mpsc mpsc-2p-takeback-mutant-5 reject "-DNP=2 -DMSGS=2 -DTAKEBACK=1 -DMUTANT=5" "$SAFETY_CC" "$SAFETY_RUN"
for m in 1 2 3; do
  check mpsc "mpsc-3p-mutant-$m"      reject "-DNP=3 -DMSGS=1 -DMUTANT=$m" "$SAFETY_CC" "$SAFETY_RUN"
  check mpsc "mpsc-2p-fifo-mutant-$m" reject "-DNP=2 -DMSGS=3 -DMUTANT=$m" "$SAFETY_CC" "$SAFETY_RUN"
done

# ---- MpscRing commits without a fence (light-commit.pml) ----
# Light producers (store buffers flushed by the consumer's membarrier), and a fenced one beside them.
check light-commit light-commit-2p         pass   "-DNP=2 -DMSGS=2"            "$SAFETY_CC" "$SAFETY_RUN"
check light-commit light-commit-3p         pass   "-DNP=3 -DMSGS=1"            "$SAFETY_CC" "$SAFETY_RUN"
check light-commit light-commit-3p-fenced  pass   "-DNP=3 -DMSGS=1 -DFENCED=1" "$SAFETY_CC" "$SAFETY_RUN"
for m in 1 2 3; do
  check light-commit "light-commit-2p-mutant-$m" reject "-DNP=2 -DMSGS=1 -DMUTANT=$m" "$SAFETY_CC" "$SAFETY_RUN"
done

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) did not come out as expected"
  exit 1
fi
