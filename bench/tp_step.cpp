// Tensor-parallel training step (forward + backward) tokens/s on the CPU backend, run under mpirun:
//
//   mpirun -np 2 build/bench/tp_step [--batch B] [--steps N] [--threads K]
//
// For each model (the shipped stories260K at B x 256 tokens, and a bigger random llama config:
// dim 256, 8 heads, 8 KV heads, hidden 688, 4 layers, vocab 512, at B x 256 tokens):
//  - TP = 1: every rank runs the whole model alone on the batch at the same time (no
//    communication; each rank on its own core, as the TP run's ranks are). Its rate is one rank's
//    tokens/s, the time being the slowest rank's.
//  - TP = world size: the ranks run one model split over them (Megatron-style, core/model) on the
//    same batch; tokens/s of the group.
// It prints both, the ratio TP/TP1 (the speed-up of one batch's step from splitting the model),
// and one JSON line per measurement. Each rank keeps K (default 1) OpenMP/OpenBLAS threads so that
// the ranks do not compete for cores.
#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "core/backend/registry.h"
#include "core/checkpoint/checkpoint.h"
#include "core/model/transformer.h"
#include "latte_build_config.h"

#ifdef LATTE_BENCH_MPI
#include <mpi.h>

#include "parallel/runtime.h"
#include "core/backend/cpu/openblas_kernels.h"
#endif

using namespace latte;

#ifdef LATTE_BENCH_MPI
namespace {

ModelWeights random_weights(const ModelConfig& c, uint32_t seed) {
  ModelWeights w = weights_zeros_like(c);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for_each_weight(c, w, [&](const std::string& name, const Shape& shape, Tensor& t) {
    const bool is_norm = name.find("norm") != std::string::npos;
    const float sd = shape.size() == 2 ? 1.0f / std::sqrt(float(shape[1])) : 0.0f;
    float* p = t.f32();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = is_norm ? 1.0f : sd * normal(rng);
  });
  return w;
}

ModelConfig big_config() {
  ModelConfig c;
  c.dim = 256;
  c.hidden_dim = 688;
  c.n_layers = 4;
  c.n_heads = 8;
  c.n_kv_heads = 8;
  c.head_dim = 32;
  c.vocab_size = 512;
  c.max_seq_len = 256;
  c.tied_embeddings = true;
  return c;
}

// Seconds for `steps` forward + backward passes, the slowest rank's (a max all-reduce over the world).
double timed_steps(Transformer& model, const std::vector<int32_t>& tokens, const std::vector<int32_t>& targets,
                   int64_t batch, int steps) {
  ModelWeights grads = weights_zeros_like(model.config(), model.tp());
  Activations acts;
  model.forward_train(tokens, targets, batch, acts);  // warm-up
  model.backward(acts, grads);
  MPI_Barrier(MPI_COMM_WORLD);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) {
    model.forward_train(tokens, targets, batch, acts);
    model.backward(acts, grads);
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return s;
}

void bench_model(const std::string& name, const ModelConfig& c, const ModelWeights& full, int64_t batch, int64_t seq,
                 int steps, ParallelRuntime& rt) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<int32_t> tok(0, int32_t(c.vocab_size - 1));
  std::vector<int32_t> tokens(static_cast<size_t>(batch * seq)), targets(static_cast<size_t>(batch * seq));
  for (auto& t : tokens) t = tok(rng);
  for (auto& t : targets) t = tok(rng);
  const double n = double(batch * seq) * steps;
  const bool lead = rt.world_rank() == 0;

  Transformer solo(c, full, cpu_backend());
  const double r1 = n / timed_steps(solo, tokens, targets, batch, steps);

  Communicator& tp = rt.tp();
  const TpLayout layout = tp_layout(c, tp.rank(), tp.size());
  TensorStore local = shard_store(c, layout, weights_to_store(c, full));
  Transformer split(c, weights_from_store(c, local, layout), cpu_backend(), &tp);
  const double rn = n / timed_steps(split, tokens, targets, batch, steps);

  if (!lead) return;
  std::printf("tp_step %-11s B=%lld T=%lld: tp 1 (each of %d ranks alone) %9.1f tok/s   tp %d %9.1f tok/s   "
              "ratio x%.2f\n",
              name.c_str(), (long long)batch, (long long)seq, rt.world_size(), r1, tp.size(), rn, rn / r1);
  std::printf("{\"bench\":\"tp_step\",\"model\":\"%s\",\"batch\":%lld,\"seq\":%lld,\"tp\":1,\"ranks\":%d,"
              "\"tokens_per_s\":%.1f}\n",
              name.c_str(), (long long)batch, (long long)seq, rt.world_size(), r1);
  std::printf("{\"bench\":\"tp_step\",\"model\":\"%s\",\"batch\":%lld,\"seq\":%lld,\"tp\":%d,\"ranks\":%d,"
              "\"tokens_per_s\":%.1f,\"ratio_vs_tp1\":%.3f}\n",
              name.c_str(), (long long)batch, (long long)seq, tp.size(), rt.world_size(), rn, rn / r1);
  std::fflush(stdout);
}

}  // namespace
#endif

int main(int argc, char** argv) {
  latte::cpu::use_openblas_kernels_for_this_cpu(argv);  // before anything else: it may re-execute
  int64_t batch = 4;
  int steps = 3, threads = 1;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--batch") && i + 1 < argc) batch = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: mpirun -np N tp_step [--batch B] [--steps N] [--threads K]\n");
      return 2;
    }
  }
#ifndef LATTE_BENCH_MPI
  (void)batch, (void)steps, (void)threads;
  std::fprintf(stderr, "tp_step: this build has no MPI (LATTE_WITH_MPI=OFF); nothing to measure\n");
  return 1;
#else
  int world = 1;
  try {
    MPI_Init(&argc, &argv);  // ParallelRuntime attaches; finalized below on the normal path
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    {
      ParallelRuntime rt({.tp_size = world, .announce = false});
      if (rt.world_rank() == 0)
        std::printf("tp_step: %d ranks, %d thread%s each, %d timed steps after one warm-up\n", world, threads,
                    threads > 1 ? "s" : "", steps);
      Checkpoint ck = load_checkpoint(std::string(LATTE_SOURCE_DIR) + "/models/stories260K/stories260K.bin");
      bench_model("stories260K", ck.config, weights_to_f32(ck.config, weights_from_store(ck.config, ck.tensors)),
                  batch, 256, steps, rt);
      const ModelConfig big = big_config();
      bench_model("dim256-L4", big, random_weights(big, 7), batch, 256, steps, rt);
    }
    MPI_Finalize();
  } catch (const Error& e) {
    std::fprintf(stderr, "tp_step: rank %d: %s\n", mpi_world_rank(), e.what());
    return 1;
  }
  return 0;
#endif
}
