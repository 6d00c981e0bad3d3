#include "trainer/mha2mla/convert_streamed.h"

#include <chrono>
#include <memory>
#include <set>

#include "core/backend/registry.h"
#include "core/checkpoint/safetensors_stream_writer.h"
#include "trainer/mha2mla/convert_layer.h"

namespace latte {

namespace {

bool is_attention_kv(const std::string& name) {
  return name.ends_with(".self_attn.k_proj.weight") || name.ends_with(".self_attn.v_proj.weight");
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
  RopeFreqs freqs = select_rope_freqs(rc.two_norm ? RopeStrategy::high : o.strategy, rc.r, c, nullptr);
  nlohmann::json prov = conversion_provenance(c, o, rc, store.origin, calib ? calib->text_tokens() : 0);
  ModelConfig dst = mla_config(c, rc.r, rc.d_kv, freqs, prov.dump());
  ConversionReport rep = conversion_report_head(c, dst, o, calib ? calib->positions() : 0);
  std::vector<double> key_scales;

  const DType base = so.keep_source_dtype ? store.get("model.embed_tokens.weight").dtype() : DType::f32;
  const std::vector<ModelTensor> table = model_tensors(dst);
  const std::set<std::string> computed_suffixes = {".self_attn.kv_a_proj.weight", ".self_attn.k_b_proj.weight",
                                                   ".self_attn.v_b_proj.weight"};
  auto is_computed = [&](const std::string& name) {
    for (const std::string& s : computed_suffixes)
      if (name.ends_with(s)) return true;
    return false;
  };
  std::vector<PlannedTensor> plan;
  for (const ModelTensor& t : table) {
    PlannedTensor p{t.name, t.shape, std::nullopt};
    if (!so.keep_source_dtype) {
      p.dtype = DType::f32;
    } else if (is_computed(t.name)) {
      p.dtype = DType::f32;
    } else {
      // q_proj and k_rope_proj are rows of the source's q_proj / k_proj.
      std::string from = t.name;
      if (from.ends_with(".self_attn.k_rope_proj.weight"))
        from = from.substr(0, from.size() - std::string("k_rope_proj.weight").size()) + "k_proj.weight";
      const DType d = store.get(from).dtype();
      // Block formats (GGUF) have no safetensors dtype; convert_layer widens them to f32 too.
      p.dtype = d == DType::bf16 || d == DType::f16 ? d : DType::f32;
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
    }
    if (t.layer < 0 && layer >= 0) {
      release_layer(layer);
      layer = c.n_layers;  // past the last layer: nothing left to release
    }
    const std::string& n = t.name;
    if (n.ends_with(".self_attn.q_proj.weight")) {
      writer.write(n, cur.q);
    } else if (n.ends_with(".self_attn.k_rope_proj.weight")) {
      writer.write(n, cur.k_rope);
    } else if (n.ends_with(".self_attn.kv_a_proj.weight")) {
      writer.write(n, cur.kv_a);
    } else if (n.ends_with(".self_attn.k_b_proj.weight")) {
      writer.write(n, cur.k_b);
    } else if (n.ends_with(".self_attn.v_b_proj.weight")) {
      writer.write(n, cur.v_b);
    } else {
      LATTE_ASSERT(!is_attention_kv(n));
      if (t.layer < 0) store.check_finite(n);  // a layer's tensors were checked with the layer
      writer.write(n, store.get(n, t.shape));
      if (t.layer < 0) store.release_pages(n);
    }
    if (so.progress && t.layer >= 0 && (&t == &table.back() || (&t + 1)->layer != t.layer))
      so.progress({.layers_done = t.layer + 1,
                   .layers = c.n_layers,
                   .seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()});
  }
  if (layer >= 0 && layer < c.n_layers) release_layer(layer);

  dst.rope_freqs = freqs;
  if (o.init == LatentInit::pca) prov["pca_key_scale"] = key_scales;
  dst.mla_provenance = prov.dump();
  dst.validate("the streamed MHA2MLA conversion");
  writer.finish(dst);
  if (report) *report = std::move(rep);
  return dst;
}

}  // namespace latte
