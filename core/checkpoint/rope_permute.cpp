// Moves q_proj/k_proj rows between the two RoPE pairings. Permuting rows of W permutes the
// features of q = W x, and the same permutation of q and k leaves every q.k unchanged, so a model
// computes the same attention with (interleaved rows, interleaved RoPE) and (permuted rows,
// rotate_half RoPE).
#include <cstring>

#include "core/checkpoint/checkpoint.h"

namespace latte {

Tensor permute_rope_rows(const Tensor& w, int64_t head_dim, RopeLayout from, RopeLayout to) {
  LATTE_REQUIRE(w.ndim() == 2, ErrorCode::shape_mismatch, "permute_rope_rows: expected a 2-D weight, got shape ",
                shape_str(w.shape()));
  LATTE_REQUIRE(head_dim > 0 && head_dim % 2 == 0 && w.dim(0) % head_dim == 0, ErrorCode::shape_mismatch,
                "permute_rope_rows: ", w.dim(0), " rows are not whole heads of even size ", head_dim);
  LATTE_REQUIRE(w.device().kind == DeviceKind::cpu, ErrorCode::unsupported, "permute_rope_rows: host tensors only");
  const Tensor src = w.is_contiguous() ? w : w.clone();
  Tensor out = Tensor::empty(w.shape(), w.dtype());
  const size_t row_bytes = dtype_bytes(w.dtype(), w.dim(1));  // whole rows: block dtypes (GGUF) too
  const auto* in = static_cast<const char*>(src.raw());
  auto* o = static_cast<char*>(out.raw());
  if (from == to) {
    std::memcpy(o, in, out.nbytes());
    return out;
  }
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < w.dim(0) / head_dim; ++h) {
    const int64_t base = h * head_dim;
    for (int64_t j = 0; j < half; ++j) {
      // Interleaved row 2j (2j+1) holds the same feature as rotate_half row j (j + half).
      const int64_t inter[2] = {base + 2 * j, base + 2 * j + 1};
      const int64_t halves[2] = {base + j, base + j + half};
      for (int t = 0; t < 2; ++t) {
        const int64_t dst_row = to == RopeLayout::rotate_half ? halves[t] : inter[t];
        const int64_t src_row = to == RopeLayout::rotate_half ? inter[t] : halves[t];
        std::memcpy(o + size_t(dst_row) * row_bytes, in + size_t(src_row) * row_bytes, row_bytes);
      }
    }
  }
  return out;
}

void convert_rope_layout(ModelConfig& config, TensorStore& tensors, RopeLayout to) {
  if (config.rope_layout == to) return;
  for (int64_t i = 0; i < config.n_layers; ++i) {
    for (const char* proj : {"q_proj", "k_proj"}) {
      const std::string name = str_cat("model.layers.", i, ".self_attn.", proj, ".weight");
      const std::string file = tensors.file_of(name);
      tensors.put(name, permute_rope_rows(tensors.get(name), config.head_dim, config.rope_layout, to), file);
    }
  }
  config.rope_layout = to;
}

}  // namespace latte
