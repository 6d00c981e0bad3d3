// What the in-memory conversion (convert.h) and the streamed one (convert_streamed.h) share: the
// settings resolved and refused once, and the surgery of one layer. Both produce the same bits
// because both run exactly this code on the same source tensors.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/linalg/matrix.h"
#include "trainer/mha2mla/convert.h"

namespace latte {

struct ResolvedConversion {
  int64_t r = 0, d_kv = 0, D = 0;  // kept RoPE pairs, latent rank per KV head, latent width
  bool rorope = false;             // one shared RoPE key (rorope.h) instead of r pairs per KV head
  int64_t d_r = 0;                 // rorope: the shared key's dims
  bool two_norm = false;           // the 2-norm strategy (needs the calibration's pair norms)
  bool calibrate = false;          // a calibration text is run (2-norm, pca, or the report's energies)
  bool moments = false;            // it collects the attention-input moments (pca, rorope, or compare_inits)
};

// Every refusal of convert_to_mla that needs only the config and the options (origin names the
// source in the messages).
ResolvedConversion resolve_conversion(const ModelConfig& c, const ConvertOptions& o, const std::string& origin);
// The calibration options the conversion runs (pca raises the minimum token count to D).
CalibrationOptions conversion_calibration_options(const ConvertOptions& o, const ResolvedConversion& rc);
// o.tokenizer, else the checkpoint's own; refuses when there is neither.
const Tokenizer& calibration_tokenizer(const ConvertOptions& o, const ResolvedConversion& rc, const Tokenizer* own);
// config.json's mla_provenance (pca adds its per-layer key scales when every layer is done).
nlohmann::json conversion_provenance(const ModelConfig& c, const ConvertOptions& o, const ResolvedConversion& rc,
                                     const std::string& origin, int64_t calib_tokens);
// The report's settings and size rows; the per-layer rows come from add_to_report.
ConversionReport conversion_report_head(const ModelConfig& src, const ModelConfig& dst, const ConvertOptions& o,
                                        int64_t calib_positions);

// One layer's new attention tensors. q and k_rope are source rows moved, in the source's element
// dtype (f32, bf16, f16; a block format widened to f32); the three factors are computed in
// float64 and rounded to f32 once.
// rorope: q and k_rope are computed too (mixed rows, f32), k_rope_proj [d_r, dim].
struct ConvertedLayer {
  Tensor q, k_rope;          // q_proj [q_dim, dim] in [rope | nope] head order, k_rope_proj [n_kv*2r, dim]
  Tensor kv_a, k_b, v_b;     // f32
  std::optional<double> weight_energy;                 // the SVD's kept sigma^2 share (when an SVD ran)
  std::optional<ActivationEnergy> activation_energy;   // with calibration moments
  std::optional<double> key_scale;                     // pca: alpha
  std::vector<int32_t> shared_rope_freqs;              // rorope: this layer's shared key frequencies
  std::optional<double> rope_energy;                   // rorope: the keys' energy share on the shared key
};

// freqs: this layer's kept pairs per KV head (partial; unused by rorope); moment: E[u^T u] of its
// attention input (null without calibration; rorope needs it).
ConvertedLayer convert_layer(const ModelConfig& c, const TensorStore& src, int64_t l,
                             const std::vector<std::vector<int32_t>>& freqs, const MatrixD* moment,
                             const ConvertOptions& o, const ResolvedConversion& rc);
void add_to_report(ConversionReport& rep, const ConvertedLayer& layer);

}  // namespace latte
