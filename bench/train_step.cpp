// Training step (forward + backward, no optimizer update) tokens/s of the shipped stories260K model
// on the CPU backend at 1 and 2 threads, and the ratio against the naive single-loop backend in the
// same run. --model times another checkpoint (any format load_model reads, weights converted to
// f32), e.g. models/smollm2-135m-hf for bench/peers; --threads N runs only that thread count and
// --no-naive skips the baseline (which takes many minutes on a 135M model). --profile runs the
// steps once more at the last thread count through bench::ProfilingBackend and prints the per-op
// table (GEMMs forward / dx / dw, attention, cross-entropy, norms, ...).
//
//   build/bench/train_step [--batch B] [--seq T] [--steps N] [--model PATH] [--threads N] [--no-naive]
//                          [--profile]
#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench/naive_backend.h"
#include "bench/profiling_backend.h"
#include "core/backend/registry.h"
#include "inference/engine/loaded_model.h"
#include "latte_build_config.h"
#include "core/backend/cpu/openblas_kernels.h"

using namespace latte;

namespace {

double step_rate(Transformer& model, const std::vector<int32_t>& tokens, const std::vector<int32_t>& targets,
                 int64_t batch, int steps) {
  ModelWeights grads = weights_zeros_like(model.config());
  Activations acts;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) {
    model.forward_train(tokens, targets, batch, acts);
    model.backward(acts, grads);
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return double(tokens.size()) * steps / s;
}

// The label the output uses: stories260K for the default model, else the file or folder name.
std::string model_label(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  std::string name = path.substr(path.find_last_of('/') + 1);
  if (name == "stories260K.bin") return "stories260K";
  return name;
}

}  // namespace

int main(int argc, char** argv) {
  latte::cpu::use_openblas_kernels_for_this_cpu(argv);  // before anything else: it may re-execute
  int64_t batch = 4, seq = 256;
  int steps = 5, only_threads = 0;
  bool naive_baseline = true, profile = false;
  std::string path = std::string(LATTE_SOURCE_DIR) + "/models/stories260K/stories260K.bin";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--batch") && i + 1 < argc) batch = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--seq") && i + 1 < argc) seq = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--model") && i + 1 < argc) path = argv[++i];
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) only_threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--no-naive")) naive_baseline = false;
    else if (!std::strcmp(argv[i], "--profile")) profile = true;
    else {
      std::fprintf(stderr, "usage: train_step [--batch B] [--seq T] [--steps N] [--model PATH] [--threads N] "
                           "[--no-naive] [--profile]\n");
      return 2;
    }
  }
  if (batch < 1 || seq < 1 || steps < 1 || only_threads < 0) {
    std::fprintf(stderr, "train_step: --batch, --seq and --steps must be >= 1, --threads >= 1\n");
    return 2;
  }
  const std::string label = model_label(path);
  try {
    LoadedModel m = load_model({path, "", &cpu_backend(), false});
    const ModelConfig& c = m.model->config();
    Transformer model(c, weights_to_f32(c, m.model->weights()), cpu_backend());
    std::mt19937 rng(1);
    std::uniform_int_distribution<int32_t> tok(0, int32_t(c.vocab_size - 1));
    std::vector<int32_t> tokens(static_cast<size_t>(batch * seq)), targets(static_cast<size_t>(batch * seq));
    for (auto& t : tokens) t = tok(rng);
    for (auto& t : targets) t = tok(rng);
    double base = 0;
    if (naive_baseline) {
      bench::NaiveBackend naive;
      Transformer naive_model(c, model.weights(), naive);
      base = step_rate(naive_model, tokens, targets, batch, 1);
      std::printf("train_step %s B=%lld T=%lld: naive (1 thread, baseline) %9.1f tok/s\n", label.c_str(),
                  (long long)batch, (long long)seq, base);
      std::printf("{\"bench\":\"train_step\",\"model\":\"%s\",\"backend\":\"naive\",\"threads\":1,"
                  "\"tokens_per_s\":%.1f}\n", label.c_str(), base);
    }
    std::vector<int> thread_counts = {1, 2};
    if (only_threads > 0) thread_counts = {only_threads};
    for (int threads : thread_counts) {
      omp_set_num_threads(threads);
      openblas_set_num_threads(threads);
      step_rate(model, tokens, targets, batch, 1);  // warm-up
      double rate = step_rate(model, tokens, targets, batch, steps);
      std::printf("train_step %s B=%lld T=%lld: cpu (%d thread%s)          %9.1f tok/s", label.c_str(),
                  (long long)batch, (long long)seq, threads, threads > 1 ? "s" : " ", rate);
      if (base > 0) std::printf("  x%.1f vs naive", rate / base);
      std::printf("\n{\"bench\":\"train_step\",\"model\":\"%s\",\"backend\":\"cpu\",\"threads\":%d,"
                  "\"tokens_per_s\":%.1f", label.c_str(), threads, rate);
      if (base > 0) std::printf(",\"ratio_vs_naive\":%.2f", rate / base);
      std::printf("}\n");
    }
    if (profile) {
      bench::ProfilingBackend prof(cpu_backend());
      Transformer pm(c, model.weights(), prof);
      step_rate(pm, tokens, targets, batch, 1);  // warm-up
      prof.reset();
      const auto t0 = std::chrono::steady_clock::now();
      const double rate = step_rate(pm, tokens, targets, batch, steps);
      const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("\nper-op profile: %s, %d thread%s, %d step%s of %lld x %lld tokens, %.2f s wall (%.1f tok/s)\n",
                  label.c_str(), thread_counts.back(), thread_counts.back() > 1 ? "s" : "", steps, steps > 1 ? "s" : "",
                  (long long)batch, (long long)seq, wall, rate);
      prof.report(stdout, wall);
      std::fputs(prof.json("\"source\":\"train_step\",\"model\":\"" + label + "\"").c_str(), stdout);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "train_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
