/* tools/bwprobe — longheads-bwprobe: the machine's read bandwidth, for the roofline line of
 * `make bench`.  A read-only streaming kernel (no stores: a STREAM triad also writes and shows
 * less than half of what a GEMV can read) over a buffer far larger than the last-level cache,
 * split statically over the OpenMP threads (the daemon's count unless OMP_NUM_THREADS says
 * otherwise), best of --reps passes.
 *
 *   longheads-bwprobe [--mib N] [--reps R]      (default 1024 MiB, 7 passes)
 *
 * Prints one line "read_gbs X threads T mib N" (GB = 1e9 bytes).  Exit status 0, 1 when the
 * buffer cannot be allocated, 2 on bad usage.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__)
#include <immintrin.h>
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Sum of n floats (n % 64 == 0), eight independent accumulators so the loads, not the adds, set
 * the pace.  The result is returned so the compiler cannot drop the reads. */
static float read_sum(const float *p, size_t n)
{
#if defined(__AVX2__)
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (size_t i = 0; i < n; i += 64) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
        a4 = _mm256_add_ps(a4, _mm256_load_ps(p + i + 32));
        a5 = _mm256_add_ps(a5, _mm256_load_ps(p + i + 40));
        a6 = _mm256_add_ps(a6, _mm256_load_ps(p + i + 48));
        a7 = _mm256_add_ps(a7, _mm256_load_ps(p + i + 56));
    }
    a0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                       _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    float t[8];
    _mm256_storeu_ps(t, a0);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
#else
    float s[8] = {0};
    for (size_t i = 0; i < n; i += 8)
        for (size_t j = 0; j < 8; j++)
            s[j] += p[i + j];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
#endif
}

int main(int argc, char **argv)
{
    size_t mib = 1024, reps = 7;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--mib"))
            mib = strtoul(argv[++i], NULL, 10);
        else if (i + 1 < argc && !strcmp(argv[i], "--reps"))
            reps = strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: longheads-bwprobe [--mib N] [--reps R]\n");
            return 2;
        }
    }
    if (mib < 64 || mib > (1u << 16) || reps < 1 || reps > 1000) {
        fprintf(stderr, "longheads-bwprobe: --mib 64..65536, --reps 1..1000\n");
        return 2;
    }
    size_t n = mib * (1u << 20) / sizeof(float);
    float *buf = NULL;
    if (posix_memalign((void **)&buf, 64, n * sizeof *buf) != 0) {
        fprintf(stderr, "longheads-bwprobe: cannot allocate %zu MiB\n", mib);
        return 1;
    }
    int n_thr = 1;
#ifdef _OPENMP
    n_thr = omp_get_max_threads();
#endif
    /* every page touched by the thread that will read it (first touch), so the pass measures
     * reads, not page faults */
    size_t n_blk = n / 64;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < n_blk; b++)
        for (size_t j = 0; j < 64; j++)
            buf[b * 64 + j] = (float)(j & 7) * 1e-3f;
    double best = 0;
    volatile float sink = 0;
    for (size_t r = 0; r < reps; r++) {
        float total = 0;
        double t0 = now_s();
#pragma omp parallel reduction(+ : total)
        {
            size_t t = 0, nt = 1;
#ifdef _OPENMP
            t = (size_t)omp_get_thread_num();
            nt = (size_t)omp_get_num_threads();
#endif
            size_t b0 = n_blk * t / nt, b1 = n_blk * (t + 1) / nt;
            total += read_sum(buf + b0 * 64, (b1 - b0) * 64);
        }
        double dt = now_s() - t0;
        sink += total;
        double gbs = (double)n * sizeof(float) / dt / 1e9;
        if (gbs > best)
            best = gbs;
    }
    (void)sink;
    printf("read_gbs %.1f threads %d mib %zu\n", best, n_thr, mib);
    free(buf);
    return 0;
}
