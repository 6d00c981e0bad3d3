// Greedy decoding tokens/s of the shipped stories260K model (and SmolLM2-135M when
// launch/get-smollm2 has fetched it) on the CPU backend at 1 and 2 threads, and the ratio against
// the naive single-loop backend (bench/naive_backend.cpp) decoding the same tokens in the same run.
//
//   build/bench/decode [--tokens N] [--smollm PATH]
#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "bench/naive_backend.h"
#include "core/backend/registry.h"
#include "core/base/file_io.h"
#include "inference/engine/loaded_model.h"
#include "inference/engine/sampler.h"
#include "latte_build_config.h"

using namespace latte;

namespace {

// Decodes `n` tokens greedily after a BOS, one token per forward, and returns tokens/s.
double decode_rate(Transformer& model, int32_t bos, int64_t n) {
  KvCache cache = KvCache::create(model.config(), 1, n + 1);
  int32_t token = bos;
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < n; ++i) {
    Tensor logits = model.forward(std::span<const int32_t>(&token, 1), 1, cache, LogitsFor::last_position);
    token = argmax_lowest_id(std::span<const float>(logits.f32(), size_t(model.config().vocab_size)));
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return double(n) / s;
}

void bench_model(const std::string& label, const std::string& path, int64_t tokens, int64_t naive_tokens) {
  LoadedModel m = load_model({path, "", "cpu", false});
  int32_t bos = m.checkpoint.config.bos_id >= 0 ? m.checkpoint.config.bos_id : 0;
  bench::NaiveBackend naive;
  Transformer naive_model(m.model->config(), m.model->weights(), naive);
  double base = decode_rate(naive_model, bos, naive_tokens);
  std::printf("%-14s naive (1 thread, baseline)  %9.1f tok/s\n", label.c_str(), base);
  std::printf("{\"bench\":\"decode\",\"model\":\"%s\",\"backend\":\"naive\",\"threads\":1,\"tokens_per_s\":%.2f}\n",
              label.c_str(), base);
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    decode_rate(*m.model, bos, std::min<int64_t>(tokens, 8));  // warm-up
    double rate = decode_rate(*m.model, bos, tokens);
    std::printf("%-14s cpu   (%d thread%s)            %9.1f tok/s  x%.1f vs naive\n", label.c_str(), threads,
                threads > 1 ? "s" : " ", rate, rate / base);
    std::printf("{\"bench\":\"decode\",\"model\":\"%s\",\"backend\":\"cpu\",\"threads\":%d,\"tokens_per_s\":%.2f,"
                "\"ratio_vs_naive\":%.2f}\n", label.c_str(), threads, rate, rate / base);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int64_t tokens = 256;
  std::string smollm = std::string(LATTE_SOURCE_DIR) + "/models/smollm2-135m-hf";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--tokens") && i + 1 < argc) tokens = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--smollm") && i + 1 < argc) smollm = argv[++i];
    else {
      std::fprintf(stderr, "usage: decode [--tokens N] [--smollm PATH]\n");
      return 2;
    }
  }
  try {
    bench_model("stories260K", std::string(LATTE_SOURCE_DIR) + "/models/stories260K/stories260K.bin", tokens, tokens);
    if (file_exists(smollm)) {
      bench_model("SmolLM2-135M", smollm, std::min<int64_t>(tokens, 64), 8);
    } else {
      std::printf("SmolLM2-135M   skipped: %s not found (run launch/get-smollm2)\n", smollm.c_str());
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "decode: %s\n", e.what());
    return 1;
  }
  return 0;
}
