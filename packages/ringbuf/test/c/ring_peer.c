/*
 * ring_peer.c: a shmring peer in C11, written from docs/LAYOUT.md alone.
 *
 * It maps a region file (a 'file' region, /dev/shm/<name> for a POSIX
 * region, or /proc/<pid>/fd/<n> for a memfd), or with PATH sysv:<shmid> a
 * System V segment (LatestValue commands only), and plays one side of a ring
 * that some other program created, moving COUNT messages of a fixed pattern:
 *
 *   message i: length (i * 37) % 200, byte j = (i + j) & 255, type i % 7
 *
 * usage: ring_peer COMMAND PATH COUNT [OPTIONS]
 *   spsc-produce   attach to an SpscRing as its producer and write COUNT messages
 *   spsc-consume   attach to an SpscRing as its consumer, read and check COUNT messages
 *   mpmc-produce   the same for a MpmcQueue (one of possibly many producers)
 *   mpmc-consume   the same for a MpmcQueue (one of possibly many consumers)
 *   latest-publish take a LatestValue's writer role and publish COUNT versions
 *                  after the current one: version v is message v of the pattern
 *                  (cut to maxSize); --pause-every / --pause-ms as for producers
 *   latest-read    read a LatestValue until its version reaches COUNT, parking on
 *                  the read wait block for each change and checking every value
 *                  read against the pattern of its version; prints
 *                  {"last","seen","parksWoken"} as one JSON line
 *   (a LatestValue's version 0 is its empty initial value; the pattern starts at 1)
 *   mpsc-produce   attach to a MpscRing as one of its producers and write COUNT messages
 *   mpsc-consume   attach to a MpscRing as its consumer and read COUNT messages from each
 *                  of --producers N producers, each producer's in order
 *   bcast-publish  take a Broadcast's publisher role (let go by the one that created it)
 *                  and publish COUNT records: record k (k records before it, since the
 *                  Broadcast's creation) is message k of the pattern. Lossless: waits for
 *                  the slowest subscriber as a producer waits on a full ring, and frees
 *                  the slots of dead subscribers every quarter of --peer-timeout-ms while
 *                  it stays full ("Lossless"; --stats counts them). A record its
 *                  dead predecessor left half-written (no quiescent snapshot) it repairs
 *                  ("A record left half-written: the repair"): from the raw counters, the
 *                  tail T and count c (impossible ones: exit 4), INTENT's high words torn
 *                  or not; then a jump to the start of the lap after next, J, which
 *                  every subscriber reads as a lap (it loses what it had not read). A
 *                  previous repair killed in its own jump left the same T, c and J: its
 *                  jump is completed. The jump is made
 *                  lossy at once, lossless only once every live subscriber has read up to
 *                  T (waiting as on a full ring, having woken the parked subscribers so a
 *                  joiner's provisional cursor follows TAIL). Prints
 *                  {"repairTail","repairCount","jump"} as one JSON line when it repairs
 *   bcast-subscribe join a Broadcast as a subscriber (taking a slot; lossless: one is
 *                  required) and read until records 0 .. COUNT-1 are accounted for,
 *                  received or (lossy) lost, checking each record k received against
 *                  message k; prints "joined" once it holds its slot (its cursor may wait
 *                  for a quiescent snapshot: until then its slot's CURSOR follows TAIL),
 *                  then {"first","received","lost","parksWoken"} as one JSON line
 * options:
 *   --id P           (producers) message i has type i % 7 + 7 * P, so a consumer can tell
 *                    the producers of a MpscRing or MpmcQueue apart (default 0)
 *   --producers N    (consumers) the messages come from producers 0 .. N-1 (default 1):
 *                    COUNT from each, each producer's in order
 *   --peer-timeout-ms T  (mpsc-consume) a record claimed and not committed that blocks the head
 *                    for T ms (default 1000) is skipped once its claimer is gone, as LAYOUT.md's
 *                    "Unblock" says; --stats counts them ("unblocked"). (bcast-publish, lossless)
 *                    a full Broadcast looks for dead subscribers every T / 4 ms ("sweptSubscribers")
 *   --corrupt-at K   (producers) write message K with one wrong payload byte,
 *                    so a test can prove that the reader's check catches it
 *   --park           (producers) park on the write wait block's futex when the
 *                    ring is full, instead of spinning
 *   --pause-every N  (producers) after every N messages, sleep --pause-ms D
 *   --pause-ms D     milliseconds (default 5), then wait until a reader has
 *                    announced itself parked in the read wait block, and 1 ms
 *                    more (so it is asleep in the kernel), before writing on:
 *                    each pause then ends with a wake-up of a parked reader;
 *                    (bcast-subscribe) after every N records received, sleep D ms
 *                    (so that a lossy publisher laps it)
 *   --start-parked   (spsc/mpmc/mpsc producers and consumers, bcast-publish) before the first
 *                    message, wait until the Node side has announced itself
 *                    parked (a reader in the read wait block, a writer in the
 *                    write one), and 1 ms more: the first publication or
 *                    release then always finds a sleeper to wake
 *   --stats          print the waiting counters as one JSON line on stdout at the end
 *   --hang           (latest-publish) after COUNT versions, stop in the middle of
 *                    one more (SEQ odd, half the value written), print "hung" and
 *                    sleep until killed: a writer that dies mid-publish
 *   --linger S       after the last message, print "done" and stay S seconds
 *                    more (holding the ring and the role) before exiting
 *
 * A producer waits on a full ring by spinning and sched_yield() (or parks,
 * with --park); a consumer waits on an empty ring by parking on the read wait
 * block's futex, so both directions of the waking protocol get exercised
 * against Node.
 *
 * It holds the ring and its role as "Liveness" says: open file description
 * locks on the region's file, taken through an fd of its own, which the
 * kernel drops when it exits (a Broadcast's HOLDER lock before it reads the
 * header, waiting while a creator lays the ring out). At a clean exit it lets
 * go of its roles ("Letting go"): its locks go with its descriptor, then it
 * withdraws the pid word of a role nobody holds any more, so a Node side
 * parked on the ring waits for the next peer instead of reporting a death
 * (an exit by die(), or a kill, leaves the word: a death). In a System V segment (no file) a LatestValue
 * writer takes WRITER_TOKEN with its pid and start time ("The writer role").
 *
 * Exit status: 0 all good; 1 a message broke the pattern; 2 bad usage or a
 * region that is not the expected ring; 3 no progress for STALL_SECONDS;
 * 4 the ring holds values no correct peer writes (corruption); 5 the other
 * side closed the ring before COUNT messages went through; 6 the role is
 * held by another live peer (an SpscRing has one producer, one consumer; a
 * Broadcast one publisher; a lossless Broadcast with every subscriber slot
 * taken); 7 a MpscRing consumer took our claimed record back before we
 * committed it (it took us for dead).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- the layout (docs/LAYOUT.md) ---- */

enum {
    MAGIC = 0x524D4853,          /* 'SHMR' read as a little-endian u32 */
    LAYOUT_VERSION = 2,
    KIND_SPSC = 1,
    KIND_MPMC = 2,
    KIND_LATEST = 3,
    KIND_MPSC = 4,
    KIND_BROADCAST = 5,
    FLAG_CLOSED = 1,
    FLAG_PID_NS_MIXED = 2,       /* MpscRing: a side registered from another PID namespace than PID_NS */
    FLAG_LIGHT_COMMITS = 4,      /* MpscRing: a producer commits without a fence; a parking consumer calls membarrier */
    LIGHT_NAP_MS = 1,            /* MpscRing: the longest sleep of a consumer whose membarrier is refused, while that is set */
    MEMBARRIER_GLOBAL_EXPEDITED = 1 << 1, /* membarrier(2) command (linux/membarrier.h) */
    BLOCK = 128,

    /* header fields */
    OFF_MAGIC = 0,
    OFF_VERSION = 4,
    OFF_KIND = 8,
    OFF_FLAGS = 12,
    OFF_CAPACITY = 16,
    OFF_SLOT_SIZE = 20,
    OFF_SLOT_STRIDE = 24,
    OFF_DATA_OFFSET = 28,
    OFF_RING_SIZE_LO = 32,
    OFF_RING_SIZE_HI = 36,
    OFF_PRODUCER_PID = 44,
    OFF_CONSUMER_PID = 48,
    OFF_PRODUCER_START = 56,
    OFF_CONSUMER_START = 60,
    OFF_WRITER_TOKEN = 64,       /* LatestValue: the writer role where there is no file to lock */
    OFF_PID_NS = 64,             /* MpscRing: the creator's PID namespace (inode of /proc/self/ns/pid), 0 unknown */

    /* lock bytes of the region's file ("Liveness"), from the ring's start */
    LOCK_HOLDER = 0,
    LOCK_PRODUCER = 44,
    LOCK_CONSUMER = 48,

    /* one hot word (or one wait pair) per 128-byte block */
    OFF_PRODUCER_POSITION = 1 * BLOCK,
    OFF_HEAD_EPOCH = 1 * BLOCK + 4,  /* SpscRing, MpscRing: the consumers' count of the 2^30-byte windows the head entered */
    HEAD_EPOCH_SHIFT = 30,
    OFF_CONSUMER_POSITION = 2 * BLOCK,
    OFF_READ_WAITERS = 3 * BLOCK,
    OFF_READ_SIGNAL = 3 * BLOCK + 4,
    OFF_WRITE_WAITERS = 4 * BLOCK,
    OFF_WRITE_SIGNAL = 4 * BLOCK + 4,
    DATA_OFFSET = 5 * BLOCK,

    /* Records ("Records (version 2)"): LENGTH = 8 + payload, 0 = unpublished; TYPE */
    RECORD_HEADER = 8,
    RECORD_TYPE = 4,
    PADDING_TYPE = -1,
    RECORD_RESERVE = 8,          /* an SpscRing producer leaves 8 bytes free: the zeroed LENGTH word */
    SPSC_MIN_CAPACITY = 64,

    /* MpmcQueue slots */
    SLOT_SEQUENCE = 0,
    SLOT_LENGTH = 4,
    SLOT_TYPE = 8,
    SLOT_SKIP_TYPE = -1,         /* TYPE of a slot a producer gave up: the queue closed after its claim */
    SLOT_HEADER = 16,
    SLOT_ALIGN = 64,
    MPMC_MIN_CAPACITY = 2,

    /* LatestValue ("LatestValue"): PUBLISHED is the producer position word; slots start at DATA_OFFSET */
    OFF_PUBLISHED = OFF_PRODUCER_POSITION,
    LV_SEQ = 0,
    LV_VERSION_LO = 4,
    LV_VERSION_HI = 8,
    LV_LENGTH = 12,
    LV_TYPE = 16,
    LV_VALUE = 64,

    /* Broadcast ("Broadcast (KIND 5)"): MODE in the header; TAIL is the producer position word;
     * INTENT and COUNT are 64-bit counters of three words (LO, HI1, HI2); then the subscriber slots */
    OFF_MODE = 64,
    MODE_LOSSY = 0,
    MODE_LOSSLESS = 1,
    OFF_TAIL = OFF_PRODUCER_POSITION,
    OFF_INTENT = 5 * BLOCK,
    OFF_COUNT = 5 * BLOCK + 12,
    OFF_LATEST = 5 * BLOCK + 24,
    COUNTER_LO = 0,
    COUNTER_HI1 = 4,
    COUNTER_HI2 = 8,
    BCAST_SLOTS = 6 * BLOCK,     /* slot i at BCAST_SLOTS + i * BLOCK; also its lock byte */
    SUB_OWNER = 0,
    SUB_CURSOR = 4,
    SUB_PID = 8,
    SUB_START = 12,
    MAX_SUBSCRIBERS = 1024,
    BCAST_MIN_CAPACITY = 64,
    COUNTER_TRIES = 64,          /* tries at a 64-bit load or a quiescent snapshot before "not now" */
};

#define MAX_CAPACITY (UINT32_C(1) << 30)
#define MAX_SLOT_SIZE (UINT32_C(1) << 24)

/* ---- the test pattern ---- */

enum { PATTERN_MAX_LENGTH = 200, STALL_SECONDS = 30, SPIN_ATTEMPTS = 256, NAP_MS = 100 };

static uint32_t pattern_length(uint64_t i) { return (uint32_t)((i * 37) % 200); }
static uint8_t pattern_byte(uint64_t i, uint32_t j) { return (uint8_t)((i + j) & 255); }
static int32_t pattern_type(uint64_t i) { return (int32_t)(i % 7); }

_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free to share them with another process");
typedef _Atomic uint32_t atomic_u32;
_Static_assert(sizeof(atomic_u32) == 4, "an atomic u32 must be a plain 32-bit word");

static const char *program = "ring_peer";

static _Noreturn void die(int status, const char *format, ...) {
    va_list args;
    va_start(args, format);
    fprintf(stderr, "%s: ", program);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    exit(status);
}

enum { EXIT_MISMATCH = 1, EXIT_USAGE = 2, EXIT_STALLED = 3, EXIT_CORRUPT = 4, EXIT_CLOSED = 5, EXIT_BUSY = 6, EXIT_TAKEN = 7 };

/* ---- the mapped region ---- */

struct ring {
    int fd;                /* our own open file description of the region's file: it holds our locks; -1 for a System V segment */
    unsigned char *base;
    size_t region_size;
    uint32_t capacity;     /* SpscRing, MpscRing, Broadcast: data bytes; MpmcQueue: slots */
    uint32_t slot_size;    /* MpmcQueue; Broadcast: subscriber slots */
    uint32_t slot_stride;  /* MpmcQueue */
    uint32_t mode;         /* Broadcast: MODE_LOSSY or MODE_LOSSLESS */
    unsigned char *data;   /* base + DATA_OFFSET (the header's) */
};

/* A header word that never changes after creation (read after the acquire load of MAGIC). */
static uint32_t header_u32(const struct ring *r, size_t offset) {
    uint32_t v;
    memcpy(&v, r->base + offset, sizeof v); /* little-endian host: checked in main */
    return v;
}

/* A word that other processes change: only ever accessed atomically. */
static atomic_u32 *word(const struct ring *r, size_t offset) {
    return (atomic_u32 *)(void *)(r->base + offset);
}

static uint32_t load_u32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void store_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, sizeof v); }

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* PATH sysv:<shmid>: attaches the System V segment, which has no fd (so no locks: "Liveness" falls back to pids). */
static void map_segment(struct ring *r, const char *id_text) {
    char *end;
    long id = strtol(id_text, &end, 10);
    if (end == id_text || *end != '\0' || id < 0 || id > INT_MAX) die(EXIT_USAGE, "sysv:%s is not a segment id", id_text);
    struct shmid_ds ds;
    if (shmctl((int)id, IPC_STAT, &ds) != 0) die(EXIT_USAGE, "shmctl(%ld, IPC_STAT): %s", id, strerror(errno));
    if (ds.shm_segsz < DATA_OFFSET) die(EXIT_USAGE, "segment %ld has %zu bytes, less than a ring's header", id, (size_t)ds.shm_segsz);
    void *p = shmat((int)id, NULL, 0);
    if (p == (void *)-1) die(EXIT_USAGE, "shmat(%ld): %s", id, strerror(errno));
    r->fd = -1;
    r->region_size = (size_t)ds.shm_segsz;
    r->base = p;
    r->data = r->base + DATA_OFFSET;
}

/* The object's name byte ("Attaching to a ring", step 0): far past any ring. */
#define NAME_LOCK_BYTE (((off_t)1 << 52) + 1)
/* Opens of a name that keeps losing its object before we give up. */
#define NAME_ATTEMPTS 20

/*
 * "Attaching to a ring", step 0: opens `path` and holds its name byte shared on the new description,
 * waiting (up to 5 s) while shmring unlink-stale holds it exclusively; then makes sure the name still
 * leads to the object opened (unlink-stale may have removed it, or someone replaced it, between our
 * open and our lock), else opens the name again.
 */
static int open_named(const char *path) {
    for (int attempt = 1; attempt <= NAME_ATTEMPTS; attempt++) {
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) die(EXIT_USAGE, "open %s: %s", path, strerror(errno));
        struct flock l = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = NAME_LOCK_BYTE, .l_len = 1, .l_pid = 0 };
        double deadline = now_seconds() + 5; /* this peer's attach deadline; the TypeScript side waits 2 s */
        while (fcntl(fd, F_OFD_SETLK, &l) != 0) {
            if (errno != EAGAIN && errno != EACCES) die(EXIT_USAGE, "fcntl(F_OFD_SETLK) of %s's name byte: %s", path, strerror(errno));
            if (now_seconds() > deadline) die(EXIT_BUSY, "another process has held %s's name byte exclusively for 5 s", path);
            sched_yield();
        }
        struct stat mine, named;
        if (fstat(fd, &mine) != 0) die(EXIT_USAGE, "fstat %s: %s", path, strerror(errno));
        if (mine.st_nlink > 0 && stat(path, &named) == 0 && named.st_dev == mine.st_dev && named.st_ino == mine.st_ino) return fd;
        close(fd); /* the name lost this object meanwhile: open what it leads to now (or fail with ENOENT) */
    }
    die(EXIT_BUSY, "%s was removed or replaced each of the %d times it was opened", path, NAME_ATTEMPTS);
}

static void map_region(struct ring *r, const char *path) {
    if (strncmp(path, "sysv:", 5) == 0) {
        map_segment(r, path + 5);
        return;
    }
    int fd = open_named(path);
    struct stat st;
    if (fstat(fd, &st) != 0) die(EXIT_USAGE, "fstat %s: %s", path, strerror(errno));
    if (st.st_size < DATA_OFFSET) die(EXIT_USAGE, "%s has %lld bytes, less than a ring's header", path, (long long)st.st_size);
    r->region_size = (size_t)st.st_size;
    void *p = mmap(NULL, r->region_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) die(EXIT_USAGE, "mmap %s: %s", path, strerror(errno));
    r->fd = fd; /* kept open: the role locks live on this open file description until we exit */
    r->base = p;
    r->data = r->base + DATA_OFFSET;
}

static int is_power_of_two(uint32_t x) { return x != 0 && (x & (x - 1)) == 0; }

static uint32_t slot_stride_of(uint32_t slot_size) {
    return (uint32_t)(((uint64_t)SLOT_HEADER + slot_size + SLOT_ALIGN - 1) / SLOT_ALIGN * SLOT_ALIGN);
}

/* One byte of the file, locked through our own open file description: F_RDLCK shared, F_WRLCK exclusive. */
static int lock_byte(const struct ring *r, off_t byte, short type) {
    struct flock l = { .l_type = type, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1, .l_pid = 0 };
    return fcntl(r->fd, F_OFD_SETLK, &l);
}

/*
 * MpscRing, "Unblock": sets FLAG_PID_NS_MIXED unless we are in the ring's PID namespace (PID_NS; both known).
 * Called when we take a role, before our first claim mark or our first look at a claimer: a consumer that
 * sees a mark of a claimer from another namespace then sees the flag, and judges it by the PRODUCER lock alone.
 */
static void mpsc_note_namespace(const struct ring *r) {
    struct stat st;
    uint32_t own = stat("/proc/self/ns/pid", &st) == 0 && st.st_ino <= UINT32_MAX ? (uint32_t)st.st_ino : 0;
    /* PID_NS is written before MAGIC and never again. */
    if (own != 0 && own == header_u32(r, OFF_PID_NS)) return;
    /* Publishes "sides in more than one namespace" before our claims or take-backs. */
    atomic_fetch_or_explicit(word(r, OFF_FLAGS), FLAG_PID_NS_MIXED, memory_order_seq_cst);
}

/* The roles this peer took (take_role): given back at a clean exit ("Letting go", let_go). */
static int took_producer, took_consumer;

/*
 * "Liveness": takes a role (its lock first, exclusive for an SpscRing and
 * shared for a MpmcQueue; then the pid words, start time 0 = not recorded).
 * The kernel drops the lock when we exit, however we exit.
 */
static void take_role(const struct ring *r, int producer, int exclusive) {
    if (lock_byte(r, producer ? LOCK_PRODUCER : LOCK_CONSUMER, exclusive ? F_WRLCK : F_RDLCK) != 0) {
        if (errno == EAGAIN || errno == EACCES) die(EXIT_BUSY, "the %s role is held by another live peer", producer ? "producer" : "consumer");
        die(EXIT_USAGE, "fcntl(F_OFD_SETLK): %s", strerror(errno));
    }
    /* The start time before the pid, and both after the lock: whoever sees the pid finds the lock held. */
    atomic_store_explicit(word(r, producer ? OFF_PRODUCER_START : OFF_CONSUMER_START), 0, memory_order_seq_cst);
    atomic_store_explicit(word(r, producer ? OFF_PRODUCER_PID : OFF_CONSUMER_PID), (uint32_t)getpid(), memory_order_seq_cst);
    if (producer) took_producer = 1;
    else took_consumer = 1;
}

/* Whether any open file description holds `byte` of the file `fd` is open on (F_OFD_GETLK; `fd` itself holds nothing). */
static int byte_held(int fd, off_t byte) {
    struct flock l = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1, .l_pid = 0 };
    if (fcntl(fd, F_OFD_GETLK, &l) != 0) die(EXIT_USAGE, "fcntl(F_OFD_GETLK): %s", strerror(errno));
    return l.l_type != F_UNLCK;
}

/*
 * Clears `w` (a role's pid word, a Broadcast slot's OWNER) if it is set and nobody holds the lock byte `lock` that
 * goes with it (F_OFD_GETLK through `probe`, a descriptor of the ring's file that does not hold that byte itself).
 * Returns whether it did. Whoever sets the word takes the lock first, and may set it whatever it holds: so a
 * newcomer between our look at the lock and our CAS makes the CAS fail, unless the word still held what we read
 * (the newcomer's store not made yet, or the same value: a pid or token may repeat). So the lock is looked at
 * again after a CAS that succeeded; held now, the word gets its value back, unless yet another store came since.
 */
static int clear_unheld(int probe, off_t lock, atomic_u32 *w) {
    /* Observes the last store of the word (a holder makes it after it took the lock). */
    uint32_t seen = atomic_load_explicit(w, memory_order_seq_cst);
    if (seen == 0 || byte_held(probe, lock)) return 0;
    /* Clears it only if unchanged since the load: a newcomer's store (after our load) stays. */
    uint32_t expected = seen;
    if (!atomic_compare_exchange_strong_explicit(w, &expected, 0, memory_order_seq_cst, memory_order_seq_cst)) return 0;
    if (!byte_held(probe, lock)) return 1;
    /* A newcomer took the lock since our first look: puts `seen` back unless its own store (or another) came since. */
    expected = 0;
    atomic_compare_exchange_strong_explicit(w, &expected, seen, memory_order_seq_cst, memory_order_seq_cst);
    return 0;
}

/*
 * "Letting go", for one role, once our locks are released: withdraws its pid word if nobody holds the role any
 * more, so a peer parked on the ring waits for the next holder instead of taking our clean exit for a death.
 * `probe` is a descriptor of the ring's file whose open file description does not hold the role (F_OFD_GETLK).
 */
static void withdraw_role(const struct ring *r, int probe, off_t lock, size_t pid_word) {
    clear_unheld(probe, lock, word(r, pid_word));
}

/*
 * "Letting go" at a clean exit: our role locks first, then the roles' pid words. The locks are unlocked
 * explicitly: closing our descriptor would not release them, as our mapping of the region still refers to the
 * same open file description (munmap, after the words, lets go of the rest).
 */
static void let_go(const struct ring *r) {
    if (took_producer) lock_byte(r, LOCK_PRODUCER, F_UNLCK);
    if (took_consumer) lock_byte(r, LOCK_CONSUMER, F_UNLCK);
    /* Our own descriptor asks for the others: F_OFD_GETLK reports only locks of other open file descriptions,
     * and ours no longer holds the role bytes. */
    if (took_producer) withdraw_role(r, r->fd, LOCK_PRODUCER, OFF_PRODUCER_PID);
    if (took_consumer) withdraw_role(r, r->fd, LOCK_CONSUMER, OFF_CONSUMER_PID);
}

/*
 * Takes the HOLDER lock shared, waiting (up to `deadline`) while another description holds it
 * exclusively ("Attaching to a ring", step 7): shmring unlink-stale, across its last check and its
 * unlink; or a creator laying out a new ring ("Creating a ring", steps 2 to 8; a Broadcast's, where it
 * found nobody holding the ring: "Publisher, step by step"). Every side takes it before it reads the
 * header, which it then reads only once it is whole; from then on a create sees us holding the ring and
 * does not lay it out again.
 */
static void hold_shared_first(struct ring *r, double deadline) {
    while (lock_byte(r, LOCK_HOLDER, F_RDLCK) != 0) {
        if (errno != EAGAIN && errno != EACCES) die(EXIT_USAGE, "fcntl(F_OFD_SETLK) of the holder byte: %s", strerror(errno));
        if (now_seconds() > deadline) die(EXIT_BUSY, "another process has held the ring exclusively for 5 s (a create laying out a large ring, or one stopped half-way?)");
        sched_yield();
    }
}

/* "Attaching to a ring", steps 2 to 5 (and 7). */
static void attach(struct ring *r, uint32_t kind) {
    /* The creator stores MAGIC last; give a creator that is still at work a moment. */
    double deadline = now_seconds() + 5;
    uint32_t magic;
    /* Waits for MAGIC holding nothing: a lock held meanwhile would keep out the create it waits for. Observes
     * the creator's MAGIC store (release), which publishes the header; a Broadcast's is read again below. */
    while ((magic = atomic_load_explicit(word(r, OFF_MAGIC), memory_order_acquire)) != MAGIC) {
        if (now_seconds() > deadline) die(EXIT_USAGE, "not a ring (magic=0x%08x)", magic);
        sched_yield();
    }
    if (r->fd >= 0) {
        /* Step 7 before step 2, every kind: HOLDER before the header is read, so it is not one a creator is
         * laying out (a creator that found the ring unheld holds it exclusively until the new MAGIC: we wait
         * for it here); read after the lock, a header a create replaced meanwhile would give a stale capacity
         * and data area for good. Observes MAGIC again under the lock: a create that replaced the ring
         * meanwhile stored it last. */
        hold_shared_first(r, deadline);
        magic = atomic_load_explicit(word(r, OFF_MAGIC), memory_order_acquire);
        if (magic != MAGIC) die(EXIT_USAGE, "not a ring (magic=0x%08x)", magic);
    }
    uint32_t version = header_u32(r, OFF_VERSION);
    if (version != LAYOUT_VERSION) die(EXIT_USAGE, "layout version %u, this peer speaks %d", version, LAYOUT_VERSION);
    uint32_t found = header_u32(r, OFF_KIND);
    if (found != kind) die(EXIT_USAGE, "ring kind %u, expected %u", found, kind);

    r->capacity = header_u32(r, OFF_CAPACITY);
    r->slot_size = header_u32(r, OFF_SLOT_SIZE);
    r->slot_stride = header_u32(r, OFF_SLOT_STRIDE);
    uint64_t ring_size = header_u32(r, OFF_RING_SIZE_LO) | (uint64_t)header_u32(r, OFF_RING_SIZE_HI) << 32;
    uint32_t data_offset = header_u32(r, OFF_DATA_OFFSET);
    /* A Broadcast's data area starts after its subscriber slots; every other kind's at 640. */
    int sane = (kind == KIND_BROADCAST || data_offset == DATA_OFFSET) && r->capacity <= MAX_CAPACITY;
    if (kind == KIND_SPSC || kind == KIND_MPSC) {
        sane = sane && is_power_of_two(r->capacity) && r->capacity >= SPSC_MIN_CAPACITY && r->slot_size == 0 && r->slot_stride == 0
            && ring_size == (uint64_t)DATA_OFFSET + r->capacity;
    } else if (kind == KIND_MPMC) {
        sane = sane && is_power_of_two(r->capacity) && r->capacity >= MPMC_MIN_CAPACITY && r->slot_size <= MAX_SLOT_SIZE
            && r->slot_stride == slot_stride_of(r->slot_size)
            && ring_size == (uint64_t)DATA_OFFSET + (uint64_t)r->capacity * r->slot_stride;
    } else if (kind == KIND_BROADCAST) {
        /* SLOT_SIZE = N subscriber slots of SLOT_STRIDE = 128 bytes; MODE written before MAGIC, never again */
        r->mode = header_u32(r, OFF_MODE);
        sane = sane && is_power_of_two(r->capacity) && r->capacity >= BCAST_MIN_CAPACITY && r->slot_size <= MAX_SUBSCRIBERS
            && r->slot_stride == BLOCK && data_offset == BCAST_SLOTS + r->slot_size * BLOCK
            && ring_size == (uint64_t)data_offset + r->capacity && (r->mode == MODE_LOSSY || r->mode == MODE_LOSSLESS);
    } else {
        /* LatestValue: CAPACITY = maxSize (any size), two slots of SLOT_STRIDE = ceil((64 + CAPACITY) / 128) * 128 */
        sane = sane && r->slot_size == 0 && r->slot_stride == (uint32_t)(((uint64_t)LV_VALUE + r->capacity + BLOCK - 1) / BLOCK * BLOCK)
            && ring_size == (uint64_t)DATA_OFFSET + 2 * (uint64_t)r->slot_stride;
    }
    if (!sane) {
        die(EXIT_USAGE, "inconsistent header: capacity=%u slotSize=%u slotStride=%u dataOffset=%u ringSize=%llu",
            r->capacity, r->slot_size, r->slot_stride, data_offset, (unsigned long long)ring_size);
    }
    r->data = r->base + data_offset;
    if (ring_size > r->region_size) die(EXIT_USAGE, "the ring needs %llu bytes, the region has %zu", (unsigned long long)ring_size, r->region_size);
    /* "Liveness": we hold the ring (shared with every other attached peer) until we exit (taken above, before
     * the header); a segment has no file to lock. */
}

static int closed(const struct ring *r) {
    return (atomic_load_explicit(word(r, OFF_FLAGS), memory_order_seq_cst) & FLAG_CLOSED) != 0;
}

/* ---- waiting ("Waiting" in LAYOUT.md) ---- */

/* What this peer's waiting did, printed by --stats. */
static struct {
    uint64_t wakes;            /* unpark found a sleeper announced and called FUTEX_WAKE */
    uint64_t woke_sleepers;    /* ... and the FUTEX_WAKE woke someone asleep in the kernel */
    uint64_t parks_woken;      /* our FUTEX_WAIT returned 0: someone woke us */
    uint64_t parks_changed;    /* our FUTEX_WAIT found the signal already bumped (EAGAIN) */
    uint64_t parks_timed_out;  /* our FUTEX_WAIT napped NAP_MS without a wake */
    uint64_t heavy_fences;     /* MpscRing: our membarrier calls before a re-check (FLAG_LIGHT_COMMITS set) */
    uint64_t swept_subscribers; /* lossless Broadcast publisher: slots of dead subscribers freed while full */
    uint64_t pauses;           /* --pause-every: pauses that ended with a parked reader */
    uint64_t pause_wakes;      /* ... after which the first FUTEX_WAKE woke someone asleep in the kernel */
} stats;

/* Set by a pause: the next unpark's FUTEX_WAKE is counted in pause_wakes if it wakes someone. */
static int after_pause;

static long futex(atomic_u32 *address, int op, uint32_t value, const struct timespec *timeout) {
    /* FUTEX_WAIT / FUTEX_WAKE without FUTEX_PRIVATE_FLAG: the sleeper is in another process. */
    return syscall(SYS_futex, (void *)address, op, value, timeout, NULL, 0);
}

/* Wakes up to `count` sides parked in the wait block at `waiters_offset`. Run after every publication. */
static void unpark(const struct ring *r, size_t waiters_offset, int count) {
    /* Observes a sleeper's announcement; seq_cst orders it after our publishing store (Dekker). */
    if (atomic_load_explicit(word(r, waiters_offset), memory_order_seq_cst) != 0) {
        atomic_u32 *signal = word(r, waiters_offset + 4);
        /* Changes the word the sleepers compare against, so one that has not yet slept will not. */
        atomic_fetch_add_explicit(signal, 1, memory_order_seq_cst);
        stats.wakes++;
        if (futex(signal, FUTEX_WAKE, (uint32_t)count, NULL) > 0) {
            stats.woke_sleepers++;
            if (after_pause) stats.pause_wakes++;
        }
        after_pause = 0;
    }
}

/*
 * Parks on the wait block at `waiters_offset` until `attempt` returns non-zero
 * (then returns that value), or the ring is closed (returns 0), or nothing
 * happened for STALL_SECONDS (exits).
 */
static int park(struct ring *r, size_t waiters_offset, int (*attempt)(struct ring *, void *), void *arg) {
    atomic_u32 *waiters = word(r, waiters_offset);
    atomic_u32 *signal = word(r, waiters_offset + 4);
    /* A writer looks at the flag before each try: it fails once the flag is set, even where a consumer freed
       room just before its close (LAYOUT.md "The closed flag"); a reader takes what was published before it. */
    int writing = waiters_offset == OFF_WRITE_WAITERS;
    double deadline = now_seconds() + STALL_SECONDS;
    for (;;) {
        uint32_t seen = atomic_load_explicit(signal, memory_order_seq_cst);
        atomic_fetch_add_explicit(waiters, 1, memory_order_seq_cst); /* announce */
        /* Orders the re-check's (acquire) loads after the announcement: pairs with the
           publisher's seq_cst store of its position followed by its load of WAITERS. */
        atomic_thread_fence(memory_order_seq_cst);
        long nap_ms = NAP_MS;
        /* Observes FLAG_LIGHT_COMMITS after the announcement (LAYOUT.md, MpscRing): a producer that commits without
           a fence set it before its first such commit; membarrier then makes its commit visible to the re-check,
           or its load of READ_WAITERS see our announcement. Refused: sleep LIGHT_NAP_MS at most. */
        if (header_u32(r, OFF_KIND) == KIND_MPSC && waiters_offset == OFF_READ_WAITERS &&
            (atomic_load_explicit(word(r, OFF_FLAGS), memory_order_seq_cst) & FLAG_LIGHT_COMMITS) != 0) {
            if (syscall(SYS_membarrier, MEMBARRIER_GLOBAL_EXPEDITED, 0, 0) == 0) stats.heavy_fences++;
            else nap_ms = LIGHT_NAP_MS;
        }
        int result = writing && closed(r) ? 0 : attempt(r, arg); /* re-check after announcing */
        if (result == 0 && !closed(r)) {
            struct timespec nap = { 0, nap_ms * 1000000L };
            /* 0, EAGAIN, EINTR, ETIMEDOUT: all mean re-check */
            if (futex(signal, FUTEX_WAIT, seen, &nap) == 0) stats.parks_woken++;
            else if (errno == EAGAIN) stats.parks_changed++;
            else if (errno == ETIMEDOUT) stats.parks_timed_out++;
        }
        atomic_fetch_sub_explicit(waiters, 1, memory_order_seq_cst); /* withdraw */
        if (result != 0) return result;
        if (closed(r)) {
            if (writing) return 0;
            int last = attempt(r, arg); /* a reader's one more try after seeing the flag */
            /* LAYOUT.md "The closed flag": in a MpmcQueue a position claimed and not yet read is still to come,
               and in a MpscRing space claimed unread ("Roles and closing": the creator may close it) (observes
               the latest claims of both sides; seq_cst, after closed()'s load of FLAGS: a producer's claim CAS
               is either seen here or came after the close, and that producer sees the flag after it). */
            uint32_t kind = header_u32(r, OFF_KIND);
            uint32_t producer = atomic_load_explicit(word(r, OFF_PRODUCER_POSITION), memory_order_seq_cst);
            uint32_t consumer = atomic_load_explicit(word(r, OFF_CONSUMER_POSITION), memory_order_seq_cst);
            int pending = kind == KIND_MPMC ? (int32_t)(producer - consumer) > 0 : kind == KIND_MPSC ? producer != consumer : 0;
            if (last != 0 || !pending) return last;
        }
        if (now_seconds() > deadline) die(EXIT_STALLED, "no message for %d s while parked", STALL_SECONDS);
    }
}

/* A writer spins (with sched_yield) until `attempt` returns non-zero; exits once the ring is closed, or after STALL_SECONDS. */
static int spin_yield(struct ring *r, int (*attempt)(struct ring *, void *), void *arg) {
    double deadline = 0;
    for (unsigned n = 0;; n++) {
        /* The flag before each try: a writer fails once it is set (see park). */
        if (closed(r)) die(EXIT_CLOSED, "the ring was closed by the other side");
        int result = attempt(r, arg);
        if (result != 0) return result;
        if (n < SPIN_ATTEMPTS) continue;
        sched_yield();
        if (deadline == 0) deadline = now_seconds() + STALL_SECONDS;
        else if ((n & 255) == 0 && now_seconds() > deadline) die(EXIT_STALLED, "the ring stayed full for %d s", STALL_SECONDS);
    }
}

/* ---- messages ---- */

struct message {
    uint32_t length;
    int32_t type;
    uint8_t bytes[PATTERN_MAX_LENGTH];
};

static void make_message(struct message *m, uint64_t i, int corrupt) {
    m->length = pattern_length(i);
    m->type = pattern_type(i);
    for (uint32_t j = 0; j < m->length; j++) m->bytes[j] = pattern_byte(i, j);
    if (corrupt) {
        if (m->length == 0) m->type += 1;
        else m->bytes[m->length / 2] ^= 0x5a;
    }
}

static void check_message(const uint8_t *bytes, uint32_t length, int32_t type, uint64_t i) {
    if (length != pattern_length(i)) die(EXIT_MISMATCH, "message %llu: length %u, expected %u", (unsigned long long)i, length, pattern_length(i));
    if (type != pattern_type(i)) die(EXIT_MISMATCH, "message %llu: type %d, expected %d", (unsigned long long)i, type, pattern_type(i));
    for (uint32_t j = 0; j < length; j++) {
        if (bytes[j] != pattern_byte(i, j)) {
            die(EXIT_MISMATCH, "message %llu: byte %u is %u, expected %u", (unsigned long long)i, j, bytes[j], pattern_byte(i, j));
        }
    }
}

/*
 * A consumer's store of its head (SpscRing, MpscRing): HEAD_EPOCH raised first if the head enters another 2^30-byte
 * window, then CONSUMER_POSITION (seq_cst: publishes the freed space, and orders it before unpark's load of
 * WRITE_WAITERS).
 */
static void store_head(const struct ring *r, uint32_t head) {
    atomic_u32 *position = word(r, OFF_CONSUMER_POSITION);
    /* The head we stored last (we are the word's only writer). Into another window: publishes that to the
     * producers' HEAD_EPOCH check before the store that moves it there. */
    if (((atomic_load_explicit(position, memory_order_relaxed) ^ head) >> HEAD_EPOCH_SHIFT) != 0) {
        atomic_fetch_add_explicit(word(r, OFF_HEAD_EPOCH), 1, memory_order_seq_cst);
    }
    atomic_store_explicit(position, head, memory_order_seq_cst);
}

/* ---- SpscRing ---- */

struct spsc {
    uint32_t position;        /* own position: we are its only writer */
    uint32_t cached_other;    /* producer: the consumer's position as last seen */
    struct message *message;  /* to write, or filled by a read */
};

static uint32_t record_size(uint32_t length) { return (length + RECORD_HEADER + 7) & ~UINT32_C(7); }

static uint32_t spsc_max_message(const struct ring *r) { return r->capacity / 2 - RECORD_HEADER; }

/* The LENGTH word of the record header at `index` of the data area: it publishes the record. */
static atomic_u32 *record_length(const struct ring *r, uint32_t index) {
    return (atomic_u32 *)(void *)(r->data + index);
}

/* "Attaching", step 6: both positions multiples of 8, at most CAPACITY apart either way
 * (the consumer may be ahead of a producer position not stored yet). */
static void spsc_check_positions(const struct ring *r, uint32_t producer, uint32_t consumer) {
    int32_t ahead = (int32_t)(producer - consumer);
    if ((producer & 7) != 0 || (consumer & 7) != 0 || ahead > (int32_t)r->capacity || ahead < -(int32_t)r->capacity) {
        die(EXIT_CORRUPT, "positions producer=%u consumer=%u are inconsistent", producer, consumer);
    }
}

/* Stores a record's LENGTH: the publication. seq_cst: the load of READ_WAITERS in unpark comes after it. */
static void publish_length(const struct ring *r, uint32_t index, uint32_t length) {
    atomic_store_explicit(record_length(r, index), length, memory_order_seq_cst);
}

/* The producer's write: 1 written, 0 full. */
static int spsc_try_write(struct ring *r, void *arg) {
    struct spsc *s = arg;
    const struct message *m = s->message;
    uint32_t size = record_size(m->length);
    uint32_t mask = r->capacity - 1;
    uint32_t index = s->position & mask;
    uint32_t to_end = r->capacity - index;
    /* the record, the padding if it wraps, and the 8 bytes always left free */
    uint32_t needed = (size <= to_end ? size : to_end + size) + RECORD_RESERVE;
    if (r->capacity - (s->position - s->cached_other) < needed) {
        /* Observes the consumer's release: its reads of these bytes are done. */
        uint32_t consumer = atomic_load_explicit(word(r, OFF_CONSUMER_POSITION), memory_order_acquire);
        if ((consumer & 7) != 0 || s->position - consumer > r->capacity) {
            die(EXIT_CORRUPT, "consumer position %u is outside the ring (producer %u)", consumer, s->position);
        }
        s->cached_other = consumer;
        if (r->capacity - (s->position - consumer) < needed) return 0;
    }
    uint32_t at = size <= to_end ? index : 0;
    store_u32(r->data + at + RECORD_TYPE, (uint32_t)m->type);
    memcpy(r->data + at + RECORD_HEADER, m->bytes, m->length);
    /* The LENGTH word after the record reads 0 before the record is published, so the consumer stops
     * there (it is free: RECORD_RESERVE). Relaxed: the release of the LENGTH store below orders it. */
    atomic_store_explicit(record_length(r, (at + size) & mask), 0, memory_order_relaxed);
    publish_length(r, at, RECORD_HEADER + m->length);
    if (size > to_end) { /* padding before the wrap: its LENGTH publishes it and the record at 0 */
        store_u32(r->data + index + RECORD_TYPE, (uint32_t)PADDING_TYPE);
        publish_length(r, index, to_end);
    }
    s->position += needed - RECORD_RESERVE;
    /* Not a publication: the count of published bytes, for size / inspect / a next producer. */
    atomic_store_explicit(word(r, OFF_PRODUCER_POSITION), s->position, memory_order_release);
    unpark(r, OFF_READ_WAITERS, 1);
    return 1;
}

/* The consumer's read into s->message: 1 read, 0 empty. */
static int spsc_try_read(struct ring *r, void *arg) {
    struct spsc *s = arg;
    uint32_t index = s->position & (r->capacity - 1);
    /* Observes the record's publication (the producer's LENGTH store); its bytes are read after it.
     * seq_cst: a parked reader's re-check comes after its announcement in WAITERS. */
    uint32_t length = atomic_load_explicit(record_length(r, index), memory_order_seq_cst);
    if (length == 0) return 0;
    uint32_t skip = 0;
    if ((int32_t)load_u32(r->data + index + RECORD_TYPE) == PADDING_TYPE) {
        uint32_t to_end = r->capacity - index;
        if (length != to_end) die(EXIT_CORRUPT, "padding record at %u has length %u (expected %u)", index, length, to_end);
        skip = to_end;
        index = 0;
        /* The record after the padding was published before the padding. */
        length = atomic_load_explicit(record_length(r, 0), memory_order_acquire);
    }
    if (length < RECORD_HEADER || length - RECORD_HEADER > spsc_max_message(r)
        || index + record_size(length - RECORD_HEADER) > r->capacity) {
        die(EXIT_CORRUPT, "record at %u has length %u", index, length);
    }
    uint32_t payload = length - RECORD_HEADER;
    int32_t type = (int32_t)load_u32(r->data + index + RECORD_TYPE);
    if (type < 0) die(EXIT_CORRUPT, "record at %u has type %d (negative: not a message's)", index, type);
    if (payload > PATTERN_MAX_LENGTH) die(EXIT_MISMATCH, "record of length %u is longer than any message of the pattern", payload);
    s->message->length = payload;
    s->message->type = type;
    memcpy(s->message->bytes, r->data + index + RECORD_HEADER, payload);
    s->position += skip + record_size(payload);
    /* Frees the space (we are done with its bytes). */
    store_head(r, s->position);
    unpark(r, OFF_WRITE_WAITERS, INT_MAX); /* every writer: they may wait for different amounts of room */
    return 1;
}

/* A producer takes over: from the stored position (or the consumer's, if ahead), walks on over the
 * headers published after the last position store (a producer that died between the two) to LENGTH 0. */
static uint32_t spsc_resume(const struct ring *r, uint32_t stored, uint32_t consumer) {
    uint32_t position = (int32_t)(consumer - stored) > 0 ? consumer : stored;
    for (;;) {
        uint32_t index = position & (r->capacity - 1);
        uint32_t length = atomic_load_explicit(record_length(r, index), memory_order_acquire);
        if (length == 0) return position;
        int32_t type = (int32_t)load_u32(r->data + index + RECORD_TYPE);
        uint32_t size = type == PADDING_TYPE ? r->capacity - index : record_size(length - RECORD_HEADER);
        int bad = type == PADDING_TYPE ? length != size
            : length < RECORD_HEADER || length - RECORD_HEADER > spsc_max_message(r) || index + size > r->capacity;
        position += size;
        if (bad || position - consumer > r->capacity - RECORD_RESERVE) die(EXIT_CORRUPT, "record at %u (length %u) does not continue the published ones", index, length);
    }
}

/* LAYOUT.md "Attaching", steps 1-6: the header, and both positions checked (the side's own is read when it takes its role). */
static void spsc_attach(struct ring *r) {
    attach(r, KIND_SPSC);
    if (spsc_max_message(r) < PATTERN_MAX_LENGTH) die(EXIT_USAGE, "capacity=%u is too small for the pattern", r->capacity);
    spsc_check_positions(r, atomic_load_explicit(word(r, OFF_PRODUCER_POSITION), memory_order_acquire),
                         atomic_load_explicit(word(r, OFF_CONSUMER_POSITION), memory_order_acquire));
}

/* Once take_role made the role ours (LAYOUT.md "Attaching", step 6): the position this side works from, read now,
   not at attach: a position read before, under a live holder of the role, may be stale by then. */
static void spsc_start(struct ring *r, struct spsc *s, int producer) {
    /* Both observe the positions as the last holder of each role left them (acquire: its records before them). */
    uint32_t p = atomic_load_explicit(word(r, OFF_PRODUCER_POSITION), memory_order_acquire);
    uint32_t c = atomic_load_explicit(word(r, OFF_CONSUMER_POSITION), memory_order_acquire);
    spsc_check_positions(r, p, c);
    s->position = producer ? spsc_resume(r, p, c) : c;
    /* LAYOUT.md "A new producer", step 3: store the end found before publishing anything, so the consumer
     * is never more than one publication ahead of PRODUCER_POSITION, even if this producer dies too. */
    if (producer && s->position != p) atomic_store_explicit(word(r, OFF_PRODUCER_POSITION), s->position, memory_order_relaxed);
    s->cached_other = c;
}

/* ---- MpmcQueue ---- */

static unsigned char *mpmc_slot(const struct ring *r, uint32_t position) {
    return r->data + (size_t)(position & (r->capacity - 1)) * r->slot_stride;
}

static atomic_u32 *mpmc_sequence(unsigned char *slot) { return (atomic_u32 *)(void *)(slot + SLOT_SEQUENCE); }

/* Vyukov's claim: the slot whose sequence equals position + `ready` (0 to write, 1 to read), or NULL. */
static unsigned char *mpmc_claim(const struct ring *r, size_t position_offset, uint32_t ready, uint32_t *claimed) {
    atomic_u32 *shared = word(r, position_offset);
    uint32_t position = atomic_load_explicit(shared, memory_order_relaxed);
    for (;;) {
        unsigned char *slot = mpmc_slot(r, position);
        /* Observes the other side's last store to this slot's sequence (and what it published). */
        int32_t lag = (int32_t)(atomic_load_explicit(mpmc_sequence(slot), memory_order_acquire) - (position + ready));
        if (lag == 0) {
            /* Claims the position: only the winner touches the slot until it stores the next sequence. seq_cst:
             * a producer's FLAGS load comes after it (LAYOUT.md, MpmcQueue "Producer"), as a reader's position
             * loads come after its FLAGS load; relaxed, the load could pass the claim on a weakly ordered CPU. */
            if (atomic_compare_exchange_weak_explicit(shared, &position, position + 1, memory_order_seq_cst, memory_order_relaxed)) {
                *claimed = position;
                return slot;
            }
        } else if (lag < 0) {
            return NULL; /* writing: the previous lap is not consumed (full); reading: not published (empty) */
        } else {
            position = atomic_load_explicit(shared, memory_order_relaxed); /* someone got ahead */
        }
    }
}

static int mpmc_try_write(struct ring *r, void *arg) {
    const struct message *m = arg;
    uint32_t position;
    unsigned char *slot = mpmc_claim(r, OFF_PRODUCER_POSITION, 0, &position);
    if (slot == NULL) return 0;
    /* A close that came before our claim (LAYOUT.md, MpmcQueue "Producer": seq_cst, as the readers' loads of
     * FLAGS and the positions) gets the slot as a skip, and the write fails: its readers may have ended. */
    int closing = closed(r);
    store_u32(slot + SLOT_LENGTH, closing ? 0 : m->length);
    store_u32(slot + SLOT_TYPE, closing ? (uint32_t)SLOT_SKIP_TYPE : (uint32_t)m->type);
    if (!closing) memcpy(slot + SLOT_HEADER, m->bytes, m->length);
    /* Publishes the slot to the consumer of `position`; seq_cst for unpark's load of READ_WAITERS. */
    atomic_store_explicit(mpmc_sequence(slot), position + 1, memory_order_seq_cst);
    /* Every sleeper: slots are published out of position order, so one wake could go to a reader whose slot is not the one published. */
    unpark(r, OFF_READ_WAITERS, INT_MAX);
    if (closing) die(EXIT_CLOSED, "the ring was closed by the other side");
    return 1;
}

static int mpmc_try_read(struct ring *r, void *arg) {
    struct message *m = arg;
    uint32_t position;
    unsigned char *slot;
    uint32_t length;
    int32_t type;
    for (;;) {
        slot = mpmc_claim(r, OFF_CONSUMER_POSITION, 1, &position);
        if (slot == NULL) return 0;
        length = load_u32(slot + SLOT_LENGTH);
        type = (int32_t)load_u32(slot + SLOT_TYPE);
        if (type != SLOT_SKIP_TYPE || length != 0) break;
        /* A skip (a producer that found the queue closed after its claim): freed, no message; the next position. */
        atomic_store_explicit(mpmc_sequence(slot), position + r->capacity, memory_order_seq_cst);
        unpark(r, OFF_WRITE_WAITERS, INT_MAX);
    }
    int corrupt = length > r->slot_size || type < 0;
    int bad = corrupt || length > PATTERN_MAX_LENGTH;
    if (!bad) {
        m->length = length;
        m->type = type;
        memcpy(m->bytes, slot + SLOT_HEADER, length);
    }
    /* Frees the slot for the producer one lap later (its bytes are read); seq_cst for unpark. */
    atomic_store_explicit(mpmc_sequence(slot), position + r->capacity, memory_order_seq_cst);
    unpark(r, OFF_WRITE_WAITERS, INT_MAX); /* every sleeper, as above */
    if (bad) die(corrupt ? EXIT_CORRUPT : EXIT_MISMATCH, "slot of position %u claims length %u and type %d (slotSize=%u)", position, length, type, r->slot_size);
    return 1;
}

/* ---- liveness by /proc ("Liveness" in LAYOUT.md: where there is no lock to ask) ---- */

/*
 * /proc/<pid>/stat from field 3 (the state) on, into `text`: NULL with errno set if it cannot be read (or
 * is cut short). The command name (field 2) may hold spaces and parentheses: the fields resume after the last ')'.
 */
static char *stat_fields(uint32_t pid, char *text, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    FILE *f = fopen(path, "re");
    if (f == NULL) return NULL;
    size_t n = fread(text, 1, size - 1, f);
    fclose(f);
    text[n] = '\0';
    char *field = strrchr(text, ')');
    if (field == NULL || field[1] == '\0' || field[2] == '\0') {
        errno = EIO;
        return NULL;
    }
    return field + 2;
}

/* A state (stat field 3) of a task that will never run again: zombie, dead. */
static int exited(char state) { return state == 'Z' || state == 'X' || state == 'x'; }

static int proc_shows_all(void);

/*
 * "Liveness": the start time of process `pid` (field 22 of /proc/<pid>/stat, low 32 bits) into *start;
 * 1 then; 0 if no such process runs, or it is a zombie (Z) or dying (X, x): it will never write again; -1 if /proc
 * cannot tell (EACCES under hidepid=1, EMFILE, …).
 */
static int start_time_of(uint32_t pid, uint32_t *start) {
    char text[1024];
    char *field = stat_fields(pid, text, sizeof text);
    /* Missing from a /proc that may hide it (hidepid, no /proc of ours): doubt, as an unreadable one. */
    if (field == NULL) return (errno == ENOENT || errno == ESRCH) && proc_shows_all() ? 0 : -1;
    if (exited(*field)) return 0;
    for (int i = 3; i < 22 && field != NULL; i++) field = strchr(field + 1, ' ');
    if (field == NULL) return 0;
    *start = (uint32_t)strtoull(field + 1, NULL, 10);
    return 1;
}

/* "Liveness": ids of 2^30 and more name TypeScript worker threads that could not read their tid. */
#define UNNAMED_THREAD_BASE 0x40000000u

/* "Liveness": process (pid, start) is alive (start 0: any start time); one /proc cannot tell about (-1) is, as the
   TypeScript side holds: taking a live writer's role would let two write. */
static int process_alive(uint32_t pid, uint32_t start) {
    uint32_t now;
    /* An id of 2^30 or more is a TypeScript worker's that could not read its tid: nothing can say it is gone,
       and every side MUST count it alive ("Liveness"). No pid reaches it (pid_max is at most 2^22). */
    if (pid >= UNNAMED_THREAD_BASE) return 1;
    int known = start_time_of(pid, &now);
    return known < 0 || (known == 1 && (start == 0 || now == start));
}

/* ---- MpscRing ("MpscRing (KIND 4)" in LAYOUT.md) ---- */

struct mpsc {
    uint32_t head;            /* consumer: own position (its only writer); producer: the head as last seen */
    uint32_t head_epoch;      /* producer: HEAD_EPOCH as loaded before `head` */
    int head_epoch_seen;      /* producer: head_epoch holds one */
    uint32_t cached_tail;     /* consumer: the tail as last seen, for bounds checks only (it polls LENGTH) */
    struct message *message;  /* to write, or filled by a read */
    /* consumer, "Unblock": the record at the head being timed (its position, the LENGTH seen there, since when) */
    int stuck_valid;
    uint32_t stuck_at;
    int32_t stuck_length;
    int32_t stuck_mark; /* TYPE when the record was first seen stuck: its claimer's mark, unless a commit had begun */
    double stuck_since;
    double peer_timeout;      /* seconds a record may stay unpublished at the head before a dead claimer's is skipped */
    uint64_t unblocked;       /* records skipped: their claimers died between claim and commit */
};

/* The claimer's mark in TYPE while its record is claimed (for the consumer's dead-claimer check). */
static uint32_t own_pid;

static uint32_t align8(uint32_t length) { return (length + 7) & ~UINT32_C(7); }

/* Both positions multiples of 8 and 0 <= tail - head <= CAPACITY; the consumer starts at the head. */
/* The positions as a side starts from them: at attach, and a consumer's again once take_role made the role its own
   (LAYOUT.md "Attaching", step 6: a head read before may be stale by then, a previous consumer having read on). */
static void mpsc_load_positions(struct ring *r, struct mpsc *s) {
    /* Observes the consumer's last release (the zeroed bytes before it) and the latest claim. */
    s->head = atomic_load_explicit(word(r, OFF_CONSUMER_POSITION), memory_order_acquire);
    s->cached_tail = atomic_load_explicit(word(r, OFF_PRODUCER_POSITION), memory_order_acquire);
    if (((s->head | s->cached_tail) & 7) != 0 || s->cached_tail - s->head > r->capacity) {
        die(EXIT_CORRUPT, "positions producer=%u consumer=%u are inconsistent", s->cached_tail, s->head);
    }
}

static void mpsc_attach(struct ring *r, struct mpsc *s) {
    attach(r, KIND_MPSC);
    if (spsc_max_message(r) < PATTERN_MAX_LENGTH) die(EXIT_USAGE, "capacity=%u is too small for the pattern", r->capacity);
    mpsc_load_positions(r, s);
}

/* "Producer: claim, commit, abort": 1 written, 0 full. */
static int mpsc_try_write(struct ring *r, void *arg) {
    struct mpsc *s = arg;
    const struct message *m = s->message;
    uint32_t length = RECORD_HEADER + m->length;  /* the committed LENGTH; claimed: its negation */
    uint32_t size = record_size(m->length);
    atomic_u32 *shared_tail = word(r, OFF_PRODUCER_POSITION);
    uint32_t tail, index, to_end, claim;
    for (;;) {
        /* 1. Observes the latest claim of any producer; a stale value only fails the CAS of step 3. Acquire:
         *    HEAD_EPOCH is loaded after it. */
        tail = atomic_load_explicit(shared_tail, memory_order_acquire);
        index = tail & (r->capacity - 1);
        to_end = r->capacity - index;
        claim = size <= to_end ? size : to_end + size;
        /* 2. Room, by the cached head first (more than CAPACITY behind the tail: too old to say). Observes the
         *    consumer's count of head windows: the count loaded before the cached head means that head is less
         *    than 2^31 behind, so tail - head did not wrap (LAYOUT.md, HEAD_EPOCH). */
        uint32_t epoch = atomic_load_explicit(word(r, OFF_HEAD_EPOCH), memory_order_acquire);
        uint32_t used = tail - s->head;
        if (!s->head_epoch_seen || epoch != s->head_epoch || used > r->capacity || r->capacity - used < claim) {
            /* Observes the consumer's release: the bytes before the head are read and zeroed. */
            uint32_t head = atomic_load_explicit(word(r, OFF_CONSUMER_POSITION), memory_order_acquire);
            if ((head & 7) != 0) die(EXIT_CORRUPT, "consumer position %u is not a multiple of 8", head);
            used = tail - head;
            if (used > r->capacity) {
                /* Our tail is older than that head: start again. Observes the latest claim again: if nobody
                 * claimed since our load, our tail was current when the head was stored, which no consumer does. */
                if (atomic_load_explicit(shared_tail, memory_order_acquire) == tail) {
                    die(EXIT_CORRUPT, "consumer position %u is outside the ring (producer %u)", head, tail);
                }
                continue;
            }
            s->head = head;
            s->head_epoch = epoch; /* loaded before the head */
            s->head_epoch_seen = 1;
            if (r->capacity - used < claim) return 0;
        }
        /* 3. Claims [tail, tail + claim): only the winner writes there until it commits. It publishes
         *    nothing (the LENGTH stores below do); seq_cst as Node. */
        if (atomic_compare_exchange_weak_explicit(shared_tail, &tail, tail + claim, memory_order_seq_cst, memory_order_relaxed)) break;
    }
    uint32_t at = size <= to_end ? index : 0;
    /* 4. "Claimed by us": TYPE = our mark, ~tid (<= -2: no message type reads as one; we are single-threaded, so
     *    our tid is our pid), then the negative LENGTH (release: publishes the mark to the consumer's stuck-record
     *    check). On a wrap the record at 0 first, then the padding before the end. */
    store_u32(r->data + at + RECORD_TYPE, ~own_pid);
    atomic_store_explicit(record_length(r, at), (uint32_t)-(int32_t)length, memory_order_release);
    if (size > to_end) {
        store_u32(r->data + index + RECORD_TYPE, (uint32_t)PADDING_TYPE);
        /* Commits the padding (its TYPE written before): the consumer skips it to the record at 0. */
        atomic_store_explicit(record_length(r, index), to_end, memory_order_release);
    }
    /* 5. The payload, TYPE, then the commit; but a close that came after our check of the flag (LAYOUT.md,
     *    "Roles and closing": seq_cst, as the consumer's loads) gets the claim as padding, and the write fails. */
    int closing = closed(r);
    if (!closing) memcpy(r->data + at + RECORD_HEADER, m->bytes, m->length);
    store_u32(r->data + at + RECORD_TYPE, closing ? (uint32_t)PADDING_TYPE : (uint32_t)m->type);
    uint32_t claimed = (uint32_t)-(int32_t)length;
    /* Commits: publishes TYPE and payload (release) to the consumer, which loads LENGTH first; seq_cst for
     * unpark's load of READ_WAITERS. A CAS: a consumer that took the record back from us made it 0. */
    if (!atomic_compare_exchange_strong_explicit(record_length(r, at), &claimed, length, memory_order_seq_cst, memory_order_relaxed)) {
        die(EXIT_TAKEN, "the consumer took back our record at %u before its commit (LENGTH %d)", at, (int32_t)claimed);
    }
    unpark(r, OFF_READ_WAITERS, 1); /* 6. the one consumer */
    if (closing) die(EXIT_CLOSED, "the ring was closed by the other side");
    return 1;
}

/* Whether `size` bytes from the head lie within the claimed space; loads the tail only when the cached one says no. */
static int mpsc_within(const struct ring *r, struct mpsc *s, uint32_t size) {
    uint32_t claimed = s->cached_tail - s->head;
    if (claimed <= r->capacity && size <= claimed) return 1;
    /* Observes the latest claim (bounds only: what a record may span). */
    s->cached_tail = atomic_load_explicit(word(r, OFF_PRODUCER_POSITION), memory_order_acquire);
    claimed = s->cached_tail - s->head;
    if (claimed > r->capacity || (s->cached_tail & 7) != 0) die(EXIT_CORRUPT, "producer position %u is outside the ring (consumer %u)", s->cached_tail, s->head);
    return size <= claimed;
}

/* Step 4's zeroing: free space reads 0, so a claim's LENGTH is 0 until its claimer writes it. */
static void mpsc_zero(const struct ring *r, uint32_t index, uint32_t size) {
    /* Relaxed: the release store of the head after it orders it before any producer's next claim. */
    atomic_store_explicit(record_length(r, index), 0, memory_order_relaxed);
    memset(r->data + index + RECORD_TYPE, 0, size - RECORD_TYPE);
}

/* Step 4's release: stored after each record zeroed (padding included), before another is read or handed out. */
static void mpsc_store_head(const struct ring *r, const struct mpsc *s) {
    store_head(r, s->head); /* publishes the freed (read, zeroed) space to the producers */
}

/* Step 5: after one or more head stores. */
static void mpsc_wake_producers(const struct ring *r) {
    unpark(r, OFF_WRITE_WAITERS, INT_MAX); /* all: their records differ in size, one woken might not fit */
}

/* Step 4's release and step 5. */
static void mpsc_release(const struct ring *r, const struct mpsc *s) {
    mpsc_store_head(r, s);
    mpsc_wake_producers(r);
}

/* "Liveness": whether any process holds the PRODUCER lock byte (every MpscRing producer holds it shared from its first claim). */
static int mpsc_producers_left(const struct ring *r) {
    struct flock l = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = LOCK_PRODUCER, .l_len = 1, .l_pid = 0 };
    if (fcntl(r->fd, F_OFD_GETLK, &l) != 0) die(EXIT_USAGE, "fcntl(F_OFD_GETLK): %s", strerror(errno));
    return l.l_type != F_UNLCK; /* a lock that would conflict with ours: someone holds it */
}

/*
 * Whether the mount at /proc, as the mountinfo lines of `f` list it, hides other users' processes: the last mount
 * listed at /proc (a proc mounted over another) is not proc, or one of its super options is hidepid= other than
 * 0 or off. No mount at /proc hides too: nothing there can be gone by.
 */
static int mounts_hide_processes(FILE *f) {
    char *line = NULL;
    size_t room = 0;
    int hides = 1;
    while (getline(&line, &room, f) >= 0) {
        line[strcspn(line, "\n")] = '\0';
        /* "<id> <parent> <dev> <root> <mount point> <options> [optional fields] - <type> <source> <super options>";
         * a space inside a field is written \040, so " - " is the separator */
        char *point = line;
        for (int i = 0; i < 4 && point != NULL; i++) {
            point = strchr(point, ' ');
            if (point != NULL) point++;
        }
        if (point == NULL || strncmp(point, "/proc ", 6) != 0) continue;
        char *separator = strstr(point, " - ");
        if (separator == NULL) continue;
        const char *type = separator + 3;
        /* no break: a later mount at /proc covers this one */
        if (strncmp(type, "proc", 4) != 0 || (type[4] != ' ' && type[4] != '\0')) {
            hides = 1;
            continue;
        }
        /* the super options: the field after the source, up to the next space */
        const char *source = type[4] == ' ' ? type + 5 : "";
        const char *options = strchr(source, ' ');
        hides = 0;
        for (const char *o = options == NULL ? "" : options + 1; *o != '\0' && *o != ' ';) {
            size_t n = strcspn(o, ", ");
            if (n >= 8 && strncmp(o, "hidepid=", 8) == 0 && !(n == 9 && o[8] == '0') && !(n == 11 && strncmp(o + 8, "off", 3) == 0)) {
                hides = 1;
            }
            o += n;
            if (*o == ',') o++;
        }
    }
    free(line);
    return hides;
}

/*
 * "Unblock": whether /proc lists every process of our PID namespace: its /proc/self is us, and the mount at /proc
 * hides none (mounts_hide_processes). Otherwise a missing /proc/<id> proves nothing.
 */
static int proc_shows_all(void) {
    char self[32];
    ssize_t n = readlink("/proc/self", self, sizeof self - 1);
    if (n <= 0) return 0;
    self[n] = '\0';
    if (strtoul(self, NULL, 10) != (unsigned long)getpid()) return 0;
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (f == NULL) return 0;
    int hides = mounts_hide_processes(f);
    fclose(f);
    return !hides;
}

/*
 * "Unblock": the claimer's id (TYPE: a thread id, or a single-threaded process's pid) names no live thread in our
 * PID namespace, certainly: it is <= 0, or /proc shows everything (proc_shows_all) and /proc/<id>/stat is missing
 * (ENOENT, ESRCH) or shows state Z, X or x (Linux answers there for every thread id; a zombie will never commit,
 * though kill(id, 0) still finds it). Any other failure to read it counts as alive: a live claimer may commit with
 * a plain store. No start time: the mark has none.
 */
static int claimer_gone(int32_t id) {
    if (id <= 0) return 1;
    if ((uint32_t)id >= UNNAMED_THREAD_BASE) return 0; /* a worker's id without a tid: alive ("Liveness") */
    if (!proc_shows_all()) return 0;
    char text[1024];
    char *field = stat_fields((uint32_t)id, text, sizeof text);
    if (field == NULL) return errno == ENOENT || errno == ESRCH;
    return exited(*field);
}

/* "Unblock": whether the record at the head, whose LENGTH reads `length` (<= 0), has read so for peer_timeout
 * since this consumer first saw it so (a new position or a new LENGTH starts the clock again). */
static int mpsc_stuck(const struct ring *r, struct mpsc *s, uint32_t index, int32_t length) {
    double now = now_seconds();
    if (!s->stuck_valid || s->stuck_at != s->head || s->stuck_length != length) {
        s->stuck_valid = 1;
        s->stuck_at = s->head;
        s->stuck_length = length;
        s->stuck_since = now;
        /* After the LENGTH the caller loaded (seq_cst): the mark, or the TYPE of a commit under way. */
        s->stuck_mark = (int32_t)load_u32(r->data + index + RECORD_TYPE);
    }
    return now - s->stuck_since >= s->peer_timeout;
}

/* Consumes `size` bytes at `index` unread (a dead claimer's record, taken back) and releases them; `record` 0:
 * the padding part of a claim that wrapped, whose record (at 0) is counted when it is skipped. */
static void mpsc_skip(const struct ring *r, struct mpsc *s, uint32_t index, uint32_t size, int record) {
    mpsc_zero(r, index, size);
    s->head += size;
    s->stuck_valid = 0;
    if (record) s->unblocked++;
    mpsc_release(r, s);
}

/*
 * "Unblock": takes back the record at the head (LENGTH `length` <= 0, stuck for peer_timeout) if its claimer
 * can write no more: 1 if the head moved past it. LENGTH < 0: the claimer's id (TYPE) is not a live thread,
 * or no process holds the PRODUCER lock; then a CAS from the negative LENGTH to 0 takes it (the claimer's
 * commit CAS fails). LENGTH 0 (the claimer died between its tail CAS and its header store): only when no
 * process holds the PRODUCER lock; the claim is the zero LENGTH words up to the next header, the tail or the end.
 */
static int mpsc_take_back(struct ring *r, struct mpsc *s, uint32_t index, int32_t length) {
    if (length < 0) {
        /* The claimer's mark (~tid), stored before its negative LENGTH (observed by the caller's seq_cst load). */
        int32_t claimer = (int32_t)load_u32(r->data + index + RECORD_TYPE);
        /* Observes FLAG_PID_NS_MIXED (a claimer from another namespace set it before its mark): thread ids then
         * tell nothing, and only "no process holds the PRODUCER lock" lets us take a claim back. A producer
         * in our namespace may commit with a plain store, so a live one must never lose its claim. */
        int mixed = (atomic_load_explicit(word(r, OFF_FLAGS), memory_order_seq_cst) & FLAG_PID_NS_MIXED) != 0;
        /* A claimer that commits (or aborts) stores its record's TYPE (>= 0, or PADDING_TYPE) over its mark before
         * the LENGTH that ends the claim: a TYPE that is no mark (marks are ~tid, <= -2), or not the one first seen,
         * is a claimer at work, alive (else a message type read as an id takes a live claim back between its stores). */
        int at_work = claimer > -2 || claimer != s->stuck_mark;
        if ((mixed || at_work || !claimer_gone(~claimer)) && mpsc_producers_left(r)) return 0;
        uint32_t claimed = (uint32_t)0 - (uint32_t)length; /* |LENGTH|, without int32 overflow */
        uint32_t size = align8(claimed);
        if (claimed < RECORD_HEADER || index + size > r->capacity || !mpsc_within(r, s, size)) {
            die(EXIT_CORRUPT, "claimed record at %u has length %u", index, claimed);
        }
        uint32_t expected = (uint32_t)length;
        /* Takes the record from its claimer: only one of this CAS and the claimer's commit CAS wins. */
        if (!atomic_compare_exchange_strong_explicit(record_length(r, index), &expected, 0, memory_order_seq_cst, memory_order_seq_cst)) return 0;
        mpsc_skip(r, s, index, size, 1);
        return 1;
    }
    /* Observes the latest claim: whether anything is claimed at the head, and how far the dead claims reach. */
    uint32_t tail = atomic_load_explicit(word(r, OFF_PRODUCER_POSITION), memory_order_acquire);
    uint32_t claimed = tail - s->head;
    if (claimed > r->capacity || (tail & 7) != 0) die(EXIT_CORRUPT, "producer position %u is outside the ring (consumer %u)", tail, s->head);
    if (claimed == 0 || mpsc_producers_left(r)) return 0; /* empty; or a claimer may still write its header */
    uint32_t limit = index + claimed < r->capacity ? index + claimed : r->capacity;
    uint32_t end = index + RECORD_HEADER;
    /* Each observes a header word of what follows (no producer is left to write one); zero words belong to the dead claim. */
    while (end < limit && atomic_load_explicit(record_length(r, end), memory_order_acquire) == 0) end += RECORD_HEADER;
    /* Zeros to the end with the claimed space going on at 0, where no record is committed (observed: LENGTH at 0):
     * a wrapped claim's padding, not a record of its own (its claimer writes the padding's header before it commits
     * its record at 0). A headerless claim ending exactly there, followed by a second dead claim at 0, is counted
     * as one with it. */
    int padding = end == r->capacity && index + claimed > r->capacity
        && (int32_t)atomic_load_explicit(record_length(r, 0), memory_order_acquire) <= 0;
    mpsc_skip(r, s, index, end - index, !padding);
    return 1;
}

/*
 * "Consumer: poll, read, zero, release" into s->message: 1 read, 0 nothing committed at the head. Before it
 * returns 0 it has taken every padding record at the head (step 6), so a park() that calls it after announcing
 * never sleeps on room a producer may be waiting for.
 */
static int mpsc_try_read(struct ring *r, void *arg) {
    struct mpsc *s = arg;
    uint32_t start = s->head;
    for (;;) {
        uint32_t index = s->head & (r->capacity - 1);
        /* 1. Observes the claimer's commit: TYPE and payload are read after it. seq_cst: a parked reader's
         *    re-check comes after its announcement in WAITERS. */
        int32_t length = (int32_t)atomic_load_explicit(record_length(r, index), memory_order_seq_cst);
        if (length <= 0) {
            /* Claimed and not committed, or nothing claimed: a claimer dead for peer_timeout is skipped ("Unblock"). */
            if (mpsc_stuck(r, s, index, length) && mpsc_take_back(r, s, index, length)) {
                start = s->head; /* released already */
                continue;
            }
            break;
        }
        s->stuck_valid = 0;
        int32_t type = (int32_t)load_u32(r->data + index + RECORD_TYPE);
        uint32_t size = align8((uint32_t)length);
        /* 2. */
        if (length < RECORD_HEADER || index + size > r->capacity || !mpsc_within(r, s, size)
            || (type != PADDING_TYPE && (type < 0 || (uint32_t)length - RECORD_HEADER > spsc_max_message(r)))) {
            die(EXIT_CORRUPT, "record at %u claims length %d and type %d", index, length, type);
        }
        if (type == PADDING_TYPE) {
            /* 3. skipped; 4. zeroed and released at once: zeroed room behind the stored head would read, to a
             *    consumer after us, as a claim whose header is not written yet. One wake (5) for all of it below. */
            mpsc_zero(r, index, size);
            s->head += size;
            mpsc_store_head(r, s);
            continue;
        }
        uint32_t payload = (uint32_t)length - RECORD_HEADER;
        if (payload > PATTERN_MAX_LENGTH) die(EXIT_MISMATCH, "record of length %u is longer than any message of the pattern", payload);
        s->message->length = payload;
        s->message->type = type;
        memcpy(s->message->bytes, r->data + index + RECORD_HEADER, payload);
        mpsc_zero(r, index, size);
        s->head += size;
        mpsc_release(r, s); /* wakes the producers for the padding before it too */
        return 1;
    }
    /* 6. Nothing to read: the padding taken on the way is released (stored) already; a producer may be waiting
     *    for its room, and no message would come to wake it otherwise. */
    if (s->head != start) mpsc_wake_producers(r);
    return 0;
}

/* ---- Broadcast ("Broadcast (KIND 5)" in LAYOUT.md) ---- */

/* A 64-bit counter's word. */
static atomic_u32 *counter_word(const struct ring *r, size_t counter, size_t part) { return word(r, counter + part); }

/* "Counters": stores HI1, LO, HI2 when the high word changes, LO alone otherwise. Only the publisher writes. */
static void store64(const struct ring *r, size_t counter, uint64_t value, uint64_t previous) {
    uint32_t hi = (uint32_t)(value >> 32);
    if (hi != (uint32_t)(previous >> 32)) {
        /* Readers load HI2, LO, HI1: one that sees our HI1 but an older HI2 retries. seq_cst, as Node. */
        atomic_store_explicit(counter_word(r, counter, COUNTER_HI1), hi, memory_order_seq_cst);
        atomic_store_explicit(counter_word(r, counter, COUNTER_LO), (uint32_t)value, memory_order_seq_cst);
        atomic_store_explicit(counter_word(r, counter, COUNTER_HI2), hi, memory_order_seq_cst);
    } else {
        /* The low word alone publishes the new value. */
        atomic_store_explicit(counter_word(r, counter, COUNTER_LO), (uint32_t)value, memory_order_seq_cst);
    }
}

/* Loads HI2, LO, HI1 (seq_cst: in that order); equal high words make a value the counter held. 0: it kept changing. */
static int load64(const struct ring *r, size_t counter, uint64_t *value) {
    for (int i = 0; i < COUNTER_TRIES; i++) {
        uint32_t hi2 = atomic_load_explicit(counter_word(r, counter, COUNTER_HI2), memory_order_seq_cst);
        uint32_t lo = atomic_load_explicit(counter_word(r, counter, COUNTER_LO), memory_order_seq_cst);
        uint32_t hi1 = atomic_load_explicit(counter_word(r, counter, COUNTER_HI1), memory_order_seq_cst);
        if (hi1 == hi2) {
            *value = (uint64_t)hi1 << 32 | lo;
            return 1;
        }
    }
    return 0;
}

struct snapshot {
    uint64_t intent;
    uint32_t tail;
    uint64_t count;
    uint32_t latest;
};

/* "Snapshot": a quiescent one (no record in flight), or 0 after COUNTER_TRIES tries. */
static int bcast_snapshot(const struct ring *r, struct snapshot *q) {
    for (int i = 0; i < COUNTER_TRIES; i++) {
        uint64_t again;
        if (!load64(r, OFF_INTENT, &q->intent)) continue;
        /* After INTENT: equal to it means the record ending there is published (its COUNT, LATEST stored before). */
        q->tail = atomic_load_explicit(word(r, OFF_TAIL), memory_order_seq_cst);
        if (!load64(r, OFF_COUNT, &q->count)) continue;
        q->latest = atomic_load_explicit(word(r, OFF_LATEST), memory_order_seq_cst);
        /* Unchanged: no record began between the two INTENT loads, so COUNT is that of the tail. */
        if (load64(r, OFF_INTENT, &again) && again == q->intent && q->tail == (uint32_t)q->intent) {
            /* Plausible ("Snapshot"): records start and end at multiples of 8, and each takes at least 8 bytes. A
             * position between words would have us write (or read) a header past the data area's end. */
            if (q->intent % 8 != 0 || q->count > q->intent / 8 || (uint32_t)(q->tail - q->latest) % 8 != 0) {
                die(EXIT_CORRUPT, "snapshot INTENT=%llu COUNT=%llu LATEST=%u is no state a publisher leaves",
                    (unsigned long long)q->intent, (unsigned long long)q->count, q->latest);
            }
            return 1;
        }
    }
    return 0;
}

struct bcast_publisher {
    uint64_t position;        /* P: the tail, exact (repair pending: T, the tail the dead publisher left) */
    uint64_t count;           /* K: records published (repair pending: c, which may count the dead record) */
    int64_t slowest;          /* lossless: the slowest cursor of the last scan (valid once scanned) */
    int scanned;
    int repair;               /* lossless: the repair's jump is still to be made, once every live cursor is at T */
    uint64_t jump;            /* J: where the repair resumes, the start of the lap after the one the dead record can reach */
    double check_period;      /* lossless: seconds between sweeps for dead subscribers while full (a quarter of the peer timeout) */
    double full_since;        /* lossless: when the ring was last found full after a record fitted (0: not full) */
    double swept_at;          /* lossless: the last sweep while full */
    struct message *message;
};

/* "Counters", written whole: HI1, LO, HI2 whatever the previous value (a dead publisher may have left them torn). */
static void store64_whole(const struct ring *r, size_t counter, uint64_t value) {
    uint32_t hi = (uint32_t)(value >> 32);
    /* Readers load HI2, LO, HI1: one that sees our HI1 but an older HI2 retries. seq_cst, as store64. */
    atomic_store_explicit(counter_word(r, counter, COUNTER_HI1), hi, memory_order_seq_cst);
    atomic_store_explicit(counter_word(r, counter, COUNTER_LO), (uint32_t)value, memory_order_seq_cst);
    atomic_store_explicit(counter_word(r, counter, COUNTER_HI2), hi, memory_order_seq_cst);
}

/*
 * "A record left half-written: the repair", steps 1 to 3: the exact tail T and the count c from the raw
 * words (one load each, no retry: we hold the role, so nobody writes them), and the jump target J. The
 * predecessor died between its INTENT store (step 1 of a record R) and its TAIL store (step 5): T is the
 * tail before R, c is K or K + 1 (R counted). Or it was a repair killed in its own jump, after some of its
 * INTENT (J) and COUNT (c) stores: the same T and c, so the same J, and we complete that jump. A torn
 * INTENT (either death, crossing 2^32) gets the same jump: nobody loaded it, and the jump stores it whole.
 * Counters no publisher leaves are corruption.
 */
static void bcast_repair_counters(const struct ring *r, struct bcast_publisher *p) {
    /* Each observes what the dead publisher left (its stores came before its death, and so before the
     * PRODUCER lock we took); nothing changes them now, so the order of these loads does not matter. */
    uint32_t t = atomic_load_explicit(word(r, OFF_TAIL), memory_order_seq_cst);
    uint32_t intent_lo = atomic_load_explicit(counter_word(r, OFF_INTENT, COUNTER_LO), memory_order_seq_cst);
    uint32_t intent_hi1 = atomic_load_explicit(counter_word(r, OFF_INTENT, COUNTER_HI1), memory_order_seq_cst);
    uint32_t intent_hi2 = atomic_load_explicit(counter_word(r, OFF_INTENT, COUNTER_HI2), memory_order_seq_cst);
    uint32_t count_lo = atomic_load_explicit(counter_word(r, OFF_COUNT, COUNTER_LO), memory_order_seq_cst);
    uint32_t count_hi1 = atomic_load_explicit(counter_word(r, OFF_COUNT, COUNTER_HI1), memory_order_seq_cst);
    uint32_t count_hi2 = atomic_load_explicit(counter_word(r, OFF_COUNT, COUNTER_HI2), memory_order_seq_cst);
    uint64_t reach = 2 * (uint64_t)r->capacity; /* a record and its padding reach 3/2 CAPACITY past the tail, a jump 2 */
    uint64_t tail;
    int valid;
    if (intent_hi1 == intent_hi2) {
        /* INTENT whole: I, and T = I - (INTENT_LO - t) mod 2^32, valid if T >= 0 and I - T <= 2 CAPACITY. */
        uint64_t intent = (uint64_t)intent_hi1 << 32 | intent_lo;
        uint32_t ahead = intent_lo - t;
        valid = ahead <= intent && ahead <= reach;
        tail = intent - ahead;
    } else {
        /* Torn while crossing 2^32 (HI1 the new high word, HI2 the old): from the tail (a record's step 1) or from a
         * dead record's end (a jump's), so T is within 2 CAPACITY below the crossing and has HI2's high word. Valid
         * if HI1 = HI2 + 1 (in 64 bits: no wrap) and 2^32 - t <= 2 CAPACITY. */
        valid = (uint64_t)intent_hi1 == (uint64_t)intent_hi2 + 1 && (UINT64_C(1) << 32) - t <= reach;
        tail = (uint64_t)intent_hi2 << 32 | t;
    }
    uint64_t count;
    if (count_hi1 == count_hi2) {
        count = (uint64_t)count_hi1 << 32 | count_lo;
    } else {
        /* Torn while COUNT crossed 2^32 (a record's step 2, or a jump's COUNT store), INTENT torn or not: the value
         * being stored is HI1 * 2^32 exactly. Valid if HI1 = HI2 + 1 (in 64 bits: no wrap). */
        valid = valid && (uint64_t)count_hi1 == (uint64_t)count_hi2 + 1;
        count = (uint64_t)count_hi1 << 32;
    }
    /* T a multiple of 8, and c * 8 <= T + 8 (every record takes 8 bytes at least, and R may be counted), as
     * c <= T / 8 + 1 (no overflow). Not in the spec: J must fit in 64 bits (TypeScript: a safe integer). */
    valid = valid && (tail & 7) == 0 && count <= tail / 8 + 1 && tail <= UINT64_MAX - reach;
    if (!valid) {
        die(EXIT_CORRUPT, "the previous publisher left impossible counters: TAIL=%u INTENT=(%u, %u, %u) COUNT=(%u, %u, %u)", t,
            intent_hi1, intent_lo, intent_hi2, count_hi1, count_lo, count_hi2);
    }
    p->position = tail;
    p->count = count;
    /* Step 3: J - C > CAPACITY for every cursor C <= T, and no byte R wrote lies at or after J. */
    p->jump = (tail / r->capacity + 2) * r->capacity;
}

/* The repair's report: {"repairTail","repairCount","jump"}. */
static void bcast_report_repair(const struct bcast_publisher *p) {
    printf("{\"repairTail\":%llu,\"repairCount\":%llu,\"jump\":%llu}\n", (unsigned long long)p->position,
        (unsigned long long)p->count, (unsigned long long)p->jump);
    fflush(stdout);
}

/*
 * "The repair", steps 4 and 5: the stores that leave a quiescent snapshot at J (INTENT == TAIL == LATEST == J,
 * COUNT == c: LATEST == TAIL says there is no newest record), then one wake for every parked subscriber. Each subscriber, at
 * its next read, finds itself lapped and resumes at J, counting what it had not read (and R, if counted) lost.
 */
static void bcast_jump(const struct ring *r, struct bcast_publisher *p) {
    /* INTENT first, all three words: a subscriber copying a record from before J now fails its lap check
     * (J is more than a ring ahead of its cursor), and no snapshot is quiescent until TAIL follows. */
    store64_whole(r, OFF_INTENT, p->jump);
    /* COUNT, all three words, before TAIL: the quiescent snapshot at J sees c. */
    store64_whole(r, OFF_COUNT, p->count);
    /* LATEST = J before TAIL: a lapped subscriber's snapshot finds no newest record (LATEST == TAIL) and resumes
     * at J; left where it was, two jumps with no record between could put it more than 2^32 behind. */
    atomic_store_explicit(word(r, OFF_LATEST), (uint32_t)p->jump, memory_order_seq_cst);
    /* TAIL = J publishes the snapshot (release: the counters above); seq_cst for unpark's load of READ_WAITERS. */
    atomic_store_explicit(word(r, OFF_TAIL), (uint32_t)p->jump, memory_order_seq_cst);
    unpark(r, OFF_READ_WAITERS, INT_MAX); /* every parked subscriber: each has a lap to settle */
    bcast_report_repair(p);
    p->position = p->jump;
    p->repair = 0;
    p->scanned = 0; /* lossless: the cursors are J - T behind now (full) until the subscribers resettle at J */
}

/*
 * The publisher takes over from the one that created the Broadcast (and let go of it): P and K from a snapshot.
 * No quiescent snapshot: the previous publisher died in the middle of a record, and we repair ("A record left
 * half-written: the repair"), or complete the jump of a repair that died in it: lossy, the jump at once; lossless,
 * once every live subscriber has read up to T.
 */
static void bcast_publisher_attach(struct ring *r, struct bcast_publisher *p) {
    attach(r, KIND_BROADCAST);
    if (spsc_max_message(r) < PATTERN_MAX_LENGTH) die(EXIT_USAGE, "capacity=%u is too small for the pattern", r->capacity);
    take_role(r, 1, 1); /* one publisher: the PRODUCER byte, exclusive */
    p->scanned = 0;
    p->repair = 0;
    struct snapshot q;
    /* We hold the role: a record in flight now is one a dead publisher left half-written. */
    if (bcast_snapshot(r, &q)) {
        p->position = q.intent;
        p->count = q.count;
        /* Parked subscribers look again: a predecessor killed between a TAIL store and its wake (a record's, or a
         * repair's jump, which a lossless successor cannot publish past until they resettle) left them asleep. */
        unpark(r, OFF_READ_WAITERS, INT_MAX);
        return;
    }
    bcast_repair_counters(r, p);
    if (r->mode == MODE_LOSSY) {
        bcast_jump(r, p); /* step 4: a lossy publisher never waits */
    } else {
        p->repair = 1; /* step 5: bcast_try_write jumps once the subscribers are at T */
        /* Parked subscribers look again: one still joining moves its provisional CURSOR to TAIL, which the wait needs. */
        unpark(r, OFF_READ_WAITERS, INT_MAX);
    }
}

/* "The repair", step 5: whether every slot with OWNER != 0 has CURSOR == T (every live subscriber has read up to T). */
static int bcast_repair_ready(const struct ring *r, const struct bcast_publisher *p) {
    for (uint32_t i = 0; i < r->slot_size; i++) {
        size_t slot = BCAST_SLOTS + (size_t)i * BLOCK;
        /* Observes a subscriber's OWNER store (after its CURSOR): set means its CURSOR counts. */
        if (atomic_load_explicit(word(r, slot + SUB_OWNER), memory_order_acquire) == 0) continue;
        /* Observes the subscriber's progress: it stores CURSOR once done with the bytes before it; one still joining
         * moves its provisional cursor to TAIL, T, at each vain snapshot. Never after T (nothing is published past
         * it), so equal means read up to T. */
        if (atomic_load_explicit(word(r, slot + SUB_CURSOR), memory_order_acquire) != (uint32_t)p->position) return 0;
    }
    return 1;
}

/* "Lossless": whether a record ending at `end` laps no live subscriber; rescans the slots when the last scan says full. */
static int bcast_room(const struct ring *r, struct bcast_publisher *p, uint64_t end) {
    if (p->scanned && (int64_t)end - p->slowest <= (int64_t)r->capacity) return 1;
    uint32_t lag = 0;
    for (uint32_t i = 0; i < r->slot_size; i++) {
        size_t slot = BCAST_SLOTS + (size_t)i * BLOCK;
        /* Observes a subscriber's OWNER store (after its CURSOR): set means its CURSOR counts. */
        if (atomic_load_explicit(word(r, slot + SUB_OWNER), memory_order_acquire) == 0) continue;
        /* Observes the subscriber's progress: it stores CURSOR once done with the bytes before it. Loaded once per scan. */
        uint32_t cursor = atomic_load_explicit(word(r, slot + SUB_CURSOR), memory_order_acquire);
        uint32_t behind = (uint32_t)p->position - cursor; /* more than CAPACITY: a newcomer's provisional cursor: full */
        if (behind > lag) lag = behind;
    }
    p->slowest = (int64_t)p->position - lag;
    p->scanned = 1;
    return (int64_t)end - p->slowest <= (int64_t)r->capacity;
}

/*
 * "Lossless": frees the slots of dead subscribers: OWNER != 0 and nobody holds the slot's lock byte (our own
 * descriptor holds no slot), CAS(OWNER, seen, 0), and the lock looked at again (clear_unheld: a newcomer that took
 * the slot in between keeps it, its token perhaps equal to the dead one's). Returns how many were freed. (This
 * peer's Broadcast sides need a file, as the publisher role is a lock byte: the rule without one, by PID and
 * START, is not needed here.)
 */
static uint32_t bcast_sweep(const struct ring *r) {
    uint32_t freed = 0;
    for (uint32_t i = 0; i < r->slot_size; i++) {
        size_t slot = BCAST_SLOTS + (size_t)i * BLOCK;
        freed += (uint32_t)clear_unheld(r->fd, (off_t)slot, word(r, slot + SUB_OWNER));
    }
    stats.swept_subscribers += freed;
    return freed;
}

/*
 * "Lossless", when full (or waiting for a repair's jump): once the ring has been full for a check period, and then
 * every check period while it stays full, frees the slots of dead subscribers. Returns whether it freed any: the
 * caller then looks again at once (a rescan: `scanned` is cleared), rather than after a nap.
 */
static int bcast_full(const struct ring *r, struct bcast_publisher *p) {
    double now = now_seconds();
    if (p->full_since == 0) {
        p->full_since = now;
        p->swept_at = now;
        return 0;
    }
    if (now - p->swept_at < p->check_period) return 0;
    p->swept_at = now;
    if (bcast_sweep(r) == 0) return 0;
    p->scanned = 0;
    return 1;
}

/* "Publisher, step by step": 1 published, 0 (lossless) full. */
static int bcast_try_write(struct ring *r, void *arg) {
    struct bcast_publisher *p = arg;
    /* Lossless, the repair pending: full (wait, as for room) until no live subscriber has a record before T to read. */
    if (p->repair) {
        if (!bcast_repair_ready(r, p) && (!bcast_full(r, p) || !bcast_repair_ready(r, p))) return 0;
        bcast_jump(r, p);
    }
    const struct message *m = p->message;
    uint32_t size = record_size(m->length);
    uint32_t index = (uint32_t)(p->position & (r->capacity - 1));
    uint32_t to_end = r->capacity - index;
    uint64_t end = p->position + (size <= to_end ? size : to_end + size);
    if (r->mode == MODE_LOSSLESS && !bcast_room(r, p, end) && (!bcast_full(r, p) || !bcast_room(r, p, end))) return 0;
    p->full_since = 0;
    /* 1. INTENT before any byte changes: a subscriber's lap check after its copy sees it. */
    store64(r, OFF_INTENT, end, p->position);
    /* 2. COUNT before TAIL: a quiescent snapshot (INTENT == TAIL) sees the count of its tail. */
    store64(r, OFF_COUNT, p->count + 1, p->count);
    /* The plain stores below stay after the stores of 1 and 2. */
    atomic_thread_fence(memory_order_release);
    /* 3. The bytes: the padding before the wrap, then the record. */
    if (size > to_end) {
        store_u32(r->data + index, to_end); /* a padding record's LENGTH: its whole extent */
        store_u32(r->data + index + RECORD_TYPE, (uint32_t)PADDING_TYPE);
        index = 0;
    }
    store_u32(r->data + index, RECORD_HEADER + m->length);
    store_u32(r->data + index + RECORD_TYPE, (uint32_t)m->type);
    memcpy(r->data + index + RECORD_HEADER, m->bytes, m->length);
    /* 4. LATEST before TAIL: a snapshot finds where the newest record starts (release: after the bytes). */
    atomic_store_explicit(word(r, OFF_LATEST), (uint32_t)p->position, memory_order_seq_cst);
    /* 5. TAIL publishes the record (release: its bytes); seq_cst for unpark's load of READ_WAITERS. */
    atomic_store_explicit(word(r, OFF_TAIL), (uint32_t)end, memory_order_seq_cst);
    p->position = end;
    p->count++;
    unpark(r, OFF_READ_WAITERS, INT_MAX); /* 6. one wake for every parked subscriber */
    return 1;
}

struct bcast_subscriber {
    uint64_t cursor;          /* C: the position of the next record, exact */
    uint64_t number;          /* n: the number of the record at C (records published before it) */
    uint64_t first;           /* n when the join settled */
    uint64_t received, lost;
    uint64_t target;          /* read until n reaches it */
    int slot;                 /* -1: none (a lossy subscriber beyond the table) */
    uint32_t token;
    int pending;              /* the join's snapshot is still to be taken */
    struct message *message;
};

/* Publishes our cursor in our slot; a lossless publisher parked on it is woken. */
static void bcast_store_cursor(const struct ring *r, const struct bcast_subscriber *s) {
    if (s->slot < 0) return;
    /* Publishes our progress (release: we are done with the bytes before it); seq_cst for unpark's load of WRITE_WAITERS. */
    atomic_store_explicit(word(r, BCAST_SLOTS + (size_t)s->slot * BLOCK + SUB_CURSOR), (uint32_t)s->cursor, memory_order_seq_cst);
    if (r->mode == MODE_LOSSLESS) unpark(r, OFF_WRITE_WAITERS, INT_MAX); /* every writer (room) */
}

/*
 * Join (`lapped` 0) or resume after a lap at the newest record, counting the skipped ones: 0 while a record is in
 * flight (or its publisher died in it). A join that fails moves its slot's provisional CURSOR to TAIL ("the repair":
 * we start at a later snapshot's tail, so the bytes before TAIL are not ours to read), so that a lossless publisher
 * repairing a dead one's record, which waits for every CURSOR to reach the tail, is not held back by us for ever.
 */
static int bcast_settle(const struct ring *r, struct bcast_subscriber *s, int lapped) {
    struct snapshot q;
    if (!bcast_snapshot(r, &q)) {
        if (!lapped && s->slot >= 0) {
            /* Observes the publisher's TAIL store (or what a dead one left): a position we will not read before. */
            uint32_t tail = atomic_load_explicit(word(r, OFF_TAIL), memory_order_seq_cst);
            /* Publishes it as our provisional cursor; seq_cst for unpark's load of WRITE_WAITERS. The old value tells
             * whether it moved: only then can a parked repair have something new to see. */
            uint32_t was = atomic_exchange_explicit(word(r, BCAST_SLOTS + (size_t)s->slot * BLOCK + SUB_CURSOR), tail, memory_order_seq_cst);
            if (was != tail && r->mode == MODE_LOSSLESS) unpark(r, OFF_WRITE_WAITERS, INT_MAX);
        }
        return 0;
    }
    uint32_t back = q.tail - q.latest; /* from the newest record's start to the tail */
    if (!lapped) {
        s->pending = 0;
        s->first = q.count;
    } else if (q.intent < s->cursor || q.count < s->number) {
        die(EXIT_CORRUPT, "the tail (%llu, record %llu) is behind our cursor (%llu, record %llu)", (unsigned long long)q.intent,
            (unsigned long long)q.count, (unsigned long long)s->cursor, (unsigned long long)s->number);
    } else if (q.count >= s->number + 1 && back > 0 && back <= r->capacity && q.intent - back >= s->cursor) {
        s->lost += q.count - 1 - s->number;
        s->cursor = q.intent - back;
        s->number = q.count - 1;
        bcast_store_cursor(r, s);
        return 1;
    } else {
        s->lost += q.count - s->number;
    }
    s->cursor = q.intent;
    s->number = q.count;
    bcast_store_cursor(r, s);
    return 1;
}

/* "Join": a slot (its lock byte, exclusive), START, PID, a provisional CURSOR, then OWNER; then the cursor of a snapshot. */
static void bcast_join(struct ring *r, struct bcast_subscriber *s) {
    s->slot = -1;
    s->token = own_pid | UINT32_C(0x80000000); /* never 0 */
    for (uint32_t i = 0; i < r->slot_size && s->slot < 0; i++) {
        size_t slot = BCAST_SLOTS + (size_t)i * BLOCK;
        if (lock_byte(r, (off_t)slot, F_WRLCK) != 0) {
            if (errno == EAGAIN || errno == EACCES) continue; /* a live subscriber has it */
            die(EXIT_USAGE, "fcntl(F_OFD_SETLK) of slot %u: %s", i, strerror(errno));
        }
        atomic_store_explicit(word(r, slot + SUB_START), 0, memory_order_seq_cst); /* not recorded */
        atomic_store_explicit(word(r, slot + SUB_PID), own_pid, memory_order_seq_cst);
        /* A provisional cursor (the tail now) before OWNER: a publisher that counts us never reads garbage. */
        atomic_store_explicit(word(r, slot + SUB_CURSOR), atomic_load_explicit(word(r, OFF_TAIL), memory_order_seq_cst), memory_order_seq_cst);
        /* We hold the lock: an OWNER left in the slot was a dead subscriber's. Replacing it publishes the
         * words above (release) to the publisher's scan. */
        uint32_t seen = atomic_load_explicit(word(r, slot + SUB_OWNER), memory_order_relaxed);
        while (!atomic_compare_exchange_weak_explicit(word(r, slot + SUB_OWNER), &seen, s->token, memory_order_seq_cst, memory_order_relaxed)) { }
        s->slot = (int)i;
    }
    if (s->slot < 0 && r->mode == MODE_LOSSLESS) die(EXIT_BUSY, "all %u subscriber slots of the lossless Broadcast are taken", r->slot_size);
    s->pending = !bcast_settle(r, s, 0);
}

/* "Leaving": gives the slot back (the lock goes with our fd); a lossless publisher parked on our cursor goes on. */
static void bcast_leave(const struct ring *r, struct bcast_subscriber *s) {
    if (s->slot < 0) return;
    uint32_t token = s->token;
    /* Frees the slot, unless a publisher freed it (taking us for dead) and a newcomer took it. */
    atomic_compare_exchange_strong_explicit(word(r, BCAST_SLOTS + (size_t)s->slot * BLOCK + SUB_OWNER), &token, 0, memory_order_seq_cst, memory_order_relaxed);
    if (r->mode == MODE_LOSSLESS) unpark(r, OFF_WRITE_WAITERS, INT_MAX); /* every writer (room) */
    s->slot = -1;
}

/*
 * "Read": 1 a record copied into s->message (its number is s->number - 1), 2 every record before
 * s->target is accounted for, 0 nothing published (or a lap not settled yet).
 */
static int bcast_try_read(struct ring *r, void *arg) {
    struct bcast_subscriber *s = arg;
    if (s->pending && !bcast_settle(r, s, 0)) return 0;
    for (;;) {
        if (s->number >= s->target) return 2;
        /* Observes the publisher's TAIL store: the bytes below it are written. seq_cst: a parked reader's
         * re-check comes after its announcement in WAITERS. */
        uint32_t available = atomic_load_explicit(word(r, OFF_TAIL), memory_order_seq_cst) - (uint32_t)s->cursor;
        if (available == 0) {
            /* Caught up, or (lossy) lapped by a multiple of 2^32 bytes, which only the 64-bit INTENT tells apart
             * (torn for good: a publisher held up inside a crossing of 2^32, maybe a lap). */
            uint64_t intent;
            if (r->mode != MODE_LOSSY) return 0;
            if (load64(r, OFF_INTENT, &intent) && intent <= s->cursor + r->capacity) return 0;
        }
        if (available == 0 || available > r->capacity) { /* a multiple of 2^32, or more than a ring ahead: lapped */
            if (!bcast_settle(r, s, 1)) return 0;
            continue;
        }
        uint32_t index = (uint32_t)(s->cursor & (r->capacity - 1));
        uint32_t skipped = 0;
        /* Plain loads: the lap check below says whether they are the record's. */
        int32_t length = (int32_t)load_u32(r->data + index);
        int32_t type = (int32_t)load_u32(r->data + index + RECORD_TYPE);
        int bad = 0;
        if (type == PADDING_TYPE) {
            skipped = r->capacity - index;
            bad = (uint32_t)length != skipped || available < skipped + RECORD_HEADER;
            index = 0;
            length = (int32_t)load_u32(r->data);
            type = (int32_t)load_u32(r->data + RECORD_TYPE);
        }
        int64_t payload = (int64_t)length - RECORD_HEADER;
        bad = bad || payload < 0 || payload > spsc_max_message(r) || type < 0;
        uint32_t size = bad ? 0 : record_size((uint32_t)payload);
        bad = bad || skipped + size > available || index + size > r->capacity; /* never past the data area's end */
        uint32_t copied = !bad && payload <= PATTERN_MAX_LENGTH ? (uint32_t)payload : 0;
        memcpy(s->message->bytes, r->data + index + RECORD_HEADER, copied);
        /* The copy stays before the lap check. */
        atomic_thread_fence(memory_order_acquire);
        uint64_t intent;
        /* Observes INTENT, stored before the publisher rewrites anything: at most a ring ahead of C, the copy is whole.
         * Not modulo 2^64, as the spec's "INTENT - C > CAPACITY": an INTENT behind C would have rewritten nothing
         * (no publisher stores one). Its high words torn for good (a publisher held up, or dead, inside a
         * crossing of 2^32): lossy, maybe a lap; lossless, never, since that publisher overwrites no unread byte (the
         * jump of a repair shows in TAIL), so the record is handed out. */
        int torn = !load64(r, OFF_INTENT, &intent);
        if (torn ? r->mode == MODE_LOSSY : intent > s->cursor + r->capacity) {
            if (!bcast_settle(r, s, 1)) return 0;
            continue;
        }
        if (bad) die(EXIT_CORRUPT, "the record at position %llu has an impossible header (length %d, type %d)", (unsigned long long)s->cursor, length, type);
        if (payload > PATTERN_MAX_LENGTH) die(EXIT_MISMATCH, "record %llu of length %lld is longer than any message of the pattern", (unsigned long long)s->number, (long long)payload);
        s->message->length = (uint32_t)payload;
        s->message->type = type;
        s->cursor += skipped + size;
        s->number++;
        s->received++;
        bcast_store_cursor(r, s);
        return 1;
    }
}

/* ---- commands ---- */

struct options {
    uint64_t corrupt_at;   /* UINT64_MAX: none */
    int park;
    uint64_t pause_every;  /* 0: never */
    long pause_ms;
    int start_parked;      /* wait for a parked peer before the first message */
    int stats;
    long linger;           /* seconds to stay after the last message */
    int hang;              /* latest-publish: then stop in the middle of one more publish, until killed */
    uint32_t id;           /* producers: in each message's type */
    uint32_t producers;    /* consumers: how many producers write COUNT messages each */
    long peer_timeout_ms;  /* mpsc-consume: how long an unpublished record may block the head before a dead claimer's is skipped;
                            * bcast-publish (lossless): a quarter of it is the period of its sweeps for dead subscribers */
};

static void sleep_ms(double ms) {
    struct timespec t = { (time_t)(ms / 1000), (long)((ms - (double)(time_t)(ms / 1000) * 1000) * 1e6) };
    while (nanosleep(&t, &t) != 0 && errno == EINTR) { }
}

/* Waits until a side announces itself parked in the wait block at `waiters`, and gives it 1 ms to fall asleep. */
static void wait_for_parked(const struct ring *r, uint32_t waiters, const char *who) {
    double deadline = now_seconds() + STALL_SECONDS;
    /* Observes the sleeper's announcement (its seq_cst add to the WAITERS word). */
    while (atomic_load_explicit(word(r, waiters), memory_order_seq_cst) == 0) {
        if (closed(r)) die(EXIT_CLOSED, "the ring was closed by the other side");
        if (now_seconds() > deadline) die(EXIT_STALLED, "no %s parked within %d s", who, STALL_SECONDS);
        sleep_ms(0.05);
    }
    sleep_ms(1);
}

/* --pause-every: sleeps, then waits until a reader announces itself parked on the empty ring. */
static void pause_for_reader(const struct ring *r, long ms) {
    sleep_ms((double)ms);
    wait_for_parked(r, OFF_READ_WAITERS, "reader");
    stats.pauses++;
    after_pause = 1;
}

/* The producers: spsc-, mpmc-, mpsc-produce and bcast-publish (for which message k is record k). */
static void produce(struct ring *r, uint32_t kind, uint64_t count, const struct options *o) {
    struct message m;
    struct spsc s;
    struct mpsc q = { 0 };
    struct bcast_publisher b;
    int (*try_write)(struct ring *, void *) = mpmc_try_write;
    void *arg = &m;
    uint64_t first = 0; /* the pattern index of the first message */
    if (kind == KIND_SPSC) {
        spsc_attach(r);
        s.message = &m;
        try_write = spsc_try_write;
        arg = &s;
        take_role(r, 1, 1);
        spsc_start(r, &s, 1);
    } else if (kind == KIND_MPSC) {
        mpsc_attach(r, &q);
        q.message = &m;
        try_write = mpsc_try_write;
        arg = &q;
        take_role(r, 1, 0); /* any number of producers: the PRODUCER byte, shared */
        mpsc_note_namespace(r);
    } else if (kind == KIND_BROADCAST) {
        bcast_publisher_attach(r, &b); /* takes the role */
        b.check_period = (double)o->peer_timeout_ms / 4000;
        b.full_since = 0;
        b.message = &m;
        try_write = bcast_try_write;
        arg = &b;
        first = b.count;
    } else {
        attach(r, KIND_MPMC);
        if (r->slot_size < PATTERN_MAX_LENGTH - 1) die(EXIT_USAGE, "slotSize=%u is too small for the pattern", r->slot_size);
        take_role(r, 1, 0);
    }
    if (o->start_parked) wait_for_parked(r, OFF_READ_WAITERS, "reader");
    for (uint64_t i = 0; i < count; i++) {
        if (o->pause_every != 0 && i != 0 && i % o->pause_every == 0) pause_for_reader(r, o->pause_ms);
        make_message(&m, first + i, i == o->corrupt_at);
        m.type += (int32_t)(7 * o->id);
        if (!o->park) {
            spin_yield(r, try_write, arg);
            continue;
        }
        int done = 0;
        for (int n = 0; n < SPIN_ATTEMPTS && !done && !closed(r); n++) done = try_write(r, arg);
        if (!done && !park(r, OFF_WRITE_WAITERS, try_write, arg)) {
            die(EXIT_CLOSED, "the ring was closed after %llu of %llu messages", (unsigned long long)i, (unsigned long long)count);
        }
    }
}

/* Records the MpscRing consumer skipped ("Unblock"), for --stats. */
static uint64_t unblocked_records;

/* The consumers: spsc-, mpmc-, mpsc-consume; COUNT messages from each of `producers` producers (ids in the types). */
static void consume(struct ring *r, uint32_t kind, uint64_t count, const struct options *o) {
    uint32_t producers = o->producers;
    struct message m;
    struct spsc s;
    struct mpsc q = { .peer_timeout = (double)o->peer_timeout_ms / 1000 };
    int (*try_read)(struct ring *, void *) = mpmc_try_read;
    void *arg = &m;
    if (kind == KIND_SPSC) {
        spsc_attach(r);
        s.message = &m;
        try_read = spsc_try_read;
        arg = &s;
    } else if (kind == KIND_MPSC) {
        mpsc_attach(r, &q);
        q.message = &m;
        try_read = mpsc_try_read;
        arg = &q;
    } else {
        attach(r, KIND_MPMC);
    }
    take_role(r, 0, kind != KIND_MPMC); /* one consumer (exclusive), but any number of a MpmcQueue's */
    if (kind == KIND_SPSC) spsc_start(r, &s, 0);
    if (kind == KIND_MPSC) mpsc_load_positions(r, &q);
    if (kind == KIND_MPSC) mpsc_note_namespace(r);
    uint64_t *next = calloc(producers, sizeof *next); /* per producer: the index of its next message */
    if (next == NULL) die(EXIT_USAGE, "out of memory");
    if (o->start_parked) wait_for_parked(r, OFF_WRITE_WAITERS, "writer");
    for (uint64_t i = 0; i < count * producers; i++) {
        int got = 0;
        for (int n = 0; n < SPIN_ATTEMPTS && !got; n++) got = try_read(r, arg);
        if (!got) got = park(r, OFF_READ_WAITERS, try_read, arg);
        if (!got) die(EXIT_CLOSED, "the ring was closed after %llu of %llu messages", (unsigned long long)i, (unsigned long long)(count * producers));
        /* The type names the producer (i % 7 + 7 * id); one producer's are checked as they are. */
        uint32_t p = producers == 1 ? 0 : (uint32_t)m.type / 7;
        if (m.type < 0 || p >= producers) die(EXIT_MISMATCH, "message with type %d from no producer of 0..%u", m.type, producers - 1);
        if (next[p] == count) die(EXIT_MISMATCH, "producer %u: a message after its last one (length %u, type %d)", p, m.length, m.type);
        check_message(m.bytes, m.length, m.type - (int32_t)(7 * p), next[p]++);
    }
    free(next);
    /* The writers wrote exactly COUNT messages each: one more would break the pattern too. */
    if (try_read(r, arg)) die(EXIT_MISMATCH, "a message after the last one (length %u, type %d)", m.length, m.type);
    unblocked_records = q.unblocked;
}

/* bcast-subscribe: joins, then reads until records 0 .. COUNT-1 are accounted for, checking each record k against message k. */
static void subscribe(struct ring *r, uint64_t count, const struct options *o) {
    struct message m;
    struct bcast_subscriber s = { .target = count, .message = &m };
    attach(r, KIND_BROADCAST);
    if (spsc_max_message(r) < PATTERN_MAX_LENGTH) die(EXIT_USAGE, "capacity=%u is too small for the pattern", r->capacity);
    bcast_join(r, &s);
    printf("joined\n");
    fflush(stdout);
    for (;;) {
        int got = 0;
        for (int n = 0; n < SPIN_ATTEMPTS && !got; n++) got = bcast_try_read(r, &s);
        if (!got) got = park(r, OFF_READ_WAITERS, bcast_try_read, &s);
        if (!got) die(EXIT_CLOSED, "the Broadcast was closed at record %llu of %llu", (unsigned long long)s.number, (unsigned long long)count);
        if (got == 2) break;
        check_message(m.bytes, m.length, m.type, s.number - 1);
        if (o->pause_every != 0 && s.received % o->pause_every == 0) sleep_ms((double)o->pause_ms);
    }
    bcast_leave(r, &s);
    printf("{\"first\":%llu,\"received\":%llu,\"lost\":%llu,\"parksWoken\":%llu}\n", (unsigned long long)s.first,
        (unsigned long long)s.received, (unsigned long long)s.lost, (unsigned long long)stats.parks_woken);
}

/* ---- LatestValue ("LatestValue" in LAYOUT.md) ---- */

/* The slot of version v (v & 1). Version v's value is message v of the pattern. */
static unsigned char *latest_slot(const struct ring *r, uint64_t version) {
    return r->data + (size_t)(version & 1) * r->slot_stride;
}

/* The writer's starting point: the version in the published slot, which must agree with PUBLISHED. */
static uint64_t latest_current(const struct ring *r) {
    uint32_t published = atomic_load_explicit(word(r, OFF_PUBLISHED), memory_order_seq_cst);
    unsigned char *slot = latest_slot(r, published);
    uint64_t v = load_u32(slot + LV_VERSION_LO) | (uint64_t)load_u32(slot + LV_VERSION_HI) << 32;
    if ((uint32_t)v != published) die(EXIT_CORRUPT, "slot %u holds version %llu but PUBLISHED is %u", published & 1, (unsigned long long)v, published);
    return v;
}

/*
 * "Writer, step by step": publishes version v (the pattern of index v). With
 * `hang`, stops in the middle of step 2 (SEQ odd, half the value written),
 * says "hung" and sleeps until it is killed.
 */
static void latest_publish(struct ring *r, uint64_t v, int hang) {
    unsigned char *slot = latest_slot(r, v);
    atomic_u32 *seq = (atomic_u32 *)(void *)(slot + LV_SEQ);
    uint32_t length = pattern_length(v);
    if (length > r->capacity) length = r->capacity;
    /* Only the role holder writes SEQ: our own last store, or a dead writer's. */
    uint32_t q = atomic_load_explicit(seq, memory_order_relaxed);
    uint32_t begin = (q & 1) ? q + 2 : q + 1;
    atomic_store_explicit(seq, begin, memory_order_seq_cst);   /* 1. a reader copying this slot sees SEQ change */
    atomic_thread_fence(memory_order_release);                  /*    the plain stores below stay after it */
    for (uint32_t j = 0; j < length; j++) {
        slot[LV_VALUE + j] = pattern_byte(v, j);
        if (hang && j == length / 2) {
            store_u32(slot + LV_LENGTH, 0xdeadbeef);
            printf("hung\n");
            fflush(stdout);
            for (;;) sleep_ms(1000);
        }
    }
    store_u32(slot + LV_LENGTH, length);
    store_u32(slot + LV_TYPE, (uint32_t)pattern_type(v));
    store_u32(slot + LV_VERSION_LO, (uint32_t)v);
    store_u32(slot + LV_VERSION_HI, (uint32_t)(v >> 32));
    atomic_store_explicit(seq, begin + 1, memory_order_seq_cst);  /* 3. release: the slot is whole */
    atomic_store_explicit(word(r, OFF_PUBLISHED), (uint32_t)v, memory_order_seq_cst);  /* 4. the newest value */
    unpark(r, OFF_READ_WAITERS, INT_MAX);                          /* 5. all parked readers, one wake */
}

struct latest_read {
    uint32_t since;     /* wait for a PUBLISHED other than this */
    uint64_t version;
    uint32_t length;
    int32_t type;
    uint8_t *bytes;     /* CAPACITY bytes */
};

/* "Reader, step by step": 0 while PUBLISHED == since, else copies the newest value into *arg and returns 1. */
static int latest_try_read(struct ring *r, void *arg) {
    struct latest_read *out = arg;
    uint32_t p = atomic_load_explicit(word(r, OFF_PUBLISHED), memory_order_seq_cst);
    if (p == out->since) return 0;
    for (;;) {
        unsigned char *slot = latest_slot(r, p);
        atomic_u32 *seq = (atomic_u32 *)(void *)(slot + LV_SEQ);
        uint32_t q = atomic_load_explicit(seq, memory_order_acquire);
        int whole = 0;
        uint32_t lo = 0;
        if ((q & 1) == 0) {
            out->length = load_u32(slot + LV_LENGTH);
            out->type = (int32_t)load_u32(slot + LV_TYPE);
            lo = load_u32(slot + LV_VERSION_LO);
            out->version = lo | (uint64_t)load_u32(slot + LV_VERSION_HI) << 32;
            memcpy(out->bytes, slot + LV_VALUE, out->length < r->capacity ? out->length : r->capacity);
            atomic_thread_fence(memory_order_acquire);  /* the copy stays before the re-check */
            whole = atomic_load_explicit(seq, memory_order_relaxed) == q;
            if (whole && lo == p) {
                if (out->length > r->capacity || out->type < 0) die(EXIT_CORRUPT, "slot %u: length %u, type %d", p & 1, out->length, out->type);
                return 1;
            }
        }
        uint32_t again = atomic_load_explicit(word(r, OFF_PUBLISHED), memory_order_seq_cst);
        if (again == p && (whole || (q & 1))) die(EXIT_CORRUPT, "the published slot %u does not hold version %u (SEQ=%u)", p & 1, p, q);
        p = again;
    }
}

/*
 * "The writer role" where the region has no file to lock (a System V segment): CAS WRITER_TOKEN from 0, or
 * from a dead writer's id, to -pid ("registering"), then PRODUCER_START, then the pid. A live holder: busy.
 * This program is one thread and takes the role once, so a token naming our own pid (either sign) is a
 * writer that had our pid before us and died (a container restarted as pid 1): taken over, never busy.
 */
static void latest_take_token(const struct ring *r) {
    atomic_u32 *token = word(r, OFF_WRITER_TOKEN);
    uint32_t start;
    if (start_time_of(own_pid, &start) != 1) die(EXIT_USAGE, "no /proc/%u/stat: cannot record our start time", own_pid);
    for (;;) {
        /* Observes the registration: 0 free, -pid being registered, else a pid whose start time was stored before it. */
        uint32_t holder = atomic_load_explicit(token, memory_order_seq_cst);
        /* After the token: the start time its holder stored before it (a later holder's makes our CAS fail). */
        uint32_t seen = atomic_load_explicit(word(r, OFF_PRODUCER_START), memory_order_seq_cst);
        if (holder != 0) {
            int registering = (int32_t)holder < 0;
            uint32_t pid = registering ? (uint32_t)-holder : holder;
            if (pid != own_pid && process_alive(pid, registering ? 0 : seen)) die(EXIT_BUSY, "the writer role is held by live thread %u", pid);
        }
        /* Re-read after the /proc read, just before the CAS: a successor that took the word meanwhile stored its start time,
           and may have left `holder` in it again (a reused id). Left: a whole takeover, close and re-registration in between. */
        if (atomic_load_explicit(word(r, OFF_PRODUCER_START), memory_order_seq_cst) != seen) continue;
        /* Claims the word from what we judged; a process that moved first makes it fail, and we look again. */
        if (!atomic_compare_exchange_strong_explicit(token, &holder, (uint32_t)-own_pid, memory_order_seq_cst, memory_order_seq_cst)) continue;
        atomic_store_explicit(word(r, OFF_PRODUCER_START), start, memory_order_seq_cst); /* before the pid */
        atomic_store_explicit(token, own_pid, memory_order_seq_cst);                     /* registered */
        atomic_store_explicit(word(r, OFF_PRODUCER_PID), own_pid, memory_order_seq_cst);  /* for inspect */
        return;
    }
}

/* latest-publish: COUNT versions after the current one, pausing as produce() does; --hang: then one half-written. */
static void latest_writer(struct ring *r, uint64_t count, const struct options *o) {
    attach(r, KIND_LATEST);
    if (r->fd >= 0) take_role(r, 1, 1); /* one writer: the PRODUCER byte, exclusive */
    else latest_take_token(r);
    uint64_t v = latest_current(r);
    for (uint64_t i = 1; i <= count; i++) {
        if (o->pause_every != 0 && i != 1 && (i - 1) % o->pause_every == 0) pause_for_reader(r, o->pause_ms);
        latest_publish(r, v + i, 0);
    }
    if (o->hang) latest_publish(r, v + count + 1, 1);
}

/* latest-read: parks for each new version until version TARGET, checking each value against the pattern. */
static void latest_reader(struct ring *r, uint64_t target) {
    attach(r, KIND_LATEST);
    struct latest_read m = { .since = UINT32_MAX, .bytes = malloc(r->capacity + 1) };
    if (m.bytes == NULL) die(EXIT_USAGE, "out of memory");
    latest_try_read(r, &m); /* the current value (PUBLISHED is never UINT32_MAX here) */
    uint64_t seen = 0, last = m.version;
    while (last < target) {
        m.since = (uint32_t)last;
        int got = 0;
        for (int n = 0; n < SPIN_ATTEMPTS && !got; n++) got = latest_try_read(r, &m);
        if (!got) got = park(r, OFF_READ_WAITERS, latest_try_read, &m);
        if (m.version <= last) die(EXIT_MISMATCH, "version went from %llu to %llu", (unsigned long long)last, (unsigned long long)m.version);
        check_message(m.bytes, m.length, m.type, m.version); /* needs maxSize >= 199: the whole pattern */
        last = m.version;
        seen++;
    }
    printf("{\"last\":%llu,\"seen\":%llu,\"parksWoken\":%llu}\n", (unsigned long long)last, (unsigned long long)seen,
        (unsigned long long)stats.parks_woken);
    free(m.bytes);
}

static uint64_t parse_count(const char *text, const char *what) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') die(EXIT_USAGE, "%s=%s is not a number", what, text);
    return v;
}

int main(int argc, char **argv) {
    const uint32_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    if (first != 1) die(EXIT_USAGE, "shmring rings are little-endian and this machine is not");

    const char *usage = "usage: ring_peer spsc-produce|spsc-consume|mpmc-produce|mpmc-consume|mpsc-produce|mpsc-consume|"
        "latest-publish|latest-read|bcast-publish|bcast-subscribe PATH COUNT "
        "[--id P] [--producers N] [--peer-timeout-ms T] [--corrupt-at K] [--park] [--start-parked] [--pause-every N] [--pause-ms D] [--stats] [--linger S] [--hang]\n"
        "   or: ring_peer mountinfo-hides FILE (prints 1 if the mountinfo lines in FILE hide processes at /proc, else 0)";
    if (argc == 3 && strcmp(argv[1], "mountinfo-hides") == 0) {
        FILE *f = fopen(argv[2], "re");
        if (f == NULL) die(EXIT_USAGE, "%s: %s", argv[2], strerror(errno));
        printf("%d\n", mounts_hide_processes(f));
        fclose(f);
        return 0;
    }
    if (argc < 4) die(EXIT_USAGE, "%s", usage);
    const char *command = argv[1];
    uint64_t count = parse_count(argv[3], "COUNT");
    struct options o = { .corrupt_at = UINT64_MAX, .park = 0, .pause_every = 0, .pause_ms = 5, .stats = 0, .linger = 0, .hang = 0,
        .id = 0, .producers = 1, .peer_timeout_ms = 1000 };
    for (int a = 4; a < argc; a++) {
        int has_value = a + 1 < argc;
        if (strcmp(argv[a], "--corrupt-at") == 0 && has_value) o.corrupt_at = parse_count(argv[++a], "K");
        else if (strcmp(argv[a], "--pause-every") == 0 && has_value) o.pause_every = parse_count(argv[++a], "N");
        else if (strcmp(argv[a], "--pause-ms") == 0 && has_value) o.pause_ms = (long)parse_count(argv[++a], "D");
        else if (strcmp(argv[a], "--linger") == 0 && has_value) o.linger = (long)parse_count(argv[++a], "S");
        else if (strcmp(argv[a], "--id") == 0 && has_value) o.id = (uint32_t)parse_count(argv[++a], "P");
        else if (strcmp(argv[a], "--producers") == 0 && has_value) o.producers = (uint32_t)parse_count(argv[++a], "N");
        else if (strcmp(argv[a], "--peer-timeout-ms") == 0 && has_value) o.peer_timeout_ms = (long)parse_count(argv[++a], "T");
        else if (strcmp(argv[a], "--park") == 0) o.park = 1;
        else if (strcmp(argv[a], "--start-parked") == 0) o.start_parked = 1;
        else if (strcmp(argv[a], "--stats") == 0) o.stats = 1;
        else if (strcmp(argv[a], "--hang") == 0) o.hang = 1;
        else die(EXIT_USAGE, "%s (bad option %s)", usage, argv[a]);
    }

    /* Types stay in [0, 2^31 - 1]; a consumer needs a producer. */
    if (o.id > (INT32_MAX - 6) / 7 || o.producers == 0 || o.producers > (INT32_MAX - 6) / 7) die(EXIT_USAGE, "%s (bad --id or --producers)", usage);
    own_pid = (uint32_t)getpid();

    struct ring r;
    map_region(&r, argv[2]);
    if (r.fd < 0 && strncmp(command, "latest-", 7) != 0) die(EXIT_USAGE, "%s: only the latest-* commands join a System V segment", command);
    if (strcmp(command, "spsc-produce") == 0) produce(&r, KIND_SPSC, count, &o);
    else if (strcmp(command, "spsc-consume") == 0) consume(&r, KIND_SPSC, count, &o);
    else if (strcmp(command, "mpmc-produce") == 0) produce(&r, KIND_MPMC, count, &o);
    else if (strcmp(command, "mpmc-consume") == 0) consume(&r, KIND_MPMC, count, &o);
    else if (strcmp(command, "mpsc-produce") == 0) produce(&r, KIND_MPSC, count, &o);
    else if (strcmp(command, "mpsc-consume") == 0) consume(&r, KIND_MPSC, count, &o);
    else if (strcmp(command, "bcast-publish") == 0) produce(&r, KIND_BROADCAST, count, &o);
    else if (strcmp(command, "bcast-subscribe") == 0) subscribe(&r, count, &o);
    else if (strcmp(command, "latest-publish") == 0) latest_writer(&r, count, &o);
    else if (strcmp(command, "latest-read") == 0) latest_reader(&r, count);
    else die(EXIT_USAGE, "unknown command %s", command);
    if (o.linger != 0) {
        printf("done\n");
        fflush(stdout);
        sleep_ms((double)o.linger * 1000);
    }
    if (r.fd < 0) {
        /* "The writer role": give it back (only if still ours), then detach. */
        uint32_t mine = own_pid;
        if (strcmp(command, "latest-publish") == 0) {
            atomic_compare_exchange_strong_explicit(word(&r, OFF_WRITER_TOKEN), &mine, 0, memory_order_seq_cst, memory_order_seq_cst);
        }
        shmdt(r.base);
    } else {
        let_go(&r);
        munmap(r.base, r.region_size);
        close(r.fd); /* with the mapping gone, the last reference: the HOLDER and name locks go */
    }
    if (o.stats) {
        printf("{\"wakes\":%llu,\"wokeSleepers\":%llu,\"parksWoken\":%llu,\"parksChanged\":%llu,\"parksTimedOut\":%llu,"
            "\"pauses\":%llu,\"pauseWakes\":%llu,\"unblocked\":%llu,\"heavyFences\":%llu,\"sweptSubscribers\":%llu}\n",
            (unsigned long long)stats.wakes, (unsigned long long)stats.woke_sleepers, (unsigned long long)stats.parks_woken,
            (unsigned long long)stats.parks_changed, (unsigned long long)stats.parks_timed_out, (unsigned long long)stats.pauses,
            (unsigned long long)stats.pause_wakes, (unsigned long long)unblocked_records, (unsigned long long)stats.heavy_fences,
            (unsigned long long)stats.swept_subscribers);
    }
    return 0;
}
