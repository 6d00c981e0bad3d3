// The kernel interface: one method per op and direction. Every backend (cpu/, cuda/) implements
// all of it with the same semantics; reference/ holds the float64 oracle the tests compare to.
//
// Conventions shared by all ops:
//  - activations and gradients are f32; weights may be f32 or bf16 (widened, f32 accumulation);
//  - "=" methods overwrite their outputs, "+=" methods (marked) accumulate, so that gradients of
//    shared weights (tied embeddings) and residual streams add up without extra buffers;
//  - unless stated, tensors must be contiguous; public entry points check shapes and dtypes and
//    throw shape_mismatch naming the argument.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "core/tensor/tensor.h"

namespace latte {

// Which elements of a head form a RoPE pair (shared/notes/mha2mla-spec.md section 1.3):
// interleaved: (x[2j], x[2j+1]) as in Meta / llama2.c / GGUF checkpoints;
// rotate_half: (x[j], x[j + head_dim/2]) as in Hugging Face checkpoints.
// Pair j rotates by angle pos * theta^(-2j/head_dim) in both layouts.
enum class RopeLayout { interleaved, rotate_half };
const char* rope_layout_name(RopeLayout l);
RopeLayout rope_layout_from_name(const std::string& name);

struct RopeParams {
  RopeLayout layout = RopeLayout::interleaved;
  float theta = 10000.0f;
  int64_t head_dim = 0;  // width of one head; x is [T, n_heads, head_dim]
  // Partial RoPE (MHA2MLA): pair_freqs[h * head_dim/2 + s] is the frequency index i that slot pair s
  // of head h rotates with (angle pos * theta^(-2i/freq_dim)); -1 leaves the pair as it is.
  // Empty: slot pair s uses frequency s in every head (standard RoPE).
  std::span<const int32_t> pair_freqs;
  int64_t freq_dim = 0;  // the head width the frequencies were defined for; 0: head_dim
};

// A ragged batch over a paged cache: sequence s has n_s = query_start[s+1] - query_start[s] query
// rows (rows query_start[s] .. of q/out), and its keys live in blocks block_table[s*max_blocks + j]
// (key position p is in block block_table[s*max_blocks + p / block_size], row p % block_size).
// context_len[s] keys exist (positions 0..context_len[s]-1) including this step's; query i of
// sequence s sits at position context_len[s] - n_s + i and sees keys 0..that position (causal).
// Only the table entries of blocks holding positions < context_len[s] are read (the rest may be
// padding, e.g. -1); the same block may appear in several sequences (a shared prefix).
struct PagedBatch {
  std::span<const int32_t> query_start;  // [S+1], query_start[0] = 0, non-decreasing
  std::span<const int32_t> context_len;  // [S]
  std::span<const int32_t> block_table;  // [S * max_blocks]
  int64_t max_blocks = 0;
  int64_t block_size = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;

  // ---- memory: every tensor the model, the engine and the trainer allocate, fill or copy goes
  // through these, so the same code runs on any device ----
  // An uninitialised tensor in this backend's memory.
  virtual Tensor empty(const Shape& shape, DType dtype = DType::f32) = 0;
  // t = value in every element; t may be a strided view (f32 only).
  virtual void fill(Tensor& t, float value) = 0;
  // dst = src elementwise: same shape, same dtype, either side may be a strided view (narrow,
  // slice, select). How cache rows are written, heads regrouped, keys assembled from parts.
  virtual void copy(Tensor& dst, const Tensor& src) = 0;
  // Host <-> this device. The CPU backend returns its argument (a view, no copy); a device backend
  // copies. to_host is how a result the caller must read on the host (a loss, sampled logits)
  // leaves the device; to_device is how weights loaded on the host arrive.
  virtual Tensor to_host(const Tensor& t) = 0;
  virtual Tensor to_device(const Tensor& host) = 0;
  // Conveniences built on the above.
  Tensor zeros(const Shape& shape) {
    Tensor t = empty(shape);
    fill(t, 0.0f);
    return t;
  }
  Tensor clone(const Tensor& t) {
    Tensor c = empty(t.shape(), t.dtype());
    copy(c, t);
    return c;
  }
  Tensor contiguous(const Tensor& t) { return t.is_contiguous() ? t : clone(t); }

  // y[M,N] = x[M,K] . w[N,K]^T (nn.Linear layout); with accumulate, y += instead.
  virtual void linear_forward(Tensor& y, const Tensor& x, const Tensor& w, bool accumulate) = 0;
  // dx[M,K] += dy[M,N] . w[N,K] (when dx), dw[N,K] += dy^T . x (when dw; dw is f32).
  virtual void linear_backward(Tensor* dx, Tensor* dw, const Tensor& dy, const Tensor& x,
                               const Tensor& w) = 0;
  // ys[i] = x . ws[i]^T for several weights that read the same x (q/k/v, gate/up), with exactly
  // the results of separate linear_forward calls. One call lets a backend run them as one
  // parallel loop: a decode step (M = 1) is bound by streaming w, and a fork/join per small
  // matrix costs a visible share of that.
  virtual void linear_forward_group(std::span<Tensor* const> ys, const Tensor& x, std::span<const Tensor* const> ws) {
    LATTE_REQUIRE(ys.size() == ws.size(), ErrorCode::invalid_argument, "linear_forward_group: ", ys.size(),
                  " outputs for ", ws.size(), " weights");
    for (size_t i = 0; i < ws.size(); ++i) linear_forward(*ys[i], x, *ws[i], false);
  }

  // out[T,D] = table[tokens[t], :]; ids outside [0, V) throw invalid_argument naming the id.
  virtual void embedding_forward(Tensor& out, std::span<const int32_t> tokens, const Tensor& table) = 0;
  // dtable[V,D] += scatter of dout[T,D] rows.
  virtual void embedding_backward(Tensor& dtable, std::span<const int32_t> tokens, const Tensor& dout) = 0;

  // y[T,D] = x * rstd * w with rstd[T] = 1/sqrt(mean(x^2) + eps); rstd is saved when non-null.
  virtual void rmsnorm_forward(Tensor& y, Tensor* rstd, const Tensor& x, const Tensor& w, float eps) = 0;
  // dx[T,D] += ..., dw[D] += ... from the saved rstd[T].
  virtual void rmsnorm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                                const Tensor& rstd) = 0;

  // x[T, H, head_dim] rotated in place; positions[T] are absolute token positions.
  virtual void rope_forward(Tensor& x, std::span<const int32_t> positions, const RopeParams& p) = 0;
  // The transpose of rope_forward (rotation by -angle), in place on dx[T, H, head_dim].
  virtual void rope_backward(Tensor& dx, std::span<const int32_t> positions, const RopeParams& p) = 0;

  // Causal attention with grouped heads. q[B,T,Hq,Dk], k[B,S,Hkv,Dk], v[B,S,Hkv,Dv] ->
  // out[B,T,Hq,Dv]; query head h reads KV head h / (Hq/Hkv). Query t sits at position S-T+t and
  // sees keys 0..S-T+t (the first S-T keys are a cached prefix). k and v may be strided in dim 0
  // (views of a larger KV cache); their inner [S,H,D] must be contiguous. lse[B,Hq,T] receives
  // the log-sum-exp of the scaled scores when non-null (saved for backward).
  virtual void attention_forward(Tensor& out, Tensor* lse, const Tensor& q, const Tensor& k, const Tensor& v,
                                 float scale) = 0;
  // dq, dk, dv (same shapes as q, k, v) are overwritten.
  virtual void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q,
                                  const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                                  float scale) = 0;

  // MLA attention in absorbed form (MHA2MLA spec section 4.1): q_rope[B,T,Hq,R] (after RoPE),
  // q_lat[B,T,Hq,L] (the no-RoPE query folded through W_uk), k_rope[B,S,Hkv,R] and latent[B,S,L]
  // (views of the caches, strided in dim 0, inner dims contiguous) -> out[B,T,Hq,L], the
  // attention-weighted sum of latents, with scores scale * (q_rope . k_rope[s, h/(Hq/Hkv)] +
  // q_lat . latent[s]) and the causal rule of attention_forward (query t sees keys 0..S-T+t).
  virtual void mla_absorbed_attention(Tensor& out, const Tensor& q_rope, const Tensor& q_lat, const Tensor& k_rope,
                                      const Tensor& latent, float scale) = 0;

  // ---- paged KV cache (the serving engine's cache: fixed-size blocks handed out per sequence) ----
  // A cache is [num_blocks, block_size, W...] (W: [Hkv, D] for keys/values, [L] for latents), slot
  // = block * block_size + offset. Caches are contiguous; every index is checked (invalid_argument
  // naming the sequence and the value) and so are shapes and dtypes (shape_mismatch).
  //
  // cache[slots[n]] = rows[n] for rows [N, W...] f32. The cache is f32, bf16 (round to nearest
  // even) or i8, which needs scales [num_blocks, block_size] f32 (and only i8 takes them): each
  // row is quantized symmetrically, scale = max|x| / 127 (0 for a zero row), q = round(x / scale)
  // clamped to [-127, 127], so |x - q * scale| <= scale / 2. A slot outside [0, num_blocks *
  // block_size) or written twice in one call throws invalid_argument naming it.
  virtual void paged_cache_write(Tensor& cache, Tensor* scales, const Tensor& rows,
                                 std::span<const int32_t> slots) = 0;
  // attention_forward over a paged cache: q[N, Hq, Dk], k_cache [num_blocks, block_size, Hkv, Dk],
  // v_cache [num_blocks, block_size, Hkv, Dv] (each f32 or bf16) -> out[N, Hq, Dv] ("="); query
  // head h reads KV head h / (Hq/Hkv), the causal rule is the PagedBatch's.
  virtual void paged_attention(Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                               const PagedBatch& b, float scale) = 0;
  // mla_absorbed_attention over a paged cache: q_rope[N, Hq, R], q_lat[N, Hq, L], k_rope_cache
  // [num_blocks, block_size, Hkv, R], latent_cache [num_blocks, block_size, L] -> out[N, Hq, L]
  // ("="), the attention-weighted sum of the (dequantized) latents. Each cache is f32, bf16, or
  // i8 with its scales [num_blocks, block_size] (as paged_cache_write wrote them; only i8 takes
  // scales).
  virtual void paged_mla_attention(Tensor& out, const Tensor& q_rope, const Tensor& q_lat,
                                   const Tensor& k_rope_cache, const Tensor* k_rope_scales,
                                   const Tensor& latent_cache, const Tensor* latent_scales, const PagedBatch& b,
                                   float scale) = 0;

  // Vocabulary-parallel embedding: this rank's table holds rows [vocab_begin, vocab_begin + V) of
  // the whole vocabulary. out[t] = table[tokens[t] - vocab_begin] when the id falls in the slice,
  // else a zero row (the rank that owns it supplies it through the all-reduce that follows).
  // Negative ids throw invalid_argument naming the id and position; ids past the slice are not
  // errors here (the caller checks them against the whole vocabulary).
  virtual void embedding_slice_forward(Tensor& out, std::span<const int32_t> tokens, const Tensor& table,
                                       int64_t vocab_begin) = 0;
  // dtable[V,D] += dout[t] for the tokens that fall in the slice; others contribute nothing.
  virtual void embedding_slice_backward(Tensor& dtable, std::span<const int32_t> tokens, const Tensor& dout,
                                        int64_t vocab_begin) = 0;

  // h[T,F] = silu(gate) * up.
  virtual void swiglu_forward(Tensor& h, const Tensor& gate, const Tensor& up) = 0;
  // dgate, dup [T,F] are overwritten.
  virtual void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dh, const Tensor& gate,
                               const Tensor& up) = 0;

  // losses[T] = logsumexp(logits[t,:]) - logits[t, targets[t]]; a negative target means "ignore"
  // (loss 0). A target >= V throws invalid_argument.
  virtual void cross_entropy_forward(Tensor& losses, const Tensor& logits, std::span<const int32_t> targets) = 0;
  // dlogits[T,V] = scale * (softmax(logits[t]) - onehot(targets[t])); zero rows for ignored targets.
  virtual void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, std::span<const int32_t> targets,
                                      float scale) = 0;

  // Cross-entropy over logits split by vocabulary (a rank holds columns [vocab_begin, vocab_begin
  // + V) of the whole vocabulary), in the steps between which the caller all-reduces over the
  // ranks; no rank ever holds the full logits:
  //   1. row_max[N] = max_v logits[n, v]                                        (then all-reduce max)
  //   2. sum_exp[N] = sum_v exp(logits[n, v] - row_max[n]), summed in double;
  //      target_logit[N] = logits[n, targets[n] - vocab_begin] when the target falls in the slice,
  //      else 0                                                  (then all-reduce sum of both)
  //   3. lse[N] = row_max + log(sum_exp); losses[N] = lse - target_logit, 0 where targets[n] < 0
  //   backward: dlogits[N,V] = scale * (exp(logits - lse) - onehot(targets - vocab_begin)), zero
  //      rows for targets < 0.
  virtual void cross_entropy_slice_max(Tensor& row_max, const Tensor& logits) = 0;
  virtual void cross_entropy_slice_sums(Tensor& sum_exp, Tensor& target_logit, const Tensor& logits,
                                        const Tensor& row_max, std::span<const int32_t> targets,
                                        int64_t vocab_begin) = 0;
  virtual void cross_entropy_slice_losses(Tensor& losses, Tensor& lse, const Tensor& row_max, const Tensor& sum_exp,
                                          const Tensor& target_logit, std::span<const int32_t> targets) = 0;
  virtual void cross_entropy_slice_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse,
                                            std::span<const int32_t> targets, int64_t vocab_begin, float scale) = 0;

  // y += x (same shape).
  virtual void add_inplace(Tensor& y, const Tensor& x) = 0;
};

}  // namespace latte
