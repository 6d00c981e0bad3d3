#include "core/model/kv_cache.h"

#include "core/backend/registry.h"

namespace latte {

KvCache KvCache::create(const ModelConfig& c, int64_t batch, int64_t max_seq) {
  return create(c, batch, max_seq, tp_layout(c, 0, 1));
}

KvCache KvCache::create(const ModelConfig& c, int64_t batch, int64_t max_seq, const TpLayout& tp) {
  return create(c, batch, max_seq, tp, cpu_backend());
}

KvCache KvCache::create(const ModelConfig& c, int64_t batch, int64_t max_seq, const TpLayout& tp, Backend& be) {
  LATTE_REQUIRE(batch > 0 && max_seq > 0, ErrorCode::invalid_argument, "KV cache needs batch > 0 and max_seq > 0");
  KvCache cache;
  cache.batch = batch;
  cache.max_seq = max_seq;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    if (c.is_mla()) {
      cache.latent.push_back(be.zeros({batch, max_seq, c.kv_lora_rank()}));
      cache.k_rope.push_back(be.zeros({batch, max_seq, c.rope_key_heads(tp.kv_heads), c.rope_dim()}));
    } else {
      cache.k.push_back(be.zeros({batch, max_seq, tp.kv_heads, c.head_dim}));
      cache.v.push_back(be.zeros({batch, max_seq, tp.kv_heads, c.head_dim}));
    }
  }
  return cache;
}

int64_t KvCache::bytes() const {
  int64_t n = 0;
  for (const auto* list : {&k, &v, &latent, &k_rope})
    for (const Tensor& t : *list) n += int64_t(t.nbytes());
  return n;
}

void KvCache::write(Backend& be, Tensor& cache, const Tensor& rows, int64_t B, int64_t T, int64_t pos) {
  Shape per_batch = cache.shape();  // [B, max_seq, inner...] -> rows as [B, T, inner...]
  per_batch[1] = T;
  Tensor dst = cache.narrow(1, pos, pos + T);
  LATTE_REQUIRE(per_batch[0] == B, ErrorCode::internal, "KvCache::write: cache has ", per_batch[0], " rows, batch ", B);
  be.copy(dst, rows.reshape(per_batch));
}

}  // namespace latte
