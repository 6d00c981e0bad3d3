// The linear layer at the row counts the serving engine runs (decode batches of M = 1..128 rows)
// on SmolLM2-135M's shapes: Latte's CPU linear_forward against OpenBLAS's own multi-threaded
// cblas_sgemm on the same operands (the peer a user would call), same process, same threads.
// Prints, per M and weight shape, milliseconds per call, GFLOP/s, the weight bytes streamed per
// second, and the ratio (OpenBLAS time / Latte time: above 1 is faster than OpenBLAS), then the
// sum over one layer's seven products plus the logits (what one decode step of M sequences runs).
// Each call reads the next of several copies of its weight (256 MB in all), so weights come from
// memory as they do in a real step, not from the last-level cache.
//
//   build/bench/linear [--m 1,2,4,8,16,32,64,128] [--threads 2] [--dtype f32|bf16] [--ms 300]
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/backend/registry.h"
#include "core/backend/cpu/openblas_kernels.h"

using namespace latte;

namespace {

struct Args {
  std::vector<int64_t> m = {1, 2, 4, 8, 16, 32, 48, 64, 96, 128};
  int threads = 2;
  DType dtype = DType::f32;
  double ms = 300;  // time per measurement
};

struct Shape2 {
  const char* name;
  int64_t N, K;
  int per_layer;  // how many of these a layer runs (30 layers), or 0: once per step (the logits)
};

// SmolLM2-135M: D 576, 9 heads of 64, 3 KV heads, MLP 1536, vocab 49152, 30 layers.
const Shape2 kShapes[] = {
    {"q/o 576x576", 576, 576, 2}, {"k/v 192x576", 192, 576, 2}, {"gate/up 1536x576", 1536, 576, 2},
    {"down 576x1536", 576, 1536, 1}, {"logits 49152x576", 49152, 576, 0}};
constexpr int kLayers = 30;
constexpr int64_t kColdBytes = int64_t(256) << 20;  // f32 weights cycled through: 8x this L3

std::vector<int64_t> parse_list(const char* s) {
  std::vector<int64_t> out;
  for (const char* p = s; *p;) {
    out.push_back(std::atoll(p));
    while (*p && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  return out;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "linear: %s needs a value\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--m") a.m = parse_list(next());
    else if (k == "--threads") a.threads = std::atoi(next());
    else if (k == "--ms") a.ms = std::atof(next());
    else if (k == "--dtype") {
      const std::string d = next();
      if (d != "f32" && d != "bf16") {
        std::fprintf(stderr, "linear: --dtype is f32 or bf16, got %s\n", d.c_str());
        std::exit(2);
      }
      a.dtype = d == "bf16" ? DType::bf16 : DType::f32;
    } else {
      std::fprintf(stderr, "usage: linear [--m 1,2,4,...] [--threads T] [--dtype f32|bf16] [--ms MS]\n");
      std::exit(k == "--help" || k == "-h" ? 0 : 2);
    }
  }
  for (int64_t m : a.m)
    if (m < 1) {
      std::fprintf(stderr, "linear: every --m must be at least 1\n");
      std::exit(2);
    }
  return a;
}

// Seconds per call of f, repeated for about `ms` milliseconds after one warm-up call.
template <typename F>
double seconds_per_call(F&& f, double ms) {
  f();
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  int64_t n = 0;
  double elapsed = 0;
  do {
    f();
    ++n;
    elapsed = std::chrono::duration<double>(clock::now() - t0).count();
  } while (elapsed * 1e3 < ms);
  return elapsed / double(n);
}

Tensor random_tensor(std::mt19937& rng, int64_t rows, int64_t cols) {
  std::normal_distribution<float> normal(0.0f, 0.05f);
  Tensor t = Tensor::empty({rows, cols});
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = normal(rng);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  latte::cpu::use_openblas_kernels_for_this_cpu(argv);  // before anything else: it may re-execute
  const Args a = parse(argc, argv);
  omp_set_num_threads(a.threads);
  Backend& be = cpu_backend();
  std::mt19937 rng(7);
  std::printf("linear forward y[M,N] = x[M,K] w[N,K]^T, w %s, %d threads; OpenBLAS %s cblas_sgemm (f32 w) as the peer\n",
              dtype_name(a.dtype), a.threads, OPENBLAS_VERSION);
  std::printf("%5s  %-18s %10s %10s %9s %10s %8s\n", "M", "shape", "latte ms", "blas ms", "GFLOP/s", "w GB/s", "ratio");
  for (int64_t M : a.m) {
    double step_latte = 0, step_blas = 0;
    for (const Shape2& s : kShapes) {
      // A real step streams every weight from memory once; one matrix called again and again would
      // sit in the last-level cache. So each call takes the next of enough copies to overflow it.
      const int64_t copies = std::max<int64_t>(1, kColdBytes / (s.N * s.K * 4));
      std::vector<Tensor> w32s, ws;
      for (int64_t c = 0; c < copies; ++c) {
        w32s.push_back(random_tensor(rng, s.N, s.K));
        ws.push_back(a.dtype == DType::bf16 ? w32s.back().to(DType::bf16) : w32s.back());
      }
      const Tensor x = random_tensor(rng, M, s.K);
      Tensor y = Tensor::empty({M, s.N}), y_blas = Tensor::empty({M, s.N});
      size_t next = 0;
      const double t_latte = seconds_per_call([&] { be.linear_forward(y, x, ws[next++ % ws.size()], false); }, a.ms);
      const double t_blas = seconds_per_call(
          [&] {
            openblas_set_num_threads(a.threads);  // the backend keeps OpenBLAS at one thread
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(s.N), int(s.K), 1.0f, x.f32(), int(s.K),
                        w32s[next++ % w32s.size()].f32(), int(s.K), 0.0f, y_blas.f32(), int(s.N));
          },
          a.ms);
      const double flops = 2.0 * double(M * s.N * s.K), wbytes = double(ws[0].nbytes());
      std::printf("%5lld  %-18s %10.3f %10.3f %9.1f %10.1f %7.2fx\n", (long long)M, s.name, t_latte * 1e3,
                  t_blas * 1e3, flops / t_latte * 1e-9, wbytes / t_latte * 1e-9, t_blas / t_latte);
      std::printf("{\"bench\":\"linear\",\"m\":%lld,\"n\":%lld,\"k\":%lld,\"dtype\":\"%s\",\"threads\":%d,"
                  "\"latte_ms\":%.4f,\"openblas_ms\":%.4f,\"ratio\":%.3f}\n",
                  (long long)M, (long long)s.N, (long long)s.K, dtype_name(a.dtype), a.threads, t_latte * 1e3,
                  t_blas * 1e3, t_blas / t_latte);
      const int times = s.per_layer ? s.per_layer * kLayers : 1;
      step_latte += times * t_latte, step_blas += times * t_blas;
    }
    std::printf("%5lld  %-18s %10.2f %10.2f %9s %10s %7.2fx   (one decode step's products)\n", (long long)M,
                "step (30 layers)", step_latte * 1e3, step_blas * 1e3, "", "", step_blas / step_latte);
  }
  return 0;
}
