// The arithmetic ceilings of this CPU's vector units, per core and for all threads: f32 FMA on
// 8 lanes (AVX2) and 16 lanes (AVX-512), and the AVX-512 BF16 dot-product instruction (vdpbf16ps:
// per f32 lane, two bf16 products added), each as 12 independent accumulator chains so that the
// instruction's throughput, not its latency, is measured. Printed against each other: the ratio
// bf16 / f32-FMA is what a bf16 GEMM could gain over an f32 one on this CPU at best (2x where
// vdpbf16ps issues as often as an FMA; on the development Xeon it issues half as often, so a bf16
// GEMM would gain nothing, and Latte computes in f32).
//
//   build/bench/isa_peak [--threads 2] [--ms 500]
#include <omp.h>
#include <immintrin.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

// One kernel: n steps of 12 independent accumulator chains (distinct starting values, so the
// compiler cannot merge them), returning their sum so that nothing is elided. X and Y are the
// loop-invariant operands; STEP(acc) is one instruction on one chain.
#define LATTE_PEAK_KERNEL(NAME, TARGET, V, SPLAT, ADD, STORE, LANES, X, Y, STEP)  \
  __attribute__((target(TARGET))) float NAME(long n, float seed) {                 \
    const auto x = X;                                                              \
    const auto y = Y;                                                              \
    V a[12];                                                                       \
    _Pragma("GCC unroll 12") for (int j = 0; j < 12; ++j) a[j] = SPLAT(float(j) + seed); \
    for (long i = 0; i < n; ++i) {                                                 \
      _Pragma("GCC unroll 12") for (int j = 0; j < 12; ++j) a[j] = STEP;          \
    }                                                                              \
    V s = a[0];                                                                    \
    for (int j = 1; j < 12; ++j) s = ADD(s, a[j]);                                 \
    float out[LANES];                                                              \
    STORE(out, s);                                                                 \
    return out[0] + out[LANES - 1];                                                \
  }

LATTE_PEAK_KERNEL(fma_avx2, "avx2,fma", __m256, _mm256_set1_ps, _mm256_add_ps, _mm256_storeu_ps, 8,
                  _mm256_set1_ps(1.0f + seed * 1e-9f), _mm256_set1_ps(0.999f), _mm256_fmadd_ps(x, y, a[j]))
LATTE_PEAK_KERNEL(fma_avx512, "avx512f", __m512, _mm512_set1_ps, _mm512_add_ps, _mm512_storeu_ps, 16,
                  _mm512_set1_ps(1.0f + seed * 1e-9f), _mm512_set1_ps(0.999f), _mm512_fmadd_ps(x, y, a[j]))
LATTE_PEAK_KERNEL(dpbf16_avx512, "avx512f,avx512bf16", __m512, _mm512_set1_ps, _mm512_add_ps, _mm512_storeu_ps, 16,
                  (__m512bh)_mm512_set1_epi32(0x3f803f80 + int(seed)), (__m512bh)_mm512_set1_epi32(0x3f7f3f7f),
                  _mm512_dpbf16_ps(a[j], x, y))

// GFLOP/s of `kernel` (flop_per_step FLOPs per loop step) on `threads` threads at once, best of 3.
double gflops(float (*kernel)(long, float), double flop_per_step, int threads, double ms) {
  long n = 1 << 20;
  for (;;) {  // calibrate n to about `ms` on one thread
    const auto t0 = std::chrono::steady_clock::now();
    volatile float sink = kernel(n, 1.0f);
    (void)sink;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s * 1e3 > ms / 4) {
      n = long(double(n) * ms / 1e3 / s);
      break;
    }
    n *= 2;
  }
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    float sum = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sum)
    sum += kernel(n, float(omp_get_thread_num()));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    volatile float sink = sum;
    (void)sink;
    best = std::max(best, double(n) * flop_per_step * threads / s / 1e9);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  double ms = 500;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--ms") && i + 1 < argc) ms = std::atof(argv[++i]);
    else {
      std::fprintf(stderr, "usage: isa_peak [--threads 2] [--ms 500]\n");
      return 2;
    }
  }
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f"), bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  struct Row {
    const char* name;
    bool available;
    float (*kernel)(long, float);
    double flop;  // per step: 12 instructions x lanes x 2 (FMA) or x 4 (two products and two adds)
  };
  const Row rows[] = {{"f32 FMA, 8 lanes (AVX2)", true, fma_avx2, 12 * 8 * 2},
                      {"f32 FMA, 16 lanes (AVX-512)", avx512, fma_avx512, 12 * 16 * 2},
                      {"bf16 dot product, vdpbf16ps", bf16, dpbf16_avx512, 12 * 16 * 4}};
  std::printf("vector arithmetic ceilings, GFLOP/s (12 independent chains per thread, best of 3)\n");
  std::printf("%-30s %12s %12s\n", "instruction", "1 thread", (std::to_string(threads) + " threads").c_str());
  double fma_peak = 0;
  for (const Row& r : rows) {
    if (!r.available) {
      std::printf("%-30s %12s %12s\n", r.name, "n/a", "n/a");
      continue;
    }
    const double one = gflops(r.kernel, r.flop, 1, ms), all = gflops(r.kernel, r.flop, threads, ms);
    if (r.kernel != dpbf16_avx512) fma_peak = std::max(fma_peak, all);
    std::printf("%-30s %12.1f %12.1f", r.name, one, all);
    if (r.kernel == dpbf16_avx512) std::printf("   x%.2f the f32 FMA peak", all / fma_peak);
    std::printf("\n{\"bench\":\"isa_peak\",\"instruction\":\"%s\",\"threads\":%d,\"gflops_1\":%.1f,\"gflops_all\":%.1f}\n",
                r.name, threads, one, all);
  }
  return 0;
}
