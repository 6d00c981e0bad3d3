// Planner: parameters, weights, gradients and Adam state per GPU, against figures computed by hand
// from the published Llama-2 / SmolLM shapes (arithmetic in the comments).
#include <gtest/gtest.h>

#include "trainer/planner/planner.h"

namespace latte::planner {
namespace {

Plan plan(const ModelConfig& c, int64_t tp, int64_t dp, bool zero1, DType weights = DType::bf16) {
  PlanRequest r;
  r.config = c;
  r.tp = tp;
  r.dp = dp;
  r.seq = 1024;
  r.micro_batch = 1;
  r.weight_dtype = r.compute_dtype = weights;
  r.zero1 = zero1;
  return make_plan(r);
}

// Llama-2-7B: D 4096, 32 layers, 32 heads (head_dim 128), 32 KV heads, FFN 11008, vocab 32000,
// untied.
//   embed_tokens = lm_head = 32000 * 4096                       =   131,072,000 each
//   per layer: 2 norms 2*4096                                    =         8,192
//              q, k, v, o 4 * 4096*4096                          =    67,108,864
//              gate, up, down 3 * 4096*11008                     =   135,266,304
//                                                                =   202,383,360
//   32 layers                                                    = 6,476,267,520
//   + final norm 4,096 + embed and lm_head 262,144,000           = 6,738,415,616
TEST(PlannerModelState, Llama2_7bParameterCount) {
  const ModelConfig c = preset("llama2-7b");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.parameter_count(), 6'738'415'616);
  EXPECT_EQ(local_parameter_count(c, tp_layout(c, 0, 1)), 6'738'415'616);
}

// bf16 weights, TP 1: 2 B * 6,738,415,616 = 13,476,831,232 B = 13.48 GB.
// TP 2 and 4: every tensor splits by rows or columns except the replicated RMSNorm weights every
// rank keeps whole: input_layernorm and post_attention_layernorm of each of the 32 layers plus
// model.norm, 65 vectors of 4096 = 266,240 parameters.
//   split part = 6,738,415,616 - 266,240 = 6,738,149,376
//   TP 2: 6,738,149,376 / 2 + 266,240 = 3,369,340,928 params -> 6,738,681,856 B
//   TP 4: 6,738,149,376 / 4 + 266,240 = 1,684,803,584 params -> 3,369,607,168 B
TEST(PlannerModelState, Llama2_7bWeightsPerTpRank) {
  const ModelConfig c = preset("llama2-7b");
  Plan p1 = plan(c, 1, 1, false);
  EXPECT_EQ(p1.weights, 13'476'831'232);
  EXPECT_NEAR(double(p1.weights) / 1e9, 13.48, 0.005);

  for (int64_t tp : {2, 4}) {
    const TpLayout l = tp_layout(c, 0, tp);
    EXPECT_EQ(replicated_parameter_count(c, l), 65 * 4096);
    // Which tensors are replicated: exactly the norms.
    for (const auto& [name, shape] : model_tensor_shapes(c)) {
      const bool norm = name.find("norm") != std::string::npos;
      EXPECT_EQ(tensor_slice(c, l, name, shape).split == TpSplit::replicated, norm) << name;
    }
  }
  Plan p2 = plan(c, 2, 1, false), p4 = plan(c, 4, 1, false);
  EXPECT_EQ(p2.params_local, 3'369'340'928);
  EXPECT_EQ(p2.weights, 6'738'681'856);
  EXPECT_EQ(p4.params_local, 1'684'803'584);
  EXPECT_EQ(p4.weights, 3'369'607'168);
  // Gradients f32 (the default): 4 B per local parameter.
  EXPECT_EQ(p2.gradients, 4 * 3'369'340'928);
}

// Adam at DP 8, TP 1, bf16 weights: f32 master + m + v = 12 B/param.
//   no ZeRO: 12 * 6,738,415,616           = 80,860,987,392 B (75.3 GiB: no 80 GB GPU holds it)
//   ZeRO-1:  12 * (6,738,415,616 / 8 = 842,301,952) = 10,107,623,424 B of Adam state, plus the
//            owned chunk's reduced gradient (AdamW's reduce-scatter target, f32 gradients):
//            4 * 842,301,952 = 3,369,207,808; together 16 * 842,301,952 = 13,476,831,232 B
// f32 weights are their own master copy: 8 B/param (m, v), with ZeRO-1 8 + 4 per owned param.
TEST(PlannerModelState, Llama2_7bAdamStateWithAndWithoutZero1) {
  const ModelConfig c = preset("llama2-7b");
  EXPECT_EQ(plan(c, 1, 8, false).optimizer, 80'860'987'392);
  EXPECT_EQ(plan(c, 1, 8, true).optimizer, 13'476'831'232);
  EXPECT_EQ(plan(c, 1, 8, false, DType::f32).optimizer, 8 * 6'738'415'616);
  EXPECT_EQ(plan(c, 1, 8, true, DType::f32).optimizer, int64_t(12) * 842'301'952);
  // TP 2 x DP 4, ZeRO-1: 16 * 3,369,340,928 / 4 = 16 * 842,335,232 = 13,477,363,712.
  EXPECT_EQ(plan(c, 2, 4, true).optimizer, 13'477'363'712);
  // Uneven shards round up: 7 DP ranks, 6,738,415,616 / 7 = 962,630,802.3 -> 962,630,803.
  EXPECT_EQ(plan(c, 1, 7, true).optimizer, int64_t(16) * 962'630'803);
}

// ZeRO-1's optimizer-step buffers (trainer/optim/adamw.cpp), TP 1 x DP 8, 6,738,415,616 params,
// padded to 8 * 842,301,952 (no padding needed):
//   reduce_and_clip's flat gradient, f32:             4 * 6,738,415,616 = 26,953,662,464
//   step()'s all-gather buffer + own chunk, bf16:     2 * 6,738,415,616 + 2 * 842,301,952
//                                                     = 13,476,831,232 + 1,684,603,904 = 15,161,435,136
//   -> the larger, 26,953,662,464 B (25.1 GiB).
//   f32 weights: 26,953,662,464 + 4 * 842,301,952 = 30,322,870,272 B.
// Without ZeRO-1 the optimizer updates in place: nothing.
TEST(PlannerModelState, Llama2_7bZero1StepBuffers) {
  const ModelConfig c = preset("llama2-7b");
  EXPECT_EQ(plan(c, 1, 8, false).optimizer_step, 0);
  EXPECT_EQ(plan(c, 1, 8, true).optimizer_step, 26'953'662'464);
  EXPECT_EQ(plan(c, 1, 8, true, DType::f32).optimizer_step, 30'322'870'272);
  // DP 7 pads the flat buffer to 7 * 962,630,803 = 6,738,415,621: f32 flat 26,953,662,484 against
  // bf16 all-gather 2 * 6,738,415,621 + 2 * 962,630,803 = 15,402,092,848.
  EXPECT_EQ(plan(c, 1, 7, true).optimizer_step, 26'953'662'484);
  // DP 1 (one rank, --zero1): the flat gradient or the all-gather buffer, no chunk copied out.
  EXPECT_EQ(plan(c, 1, 1, true, DType::f32).optimizer_step, 4 * 6'738'415'616);
  // The total is the six terms.
  const Plan p = plan(c, 1, 8, true);
  EXPECT_EQ(p.total, p.weights + p.gradients + p.optimizer + p.activations + p.workspace + p.optimizer_step);
}

// In f32 (the CPU trainer) ZeRO-1 holds 12/DP B of Adam + reduced gradient and 4 + 4/DP B of step
// buffers per parameter against Adam's 8 without it: 16/DP + 4, i.e. more at DP 2 (12), as much at
// DP 4 (8), less from DP 8 (6). Measured on SmolLM2-135M's shape (README, "Planning big runs").
TEST(PlannerModelState, Zero1InF32PaysOffFromDp8) {
  const ModelConfig c = preset("llama2-7b");
  auto state = [&](int64_t dp, bool zero1) {
    const Plan p = plan(c, 8, dp, zero1, DType::f32);
    return p.optimizer + p.optimizer_step;
  };
  const int64_t n = plan(c, 8, 1, false, DType::f32).params_local;
  EXPECT_EQ(state(2, false), 8 * n);
  EXPECT_GT(state(2, true), state(2, false));
  EXPECT_NEAR(double(state(2, true)) / double(n), 12.0, 1e-6);
  EXPECT_NEAR(double(state(4, true)) / double(n), 8.0, 1e-6);
  EXPECT_NEAR(double(state(8, true)) / double(n), 6.0, 1e-6);
}

// Llama-2-13B: D 5120, 40 layers, 40 heads, 40 KV heads, FFN 13824, vocab 32000, untied.
//   per layer: 2*5120 + 4*5120^2 + 3*5120*13824 = 10,240 + 104,857,600 + 212,336,640 = 317,204,480
//   total: 40 * 317,204,480 + 5,120 + 2 * 163,840,000         = 13,015,864,320
//   replicated: (2*40 + 1) * 5120 = 414,720;  split: 13,015,449,600
//   TP 2: 6,507,724,800 + 414,720 = 6,508,139,520 -> bf16 13,016,279,040 B
//   TP 4: 3,253,862,400 + 414,720 = 3,254,277,120 -> bf16  6,508,554,240 B
//   Adam DP 8, TP 1: 12 * 13,015,864,320 = 156,190,371,840;  ZeRO-1: 12 * 1,626,983,040 = 19,523,796,480
//   of Adam + 4 * 1,626,983,040 of reduced gradient = 16 * 1,626,983,040 = 26,031,728,640
TEST(PlannerModelState, Llama2_13b) {
  const ModelConfig c = preset("llama2-13b");
  EXPECT_EQ(c.parameter_count(), 13'015'864'320);
  EXPECT_EQ(plan(c, 1, 1, false).weights, 26'031'728'640);
  EXPECT_EQ(plan(c, 2, 1, false).weights, 13'016'279'040);
  EXPECT_EQ(plan(c, 4, 1, false).weights, 6'508'554'240);
  EXPECT_EQ(plan(c, 1, 8, false).optimizer, 156'190'371'840);
  EXPECT_EQ(plan(c, 1, 8, true).optimizer, 26'031'728'640);
}

// Llama-2-70B: D 8192, 80 layers, 64 heads, 8 KV heads (GQA, head_dim 128), FFN 28672, vocab 32000.
//   per layer: norms 16,384 + q 8192^2 67,108,864 + k, v 2*8192*1024 16,777,216 + o 67,108,864
//              + MLP 3*8192*28672 704,643,072                        = 855,654,400
//   total: 80 * 855,654,400 + 8,192 + 2 * 262,144,000               = 68,976,648,192
//   TP 8 splits the 8 KV heads one per rank: k_proj/v_proj [128, 8192] on each rank, nothing shared.
//   replicated: 161 * 8192 = 1,318,912;  split: 68,975,329,280 / 8 = 8,621,916,160
//   TP 8 local: 8,623,235,072 params -> bf16 17,246,470,144 B; Adam TP 8 x DP 8 ZeRO-1:
//   12 * 8,623,235,072 / 8 = 12 * 1,077,904,384 = 12,934,852,608 B, with the f32 reduced gradient
//   chunk 16 * 1,077,904,384 = 17,246,470,144 B.
TEST(PlannerModelState, Llama2_70bGqaAtTp8) {
  const ModelConfig c = preset("llama2-70b");
  EXPECT_EQ(c.parameter_count(), 68'976'648'192);
  const TpLayout l = tp_layout(c, 0, 8);
  EXPECT_EQ(l.kv_heads, 1);
  EXPECT_FALSE(l.kv_replicated);
  for (const auto& [name, shape] : model_tensor_shapes(c, l)) {
    if (name == "model.layers.0.self_attn.k_proj.weight") {
      EXPECT_EQ(shape, (Shape{128, 8192}));
    }
    if (name == "model.layers.0.self_attn.q_proj.weight") {
      EXPECT_EQ(shape, (Shape{1024, 8192}));
    }
  }
  EXPECT_EQ(replicated_parameter_count(c, l), 1'318'912);
  Plan p = plan(c, 8, 8, true);
  EXPECT_EQ(p.params_local, 8'623'235'072);
  EXPECT_EQ(p.weights, 17'246'470'144);
  EXPECT_EQ(p.optimizer, 17'246'470'144);
  // KV cache per token per rank, bf16: 80 layers * 2 (k, v) * 1 head * 128 * 2 B = 40,960 B.
  EXPECT_EQ(p.kv_bytes_per_token, 40'960);
  // TP 16 would share KV heads between ranks, which the trainer refuses.
  EXPECT_THROW(plan(c, 16, 1, false), Error);
}

// SmolLM-135M (tied): 49152*576 + 30 * (2*576 + 576*576 + 2*576*192 + 576*576 + 3*576*1536) + 576
//   = 28,311,552 + 30 * 3,540,096 + 576 = 134,515,008 (the paper's 134.52M).
TEST(PlannerModelState, SmolLmTiedEmbeddingCountedOnce) {
  const ModelConfig c = preset("smollm-135m");
  EXPECT_EQ(c.parameter_count(), 134'515'008);
  EXPECT_EQ(local_parameter_count(c, tp_layout(c, 0, 1)), 134'515'008);
  EXPECT_EQ(plan(c, 1, 1, false).weights, 2 * 134'515'008);
  // TP 3 (9 heads, 3 KV heads, 1536 / 3, 49152 / 3): replicated 61 * 576 = 35,136;
  // (134,515,008 - 35,136) / 3 + 35,136 = 44,826,624 + 35,136 = 44,861,760.
  EXPECT_EQ(plan(c, 3, 1, false).params_local, 44'861'760);
}

// MLA: W_dkv (kv_a_proj) is replicated on every rank, the other K/V projections split with their
// KV heads. Llama-2-7B, d_kv 16, r 8: L = 32*16 = 512; W_dkv [512, 4096] = 2,097,152 per layer.
TEST(PlannerModelState, MlaReplicatesKvAProj) {
  const ModelConfig c = mla_variant(preset("llama2-7b"), 16, 8);
  EXPECT_EQ(c.kv_lora_rank(), 512);
  const TpLayout l = tp_layout(c, 0, 4);
  EXPECT_EQ(replicated_parameter_count(c, l), 65 * 4096 + 32 * 512 * 4096);
  // K/V per layer: W_kr 4096*32*16 + W_dkv 4096*512 + W_uk 512*32*112 + W_uv 512*4096
  //   = 2,097,152 + 2,097,152 + 1,835,008 + 2,097,152 = 8,126,464 instead of 2*4096^2 = 33,554,432,
  // 25,427,968 fewer per layer, 813,694,976 over 32: 6,738,415,616 - 813,694,976 = 5,924,720,640.
  // Without one 131,072,000 embedding (the paper's count, 6.61B for the original) that is
  // 5,793,648,640: the 5.79B of paper Table 4 (spec 3.6).
  EXPECT_EQ(c.parameter_count(), 5'924'720'640);
}

}  // namespace
}  // namespace latte::planner
