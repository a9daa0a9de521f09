/*
 * CRC-32C (csrc/wal.c): known answers through the implementation this CPU
 * selects and through the portable one, and the two against each other on
 * random lengths, alignments and split points. Built natively and, for the
 * ARMv8 CRC instructions, cross-compiled for aarch64 and run under
 * user-mode emulation (tests/test_wal.py).
 */
#include "rt_config.h"

#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "rotortree.h"

static void known_answers(void)
{
    static const struct {
        uint8_t fill; /* 0: 0..31, 1: 31..0, else every byte */
        uint32_t crc;
    } rfc3720[] = {{0x00, 0x8A9136AAu}, {0xff, 0x62A8AB43u}, {0, 0x46DD794Eu},
                   {1, 0x113FDB5Cu}};
    CHECK(rt_crc32c(0, (const uint8_t *)"123456789", 9) == 0xE3069283u, "check value (%s)",
          rt_crc32c_impl());
    for (size_t i = 0; i < sizeof(rfc3720) / sizeof(rfc3720[0]); i++) {
        uint8_t data[32];
        for (unsigned b = 0; b < 32; b++)
            data[b] = i == 2 ? (uint8_t)b : i == 3 ? (uint8_t)(31 - b) : rfc3720[i].fill;
        CHECK(rt_crc32c(0, data, 32) == rfc3720[i].crc, "RFC 3720 vector %zu (%s)", i,
              rt_crc32c_impl());
    }
}

int main(int argc, char **argv)
{
    rng r = {argc > 1 ? strtoull(argv[1], NULL, 10) : 20261202u};
    char detected[32];
    snprintf(detected, sizeof(detected), "%s", rt_crc32c_impl());
    known_answers();
    rt_crc32c_force_portable(1);
    CHECK(strcmp(rt_crc32c_impl(), "portable") == 0, "forcing the portable code");
    known_answers();
    rt_crc32c_force_portable(0);

    // Up to 5 blocks of three 4 KiB pieces (the instruction paths checksum
    // three pieces side by side from 12 KiB on), and the lengths around
    // their multiples.
    enum { MAX = 5 * 3 * 4096 + 64 };
    uint8_t *buffer = xmalloc(MAX + 8);
    for (int round = 0; round < 2000; round++) {
        size_t len = (size_t)rng_below(&r, round < 100 ? 80 : round < 1000 ? 5000 : MAX);
        if (round % 10 == 0 && round >= 1000)   // a multiple of 12 KiB, give or take 8
            len = 3 * 4096 * (1 + rng_below(&r, 4)) + rng_below(&r, 17) - 8;
        size_t shift = (size_t)rng_below(&r, 8);
        for (size_t i = 0; i < len; i++)
            buffer[shift + i] = (uint8_t)rng_next(&r);
        const uint8_t *data = buffer + shift;
        size_t cut = (size_t)rng_below(&r, len + 1);
        uint32_t whole = rt_crc32c(0, data, len);
        uint32_t pieces = rt_crc32c(rt_crc32c(0, data, cut), data + cut, len - cut);
        rt_crc32c_force_portable(1);
        uint32_t portable = rt_crc32c(0, data, len);
        rt_crc32c_force_portable(0);
        CHECK(whole == portable && pieces == whole,
              "length %zu at offset %zu, cut %zu: %08x %08x %08x", len, shift, cut, whole,
              pieces, portable);
    }
    free(buffer);
    char extra[64];
    snprintf(extra, sizeof(extra), " (crc32c: %s)", detected);
    return harness_summary("crc", extra);
}
