/*
 * The durable tree's write path: CRC-32C of WAL frames and the frame write
 * overlapped with the insert's hashing (rt_wal_append).
 *
 * Why CRC-32C and not keyed BLAKE3: the frame checksum detects torn writes
 * and media damage, which CRC-32C catches (every burst of up to 32 bits,
 * everything else but for 1 in 2^32) at several GB/s with one instruction
 * per 8 bytes. A keyed BLAKE3 would only add protection against someone who
 * can edit the files, and such a person can also edit the key's holder or
 * the meta record; the trust rules leave deliberate edits to the rehash of
 * the levels and the sync record, not to the frame checksum.
 */
#include "rt_config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "rotortree.h"
#include "rt_pool.h"
#include "rt_tree.h"

#if RT_X86
#include <nmmintrin.h>
#endif

// The CRC32 instructions are optional in ARMv8.0 (mandatory from 8.1), so
// they are used only when the kernel reports them (HWCAP_CRC32).
#if defined(__aarch64__) && defined(__GNUC__) && defined(__linux__)
#define RT_ARM_CRC 1
#include <arm_acle.h>
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1UL << 7)
#endif
#ifdef __clang__
#define RT_CRC_TARGET __attribute__((target("crc")))
#else
#define RT_CRC_TARGET __attribute__((target("+crc")))
#endif
#else
#define RT_ARM_CRC 0
#endif

/* ---- CRC-32C ----------------------------------------------------------- */

#define CRC32C_POLY 0x82F63B78u /* reflected Castagnoli */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_hw;

/* The CRC instructions take 3 cycles each but can start one per cycle, so
 * one dependent chain over a frame runs at a third of their speed: the
 * instruction paths checksum three blocks of CRC_BLOCK bytes side by side
 * and join them. The raw CRC register (no inversions) is linear: after
 * A||B it is shift(crc(A)) ^ crc0(B), where crc0 starts from 0 and shift
 * advances a register over CRC_BLOCK zero bytes; shift is linear too, so
 * it is four table lookups (one per byte of the register). A frame of
 * 100,000 leaves spent 7% of a durable insert_many's samples in the
 * single chain, on the writer thread, which is its critical path. */
#define CRC_BLOCK 4096u
static uint32_t crc_shift_table[4][256];

#if RT_X86 || RT_ARM_CRC // only the instruction paths join blocks
static uint32_t crc_shift(uint32_t c)
{
    return crc_shift_table[0][c & 0xffu] ^ crc_shift_table[1][(c >> 8) & 0xffu] ^
           crc_shift_table[2][(c >> 16) & 0xffu] ^ crc_shift_table[3][c >> 24];
}
#endif

static void crc_init(void)
{
    for (unsigned i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    // Slicing by 8: table t holds the CRC of byte i followed by t zero bytes.
    for (unsigned i = 0; i < 256; i++)
        for (unsigned t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xffu];
    uint32_t basis[32];
    for (unsigned bit = 0; bit < 32; bit++) {
        uint32_t c = 1u << bit;
        for (unsigned i = 0; i < CRC_BLOCK; i++)
            c = (c >> 8) ^ crc_table[0][c & 0xffu];
        basis[bit] = c;
    }
    for (unsigned k = 0; k < 4; k++)
        for (unsigned b = 0; b < 256; b++) {
            uint32_t v = 0;
            for (unsigned j = 0; j < 8; j++)
                if (b >> j & 1u)
                    v ^= basis[8 * k + j];
            crc_shift_table[k][b] = v;
        }
#if RT_X86
    __builtin_cpu_init();
    crc_hw = __builtin_cpu_supports("sse4.2");
#elif RT_ARM_CRC
    crc_hw = (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
#endif
}

static uint32_t crc_portable(uint32_t c, const uint8_t *p, size_t n)
{
    while (n && ((uintptr_t)p & 7u)) {
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xffu];
        n--;
    }
    while (n >= 8) {
        uint32_t lo = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                      (uint32_t)p[3] << 24;
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                      (uint32_t)p[7] << 24;
        lo ^= c;
        c = crc_table[7][lo & 0xffu] ^ crc_table[6][(lo >> 8) & 0xffu] ^
            crc_table[5][(lo >> 16) & 0xffu] ^ crc_table[4][lo >> 24] ^
            crc_table[3][hi & 0xffu] ^ crc_table[2][(hi >> 8) & 0xffu] ^
            crc_table[1][(hi >> 16) & 0xffu] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xffu];
    return c;
}

#if RT_X86
// "crc32" spelled out: recent Clang no longer lets "sse4.2" alone enable
// the CRC32 instruction's intrinsics (GCC and older Clang accept both).
__attribute__((target("sse4.2,crc32"))) static uint32_t crc_sse42(uint32_t c, const uint8_t *p,
                                                             size_t n)
{
    while (n && ((uintptr_t)p & 7u)) {
        c = _mm_crc32_u8(c, *p++);
        n--;
    }
    uint64_t c64 = c;
    while (n >= 3 * CRC_BLOCK) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < CRC_BLOCK; i += 8) {
            uint64_t w0, w1, w2;
            memcpy(&w0, p + i, 8);
            memcpy(&w1, p + CRC_BLOCK + i, 8);
            memcpy(&w2, p + 2 * CRC_BLOCK + i, 8);
            c64 = _mm_crc32_u64(c64, w0);
            c1 = _mm_crc32_u64(c1, w1);
            c2 = _mm_crc32_u64(c2, w2);
        }
        c64 = crc_shift(crc_shift((uint32_t)c64) ^ (uint32_t)c1) ^ (uint32_t)c2;
        p += 3 * CRC_BLOCK;
        n -= 3 * CRC_BLOCK;
    }
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c64 = _mm_crc32_u64(c64, word);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--)
        c = _mm_crc32_u8(c, *p++);
    return c;
}
#endif

static _Atomic int crc_force_portable;

#if RT_ARM_CRC
RT_CRC_TARGET static uint32_t crc_armv8(uint32_t c, const uint8_t *p, size_t n)
{
    while (n && ((uintptr_t)p & 7u)) {
        c = __crc32cb(c, *p++);
        n--;
    }
    while (n >= 3 * CRC_BLOCK) {
        uint32_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < CRC_BLOCK; i += 8) {
            uint64_t w0, w1, w2;
            memcpy(&w0, p + i, 8);
            memcpy(&w1, p + CRC_BLOCK + i, 8);
            memcpy(&w2, p + 2 * CRC_BLOCK + i, 8);
            c = __crc32cd(c, w0);
            c1 = __crc32cd(c1, w1);
            c2 = __crc32cd(c2, w2);
        }
        c = crc_shift(crc_shift(c) ^ c1) ^ c2;
        p += 3 * CRC_BLOCK;
        n -= 3 * CRC_BLOCK;
    }
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = __crc32cd(c, word);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = __crc32cb(c, *p++);
    return c;
}
#endif

uint32_t rt_crc32c(uint32_t crc, const uint8_t *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    uint32_t c = ~crc;
    if (crc_hw && !atomic_load_explicit(&crc_force_portable, memory_order_relaxed)) {
#if RT_X86
        return ~crc_sse42(c, data, len);
#elif RT_ARM_CRC
        return ~crc_armv8(c, data, len);
#endif
    }
    return ~crc_portable(c, data, len);
}

const char *rt_crc32c_impl(void)
{
    pthread_once(&crc_once, crc_init);
    if (!crc_hw || atomic_load(&crc_force_portable))
        return "portable";
    return RT_X86 ? "sse4.2" : "armv8-crc";
}

void rt_crc32c_force_portable(int on)
{
    atomic_store(&crc_force_portable, on);
}

/* ---- frame writes -------------------------------------------------------- */

static _Atomic int inject_errno;
static _Atomic size_t inject_after;

void rt_wal_fail_next_write(int error_number, size_t after_bytes)
{
    atomic_store(&inject_after, after_bytes);
    atomic_store(&inject_errno, error_number);
}

typedef struct wal_job {
    int fd;
    uint64_t offset;
    uint8_t *header;
    const uint8_t *leaves;
    size_t nbytes;
    int error;              /* errno of a failed write, 0 if it succeeded */
    _Atomic int done;
    struct wal_job *next;
} wal_job;

static ssize_t frame_pwritev(int fd, const struct iovec *iov, int n, uint64_t offset,
                             size_t total)
{
    int fail = atomic_exchange(&inject_errno, 0);
    if (fail) {
        size_t allowed = atomic_load(&inject_after);
        if (allowed >= total)
            allowed = total;
        // Write a prefix of the frame, as a disk that fills up part way would.
        struct iovec part[2];
        int k = 0;
        size_t left = allowed;
        for (int i = 0; i < n && left; i++, k++) {
            part[k].iov_base = iov[i].iov_base;
            part[k].iov_len = iov[i].iov_len < left ? iov[i].iov_len : left;
            left -= part[k].iov_len;
        }
        if (k && pwritev(fd, part, k, (off_t)offset) < 0)
            return -1;
        errno = fail;
        return -1;
    }
    return pwritev(fd, iov, n, (off_t)offset);
}

/* Checksum the frame, then write it whole; returns 0 or an errno. */
static int write_frame(wal_job *job)
{
    uint32_t crc = rt_crc32c(0, job->header, RT_WAL_FRAME_CRC_OFFSET);
    crc = rt_crc32c(crc, job->leaves, job->nbytes);
    for (int i = 0; i < 4; i++)
        job->header[RT_WAL_FRAME_CRC_OFFSET + i] = (uint8_t)(crc >> (8 * i));

    struct iovec iov[2] = {
        {job->header, RT_WAL_FRAME_HEADER_LEN},
        {(void *)job->leaves, job->nbytes},
    };
    struct iovec *v = iov;
    int n = 2;
    uint64_t offset = job->offset;
    size_t left = RT_WAL_FRAME_HEADER_LEN + job->nbytes;
    while (left) {
        ssize_t written = frame_pwritev(job->fd, v, n, offset, left);
        if (written < 0) {
            if (errno == EINTR)
                continue;
            return errno ? errno : EIO;
        }
        if (written == 0)
            return EIO;
        left -= (size_t)written;
        offset += (uint64_t)written;
        // Short write (a huge frame, a signal): go on after what was written.
        while (n && (size_t)written >= v->iov_len) {
            written -= (ssize_t)v->iov_len;
            v++;
            n--;
        }
        if (n) {
            v->iov_base = (uint8_t *)v->iov_base + written;
            v->iov_len -= (size_t)written;
        }
    }
    return 0;
}

/* ---- block reservation ---------------------------------------------------- */

int rt_wal_reserve(int fd, uint64_t offset, uint64_t length)
{
    if (fd < 0 || length == 0 || offset > (uint64_t)INT64_MAX ||
        length > (uint64_t)INT64_MAX - offset)
        return EINVAL;
#if defined(__linux__) && defined(FALLOC_FL_KEEP_SIZE)
    // Appending past the end makes ext4 (and XFS) allocate blocks at
    // writeback, under the inode's block-map lock: a frame write then
    // stalls behind the background fsync of the same file, and pays for
    // delayed allocation on every page. Blocks reserved beyond the end are
    // invisible to readers and to recovery (the size does not move), and a
    // truncate to the size gives them back.
    for (;;) {
        if (fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length) == 0)
            return 0;
        if (errno != EINTR)
            return errno ? errno : EIO;
    }
#else
    (void)offset;
    return EOPNOTSUPP;
#endif
}

/* ---- writeback ahead of the fsync ----------------------------------------- */

static _Atomic uint64_t writeback_started;

uint64_t rt_wal_writeback_started(void)
{
    return atomic_load(&writeback_started);
}

/* Start writing a large frame to disk now, on the writer thread, instead of
 * leaving all of it to the next fsync: that fsync (the background flusher's
 * or a flush()) then finds little left to write, so it ends sooner and
 * holds the file's locks, which the next frame write waits for, for less
 * time. Only a hint, never waited for: durability still comes from the
 * fsync alone, and SYNC_FILE_RANGE_WRITE without the WAIT flags does not
 * consume a writeback error (the file's error sequence is only advanced by
 * the waits and by fsync), so a failed writeback is still reported by the
 * fsync. Frames written inline (below OVERLAP_MIN_BYTES) are not hinted:
 * the work would move onto the hashing thread. */
static void start_writeback(int fd, uint64_t offset, size_t length)
{
#if defined(__linux__) && defined(SYNC_FILE_RANGE_WRITE)
    if (sync_file_range(fd, (off_t)offset, (off_t)length, SYNC_FILE_RANGE_WRITE) == 0)
        atomic_fetch_add(&writeback_started, 1);
#else
    (void)fd;
    (void)offset;
    (void)length;
#endif
}

/* ---- the writer thread --------------------------------------------------- */

// One thread for the whole process: the frame write is one system call of
// sequential I/O, and a frame of a tree is only written while that tree's
// insert holds its write lock, so one writer keeps up with every tree.
static pthread_mutex_t writer_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t writer_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t writer_done = PTHREAD_COND_INITIALIZER;
static wal_job *queue_head, *queue_tail;
static int writer_running;
static pthread_once_t writer_fork_once = PTHREAD_ONCE_INIT;

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&writer_lock);
    for (;;) {
        while (!queue_head)
            pthread_cond_wait(&writer_wake, &writer_lock);
        wal_job *job = queue_head;
        queue_head = job->next;
        if (!queue_head)
            queue_tail = NULL;
        pthread_mutex_unlock(&writer_lock);
        job->error = write_frame(job);
        if (!job->error)
            start_writeback(job->fd, job->offset, RT_WAL_FRAME_HEADER_LEN + job->nbytes);
        pthread_mutex_lock(&writer_lock);
        atomic_store_explicit(&job->done, 1, memory_order_release);
        pthread_cond_broadcast(&writer_done);
    }
    return NULL;
}

// No prepare handler takes writer_lock: fork's prepare handlers (fork.c)
// wait for every tree's write lock, which an append holds while it waits
// for its frame, and the frame's completion needs writer_lock; taking it
// before them deadlocks. With every tree locked no append is in its gated
// insert, and a frame still being written belongs to a caller that does
// not exist in the child.
static void writer_fork_child(void)
{
    // The writer thread does not exist in the child; queued jobs belong to
    // callers that do not exist there either. Start over.
    pthread_mutex_init(&writer_lock, NULL);
    pthread_cond_init(&writer_wake, NULL);
    pthread_cond_init(&writer_done, NULL);
    queue_head = queue_tail = NULL;
    writer_running = 0;
}

static void writer_register_fork(void)
{
    pthread_atfork(NULL, NULL, writer_fork_child);
}

/* Queue `job` for the writer thread; 0 if the thread cannot be started (the
 * caller then writes the frame itself). */
static int writer_submit(wal_job *job)
{
    pthread_once(&writer_fork_once, writer_register_fork);
    pthread_mutex_lock(&writer_lock);
    if (!writer_running) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = rt_thread_start(&thread, &attr, writer_main, NULL);
        pthread_attr_destroy(&attr);
        if (failed) {
            pthread_mutex_unlock(&writer_lock);
            return 0;
        }
        writer_running = 1;
    }
    job->next = NULL;
    if (queue_tail)
        queue_tail->next = job;
    else
        queue_head = job;
    queue_tail = job;
    pthread_cond_signal(&writer_wake);
    pthread_mutex_unlock(&writer_lock);
    return 1;
}

static void writer_wait(wal_job *job)
{
    if (atomic_load_explicit(&job->done, memory_order_acquire))
        return;
    pthread_mutex_lock(&writer_lock);
    while (!atomic_load_explicit(&job->done, memory_order_acquire))
        pthread_cond_wait(&writer_done, &writer_lock);
    pthread_mutex_unlock(&writer_lock);
}

/* ---- rt_wal_append -------------------------------------------------------- */

// Below this many payload bytes, handing the write to the writer thread
// (a wake-up on each side) costs more than the write it would overlap.
#ifndef OVERLAP_MIN_BYTES
#define OVERLAP_MIN_BYTES (64u * 1024u)
#endif

typedef struct gate_ctx {
    wal_job *job;
    int queued;
} gate_ctx;

/* Runs under the tree's write lock, after hashing: the batch is published
 * only if its frame is wholly written. */
static int frame_gate(void *arg)
{
    gate_ctx *ctx = arg;
    if (ctx->queued)
        writer_wait(ctx->job);
    else
        ctx->job->error = write_frame(ctx->job);
    return ctx->job->error ? RT_ERR_IO : RT_OK;
}

int rt_wal_append(rt_tree *tree, int fd, uint64_t offset, uint8_t *header,
                  const uint8_t *leaves, size_t count, uint8_t *root_out, int *error_out)
{
    if (!tree || !header || !leaves || !root_out || !error_out || fd < 0)
        return RT_ERR_INVALID_ARGUMENT;
    if (count == 0)
        return RT_ERR_EMPTY_BATCH;
    if (count > SIZE_MAX / 32u - RT_WAL_FRAME_HEADER_LEN)
        return RT_ERR_INVALID_ARGUMENT;
    *error_out = 0;
    wal_job job = {fd, offset, header, leaves, count * 32u, 0, 0, NULL};
    gate_ctx ctx = {&job, 0};
    if (job.nbytes >= OVERLAP_MIN_BYTES)
        ctx.queued = writer_submit(&job);
    int status = rt_tree_insert_many_gated(tree, leaves, count, root_out, frame_gate, &ctx);
    // The insert may have failed before its gate ran: the writer still holds
    // the caller's buffers, and the caller must know where the file stands.
    if (ctx.queued)
        writer_wait(&job);
    if (status == RT_ERR_IO)
        *error_out = job.error;
    return status;
}

/* ---- group commit gate ---------------------------------------------------- */

/* Followers of an fsync round wait here without the GIL: a Python condition
 * makes each of them take the GIL and the condition's lock again in turn
 * when the round ends (a convoy of wake-ups per round), where a pthread
 * condition wakes them all at once and each takes the GIL only to return.
 *
 * A new leader first gathers: it waits (a bounded time) for as many
 * followers as the last round had to queue behind it. Without that, the
 * writers a round releases append while the next round's fsync already
 * runs, which it cannot cover: they wait a whole round more, and the
 * writers split into two groups that alternate, each round covering about
 * half of them. */
struct rt_sync_gate {
    pthread_mutex_t lock;
    pthread_cond_t wake;     /* followers: a round ended, or the gate failed */
    pthread_cond_t gathered; /* the gathering leader: a follower arrived */
    uint64_t synced;
    int leading;
    int gathering;
    int failed;
    int waiting;             /* followers blocked in rt_sync_gate_wait */
    int expected;            /* callers the last round had: leader and followers */
    uint64_t round_start_ns;
    uint64_t last_round_ns;  /* how long the last round was led */
    uint64_t gather_max_ns;  /* gathering waits at most this, and half the last round */
    pthread_t leader;
};

static uint64_t gate_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The gate's waits end at a deadline on the monotonic clock: a deadline on
 * the wall clock (pthread_cond_timedwait's default) moves with it, so a
 * step back of the system time (NTP, an administrator, a VM resumed) would
 * make a 50 ms follower wait, or a gathering bounded by 2 ms, last as long
 * as the step. */
static int gate_cond_init(pthread_cond_t *cond)
{
#if defined(__APPLE__)
    return pthread_cond_init(cond, NULL);   /* waits are relative there */
#else
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr))
        return -1;
    int failed = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) ||
                 pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return failed ? -1 : 0;
#endif
}

/* Wait on `cond` (gate->lock held) until woken or gate_now_ns() reaches
 * `deadline_ns`: ETIMEDOUT once it has. */
static int gate_timedwait(rt_sync_gate *gate, pthread_cond_t *cond, uint64_t deadline_ns)
{
    uint64_t now = gate_now_ns();
    if (now >= deadline_ns)
        return ETIMEDOUT;
#if defined(__APPLE__)
    uint64_t left = deadline_ns - now;
    struct timespec wait = {(time_t)(left / 1000000000u), (long)(left % 1000000000u)};
    return pthread_cond_timedwait_relative_np(cond, &gate->lock, &wait);
#else
    struct timespec until = {(time_t)(deadline_ns / 1000000000u),
                             (long)(deadline_ns % 1000000000u)};
    return pthread_cond_timedwait(cond, &gate->lock, &until);
#endif
}

rt_sync_gate *rt_sync_gate_new(uint64_t synced, uint64_t gather_max_ns)
{
    rt_sync_gate *gate = calloc(1, sizeof *gate);
    if (!gate)
        return NULL;
    if (pthread_mutex_init(&gate->lock, NULL)) {
        free(gate);
        return NULL;
    }
    if (gate_cond_init(&gate->wake)) {
        pthread_mutex_destroy(&gate->lock);
        free(gate);
        return NULL;
    }
    if (gate_cond_init(&gate->gathered)) {
        pthread_cond_destroy(&gate->wake);
        pthread_mutex_destroy(&gate->lock);
        free(gate);
        return NULL;
    }
    gate->synced = synced;
    gate->gather_max_ns = gather_max_ns;
    return gate;
}

void rt_sync_gate_free(rt_sync_gate *gate)
{
    if (!gate)
        return;
    pthread_cond_destroy(&gate->gathered);
    pthread_cond_destroy(&gate->wake);
    pthread_mutex_destroy(&gate->lock);
    free(gate);
}

/* The new leader (gate->lock held): wait for the last round's followers to
 * queue again, at most half the last round's length. */
static void gather(rt_sync_gate *gate)
{
    if (gate->expected < 2 || !gate->last_round_ns)
        return;
    uint64_t budget = gate->last_round_ns / 2;
    if (budget > gate->gather_max_ns)
        budget = gate->gather_max_ns;
    if (!budget)
        return;
    uint64_t until = gate_now_ns() + budget;
    gate->gathering = 1;
    while (gate->waiting < gate->expected - 1 && !gate->failed)
        if (gate_timedwait(gate, &gate->gathered, until) == ETIMEDOUT)
            break;
    gate->gathering = 0;
}

int rt_sync_gate_wait(rt_sync_gate *gate, uint64_t seq, uint32_t timeout_ms)
{
    uint64_t until = gate_now_ns() + (uint64_t)timeout_ms * 1000000u;
    int outcome;
    pthread_mutex_lock(&gate->lock);
    for (;;) {
        if (gate->synced >= seq) {
            outcome = RT_SYNC_DURABLE;
            break;
        }
        if (gate->failed) {
            outcome = RT_SYNC_FAILED;
            break;
        }
        if (!gate->leading) {
            gate->leading = 1;
            gate->leader = pthread_self();
            gather(gate);
            gate->round_start_ns = gate_now_ns();
            outcome = RT_SYNC_LEAD;
            break;
        }
        gate->waiting++;
        if (gate->gathering)
            pthread_cond_signal(&gate->gathered);
        int timed_out = gate_timedwait(gate, &gate->wake, until) == ETIMEDOUT;
        gate->waiting--;
        if (timed_out) {
            outcome = gate->synced >= seq ? RT_SYNC_DURABLE : RT_SYNC_TIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&gate->lock);
    return outcome;
}

void rt_sync_gate_end(rt_sync_gate *gate, uint64_t synced)
{
    pthread_mutex_lock(&gate->lock);
    if (synced > gate->synced)
        gate->synced = synced;
    if (gate->leading && pthread_equal(gate->leader, pthread_self())) {
        gate->leading = 0;
        gate->expected = gate->waiting + 1;
        gate->last_round_ns = gate_now_ns() - gate->round_start_ns;
    }
    pthread_cond_broadcast(&gate->wake);
    pthread_mutex_unlock(&gate->lock);
}

void rt_sync_gate_fail(rt_sync_gate *gate)
{
    pthread_mutex_lock(&gate->lock);
    gate->failed = 1;
    pthread_cond_broadcast(&gate->wake);
    pthread_cond_broadcast(&gate->gathered);
    pthread_mutex_unlock(&gate->lock);
}

int rt_sync_gate_leading(rt_sync_gate *gate)
{
    pthread_mutex_lock(&gate->lock);
    int leading = gate->leading;
    pthread_mutex_unlock(&gate->lock);
    return leading;
}

int rt_sync_gate_waiting(rt_sync_gate *gate)
{
    pthread_mutex_lock(&gate->lock);
    int waiting = gate->waiting;
    pthread_mutex_unlock(&gate->lock);
    return waiting;
}
