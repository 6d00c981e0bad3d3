// Greedy decoding tokens/s of the shipped stories260K model (and SmolLM2-135M when
// launch/get-smollm2 has fetched it) on the CPU backend at 1 and 2 threads, and the ratio against
// the naive single-loop backend (bench/naive_backend.cpp) decoding the same tokens in the same run.
//
//   build/bench/decode [--tokens N] [--smollm PATH] [--profile]
//
// --profile: SmolLM2-135M's decode once more at 2 threads through bench::ProfilingBackend, and
// the per-op table (GEMV, attention, norms, ...; the time outside backend ops is sampling and
// bookkeeping).
#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "bench/naive_backend.h"
#include "bench/profiling_backend.h"
#include "core/backend/registry.h"
#include "core/base/file_io.h"
#include "inference/engine/loaded_model.h"
#include "inference/engine/sampler.h"
#include "trainer/mha2mla/convert.h"
#include "latte_build_config.h"
#include "core/backend/cpu/openblas_kernels.h"

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
  LoadedModel m = load_model({path, "", &cpu_backend(), false});
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

// The per-op profile of `n` greedy steps at 2 threads.
void profile_decode(const std::string& label, const std::string& path, int64_t n) {
  LoadedModel m = load_model({path, "", &cpu_backend(), false});
  const int32_t bos = m.checkpoint.config.bos_id >= 0 ? m.checkpoint.config.bos_id : 0;
  omp_set_num_threads(2);
  openblas_set_num_threads(2);
  bench::ProfilingBackend prof(cpu_backend());
  Transformer pm(m.model->config(), m.model->weights(), prof);
  decode_rate(pm, bos, std::min<int64_t>(n, 8));  // warm-up
  prof.reset();
  const auto t0 = std::chrono::steady_clock::now();
  const double rate = decode_rate(pm, bos, n);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\nper-op profile: %s decode, 2 threads, %lld tokens, %.2f s wall (%.1f tok/s)\n", label.c_str(),
              (long long)n, wall, rate);
  prof.report(stdout, wall);
  std::fputs(prof.json("\"source\":\"decode\",\"model\":\"" + label + "\",\"threads\":2").c_str(), stdout);
}

// Decode speed after a prompt of `context` tokens: prefill once, then `n` greedy steps. The MLA
// model decodes in its absorbed form (attention over the latent cache), the source model over
// its K/V cache, so the ratio is what the smaller cache buys per token at that context.
double decode_rate_at(Transformer& model, int64_t context, int64_t n) {
  KvCache cache = KvCache::create(model.config(), 1, context + n);
  std::vector<int32_t> prompt(static_cast<size_t>(context));
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t((i * 7 + 3) % size_t(model.config().vocab_size));
  model.forward(prompt, 1, cache, LogitsFor::last_position);
  int32_t token = 1;
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < n; ++i) {
    Tensor logits = model.forward(std::span<const int32_t>(&token, 1), 1, cache, LogitsFor::last_position);
    token = argmax_lowest_id(std::span<const float>(logits.f32(), size_t(model.config().vocab_size)));
  }
  return double(n) / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void bench_mla_vs_mha(const std::string& label, const std::string& path, int64_t context, int64_t n) {
  Checkpoint src = load_checkpoint(path);
  ConvertOptions o;
  o.strategy = RopeStrategy::high;  // no calibration needed; the decode cost does not depend on which pairs
  Checkpoint mla = convert_to_mla(src, o, nullptr);
  Transformer mha_model(src.config, weights_to_f32(src.config, weights_from_store(src.config, src.tensors)), cpu_backend());
  Transformer mla_model(mla.config, weights_from_store(mla.config, mla.tensors), cpu_backend());
  const double kv_ratio = double(src.config.kv_cache_elements_per_token()) / double(mla.config.kv_cache_elements_per_token());
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    const double a = decode_rate_at(mha_model, context, n), b = decode_rate_at(mla_model, context, n);
    std::printf("%-14s context %5lld, %d thread%s: MHA/GQA form %9.1f tok/s, MLA absorbed (r=%lld d_kv=%lld, cache /%.1f) "
                "%9.1f tok/s  x%.2f\n", label.c_str(), (long long)context, threads, threads > 1 ? "s" : " ", a,
                (long long)mla.config.rope_pairs, (long long)mla.config.kv_rank_per_head, kv_ratio, b, b / a);
    std::printf("{\"bench\":\"decode_mla_vs_mha\",\"model\":\"%s\",\"context\":%lld,\"threads\":%d,"
                "\"mha_tokens_per_s\":%.2f,\"mla_tokens_per_s\":%.2f,\"ratio\":%.3f}\n",
                label.c_str(), (long long)context, threads, a, b, b / a);
  }
}

}  // namespace

int main(int argc, char** argv) {
  latte::cpu::use_openblas_kernels_for_this_cpu(argv);  // before anything else: it may re-execute
  int64_t tokens = 256;
  std::string smollm = std::string(LATTE_SOURCE_DIR) + "/models/smollm2-135m-hf";
  bool profile = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--tokens") && i + 1 < argc) tokens = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--smollm") && i + 1 < argc) smollm = argv[++i];
    else if (!std::strcmp(argv[i], "--profile")) profile = true;
    else {
      std::fprintf(stderr, "usage: decode [--tokens N] [--smollm PATH] [--profile]\n");
      return 2;
    }
  }
  try {
    bench_model("stories260K", std::string(LATTE_SOURCE_DIR) + "/models/stories260K/stories260K.bin", tokens, tokens);
    bench_mla_vs_mha("stories260K", std::string(LATTE_SOURCE_DIR) + "/models/stories260K/stories260K.bin", 448, 64);
    if (file_exists(smollm)) {
      bench_model("SmolLM2-135M", smollm, std::min<int64_t>(tokens, 64), 8);
      bench_mla_vs_mha("SmolLM2-135M", smollm, 1024, 32);
      if (profile) profile_decode("SmolLM2-135M", smollm, tokens);
    } else {
      std::printf("SmolLM2-135M   skipped: %s not found (run launch/get-smollm2)\n", smollm.c_str());
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "decode: %s\n", e.what());
    return 1;
  }
  return 0;
}
