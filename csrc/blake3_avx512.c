/*
 * BLAKE3 with AVX-512 (F + VL), written from the BLAKE3 specification.
 *
 * rt_hash_parents_avx512: sixteen LeanIMT parents at once, one per 32-bit
 * lane of sixteen 512-bit state vectors. This file provides the sixteen-lane
 * compression, message loading and transposes; the lane groups, the
 * chunk/parent walk and the remainder are the shared driver in
 * blake3_lanes.h. rt_hash_parents_storing_avx512 (and its untagged form)
 * also stores the children it loads, for insert_many's level 0. With 32
 * vector registers the state and the message fit
 * (the AVX2 kernel needs hand-written assembly to avoid spills), and every
 * rotation is one vprord, so the compression is plain intrinsics.
 *
 * rt_compress_avx512: the single-message compression of blake3_rows.h with
 * the AVX-512VL 128-bit rotations by 12 and 7, for the single path (one
 * insert, proofs, a lone remainder).
 *
 * Only this file's functions carry the AVX-512 target; the dispatcher calls
 * them only after checking the CPU has AVX-512F and VL and the OS saves the
 * opmask and ZMM state.
 */
#include "rt_config.h"
#include "rt_blake3.h"

#if RT_X86
#include <immintrin.h>
#include <string.h>

#define AVX512 __attribute__((target("avx512f,avx512vl")))
#define AVX512_INLINE static inline __attribute__((always_inline)) AVX512

#define LANES 16

/* ---- single compression, row-wise (blake3_rows.h) ----------------------- */

/* Rotations by 12 and 7 are one vprord instead of two shifts and an OR.
 * Those by whole bytes stay byte shuffles: vprord is no faster, and on some
 * cores (AMD Zen 4) it has twice the shuffle's latency, which would add to
 * the dependency chain the single path is bound by. */
AVX512_INLINE __m128i ror12_128(__m128i x) { return _mm_ror_epi32(x, 12); }
AVX512_INLINE __m128i ror7_128(__m128i x) { return _mm_ror_epi32(x, 7); }

#define ROW_TARGET AVX512
#define ROWS_ENTRY rt_compress_avx512
#define row_rotr16 rows_rotr16_bytes
#define row_rotr12 ror12_128
#define row_rotr8 rows_rotr8_bytes
#define row_rotr7 ror7_128
#include "blake3_rows.h"

AVX512_INLINE __m256i ror12_256(__m256i x) { return _mm256_ror_epi32(x, 12); }
AVX512_INLINE __m256i ror7_256(__m256i x) { return _mm256_ror_epi32(x, 7); }

#define ROW2_TARGET AVX512
#define ROWS2_ENTRY rt_compress2_avx512
#define row2_rotr12 ror12_256
#define row2_rotr7 ror7_256
#include "blake3_rows2.h"

/* ---- sixteen messages at once, one per lane ------------------------------ */

AVX512_INLINE __m512i set1_u32(uint32_t x) { return _mm512_set1_epi32((int)x); }

AVX512_INLINE __m512i add512(__m512i a, __m512i b) { return _mm512_add_epi32(a, b); }

/* One G function on lanes' state words a, b, c, d with message words x, y.
 * a + m[x] is formed first so that b, the value computed last, is added
 * last. */
#define G(a, b, c, d, x, y)                                                    \
    do {                                                                       \
        v[a] = add512(add512(v[a], m[x]), v[b]);                               \
        v[d] = _mm512_ror_epi32(_mm512_xor_si512(v[d], v[a]), 16);             \
        v[c] = add512(v[c], v[d]);                                             \
        v[b] = _mm512_ror_epi32(_mm512_xor_si512(v[b], v[c]), 12);             \
        v[a] = add512(add512(v[a], m[y]), v[b]);                               \
        v[d] = _mm512_ror_epi32(_mm512_xor_si512(v[d], v[a]), 8);              \
        v[c] = add512(v[c], v[d]);                                             \
        v[b] = _mm512_ror_epi32(_mm512_xor_si512(v[b], v[c]), 7);              \
    } while (0)

/* One round with message schedule s0..s15 (the spec's permutation applied r
 * times for round r): columns, then diagonals. */
#define ROUND(s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, \
              s15)                                                             \
    do {                                                                       \
        G(0, 4, 8, 12, s0, s1);                                                \
        G(1, 5, 9, 13, s2, s3);                                                \
        G(2, 6, 10, 14, s4, s5);                                               \
        G(3, 7, 11, 15, s6, s7);                                               \
        G(0, 5, 10, 15, s8, s9);                                               \
        G(1, 6, 11, 12, s10, s11);                                             \
        G(2, 7, 8, 13, s12, s13);                                              \
        G(3, 4, 9, 14, s14, s15);                                              \
    } while (0)

/* m[w] holds message word w of every lane; cv likewise, updated in place.
 * Counter, length and flags are shared by all lanes. Not inlined: the
 * driver calls it from two places per block walk, and one copy keeps the
 * loop in the micro-op cache. */
static __attribute__((noinline)) AVX512 void
compress_lanes(__m512i cv[8], const __m512i m[16], uint64_t counter,
               uint32_t block_len, uint32_t flags)
{
    const uint32_t rows23[8] = {rt_blake3_iv[0], rt_blake3_iv[1], rt_blake3_iv[2],
                                rt_blake3_iv[3], (uint32_t)counter,
                                (uint32_t)(counter >> 32), block_len, flags};
    __m512i v[16];
    for (int i = 0; i < 8; i++) {
        v[i] = cv[i];
        v[8 + i] = set1_u32(rows23[i]);
    }

    ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    ROUND(2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8);
    ROUND(3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1);
    ROUND(10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6);
    ROUND(12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4);
    ROUND(9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7);
    ROUND(11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13);

    for (int i = 0; i < 8; i++)
        cv[i] = _mm512_xor_si512(v[i], v[8 + i]);
}

#undef ROUND
#undef G

/* Four word vectors a, b, c, d (word w of lanes 0..15 each) -> out[r]
 * holding, in its 128-bit block j, (a, b, c, d) of lane 4j+r: words are
 * interleaved in pairs, then 64-bit pairs. */
AVX512_INLINE void interleave4(const __m512i in[4], __m512i out[4])
{
    __m512i ab_lo = _mm512_unpacklo_epi32(in[0], in[1]);
    __m512i ab_hi = _mm512_unpackhi_epi32(in[0], in[1]);
    __m512i cd_lo = _mm512_unpacklo_epi32(in[2], in[3]);
    __m512i cd_hi = _mm512_unpackhi_epi32(in[2], in[3]);
    out[0] = _mm512_unpacklo_epi64(ab_lo, cd_lo);
    out[1] = _mm512_unpackhi_epi64(ab_lo, cd_lo);
    out[2] = _mm512_unpacklo_epi64(ab_hi, cd_hi);
    out[3] = _mm512_unpackhi_epi64(ab_hi, cd_hi);
}

/* rows[k] = sixteen consecutive words of lane k -> cols[w] = word w of every
 * lane. Its own inverse. After interleaving rows four at a time, u[4q+s]
 * holds, in its 128-bit block j, word 4j+s of lanes 4q..4q+3; the 128-bit
 * blocks are then gathered across vectors in two steps. */
AVX512_INLINE void transpose16(const __m512i rows[16], __m512i cols[16])
{
    __m512i u[16];
    for (int q = 0; q < 4; q++)
        interleave4(rows + 4 * q, u + 4 * q);
    for (int s = 0; s < 4; s++) {
        /* Blocks (word s, word 8+s) of lane groups 0 and 1, and so on. */
        __m512i a_even = _mm512_shuffle_i32x4(u[s], u[4 + s], _MM_SHUFFLE(2, 0, 2, 0));
        __m512i a_odd = _mm512_shuffle_i32x4(u[s], u[4 + s], _MM_SHUFFLE(3, 1, 3, 1));
        __m512i b_even = _mm512_shuffle_i32x4(u[8 + s], u[12 + s], _MM_SHUFFLE(2, 0, 2, 0));
        __m512i b_odd = _mm512_shuffle_i32x4(u[8 + s], u[12 + s], _MM_SHUFFLE(3, 1, 3, 1));
        cols[s] = _mm512_shuffle_i32x4(a_even, b_even, _MM_SHUFFLE(2, 0, 2, 0));
        cols[8 + s] = _mm512_shuffle_i32x4(a_even, b_even, _MM_SHUFFLE(3, 1, 3, 1));
        cols[4 + s] = _mm512_shuffle_i32x4(a_odd, b_odd, _MM_SHUFFLE(2, 0, 2, 0));
        cols[12 + s] = _mm512_shuffle_i32x4(a_odd, b_odd, _MM_SHUFFLE(3, 1, 3, 1));
    }
}

AVX512_INLINE int load_u16(const uint8_t *p)
{
    uint16_t x;
    memcpy(&x, p, sizeof x);
    return x;
}

/* Words w of a row read from 2 bytes before word w: (w[i] >> 16) | (w[i+1]
 * << 16), i.e. the row shifted down by two bytes across the whole vector
 * (the byte shifts of AVX-512BW only work within 128-bit blocks). */
AVX512_INLINE __m512i shift_down_2_bytes(__m512i words)
{
    __m512i next = _mm512_alignr_epi32(_mm512_setzero_si512(), words, 1);
    return _mm512_or_si512(_mm512_srli_epi32(words, 16), _mm512_slli_epi32(next, 16));
}

/*
 * Message block `block` (64-byte index within the whole parent message) of
 * every lane, transposed into m. The message is 0x01, arity, then the
 * children, so block b starts at child byte 64b-2. Its length is always 64
 * except for the last block, which is 2 or 34 bytes because the message
 * length is 2 + 32*arity. Nothing is read outside a lane's children: the
 * last lane's may end the caller's buffer.
 */
AVX512_INLINE void load_message_lanes(const uint8_t *const lane_children[LANES],
                                      unsigned arity, size_t block,
                                      size_t message_len, __m512i m[16])
{
    __m512i rows[LANES];
    size_t start = 64 * block;

    if (block == 0) {
        /* Children bytes 0..62 moved up two bytes, the header in the gap:
         * word i = (child word i << 16) | (child word i-1 >> 16). */
        __m512i header = _mm512_maskz_set1_epi32(1, 0x01 | (int)(arity << 8));
        for (int k = 0; k < LANES; k++) {
            __m512i words = _mm512_loadu_si512(lane_children[k]);
            __m512i previous = _mm512_alignr_epi32(words, _mm512_setzero_si512(), 15);
            rows[k] = _mm512_ternarylogic_epi32(_mm512_slli_epi32(words, 16),
                                                _mm512_srli_epi32(previous, 16),
                                                header, 0xFE);
        }
        transpose16(rows, m);
        return;
    }

    size_t child_offset = start - 2;
    if (start + 64 <= message_len) {
        for (int k = 0; k < LANES; k++)
            rows[k] = _mm512_loadu_si512(lane_children[k] + child_offset);
        transpose16(rows, m);
        return;
    }

    if (message_len - start == 34) {
        /* The 36 bytes ending at the children's end (block >= 1, so they
         * start inside them), moved down two bytes: 34 message bytes, the
         * words past them zero because the masked load left them so. */
        for (int k = 0; k < LANES; k++)
            rows[k] = shift_down_2_bytes(
                _mm512_maskz_loadu_epi32(0x1FF, lane_children[k] + child_offset - 2));
        transpose16(rows, m);
        return;
    }

    for (int w = 1; w < 16; w++)
        m[w] = _mm512_setzero_si512();
    m[0] = _mm512_setr_epi32(
        load_u16(lane_children[0] + child_offset), load_u16(lane_children[1] + child_offset),
        load_u16(lane_children[2] + child_offset), load_u16(lane_children[3] + child_offset),
        load_u16(lane_children[4] + child_offset), load_u16(lane_children[5] + child_offset),
        load_u16(lane_children[6] + child_offset), load_u16(lane_children[7] + child_offset),
        load_u16(lane_children[8] + child_offset), load_u16(lane_children[9] + child_offset),
        load_u16(lane_children[10] + child_offset), load_u16(lane_children[11] + child_offset),
        load_u16(lane_children[12] + child_offset), load_u16(lane_children[13] + child_offset),
        load_u16(lane_children[14] + child_offset), load_u16(lane_children[15] + child_offset));
}

/* Untagged message block `block` of every lane: child bytes 64*block on,
 * 64 bytes, or 32 for the last block of an odd arity (masked, so nothing
 * past a lane's children is read). */
AVX512_INLINE void load_untagged_lanes(const uint8_t *const lane_children[LANES],
                                       size_t block, size_t message_len, __m512i m[16])
{
    __m512i rows[LANES];
    size_t start = 64 * block;
    __mmask16 words = start + 64 <= message_len ? 0xFFFF : 0x00FF;
    for (int k = 0; k < LANES; k++)
        rows[k] = _mm512_maskz_loadu_epi32(words, lane_children[k] + start);
    transpose16(rows, m);
}

/* Transpose the chaining values back (8 words x 16 lanes) and store each
 * lane's parent. After interleaving, u[4h+r] holds, in its 128-bit block j,
 * words 4h..4h+3 of lane 4j+r; one two-source permutation then joins the
 * halves of lanes r and 4+r, another those of 8+r and 12+r. */
AVX512_INLINE void store_lanes(const __m512i cv[8], uint8_t *const out[LANES])
{
    __m512i u[8];
    interleave4(cv, u);
    interleave4(cv + 4, u + 4);
    const __m512i blocks01 = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    const __m512i blocks23 = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    for (int r = 0; r < 4; r++) {
        __m512i low = _mm512_permutex2var_epi64(u[r], blocks01, u[4 + r]);
        __m512i high = _mm512_permutex2var_epi64(u[r], blocks23, u[4 + r]);
        _mm256_storeu_si256((__m256i *)out[r], _mm512_castsi512_si256(low));
        _mm256_storeu_si256((__m256i *)out[4 + r], _mm512_extracti64x4_epi64(low, 1));
        _mm256_storeu_si256((__m256i *)out[8 + r], _mm512_castsi512_si256(high));
        _mm256_storeu_si256((__m256i *)out[12 + r], _mm512_extracti64x4_epi64(high, 1));
    }
}

/* ---- the storing entries' hooks (blake3_lanes.h) ------------------------ */

AVX512_INLINE __m512i zero512(void) { return _mm512_setzero_si512(); }

AVX512_INLINE __m512i rotr16_512(__m512i x) { return _mm512_ror_epi32(x, 16); }

/* Bitwise select (ternary-logic table 0xCA: mask ? lo : hi). */
AVX512_INLINE __m512i join16_512(__m512i lo, __m512i hi)
{
    return _mm512_ternarylogic_epi32(_mm512_set1_epi32(0xFFFF), lo, hi, 0xCA);
}

/* Piece `piece` of every lane's children, loaded once into a register that
 * is both stored and transposed. The empty asm makes each register opaque,
 * so the compiler cannot satisfy either use by loading the caller's memory
 * a second time (which could see different bytes). */
AVX512_INLINE void load_storing_lanes(const uint8_t *const children[LANES],
                                      uint8_t *const stored[LANES], size_t child_bytes,
                                      size_t piece, int stream, __m512i c[16])
{
    __m512i rows[LANES];
    size_t start = 64 * piece;
    int whole = start + 64 <= child_bytes;
    for (int k = 0; k < LANES; k++) {
        rows[k] = whole ? _mm512_loadu_si512(children[k] + start)
                        : _mm512_maskz_loadu_epi32(0x00FF, children[k] + start);
        __asm__("" : "+v"(rows[k]));
    }
    for (int k = 0; k < LANES; k++) {
        if (stored[k] == NULL)
            continue;
        uint8_t *to = stored[k] + start;
        if (!whole)
            _mm256_storeu_si256((__m256i *)to, _mm512_castsi512_si256(rows[k]));
        else if (stream)
            _mm512_stream_si512((void *)to, rows[k]);
        else
            _mm512_storeu_si512(to, rows[k]);
    }
    transpose16(rows, c);
}

/* ---- the lane driver (blake3_lanes.h), instantiated for AVX-512 ---------- */

typedef __m512i lane_vec;
#define LANE_TARGET AVX512
#define LANES_ENTRY rt_hash_parents_avx512
#define LANES_UNTAGGED_ENTRY rt_hash_parents_untagged_avx512
#define lanes_load_untagged load_untagged_lanes
#define lanes_set1 set1_u32
#define lanes_compress compress_lanes
#define lanes_load_message load_message_lanes
#define lanes_store store_lanes
#define LANES_COMPRESS_ONE rt_compress_avx512
/* The dispatcher offers AVX-512 only where AVX2 runs too. */
#define LANES_NARROW_ENTRY rt_hash_parents_avx2
#define LANES_NARROW_UNTAGGED_ENTRY rt_hash_parents_untagged_avx2
#define LANES_STORING_ENTRY rt_hash_parents_storing_avx512
#define LANES_STORING_UNTAGGED_ENTRY rt_hash_parents_untagged_storing_avx512
#define lanes_load_storing load_storing_lanes
#define lanes_rotr16 rotr16_512
#define lanes_join16 join16_512
#define lanes_zero zero512
#define LANES_NARROW_STORING_ENTRY rt_hash_parents_storing_avx2
#define LANES_NARROW_STORING_UNTAGGED_ENTRY rt_hash_parents_untagged_storing_avx2
#include "blake3_lanes.h"
#endif /* RT_X86 */
