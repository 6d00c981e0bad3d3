#include "trainer/mha2mla/convert_streamed.h"

#include <chrono>
#include <memory>
#include <cstring>

#include "core/backend/registry.h"
#include "core/checkpoint/safetensors_stream_writer.h"
#include "trainer/mha2mla/convert_layer.h"

namespace latte {

namespace {

// The tensors convert_layer makes, by name suffix: which field holds it, the source tensor whose
// rows it moves (computed factors: none, written f32).
struct NewTensor {
  const char* suffix;
  Tensor ConvertedLayer::*field;
  const char* rows_of;
};
constexpr NewTensor kNewTensors[] = {
    {"self_attn.q_proj.weight", &ConvertedLayer::q, "self_attn.q_proj.weight"},
    {"self_attn.k_rope_proj.weight", &ConvertedLayer::k_rope, "self_attn.k_proj.weight"},
    {"self_attn.kv_a_proj.weight", &ConvertedLayer::kv_a, nullptr},
    {"self_attn.k_b_proj.weight", &ConvertedLayer::k_b, nullptr},
    {"self_attn.v_b_proj.weight", &ConvertedLayer::v_b, nullptr},
};

const NewTensor* new_tensor(const std::string& name) {
  for (const NewTensor& t : kNewTensors)
    if (name.ends_with(t.suffix)) return &t;
  return nullptr;
}

// The source tensors of layer l (every "model.layers.<l>." name).
std::vector<std::string> layer_tensor_names(const TensorStore& store, int64_t l) {
  const std::string prefix = str_cat("model.layers.", l, ".");
  std::vector<std::string> names;
  for (auto it = store.entries().lower_bound(prefix); it != store.entries().end() && it->first.starts_with(prefix); ++it)
    names.push_back(it->first);
  return names;
}

}  // namespace

ModelConfig convert_to_mla_streamed(const Checkpoint& src, const std::string& out_dir, const StreamedConvertOptions& so,
                                    ConversionReport* report) {
  const auto start = std::chrono::steady_clock::now();
  const ConvertOptions& o = so.convert;
  const ModelConfig& c = src.config;
  const TensorStore& store = src.tensors;
  const ResolvedConversion rc = resolve_conversion(c, o, store.origin);

  std::unique_ptr<LayerwiseCalibration> calib;
  if (rc.calibrate) {
    const Tokenizer& tok = calibration_tokenizer(o, rc, src.tokenizer.get());
    // The calibration reads the embedding rows of its tokens: they must be finite first.
    store.check_finite("model.embed_tokens.weight");
    calib = std::make_unique<LayerwiseCalibration>(c, store, tok, conversion_calibration_options(o, rc),
                                                   o.backend ? *o.backend : cpu_backend(),
                                                   CalibrationNeeds{.pair_norms = rc.two_norm, .input_moments = rc.moments});
  }
  // 2-norm picks each layer's pairs after that layer's calibration; until then the shapes (all
  // the writer needs up front) come from any valid choice.
  RopeFreqs freqs = select_rope_freqs(rc.two_norm || rc.rorope ? RopeStrategy::high : o.strategy, rc.r, c, nullptr);
  nlohmann::json prov = conversion_provenance(c, o, rc, store.origin, calib ? calib->text_tokens() : 0);
  // RoRoPE's frequencies likewise come with each layer.
  std::vector<std::vector<int32_t>> shared_freqs(size_t(c.n_layers), std::vector<int32_t>(size_t(rc.d_r / 2), 0));
  ModelConfig dst = rc.rorope ? mla_shared_rope_config(c, rc.d_kv, shared_freqs, prov.dump())
                              : mla_config(c, rc.r, rc.d_kv, freqs, prov.dump());
  ConversionReport rep = conversion_report_head(c, dst, o, calib ? calib->positions() : 0);
  std::vector<double> key_scales;

  const DType base = so.keep_source_dtype ? store.get("model.embed_tokens.weight").dtype() : DType::f32;
  const std::vector<ModelTensor> table = model_tensors(dst);
  std::vector<PlannedTensor> plan;
  for (const ModelTensor& t : table) {
    PlannedTensor p{t.name, t.shape, DType::f32};
    const NewTensor* made = new_tensor(t.name);
    // RoRoPE mixes q and key rows rather than moving them: everything it makes is computed.
    const bool computed = made && (!made->rows_of || rc.rorope);
    if (so.keep_source_dtype && !computed) {
      // Copied or row-permuted: the source's dtype, unless a block format (GGUF), which
      // convert_layer widens to f32 too.
      const std::string from =
          made ? t.name.substr(0, t.name.size() - std::strlen(made->suffix)) + made->rows_of : t.name;
      const DType d = store.get(from).dtype();
      if (d == DType::bf16 || d == DType::f16) p.dtype = d;
    }
    plan.push_back(std::move(p));
  }
  SafetensorsDirWriter writer(out_dir, plan, base, so.max_shard_bytes);

  int64_t layer = -1;  // the one converted, whose pages are still resident
  ConvertedLayer cur;
  auto release_layer = [&](int64_t l) {
    for (const std::string& name : layer_tensor_names(store, l)) store.release_pages(name);
  };
  for (const ModelTensor& t : table) {
    if (t.layer >= 0 && t.layer != layer) {
      LATTE_ASSERT(t.layer == layer + 1);  // the table lists layers in order, each contiguously
      if (layer >= 0) release_layer(layer);
      layer = t.layer;
      for (const std::string& name : layer_tensor_names(store, layer)) store.check_finite(name);
      MatrixD moment;
      if (calib) {
        LATTE_ASSERT(calib->run_next_layer() == layer);
        if (rc.moments) moment = calib->second_moment();
        if (rc.two_norm) {
          const PairNorms norms = calib->pair_norms();
          freqs[size_t(layer)] = select_rope_freqs(o.strategy, rc.r, c, &norms)[size_t(layer)];
        }
      }
      cur = convert_layer(c, store, layer, freqs[size_t(layer)], rc.moments ? &moment : nullptr, o, rc);
      add_to_report(rep, cur);
      if (cur.key_scale) key_scales.push_back(*cur.key_scale);
      if (rc.rorope) shared_freqs[size_t(layer)] = cur.shared_rope_freqs;
    }
    if (t.layer < 0 && layer >= 0) {
      release_layer(layer);
      layer = c.n_layers;  // past the last layer: nothing left to release
    }
    if (const NewTensor* made = new_tensor(t.name)) {
      writer.write(t.name, cur.*(made->field));
    } else {
      if (t.layer < 0) store.check_finite(t.name);  // a layer's tensors were checked with the layer
      writer.write(t.name, store.get(t.name, t.shape));
      if (t.layer < 0) store.release_pages(t.name);
    }
    if (so.progress && t.layer >= 0 && (&t == &table.back() || (&t + 1)->layer != t.layer))
      so.progress({.layers_done = t.layer + 1,
                   .layers = c.n_layers,
                   .seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()});
  }
  if (layer >= 0 && layer < c.n_layers) release_layer(layer);

  if (rc.rorope) {
    dst.shared_rope_freqs = shared_freqs;
  } else {
    dst.rope_freqs = freqs;
  }
  if (o.init == LatentInit::pca) prov["pca_key_scale"] = key_scales;
  dst.mla_provenance = prov.dump();
  dst.validate("the streamed MHA2MLA conversion");
  writer.finish(dst);
  if (report) *report = std::move(rep);
  return dst;
}

}  // namespace latte
