/*
 * The round schedule of the multi-lane compression as inline-assembly text,
 * shared by the SSE4.1 and AVX2 kernels (the state in 16 vector registers,
 * v8 spilled while the shift rotations borrow its register). Included inside
 * a kernel file after it defines its instruction primitives over its own
 * registers:
 *   ADD_MESSAGE(a, b, w)         a += m[w] + b (m[w] a memory operand)
 *   XOR_ROTATE_BYTES(d, a, mask) d = (d ^ a) rotated by whole bytes
 *   ADD(c, d), XOR(b, c)         c += d, b ^= c
 *   ROTATE_SHIFTS(b, n)          b = b >>> n, v8's register as temporary
 *   SPILL_V8, RELOAD_V8          v8 to and from memory
 * No include guard: each kernel file includes it once.
 *
 * Each half round runs four G functions side by side, one step across all
 * four before the next, so independent work is adjacent:
 *   a += m[x] + b;  d = (d ^ a) >>> 16;  c += d;  b = (b ^ c) >>> 12;
 *   a += m[y] + b;  d = (d ^ a) >>> 8;   c += d;  b = (b ^ c) >>> 7.
 */
/* Four G functions' first or second half, side by side: message words w,
 * d rotated by the byte shuffle `mask`, b by n bits. */
#define G_HALF(a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3, \
               w0, w1, w2, w3, mask, n)                                        \
    ADD_MESSAGE(a0, b0, w0) ADD_MESSAGE(a1, b1, w1)                            \
    ADD_MESSAGE(a2, b2, w2) ADD_MESSAGE(a3, b3, w3)                            \
    XOR_ROTATE_BYTES(d0, a0, mask) XOR_ROTATE_BYTES(d1, a1, mask)              \
    XOR_ROTATE_BYTES(d2, a2, mask) XOR_ROTATE_BYTES(d3, a3, mask)              \
    RELOAD_V8                                                                  \
    ADD(c0, d0) ADD(c1, d1) ADD(c2, d2) ADD(c3, d3)                            \
    XOR(b0, c0) XOR(b1, c1) XOR(b2, c2) XOR(b3, c3)                            \
    SPILL_V8                                                                   \
    ROTATE_SHIFTS(b0, n) ROTATE_SHIFTS(b1, n)                                  \
    ROTATE_SHIFTS(b2, n) ROTATE_SHIFTS(b3, n)

#define HALF_ROUND(a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, \
                   d3, x0, y0, x1, y1, x2, y2, x3, y3)                         \
    G_HALF(a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3,     \
           x0, x1, x2, x3, "%[rot16]", 12)                                     \
    G_HALF(a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3,     \
           y0, y1, y2, y3, "%[rot8]", 7)

/* One round with message schedule s0..s15: the spec's permutation
 * {2,6,3,10,7,0,4,13,1,11,12,5,9,14,15,8} applied r times for round r.
 * Columns (i, 4+i, 8+i, 12+i), then diagonals (i, 4+(i+1)%4, 8+(i+2)%4,
 * 12+(i+3)%4). */
#define ROUND(s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, \
              s15)                                                             \
    HALF_ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, s0, s1,   \
               s2, s3, s4, s5, s6, s7)                                         \
    HALF_ROUND(0, 1, 2, 3, 5, 6, 7, 4, 10, 11, 8, 9, 15, 12, 13, 14, s8, s9,   \
               s10, s11, s12, s13, s14, s15)

/* All seven rounds, the schedules precomputed. */
#define SEVEN_ROUNDS                                                                          \
    ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)                \
    ROUND(2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)                \
    ROUND(3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1)                \
    ROUND(10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6)                \
    ROUND(12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4)                \
    ROUND(9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7)                \
    ROUND(11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13)
