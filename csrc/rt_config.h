/*
 * Build configuration, included first by every .c file in csrc/ (before any
 * system header, which is where feature macros must be seen).
 *
 * The build compiles with -std=c11, which hides the POSIX and GNU
 * declarations the core uses: mmap/MAP_ANONYMOUS/madvise (level.c),
 * sched_getaffinity/CPU_COUNT, syscall and pthread_setname_np (pool.c),
 * pthread_rwlockattr_setkind_np (fork.c). Defining _GNU_SOURCE here, once,
 * makes every file build with any -std= flag and without -D options. glibc
 * and musl both honour it; calls that only glibc has are guarded with
 * __GLIBC__ where used (fork.c).
 *
 * cffi never reads this file; nothing here is part of the public API.
 */
#ifndef RT_CONFIG_H
#define RT_CONFIG_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

/*
 * The SIMD kernels (blake3_sse41.c, blake3_avx2.c) use GCC/Clang inline
 * assembly naming xmm8..xmm15/ymm8..ymm15, which exist only in 64-bit mode,
 * and __attribute__((target)). So RT_X86 is 1 exactly for x86-64 compiled by
 * GCC or Clang; every other target (32-bit x86, MSVC, ARM, ...) builds the
 * portable kernel only, and asking for a SIMD kernel there reports
 * RT_ERR_UNSUPPORTED.
 */
#if defined(__x86_64__) && defined(__GNUC__)
#define RT_X86 1
#else
#define RT_X86 0
#endif

/*
 * The NEON kernel (blake3_neon.c) uses GCC/Clang inline assembly naming
 * v0..v27 and loads message words straight from bytes, which is BLAKE3's
 * word order only on little-endian machines. NEON is baseline on aarch64,
 * so RT_NEON needs no run-time check.
 */
#if defined(__aarch64__) && defined(__GNUC__) && defined(__ARM_NEON) && \
    defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define RT_NEON 1
#else
#define RT_NEON 0
#endif

#endif /* RT_CONFIG_H */
