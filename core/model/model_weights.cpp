#include "core/model/model_weights.h"

#include "core/backend/registry.h"
#include "core/model/model_tensors.h"

namespace latte {

namespace {

ModelWeights skeleton(const ModelConfig& c) {
  ModelWeights w;
  w.layers.resize(size_t(c.n_layers));
  return w;
}

}  // namespace

void for_each_weight(const ModelConfig& c, const TpLayout& tp, ModelWeights& w,
                     const std::function<void(const std::string&, const Shape&, Tensor&)>& f) {
  if (int64_t(w.layers.size()) != c.n_layers) w.layers.resize(size_t(c.n_layers));
  for (const ModelTensor& t : model_tensors(c)) f(t.name, t.local_shape(tp), t.in(w));
}

void for_each_weight(const ModelConfig& c, ModelWeights& w,
                     const std::function<void(const std::string&, const Shape&, Tensor&)>& f) {
  for_each_weight(c, tp_layout(c, 0, 1), w, f);
}

ModelWeights weights_from_store(const ModelConfig& c, const TensorStore& store) {
  return weights_from_store(c, store, tp_layout(c, 0, 1));
}

ModelWeights weights_from_store(const ModelConfig& c, const TensorStore& store, const TpLayout& tp) {
  c.validate(store.origin);
  ModelWeights w = skeleton(c);
  for_each_weight(c, tp, w, [&](const std::string& name, const Shape& shape, Tensor& t) {
    t = store.get(name, shape);
    LATTE_REQUIRE(t.is_contiguous(), ErrorCode::bad_file, "tensor ", name, " in ", store.file_of(name),
                  " is not contiguous");
    // Kernels read f32 or bf16 weights; f16 widens to f32 exactly (bf16 would drop 3 mantissa bits).
    // The store is host memory (a file map); a device backend takes the weights in Transformer.
    if (t.dtype() == DType::f16) t = t.to(DType::f32);
  });
  if (c.tied_embeddings) w.lm_head = w.tok_embeddings;
  return w;
}

TensorStore weights_to_store(const ModelConfig& c, const ModelWeights& w, const TpLayout& tp) {
  TensorStore store;
  ModelWeights copy = w;
  for_each_weight(c, tp, copy, [&](const std::string& name, const Shape&, Tensor& t) { store.put(name, t, "(memory)"); });
  store.origin = "(memory)";
  return store;
}

TensorStore weights_to_store(const ModelConfig& c, const ModelWeights& w) {
  return weights_to_store(c, w, tp_layout(c, 0, 1));
}

ModelWeights weights_zeros_like(const ModelConfig& c, const TpLayout& tp, Backend& be) {
  ModelWeights w = skeleton(c);
  for_each_weight(c, tp, w, [&](const std::string&, const Shape& shape, Tensor& t) { t = be.zeros(shape); });
  if (c.tied_embeddings) w.lm_head = w.tok_embeddings;
  return w;
}

ModelWeights weights_zeros_like(const ModelConfig& c, const TpLayout& tp) {
  return weights_zeros_like(c, tp, cpu_backend());
}

ModelWeights weights_zeros_like(const ModelConfig& c) { return weights_zeros_like(c, tp_layout(c, 0, 1)); }

ModelWeights weights_to_f32(const ModelConfig& c, const ModelWeights& src) {
  ModelWeights w = src;
  for_each_weight(c, w, [&](const std::string&, const Shape&, Tensor& t) { t = t.to(DType::f32); });
  if (c.tied_embeddings) w.lm_head = w.tok_embeddings;
  return w;
}

}  // namespace latte
