// Helpers shared by the tensor- and data-parallel model tests (tests/mpi_model): the models under
// test (the shipped stories260K, a random MLA config, random llama MHA configs), deterministic
// random weights and batches that every rank builds identically, tolerance-checked comparisons,
// and a temp folder all ranks of the job share.
//
// Tolerances. A TP run computes the same sums as the single-rank run but in another order: the
// row-parallel o_proj/down_proj outputs and every column-parallel input gradient are partial sums
// added by an all-reduce, the vocab-parallel cross-entropy sums exp() per rank, the replicated
// W_dkv gradient is split by heads and summed. Reordering a float32 sum of K terms moves it by at
// most about K * 2^-24 * sum|terms|, and the differences pass through 2 to 5 layers of the model.
// The comparisons are normwise: max |got - ref| / max |ref| over a whole tensor, against
// kTpRelTol = 5e-5 (about 420 float32 ulps of the tensor's largest element). What the tests
// measure is printed on rank 0 ("[measured] ..."): on the development machine at most 7.2e-6
// (a gradient of stories260K at TP 4), logits at most 7.7e-7; the margin leaves room for other
// BLAS kernels (another CPU) summing in yet another order. Every bug these tests look for (a
// missing or doubled all-reduce, a wrong slice, a dropped W_dkv term, a wrong vocabulary offset)
// moves the result by O(1e-2..1) relative: giving every rank the same down_proj shard of one layer
// moved logits and gradients by 0.06 to 0.13 (checked once by hand, then undone).
#pragma once
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/checkpoint/checkpoint.h"
#include "core/model/model_tensors.h"
#include "core/model/transformer.h"
#include "parallel/runtime.h"
#include "tests/mpi/mpi_test_util.h"

namespace latte::test {

inline constexpr double kTpRelTol = 5e-5;

inline const std::string kModelsDir = LATTE_MODELS_DIR;
inline const std::string kStoriesBin = kModelsDir + "/stories260K/stories260K.bin";
inline const std::string kStoriesTok = kModelsDir + "/stories260K/tok512.bin";
inline const std::string kStoriesText = kModelsDir + "/stories260K/tinystories_valid_head.txt";

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
inline int world_size() {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

// The TP sizes a test runs at: the world size, and 2 when the world has 4 ranks (two TP groups).
inline std::vector<int> tp_sizes() {
  std::vector<int> out{world_size()};
  if (world_size() == 4) out.push_back(2);
  return out;
}

// A folder every rank of the job sees under the same name (rank 0 creates it and broadcasts it).
inline std::string shared_temp_dir(const std::string& name) {
  char buf[512] = {};
  if (world_rank() == 0) {
    namespace fs = std::filesystem;
    fs::path p = fs::temp_directory_path() / ("latte_mpi_model_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(p);
    fs::create_directories(p);
    std::snprintf(buf, sizeof buf, "%s", p.string().c_str());
  }
  MPI_Bcast(buf, int(sizeof buf), MPI_CHAR, 0, MPI_COMM_WORLD);
  return buf;
}
inline void remove_shared_temp_dir(const std::string& dir) {
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) std::filesystem::remove_all(dir);
}

// Prints one line on rank 0 of the world (what a test measured).
template <typename... A>
void measured(const char* fmt, A... args) {
  if (world_rank() != 0) return;
  std::printf("[measured] ");
  std::printf(fmt, args...);
  std::printf("\n");
  std::fflush(stdout);
}

// ---- models ---------------------------------------------------------------------------------

struct ModelCase {
  std::string name;
  ModelConfig config;
  ModelWeights weights;  // the whole model, f32
};

inline ModelWeights random_weights(const ModelConfig& c, uint32_t seed) {
  ModelWeights w = weights_zeros_like(c);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for_each_weight(c, w, [&](const std::string& name, const Shape& shape, Tensor& t) {
    float* p = t.f32();
    const bool is_norm = name.find("norm") != std::string::npos;
    // 1/sqrt(fan_in) keeps activations O(1) through the layers, so softmax does not saturate and
    // every gradient is far from zero.
    const float sd = shape.size() == 2 ? 1.0f / std::sqrt(float(shape[1])) : 0.0f;
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = is_norm ? 1.0f + 0.2f * normal(rng) : sd * normal(rng);
  });
  return w;
}

inline ModelCase stories260k() {
  Checkpoint ck = load_checkpoint(kStoriesBin);
  ModelCase m{"stories260K", ck.config, {}};
  m.weights = weights_to_f32(m.config, weights_from_store(m.config, ck.tensors));
  return m;
}

// MLA with 8 query heads, 4 KV heads, head_dim 8, r = 1 RoPE pair per head (a different kept
// frequency for each KV head and layer), d_kv = 6 (latent width 24).
inline ModelConfig mla_config(bool tied) {
  ModelConfig c;
  c.architecture = "mla";
  c.dim = 64;
  c.hidden_dim = 96;
  c.n_layers = 2;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  c.head_dim = 8;
  c.vocab_size = 64;
  c.max_seq_len = 64;
  c.rope_layout = RopeLayout::interleaved;
  c.tied_embeddings = tied;
  c.rope_pairs = 1;
  c.kv_rank_per_head = 6;
  c.rope_freqs.assign(size_t(c.n_layers), {});
  for (int64_t l = 0; l < c.n_layers; ++l)
    for (int64_t j = 0; j < c.n_kv_heads; ++j) c.rope_freqs[size_t(l)].push_back({int32_t((j + 3 * l) % 4)});
  return c;
}

// The same shape in DeepSeek's layout: one shared RoPE key of d_r = 6 dims (3 pairs, a repeated
// frequency, different per layer) read by all 8 query heads, query heads 6 + 8 wide.
inline ModelConfig mla_shared_rope_config(bool tied) {
  ModelConfig c = mla_config(tied);
  c.rope_pairs = 0;
  c.rope_freqs.clear();
  c.shared_rope_dim = 6;
  c.shared_rope_freqs = {{0, 0, 2}, {3, 1, 1}};
  return c;
}

// Llama MHA (n_kv_heads == n_heads), HF rotate-half rows.
inline ModelConfig llama_mha_config(bool tied) {
  ModelConfig c;
  c.architecture = "llama";
  c.dim = 32;
  c.hidden_dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 4;
  c.head_dim = 8;
  c.vocab_size = 96;
  c.max_seq_len = 64;
  c.rope_layout = RopeLayout::rotate_half;
  c.tied_embeddings = tied;
  return c;
}

inline ModelCase random_case(const std::string& name, const ModelConfig& c, uint32_t seed) {
  return ModelCase{name, c, random_weights(c, seed)};
}

// The weights of TP rank `tp.rank()` of `tp.size()`, sliced from the whole model as a loader does.
inline ModelWeights rank_weights(const ModelConfig& c, const TpLayout& layout, const ModelWeights& full) {
  TensorStore local = shard_store(c, layout, weights_to_store(c, full));
  ModelWeights w = weights_from_store(c, local, layout);
  // Replicated tensors are views on the whole model's; copies keep the two models independent.
  for_each_weight(c, layout, w, [](const std::string&, const Shape&, Tensor& t) { t = t.clone(); });
  if (c.tied_embeddings) w.lm_head = w.tok_embeddings;
  return w;
}

// ---- batches --------------------------------------------------------------------------------

struct TokenBatch {
  std::vector<int32_t> tokens, targets;
  int64_t rows = 0, seq = 0;
  // Rows [r0, r0 + n) as a batch of their own.
  TokenBatch rows_slice(int64_t r0, int64_t n) const {
    TokenBatch b;
    b.rows = n;
    b.seq = seq;
    b.tokens.assign(tokens.begin() + r0 * seq, tokens.begin() + (r0 + n) * seq);
    b.targets.assign(targets.begin() + r0 * seq, targets.begin() + (r0 + n) * seq);
    return b;
  }
};

// Random tokens and targets; target t of every row is ignored (-1) when t % 5 == 3, so every row
// counts the same number of targets (the DP test's mean of means equals the full mean).
inline TokenBatch random_batch(int64_t vocab, int64_t rows, int64_t seq, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> tok(0, int32_t(vocab - 1));
  TokenBatch b;
  b.rows = rows;
  b.seq = seq;
  for (int64_t i = 0; i < rows * seq; ++i) {
    b.tokens.push_back(tok(rng));
    b.targets.push_back((i % seq) % 5 == 3 ? -1 : tok(rng));
  }
  return b;
}

// ---- comparisons ----------------------------------------------------------------------------

struct Deviation {
  double max_abs_diff = 0, max_abs_ref = 0;
  double rel() const { return max_abs_ref > 0 ? max_abs_diff / max_abs_ref : max_abs_diff; }
};

inline Deviation deviation(const Tensor& got, const Tensor& ref) {
  Deviation d;
  std::vector<float> g = got.to(DType::f32).to_vector(), r = ref.to(DType::f32).to_vector();
  if (g.size() != r.size()) {
    d.max_abs_diff = INFINITY;
    return d;
  }
  for (size_t i = 0; i < g.size(); ++i) {
    d.max_abs_ref = std::max(d.max_abs_ref, double(std::abs(r[i])));
    double diff = std::abs(double(g[i]) - double(r[i]));
    if (!(diff <= d.max_abs_diff)) d.max_abs_diff = std::isnan(diff) ? INFINITY : diff;
  }
  return d;
}

// EXPECTs got == ref within kTpRelTol normwise (and equal shapes; a non-zero reference, so that
// the comparison can fail); returns the relative deviation.
inline double expect_close(const Tensor& got, const Tensor& ref, const std::string& what, double tol = kTpRelTol) {
  EXPECT_EQ(shape_str(got.shape()), shape_str(ref.shape())) << what;
  if (got.shape() != ref.shape()) return INFINITY;
  Deviation d = deviation(got, ref);
  EXPECT_GT(d.max_abs_ref, 0.0) << what << ": the reference is all zeros, so the comparison proves nothing";
  EXPECT_LE(d.rel(), tol) << what << ": max |got - ref| = " << d.max_abs_diff << ", max |ref| = " << d.max_abs_ref;
  return d.rel();
}

inline bool bytes_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  Tensor ca = a.is_contiguous() ? a : a.clone(), cb = b.is_contiguous() ? b : b.clone();
  return std::memcmp(ca.raw(), cb.raw(), ca.nbytes()) == 0;
}

// Max of a double over the ranks of the world (for reporting the worst rank's deviation).
inline double world_max(double v) {
  MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return v;
}

}  // namespace latte::test
