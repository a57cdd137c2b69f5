/* Shared by the fuzz targets: the libFuzzer entry points and a bounded
 * reader over the fuzz input.
 *
 * Each target is one tests/fuzz/fuzz_<target>.c defining
 * LLVMFuzzerTestOneInput.  It is linked two ways: with clang's libFuzzer
 * (-fsanitize=fuzzer, scripts/fuzz.sh) to search for crashes, and with
 * replay_main.c (any compiler, under the build's sanitizers) so ctest replays
 * the committed corpus and every regression input on every test run. */
#ifndef CBUS_FUZZ_H
#define CBUS_FUZZ_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Fails the run loudly: an invariant the target checks (not a sanitizer
 * report) does not hold.  abort() so libFuzzer saves the input as a crash. */
#define FZ_CHECK(cond, ...)                                                        \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                       \
        }                                                                          \
    } while (0)
void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

/* Consumes the input front to back; reads past the end yield zeros, so a
 * short input is still a valid (if dull) program for a structured target. */
struct fz {
    const uint8_t *p;
    size_t n;
};

static inline uint8_t fz_u8(struct fz *f)
{
    if (!f->n)
        return 0;
    f->n--;
    return *f->p++;
}

static inline uint16_t fz_u16(struct fz *f)
{
    return (uint16_t)(fz_u8(f) | (uint16_t)fz_u8(f) << 8);
}

static inline uint32_t fz_u32(struct fz *f)
{
    return (uint32_t)fz_u16(f) | (uint32_t)fz_u16(f) << 16;
}

static inline uint64_t fz_u64(struct fz *f)
{
    return (uint64_t)fz_u32(f) | (uint64_t)fz_u32(f) << 32;
}

/* Copies up to n bytes into out (the rest zero-filled); returns bytes taken. */
static inline size_t fz_bytes(struct fz *f, void *out, size_t n)
{
    size_t k = n < f->n ? n : f->n;
    memcpy(out, f->p, k);
    memset((uint8_t *)out + k, 0, n - k);
    f->p += k;
    f->n -= k;
    return k;
}

#endif
