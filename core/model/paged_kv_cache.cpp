#include "core/model/paged_kv_cache.h"

#include <algorithm>
#include <climits>

namespace latte {

namespace {

void check_dtype(const ModelConfig& c, DType dtype) {
  LATTE_REQUIRE(dtype == DType::f32 || dtype == DType::bf16 || dtype == DType::i8, ErrorCode::invalid_argument,
                "paged KV cache: dtype ", dtype_name(dtype), " is not one of f32, bf16, i8");
  LATTE_REQUIRE(dtype != DType::i8 || c.is_mla(), ErrorCode::invalid_argument,
                "paged KV cache: an i8 cache quantizes the MLA latent and RoPE keys; this is a ", c.architecture,
                " model (use f32 or bf16)");
}

// Elements per token per layer of each cached tensor, and the dtype each is stored in.
struct TokenLayout {
  int64_t kv = 0;      // llama: k and v each
  int64_t latent = 0;  // MLA
  int64_t rope = 0;    // MLA RoPE keys
};

TokenLayout token_layout(const ModelConfig& c, DType dtype, const TpLayout& tp) {
  TokenLayout t;
  if (c.is_mla()) {
    t.latent = c.kv_lora_rank();
    t.rope = c.rope_key_heads(tp.kv_heads) * c.rope_dim();
  } else {
    t.kv = tp.kv_heads * c.head_dim;
  }
  return t;
}

}  // namespace

int64_t PagedKvCache::bytes_per_block(const ModelConfig& c, int64_t block_size, DType dtype, const TpLayout& tp) {
  check_dtype(c, dtype);
  const TokenLayout t = token_layout(c, dtype, tp);
  int64_t per_token = (2 * t.kv + t.latent + t.rope) * int64_t(dtype_size(dtype));
  if (dtype == DType::i8) per_token += 2 * int64_t(sizeof(float));  // the latent's and the RoPE keys' scales
  return per_token * block_size * c.n_layers;
}

PagedKvCache PagedKvCache::create(const ModelConfig& c, int64_t num_blocks, int64_t block_size, DType dtype,
                                  const TpLayout& tp, Backend& be) {
  check_dtype(c, dtype);
  LATTE_REQUIRE(num_blocks > 0 && block_size > 0, ErrorCode::invalid_argument,
                "paged KV cache needs at least one block of at least one token (got ", num_blocks, " blocks of ",
                block_size, ")");
  LATTE_REQUIRE(num_blocks <= INT32_MAX / block_size, ErrorCode::invalid_argument, "paged KV cache: ", num_blocks,
                " blocks of ", block_size, " tokens have more slots than an int32 slot index addresses");
  PagedKvCache cache;
  cache.num_blocks = num_blocks;
  cache.block_size = block_size;
  cache.dtype = dtype;
  const TokenLayout t = token_layout(c, dtype, tp);
  // Zeroed, so a slot read before it is written (never, by the scheduler's contract) is finite.
  // Backend::fill is f32-only; the other dtypes are zeroed by writing zero rows, a chunk at a time.
  auto zeros = [&](const Shape& s, DType dt) {
    if (dt == DType::f32) return be.zeros(s);
    Tensor out = be.empty(s, dt);
    Tensor scales = dt == DType::i8 ? be.empty({s[0], s[1]}) : Tensor();
    Shape row_shape(s.begin() + 1, s.end());
    const int64_t slots = s[0] * s[1], chunk = std::min<int64_t>(slots, 4096);
    row_shape[0] = chunk;
    const Tensor zero_rows = be.zeros(row_shape);
    std::vector<int32_t> ids(static_cast<size_t>(chunk));
    for (int64_t first = 0; first < slots; first += chunk) {
      const int64_t n = std::min(chunk, slots - first);
      for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = int32_t(first + i);
      be.paged_cache_write(out, dt == DType::i8 ? &scales : nullptr, zero_rows.slice(0, n),
                           std::span<const int32_t>(ids.data(), size_t(n)));
    }
    return out;
  };
  for (int64_t l = 0; l < c.n_layers; ++l) {
    if (c.is_mla()) {
      cache.latent.push_back(zeros({num_blocks, block_size, t.latent}, dtype));
      cache.k_rope.push_back(zeros({num_blocks, block_size, c.rope_key_heads(tp.kv_heads), c.rope_dim()}, dtype));
      if (dtype == DType::i8) {
        cache.latent_scale.push_back(be.zeros({num_blocks, block_size}));
        cache.k_rope_scale.push_back(be.zeros({num_blocks, block_size}));
      }
    } else {
      cache.k.push_back(zeros({num_blocks, block_size, tp.kv_heads, c.head_dim}, dtype));
      cache.v.push_back(zeros({num_blocks, block_size, tp.kv_heads, c.head_dim}, dtype));
    }
  }
  return cache;
}

int64_t PagedKvCache::bytes() const {
  int64_t n = 0;
  for (const auto* list : {&k, &v, &latent, &k_rope, &latent_scale, &k_rope_scale})
    for (const Tensor& t : *list) n += int64_t(t.nbytes());
  return n;
}

}  // namespace latte
