/* The machine's fp32 multiply-add peak, the ceiling for any matrix-multiply
 * kernel: every thread runs 12 independent chains of 8-wide fused
 * multiply-adds (AVX2 + FMA: enough chains to cover two FMA units' 4-cycle
 * latency; on Zen 4 a 512-bit FMA has the same throughput as two 256-bit
 * ones, so AVX2 reaches the peak there too; -O3 keeps the 12 accumulators in
 * registers, -O2 leaves them in memory and measures store forwarding).
 * Used by bench/notes.md:
 *
 *     cc -O3 -mavx2 -mfma -fopenmp bench/fma_peak.c -o /tmp/fma_peak
 *     OMP_NUM_THREADS=2 /tmp/fma_peak
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>

int main(void) {
    const long iterations = 400000000L;
    double t0 = omp_get_wtime();
    int threads = 1;
#pragma omp parallel
    {
#pragma omp single
        threads = omp_get_num_threads();
        __m256 acc[12];
        for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps(1.0f + 0.1f * (float)i);
        const __m256 mul = _mm256_set1_ps(1.0000001f), add = _mm256_set1_ps(1e-9f);
        long mine = iterations / omp_get_num_threads();
        for (long n = 0; n < mine; n++) {
            for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], mul, add);
        }
        __m256 sum = acc[0];
        for (int i = 1; i < 12; i++) sum = _mm256_add_ps(sum, acc[i]);
        float out[8];
        _mm256_storeu_ps(out, sum);
        if (out[0] == 0.5f) printf("(unlikely)\n"); /* keeps the chains live */
    }
    double seconds = omp_get_wtime() - t0;
    printf("%.1f GFLOP/s fp32 FMA peak on %d threads\n", iterations * 12.0 * 8 * 2 / seconds / 1e9, threads);
    return 0;
}
