// The memory and throughput planner behind `latte plan`: pure arithmetic on a ModelConfig, no
// hardware. For one tensor-parallel rank of a TP x DP job it counts, in bytes per GPU:
//
//   weights      this rank's shard of every tensor of model_tensor_shapes (model_tensors.h
//                tp_layout/tensor_slice, the trainer's own sharding): rows/cols-split tensors
//                count their slice, replicated ones (every RMSNorm weight, MLA's kv_a_proj W_dkv)
//                count fully on every rank; a tied lm_head is the embedding (counted once).
//   gradients    one gradient per local parameter, in the gradient dtype (not sharded: ZeRO-1).
//   optimizer    Adam: f32 m and v (8 B/param) plus an f32 master copy (4 B/param) when the
//                weights are bf16/f16 = 12 B/param; f32 weights are their own master (8 B/param).
//                ZeRO-1 shards it over DP: ceil(local params / DP) per rank, and adds the reduced
//                gradient of that chunk (AdamW's reduce-scatter target, kept between steps) in the
//                gradient dtype: (8 + 4) B per owned parameter in f32.
//   optimizer_step  ZeRO-1 only: what AdamW allocates for the step itself (trainer/optim/adamw.cpp),
//                the larger of the flat copy of every local gradient that reduce_and_clip
//                reduce-scatters (padded local params, gradient dtype) and step()'s all-gather
//                buffer of the updated parameters (padded local params, weight dtype) plus this
//                rank's chunk copied out of it when DP > 1. Transient, but counted on top of the
//                activations: measured (README, "Planning big runs") the CPU trainer's peak is
//                exactly the sum, because the layer activations freed before the step are small
//                allocations that stay in malloc's heap. In f32: 4 + 4/DP B per local parameter.
//   activations  exactly the tensors Transformer::forward_train keeps in Activations
//                (core/model/transformer.h), with this rank's shapes: local query/KV heads, local
//                MLP width, local vocabulary; plus the three int32 index vectors (tokens,
//                targets, positions). With recomputation only every layer's x_in is kept, plus one
//                layer's full set while that layer's backward runs.
//   workspace    the temporaries Transformer::backward holds at its peak (workspace_tensors).
//
// Dtypes: activations and workspace in the compute dtype, except the f32 row statistics (RMSNorm
// rstd, attention lse, losses, logsumexp, attention-backward Delta), which stay f32 in any mixed-
// precision trainer. With f32 compute every figure is the CPU trainer's own allocation.
//
// Not counted: the CUDA context and allocator fragmentation, communication buffers (all-reduces
// run in place), per-thread kernel scratch of O(sequence) floats, and the forward-pass
// temporaries (always smaller than the backward peak they precede), nor the constant ~55 MiB per
// rank the DP all-reduces add under MPI. (OpenMPI 4.1.4's MPI_Reduce_scatter_block held 1-2 more
// copies of the flat gradient on DP rank 0; MpiCommunicator::reduce_scatter now reduces block by
// block instead, so ZeRO-1 runs on MPI are within the plan: README, "Planning big runs".)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/base/dtype.h"
#include "core/model/config.h"
#include "core/model/model_tensors.h"
#include "core/tensor/tensor.h"

namespace latte::planner {

// One tensor (or a group of identical ones) the planner counts.
struct TensorBytes {
  std::string name;      // e.g. "layer.q", "final.logits", "workspace.attn.dq"
  Shape shape;           // this TP rank's shape
  int64_t elem_bytes;    // 4 (f32, int32) or 2 (bf16)
  int64_t copies;        // how many are alive at once (n_layers for per-layer activations)
  int64_t bytes() const { return shape_numel(shape) * elem_bytes * copies; }
};
int64_t total_bytes(const std::vector<TensorBytes>& ts);

// Parameters of this TP rank (tied embedding counted once) and how many of them are in
// replicated tensors (norms, W_dkv), which every rank keeps whole.
int64_t local_parameter_count(const ModelConfig& c, const TpLayout& tp);
int64_t replicated_parameter_count(const ModelConfig& c, const TpLayout& tp);

// Activations kept for backward, per rank: micro-batch B, sequence T. Names "layer.<field>"
// (copies = n_layers, or 1 under recomputation except x_in), "final.<field>", "index.<vector>".
std::vector<TensorBytes> activation_tensors(const ModelConfig& c, const TpLayout& tp, int64_t B, int64_t T,
                                            DType compute, bool recompute);

// Transformer::backward's peak set of temporaries (core/model/transformer.cpp, *_attention.cpp):
//   alive for the whole backward: dlogits [BT, V/tp], dxn [BT, D], dx [BT, D], dh, dgate, dup
//   [BT, F/tp], dxn_l [BT, D], datt [BT, Hq/tp * hd];
//   plus the larger of (a) the attention backward of one layer: dq [BT, Hq/tp*hd], dk, dv
//   [BT, Hkv/tp*hd], the kernel's Delta [B, Hq/tp, T] (f32), and for MLA dk_rope [BT, Hkv/tp*2r],
//   dk_nope [BT, Hkv/tp*d_c], dlatent [BT, L] and, when TP > 1, the W_dkv gradient buffer [L, D]
//   in the gradient dtype; (b) the embedding backward's masked copy of dx [BT, D] (TP > 1 only).
std::vector<TensorBytes> workspace_tensors(const ModelConfig& c, const TpLayout& tp, int64_t B, int64_t T,
                                           DType compute, DType grad);

// KV-cache bytes per token on one TP rank over all layers (KvCache::create's shapes):
// llama 2 * n_layers * (Hkv/tp) * hd; MLA n_layers * ((Hkv/tp) * 2r + L) with the latent
// L = n_kv * d_kv replicated on every rank. A KV head shared by several ranks counts on each.
int64_t kv_cache_bytes_per_token(const ModelConfig& c, const TpLayout& tp, DType dtype);

// Training FLOPs per token (PaLM appendix B / Megatron convention, causal mask not discounted):
//   model    = 6 * N_matmul + 12 * n_layers * n_heads * head_dim * T
//   hardware = model + (with recomputation) one more forward of the layers:
//              2 * (N_matmul - V*D) + 4 * n_layers * n_heads * head_dim * T
// N_matmul: the weights that enter a matrix product, i.e. every projection of every layer plus
// the lm_head V*D (the embedding table itself is a lookup; when tied it is the lm_head), norms
// excluded. 6 = 2 (multiply-add) x 3 (forward, input gradient, weight gradient); 12 = 2 x 2
// attention products (q.k^T, p.v) x 3.
struct Flops {
  int64_t matmul_params = 0;
  double model_per_token = 0, hardware_per_token = 0;
};
Flops flops_per_token(const ModelConfig& c, int64_t T, bool recompute);

struct PlanRequest {
  ModelConfig config;
  int64_t tp = 1, dp = 1;
  int64_t micro_batch = 1, seq = 0;  // per GPU (per DP rank)
  DType weight_dtype = DType::bf16;
  DType compute_dtype = DType::bf16;  // activations, workspace, KV cache
  DType grad_dtype = DType::f32;
  bool zero1 = false, recompute = false;
  int64_t kv_context = 0, kv_batch = 0;  // the inference KV cache; 0: seq, micro_batch
  double peak_tflops = 989.0;            // per GPU (H100 SXM dense bf16)
  double mfu = 0.4;
};

struct Plan {
  PlanRequest req;
  TpLayout layout;  // rank 0's (every rank has the same sizes)
  int64_t params_total = 0, params_local = 0, params_replicated = 0;
  int64_t weights = 0, gradients = 0, optimizer = 0, activations = 0, workspace = 0;
  int64_t optimizer_step = 0;  // ZeRO-1's step buffers (0 without ZeRO-1)
  int64_t total = 0;  // training, per GPU: the six terms above
  std::vector<TensorBytes> activation_list, workspace_list;
  int64_t kv_bytes_per_token = 0, kv_cache = 0;  // inference, per GPU (kv_context x kv_batch)
  Flops flops;
  double tokens_per_s = 0;          // whole job: gpus * peak * mfu / model FLOPs per token
  double step_seconds = 0;          // one micro-batch on every DP rank: dp * B * T tokens
};

// Throws invalid_argument (one line) for a TP that does not divide the model, sizes <= 0, a
// sequence longer than the model's context, or TP > n_kv_heads (the trainer cannot train it).
Plan make_plan(const PlanRequest& r);

// Model shapes by name: llama2-7b, llama2-13b, llama2-70b, smollm-135m.
std::vector<std::string> preset_names();
ModelConfig preset(const std::string& name);
// The MHA2MLA-converted shape of a llama config: d_kv latent rank per KV head, r RoPE pairs per
// KV head, rope_freqs[l][j] = 0..r-1 (any choice of r pairs has the same sizes).
ModelConfig mla_variant(const ModelConfig& llama, int64_t d_kv, int64_t r);

// "80GiB", "80GB", "81920MiB", "1.5TiB" -> bytes. Units B, KB/MB/GB/TB (10^3k), KiB/MiB/GiB/TiB
// (2^10k), case-insensitive; a unit is required.
int64_t parse_size(const std::string& text);

// --max-memory (latte train, latte plan): a bare number is GiB ("24", "3.5"); with a unit it is
// parse_size ("512MiB", "4GiB", "80GB"). Must be positive.
int64_t parse_max_memory(const std::string& text);

// The request of one `latte train` run, with the dtypes the trainer allocates: its master weights,
// activations, workspace and gradients are all f32 (weights_to_f32, on the CPU and CUDA backends
// alike), so Adam is 8 B/param. The same request as `latte plan --dtype f32 --grad-dtype f32`, the
// one compared with measured peak RSS (README, "Planning big runs").
PlanRequest train_request(const ModelConfig& c, int64_t tp, int64_t dp, int64_t micro_batch, int64_t seq,
                          bool zero1, bool recompute);

// Empty when p.total <= limit bytes; otherwise one line naming the planned bytes per rank (and the
// terms: five, and ZeRO-1's step buffers when on), the limit, the layout (TP, DP, ZeRO-1,
// recomputation, micro-batch, seq) and the flags that would shrink it (those not already used;
// --zero1 only where its plan is smaller: with its step buffers ZeRO-1 costs more than it saves
// at DP 2 and breaks even at DP 4 in f32). latte train fails with it before loading; latte
// plan marks the layout with it.
std::string memory_limit_problem(const Plan& p, int64_t limit);

// "3.52 MiB", "2.50 GiB", "812 B": bytes in the largest binary unit that keeps the number >= 1.
std::string human_bytes(int64_t bytes);

// The TP sizes to plan for `gpus` GPUs: every divisor of gpus, with an empty reason when the
// model can be trained at that TP and otherwise why not.
struct TpOption {
  int64_t tp;
  std::string skipped;  // empty: usable
};
std::vector<TpOption> tp_options(const ModelConfig& c, int64_t gpus);

// Output of `latte plan`.
struct PlanReport {
  std::string model_name;
  int64_t gpus = 0, gpu_mem = 0;
  int64_t max_memory = 0;  // --max-memory: plans over it are refused (0: no limit)
  std::vector<Plan> plans;
  std::vector<TpOption> skipped;
};
std::string format_table(const PlanReport& r);
std::string format_json(const PlanReport& r);

}  // namespace latte::planner
