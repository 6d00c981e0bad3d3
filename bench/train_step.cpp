// Training step (forward + backward) tokens/s of the shipped stories260K model on the CPU backend
// at 1 and 2 threads, and the ratio against the naive single-loop backend in the same run.
//
//   build/bench/train_step [--batch B] [--seq T] [--steps N]
#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>

#include "bench/naive_backend.h"
#include "core/backend/registry.h"
#include "inference/engine/loaded_model.h"
#include "latte_build_config.h"

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

}  // namespace

int main(int argc, char** argv) {
  int64_t batch = 4, seq = 256;
  int steps = 5;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--batch") && i + 1 < argc) batch = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--seq") && i + 1 < argc) seq = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: train_step [--batch B] [--seq T] [--steps N]\n");
      return 2;
    }
  }
  try {
    LoadedModel m = load_model({std::string(LATTE_SOURCE_DIR) + "/models/stories260K/stories260K.bin", "", &cpu_backend(), false});
    const ModelConfig& c = m.model->config();
    Transformer model(c, weights_to_f32(c, m.model->weights()), cpu_backend());
    std::mt19937 rng(1);
    std::uniform_int_distribution<int32_t> tok(0, int32_t(c.vocab_size - 1));
    std::vector<int32_t> tokens(static_cast<size_t>(batch * seq)), targets(static_cast<size_t>(batch * seq));
    for (auto& t : tokens) t = tok(rng);
    for (auto& t : targets) t = tok(rng);
    bench::NaiveBackend naive;
    Transformer naive_model(c, model.weights(), naive);
    double base = step_rate(naive_model, tokens, targets, batch, 1);
    std::printf("train_step stories260K B=%lld T=%lld: naive (1 thread, baseline) %9.1f tok/s\n", (long long)batch,
                (long long)seq, base);
    std::printf("{\"bench\":\"train_step\",\"backend\":\"naive\",\"threads\":1,\"tokens_per_s\":%.1f}\n", base);
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      openblas_set_num_threads(threads);
      step_rate(model, tokens, targets, batch, 1);  // warm-up
      double rate = step_rate(model, tokens, targets, batch, steps);
      std::printf("train_step stories260K B=%lld T=%lld: cpu (%d thread%s)          %9.1f tok/s  x%.1f vs naive\n",
                  (long long)batch, (long long)seq, threads, threads > 1 ? "s" : " ", rate, rate / base);
      std::printf("{\"bench\":\"train_step\",\"backend\":\"cpu\",\"threads\":%d,\"tokens_per_s\":%.1f,"
                  "\"ratio_vs_naive\":%.2f}\n", threads, rate, rate / base);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "train_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
