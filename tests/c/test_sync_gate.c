/*
 * Test driver for group commit's gate (rt_sync_gate_* in csrc/wal.c), run
 * under ThreadSanitizer and ASan/UBSan by tests/test_c_sync_gate.py: many
 * threads play the durable tree's protocol (append, wait, lead a round
 * that "fsyncs" what was appended before it started, end it), with checks
 * that no wait says durable before the round covering it ended, that one
 * thread leads at a time, that a failed gate releases every waiter, and
 * that gathering ends with nobody to gather. Prints
 * "sync gate driver: N passed, M failed".
 *
 * Linked with csrc/wal.c alone: the two functions its WAL append needs from
 * the rest of the library are stubs here (the gate never calls them), so
 * the sanitizer builds compile two files, not the whole library.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "rotortree.h"
#include "rt_pool.h"
#include "rt_tree.h"

#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

int rt_tree_insert_many_gated(rt_tree *tree, const uint8_t *leaves, size_t count,
                              uint8_t *root_out, int (*gate_fn)(void *), void *gate_ctx)
{
    (void)tree, (void)leaves, (void)count, (void)root_out, (void)gate_fn, (void)gate_ctx;
    REQUIRE(0, "the gate driver has no tree");
    return RT_ERR_INVALID_ARGUMENT;
}

int rt_thread_start(pthread_t *thread, const pthread_attr_t *attr, void *(*main_fn)(void *),
                    void *arg)
{
    (void)thread, (void)attr, (void)main_fn, (void)arg;
    REQUIRE(0, "the gate driver starts no library thread");
    return -1;
}

#define WRITERS 8
#define ENTRIES_EACH 300

static rt_sync_gate *gate;
static atomic_uint_fast64_t appended;   /* highest sequence number handed out */
static atomic_uint_fast64_t fsynced;    /* every entry up to this was "fsynced" */
static atomic_int leaders;              /* threads inside a round */

static void pause_us(long us)
{
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

static void raise_to(atomic_uint_fast64_t *point, uint64_t value)
{
    uint64_t seen = atomic_load(point);
    while (seen < value && !atomic_compare_exchange_weak(point, &seen, value))
        ;
}

/* One round as the durable tree leads it: what was appended before it
 * starts is made durable, then acknowledged, then the lead given up. */
static void lead_round(uint64_t seq)
{
    CHECK(atomic_fetch_add(&leaders, 1) == 0, "two threads lead at once");
    uint64_t target = atomic_load(&appended);
    CHECK(target >= seq, "a round started before its leader's entry was appended");
    pause_us(50);   /* the fsync */
    raise_to(&fsynced, target);
    atomic_fetch_sub(&leaders, 1);
    rt_sync_gate_end(gate, target);
}

static void *writer(void *arg)
{
    rng r = {(uint64_t)(uintptr_t)arg};
    for (int i = 0; i < ENTRIES_EACH; i++) {
        uint64_t seq = atomic_fetch_add(&appended, 1) + 1;
        for (;;) {
            int outcome = rt_sync_gate_wait(gate, seq, (uint32_t)rng_below(&r, 3));
            if (outcome == RT_SYNC_DURABLE) {
                CHECK(atomic_load(&fsynced) >= seq, "entry %llu acknowledged before its fsync",
                      (unsigned long long)seq);
                break;
            }
            if (outcome == RT_SYNC_LEAD) {
                lead_round(seq);
                break;
            }
            CHECK(outcome == RT_SYNC_TIMEOUT, "unexpected outcome %d", outcome);
        }
    }
    return NULL;
}

static void check_rounds(void)
{
    gate = rt_sync_gate_new(0, 2000000);
    REQUIRE(gate, "rt_sync_gate_new failed");
    pthread_t threads[WRITERS];
    for (uintptr_t k = 0; k < WRITERS; k++)
        REQUIRE(!pthread_create(&threads[k], NULL, writer, (void *)(k + 1)), "pthread_create");
    for (int k = 0; k < WRITERS; k++)
        pthread_join(threads[k], NULL);
    CHECK(!rt_sync_gate_leading(gate), "the lead outlived every round");
    CHECK(rt_sync_gate_waiting(gate) == 0, "a follower was left waiting");
    CHECK(atomic_load(&fsynced) == (uint64_t)WRITERS * ENTRIES_EACH, "entries never durable");
    rt_sync_gate_free(gate);
}

struct waiter {
    uint64_t seq;
    int outcome;
};

static void *wait_long(void *arg)
{
    struct waiter *w = arg;
    w->outcome = rt_sync_gate_wait(gate, w->seq, 60000);
    return NULL;
}

static void *end_elsewhere(void *arg)
{
    (void)arg;
    rt_sync_gate_end(gate, 1);
    return NULL;
}

/* Failing the gate releases every follower at once; a covered entry
 * stays durable; only the leader's thread gives the lead up. */
static void check_fail_and_lead(void)
{
    gate = rt_sync_gate_new(0, 0);
    REQUIRE(gate, "rt_sync_gate_new failed");
    CHECK(rt_sync_gate_wait(gate, 2, 0) == RT_SYNC_LEAD, "no lead with no round running");
    pthread_t other;
    REQUIRE(!pthread_create(&other, NULL, end_elsewhere, NULL), "pthread_create");
    pthread_join(other, NULL);
    CHECK(rt_sync_gate_leading(gate), "another thread gave the lead up");
    struct waiter waiters[4] = {{2, -1}, {3, -1}, {4, -1}, {5, -1}};
    pthread_t threads[4];
    for (int k = 0; k < 4; k++)
        REQUIRE(!pthread_create(&threads[k], NULL, wait_long, &waiters[k]), "pthread_create");
    while (rt_sync_gate_waiting(gate) < 4)
        pause_us(100);
    rt_sync_gate_fail(gate);
    for (int k = 0; k < 4; k++) {
        pthread_join(threads[k], NULL);
        CHECK(waiters[k].outcome == RT_SYNC_FAILED, "follower %d: %d", k, waiters[k].outcome);
    }
    CHECK(rt_sync_gate_wait(gate, 1, 0) == RT_SYNC_DURABLE, "a covered entry after failing");
    CHECK(rt_sync_gate_wait(gate, 9, 60000) == RT_SYNC_FAILED, "a wait after failing");
    rt_sync_gate_end(gate, 0);
    CHECK(!rt_sync_gate_leading(gate), "the leader's thread did not give the lead up");
    rt_sync_gate_free(gate);
}

/* A round ended with followers waiting, then only the new leader comes
 * back: its gathering ends (bounded by half the last round) and it leads. */
static void check_gathering_ends(void)
{
    gate = rt_sync_gate_new(0, 60ull * 1000000000u);
    REQUIRE(gate, "rt_sync_gate_new failed");
    CHECK(rt_sync_gate_wait(gate, 1, 0) == RT_SYNC_LEAD, "no lead with no round running");
    struct waiter waiters[3] = {{1, -1}, {1, -1}, {1, -1}};
    pthread_t threads[3];
    for (int k = 0; k < 3; k++)
        REQUIRE(!pthread_create(&threads[k], NULL, wait_long, &waiters[k]), "pthread_create");
    while (rt_sync_gate_waiting(gate) < 3)
        pause_us(100);
    pause_us(20000);
    rt_sync_gate_end(gate, 1);
    for (int k = 0; k < 3; k++) {
        pthread_join(threads[k], NULL);
        CHECK(waiters[k].outcome == RT_SYNC_DURABLE, "follower %d: %d", k, waiters[k].outcome);
    }
    CHECK(rt_sync_gate_wait(gate, 2, 60000) == RT_SYNC_LEAD, "the lone leader did not lead");
    rt_sync_gate_end(gate, 2);
    rt_sync_gate_free(gate);
}

int main(void)
{
    check_fail_and_lead();
    check_gathering_ends();
    check_rounds();
    return harness_summary("sync gate", "");
}
