// Planner: activation and workspace bytes. Tiny configs counted by hand tensor by tensor, then
// the planner's list against the real Activations that Transformer::forward_train fills (at TP 1,
// and at TP 2 through a communicator that reports rank 0 of 2 and leaves tensors as they are: the
// values are wrong, the shapes are exactly a TP rank's).
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "core/backend/registry.h"
#include "core/model/transformer.h"
#include "trainer/planner/planner.h"

namespace latte::planner {
namespace {

// If this fails, Activations::Layer gained or lost a tensor: count it in activation_tensors.
static_assert(sizeof(Activations::Layer) == 15 * sizeof(Tensor), "Activations::Layer changed; update the planner");

// Rank 0 of a 2-rank group whose collectives do nothing.
class ShapeOnlyCommunicator final : public Communicator {
 public:
  explicit ShapeOnlyCommunicator(int size) : size_(size) {}
  int rank() const override { return 0; }
  int size() const override { return size_; }
  std::string name() const override { return "shape-only"; }
  void all_reduce(Tensor&, ReduceOp) override {}
  void all_gather(Tensor&, const Tensor&) override {}
  void reduce_scatter(Tensor&, const Tensor&) override {}
  void broadcast(Tensor&, int) override {}
  void broadcast_ints(std::span<int32_t>, int) override {}
  void barrier() override {}
  void send(const Tensor&, int, int) override {}
  void recv(Tensor&, int, int) override {}

 private:
  int size_;
};

// D 16, F 24, 2 layers, 4 heads of 8, 2 KV heads, vocab 30, tied.
ModelConfig tiny(const std::string& arch) {
  ModelConfig c;
  c.architecture = arch;
  c.dim = 16;
  c.hidden_dim = 24;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 30;
  c.max_seq_len = 64;
  c.tied_embeddings = true;
  if (arch == "mla") {
    c.rope_layout = RopeLayout::interleaved;
    c.rope_pairs = 1;        // R = 2
    c.kv_rank_per_head = 5;  // L = 10
    c.rope_freqs.assign(2, std::vector<std::vector<int32_t>>(2, std::vector<int32_t>{0}));
  }
  return c;
}

// Bytes of every tensor the Activations hold, by field name (layers summed), and the check that
// no two fields share storage (so summing nbytes() is the memory they hold).
std::map<std::string, int64_t> real_activation_bytes(const Activations& a, std::map<std::string, Shape>& shapes) {
  std::map<std::string, int64_t> bytes;
  std::set<const void*> seen;
  auto add = [&](const std::string& name, const Tensor& t) {
    if (!t.defined()) return;
    EXPECT_TRUE(seen.insert(t.raw()).second || t.numel() == 0) << name << " shares storage with another field";
    bytes[name] += int64_t(t.nbytes());
    shapes[name] = t.shape();
  };
  for (const Activations::Layer& L : a.layers) {
    add("layer.x_in", L.x_in), add("layer.rstd_attn", L.rstd_attn), add("layer.xn_attn", L.xn_attn);
    add("layer.q", L.q), add("layer.k", L.k), add("layer.v", L.v), add("layer.latent", L.latent);
    add("layer.attn_out", L.attn_out), add("layer.lse", L.lse), add("layer.x_mid", L.x_mid);
    add("layer.rstd_ffn", L.rstd_ffn), add("layer.xn_ffn", L.xn_ffn), add("layer.gate", L.gate);
    add("layer.up", L.up), add("layer.h", L.h);
  }
  add("final.x_final", a.x_final), add("final.rstd_final", a.rstd_final), add("final.xn_final", a.xn_final);
  add("final.logits", a.logits), add("final.losses", a.losses), add("final.logsumexp", a.logsumexp);
  return bytes;
}

Activations run_forward_train(const ModelConfig& c, int tp, int64_t B, int64_t T) {
  ShapeOnlyCommunicator comm(tp);
  const TpLayout l = tp_layout(c, 0, tp);
  ModelWeights w = weights_zeros_like(c, l);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  for_each_weight(c, l, w, [&](const std::string&, const Shape&, Tensor& t) {
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = normal(rng);
  });
  Transformer model(c, std::move(w), cpu_backend(), tp > 1 ? &comm : nullptr);
  std::vector<int32_t> tokens, targets;
  for (int64_t i = 0; i < B * T; ++i) {
    tokens.push_back(int32_t((i * 7) % c.vocab_size));
    targets.push_back(int32_t((i * 11 + 3) % c.vocab_size));
  }
  Activations a;
  model.forward_train(tokens, targets, B, a);
  return a;
}

// The planner's list (index vectors aside) against the real struct: same fields, same per-rank
// shapes, same total; the index vectors are the three int32 vectors of B*T entries.
void expect_planner_matches_real(const ModelConfig& c, int tp, int64_t B, int64_t T) {
  SCOPED_TRACE(c.architecture + " tp " + std::to_string(tp));
  Activations a = run_forward_train(c, tp, B, T);
  std::map<std::string, Shape> shapes;
  std::map<std::string, int64_t> real = real_activation_bytes(a, shapes);
  std::vector<TensorBytes> planned = activation_tensors(c, tp_layout(c, 0, tp), B, T, DType::f32, false);
  int64_t real_sum = 0, planned_tensors = 0, planned_index = 0;
  for (const auto& [name, b] : real) real_sum += b;
  std::set<std::string> planned_names;
  for (const TensorBytes& t : planned) {
    if (t.name.rfind("index.", 0) == 0) {
      planned_index += t.bytes();
      continue;
    }
    planned_names.insert(t.name);
    planned_tensors += t.bytes();
    ASSERT_TRUE(real.count(t.name)) << t.name << " is planned but forward_train does not keep it";
    EXPECT_EQ(t.bytes(), real.at(t.name)) << t.name;
    EXPECT_EQ(t.shape, shapes.at(t.name)) << t.name;
  }
  for (const auto& [name, b] : real) EXPECT_TRUE(planned_names.count(name) || b == 0) << name << " is not planned";
  EXPECT_EQ(planned_tensors, real_sum);
  EXPECT_EQ(planned_index, int64_t(4 * (a.tokens.size() + a.targets.size() + a.positions.size())));
}

// By hand, B 2, T 6 (BT 12), f32, TP 1. Elements per layer:
//   x_in 12*16 192, rstd_attn 12, xn_attn 192, q 12*4*8 384, k 12*2*8 192, v 192, attn_out 384,
//   lse 2*4*6 48, x_mid 192, rstd_ffn 12, xn_ffn 192, gate/up/h 3 * 12*24 864     = 2,856
//   2 layers: 5,712 elements = 22,848 B
// final: x_final 192, rstd_final 12, xn_final 192, logits 12*30 360, losses 12     = 768 = 3,072 B
// index: tokens, targets, positions 3 * 12 int32                                     = 144 B
// total 22,848 + 3,072 + 144 = 26,064 B.
TEST(PlannerActivations, TinyLlamaByHandTp1) {
  const ModelConfig c = tiny("llama");
  std::vector<TensorBytes> a = activation_tensors(c, tp_layout(c, 0, 1), 2, 6, DType::f32, false);
  EXPECT_EQ(total_bytes(a), 26'064);
  expect_planner_matches_real(c, 1, 2, 6);
}

// TP 2 rank: 2 query heads, 1 KV head, F 12, vocab 15. Per layer:
//   x_in 192, rstd 12, xn 192, q 12*2*8 192, k 96, v 96, attn_out 192, lse 2*2*6 24, x_mid 192,
//   rstd 12, xn 192, gate/up/h 3 * 12*12 432                                          = 1,824
//   2 layers: 3,648 elements = 14,592 B
// final: 192 + 12 + 192 + logits 12*15 180 + losses 12 + logsumexp 12 (vocab-parallel CE) = 600 = 2,400 B
// total 14,592 + 2,400 + 144 = 17,136 B.
TEST(PlannerActivations, TinyLlamaByHandTp2) {
  const ModelConfig c = tiny("llama");
  std::vector<TensorBytes> a = activation_tensors(c, tp_layout(c, 0, 2), 2, 6, DType::f32, false);
  EXPECT_EQ(total_bytes(a), 17'136);
  expect_planner_matches_real(c, 2, 2, 6);
}

// MLA (r 1, d_kv 5: latent L = 10, replicated): TP 1 adds latent 12*10 = 120 per layer
//   (2,856 + 120) * 2 * 4 = 23,808;  + 3,072 + 144 = 27,024 B.
// TP 2: (1,824 + 120) * 2 * 4 = 15,552;  + 2,400 + 144 = 18,096 B.
TEST(PlannerActivations, TinyMlaByHandTp1AndTp2) {
  const ModelConfig c = tiny("mla");
  EXPECT_EQ(total_bytes(activation_tensors(c, tp_layout(c, 0, 1), 2, 6, DType::f32, false)), 27'024);
  EXPECT_EQ(total_bytes(activation_tensors(c, tp_layout(c, 0, 2), 2, 6, DType::f32, false)), 18'096);
  expect_planner_matches_real(c, 1, 2, 6);
  expect_planner_matches_real(c, 2, 2, 6);
}

// Recomputation, TP 1 llama: x_in of both layers 2*192, one layer's other tensors 2,856 - 192,
// final 768: (384 + 2,664 + 768) * 4 = 15,264;  + 144 = 15,408 B.
TEST(PlannerActivations, RecomputeKeepsLayerInputsAndOneLayer) {
  const ModelConfig c = tiny("llama");
  EXPECT_EQ(total_bytes(activation_tensors(c, tp_layout(c, 0, 1), 2, 6, DType::f32, true)), 15'408);
}

// bf16: the row statistics (rstd_attn 12, lse 48, rstd_ffn 12 per layer; rstd_final 12, losses
// 12) stay f32, the rest is 2 B.
//   per layer: 72 * 4 + (2,856 - 72) * 2 = 288 + 5,568 = 5,856;  2 layers 11,712
//   final: 24 * 4 + 744 * 2 = 96 + 1,488 = 1,584;  index 144;  total 13,440 B.
TEST(PlannerActivations, Bf16KeepsStatisticsInF32) {
  const ModelConfig c = tiny("llama");
  EXPECT_EQ(total_bytes(activation_tensors(c, tp_layout(c, 0, 1), 2, 6, DType::bf16, false)), 13'440);
}

// Backward workspace, TP 1 llama f32 (elements): dlogits 12*30 360, dxn 192, dx 192,
// dh/dgate/dup 3*288 864, dxn_l 192, datt 12*4*8 384 = 2,184; attention backward dq 384,
// dk 192, dv 192, Delta 2*4*6 48 = 816; total 3,000 * 4 = 12,000 B.
// TP 2 (rank: heads 2, KV 1, F 12, V 15): 180 + 192*3 + 3*144 + 192 = 1,380 persistent;
// attention dq 192 + dk 96 + dv 96 + Delta 24 = 408 beats the embedding's masked dx 192:
// 1,788 * 4 = 7,152 B.
// MLA TP 2 adds dk_rope 12*1*2 24, dk_nope 12*1*6 72, dlatent 12*10 120 and the W_dkv gradient
// [10, 16] 160: 1,380 + 408 + 376 = 2,164 * 4 = 8,656 B.
TEST(PlannerActivations, BackwardWorkspaceByHand) {
  const ModelConfig c = tiny("llama"), m = tiny("mla");
  EXPECT_EQ(total_bytes(workspace_tensors(c, tp_layout(c, 0, 1), 2, 6, DType::f32, DType::f32)), 12'000);
  EXPECT_EQ(total_bytes(workspace_tensors(c, tp_layout(c, 0, 2), 2, 6, DType::f32, DType::f32)), 7'152);
  EXPECT_EQ(total_bytes(workspace_tensors(m, tp_layout(m, 0, 2), 2, 6, DType::f32, DType::f32)), 8'656);
}

// A full plan adds exactly the listed terms.
TEST(PlannerActivations, PlanTotalIsTheSumOfItsTerms) {
  PlanRequest r;
  r.config = tiny("mla");
  r.tp = 2, r.dp = 3, r.seq = 6, r.micro_batch = 2, r.zero1 = true;
  Plan p = make_plan(r);
  EXPECT_EQ(p.activations, total_bytes(p.activation_list));
  EXPECT_EQ(p.workspace, total_bytes(p.workspace_list));
  EXPECT_GT(p.optimizer_step, 0);
  EXPECT_EQ(p.total, p.weights + p.gradients + p.optimizer + p.activations + p.workspace + p.optimizer_step);
}

}  // namespace
}  // namespace latte::planner
